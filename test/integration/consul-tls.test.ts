/** Discovery over Consul's HTTPS API, verified against a CA file (CONSUL_CACERT), never skipped. */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createConsulClient } from '../../src/adapters/consul/consul-client.js';
import { ConsulDiscovery } from '../../src/adapters/consul/consul-discovery.js';
import { ConsulAcmeError } from '../../src/errors.js';
import type { CatalogSnapshot } from '../../src/ports/discovery.js';
import { startConsul, type ConsulInstance } from '../support/consul.js';
import { makeTestPki, type TestPki } from '../support/tls.js';
import { waitFor } from '../support/wait.js';

describe('Consul over TLS', () => {
  let consul: ConsulInstance;
  let pki: TestPki;

  before(async () => {
    pki = makeTestPki();
    consul = await startConsul({ tls: { certFile: pki.certFile, keyFile: pki.keyFile } });
    const res = await fetch(`${consul.address}/v1/agent/service/register`, {
      method: 'PUT',
      body: JSON.stringify({ Name: 'web', Tags: ['urlprefix-tls.example.test/'] }),
    });
    assert.equal(res.status, 200);
  });

  after(async () => {
    await consul?.stop();
  });

  test('the catalog watch works over https when the CA file is given', async () => {
    const client = createConsulClient({ address: consul.httpsAddress!, caCertPath: pki.caFile });
    const abort = new AbortController();
    let snapshot: CatalogSnapshot | undefined;
    const watching = new ConsulDiscovery({ consul: client, waitSeconds: 1 }).watch(abort.signal, (s) => {
      snapshot = s;
    });
    const seen = await waitFor('a snapshot over https', () => snapshot);
    assert.deepEqual(seen.services.web, ['urlprefix-tls.example.test/']);
    abort.abort();
    await watching;
  });

  test('without the CA file the certificate is refused, and the error says so', async () => {
    const client = createConsulClient({ address: consul.httpsAddress! });
    const abort = new AbortController();
    const errors: unknown[] = [];
    const watching = new ConsulDiscovery({ consul: client, waitSeconds: 1, backoff: { minMs: 50, maxMs: 100 } }).watch(
      abort.signal,
      () => assert.fail('no snapshot may arrive over an unverified connection'),
      (err) => errors.push(err),
    );
    const err = await waitFor('a reported error', () => errors[0]);
    abort.abort();
    await watching;
    assert.ok(err instanceof ConsulAcmeError);
    assert.equal(err.code, 'CONSUL_UNAVAILABLE');
    assert.match(err.message, /certificate/i);
  });
});
