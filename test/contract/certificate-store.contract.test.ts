/**
 * One set of cases for every CertificateStore: memory, files in a temporary directory, Vault KV v2
 * through the stand-in, and a real Vault when VAULT_ADDR and VAULT_TOKEN are set. Then the cases
 * that only make sense for one implementation (Fabio's layout, Vault errors, file modes).
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, before, beforeEach, describe, it } from 'node:test';
import { FileCertificateStore, LOCK_STALE_MS } from '../../src/adapters/file/file-certificate-store.js';
import { MemoryCertificateStore } from '../../src/adapters/memory/memory-certificate-store.js';
import { VaultCertificateStore } from '../../src/adapters/vault/vault-certificate-store.js';
import { classifyVaultError, createVaultClient, type VaultClient } from '../../src/adapters/vault/vault-client.js';
import { MANAGED_BY, type CertificateData } from '../../src/domain/certificate.js';
import { splitPemCertificates } from '../../src/domain/pem.js';
import { ConsulAcmeError, StoreConflictError } from '../../src/errors.js';
import type { CertificateStore } from '../../src/ports/certificate-store.js';
import { makeCertificateData, makeTestCertificate } from '../support/certs.js';
import { freePort } from '../support/net.js';
import { startVaultStandin, type VaultStandin } from '../support/vault-standin.js';

type Corruption = 'bad-pem' | 'wrong-key';

interface Harness {
  store: CertificateStore;
  /** Stores a record as someone other than consul-acme would (just cert and key). */
  putUnmanaged(hostname: string, pems: { certPem: string; keyPem: string }): Promise<void>;
  /** Damages a stored record as an outside writer would. */
  corrupt(hostname: string, how: Corruption): Promise<void>;
  cleanup(): Promise<void>;
}

const HOST_A = 'a.example.com';
const HOST_B = 'b.example.com';
const HOST_C = 'c.example.com';

const certA1 = await makeCertificateData({ hostname: HOST_A, otherHostnames: ['www.a.example.com'] });
const certA2 = await makeCertificateData({
  hostname: HOST_A,
  otherHostnames: ['www.a.example.com'],
  keyType: 'ec-p384',
});
const certB = await makeCertificateData({ hostname: HOST_B });
const certC = await makeCertificateData({ hostname: HOST_C });
const foreign = await makeTestCertificate({ hostnames: ['manual.example.com'], issuer: null });

function otherKeyPem(): string {
  return generateKeyPairSync('ec', { namedCurve: 'prime256v1' })
    .privateKey.export({ type: 'pkcs8', format: 'pem' })
    .toString();
}

function isConflict(err: unknown): boolean {
  return err instanceof StoreConflictError && err.code === 'STORE_CONFLICT';
}

function hasCode(code: string, retryable?: boolean): (err: unknown) => boolean {
  return (err) => {
    assert.ok(err instanceof ConsulAcmeError, `expected a ConsulAcmeError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    if (retryable !== undefined) assert.equal(err.retryable, retryable, `retryable of ${err.message}`);
    return true;
  };
}

function assertSameCertificate(actual: CertificateData | undefined, expected: CertificateData): void {
  assert.ok(actual !== undefined, 'certificate is undefined');
  assert.equal(actual.hostname, expected.hostname);
  assert.equal(actual.certPem, expected.certPem);
  assert.equal(actual.keyPem, expected.keyPem);
  assert.deepEqual(actual.hostnames, expected.hostnames);
  assert.equal(actual.notAfter.getTime(), expected.notAfter.getTime());
  assert.equal(actual.notBefore.getTime(), expected.notBefore.getTime());
  assert.equal(actual.directoryUrl, expected.directoryUrl);
  assert.equal(actual.issuer, expected.issuer);
  assert.equal(actual.keyType, expected.keyType);
  assert.equal(actual.obtainedAt.getTime(), expected.obtainedAt.getTime());
}

function certificateStoreContract(name: string, setup: () => Promise<Harness>): void {
  describe(`CertificateStore contract: ${name}`, () => {
    let h: Harness;
    beforeEach(async () => {
      h = await setup();
    });
    afterEach(async () => {
      await h.cleanup();
    });

    it('get of a hostname that was never stored resolves undefined', async () => {
      assert.equal(await h.store.get(HOST_A), undefined);
    });

    it('put with version 0 stores version 1, and get returns the same certificate, managed', async () => {
      assert.equal(await h.store.put(certA1, 0), 1);
      const record = await h.store.get(HOST_A);
      assert.ok(record);
      assert.equal(record.hostname, HOST_A);
      assert.equal(record.version, 1);
      assert.equal(record.managed, true);
      assert.equal(record.problem, undefined);
      assertSameCertificate(record.certificate, certA1);
    });

    it('put with a stale version throws StoreConflictError and leaves the stored certificate unchanged', async () => {
      await h.store.put(certA1, 0);
      await assert.rejects(h.store.put(certA2, 0), isConflict);
      await assert.rejects(h.store.put(certA2, 7), isConflict);
      const record = await h.store.get(HOST_A);
      assert.equal(record?.version, 1);
      assertSameCertificate(record?.certificate, certA1);
    });

    it('put with the version read stores the next version', async () => {
      await h.store.put(certA1, 0);
      assert.equal(await h.store.put(certA2, 1), 2);
      const record = await h.store.get(HOST_A);
      assert.equal(record?.version, 2);
      assertSameCertificate(record?.certificate, certA2);
    });

    it('two concurrent puts with the same version: exactly one wins, the other conflicts', async () => {
      const results = await Promise.allSettled([h.store.put(certA1, 0), h.store.put(certA2, 0)]);
      const won = results.filter((r) => r.status === 'fulfilled');
      const lost = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
      assert.equal(won.length, 1, JSON.stringify(results.map((r) => r.status)));
      assert.ok(isConflict(lost[0]?.reason), String(lost[0]?.reason));
      assert.equal((await h.store.get(HOST_A))?.version, 1);
    });

    it('put refuses a certificate whose key does not match and stores nothing', async () => {
      await assert.rejects(
        h.store.put({ ...certA1, keyPem: otherKeyPem() }, 0),
        /private key does not match the certificate/,
      );
      assert.equal(await h.store.get(HOST_A), undefined);
    });

    it('a record not written by consul-acme reads as managed false and is never overwritten or deleted', async () => {
      await h.putUnmanaged(HOST_A, foreign);
      const record = await h.store.get(HOST_A);
      assert.ok(record);
      assert.equal(record.managed, false);
      assert.equal(record.certificate, undefined);
      await assert.rejects(h.store.delete(HOST_A, record.version), hasCode('STORE_CONFLICT'));
      await assert.rejects(h.store.put(certA1, record.version), hasCode('STORE_CONFLICT'));
      const after = await h.store.get(HOST_A);
      assert.equal(after?.managed, false);
      assert.equal(after?.version, record.version);
      assert.deepEqual(await h.store.list(), [HOST_A]);
    });

    it('a record whose cert is not PEM reads with certificate undefined and a problem saying so', async () => {
      await h.store.put(certA1, 0);
      await h.corrupt(HOST_A, 'bad-pem');
      const record = await h.store.get(HOST_A);
      assert.ok(record);
      assert.equal(record.managed, true);
      assert.equal(record.certificate, undefined);
      assert.match(record.problem ?? '', /not a PEM certificate/);
      assert.ok(record.problem?.includes(HOST_A), record.problem);
    });

    it('a record whose key does not match its cert reads with certificate undefined and a problem saying so', async () => {
      await h.store.put(certA1, 0);
      await h.corrupt(HOST_A, 'wrong-key');
      const record = await h.store.get(HOST_A);
      assert.ok(record);
      assert.equal(record.certificate, undefined);
      assert.match(record.problem ?? '', /private key does not match the certificate/);
    });

    it('a corrupted record can be replaced with put at its version', async () => {
      await h.store.put(certA1, 0);
      await h.corrupt(HOST_A, 'bad-pem');
      const record = await h.store.get(HOST_A);
      assert.ok(record);
      const version = await h.store.put(certA2, record.version);
      assert.equal(version, record.version + 1);
      assertSameCertificate((await h.store.get(HOST_A))?.certificate, certA2);
    });

    it('list of an empty store resolves []', async () => {
      assert.deepEqual(await h.store.list(), []);
    });

    it('list resolves every hostname, managed or not, sorted', async () => {
      await h.store.put(certC, 0);
      await h.store.put(certA1, 0);
      await h.putUnmanaged('manual.example.com', foreign);
      await h.store.put(certB, 0);
      assert.deepEqual(await h.store.list(), [HOST_A, HOST_B, HOST_C, 'manual.example.com']);
    });

    it('delete with the current version removes the record', async () => {
      await h.store.put(certA1, 0);
      await h.store.put(certB, 0);
      await h.store.delete(HOST_A, 1);
      assert.equal(await h.store.get(HOST_A), undefined);
      assert.deepEqual(await h.store.list(), [HOST_B]);
      assert.equal(await h.store.put(certA2, 0), 1, 'a deleted hostname can be stored again from version 0');
    });

    it('delete with a stale version throws StoreConflictError and keeps the record', async () => {
      await h.store.put(certA1, 0);
      await h.store.put(certA2, 1);
      await assert.rejects(h.store.delete(HOST_A, 1), isConflict);
      const record = await h.store.get(HOST_A);
      assert.equal(record?.version, 2);
      assertSameCertificate(record?.certificate, certA2);
    });

    it('delete of a missing record is a no-op', async () => {
      await h.store.delete(HOST_A, 0);
      await h.store.delete(HOST_A, 3);
      assert.equal(await h.store.get(HOST_A), undefined);
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Memory

certificateStoreContract('memory', async () => {
  const store = new MemoryCertificateStore();
  return {
    store,
    putUnmanaged: async (hostname, pems) => {
      store.putUnmanaged(hostname, pems);
    },
    corrupt: async (hostname, how) => store.corrupt(hostname, how),
    cleanup: async () => {},
  };
});

describe('MemoryCertificateStore test hooks', () => {
  it('versions() tells the stored version, 0 when missing', async () => {
    const store = new MemoryCertificateStore();
    assert.equal(store.versions(HOST_A), 0);
    await store.put(certA1, 0);
    await store.put(certA2, 1);
    assert.equal(store.versions(HOST_A), 2);
  });

  it('failNext makes the next call of one operation throw the given error', async () => {
    const store = new MemoryCertificateStore();
    const error = new ConsulAcmeError('STORE_UNAVAILABLE', 'simulated', { retryable: true });
    store.failNext('put', error);
    await assert.rejects(store.put(certA1, 0), (err) => err === error);
    assert.equal(await store.put(certA1, 0), 1);
  });

  it('get returns a copy that callers cannot use to change the store', async () => {
    const store = new MemoryCertificateStore();
    await store.put(certA1, 0);
    const record = await store.get(HOST_A);
    record?.certificate?.hostnames.push('evil.example.com');
    assert.deepEqual((await store.get(HOST_A))?.certificate?.hostnames, certA1.hostnames);
  });
});

// ---------------------------------------------------------------------------------------------
// Files

async function fileHarness(): Promise<Harness & { directory: string }> {
  const directory = await fs.mkdtemp(join(tmpdir(), 'consul-acme-certs-'));
  const store = new FileCertificateStore({ directory });
  return {
    directory,
    store,
    putUnmanaged: async (hostname, pems) => {
      await fs.mkdir(join(directory, hostname), { recursive: true });
      await fs.writeFile(join(directory, hostname, 'cert.pem'), pems.certPem);
      await fs.writeFile(join(directory, hostname, 'key.pem'), pems.keyPem);
    },
    corrupt: async (hostname, how) => {
      if (how === 'bad-pem') await fs.writeFile(join(directory, hostname, 'cert.pem'), 'this is not a certificate\n');
      else await fs.writeFile(join(directory, hostname, 'key.pem'), otherKeyPem());
    },
    cleanup: () => fs.rm(directory, { recursive: true, force: true }),
  };
}

certificateStoreContract('file', fileHarness);

describe('FileCertificateStore only', () => {
  let h: Harness & { directory: string };
  beforeEach(async () => {
    h = await fileHarness();
  });
  afterEach(async () => {
    await h.cleanup();
  });

  it('writes key.pem with mode 0600 and cert.pem with mode 0644 in one folder per hostname', async () => {
    await h.store.put(certA1, 0);
    const key = await fs.stat(join(h.directory, HOST_A, 'key.pem'));
    const cert = await fs.stat(join(h.directory, HOST_A, 'cert.pem'));
    assert.equal(key.mode & 0o777, 0o600);
    assert.equal(cert.mode & 0o777, 0o644);
    const meta = JSON.parse(await fs.readFile(join(h.directory, HOST_A, 'meta.json'), 'utf8'));
    assert.equal(meta.version, 1);
    assert.equal(meta.managed_by, MANAGED_BY);
    assert.deepEqual(meta.hostnames, certA1.hostnames);
    assert.equal(meta.not_after, certA1.notAfter.toISOString());
    assert.deepEqual((await fs.readdir(h.directory)).sort(), [HOST_A], 'no temporary or lock files are left behind');
  });

  it('refuses hostnames that are not one safe folder name', async () => {
    for (const hostname of ['../evil.example.com', 'a/b', '.hidden', '..', '', 'a\\b']) {
      await assert.rejects(h.store.get(hostname), hasCode('INVALID_HOSTNAME'), hostname);
      await assert.rejects(h.store.put({ ...certA1, hostname }, 0), hasCode('INVALID_HOSTNAME'), hostname);
    }
    assert.deepEqual(await fs.readdir(h.directory), []);
  });

  it('breaks a lock left for longer than 30 s by a crashed writer', async () => {
    const lock = join(h.directory, `.${HOST_A}.lock`);
    await fs.mkdir(lock);
    const old = new Date(Date.now() - LOCK_STALE_MS - 5_000);
    await fs.utimes(lock, old, old);
    assert.equal(await h.store.put(certA1, 0), 1);
  });

  it('a writer that finds a fresh lock gives up with a retryable STORE_UNAVAILABLE', async () => {
    await fs.mkdir(join(h.directory, `.${HOST_A}.lock`));
    await assert.rejects(h.store.put(certA1, 0), hasCode('STORE_UNAVAILABLE', true));
    assert.equal(await h.store.get(HOST_A), undefined);
  });

  // Root reads every file, so this case exists only where the tests run as another user.
  if (process.getuid?.() !== 0)
    it('an unreadable directory is STORE_PERMISSION_DENIED', async () => {
      await h.store.put(certA1, 0);
      await fs.chmod(join(h.directory, HOST_A, 'key.pem'), 0o000);
      try {
        await assert.rejects(h.store.get(HOST_A), hasCode('STORE_PERMISSION_DENIED'));
      } finally {
        await fs.chmod(join(h.directory, HOST_A, 'key.pem'), 0o600);
      }
    });

  it('list of a directory that does not exist yet resolves []', async () => {
    const store = new FileCertificateStore({ directory: join(h.directory, 'not-yet') });
    assert.deepEqual(await store.list(), []);
    assert.equal(store.description, `file:${join(h.directory, 'not-yet')}`);
  });
});

// ---------------------------------------------------------------------------------------------
// Vault (stand-in, and a real Vault when VAULT_ADDR and VAULT_TOKEN are set)

/** A harness on any Vault: `raw` is a plain client used to play the outside writer. */
function vaultHarness(
  raw: VaultClient,
  client: VaultClient,
  mount: string,
  prefix: string,
  cleanupAll: boolean,
): Harness {
  const store = new VaultCertificateStore({ client, mount, prefix });
  const dataPath = (hostname: string): string => `${mount}/data/${prefix}/${hostname}`;
  return {
    store,
    putUnmanaged: async (hostname, pems) => {
      await raw.write(dataPath(hostname), { data: { cert: pems.certPem, key: pems.keyPem } });
    },
    corrupt: async (hostname, how) => {
      const current = await raw.read(dataPath(hostname));
      const data = { ...current.data.data };
      if (how === 'bad-pem') data.cert = 'this is not a certificate\n';
      else data.key = otherKeyPem();
      await raw.write(dataPath(hostname), { data });
    },
    cleanup: async () => {
      if (!cleanupAll) return;
      const keys = await store.list();
      for (const key of keys) await raw.delete(`${mount}/metadata/${prefix}/${key}`);
    },
  };
}

let standin: VaultStandin;
let testNumber = 0;

describe('Vault stand-in lifecycle', () => {
  before(async () => {
    standin = await startVaultStandin();
  });
  after(async () => {
    await standin.close();
  });

  certificateStoreContract('vault (stand-in)', async () => {
    testNumber += 1;
    const client = createVaultClient({ address: standin.address, token: standin.token });
    return vaultHarness(client, client, 'secret', `t${testNumber}/certs`, false);
  });

  describe('VaultCertificateStore only', () => {
    it('stores the secret at secret/data/fabio/certs/<host> with the cert and key fields Fabio reads', async () => {
      const vault = await startVaultStandin();
      try {
        const store = new VaultCertificateStore({
          client: createVaultClient({ address: vault.address, token: vault.token }),
        });
        assert.equal(store.description, 'vault:secret/fabio/certs');
        await store.put(certA1, 0);
        const headers = { 'X-Vault-Token': vault.token };
        // What Fabio does: detect the KV version, list the metadata, read each secret's data.
        const mounts = (await (
          await fetch(`${vault.address}/v1/sys/internal/ui/mounts/secret/fabio/certs`, { headers })
        ).json()) as {
          data: { path: string; options: { version: string } };
        };
        assert.equal(mounts.data.path, 'secret/');
        assert.equal(mounts.data.options.version, '2');
        const list = (await (
          await fetch(`${vault.address}/v1/secret/metadata/fabio/certs?list=true`, { headers })
        ).json()) as { data: { keys: string[] } };
        assert.deepEqual(list.data.keys, [HOST_A]);
        const response = await fetch(`${vault.address}/v1/secret/data/fabio/certs/${HOST_A}`, { headers });
        assert.equal(response.status, 200);
        const secret = (
          (await response.json()) as { data: { data: Record<string, string>; metadata: { version: number } } }
        ).data;
        assert.equal(secret.data.cert, certA1.certPem);
        assert.equal(secret.data.key, certA1.keyPem);
        assert.match(secret.data.key, /^-----BEGIN PRIVATE KEY-----/);
        assert.equal(secret.data.managed_by, MANAGED_BY);
        assert.equal(secret.data.not_after, certA1.notAfter.toISOString());
        assert.equal(secret.data.hostnames, `${HOST_A},www.a.example.com`);
        assert.equal(secret.data.directory_url, certA1.directoryUrl);
        assert.equal(secret.data.key_type, 'ec-p256');
        assert.equal(secret.metadata.version, 1);
      } finally {
        await vault.close();
      }
    });

    it('a token Vault refuses gives STORE_PERMISSION_DENIED naming the path', async () => {
      standin.restrictToken('read-only', (method) => method === 'GET');
      const store = new VaultCertificateStore({
        client: createVaultClient({ address: standin.address, token: 'read-only' }),
        prefix: 'denied/certs',
      });
      await assert.rejects(store.put(certA1, 0), (err) => {
        hasCode('STORE_PERMISSION_DENIED', false)(err);
        assert.match((err as Error).message, /permission denied/);
        assert.match((err as Error).message, /secret\/data\/denied\/certs\/a\.example\.com/);
        return true;
      });
      const wrong = new VaultCertificateStore({
        client: createVaultClient({ address: standin.address, token: 'wrong-token' }),
      });
      await assert.rejects(wrong.get(HOST_A), hasCode('STORE_PERMISSION_DENIED', false));
      await assert.rejects(wrong.list(), hasCode('STORE_PERMISSION_DENIED', false));
    });

    it('503 (sealed), 500, 429, 472 and 473 are retryable STORE_UNAVAILABLE', async () => {
      const store = new VaultCertificateStore({
        client: createVaultClient({ address: standin.address, token: standin.token }),
      });
      for (const status of [503, 500, 502, 429, 472, 473]) {
        standin.failNext(status, status === 503 ? ['Vault is sealed'] : []);
        await assert.rejects(store.get(HOST_A), hasCode('STORE_UNAVAILABLE', true), String(status));
      }
      standin.setSealed(true);
      try {
        await assert.rejects(store.list(), (err) => {
          hasCode('STORE_UNAVAILABLE', true)(err);
          assert.match((err as Error).message, /sealed/);
          return true;
        });
      } finally {
        standin.setSealed(false);
      }
    });

    it('an unreachable Vault is a retryable STORE_UNAVAILABLE', async () => {
      const port = await freePort();
      const store = new VaultCertificateStore({
        client: createVaultClient({ address: `http://127.0.0.1:${port}`, token: 't', timeoutMs: 2000 }),
      });
      await assert.rejects(store.get(HOST_A), hasCode('STORE_UNAVAILABLE', true));
    });

    it('a soft-deleted latest version reads as missing and can be written again with version 0', async () => {
      const prefix = 'softdelete/certs';
      const client = createVaultClient({ address: standin.address, token: standin.token });
      const store = new VaultCertificateStore({ client, prefix });
      await store.put(certA1, 0);
      await client.delete(`secret/data/${prefix}/${HOST_A}`);
      assert.equal(await store.get(HOST_A), undefined);
      assert.equal(await store.put(certA2, 0), 2);
      assertSameCertificate((await store.get(HOST_A))?.certificate, certA2);
    });

    it('delete removes every version (metadata delete), so Fabio no longer lists it', async () => {
      const prefix = 'permanent/certs';
      const store = new VaultCertificateStore({
        client: createVaultClient({ address: standin.address, token: standin.token }),
        prefix,
      });
      await store.put(certA1, 0);
      await store.put(certA2, 1);
      await store.delete(HOST_A, 2);
      assert.equal(standin.readRaw('secret', `${prefix}/${HOST_A}`), undefined);
    });

    it('list leaves out sub-folders under the prefix', async () => {
      const prefix = 'folders/certs';
      const store = new VaultCertificateStore({
        client: createVaultClient({ address: standin.address, token: standin.token }),
        prefix,
      });
      await store.put(certB, 0);
      standin.writeRaw('secret', `${prefix}/nested/${HOST_C}`, { cert: 'x', key: 'y' });
      assert.deepEqual(await store.list(), [HOST_B]);
    });

    it('a managed record missing its key field reads with a problem naming the field', async () => {
      const prefix = 'fields/certs';
      const store = new VaultCertificateStore({
        client: createVaultClient({ address: standin.address, token: standin.token }),
        prefix,
      });
      standin.writeRaw('secret', `${prefix}/${HOST_A}`, {
        cert: certA1.certPem,
        managed_by: MANAGED_BY,
        directory_url: certA1.directoryUrl,
      });
      const record = await store.get(HOST_A);
      assert.equal(record?.managed, true);
      assert.equal(record?.certificate, undefined);
      assert.match(record?.problem ?? '', /has no key field/);
    });

    it("verifies Vault's TLS certificate against the CA file, even when VAULT_SKIP_VERIFY is set", async () => {
      const tls = await makeTestCertificate({ hostnames: ['127.0.0.1'] });
      const caPem = splitPemCertificates(tls.certPem)[1];
      assert.ok(caPem);
      const directory = await fs.mkdtemp(join(tmpdir(), 'consul-acme-ca-'));
      const caCertPath = join(directory, 'ca.pem');
      await fs.writeFile(caCertPath, caPem);
      const server = createHttpsServer({ cert: tls.certPem, key: tls.keyPem }, (_req, res) => {
        res.writeHead(404, { 'Content-Type': 'application/json' }).end('{"errors":[]}');
      });
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      const address = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
      const skipVerify = process.env.VAULT_SKIP_VERIFY;
      process.env.VAULT_SKIP_VERIFY = '1';
      try {
        const trusted = new VaultCertificateStore({ client: createVaultClient({ address, token: 't', caCertPath }) });
        assert.equal(await trusted.get(HOST_A), undefined);
        const untrusted = new VaultCertificateStore({ client: createVaultClient({ address, token: 't' }) });
        await assert.rejects(untrusted.get(HOST_A), (err) => {
          hasCode('STORE_UNAVAILABLE', false)(err);
          assert.match((err as Error).message, /TLS verification of Vault failed/);
          return true;
        });
      } finally {
        if (skipVerify === undefined) delete process.env.VAULT_SKIP_VERIFY;
        else process.env.VAULT_SKIP_VERIFY = skipVerify;
        server.closeAllConnections();
        await new Promise((resolve) => server.close(resolve));
        await fs.rm(directory, { recursive: true, force: true });
      }
    });

    it('classifyVaultError keeps the check-and-set conflict as StoreConflictError', () => {
      const err = Object.assign(new Error('check-and-set parameter did not match the current version'), {
        response: { statusCode: 400, body: { errors: ['check-and-set parameter did not match the current version'] } },
      });
      assert.ok(classifyVaultError(err, 'write secret/data/x', 3) instanceof StoreConflictError);
      const other = Object.assign(new Error('no data provided'), {
        response: { statusCode: 400, body: { errors: ['no data provided'] } },
      });
      assert.equal(classifyVaultError(other, 'write secret/data/x').code, 'STORE_UNAVAILABLE');
      assert.equal(classifyVaultError(other, 'write secret/data/x').retryable, false);
    });
  });
});

const realVaultAddress = process.env.VAULT_ADDR;
const realVaultToken = process.env.VAULT_TOKEN;
if (realVaultAddress && realVaultToken) {
  const mount = process.env.VAULT_KV_MOUNT ?? 'secret';
  const caCertPath = process.env.VAULT_CACERT;
  certificateStoreContract(`vault (real, ${realVaultAddress})`, async () => {
    const client = createVaultClient({
      address: realVaultAddress,
      token: realVaultToken,
      ...(caCertPath ? { caCertPath } : {}),
    });
    return vaultHarness(client, client, mount, `consul-acme-contract-${randomBytes(4).toString('hex')}/certs`, true);
  });
}
