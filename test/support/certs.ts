/**
 * Real certificates for tests, with any dates and key type: a leaf issued by a small test CA (so
 * the `cert` field is leaf + chain, as an ACME CA delivers it), keys as PKCS#8 PEM like
 * acme-client's. Built with @peculiar/x509 (a dependency of acme-client) on Node's WebCrypto.
 */
import { webcrypto } from 'node:crypto';
import { isIP } from 'node:net';
import * as x509 from '@peculiar/x509';
import type { CertificateData, KeyType } from '../../src/domain/certificate.js';

x509.cryptoProvider.set(webcrypto);

const DAY_MS = 24 * 60 * 60 * 1000;
export const TEST_CA_NAME = 'consul-acme test CA';
export const TEST_DIRECTORY_URL = 'https://acme.test/directory';

export interface TestCertificateOptions {
  /** DNS names (IP addresses become IP SANs); the first is also the subject CN. */
  hostnames: string[];
  /** Default: one day ago. */
  notBefore?: Date;
  /** Default: 90 days after notBefore. */
  notAfter?: Date;
  /** Default: ec-p256. */
  keyType?: KeyType;
  /** CN of the issuing test CA (default TEST_CA_NAME); `null` makes a self-signed leaf without chain. */
  issuer?: string | null;
  /** Reuse one leaf key per key type (many certificates fast, e.g. to seed a store with thousands). */
  sharedKey?: boolean;
}

export interface TestCertificate {
  /** Leaf followed by the issuing CA's certificate (only the leaf when self-signed). */
  certPem: string;
  /** PKCS#8 PEM. */
  keyPem: string;
}

interface KeyPairWithAlgorithm {
  keys: webcrypto.CryptoKeyPair;
  signingAlgorithm: webcrypto.Algorithm | webcrypto.EcdsaParams;
}

async function generateKeys(keyType: KeyType): Promise<KeyPairWithAlgorithm> {
  const subtle = webcrypto.subtle;
  if (keyType === 'ec-p256' || keyType === 'ec-p384') {
    const namedCurve = keyType === 'ec-p256' ? 'P-256' : 'P-384';
    const hash = keyType === 'ec-p256' ? 'SHA-256' : 'SHA-384';
    const keys = await subtle.generateKey({ name: 'ECDSA', namedCurve }, true, ['sign', 'verify']);
    return { keys, signingAlgorithm: { name: 'ECDSA', hash } as webcrypto.EcdsaParams };
  }
  const modulusLength = Number(keyType.slice('rsa-'.length));
  const algorithm = {
    name: 'RSASSA-PKCS1-v1_5',
    modulusLength,
    publicExponent: new Uint8Array([1, 0, 1]),
    hash: 'SHA-256',
  };
  const keys = await subtle.generateKey(algorithm, true, ['sign', 'verify']);
  return { keys, signingAlgorithm: { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' } as webcrypto.Algorithm };
}

async function privateKeyPem(key: webcrypto.CryptoKey): Promise<string> {
  const der = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', key));
  const lines = der.toString('base64').match(/.{1,64}/g) ?? [];
  return `-----BEGIN PRIVATE KEY-----\n${lines.join('\n')}\n-----END PRIVATE KEY-----\n`;
}

interface TestCa {
  certificate: x509.X509Certificate;
  pair: KeyPairWithAlgorithm;
}
const cas = new Map<string, Promise<TestCa>>();

function testCa(name: string): Promise<TestCa> {
  let ca = cas.get(name);
  if (ca === undefined) {
    ca = (async () => {
      const pair = await generateKeys('ec-p256');
      const certificate = await x509.X509CertificateGenerator.createSelfSigned({
        serialNumber: '01',
        name: `CN=${name}`,
        notBefore: new Date(Date.now() - 3650 * DAY_MS),
        notAfter: new Date(Date.now() + 3650 * DAY_MS),
        keys: pair.keys,
        signingAlgorithm: pair.signingAlgorithm,
        extensions: [
          new x509.BasicConstraintsExtension(true, undefined, true),
          new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        ],
      });
      return { certificate, pair };
    })();
    cas.set(name, ca);
  }
  return ca;
}

let serial = 0x1000;

const sharedKeys = new Map<KeyType, Promise<KeyPairWithAlgorithm>>();
function sharedLeafKeys(keyType: KeyType): Promise<KeyPairWithAlgorithm> {
  let keys = sharedKeys.get(keyType);
  if (keys === undefined) {
    keys = generateKeys(keyType);
    sharedKeys.set(keyType, keys);
  }
  return keys;
}

/** A certificate for `hostnames` with its private key. */
export async function makeTestCertificate(options: TestCertificateOptions): Promise<TestCertificate> {
  const first = options.hostnames[0];
  if (first === undefined) throw new Error('makeTestCertificate needs at least one hostname');
  const notBefore = options.notBefore ?? new Date(Date.now() - DAY_MS);
  const notAfter = options.notAfter ?? new Date(notBefore.getTime() + 90 * DAY_MS);
  const leafKeys = options.sharedKey
    ? await sharedLeafKeys(options.keyType ?? 'ec-p256')
    : await generateKeys(options.keyType ?? 'ec-p256');
  const extensions = [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
    new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
    new x509.SubjectAlternativeNameExtension(
      options.hostnames.map((value) => ({ type: isIP(value) === 0 ? ('dns' as const) : ('ip' as const), value })),
    ),
  ];
  serial += 1;
  const serialNumber = serial.toString(16).padStart(4, '0');
  const keyPem = await privateKeyPem(leafKeys.keys.privateKey);

  if (options.issuer === null) {
    const leaf = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber,
      name: `CN=${first}`,
      notBefore,
      notAfter,
      keys: leafKeys.keys,
      signingAlgorithm: leafKeys.signingAlgorithm,
      extensions,
    });
    return { certPem: `${leaf.toString('pem')}\n`, keyPem };
  }

  const ca = await testCa(options.issuer ?? TEST_CA_NAME);
  const leaf = await x509.X509CertificateGenerator.create({
    serialNumber,
    subject: `CN=${first}`,
    issuer: ca.certificate.subject,
    notBefore,
    notAfter,
    publicKey: leafKeys.keys.publicKey,
    signingKey: ca.pair.keys.privateKey,
    signingAlgorithm: ca.pair.signingAlgorithm,
    extensions,
  });
  return { certPem: `${leaf.toString('pem')}\n${ca.certificate.toString('pem')}\n`, keyPem };
}

export interface TestCertificateDataOptions extends Omit<TestCertificateOptions, 'hostnames'> {
  /** The hostname; also the first hostname. */
  hostname: string;
  /** More names after hostname. */
  otherHostnames?: string[];
  directoryUrl?: string;
  obtainedAt?: Date;
}

/** A CertificateData as the issuer would hand it to a store, with a real certificate. */
export async function makeCertificateData(options: TestCertificateDataOptions): Promise<CertificateData> {
  const hostnames = [options.hostname, ...(options.otherHostnames ?? [])];
  const notBefore = options.notBefore ?? new Date(Math.floor((Date.now() - DAY_MS) / 1000) * 1000);
  const notAfter = options.notAfter ?? new Date(notBefore.getTime() + 90 * DAY_MS);
  const keyType = options.keyType ?? 'ec-p256';
  const issuer = options.issuer === undefined ? TEST_CA_NAME : options.issuer;
  const { certPem, keyPem } = await makeTestCertificate({
    hostnames,
    notBefore,
    notAfter,
    keyType,
    issuer,
    ...(options.sharedKey ? { sharedKey: true } : {}),
  });
  return {
    hostname: options.hostname,
    hostnames,
    certPem,
    keyPem,
    notBefore,
    notAfter,
    directoryUrl: options.directoryUrl ?? TEST_DIRECTORY_URL,
    issuer: issuer ?? options.hostname,
    keyType,
    obtainedAt: options.obtainedAt ?? new Date(Math.floor(Date.now() / 1000) * 1000),
  };
}
