/**
 * Keys, CSRs and leaves with Node's crypto (src/adapters/acme/acme-csr.ts), checked by other
 * readers: OpenSSL verifies each CSR's signature and prints its names, and acme-client (the
 * library that read CSRs before) reads the same names.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import * as acme from 'acme-client';
import {
  createCertificateKey,
  createCsrDer,
  csrPem,
  readCertificateKey,
  readLeaf,
} from '../../src/adapters/acme/acme-csr.js';
import { KEY_TYPES, type KeyType } from '../../src/domain/certificate.js';
import { normalizeSerial } from '../../src/domain/pem.js';
import { makeTestCertificate, TEST_CA_NAME } from '../support/certs.js';

/** `openssl req -verify -text` on a CSR: whether its signature verifies, and its text. */
function opensslReadsCsr(pem: string): { verified: boolean; text: string } {
  const result = spawnSync('openssl', ['req', '-verify', '-noout', '-text'], { input: pem, encoding: 'utf8' });
  return { verified: result.status === 0 && /verify OK/i.test(result.stderr + result.stdout), text: result.stdout };
}

const expectedKey: Record<KeyType, { type: string; detail: string | number }> = {
  'ec-p256': { type: 'ec', detail: 'prime256v1' },
  'ec-p384': { type: 'ec', detail: 'secp384r1' },
  'rsa-2048': { type: 'rsa', detail: 2048 },
  'rsa-3072': { type: 'rsa', detail: 3072 },
  'rsa-4096': { type: 'rsa', detail: 4096 },
};

describe('createCertificateKey and createCsrDer', () => {
  // rsa-3072 and rsa-4096 differ from rsa-2048 only in modulusLength, and take seconds to generate.
  for (const keyType of KEY_TYPES.filter((k) => k !== 'rsa-3072' && k !== 'rsa-4096')) {
    it(`makes a ${keyType} key in PKCS#8 and a CSR that OpenSSL verifies, CN first name, every name a SAN`, async () => {
      const key = await createCertificateKey(keyType);
      assert.match(key.keyPem, /^-----BEGIN PRIVATE KEY-----\n/, 'PKCS#8 PEM');
      const parsed = createPrivateKey(key.keyPem);
      const details = parsed.asymmetricKeyDetails;
      assert.equal(parsed.asymmetricKeyType, expectedKey[keyType].type);
      assert.equal(details?.namedCurve ?? details?.modulusLength, expectedKey[keyType].detail);

      const hostnames = ['app.example.test', 'www.app.example.test'];
      const pem = csrPem(createCsrDer(hostnames, key.privateKey, keyType));
      const openssl = opensslReadsCsr(pem);
      assert.ok(openssl.verified, `OpenSSL verifies the signature:\n${openssl.text}`);
      assert.match(openssl.text, /Subject: CN ?= ?app\.example\.test\n/);
      assert.match(openssl.text, /DNS:app\.example\.test, DNS:www\.app\.example\.test/);
      assert.deepEqual(acme.crypto.readCsrDomains(pem), {
        commonName: 'app.example.test',
        altNames: hostnames,
      });
    });
  }

  it('encodes long requests (lengths over 255 bytes) that OpenSSL still verifies', async () => {
    const key = await createCertificateKey('ec-p256');
    const hostnames = Array.from({ length: 40 }, (_, i) => `name-${i}.a-rather-long-subdomain.example.test`);
    const pem = csrPem(createCsrDer(hostnames, key.privateKey, 'ec-p256'));
    const openssl = opensslReadsCsr(pem);
    assert.ok(openssl.verified, openssl.text);
    assert.deepEqual(acme.crypto.readCsrDomains(pem).altNames, hostnames);
  });

  it('refuses a CSR without a hostname', async () => {
    const key = await createCertificateKey('ec-p256');
    assert.throws(() => createCsrDer([], key.privateKey, 'ec-p256'), /at least one hostname/);
  });
});

describe('readCertificateKey', () => {
  it('reads a key of the type the record says', async () => {
    const { keyPem } = await createCertificateKey('ec-p384');
    assert.equal(readCertificateKey(keyPem, 'ec-p384').privateKey.asymmetricKeyDetails?.namedCurve, 'secp384r1');
  });
  it('refuses a key of another type than the record says, naming both', async () => {
    const { keyPem } = await createCertificateKey('ec-p256');
    assert.throws(() => readCertificateKey(keyPem, 'rsa-2048'), /ec prime256v1, not rsa-2048/);
  });
  it('refuses what is not a key', () => {
    assert.throws(() => readCertificateKey('not a key', 'ec-p256'));
  });
});

describe('readLeaf', () => {
  it('reads dates, issuer CN and serial from the first certificate of a chain, and checks the key', async () => {
    const notBefore = new Date('2026-01-01T00:00:00Z');
    const notAfter = new Date('2026-03-01T00:00:00Z');
    const { certPem, keyPem } = await makeTestCertificate({ hostnames: ['leaf.example.test'], notBefore, notAfter });
    const other = await createCertificateKey('ec-p256');
    const leaf = readLeaf(certPem, { keyPem, privateKey: createPrivateKey(keyPem) });
    assert.deepEqual(
      { ...leaf, serial: undefined },
      { notBefore, notAfter, issuer: TEST_CA_NAME, serial: undefined, matchesKey: true },
    );
    assert.equal(leaf.serial, new X509Certificate(certPem).serialNumber.toLowerCase().replace(/^0+/, ''));
    const mismatch = readLeaf(certPem, other);
    assert.deepEqual(
      { ...mismatch, serial: undefined },
      { notBefore, notAfter, issuer: TEST_CA_NAME, serial: undefined, matchesKey: false },
      'another key does not match; the leaf is still read',
    );
    assert.equal(mismatch.serial, leaf.serial);
  });
});

describe('normalizeSerial', () => {
  const rows: Array<[string, string]> = [
    ['01A2B3', '1a2b3'],
    ['00:0A:bC', 'abc'],
    ['7f', '7f'],
    ['0000', '0'],
  ];
  for (const [input, expected] of rows) {
    it(`turns ${input} into ${expected}`, () => assert.equal(normalizeSerial(input), expected));
  }
});
