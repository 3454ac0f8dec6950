/**
 * Certificate keys, CSRs and issued certificates with Node's crypto alone.
 *
 * acme-client's `createCsr` and `readCertificateInfo` go through @peculiar/x509 and asn1js, which
 * cost several milliseconds of CPU per certificate (measured with `node --cpu-prof`; figures in
 * test/bench/acme-baseline.ts's output). A PKCS#10 request for a list of DNS names is a handful of
 * DER elements, and Node's X509Certificate reads what we need from the leaf.
 *
 * The CSR holds what acme-client's holds (docs/protocols.md §6): subject CN = the first name, and a
 * subjectAltName extension request with every name (the CN included), signed with SHA-256
 * (SHA-384 for P-384).
 */
import { createPublicKey, generateKeyPair, sign, X509Certificate, type KeyObject } from 'node:crypto';
import { promisify } from 'node:util';
import type { KeyType } from '../../domain/certificate.js';
import { inspectCertificateCached, normalizeSerial, parsePrivateKey, rememberPrivateKey } from '../../domain/pem.js';

const generateKeyPairAsync = promisify(generateKeyPair);

/** A certificate's private key, as PKCS#8 PEM (what is stored) and parsed (what signs). */
export interface CertificateKey {
  keyPem: string;
  privateKey: KeyObject;
}

/** A new private key of `keyType`. */
export async function createCertificateKey(keyType: KeyType): Promise<CertificateKey> {
  const { privateKey } =
    keyType === 'ec-p256' || keyType === 'ec-p384'
      ? await generateKeyPairAsync('ec', { namedCurve: keyType === 'ec-p256' ? 'P-256' : 'P-384' })
      : await generateKeyPairAsync('rsa', { modulusLength: Number(keyType.slice('rsa-'.length)) });
  const keyPem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  // Its pending record and the stored pair are checked with this key: spare them the decode.
  rememberPrivateKey(keyPem, privateKey);
  return { keyPem, privateKey };
}

/** The key of a PEM said to be of `keyType` (a pending order's); throws when it is not such a key. */
export function readCertificateKey(keyPem: string, keyType: KeyType): CertificateKey {
  const privateKey = parsePrivateKey(keyPem);
  const expected: Record<KeyType, string> = {
    'ec-p256': 'ec prime256v1',
    'ec-p384': 'ec secp384r1',
    'rsa-2048': 'rsa 2048',
    'rsa-3072': 'rsa 3072',
    'rsa-4096': 'rsa 4096',
  };
  const details = privateKey.asymmetricKeyDetails;
  const actual = `${privateKey.asymmetricKeyType ?? '?'} ${details?.namedCurve ?? details?.modulusLength ?? '?'}`;
  if (actual !== expected[keyType]) throw new Error(`the key is ${actual}, not ${keyType}`);
  return { keyPem, privateKey };
}

// ---------------------------------------------------------------- DER

function derLength(length: number): Buffer {
  if (length < 0x80) return Buffer.from([length]);
  const bytes: number[] = [];
  for (let n = length; n > 0; n = Math.floor(n / 256)) bytes.unshift(n % 256);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

function der(tag: number, ...content: Buffer[]): Buffer {
  const body = Buffer.concat(content);
  return Buffer.concat([Buffer.from([tag]), derLength(body.length), body]);
}

const sequence = (...content: Buffer[]): Buffer => der(0x30, ...content);
const set = (...content: Buffer[]): Buffer => der(0x31, ...content);

function objectIdentifier(dotted: string): Buffer {
  const [first = 0, second = 0, ...rest] = dotted.split('.').map(Number);
  const bytes = [40 * first + second];
  for (const arc of rest) {
    const base128: number[] = [arc & 0x7f];
    for (let n = Math.floor(arc / 128); n > 0; n = Math.floor(n / 128)) base128.unshift(0x80 | (n & 0x7f));
    bytes.push(...base128);
  }
  return der(0x06, Buffer.from(bytes));
}

const OID = {
  commonName: '2.5.4.3',
  extensionRequest: '1.2.840.113549.1.9.14',
  subjectAltName: '2.5.29.17',
  ecdsaWithSha256: '1.2.840.10045.4.3.2',
  ecdsaWithSha384: '1.2.840.10045.4.3.3',
  sha256WithRsaEncryption: '1.2.840.113549.1.1.11',
};

/** The signature algorithm for a key type: the AlgorithmIdentifier and Node's digest name. */
function signatureAlgorithm(keyType: KeyType): { identifier: Buffer; digest: string } {
  switch (keyType) {
    case 'ec-p256':
      return { identifier: sequence(objectIdentifier(OID.ecdsaWithSha256)), digest: 'sha256' };
    case 'ec-p384':
      return { identifier: sequence(objectIdentifier(OID.ecdsaWithSha384)), digest: 'sha384' };
    case 'rsa-2048':
    case 'rsa-3072':
    case 'rsa-4096': {
      const nullParameters = Buffer.from([0x05, 0x00]);
      return { identifier: sequence(objectIdentifier(OID.sha256WithRsaEncryption), nullParameters), digest: 'sha256' };
    }
  }
}

/**
 * A PKCS#10 certificate request, DER, for `hostnames` (the first is the CN; all are DNS names in
 * the subjectAltName extension request), signed by `privateKey`, a key of `keyType`.
 */
export function createCsrDer(hostnames: readonly string[], privateKey: KeyObject, keyType: KeyType): Buffer {
  const [commonName] = hostnames;
  if (commonName === undefined) throw new Error('a CSR needs at least one hostname');
  const subject = sequence(set(sequence(objectIdentifier(OID.commonName), der(0x0c, Buffer.from(commonName, 'utf8')))));
  const publicKeyInfo = createPublicKey(privateKey).export({ type: 'spki', format: 'der' });
  // GeneralName dNSName is [2] IMPLICIT IA5String.
  const generalNames = sequence(...hostnames.map((name) => der(0x82, Buffer.from(name, 'ascii'))));
  const extensions = sequence(sequence(objectIdentifier(OID.subjectAltName), der(0x04, generalNames)));
  const attributes = der(0xa0, sequence(objectIdentifier(OID.extensionRequest), set(extensions)));
  const info = sequence(der(0x02, Buffer.from([0])), subject, publicKeyInfo, attributes);
  const algorithm = signatureAlgorithm(keyType);
  const signature = sign(algorithm.digest, info, privateKey);
  return sequence(info, algorithm.identifier, der(0x03, Buffer.from([0]), signature));
}

/** A CSR in PEM, as acme-client's finalizeOrder takes it. */
export function csrPem(csrDer: Buffer): string {
  const base64 = csrDer.toString('base64').replace(/.{64}/g, '$&\n');
  return `-----BEGIN CERTIFICATE REQUEST-----\n${base64}${base64.endsWith('\n') ? '' : '\n'}-----END CERTIFICATE REQUEST-----\n`;
}

// ---------------------------------------------------------------- the issued certificate

export interface LeafFacts {
  notBefore: Date;
  notAfter: Date;
  /** The issuer's common name (the whole issuer name when it has none). */
  issuer: string;
  /** Lower-case hex, no separators, no leading zeros. */
  serial: string;
  /** Whether the leaf's public key is the one of `privateKey`. */
  matchesKey: boolean;
}

/**
 * Reads the leaf (the first certificate of a PEM chain) and checks it against `key`. A pair that
 * loads and matches goes through the stores' own inspection (domain/pem.ts, remembered per pair),
 * so storing it parses nothing again; anything else is read from the leaf alone.
 */
export function readLeaf(certPem: string, key: CertificateKey): LeafFacts {
  const inspected = inspectCertificateCached(certPem, key.keyPem);
  if (inspected.ok) {
    const { notBefore, notAfter, issuer, serial } = inspected;
    return { notBefore, notAfter, issuer, serial, matchesKey: true };
  }
  const leaf = new X509Certificate(certPem);
  const issuerCommonName = leaf.issuer
    .split('\n')
    .filter((line) => line.startsWith('CN='))
    .pop()
    ?.slice('CN='.length);
  return {
    notBefore: new Date(leaf.validFrom),
    notAfter: new Date(leaf.validTo),
    issuer: issuerCommonName ?? leaf.issuer.replace(/\n/g, ', '),
    serial: normalizeSerial(leaf.serialNumber),
    matchesKey: leaf.checkPrivateKey(key.privateKey),
  };
}
