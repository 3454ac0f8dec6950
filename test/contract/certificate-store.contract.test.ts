/**
 * One set of cases for every CertificateStore: memory, files in a temporary directory, Vault KV v2
 * through the stand-in, and a real Vault when VAULT_ADDR and VAULT_TOKEN are set. Then the cases
 * that only make sense for one implementation (Fabio's layout, Vault errors, file modes).
 */
import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync, randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, before, beforeEach, describe, it } from 'node:test';
import { Worker } from 'node:worker_threads';
import { FileCertificateStore, LOCK_STALE_MS } from '../../src/adapters/file/file-certificate-store.js';
import { MemoryCertificateStore } from '../../src/adapters/memory/memory-certificate-store.js';
import { VaultCertificateStore } from '../../src/adapters/vault/vault-certificate-store.js';
import { classifyVaultError, createVaultClient, type VaultClient } from '../../src/adapters/vault/vault-client.js';
import { MANAGED_BY, type CertificateData, type PendingOrder } from '../../src/domain/certificate.js';
import { splitPemCertificates } from '../../src/domain/pem.js';
import { ConfigError, ConsulAcmeError, StoreConflictError } from '../../src/errors.js';
import type { CertificateStore } from '../../src/ports/certificate-store.js';
import { makeCertificateData, makeTestCertificate } from '../support/certs.js';
import { captureLogs, type LogLine } from '../support/logs.js';
import { freePort } from '../support/net.js';
import { waitFor } from '../support/wait.js';
import { startVaultStandin, type VaultStandin } from '../support/vault-standin.js';

type Corruption = 'bad-pem' | 'wrong-key' | 'newer-format';

interface Harness {
  store: CertificateStore;
  /** Stores a record as someone other than consul-acme would (just cert and key). */
  putUnmanaged(hostname: string, pems: { certPem: string; keyPem: string }): Promise<void>;
  /** Damages a stored record as an outside writer would. */
  corrupt(hostname: string, how: Corruption): Promise<void>;
  /** Stores `fields` as the pending record of hostname as they are (an outside writer, another release). */
  plantPending(hostname: string, fields: Record<string, unknown>): Promise<void>;
  /** What the store logged (it was given a logger). */
  logs: LogLine[];
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
/** What another ACME client put under HOST_A: a leaf and chain from another CA, and its key. */
const foreignA = await makeTestCertificate({ hostnames: [HOST_A, `www.${HOST_A}`], issuer: 'Another CA' });
const ADOPTION = { directoryUrl: 'https://acme.test/directory', adoptedAt: new Date('2026-02-03T04:05:06.000Z') };

function otherKeyPem(): string {
  return generateKeyPairSync('ec', { namedCurve: 'prime256v1' })
    .privateKey.export({ type: 'pkcs8', format: 'pem' })
    .toString();
}

function makePending(hostname: string, overrides: Partial<PendingOrder> = {}): PendingOrder {
  return {
    hostname,
    hostnames: [hostname, `www.${hostname}`],
    directoryUrl: 'https://acme.test/directory',
    orderUrl: `https://acme.test/order/${randomBytes(4).toString('hex')}`,
    keyPem: otherKeyPem(),
    keyType: 'ec-p256',
    createdAt: new Date('2026-02-03T04:05:06.789Z'),
    ...overrides,
  };
}

/** The stored fields of a pending order, as the stores write them (src/adapters/pending-record.ts). */
function pendingFields(pending: PendingOrder): Record<string, unknown> {
  return {
    format: 1,
    hostname: pending.hostname,
    hostnames: pending.hostnames,
    directory_url: pending.directoryUrl,
    order_url: pending.orderUrl,
    key_pem: pending.keyPem,
    key_type: pending.keyType,
    created_at: pending.createdAt.toISOString(),
  };
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

    it('a record not written by consul-acme reads with what its certificate says (foreign), or without when it does not load', async () => {
      await h.putUnmanaged(HOST_A, foreignA);
      const record = await h.store.get(HOST_A);
      assert.equal(record?.managed, false);
      assert.deepEqual(record?.foreign?.hostnames, [HOST_A, `www.${HOST_A}`]);
      assert.equal(record?.foreign?.issuer, 'Another CA');
      assert.equal(record?.foreign?.keyType, 'ec-p256');
      await h.putUnmanaged(HOST_B, { certPem: foreignA.certPem, keyPem: otherKeyPem() });
      const mismatched = await h.store.get(HOST_B);
      assert.equal(mismatched?.managed, false);
      assert.equal(mismatched?.foreign, undefined);
    });

    it("adopt writes the same certificate and key as a new version marked consul-acme's, and a renewal replaces it", async () => {
      await h.putUnmanaged(HOST_A, foreignA);
      const before = await h.store.get(HOST_A);
      assert.ok(before);
      const { version, certificate } = await h.store.adopt(HOST_A, before.version, ADOPTION);
      assert.equal(version, before.version + 1);
      assert.equal(certificate.certPem, foreignA.certPem);
      assert.equal(certificate.keyPem, foreignA.keyPem);
      assert.equal(certificate.adoptedAt?.getTime(), ADOPTION.adoptedAt.getTime());
      const after = await h.store.get(HOST_A);
      assert.equal(after?.managed, true);
      assert.equal(after?.version, version);
      assert.equal(after?.certificate?.certPem, foreignA.certPem, 'the same certificate, byte for byte');
      assert.equal(after?.certificate?.keyPem, foreignA.keyPem, 'the same key, byte for byte');
      assert.deepEqual(after?.certificate?.hostnames, [HOST_A, `www.${HOST_A}`]);
      assert.equal(after?.certificate?.directoryUrl, ADOPTION.directoryUrl);
      assert.equal(after?.certificate?.adoptedAt?.getTime(), ADOPTION.adoptedAt.getTime());
      assert.equal(after?.certificate?.obtainedAt.getTime(), ADOPTION.adoptedAt.getTime());
      assert.deepEqual(await h.store.list(), [HOST_A]);
      const renewed = await h.store.put(certA1, version);
      const now = await h.store.get(HOST_A);
      assert.equal(now?.version, renewed);
      assert.equal(now?.certificate?.certPem, certA1.certPem);
      assert.equal(now?.certificate?.adoptedAt, undefined, 'a renewed certificate is no longer marked adopted');
    });

    it('adopt refuses a changed version, a record of ours, a missing one and a pair that does not match, writing nothing', async () => {
      await h.putUnmanaged(HOST_A, foreignA);
      const record = await h.store.get(HOST_A);
      assert.ok(record);
      await assert.rejects(h.store.adopt(HOST_A, record.version + 1, ADOPTION), hasCode('STORE_CONFLICT'));
      await assert.rejects(h.store.adopt(HOST_C, 1, ADOPTION), hasCode('STORE_CONFLICT'));
      await h.store.put(certB, 0);
      await assert.rejects(h.store.adopt(HOST_B, 1, ADOPTION), hasCode('STORE_CONFLICT'));
      await h.putUnmanaged('d.example.com', { certPem: foreignA.certPem, keyPem: otherKeyPem() });
      const mismatched = await h.store.get('d.example.com');
      assert.ok(mismatched);
      await assert.rejects(
        h.store.adopt('d.example.com', mismatched.version, ADOPTION),
        (err: unknown) => hasCode('ADOPT_REFUSED')(err) && /private key does not match/.test(String(err)),
      );
      const untouched = await h.store.get('d.example.com');
      assert.equal(untouched?.managed, false);
      assert.equal(untouched?.version, mismatched.version);
      assert.equal((await h.store.get(HOST_A))?.managed, false);
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

    it('probe resolves on a store that answers, empty or not', async () => {
      await h.store.probe();
      await h.store.put(certA1, 0);
      await h.store.probe();
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

    it('getPending of a hostname without a pending record resolves undefined, and listPending of none []', async () => {
      assert.equal(await h.store.getPending(HOST_A), undefined);
      assert.deepEqual(await h.store.listPending(), []);
    });

    it('putPending then getPending round-trips every field, the date as a Date', async () => {
      const pending = makePending(HOST_A);
      await h.store.putPending(pending);
      const read = await h.store.getPending(HOST_A);
      assert.ok(read);
      assert.ok(read.createdAt instanceof Date);
      assert.deepEqual(read, pending);
    });

    it('putPending overwrites the record of the same hostname', async () => {
      await h.store.putPending(makePending(HOST_A));
      const second = makePending(HOST_A, {
        hostnames: [HOST_A],
        keyType: 'ec-p384',
        keyPem: generateKeyPairSync('ec', { namedCurve: 'secp384r1' })
          .privateKey.export({ type: 'pkcs8', format: 'pem' })
          .toString(),
        createdAt: new Date('2026-02-04T00:00:00Z'),
      });
      await h.store.putPending(second);
      assert.deepEqual(await h.store.getPending(HOST_A), second);
      assert.deepEqual(await h.store.listPending(), [HOST_A]);
    });

    it('deletePending removes the record and is a no-op when it is missing', async () => {
      await h.store.putPending(makePending(HOST_A));
      await h.store.putPending(makePending(HOST_B));
      await h.store.deletePending(HOST_A);
      assert.equal(await h.store.getPending(HOST_A), undefined);
      assert.deepEqual(await h.store.listPending(), [HOST_B]);
      await h.store.deletePending(HOST_A);
      await h.store.deletePending(HOST_C);
      assert.deepEqual(await h.store.listPending(), [HOST_B]);
    });

    it('listPending resolves the hostnames with a pending record, sorted; list() does not show them', async () => {
      for (const hostname of [HOST_C, HOST_A, HOST_B]) await h.store.putPending(makePending(hostname));
      assert.deepEqual(await h.store.listPending(), [HOST_A, HOST_B, HOST_C]);
      assert.deepEqual(await h.store.list(), []);
    });

    it('pending records and certificates are independent of each other', async () => {
      await h.store.put(certA1, 0);
      const pending = makePending(HOST_A);
      await h.store.putPending(pending);
      await h.store.delete(HOST_A, 1);
      assert.deepEqual(await h.store.getPending(HOST_A), pending);
      await h.store.put(certA2, 0);
      await h.store.deletePending(HOST_A);
      assertSameCertificate((await h.store.get(HOST_A))?.certificate, certA2);
    });

    it('a pending record that cannot be parsed reads as undefined and is logged without its key', async () => {
      const pending = makePending(HOST_A);
      const { key_pem: _dropped, ...withoutKey } = pendingFields(pending);
      const cases: Array<{ fields: Record<string, unknown>; reason: RegExp }> = [
        { fields: withoutKey, reason: /has no key_pem field/ },
        { fields: { ...pendingFields(pending), format: 0 }, reason: /format 0, which this release does not read/ },
        {
          fields: { ...pendingFields(pending), key_pem: 'not a key' },
          reason: /key_pem that is not a PEM private key/,
        },
        { fields: { ...pendingFields(pending), key_type: 'rsa-2048' }, reason: /key_pem that is not a rsa-2048 key/ },
        { fields: { ...pendingFields(pending), hostname: HOST_B }, reason: /is for "b\.example\.com"/ },
        { fields: { ...pendingFields(pending), created_at: 'yesterday' }, reason: /created_at that is not a date/ },
        { fields: { ...pendingFields(pending), order_url: 'ftp://x' }, reason: /order_url that is not an http/ },
      ];
      for (const { fields, reason } of cases) {
        await h.plantPending(HOST_A, fields);
        assert.equal(await h.store.getPending(HOST_A), undefined, String(reason));
        const line = h.logs.at(-1);
        assert.equal(line?.msg, 'pending order unreadable; ignored');
        assert.equal(line?.hostname, HOST_A);
        assert.match(String(line?.reason), reason);
      }
      for (const line of h.logs) assert.ok(!JSON.stringify(line).includes('PRIVATE KEY'), 'no key in the logs');
      assert.deepEqual(await h.store.listPending(), [HOST_A], 'an unreadable record is still listed');
      await h.store.deletePending(HOST_A);
      assert.deepEqual(await h.store.listPending(), []);
    });

    it('a pending record a newer release wrote rejects getPending with FORMAT_NEWER and stays in place', async () => {
      const pending = makePending(HOST_A);
      await h.plantPending(HOST_A, { ...pendingFields(pending), format: 2, a_field_of_format_2: true });
      await assert.rejects(h.store.getPending(HOST_A), (err: unknown) => {
        hasCode('FORMAT_NEWER', true)(err);
        assert.match((err as Error).message, /format 2 by a newer release/);
        assert.ok(!(err as Error).message.includes('PRIVATE KEY'), 'no key in the message');
        return true;
      });
      assert.deepEqual(await h.store.listPending(), [HOST_A]);
    });

    it('a certificate a newer release wrote reads with newerFormat and is neither replaced nor deleted', async () => {
      await h.store.put(certA1, 0);
      await h.corrupt(HOST_A, 'newer-format');
      const record = await h.store.get(HOST_A);
      assert.ok(record);
      assert.equal(record.newerFormat, 2);
      assert.equal(record.managed, true);
      assert.equal(record.certificate, undefined);
      assert.match(record.problem ?? '', /format 2 by a newer release/);
      await assert.rejects(h.store.put(certA2, record.version), hasCode('FORMAT_NEWER'));
      await assert.rejects(h.store.delete(HOST_A, record.version), hasCode('FORMAT_NEWER'));
      assert.equal((await h.store.get(HOST_A))?.newerFormat, 2, 'still there, untouched');
    });

    it('putPending refuses an order that could not be read back, and stores nothing', async () => {
      await assert.rejects(h.store.putPending(makePending(HOST_A, { keyPem: 'garbage' })), hasCode('INTERNAL', false));
      await assert.rejects(
        h.store.putPending(makePending(HOST_A, { hostnames: [HOST_B, HOST_A] })),
        hasCode('INTERNAL', false),
      );
      assert.equal(await h.store.getPending(HOST_A), undefined);
      assert.deepEqual(await h.store.listPending(), []);
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Memory

certificateStoreContract('memory', async () => {
  const { logger, lines } = captureLogs('warn');
  const store = new MemoryCertificateStore({ logger });
  return {
    store,
    putUnmanaged: async (hostname, pems) => {
      store.putUnmanaged(hostname, pems);
    },
    corrupt: async (hostname, how) => store.corrupt(hostname, how),
    plantPending: async (hostname, fields) => store.plantPending(hostname, fields),
    logs: lines,
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
  const { logger, lines } = captureLogs('warn');
  const store = new FileCertificateStore({ directory, logger });
  return {
    directory,
    store,
    plantPending: async (hostname, fields) => {
      await fs.mkdir(join(directory, '.pending'), { recursive: true, mode: 0o700 });
      await fs.writeFile(join(directory, '.pending', `${hostname}.json`), JSON.stringify(fields), { mode: 0o600 });
    },
    logs: lines,
    putUnmanaged: async (hostname, pems) => {
      await fs.mkdir(join(directory, hostname), { recursive: true });
      await fs.writeFile(join(directory, hostname, 'cert.pem'), pems.certPem);
      await fs.writeFile(join(directory, hostname, 'key.pem'), pems.keyPem);
    },
    corrupt: async (hostname, how) => {
      if (how === 'newer-format') {
        const metaFile = join(directory, hostname, 'meta.json');
        const meta = JSON.parse(await fs.readFile(metaFile, 'utf8')) as Record<string, unknown>;
        await fs.writeFile(metaFile, JSON.stringify({ ...meta, format: 2 }));
      } else if (how === 'bad-pem')
        await fs.writeFile(join(directory, hostname, 'cert.pem'), 'this is not a certificate\n');
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

  it('adopt writes meta.json beside the files another tool wrote, in place: cert.pem and key.pem are not touched', async () => {
    await h.putUnmanaged(HOST_A, foreignA);
    const folder = join(h.directory, HOST_A);
    const [certBefore, keyBefore] = await Promise.all([
      fs.stat(join(folder, 'cert.pem')),
      fs.stat(join(folder, 'key.pem')),
    ]);
    await h.store.adopt(HOST_A, 1, ADOPTION);
    const [certAfter, keyAfter] = await Promise.all([
      fs.stat(join(folder, 'cert.pem')),
      fs.stat(join(folder, 'key.pem')),
    ]);
    assert.equal(certAfter.ino, certBefore.ino, 'cert.pem is the same file');
    assert.equal(keyAfter.ino, keyBefore.ino, 'key.pem is the same file');
    assert.equal(certAfter.mtimeMs, certBefore.mtimeMs);
    assert.ok((await fs.lstat(folder)).isDirectory(), 'still the folder the other tool made');
    const meta = JSON.parse(await fs.readFile(join(folder, 'meta.json'), 'utf8')) as Record<string, unknown>;
    assert.equal(meta.managed_by, MANAGED_BY);
    assert.equal(meta.version, 2);
    assert.equal(meta.adopted_at, ADOPTION.adoptedAt.toISOString());
    // The first renewal moves the folder aside as the previous version, as for the old layout.
    await h.store.put(certA1, 2);
    assert.equal((await h.store.get(HOST_A))?.certificate?.certPem, certA1.certPem);
  });

  it('writes key.pem 0600, cert.pem 0644 and meta.json in a version folder that <dir>/<hostname> links to', async () => {
    await h.store.put(certA1, 0);
    const name = join(h.directory, HOST_A);
    assert.ok((await fs.lstat(name)).isSymbolicLink());
    assert.equal(await fs.readlink(name), join('.versions', HOST_A, '1'), 'a relative link');
    const key = await fs.stat(join(name, 'key.pem'));
    const cert = await fs.stat(join(name, 'cert.pem'));
    assert.equal(key.mode & 0o777, 0o600);
    assert.equal(cert.mode & 0o777, 0o644);
    const meta = JSON.parse(await fs.readFile(join(name, 'meta.json'), 'utf8'));
    assert.equal(meta.version, 1);
    assert.equal(meta.managed_by, MANAGED_BY);
    assert.deepEqual(meta.hostnames, certA1.hostnames);
    assert.equal(meta.not_after, certA1.notAfter.toISOString());
    assert.deepEqual(
      (await fs.readdir(h.directory)).sort(),
      ['.versions', HOST_A],
      'no temporary or lock files are left behind',
    );
  });

  it('keeps the previous version folder for readers that resolved the old link, and removes older ones', async () => {
    const versions = join(h.directory, '.versions', HOST_A);
    await h.store.put(certA1, 0);
    await h.store.put(certA2, 1);
    assert.deepEqual((await fs.readdir(versions)).sort(), ['1', '2']);
    assert.equal(await fs.readFile(join(versions, '1', 'cert.pem'), 'utf8'), certA1.certPem);
    await h.store.put(certA1, 2);
    assert.deepEqual((await fs.readdir(versions)).sort(), ['2', '3']);
    assert.equal(await fs.readlink(join(h.directory, HOST_A)), join('.versions', HOST_A, '3'));
    assertSameCertificate((await h.store.get(HOST_A))?.certificate, certA1);
  });

  it('a reader that resolves the link once never sees a mismatched pair during 20 renewals', async (t) => {
    // The reader is another thread, so it really runs beside the writer, polling as a TLS server
    // reloading the files would: realpath, then cert.pem and key.pem from the resolved folder.
    let version = await h.store.put(certA1, 0);
    const stop = new Int32Array(new SharedArrayBuffer(4));
    const reader = new Worker(
      `
      const { workerData, parentPort } = require('node:worker_threads');
      const { realpathSync, readFileSync } = require('node:fs');
      const { join } = require('node:path');
      const { X509Certificate, createPrivateKey } = require('node:crypto');
      const { name, stop } = workerData;
      let reads = 0, readFailures = 0;
      const mismatches = [], serials = new Set();
      while (Atomics.load(stop, 0) === 0) {
        let certPem, keyPem;
        try {
          const folder = realpathSync(name);
          certPem = readFileSync(join(folder, 'cert.pem'), 'utf8');
          keyPem = readFileSync(join(folder, 'key.pem'), 'utf8');
        } catch (err) {
          readFailures += 1;
          continue;
        }
        reads += 1;
        if (reads === 1) parentPort.postMessage('reading');
        const leaf = new X509Certificate(certPem.match(/-----BEGIN CERTIFICATE-----[\\s\\S]*?-----END CERTIFICATE-----/)[0]);
        serials.add(leaf.serialNumber);
        if (!leaf.checkPrivateKey(createPrivateKey(keyPem))) mismatches.push(leaf.serialNumber);
      }
      parentPort.postMessage({ reads, readFailures, mismatches, versionsSeen: serials.size });
      `,
      { eval: true, workerData: { name: join(h.directory, HOST_A), stop } },
    );
    type Report = { reads: number; readFailures: number; mismatches: string[]; versionsSeen: number };
    const messages: unknown[] = [];
    let failure: Error | undefined;
    reader.on('message', (message) => messages.push(message));
    reader.once('error', (err) => (failure = err));
    const report = async (): Promise<Report> => {
      await waitFor('the reader to report', () => failure ?? messages.find((m) => m !== 'reading'), {
        intervalMs: 10,
      });
      if (failure !== undefined) throw failure;
      return messages.find((m) => m !== 'reading') as Report;
    };
    await waitFor('the reader to start reading', () => failure ?? messages.includes('reading'), { intervalMs: 10 });
    try {
      for (let renewal = 1; renewal <= 20; renewal += 1) {
        version = await h.store.put(renewal % 2 === 1 ? certA2 : certA1, version);
      }
    } finally {
      Atomics.store(stop, 0, 1);
    }
    const { reads, readFailures, mismatches, versionsSeen } = await report();
    await reader.terminate();
    t.diagnostic(
      `reader: ${reads} whole reads during 20 renewals, ${mismatches.length} mismatched pairs, ${readFailures} reads that found no folder, ${versionsSeen} certificates seen`,
    );
    assert.equal(version, 21);
    assert.ok(reads > 0, 'the reader read');
    assert.ok(versionsSeen >= 2, 'the reader saw renewals happen');
    assert.deepEqual(mismatches, [], 'a mismatched pair was read');
  });

  /** A folder as the old layout wrote it: <dir>/<hostname>/ with the three files (meta.json version 3). */
  async function writeOldLayout(certificate: CertificateData, version: number): Promise<void> {
    const folder = join(h.directory, certificate.hostname);
    await fs.mkdir(folder, { recursive: true });
    await fs.writeFile(join(folder, 'key.pem'), certificate.keyPem, { mode: 0o600 });
    await fs.writeFile(join(folder, 'cert.pem'), certificate.certPem);
    const sha = (text: string): string => createHash('sha256').update(text).digest('hex');
    const meta = {
      version,
      managed_by: MANAGED_BY,
      cert_id: certificate.hostname,
      hostnames: certificate.hostnames,
      not_before: certificate.notBefore.toISOString(),
      not_after: certificate.notAfter.toISOString(),
      directory_url: certificate.directoryUrl,
      issuer: certificate.issuer,
      key_type: certificate.keyType,
      obtained_at: certificate.obtainedAt.toISOString(),
      cert_sha256: sha(certificate.certPem),
      key_sha256: sha(certificate.keyPem),
    };
    await fs.writeFile(join(folder, 'meta.json'), JSON.stringify(meta));
  }

  it('reads a folder of the old layout, and migrates it on the next put while get keeps finding it', async () => {
    await writeOldLayout(certA1, 3);
    assert.deepEqual(await h.store.list(), [HOST_A]);
    const before = await h.store.get(HOST_A);
    assert.equal(before?.version, 3);
    assertSameCertificate(before?.certificate, certA1);

    let stop = false;
    const seen: Array<number | undefined> = [];
    const poller = (async () => {
      while (!stop) {
        const record = await h.store.get(HOST_A);
        seen.push(record?.certificate === undefined ? undefined : record.version);
      }
    })();
    try {
      assert.equal(await h.store.put(certA2, 3), 4);
    } finally {
      stop = true;
      await poller;
    }
    assert.ok(seen.length > 0);
    assert.ok(
      seen.every((v) => v === 3 || v === 4),
      `every read found a whole record: ${JSON.stringify(seen)}`,
    );

    assert.ok((await fs.lstat(join(h.directory, HOST_A))).isSymbolicLink());
    const versions = join(h.directory, '.versions', HOST_A);
    assert.deepEqual((await fs.readdir(versions)).sort(), ['3', '4'], 'the old folder is the previous version');
    assert.equal(await fs.readFile(join(versions, '3', 'cert.pem'), 'utf8'), certA1.certPem);
    assertSameCertificate((await h.store.get(HOST_A))?.certificate, certA2);
    assert.equal(await h.store.put(certA1, 4), 5);
    assert.deepEqual((await fs.readdir(versions)).sort(), ['4', '5']);
  });

  it('after a crash between the two renames of a migration, get reads the newest version and put restores the link', async () => {
    await writeOldLayout(certA1, 3);
    const versions = join(h.directory, '.versions', HOST_A);
    await fs.mkdir(versions, { recursive: true });
    await fs.rename(join(h.directory, HOST_A), join(versions, '3')); // the first rename, then the crash
    const record = await h.store.get(HOST_A);
    assert.equal(record?.version, 3);
    assertSameCertificate(record?.certificate, certA1);
    assert.deepEqual(await h.store.list(), [HOST_A]);
    await assert.rejects(h.store.put(certA2, 0), isConflict);
    assert.equal(await h.store.put(certA2, 3), 4);
    assert.equal(await fs.readlink(join(h.directory, HOST_A)), join('.versions', HOST_A, '4'));
    assert.deepEqual((await fs.readdir(versions)).sort(), ['3', '4']);
  });

  it('delete removes the link and every version folder', async () => {
    await h.store.put(certA1, 0);
    await h.store.put(certA2, 1);
    await h.store.delete(HOST_A, 2);
    assert.deepEqual(await fs.readdir(h.directory), ['.versions']);
    assert.deepEqual(await fs.readdir(join(h.directory, '.versions')), []);
    assert.deepEqual(await h.store.list(), []);
  });

  it('delete of an old-layout folder removes it', async () => {
    await writeOldLayout(certA1, 2);
    await h.store.delete(HOST_A, 2);
    assert.deepEqual(await fs.readdir(h.directory), []);
  });

  it('list sees linked names, skips dot-folders and plain files, and finds every one of many entries', async () => {
    await h.store.put(certA1, 0);
    await writeOldLayout(certB, 1);
    await h.store.putPending(makePending(HOST_C));
    await fs.writeFile(join(h.directory, 'notes.txt'), 'not a certificate');
    await fs.mkdir(join(h.directory, '.hidden.example.com'));
    await fs.writeFile(join(h.directory, '.hidden.example.com', 'cert.pem'), certC.certPem);
    await fs.mkdir(join(h.directory, 'empty.example.com'));
    assert.deepEqual(await h.store.list(), [HOST_A, HOST_B]);
    // Many entries: list checks them a few at a time and still finds every one.
    const many = Array.from({ length: 300 }, (_, i) => `n${String(i).padStart(3, '0')}.example.com`);
    for (const name of many) {
      await fs.mkdir(join(h.directory, name));
      await fs.writeFile(join(h.directory, name, 'cert.pem'), foreign.certPem);
    }
    assert.deepEqual(await h.store.list(), [HOST_A, HOST_B, ...many].sort());
  });

  it('refuses to replace a plain file at <dir>/<hostname>', async () => {
    await fs.writeFile(join(h.directory, HOST_A), 'someone else');
    await assert.rejects(h.store.put(certA1, 0), hasCode('STORE_CONFLICT'));
    assert.equal(await fs.readFile(join(h.directory, HOST_A), 'utf8'), 'someone else');
  });

  it('keeps a pending order in <dir>/.pending/<hostname>.json, 0600 in a 0700 folder, with nothing left behind', async () => {
    const pending = makePending(HOST_A);
    await h.store.putPending(pending);
    await h.store.putPending(pending);
    const folder = join(h.directory, '.pending');
    assert.equal((await fs.stat(folder)).mode & 0o777, 0o700);
    assert.equal((await fs.stat(join(folder, `${HOST_A}.json`))).mode & 0o777, 0o600);
    assert.deepEqual(await fs.readdir(folder), [`${HOST_A}.json`]);
    const stored = JSON.parse(await fs.readFile(join(folder, `${HOST_A}.json`), 'utf8'));
    assert.equal(stored.format, 1);
    assert.equal(stored.order_url, pending.orderUrl);
    assert.deepEqual(await h.store.list(), [], 'the certificates do not include it');
    // A temporary copy a crashed write left holds the key too: deletePending removes it.
    await fs.writeFile(join(folder, `${HOST_A}.json.tmp-0a1b2c`), 'partial', { mode: 0o600 });
    await h.store.deletePending(HOST_A);
    assert.deepEqual(await fs.readdir(folder), []);
  });

  it('a pending file that is not JSON reads as undefined and is logged', async () => {
    await fs.mkdir(join(h.directory, '.pending'), { mode: 0o700 });
    await fs.writeFile(join(h.directory, '.pending', `${HOST_A}.json`), '{"format": 1, "hostn');
    assert.equal(await h.store.getPending(HOST_A), undefined);
    assert.match(String(h.logs.at(-1)?.reason), /is not valid JSON/);
    await assert.rejects(h.store.getPending('../evil'), hasCode('INVALID_HOSTNAME'));
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

  it('probe of a store whose directory is a plain file rejects with a STORE_ error naming it', async () => {
    const path = join(h.directory, 'a-file');
    await fs.writeFile(path, 'not a directory');
    const store = new FileCertificateStore({ directory: path });
    await assert.rejects(
      store.probe(),
      (err: unknown) =>
        err instanceof ConsulAcmeError && err.code.startsWith('STORE_') && err.message.includes(`probe ${path}`),
    );
  });

  it('list and probe of a directory that does not exist yet resolve ([] for list)', async () => {
    const store = new FileCertificateStore({ directory: join(h.directory, 'not-yet') });
    assert.deepEqual(await store.list(), []);
    await store.probe();
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
  pendingPath: string,
  cleanupAll: boolean,
): Harness {
  const { logger, lines } = captureLogs('warn');
  const store = new VaultCertificateStore({ client, mount, prefix, pendingPath, logger });
  const dataPath = (hostname: string): string => `${mount}/data/${prefix}/${hostname}`;
  return {
    store,
    plantPending: async (hostname, fields) => {
      await raw.write(`${mount}/data/${pendingPath}/${hostname}`, { data: fields });
    },
    logs: lines,
    putUnmanaged: async (hostname, pems) => {
      await raw.write(dataPath(hostname), { data: { cert: pems.certPem, key: pems.keyPem } });
    },
    corrupt: async (hostname, how) => {
      const current = await raw.read(dataPath(hostname));
      const data = { ...current.data.data };
      if (how === 'newer-format') data.format = '2';
      else if (how === 'bad-pem') data.cert = 'this is not a certificate\n';
      else data.key = otherKeyPem();
      await raw.write(dataPath(hostname), { data });
    },
    cleanup: async () => {
      if (!cleanupAll) return;
      const keys = await store.list();
      for (const key of keys) await raw.delete(`${mount}/metadata/${prefix}/${key}`);
      for (const key of await store.listPending()) await raw.delete(`${mount}/metadata/${pendingPath}/${key}`);
    },
  };
}

let standin: VaultStandin;
let testNumber = 0;

/** Runs `use` with a Vault store on a fresh stand-in, and closes the stand-in after. */
async function withVaultStore(
  use: (store: VaultCertificateStore, vault: VaultStandin) => Promise<void>,
): Promise<void> {
  const vault = await startVaultStandin();
  try {
    await use(
      new VaultCertificateStore({ client: createVaultClient({ address: vault.address, token: vault.token }) }),
      vault,
    );
  } finally {
    await vault.close();
  }
}

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
    return vaultHarness(client, client, 'secret', `t${testNumber}/certs`, `t${testNumber}/pending`, false);
  });

  describe('VaultCertificateStore only', () => {
    it('adopt writes a new version with the same cert and key, keeps the fields an exporter wrote, and deletes no version', async () => {
      await withVaultStore(async (store, vault) => {
        const headers = { 'X-Vault-Token': vault.token, 'content-type': 'application/json' };
        const url = `${vault.address}/v1/secret/data/fabio/certs/${HOST_A}`;
        const written = await fetch(url, {
          method: 'POST',
          headers,
          body: JSON.stringify({ data: { cert: foreignA.certPem, key: foreignA.keyPem, source: 'tags-exporter' } }),
        });
        assert.equal(written.status, 200);
        await store.adopt(HOST_A, 1, ADOPTION);
        const read = async (version: number): Promise<Record<string, string>> =>
          (
            (await (await fetch(`${url}?version=${version}`, { headers })).json()) as {
              data: { data: Record<string, string> };
            }
          ).data.data;
        const [first, second] = [await read(1), await read(2)];
        assert.deepEqual(
          first,
          { cert: foreignA.certPem, key: foreignA.keyPem, source: 'tags-exporter' },
          'version 1 as it was',
        );
        assert.equal(second.cert, foreignA.certPem);
        assert.equal(second.key, foreignA.keyPem);
        assert.equal(second.source, 'tags-exporter');
        assert.equal(second.managed_by, MANAGED_BY);
        assert.equal(second.adopted_at, ADOPTION.adoptedAt.toISOString());
        assert.equal(second.directory_url, ADOPTION.directoryUrl);
      });
    });

    it('stores the secret at secret/data/fabio/certs/<host> with the cert and key fields Fabio reads', async () => {
      await withVaultStore(async (store, vault) => {
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
      });
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
      await assert.rejects(store.probe(), hasCode('STORE_UNAVAILABLE', true));
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

    it('keeps pending orders at secret/data/consul-acme/pending/<host>, outside the prefix Fabio lists', async () => {
      await withVaultStore(async (store, vault) => {
        const pending = makePending(HOST_A);
        await store.putPending(pending);
        await store.putPending({ ...pending, orderUrl: 'https://acme.test/order/second' });
        const raw = vault.readRaw('secret', `consul-acme/pending/${HOST_A}`);
        assert.equal(raw?.current, 2);
        assert.deepEqual(raw?.versions[2]?.data, {
          ...pendingFields(pending),
          order_url: 'https://acme.test/order/second',
        });
        const headers = { 'X-Vault-Token': vault.token };
        const fabioList = await fetch(`${vault.address}/v1/secret/metadata/fabio/certs?list=true`, { headers });
        assert.equal(fabioList.status, 404, 'Fabio finds nothing to load');
        assert.deepEqual(await store.list(), []);
        await store.deletePending(HOST_A);
        assert.equal(vault.readRaw('secret', `consul-acme/pending/${HOST_A}`), undefined, 'no version is left');
        assert.ok(
          vault.requests().includes(`DELETE /v1/secret/metadata/consul-acme/pending/${HOST_A}`),
          'the metadata (every version) is deleted',
        );
      });
    });

    it("costs six requests for an order's round: the writes go on the versions the reads under the lock saw", async () => {
      await withVaultStore(async (store, vault) => {
        const before = vault.requests().length;
        // What the worker does for a new name: read both, write the pending order, store, remove it.
        assert.equal(await store.get(HOST_A), undefined);
        assert.equal(await store.getPending(HOST_A), undefined);
        await store.putPending(makePending(HOST_A));
        assert.equal(await store.put(certA1, 0), 1);
        await store.deletePending(HOST_A);
        assert.deepEqual(vault.requests().slice(before), [
          `GET /v1/secret/data/fabio/certs/${HOST_A}`,
          `GET /v1/secret/data/consul-acme/pending/${HOST_A}`,
          `POST /v1/secret/data/consul-acme/pending/${HOST_A}`,
          `POST /v1/secret/data/fabio/certs/${HOST_A}`,
          `GET /v1/secret/data/fabio/certs/${HOST_A}?version=1`,
          `DELETE /v1/secret/metadata/consul-acme/pending/${HOST_A}`,
        ]);
        // A renewal of what it just wrote goes on version 1 at once too.
        assert.equal(await store.put(certA2, 1), 2);
        assert.equal(vault.requests().filter((r) => r === `GET /v1/secret/data/fabio/certs/${HOST_A}`).length, 1);
      });
    });

    it('reads and refuses as before when the secret changed since it was seen, and never overwrites the change', async () => {
      await withVaultStore(async (store, vault) => {
        assert.equal(await store.get(HOST_A), undefined);
        // Another tool writes the secret after this store saw it absent.
        vault.writeRaw('secret', `fabio/certs/${HOST_A}`, { cert: foreignA.certPem, key: foreignA.keyPem });
        await assert.rejects(store.put(certA1, 0), (err: unknown) => err instanceof StoreConflictError);
        assert.deepEqual(vault.readRaw('secret', `fabio/certs/${HOST_A}`)?.versions[1]?.data, {
          cert: foreignA.certPem,
          key: foreignA.keyPem,
        });
        assert.equal(vault.readRaw('secret', `fabio/certs/${HOST_A}`)?.current, 1);

        // A pending order written by another holder since: the write reads the version and goes on it.
        assert.equal(await store.getPending(HOST_B), undefined);
        vault.writeRaw('secret', `consul-acme/pending/${HOST_B}`, { order_url: 'https://acme.test/order/other' });
        await store.putPending(makePending(HOST_B));
        assert.equal(vault.readRaw('secret', `consul-acme/pending/${HOST_B}`)?.current, 2);
      });
    });

    it('writes pending orders with check-and-set, so a mount that requires it works', async () => {
      const client = createVaultClient({ address: standin.address, token: standin.token });
      const store = new VaultCertificateStore({ client, prefix: 'casreq/certs', pendingPath: 'casreq/pending' });
      await client.write(`secret/metadata/casreq/pending/${HOST_A}`, { cas_required: true });
      await store.putPending(makePending(HOST_A));
      await store.putPending(makePending(HOST_A));
      assert.equal(standin.readRaw('secret', `casreq/pending/${HOST_A}`)?.current, 2);
    });

    it('refuses a pending path inside the certificate prefix', () => {
      const client = createVaultClient({ address: standin.address, token: standin.token });
      for (const pendingPath of ['fabio/certs', 'fabio/certs/pending', '/fabio/certs/']) {
        assert.throws(
          () => new VaultCertificateStore({ client, pendingPath }),
          (err) => err instanceof ConfigError && /must not be inside the certificate prefix/.test(err.message),
          pendingPath,
        );
      }
      assert.ok(new VaultCertificateStore({ client, pendingPath: 'fabio/pending' }));
    });

    it('pending reads and writes that Vault refuses are STORE_* errors', async () => {
      standin.restrictToken('pending-reader', (method) => method === 'GET');
      const store = new VaultCertificateStore({
        client: createVaultClient({ address: standin.address, token: 'pending-reader' }),
        pendingPath: 'refused/pending',
      });
      await assert.rejects(store.putPending(makePending(HOST_A)), hasCode('STORE_PERMISSION_DENIED', false));
      standin.failNext(503, ['Vault is sealed']);
      await assert.rejects(store.getPending(HOST_A), hasCode('STORE_UNAVAILABLE', true));
      assert.equal(await store.getPending(HOST_A), undefined);
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
    const run = `consul-acme-contract-${randomBytes(4).toString('hex')}`;
    return vaultHarness(client, client, mount, `${run}/certs`, `${run}/pending`, true);
  });
}
