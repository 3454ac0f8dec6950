/**
 * The Vault client's TLS settings against an https server that requires a client certificate, as a
 * Vault listener with `tls_require_and_verify_client_cert` does, with a certificate authority made
 * in the test: VAULT_CACERT, VAULT_CLIENT_CERT/KEY and VAULT_TLS_SERVER_NAME reach the connection, and
 * each missing one fails with an error that names it.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { createVaultClient, readKv } from '../../src/adapters/vault/vault-client.js';
import { ConsulAcmeError } from '../../src/errors.js';
import { makeTestPki, type TestPki } from '../support/tls.js';

describe('Vault over TLS with a client certificate', () => {
  let pki: TestPki;
  let server: Server;
  let port: number;
  /** The client certificate's subject of each request that got through. */
  const clients: string[] = [];

  before(async () => {
    pki = makeTestPki();
    server = createServer(
      {
        cert: readFileSync(pki.certFile),
        key: readFileSync(pki.keyFile),
        ca: readFileSync(pki.caFile),
        requestCert: true,
        rejectUnauthorized: true,
      },
      (req, res) => {
        const peer = (
          req.socket as unknown as { getPeerCertificate(): { subject?: { CN?: string } } }
        ).getPeerCertificate();
        clients.push(peer.subject?.CN ?? '');
        res.writeHead(200, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify({ data: { data: { cert: 'c', key: 'k' }, metadata: { version: 3 } } }));
      },
    );
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
  });

  after(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  const client = (opts: { address?: string; cert?: boolean; serverName?: string }) =>
    createVaultClient({
      address: opts.address ?? `https://127.0.0.1:${port}`,
      token: 'unused',
      caCertPath: pki.caFile,
      ...(opts.cert ? { clientCertPath: pki.clientCertFile, clientKeyPath: pki.clientKeyFile } : {}),
      ...(opts.serverName ? { tlsServerName: opts.serverName } : {}),
    });

  const fails = (pattern: RegExp) => (err: unknown) => {
    assert.ok(err instanceof ConsulAcmeError, String(err));
    assert.equal(err.code, 'STORE_UNAVAILABLE');
    assert.equal(err.retryable, false, 'a setting to fix, not an outage');
    assert.match(err.message, pattern);
    return true;
  };

  it('connects with the client certificate, and the server sees it', async () => {
    const found = await readKv(client({ cert: true }), 'secret/data/x');
    assert.deepEqual(found, { state: 'present', version: 3, data: { cert: 'c', key: 'k' } });
    assert.deepEqual(clients, ['consul-acme']);
  });

  it('without it the handshake is refused, and the error names VAULT_CLIENT_CERT and VAULT_CLIENT_KEY', async () => {
    await assert.rejects(
      readKv(client({}), 'secret/data/x'),
      fails(/Vault refused the TLS handshake \(ERR_SSL_.*set VAULT_CLIENT_CERT and VAULT_CLIENT_KEY/),
    );
  });

  it('VAULT_TLS_SERVER_NAME is the name the certificate is checked against', async () => {
    const found = await readKv(client({ cert: true, serverName: 'localhost' }), 'secret/data/x');
    assert.equal(found.state, 'present');
    await assert.rejects(
      readKv(client({ cert: true, serverName: 'vault.elsewhere.test' }), 'secret/data/x'),
      fails(/does not carry the name we connected to .*set VAULT_TLS_SERVER_NAME/),
    );
  });
});
