import assert from 'node:assert/strict';
import { X509Certificate, generateKeyPairSync } from 'node:crypto';
import { describe, it } from 'node:test';
import type { KeyType } from '../../src/domain/certificate.js';
import {
  clearInspectionCache,
  INSPECTION_CACHE_SIZE,
  inspectCertificate,
  inspectCertificateCached,
  inspectionCacheStats,
  keyTypeOf,
  normalizeSerial,
  PARSED_KEYS_SIZE,
  parsePrivateKey,
  rememberPrivateKey,
  splitPemCertificates,
  storedRecordFromPem,
} from '../../src/domain/pem.js';
import { makeTestCertificate, TEST_CA_NAME } from '../support/certs.js';

const notBefore = new Date('2026-01-01T00:00:00Z');
const notAfter = new Date('2026-03-01T12:30:00Z');
const ecP256 = await makeTestCertificate({ hostnames: ['b.example.com', 'a.example.com'], notBefore, notAfter });
const selfSigned = await makeTestCertificate({ hostnames: ['self.example.com'], notBefore, notAfter, issuer: null });
const otherKey = generateKeyPairSync('ec', { namedCurve: 'prime256v1' })
  .privateKey.export({ type: 'pkcs8', format: 'pem' })
  .toString();
const ed25519Key = generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();

describe('inspectCertificate', () => {
  it('reads the sorted SAN DNS names, the dates and the issuer CN of a leaf with its chain', () => {
    const result = inspectCertificate(ecP256.certPem, ecP256.keyPem);
    assert.deepEqual(result, {
      ok: true,
      hostnames: ['a.example.com', 'b.example.com'],
      notBefore,
      notAfter,
      issuer: TEST_CA_NAME,
      keyType: 'ec-p256',
      serial: normalizeSerial(new X509Certificate(ecP256.certPem).serialNumber),
    });
    assert.equal(splitPemCertificates(ecP256.certPem).length, 2);
  });

  it('names the issuer of a self-signed certificate after its own CN', () => {
    const result = inspectCertificate(selfSigned.certPem, selfSigned.keyPem);
    assert.equal(result.ok && result.issuer, 'self.example.com');
  });

  const keyTypes: KeyType[] = ['ec-p256', 'ec-p384', 'rsa-2048'];
  for (const keyType of keyTypes) {
    it(`tells the key type ${keyType} from the private key`, async () => {
      const { certPem, keyPem } = await makeTestCertificate({ hostnames: ['k.example.com'], keyType });
      const result = inspectCertificate(certPem, keyPem);
      assert.equal(result.ok && result.keyType, keyType);
    });
  }

  it('gives key type undefined for keys consul-acme does not issue', () => {
    assert.equal(keyTypeOf(generateKeyPairSync('ed25519').privateKey), undefined);
    assert.equal(keyTypeOf(generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey), undefined);
    assert.equal(keyTypeOf(generateKeyPairSync('ec', { namedCurve: 'secp521r1' }).privateKey), undefined);
    assert.equal(keyTypeOf(generateKeyPairSync('rsa', { modulusLength: 3072 }).privateKey), 'rsa-3072');
  });

  it('reports an ed25519 key beside an ECDSA certificate as not matching', () => {
    const result = inspectCertificate(ecP256.certPem, ed25519Key);
    assert.deepEqual(result, { ok: false, problem: 'private key does not match the certificate' });
  });

  const problems: { name: string; cert: string; key: string; problem: RegExp }[] = [
    { name: 'an empty cert field', cert: '', key: ecP256.keyPem, problem: /^cert field is empty$/ },
    { name: 'an empty key field', cert: ecP256.certPem, key: '  ', problem: /^key field is empty$/ },
    {
      name: 'a cert field without a PEM block',
      cert: 'hello',
      key: ecP256.keyPem,
      problem: /^cert field is not a PEM certificate$/,
    },
    {
      name: 'a key PEM in the cert field',
      cert: ecP256.keyPem,
      key: ecP256.keyPem,
      problem: /^cert field is not a PEM certificate$/,
    },
    {
      name: 'a PEM certificate block with garbage inside',
      cert: '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n',
      key: ecP256.keyPem,
      problem: /^cert field is not a PEM certificate \(/,
    },
    {
      name: 'a chain certificate that cannot be parsed',
      cert: `${ecP256.certPem}-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n`,
      key: ecP256.keyPem,
      problem: /^chain certificate 2 in the cert field cannot be parsed/,
    },
    {
      name: 'a key field that is not a private key',
      cert: ecP256.certPem,
      key: 'not a key',
      problem: /^key field is not a PEM private key/,
    },
    {
      name: 'a certificate in the key field',
      cert: ecP256.certPem,
      key: ecP256.certPem,
      problem: /^key field is not a PEM private key/,
    },
    {
      name: 'a key of another certificate',
      cert: ecP256.certPem,
      key: otherKey,
      problem: /^private key does not match the certificate$/,
    },
    {
      name: 'the issuer-signed leaf with a self-signed key',
      cert: ecP256.certPem,
      key: selfSigned.keyPem,
      problem: /^private key does not match the certificate$/,
    },
  ];
  for (const { name, cert, key, problem } of problems) {
    it(`reports ${name} as a problem and does not throw`, () => {
      const result = inspectCertificate(cert, key);
      assert.equal(result.ok, false);
      assert.match(result.ok ? '' : result.problem, problem);
    });
  }

  it('does not throw on values that are not strings', () => {
    const result = inspectCertificate(undefined as unknown as string, null as unknown as string);
    assert.deepEqual(result, { ok: false, problem: 'cert field is empty' });
  });
});

describe('storedRecordFromPem', () => {
  const fields = {
    cert: ecP256.certPem,
    key: ecP256.keyPem,
    directoryUrl: 'https://acme.test/dir',
    obtainedAt: '2026-01-02T00:00:00.000Z',
  };

  it('builds the certificate from the PEM with the hostname first among the hostnames', () => {
    const record = storedRecordFromPem('b.example.com', 3, true, fields, 'record b');
    assert.equal(record.problem, undefined);
    assert.deepEqual(record.certificate?.hostnames, ['b.example.com', 'a.example.com']);
    assert.equal(record.certificate?.obtainedAt.toISOString(), '2026-01-02T00:00:00.000Z');
    assert.equal(record.version, 3);
  });

  it('leaves a record that is not managed without a certificate', () => {
    const record = storedRecordFromPem('b.example.com', 1, false, fields, 'record b');
    assert.equal(record.managed, false);
    assert.equal(record.certificate, undefined);
  });

  it('names every missing field', () => {
    const record = storedRecordFromPem('b.example.com', 1, true, { cert: ecP256.certPem }, 'record b');
    assert.equal(record.problem, 'record b has no key, directory_url field');
  });
});

describe('inspectCertificateCached', () => {
  const fields = { cert: ecP256.certPem, key: ecP256.keyPem, directoryUrl: 'https://acme.test/dir' };

  it('parses a pair once: later records of the same pair come from memory and are equal', () => {
    clearInspectionCache();
    const first = storedRecordFromPem('b.example.com', 1, true, fields, 'record b');
    const second = storedRecordFromPem('b.example.com', 2, true, fields, 'record b');
    assert.deepEqual(inspectionCacheStats(), { hits: 1, misses: 1, size: 1 });
    assert.deepEqual(second.certificate, first.certificate);
    assert.deepEqual(
      inspectCertificateCached(ecP256.certPem, ecP256.keyPem),
      inspectCertificate(ecP256.certPem, ecP256.keyPem),
    );
  });

  it('keys on both PEM strings: the same certificate with another key is inspected again', () => {
    clearInspectionCache();
    assert.equal(inspectCertificateCached(ecP256.certPem, ecP256.keyPem).ok, true);
    const other = inspectCertificateCached(ecP256.certPem, otherKey);
    assert.deepEqual(other, { ok: false, problem: 'private key does not match the certificate' });
    assert.deepEqual(inspectionCacheStats(), { hits: 0, misses: 2, size: 2 });
  });

  it('hands out copies: changing a record does not change what the next read of the pair gives', () => {
    clearInspectionCache();
    const record = storedRecordFromPem('b.example.com', 1, true, fields, 'record b');
    record.certificate?.hostnames.push('evil.example.com');
    record.certificate?.notAfter.setTime(0);
    const inspected = inspectCertificateCached(ecP256.certPem, ecP256.keyPem);
    assert.ok(inspected.ok);
    inspected.hostnames.push('evil.example.com');
    inspected.notBefore.setTime(0);
    const again = storedRecordFromPem('b.example.com', 1, true, fields, 'record b');
    assert.deepEqual(again.certificate?.hostnames, ['b.example.com', 'a.example.com']);
    assert.equal(again.certificate?.notAfter.getTime(), notAfter.getTime());
    assert.equal(again.certificate?.notBefore.getTime(), notBefore.getTime());
  });

  it(`remembers at most ${INSPECTION_CACHE_SIZE} pairs and forgets the least recently used first`, () => {
    clearInspectionCache();
    inspectCertificateCached('not a certificate 0', 'k');
    inspectCertificateCached('not a certificate 1', 'k');
    for (let i = 2; i < INSPECTION_CACHE_SIZE; i += 1) inspectCertificateCached(`not a certificate ${i}`, 'k');
    inspectCertificateCached('not a certificate 0', 'k'); // used again: now the most recent
    inspectCertificateCached('one pair too many', 'k');
    assert.equal(inspectionCacheStats().size, INSPECTION_CACHE_SIZE);
    const before = inspectionCacheStats();
    inspectCertificateCached('not a certificate 0', 'k');
    assert.equal(inspectionCacheStats().hits, before.hits + 1, 'the pair used again is kept');
    inspectCertificateCached('not a certificate 1', 'k');
    assert.equal(inspectionCacheStats().misses, before.misses + 1, 'the least recently used pair was forgotten');
  });
});

describe('parsePrivateKey', () => {
  it('decodes a key once while it is among the last PARSED_KEYS_SIZE used, and refuses what is not a key', () => {
    const pemOf = (): string =>
      generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    const first = pemOf();
    const parsed = parsePrivateKey(first);
    assert.equal(parsePrivateKey(first), parsed, 'the same key object: not decoded again');
    const generated = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
    const generatedPem = generated.export({ type: 'pkcs8', format: 'pem' }).toString();
    rememberPrivateKey(generatedPem, generated);
    assert.equal(parsePrivateKey(generatedPem), generated, 'a remembered key is given back as it was');
    for (let i = 0; i < PARSED_KEYS_SIZE; i++) parsePrivateKey(pemOf());
    const again = parsePrivateKey(first);
    assert.notEqual(again, parsed, 'forgotten once as many other keys were used');
    assert.ok(again.equals(parsed));
    assert.throws(() => parsePrivateKey('-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n'));
  });
});
