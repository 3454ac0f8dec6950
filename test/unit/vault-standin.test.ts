/** The Vault stand-in answers as Vault's documented HTTP API does (docs/protocols.md §3). */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createVaultClient } from '../../src/adapters/vault/vault-client.js';
import { startVaultStandin, type VaultStandin } from '../support/vault-standin.js';

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
});
