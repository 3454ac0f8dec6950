/** The Vault client's own transport (src/adapters/vault/vault-http.ts), through node-vault. */
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, it } from 'node:test';
import { VaultCertificateStore } from '../../src/adapters/vault/vault-certificate-store.js';
import { classifyVaultError, createVaultClient, readKv } from '../../src/adapters/vault/vault-client.js';
import { MAX_REDIRECTS, createVaultHttp } from '../../src/adapters/vault/vault-http.js';
import { ConsulAcmeError } from '../../src/errors.js';
import { freePort } from '../support/net.js';
import { startVaultStandin, type VaultStandin } from '../support/vault-standin.js';

type Handler = (req: IncomingMessage, body: string, res: ServerResponse) => void;

/** A local HTTP server that counts the TCP connections it accepted. */
async function serve(handler: Handler): Promise<{ url: string; connections: () => number; server: Server }> {
  let connections = 0;
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => handler(req, Buffer.concat(chunks).toString('utf8'), res));
  });
  server.on('connection', () => (connections += 1));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  );
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, connections: () => connections, server };
}

let cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
  cleanups = [];
});

describe('Vault transport', () => {
  it('sends a whole store round (write, read back, list, delete) over one kept-alive connection', async () => {
    const vault: VaultStandin = await startVaultStandin({ token: 'root', mounts: ['secret'] });
    cleanups.push(() => vault.close());
    // A pass-through that counts the TCP connections made to the stand-in.
    const relay = await serve((req, body, res) => {
      void fetch(`${vault.address}${req.url}`, {
        method: req.method ?? 'GET',
        headers: { 'X-Vault-Token': String(req.headers['x-vault-token'] ?? '') },
        ...(body === '' ? {} : { body }),
      }).then(async (answer) => {
        res.writeHead(answer.status, { 'content-type': answer.headers.get('content-type') ?? 'application/json' });
        res.end(await answer.text());
      });
    });
    const client = createVaultClient({ address: relay.url, token: 'root' });
    for (let i = 1; i <= 10; i += 1) {
      await client.write('secret/data/app/one', { data: { n: String(i) } });
      const read = await readKv(client, 'secret/data/app/one');
      assert.deepEqual(read, { state: 'present', version: i, data: { n: String(i) } });
    }
    const listed = (await client.list('secret/metadata/app')) as { data: { keys: string[] } };
    assert.deepEqual(listed.data.keys, ['one']);
    await client.delete('secret/metadata/app/one');
    assert.deepEqual(await readKv(client, 'secret/data/app/one'), { state: 'missing' });
    assert.equal(relay.connections(), 1, '23 requests, one after another, on one connection');
  });

  it('parses a JSON answer, keeps any other answer as text, and an empty one as ""', async () => {
    const server = await serve((req, _body, res) => {
      if (req.url === '/json') res.writeHead(200, { 'content-type': 'application/json' }).end('{"a":[1,2]}');
      else if (req.url === '/text') res.writeHead(200, { 'content-type': 'text/plain' }).end('plain words');
      else if (req.url === '/broken') res.writeHead(500, { 'content-type': 'application/json' }).end('{"errors":');
      else res.writeHead(204).end();
    });
    const http = createVaultHttp({ timeoutMs: 2_000 });
    cleanups.push(() => http.destroy());
    assert.deepEqual((await http.send({ uri: `${server.url}/json` })).body, { a: [1, 2] });
    assert.equal((await http.send({ uri: `${server.url}/text` })).body, 'plain words');
    const broken = await http.send({ uri: `${server.url}/broken` });
    assert.deepEqual([broken.statusCode, broken.body], [500, '{"errors":']);
    const empty = await http.send({ method: 'DELETE', uri: `${server.url}/empty` });
    assert.deepEqual([empty.statusCode, empty.body, empty.request.path], [204, '', '/empty']);
  });

  it('sends the JSON body and the headers node-vault gives it', async () => {
    const seen: Array<{ method: string | undefined; type: string | undefined; token: unknown; body: string }> = [];
    const server = await serve((req, body, res) => {
      seen.push({ method: req.method, type: req.headers['content-type'], token: req.headers['x-vault-token'], body });
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"data":{"version":3}}');
    });
    const client = createVaultClient({ address: server.url, token: 't-1' });
    const answer = (await client.write('secret/data/x', { options: { cas: 2 }, data: { cert: 'é' } })) as {
      data: { version: number };
    };
    assert.equal(answer.data.version, 3);
    assert.deepEqual(seen, [
      {
        method: 'POST',
        type: 'application/json',
        token: 't-1',
        body: JSON.stringify({ options: { cas: 2 }, data: { cert: 'é' } }),
      },
    ]);
  });

  it('follows a standby’s 307 to the active node with the same method and body, at most MAX_REDIRECTS times', async () => {
    const active = await serve((req, body, res) => {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ method: req.method, body }));
    });
    const standby = await serve((req, _body, res) => {
      res.writeHead(307, { location: `${active.url}${req.url}` }).end();
    });
    const client = createVaultClient({ address: standby.url, token: 't' });
    const answer = await client.write('secret/data/x', { data: { k: 'v' } });
    assert.deepEqual(answer, { method: 'POST', body: JSON.stringify({ data: { k: 'v' } }) });

    let hops = 0;
    const loop = await serve((req, _body, res) => {
      hops += 1;
      res.writeHead(307, { location: req.url }).end();
    });
    const looping = createVaultClient({ address: loop.url, token: 't' });
    const err = await looping.read('secret/data/x').then(
      () => assert.fail('a redirect loop must fail'),
      (e: unknown) => e,
    );
    assert.equal(hops, MAX_REDIRECTS + 1);
    const classified = classifyVaultError(err, 'read secret/data/x');
    assert.match(classified.message, /read secret\/data\/x: Vault answered 307/);
  });

  it('fails a request that gets no answer in time, or no connection, as Vault being unreachable (retryable)', async () => {
    const silent = await serve(() => undefined);
    const slow = new VaultCertificateStore({
      client: createVaultClient({ address: silent.url, token: 't', timeoutMs: 200 }),
    });
    const timedOut = await slow.get('a.example.com').then(
      () => assert.fail('no answer must fail'),
      (e: unknown) => e,
    );
    assert.ok(timedOut instanceof ConsulAcmeError);
    assert.equal(timedOut.code, 'STORE_UNAVAILABLE');
    assert.equal(timedOut.retryable, true);
    assert.match(timedOut.message, /Vault cannot be reached \(ETIMEDOUT: timeout: no complete answer within 200 ms\)/);

    const closed = `http://127.0.0.1:${await freePort()}`;
    const refused = await new VaultCertificateStore({ client: createVaultClient({ address: closed, token: 't' }) })
      .get('a.example.com')
      .then(
        () => assert.fail('a refused connection must fail'),
        (e: unknown) => e,
      );
    assert.ok(refused instanceof ConsulAcmeError);
    assert.equal(refused.code, 'STORE_UNAVAILABLE');
    assert.equal(refused.retryable, true);
    assert.match(refused.message, /ECONNREFUSED/);
  });
});
