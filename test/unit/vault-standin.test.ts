/** The Vault stand-in answers as Vault's documented HTTP API does (docs/protocols.md §3). */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { VaultCertificateStore } from '../../src/adapters/vault/vault-certificate-store.js';
import { classifyVaultError, createVaultClient, readKv } from '../../src/adapters/vault/vault-client.js';
import { ConsulAcmeError } from '../../src/errors.js';
import { startVaultStandin, type VaultStandin } from '../support/vault-standin.js';
import { waitFor } from '../support/wait.js';

let vault: VaultStandin;

/** Raw JSON from the stand-in, asserted field by field. */
async function call(
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = {},
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- raw JSON, asserted field by field
): Promise<{ status: number; json: any }> {
  const response = await fetch(`${vault.address}/v1/${path}`, {
    method,
    headers: {
      'X-Vault-Token': vault.token,
      ...(body === undefined ? {} : { 'Content-Type': 'application/json' }),
      ...headers,
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await response.text();
  return { status: response.status, json: text === '' ? undefined : JSON.parse(text) };
}

describe('Vault stand-in', () => {
  before(async () => {
    vault = await startVaultStandin({ token: 'root-token', mounts: ['secret', 'kv'] });
  });
  after(async () => {
    await vault.close();
  });

  it('refuses requests without a token, or with an unknown one, with 403 permission denied', async () => {
    const none = await fetch(`${vault.address}/v1/secret/data/x`);
    assert.equal(none.status, 403);
    assert.deepEqual(await none.json(), { errors: ['permission denied'] });
    assert.equal((await call('GET', 'secret/data/x', undefined, { 'X-Vault-Token': 'nope' })).status, 403);
  });

  it('accepts the token as Authorization: Bearer', async () => {
    const response = await fetch(`${vault.address}/v1/auth/token/lookup-self`, {
      headers: { Authorization: `Bearer ${vault.token}` },
    });
    assert.equal(response.status, 200);
    const body = (await response.json()) as {
      data: { id: string; policies: string[] };
      request_id: string;
      wrap_info: null;
    };
    assert.equal(body.data.id, 'root-token');
    assert.deepEqual(body.data.policies, ['root']);
    assert.equal(body.wrap_info, null);
  });

  it('writes versions with check-and-set and the exact Vault error strings', async () => {
    const first = await call('POST', 'secret/data/app/one', { options: { cas: 0 }, data: { a: '1' } });
    assert.equal(first.status, 200);
    assert.equal(first.json.data.version, 1);
    assert.equal(first.json.data.destroyed, false);
    const conflict = await call('POST', 'secret/data/app/one', { options: { cas: 0 }, data: { a: '2' } });
    assert.equal(conflict.status, 400);
    assert.deepEqual(conflict.json, { errors: ['check-and-set parameter did not match the current version'] });
    assert.equal(
      (await call('PUT', 'secret/data/app/one', { options: { cas: 1 }, data: { a: '2' } })).json.data.version,
      2,
    );
    assert.deepEqual((await call('POST', 'secret/data/app/one', { options: { cas: 'x' }, data: {} })).json, {
      errors: ['error parsing check-and-set parameter'],
    });
    assert.deepEqual((await call('POST', 'secret/data/app/one', { options: { cas: 2 } })).json, {
      errors: ['no data provided'],
    });
  });

  it('reads the latest version or ?version=N inside the Vault envelope', async () => {
    const latest = await call('GET', 'secret/data/app/one');
    assert.equal(latest.status, 200);
    assert.deepEqual(latest.json.data.data, { a: '2' });
    assert.equal(latest.json.data.metadata.version, 2);
    for (const field of ['request_id', 'lease_id', 'renewable', 'lease_duration', 'wrap_info', 'warnings', 'auth']) {
      assert.ok(field in latest.json, field);
    }
    assert.deepEqual((await call('GET', 'secret/data/app/one?version=1')).json.data.data, { a: '1' });
    assert.deepEqual(await call('GET', 'secret/data/app/one?version=9'), { status: 404, json: { errors: [] } });
    assert.deepEqual(await call('GET', 'secret/data/app/missing'), { status: 404, json: { errors: [] } });
  });

  it('soft-deletes the latest version: reads 404 with metadata and null data until undeleted', async () => {
    await call('POST', 'secret/data/soft', { data: { v: 1 } });
    assert.equal((await call('DELETE', 'secret/data/soft')).status, 204);
    const deleted = await call('GET', 'secret/data/soft');
    assert.equal(deleted.status, 404);
    assert.equal(deleted.json.data.data, null);
    assert.notEqual(deleted.json.data.metadata.deletion_time, '');
    assert.equal(deleted.json.data.metadata.version, 1);
    const cas = await call('POST', 'secret/data/soft', { options: { cas: 0 }, data: { v: 2 } });
    assert.equal(cas.status, 400, 'a deleted version still counts for check-and-set');
    assert.equal((await call('POST', 'secret/undelete/soft', { versions: [1] })).status, 204);
    assert.deepEqual((await call('GET', 'secret/data/soft')).json.data.data, { v: 1 });
    assert.equal((await call('POST', 'secret/destroy/soft', { versions: [1] })).status, 204);
    const destroyed = await call('GET', 'secret/data/soft');
    assert.equal(destroyed.status, 404);
    assert.equal(destroyed.json.data.metadata.destroyed, true);
  });

  it('keeps at most 10 versions, dropping the oldest', async () => {
    for (let i = 1; i <= 12; i += 1) await call('POST', 'secret/data/many', { data: { i } });
    const metadata = await call('GET', 'secret/metadata/many');
    assert.equal(metadata.json.data.current_version, 12);
    assert.equal(metadata.json.data.oldest_version, 3);
    assert.deepEqual(
      Object.keys(metadata.json.data.versions)
        .map(Number)
        .sort((a, b) => a - b),
      [3, 4, 5, 6, 7, 8, 9, 10, 11, 12],
    );
    assert.equal((await call('GET', 'secret/data/many?version=2')).status, 404);
  });

  it('lists keys with ?list=true (folders end in /), 404 with no errors for an empty list', async () => {
    await call('POST', 'kv/data/certs/b.example.com', { data: { cert: 'x' } });
    await call('POST', 'kv/data/certs/a.example.com', { data: { cert: 'x' } });
    await call('POST', 'kv/data/certs/sub/c.example.com', { data: { cert: 'x' } });
    assert.deepEqual((await call('GET', 'kv/metadata/certs?list=true')).json.data.keys, [
      'a.example.com',
      'b.example.com',
      'sub/',
    ]);
    assert.deepEqual((await call('GET', 'kv/metadata/certs/?list=1')).json.data.keys, [
      'a.example.com',
      'b.example.com',
      'sub/',
    ]);
    assert.deepEqual(await call('GET', 'kv/metadata/nothing?list=true'), { status: 404, json: { errors: [] } });
    const client = createVaultClient({ address: vault.address, token: vault.token });
    assert.deepEqual((await client.list('kv/metadata/certs')).data.keys, ['a.example.com', 'b.example.com', 'sub/']);
  });

  it('deletes all versions and the metadata with DELETE metadata', async () => {
    await call('POST', 'kv/data/gone', { data: { v: 1 } });
    assert.equal((await call('DELETE', 'kv/metadata/gone')).status, 204);
    assert.equal((await call('GET', 'kv/metadata/gone')).status, 404);
    assert.equal(vault.readRaw('kv', 'gone'), undefined);
  });

  it('honours cas_required set on a key', async () => {
    assert.equal((await call('POST', 'secret/metadata/strict', { cas_required: true, max_versions: 3 })).status, 204);
    assert.deepEqual((await call('POST', 'secret/data/strict', { data: { v: 1 } })).json, {
      errors: ['check-and-set parameter required for this call'],
    });
    assert.equal((await call('POST', 'secret/data/strict', { options: { cas: 0 }, data: { v: 1 } })).status, 200);
  });

  it('answers what Fabio asks: the mount of a path, KV version 2', async () => {
    const mounts = await call('GET', 'sys/internal/ui/mounts/secret/fabio/certs');
    assert.equal(mounts.json.data.path, 'secret/');
    assert.equal(mounts.json.data.type, 'kv');
    assert.deepEqual(mounts.json.data.options, { version: '2' });
    const unwrap = await call('POST', 'sys/wrapping/unwrap', {});
    assert.deepEqual(unwrap.json, { errors: ['wrapping token is not valid or does not exist'] });
  });

  it('answers sys/health without a token, and 503 sealed while sealed', async () => {
    const health = await fetch(`${vault.address}/v1/sys/health`);
    assert.equal(health.status, 200);
    assert.equal(((await health.json()) as { sealed: boolean }).sealed, false);
    vault.setSealed(true);
    try {
      assert.equal((await fetch(`${vault.address}/v1/sys/health`)).status, 503);
      assert.deepEqual(await call('GET', 'secret/data/app/one'), {
        status: 503,
        json: { errors: ['Vault is sealed'] },
      });
    } finally {
      vault.setSealed(false);
    }
  });

  it('answers 404 for unknown paths and 405 for unsupported methods', async () => {
    assert.deepEqual(await call('GET', 'nomount/data/x'), { status: 404, json: { errors: [] } });
    assert.equal((await call('PATCH', 'secret/metadata/x', {})).status, 405);
    assert.equal((await call('GET', 'secret/destroy/x')).status, 405);
  });

  it('failNext answers the next request with the given error once', async () => {
    vault.failNext(429, []);
    assert.deepEqual(await call('GET', 'secret/data/app/one'), { status: 429, json: { errors: [] } });
    assert.equal((await call('GET', 'secret/data/app/one')).status, 200);
  });

  it('restrictToken refuses what the policy does not allow with 403', async () => {
    vault.restrictToken('reader', (method, path) => method === 'GET' && path.startsWith('secret/data/'));
    const headers = { 'X-Vault-Token': 'reader' };
    assert.equal((await call('GET', 'secret/data/app/one', undefined, headers)).status, 200);
    const denied = await call('POST', 'secret/data/app/one', { data: {} }, headers);
    assert.equal(denied.status, 403);
    assert.match(denied.json.errors[0], /permission denied/);
    assert.equal(
      (await call('GET', 'secret/metadata/app?list=true', undefined, headers)).status,
      403,
      'LIST is its own capability',
    );
  });

  it('applies a JSON merge patch with PATCH and merge-patch content type', async () => {
    await call('POST', 'secret/data/patched', { data: { a: 1, b: 2 } });
    const patched = await call(
      'PATCH',
      'secret/data/patched',
      { data: { b: null, c: 3 } },
      { 'Content-Type': 'application/merge-patch+json' },
    );
    assert.equal(patched.json.data.version, 2);
    assert.deepEqual((await call('GET', 'secret/data/patched')).json.data.data, { a: 1, c: 3 });
  });

  it("refuseWrites answers writes under a path prefix with 503 and Vault's body, serves reads, until allowWrites", async () => {
    assert.equal((await call('POST', 'secret/data/fabio/certs/w', { data: { v: 1 } })).status, 200);
    vault.refuseWrites({ pathPrefix: 'secret/data/fabio/certs/' });
    try {
      for (const method of ['POST', 'PUT']) {
        assert.deepEqual(await call(method, 'secret/data/fabio/certs/w', { data: { v: 2 } }), {
          status: 503,
          json: { errors: ['Vault is sealed'] },
        });
      }
      const patch = await call(
        'PATCH',
        'secret/data/fabio/certs/w',
        { data: { v: 3 } },
        { 'Content-Type': 'application/merge-patch+json' },
      );
      assert.equal(patch.status, 503);
      assert.equal((await call('DELETE', 'secret/data/fabio/certs/w')).status, 503);
      const read = await call('GET', 'secret/data/fabio/certs/w');
      assert.equal(read.status, 200, 'reads keep working');
      assert.deepEqual(read.json.data.data, { v: 1 }, 'nothing refused was written');
      assert.equal(read.json.data.metadata.version, 1);
      assert.equal((await call('POST', 'secret/data/elsewhere', { data: { v: 1 } })).status, 200, 'other paths');
      // The store sees what it would see from Vault: a retryable STORE_UNAVAILABLE.
      const client = createVaultClient({ address: vault.address, token: vault.token });
      await assert.rejects(client.write('secret/data/fabio/certs/w', { data: { v: 4 } }), (err) => {
        const classified = classifyVaultError(err, 'write');
        assert.equal(classified.code, 'STORE_UNAVAILABLE');
        assert.equal(classified.retryable, true);
        return true;
      });
    } finally {
      vault.allowWrites();
    }
    assert.equal((await call('POST', 'secret/data/fabio/certs/w', { data: { v: 5 } })).json.data.version, 2);
  });

  it('refuseWrites takes a status and errors, applies to every path without a prefix, and allowWrites ends one prefix', async () => {
    vault.refuseWrites({ status: 500, errors: ['storage backend failed'] });
    vault.refuseWrites({ pathPrefix: 'kv/', status: 429 });
    try {
      assert.deepEqual(await call('POST', 'secret/data/any', { data: { v: 1 } }), {
        status: 500,
        json: { errors: ['storage backend failed'] },
      });
      assert.equal((await call('POST', 'secret/metadata/any', { max_versions: 2 })).status, 500);
      vault.allowWrites({ pathPrefix: '' });
      assert.equal((await call('POST', 'secret/data/any', { data: { v: 1 } })).status, 200);
      assert.deepEqual(await call('POST', 'kv/data/any', { data: { v: 1 } }), { status: 429, json: { errors: [] } });
    } finally {
      vault.allowWrites();
    }
    assert.equal((await call('POST', 'kv/data/any', { data: { v: 1 } })).status, 200);
  });

  it('revokeToken refuses every request with the token as Vault refuses a revoked one, until restoreToken', async () => {
    vault.addToken('replacement-token');
    const replacement = { 'X-Vault-Token': 'replacement-token' };
    assert.equal((await call('POST', 'secret/data/tokens', { data: { v: 1 } }, replacement)).status, 200);
    vault.revokeToken(vault.token);
    try {
      for (const [method, path] of [
        ['GET', 'secret/data/tokens'],
        ['POST', 'secret/data/tokens'],
        ['GET', 'auth/token/lookup-self'],
      ] as const) {
        assert.deepEqual(await call(method, path, method === 'POST' ? { data: {} } : undefined), {
          status: 403,
          json: { errors: ['permission denied'] },
        });
      }
      assert.equal((await call('GET', 'secret/data/tokens', undefined, replacement)).status, 200, 'token replaced');
      const store = new VaultCertificateStore({
        client: createVaultClient({ address: vault.address, token: vault.token }),
      });
      await assert.rejects(
        store.list(),
        (err) => err instanceof ConsulAcmeError && err.code === 'STORE_PERMISSION_DENIED',
      );
      assert.equal((await fetch(`${vault.address}/v1/sys/health`)).status, 200, 'sys/health needs no token');
    } finally {
      vault.restoreToken(vault.token);
    }
    assert.equal((await call('GET', 'secret/data/tokens')).status, 200);
    vault.revokeToken('replacement-token');
    assert.equal((await call('GET', 'secret/data/tokens', undefined, replacement)).status, 403);
  });

  it('sys/capabilities-self answers each path as Vault documents it: data and top level, capabilities for one path', async () => {
    const root = await call('POST', 'sys/capabilities-self', { paths: ['secret/data/x'] });
    assert.equal(root.status, 200);
    assert.deepEqual(root.json.data, { 'secret/data/x': ['root'], capabilities: ['root'] });
    assert.deepEqual(root.json['secret/data/x'], ['root']);
    assert.deepEqual(root.json.capabilities, ['root']);
    vault.restrictToken('capable', (method, path) => {
      if (path.startsWith('secret/data/app/')) return method === 'GET' || method === 'POST';
      return path === 'secret/metadata/app' && method === 'LIST';
    });
    const restricted = await call(
      'POST',
      'sys/capabilities-self',
      { paths: ['secret/data/app/x', 'secret/metadata/app/', 'secret/data/other/x'] },
      { 'X-Vault-Token': 'capable' },
    );
    assert.equal(restricted.status, 200, 'a restricted token keeps the default policy: capabilities-self');
    assert.deepEqual(restricted.json.data, {
      'secret/data/app/x': ['create', 'read', 'update'],
      'secret/metadata/app/': ['list'],
      'secret/data/other/x': ['deny'],
    });
    assert.equal(restricted.json.capabilities, undefined, 'no `capabilities` field for several paths');
    assert.equal((await call('POST', 'sys/capabilities-self', {})).status, 400);
  });

  it('lookup-self and renew-self follow a token with a ttl; it expires unless renewed', async () => {
    vault.addToken('short-lived', { ttlSeconds: 2 });
    const headers = { 'X-Vault-Token': 'short-lived' };
    const looked = await call('GET', 'auth/token/lookup-self', undefined, headers);
    assert.equal(looked.json.data.renewable, true);
    assert.ok(looked.json.data.ttl >= 1 && looked.json.data.ttl <= 2, String(looked.json.data.ttl));
    const expiresBefore = vault.tokenExpiresAt('short-lived') ?? 0;
    const renewed = await call('POST', 'auth/token/renew-self', {}, headers);
    assert.equal(renewed.status, 200);
    assert.equal(renewed.json.auth.lease_duration, 2);
    assert.equal(renewed.json.auth.renewable, true);
    assert.ok((vault.tokenExpiresAt('short-lived') ?? 0) >= expiresBefore);
    await waitFor('the token to expire', async () =>
      (await call('GET', 'auth/token/lookup-self', undefined, headers)).status === 403 ? true : undefined,
    );
    vault.addToken('fixed', { ttlSeconds: 60, renewable: false });
    assert.equal(
      (await call('POST', 'auth/token/renew-self', {}, { 'X-Vault-Token': 'fixed' })).status,
      400,
      'a token that is not renewable',
    );
  });

  it('delayRequests holds matching requests, so a client times out; clearDelays answers the held ones, or drops them', async () => {
    await call('POST', 'secret/data/slow/x', { data: { v: 1 } });
    vault.delayRequests(60_000, { pathPrefix: 'secret/data/slow/' });
    try {
      const impatient = createVaultClient({ address: vault.address, token: vault.token, timeoutMs: 300 });
      await assert.rejects(readKv(impatient, 'secret/data/slow/x'), (err) => {
        assert.ok(err instanceof ConsulAcmeError);
        assert.equal(err.code, 'STORE_UNAVAILABLE');
        assert.equal(err.retryable, true);
        return true;
      });
      let answered = false;
      const held = call('GET', 'secret/data/slow/x').then((answer) => {
        answered = true;
        return answer;
      });
      await waitFor('the held request to arrive', () => vault.countRequests({ pathPrefix: 'secret/data/slow/' }) >= 2);
      assert.equal((await call('GET', 'secret/data/app/one')).status, 200, 'other paths answer');
      assert.equal(answered, false, 'the matching request is still held');
      vault.clearDelays();
      const answer = await held;
      assert.equal(answer.status, 200);
      assert.deepEqual(answer.json.data.data, { v: 1 });

      // With drop, a held write is lost: its connection closes unanswered and nothing is written.
      vault.delayRequests(60_000, { pathPrefix: 'secret/data/slow/' });
      const lost = call('POST', 'secret/data/slow/x', { data: { v: 2 } }).then(
        () => 'answered',
        () => 'connection closed',
      );
      await waitFor(
        'the held write to arrive',
        () => vault.countRequests({ method: 'POST', pathPrefix: 'secret/data/slow/' }) >= 2,
      );
      vault.clearDelays({ drop: true });
      assert.equal(await lost, 'connection closed');
      assert.equal(vault.readRaw('secret', 'slow/x')?.current, 1, 'the held write was not applied');
    } finally {
      vault.clearDelays();
    }
  });

  it('countRequests counts the requests by method (LIST for ?list=) and path prefix', async () => {
    const count = (method?: string): number =>
      vault.countRequests({ ...(method === undefined ? {} : { method }), pathPrefix: 'kv/data/counted/' });
    const before = { all: count(), get: count('GET'), post: count('POST') };
    const lists = vault.countRequests({ method: 'LIST', pathPrefix: 'kv/metadata/counted' });
    await call('POST', 'kv/data/counted/a', { data: { v: 1 } });
    await call('GET', 'kv/data/counted/a');
    await call('GET', 'kv/data/counted/b');
    await call('GET', 'kv/metadata/counted?list=true');
    assert.equal(count() - before.all, 3);
    assert.equal(count('GET') - before.get, 2);
    assert.equal(count('post') - before.post, 1);
    assert.equal(vault.countRequests({ method: 'LIST', pathPrefix: 'kv/metadata/counted' }) - lists, 1);
    assert.equal(vault.countRequests(), vault.requests().length, 'no filter counts every request');
  });
});
