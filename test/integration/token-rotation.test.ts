/**
 * The clients follow their token source: a token file replaced between two polls, and the old token
 * revoked, costs no failed request (the refused request reads the file again and is sent once more
 * with the new token), against the Vault stand-in and Consul 1.8.7 with ACLs; and the Vault token
 * renewal keeps a short-lived token alive, follows a new token, and leaves a token that is not
 * renewable alone.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createConsulClient } from '../../src/adapters/consul/consul-client.js';
import { kvGet, kvPut } from '../../src/adapters/consul/consul-kv.js';
import { FileTokenSource } from '../../src/adapters/token-source.js';
import { createVaultClient, readKv } from '../../src/adapters/vault/vault-client.js';
import { VaultTokenRenewer } from '../../src/adapters/vault/vault-token.js';
import { startConsul, type ConsulInstance } from '../support/consul.js';
import { removeOnExit } from '../support/processes.js';
import { startVaultStandin, type VaultStandin } from '../support/vault-standin.js';
import { waitFor } from '../support/wait.js';

const MASTER = 'b1a0c7de-0000-4000-8000-0000000rot01';
/** Long enough that only a refused request, never a poll, can see the new token in these tests. */
const NEVER_POLLS_MS = 3_600_000;

function tokenFile(token: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'consul-acme-rotation-'));
  removeOnExit(dir);
  const file = join(dir, 'token');
  writeFileSync(file, `${token}\n`);
  return file;
}

function replaceFile(file: string, token: string): void {
  writeFileSync(`${file}.new`, `${token}\n`);
  renameSync(`${file}.new`, file);
}

describe('Vault client with a token file', () => {
  let vault: VaultStandin;
  before(async () => {
    vault = await startVaultStandin();
  });
  after(async () => {
    await vault.close();
  });

  it('a refused request reads the file again and succeeds with the new token, once', async () => {
    vault.addToken('first');
    vault.addToken('second');
    const file = tokenFile('first');
    const tokens = new FileTokenSource({ path: file, what: 'Vault token', pollIntervalMs: NEVER_POLLS_MS }).start();
    try {
      const client = createVaultClient({ address: vault.address, tokenSource: tokens });
      vault.writeRaw('secret', 'rotation/x', { v: 1 });
      assert.equal((await readKv(client, 'secret/data/rotation/x')).state, 'present');
      replaceFile(file, 'second');
      vault.revokeToken('first');
      const before = vault.countRequests({ pathPrefix: 'secret/data/rotation/x' });
      assert.equal((await readKv(client, 'secret/data/rotation/x')).state, 'present', 'no failure');
      assert.equal(
        vault.countRequests({ pathPrefix: 'secret/data/rotation/x' }) - before,
        2,
        'refused, then sent again',
      );
      assert.equal(vault.countRequests({ pathPrefix: 'secret/data/rotation/x', token: 'second' }), 1);
      assert.equal(tokens.current(), 'second');
      // A 403 that a new token does not explain is an answer, not a retry.
      vault.revokeToken('second');
      await assert.rejects(readKv(client, 'secret/data/rotation/x'), /STORE_PERMISSION_DENIED|permission denied/);
    } finally {
      tokens.close();
    }
  });

  it('the renewal keeps a renewable token alive past its ttl, and follows a new token', async () => {
    vault.addToken('short', { ttlSeconds: 2 });
    vault.addToken('fixed', { ttlSeconds: 60, renewable: false });
    const file = tokenFile('short');
    const tokens = new FileTokenSource({ path: file, what: 'Vault token', pollIntervalMs: 20 }).start();
    const client = createVaultClient({ address: vault.address, tokenSource: tokens });
    const renewer = new VaultTokenRenewer({ client, tokens, retryMs: 500 });
    renewer.start();
    try {
      const firstExpiry = vault.tokenExpiresAt('short') ?? 0;
      await waitFor(
        'two renewals',
        () => vault.countRequests({ pathPrefix: 'auth/token/renew-self', token: 'short' }) >= 2,
      );
      await waitFor('past the first ttl', () => Date.now() > firstExpiry + 500 || undefined, { intervalMs: 50 });
      vault.writeRaw('secret', 'rotation/y', { v: 1 });
      assert.equal((await readKv(client, 'secret/data/rotation/y')).state, 'present', 'still valid past its first ttl');
      assert.equal(renewer.state().renewable, true);
      assert.ok(renewer.state().lastRenewedAt !== undefined);

      replaceFile(file, 'fixed');
      await waitFor(
        'the new token looked up',
        () => vault.countRequests({ pathPrefix: 'auth/token/lookup-self', token: 'fixed' }) >= 1,
      );
      await waitFor('the renewal state of the new token', () => renewer.state().renewable === false || undefined);
      assert.equal(
        vault.countRequests({ pathPrefix: 'auth/token/renew-self', token: 'fixed' }),
        0,
        'not renewable: left alone',
      );
    } finally {
      renewer.stop();
      tokens.close();
    }
  });
});

describe('Consul client with a token file, ACLs on', () => {
  let consul: ConsulInstance;
  before(async () => {
    consul = await startConsul({ acl: { masterToken: MASTER } });
  });
  after(async () => {
    await consul?.stop();
  });

  const asMaster = async (method: string, path: string, body?: unknown): Promise<Record<string, string>> => {
    const res = await fetch(`${consul.address}${path}`, {
      method,
      headers: { 'X-Consul-Token': MASTER },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    assert.equal(res.status, 200, `${method} ${path}`);
    const text = await res.text();
    return text === '' ? {} : (JSON.parse(text) as Record<string, string>);
  };

  it('a request refused for a deleted token reads the file again and succeeds with the new one', async () => {
    const rules = readFileSync(new URL('../../../deploy/consul-policy.hcl', import.meta.url), 'utf8');
    const policy = await asMaster('PUT', '/v1/acl/policy', { Name: 'rotation', Rules: rules });
    const make = async (): Promise<Record<string, string>> =>
      asMaster('PUT', '/v1/acl/token', { Description: 'rotation', Policies: [{ ID: policy.ID }] });
    const [first, second] = [await make(), await make()];
    const file = tokenFile(first.SecretID!);
    const tokens = new FileTokenSource({ path: file, what: 'Consul token', pollIntervalMs: NEVER_POLLS_MS }).start();
    try {
      const client = createConsulClient({ address: consul.address, tokenSource: tokens });
      assert.equal(await kvPut(client, 'consul-acme/rotation', 'one'), true);
      replaceFile(file, second.SecretID!);
      await asMaster('DELETE', `/v1/acl/token/${first.AccessorID}`);
      assert.equal(await kvPut(client, 'consul-acme/rotation', 'two'), true, 'no failure');
      assert.equal((await kvGet(client, 'consul-acme/rotation'))?.value, 'two');
      assert.equal(tokens.current(), second.SecretID);
    } finally {
      tokens.close();
    }
  });
});
