/**
 * Reads a certificate and its private key the way a TLS server would (Fabio pairs them with Go's
 * tls.X509KeyPair): the first PEM certificate block is the leaf, the rest is the chain. Pure apart
 * from Node's crypto parsers; `inspectCertificate` never throws. Also the two rules every
 * CertificateStore shares: how a stored record becomes a StoredRecord (storedRecordFromPem) and
 * that nothing unloadable is ever stored (assertStorableCertificate).
 *
 * Parsing is the costly part of reading a store (X.509, the private key, the key check), and a
 * stored pair rarely changes: `inspectCertificateCached` remembers the result per pair, keyed by a
 * sha256 of both PEM strings, for the INSPECTION_CACHE_SIZE pairs used last. Both store rules use
 * it, so a `put` parses its pair once and the gets of an unchanged record parse nothing. The issuer
 * inspects a certificate it downloads the same way, so storing it parses nothing again; and the
 * private keys parsed or generated last are kept (parsePrivateKey).
 */
import { X509Certificate, createHash, createPrivateKey, type KeyObject } from 'node:crypto';
import type { CertificateData, CertificateFacts, KeyType, StoredRecord } from './certificate.js';
import { ConsulAcmeError } from '../errors.js';
import { RecentMap } from '../recent-map.js';
import { RECORD_FORMATS, readFormat } from './record-format.js';

export type CertificateInspection =
  | {
      ok: true;
      /** DNS names from the leaf's subjectAltName, sorted. */
      hostnames: string[];
      notBefore: Date;
      notAfter: Date;
      /** The issuer's CN, or the whole issuer name when it has no CN. */
      issuer: string;
      /** undefined for a key type consul-acme does not issue (e.g. rsa-1024, ed25519). */
      keyType: KeyType | undefined;
      /** The leaf's serial, normalized (normalizeSerial). */
      serial: string;
    }
  | { ok: false; problem: string };

const PEM_CERTIFICATE_BLOCK = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

/** A certificate serial as consul-acme writes it: `00:0A:bC` or `000ABC` → `abc`; zero stays `0`. */
export function normalizeSerial(serial: string): string {
  const hex = serial.replace(/[^0-9a-fA-F]/g, '').toLowerCase();
  return hex.replace(/^0+/, '') || '0';
}

/** The PEM certificate blocks in a `cert` field, leaf first. */
export function splitPemCertificates(pem: string): string[] {
  return pem.match(PEM_CERTIFICATE_BLOCK) ?? [];
}

/** Checks that `certPem` holds a parseable leaf (+ chain) and that `keyPem` is the leaf's private key. */
export function inspectCertificate(certPem: string, keyPem: string): CertificateInspection {
  if (typeof certPem !== 'string' || certPem.trim() === '') return fail('cert field is empty');
  if (typeof keyPem !== 'string' || keyPem.trim() === '') return fail('key field is empty');
  const blocks = splitPemCertificates(certPem);
  const leafPem = blocks[0];
  if (leafPem === undefined) return fail('cert field is not a PEM certificate');

  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(leafPem);
  } catch (err) {
    return fail(`cert field is not a PEM certificate (${reason(err)})`);
  }
  for (const [index, block] of blocks.entries()) {
    if (index === 0) continue;
    try {
      new X509Certificate(block);
    } catch (err) {
      return fail(`chain certificate ${index} in the cert field cannot be parsed (${reason(err)})`);
    }
  }

  let key: KeyObject;
  try {
    key = parsePrivateKey(keyPem);
  } catch (err) {
    return fail(`key field is not a PEM private key (${reason(err)})`);
  }
  let matches = false;
  try {
    matches = leaf.checkPrivateKey(key);
  } catch {
    matches = false;
  }
  if (!matches) return fail('private key does not match the certificate');

  const notBefore = new Date(leaf.validFrom);
  const notAfter = new Date(leaf.validTo);
  if (Number.isNaN(notBefore.getTime()) || Number.isNaN(notAfter.getTime())) {
    return fail(`certificate validity dates cannot be read ("${leaf.validFrom}" to "${leaf.validTo}")`);
  }

  return {
    ok: true,
    hostnames: dnsNames(leaf.subjectAltName),
    notBefore,
    notAfter,
    issuer: issuerName(leaf.issuer),
    keyType: keyTypeOf(key),
    serial: normalizeSerial(leaf.serialNumber),
  };
}

/**
 * How many parsed private keys are remembered. Decoding a PEM key is one of the costly steps of an
 * issuance, and an issuance meets its new key several times (generated, checked in its pending
 * record, checked with the certificate it is stored with): a few dozen covers the names being
 * issued at once.
 */
export const PARSED_KEYS_SIZE = 64;
const parsedKeys = new RecentMap<string, KeyObject>(PARSED_KEYS_SIZE);

/** `createPrivateKey(keyPem)`, remembered for the PARSED_KEYS_SIZE keys used last; throws as it does. */
export function parsePrivateKey(keyPem: string): KeyObject {
  const known = parsedKeys.get(keyPem);
  if (known !== undefined) return known;
  const key = createPrivateKey(keyPem);
  parsedKeys.set(keyPem, key);
  return key;
}

/** Remembers `key` as the parse of `keyPem` (a key just generated and exported, say). */
export function rememberPrivateKey(keyPem: string, key: KeyObject): void {
  parsedKeys.set(keyPem, key);
}

/** The consul-acme key type of a private key, or undefined for one we do not issue. */
export function keyTypeOf(key: KeyObject): KeyType | undefined {
  const details = key.asymmetricKeyDetails ?? {};
  if (key.asymmetricKeyType === 'ec') {
    if (details.namedCurve === 'prime256v1') return 'ec-p256';
    if (details.namedCurve === 'secp384r1') return 'ec-p384';
    return undefined;
  }
  if (key.asymmetricKeyType === 'rsa') {
    switch (details.modulusLength) {
      case 2048:
        return 'rsa-2048';
      case 3072:
        return 'rsa-3072';
      case 4096:
        return 'rsa-4096';
      default:
        return undefined;
    }
  }
  return undefined;
}

/** DNS names from Node's subjectAltName string (`DNS:a, DNS:b, IP Address:…`; quoted when escaped). */
function dnsNames(subjectAltName: string | undefined): string[] {
  if (subjectAltName === undefined) return [];
  const names = new Set<string>();
  for (const match of subjectAltName.matchAll(/(?:^|, )DNS:("(?:[^"\\]|\\.)*"|[^,]*)/g)) {
    const raw = match[1] ?? '';
    let name = raw;
    if (raw.startsWith('"')) {
      try {
        name = JSON.parse(raw) as string;
      } catch {
        name = raw.slice(1, -1);
      }
    }
    if (name !== '') names.add(name.toLowerCase());
  }
  return [...names].sort();
}

/** The CN of an issuer name as Node prints it (`C=US\nO=Let's Encrypt\nCN=R3`), else the whole name. */
function issuerName(issuer: string): string {
  const lines = issuer.split('\n');
  const cn = lines.find((line) => line.startsWith('CN='));
  return cn !== undefined ? cn.slice(3) : lines.join(', ');
}

function fail(problem: string): CertificateInspection {
  return { ok: false, problem };
}

function reason(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * How many inspected pairs are remembered: enough for the whole of a large deployment (10,000
 * stored certificates), so a renewal scan over every record parses nothing the
 * second time. An entry is the key hash and the facts (names, dates, issuer): about 800 bytes of
 * heap for a two-name certificate, so some 8 MiB when full.
 */
export const INSPECTION_CACHE_SIZE = 10_000;

const inspectionCache = new RecentMap<string, CertificateInspection>(INSPECTION_CACHE_SIZE);
const inspectionCounters = { hits: 0, misses: 0 };

function pairKey(certPem: string, keyPem: string): string {
  // The length prefix keeps ("ab", "c") and ("a", "bc") apart.
  return createHash('sha256').update(`${certPem.length}:`).update(certPem).update(keyPem).digest('hex');
}

/** A copy callers may change without changing the cached result. */
function copyInspection(inspection: CertificateInspection): CertificateInspection {
  if (!inspection.ok) return { ...inspection };
  return {
    ...inspection,
    hostnames: [...inspection.hostnames],
    notBefore: new Date(inspection.notBefore),
    notAfter: new Date(inspection.notAfter),
  };
}

/**
 * inspectCertificate, remembered per pair (a result depends on the two PEM strings alone). The
 * least recently used pair is forgotten first once INSPECTION_CACHE_SIZE pairs are remembered.
 */
export function inspectCertificateCached(certPem: string, keyPem: string): CertificateInspection {
  if (typeof certPem !== 'string' || typeof keyPem !== 'string') return inspectCertificate(certPem, keyPem);
  const key = pairKey(certPem, keyPem);
  const cached = inspectionCache.get(key);
  if (cached !== undefined) {
    inspectionCounters.hits += 1;
    return copyInspection(cached);
  }
  inspectionCounters.misses += 1;
  const inspection = inspectCertificate(certPem, keyPem);
  inspectionCache.set(key, copyInspection(inspection));
  return inspection;
}

/** For tests and benchmarks: how often inspectCertificateCached found a pair, and how many it holds. */
export function inspectionCacheStats(): { hits: number; misses: number; size: number } {
  return { ...inspectionCounters, size: inspectionCache.size };
}

/** For tests: forgets every pair and zeroes the counters. */
export function clearInspectionCache(): void {
  inspectionCache.clear();
  inspectionCounters.hits = 0;
  inspectionCounters.misses = 0;
}

/** Puts hostname first and keeps the certificate's other names sorted. */
function orderHostnames(hostname: string, sorted: string[]): string[] {
  return sorted.includes(hostname) ? [hostname, ...sorted.filter((h) => h !== hostname)] : sorted;
}

/**
 * The facts of `hostname`'s certificate as read from it (a pair that loads and matches, whose key
 * type, `keyType`, is one consul-acme issues), with what the certificate does not say.
 */
function inspectedFacts(
  hostname: string,
  inspected: Extract<CertificateInspection, { ok: true }>,
  keyType: KeyType,
  directoryUrl: string,
  obtainedAt: Date,
): CertificateFacts {
  return {
    hostname,
    hostnames: orderHostnames(hostname, inspected.hostnames),
    notBefore: inspected.notBefore,
    notAfter: inspected.notAfter,
    directoryUrl,
    issuer: inspected.issuer,
    keyType,
    obtainedAt,
  };
}

/** A record read from a store turned into what the domain sees; shared by the Vault and file stores. */
export function storedRecordFromPem(
  hostname: string,
  version: number,
  managed: boolean,
  fields: {
    cert?: string;
    key?: string;
    directoryUrl?: string;
    obtainedAt?: string;
    adoptedAt?: string;
    format?: unknown;
  },
  where: string,
): StoredRecord {
  if (!managed) {
    const foreign = foreignFacts(hostname, fields.cert, fields.key);
    return {
      hostname,
      version,
      managed,
      certificate: undefined,
      problem: `${where} was not written by consul-acme; it is left alone`,
      ...(foreign === undefined ? {} : { foreign }),
    };
  }
  const format = readFormat(fields.format, RECORD_FORMATS.certificate);
  if (format.kind === 'newer') {
    return {
      hostname,
      version,
      managed,
      certificate: undefined,
      problem: `${where} was written in format ${format.format} by a newer release (this one reads format ${RECORD_FORMATS.certificate}); it is left alone`,
      newerFormat: format.format,
    };
  }
  if (format.kind === 'invalid')
    return { hostname, version, managed, certificate: undefined, problem: `${where} ${format.problem}` };
  const missing = (['cert', 'key', 'directoryUrl'] as const).filter((name) => fields[name] === undefined);
  if (missing.length > 0) {
    const names = missing.map((name) => (name === 'directoryUrl' ? 'directory_url' : name));
    return { hostname, version, managed, certificate: undefined, problem: `${where} has no ${names.join(', ')} field` };
  }
  const certPem = fields.cert ?? '';
  const keyPem = fields.key ?? '';
  const inspected = inspectCertificateCached(certPem, keyPem);
  if (!inspected.ok) {
    return { hostname, version, managed, certificate: undefined, problem: `${where}: ${inspected.problem}` };
  }
  if (inspected.keyType === undefined) {
    return {
      hostname,
      version,
      managed,
      certificate: undefined,
      problem: `${where}: the private key's type is not one consul-acme issues`,
    };
  }
  const obtainedAt = fields.obtainedAt === undefined ? inspected.notBefore : new Date(fields.obtainedAt);
  const certificate: CertificateData = {
    ...inspectedFacts(
      hostname,
      inspected,
      inspected.keyType,
      fields.directoryUrl ?? '',
      Number.isNaN(obtainedAt.getTime()) ? inspected.notBefore : obtainedAt,
    ),
    certPem,
    keyPem,
  };
  const adoptedAt = fields.adoptedAt === undefined ? undefined : new Date(fields.adoptedAt);
  if (adoptedAt !== undefined && !Number.isNaN(adoptedAt.getTime())) certificate.adoptedAt = adoptedAt;
  return { hostname, version, managed, certificate, problem: undefined };
}

/**
 * What the certificate of a record consul-acme did not write says, when its certificate and key
 * load and match and the key type is one consul-acme issues (else undefined): the facts adoption
 * is decided on (src/domain/adopt.ts). The directory is unknown (empty); `obtainedAt` is the
 * certificate's notBefore.
 */
function foreignFacts(
  hostname: string,
  certPem: string | undefined,
  keyPem: string | undefined,
): CertificateFacts | undefined {
  if (certPem === undefined || keyPem === undefined) return undefined;
  const inspected = inspectCertificateCached(certPem, keyPem);
  if (!inspected.ok || inspected.keyType === undefined) return undefined;
  return inspectedFacts(hostname, inspected, inspected.keyType, '', inspected.notBefore);
}

/** Refuses to store what a TLS server could not load; shared by every CertificateStore. */
export function assertStorableCertificate(certificate: CertificateData, where: string): void {
  const inspected = inspectCertificateCached(certificate.certPem, certificate.keyPem);
  if (!inspected.ok) {
    throw new ConsulAcmeError('INTERNAL', `refusing to store ${where}: ${inspected.problem}`, { retryable: false });
  }
}

/**
 * The certificate an adopted record holds (src/domain/adopt.ts): its own certificate and key,
 * unchanged, with the facts read from them and the marks of the adoption (`obtainedAt` is the
 * adoption time: when consul-acme wrote the record). Throws ADOPT_REFUSED when the pair cannot be
 * stored (does not load or match, or a key type consul-acme does not issue). Shared by every store.
 */
export function adoptedCertificate(
  hostname: string,
  pair: { certPem: string | undefined; keyPem: string | undefined },
  marks: { directoryUrl: string; adoptedAt: Date },
  where: string,
): CertificateData {
  const { certPem, keyPem } = pair;
  if (certPem === undefined || keyPem === undefined) {
    throw new ConsulAcmeError(
      'ADOPT_REFUSED',
      `refusing to adopt ${where}: it has no ${certPem === undefined ? 'cert' : 'key'}`,
    );
  }
  const inspected = inspectCertificateCached(certPem, keyPem);
  if (!inspected.ok) throw new ConsulAcmeError('ADOPT_REFUSED', `refusing to adopt ${where}: ${inspected.problem}`);
  if (inspected.keyType === undefined) {
    throw new ConsulAcmeError(
      'ADOPT_REFUSED',
      `refusing to adopt ${where}: its key type is not one consul-acme issues`,
    );
  }
  return {
    ...inspectedFacts(hostname, inspected, inspected.keyType, marks.directoryUrl, marks.adoptedAt),
    certPem,
    keyPem,
    adoptedAt: marks.adoptedAt,
  };
}
