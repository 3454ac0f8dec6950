/**
 * One set of cases for every AccountStore: memory, files, Vault through the stand-in, and a real
 * Vault when VAULT_ADDR and VAULT_TOKEN are set; then the per-implementation layout checks.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, before, beforeEach, describe, it } from 'node:test';
import { FileAccountStore } from '../../src/adapters/file/file-account-store.js';
import { MemoryAccountStore } from '../../src/adapters/memory/memory-account-store.js';
import { VaultAccountStore } from '../../src/adapters/vault/vault-account-store.js';
import { accountId } from '../../src/adapters/account-record.js';
import { createVaultClient } from '../../src/adapters/vault/vault-client.js';
import { ConfigError, ConsulAcmeError } from '../../src/errors.js';
import type { AccountStore, AcmeAccount } from '../../src/ports/account-store.js';
import { startVaultStandin, type VaultStandin } from '../support/vault-standin.js';

const DIRECTORY = 'https://acme-staging-v02.api.letsencrypt.org/directory';
const OTHER_DIRECTORY = 'https://127.0.0.1:14000/dir';

function accountKeyPem(): string {
  return generateKeyPairSync('ec', { namedCurve: 'prime256v1' })
    .privateKey.export({ type: 'pkcs8', format: 'pem' })
    .toString();
}

function newAccount(directoryUrl = DIRECTORY, overrides: Partial<AcmeAccount> = {}): AcmeAccount {
  return {
    directoryUrl,
    accountKeyPem: accountKeyPem(),
    accountUrl: undefined,
    email: 'ops@example.com',
    createdAt: new Date('2026-01-01T00:00:00.000Z'),
    ...overrides,
  };
}

interface Harness {
  store: AccountStore;
  /** A second store on the same backing storage, as another instance would have. */
  twin: AccountStore;
  cleanup(): Promise<void>;
}

function accountStoreContract(name: string, setup: () => Promise<Harness>): void {
  describe(`AccountStore contract: ${name}`, () => {
    let h: Harness;
    beforeEach(async () => {
      h = await setup();
    });
    afterEach(async () => {
      await h.cleanup();
    });

    it('get of a directory without an account resolves undefined', async () => {
      assert.equal(await h.store.get(DIRECTORY), undefined);
    });

    it('create stores the account and get returns it', async () => {
      const account = newAccount();
      assert.deepEqual(await h.store.create(account), account);
      assert.deepEqual(await h.store.get(DIRECTORY), account);
      assert.deepEqual(await h.twin.get(DIRECTORY), account);
    });

    it('create when an account exists resolves the existing one and keeps it', async () => {
      const first = newAccount();
      await h.store.create(first);
      const second = newAccount(DIRECTORY, { email: 'someone-else@example.com' });
      assert.deepEqual(await h.twin.create(second), first);
      assert.deepEqual(await h.store.get(DIRECTORY), first);
    });

    it('two instances creating at the same time end up with one shared account', async () => {
      const [a, b] = await Promise.all([h.store.create(newAccount()), h.twin.create(newAccount())]);
      assert.deepEqual(a, b);
      assert.deepEqual(await h.store.get(DIRECTORY), a);
    });

    it('update records the account URL', async () => {
      const account = newAccount();
      await h.store.create(account);
      const registered = { ...account, accountUrl: 'https://acme.test/acct/42' };
      await h.store.update(registered);
      assert.deepEqual(await h.twin.get(DIRECTORY), registered);
    });

    it('keeps one account per directory URL', async () => {
      const staging = newAccount(DIRECTORY);
      const pebble = newAccount(OTHER_DIRECTORY, { email: undefined });
      await h.store.create(staging);
      await h.store.create(pebble);
      assert.deepEqual(await h.store.get(DIRECTORY), staging);
      assert.deepEqual(await h.store.get(OTHER_DIRECTORY), pebble);
    });
  });
}

accountStoreContract('memory', async () => {
  const store = new MemoryAccountStore();
  return { store, twin: store, cleanup: async () => {} };
});

async function fileHarness(): Promise<Harness & { directory: string }> {
  const directory = await fs.mkdtemp(join(tmpdir(), 'consul-acme-accounts-'));
  return {
    directory,
    store: new FileAccountStore({ directory }),
    twin: new FileAccountStore({ directory }),
    cleanup: () => fs.rm(directory, { recursive: true, force: true }),
  };
}

accountStoreContract('file', fileHarness);

describe('FileAccountStore only', () => {
  it('writes <dir>/accounts/<id>.json with mode 0600 and leaves no temporary files', async () => {
    const h = await fileHarness();
    try {
      await h.store.create(newAccount());
      await h.store.update(newAccount());
      const file = join(h.directory, 'accounts', `${accountId(DIRECTORY)}.json`);
      assert.equal((await fs.stat(file)).mode & 0o777, 0o600);
      assert.deepEqual(await fs.readdir(join(h.directory, 'accounts')), [`${accountId(DIRECTORY)}.json`]);
      const fields = JSON.parse(await fs.readFile(file, 'utf8'));
      assert.equal(fields.directory_url, DIRECTORY);
      assert.match(fields.account_key, /BEGIN PRIVATE KEY/);
    } finally {
      await h.cleanup();
    }
  });
});

let standin: VaultStandin;
let prefixNumber = 0;

describe('Vault stand-in lifecycle', () => {
  before(async () => {
    standin = await startVaultStandin();
  });
  after(async () => {
    await standin.close();
  });

  accountStoreContract('vault (stand-in)', async () => {
    prefixNumber += 1;
    const path = `t${prefixNumber}/accounts`;
    const client = () => createVaultClient({ address: standin.address, token: standin.token });
    return {
      store: new VaultAccountStore({ client: client(), path }),
      twin: new VaultAccountStore({ client: client(), path }),
      cleanup: async () => {},
    };
  });

  describe('VaultAccountStore only', () => {
    it('stores the account at secret/data/consul-acme/accounts/<sha256 prefix>, outside Fabio’s certificate path', async () => {
      const store = new VaultAccountStore({
        client: createVaultClient({ address: standin.address, token: standin.token }),
      });
      const account = newAccount(DIRECTORY, { accountUrl: 'https://acme.test/acct/1' });
      await store.create(account);
      const id = accountId(DIRECTORY);
      assert.match(id, /^[0-9a-f]{16}$/);
      const raw = standin.readRaw('secret', `consul-acme/accounts/${id}`);
      assert.equal(raw?.current, 1);
      assert.deepEqual(raw?.versions[1]?.data, {
        directory_url: DIRECTORY,
        account_key: account.accountKeyPem,
        account_url: 'https://acme.test/acct/1',
        email: 'ops@example.com',
        created_at: '2026-01-01T00:00:00.000Z',
        format: '1',
      });
      const list = await fetch(`${standin.address}/v1/secret/metadata/fabio/certs?list=true`, {
        headers: { 'X-Vault-Token': standin.token },
      });
      assert.equal(list.status, 404, 'nothing was written where Fabio looks');
    });

    it('an account a newer release wrote is neither used nor replaced (FORMAT_NEWER)', async () => {
      const store = new VaultAccountStore({
        client: createVaultClient({ address: standin.address, token: standin.token }),
        path: 'newer/accounts',
      });
      const account = newAccount(DIRECTORY);
      const path = `newer/accounts/${accountId(DIRECTORY)}`;
      standin.writeRaw('secret', path, { directory_url: DIRECTORY, account_key: 'from a newer release', format: '2' });
      const isNewer = (err: unknown): boolean =>
        err instanceof ConsulAcmeError &&
        err.code === 'FORMAT_NEWER' &&
        /format 2 by a newer release/.test(err.message);
      await assert.rejects(store.get(DIRECTORY), isNewer);
      await assert.rejects(store.create(account), isNewer);
      assert.equal(standin.readRaw('secret', path)?.current, 1, 'nothing was written over it');
    });

    it('refuses an account path inside the certificate prefix Fabio reads', () => {
      const client = createVaultClient({ address: standin.address, token: standin.token });
      assert.throws(() => new VaultAccountStore({ client, path: 'fabio/certs/accounts' }), ConfigError);
      assert.throws(
        () => new VaultAccountStore({ client, path: 'my/certs', certificatePrefix: 'my/certs' }),
        ConfigError,
      );
    });
  });
});

const realVaultAddress = process.env.VAULT_ADDR;
const realVaultToken = process.env.VAULT_TOKEN;
if (realVaultAddress && realVaultToken) {
  const mount = process.env.VAULT_KV_MOUNT ?? 'secret';
  const caCertPath = process.env.VAULT_CACERT;
  accountStoreContract(`vault (real, ${realVaultAddress})`, async () => {
    const path = `consul-acme-contract-${randomBytes(4).toString('hex')}/accounts`;
    const client = createVaultClient({
      address: realVaultAddress,
      token: realVaultToken,
      ...(caCertPath ? { caCertPath } : {}),
    });
    return {
      store: new VaultAccountStore({ client, mount, path }),
      twin: new VaultAccountStore({ client, mount, path }),
      cleanup: async () => {
        for (const directoryUrl of [DIRECTORY, OTHER_DIRECTORY]) {
          await client.delete(`${mount}/metadata/${path}/${accountId(directoryUrl)}`).catch(() => undefined);
        }
      },
    };
  });
}
