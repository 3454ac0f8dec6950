/** The certificate as the domain sees it: what we store, independent of where. */

export const KEY_TYPES = ['ec-p256', 'ec-p384', 'rsa-2048', 'rsa-3072', 'rsa-4096'] as const;
export type KeyType = (typeof KEY_TYPES)[number];
export const DEFAULT_KEY_TYPE: KeyType = 'ec-p256';

/** Written into every certificate record we store, so we never touch one we did not write. */
export const MANAGED_BY = 'consul-acme';

/** A certificate and its private key, with the facts the planner needs, as obtained from the CA. */
export interface CertificateData {
  /** The store key: one certificate per hostname, so the hostname itself. */
  hostname: string;
  /** DNS names in the certificate, hostname first. */
  hostnames: string[];
  /** Leaf certificate followed by the chain, PEM. This is Fabio's `cert` field. */
  certPem: string;
  /** Private key, PKCS#8 PEM. This is Fabio's `key` field. */
  keyPem: string;
  notBefore: Date;
  notAfter: Date;
  /** ACME directory URL the certificate was obtained from. */
  directoryUrl: string;
  /** The issuing CA's common name, from the leaf. */
  issuer: string;
  keyType: KeyType;
  /** When we wrote it. */
  obtainedAt: Date;
  /**
   * Set only on a certificate consul-acme adopted (src/domain/adopt.ts): when it took over the
   * record another tool wrote. Its first renewal by consul-acme drops it.
   */
  adoptedAt?: Date;
}

/**
 * What a store holds under a hostname. `version` is the store's version of the record (Vault KV
 * version, file generation) and is what a check-and-set write compares against.
 * - `managed: false` means the record exists but was not written by consul-acme: never touch it.
 * - `certificate: undefined` with a `problem` means the record is ours but unreadable
 *   (missing field, bad PEM, key that does not match): the planner reissues it.
 */
export interface StoredRecord {
  hostname: string;
  version: number;
  managed: boolean;
  certificate: CertificateData | undefined;
  problem: string | undefined;
  /**
   * Only on a record not written by consul-acme (`managed: false`), when its certificate and key
   * load and match and its key type is one consul-acme issues: what the certificate says, so that
   * adoption can be decided (src/domain/adopt.ts). `directoryUrl` is empty: an ACME certificate
   * does not name the directory it came from.
   */
  foreign?: CertificateFacts;
  /**
   * Set when a newer release wrote the record in a format this one does not read
   * (domain/record-format.ts): it is left alone, never replaced or deleted, and not ordered for.
   */
  newerFormat?: number;
}

/** What planning needs of a certificate: everything but the PEM texts (kept out of memory). */
export type CertificateFacts = Omit<CertificateData, 'certPem' | 'keyPem'>;

/** What the engine remembers of a stored record between reads: a StoredRecord without the PEM texts. */
export interface StoredFacts {
  hostname: string;
  version: number;
  managed: boolean;
  certificate: CertificateFacts | undefined;
  problem: string | undefined;
  /** As StoredRecord.foreign. */
  foreign?: CertificateFacts;
  /** See StoredRecord.newerFormat. */
  newerFormat?: number;
}

/** The facts of a record, dropping the certificate and key texts. */
export function factsOf(record: StoredRecord): StoredFacts {
  const { hostname, version, managed, problem } = record;
  const extra = {
    ...(record.foreign === undefined ? {} : { foreign: record.foreign }),
    ...(record.newerFormat === undefined ? {} : { newerFormat: record.newerFormat }),
  };
  if (record.certificate === undefined)
    return { hostname, version, managed, certificate: undefined, problem, ...extra };
  const { certPem: _certPem, keyPem: _keyPem, ...certificate } = record.certificate;
  return { hostname, version, managed, certificate, problem, ...extra };
}

/**
 * An order the CA has authorized, recorded durably before it is finalized (write-ahead issuance):
 * with the order URL and the private key, any instance can finish it after a crash, a lost lock or
 * a store outage by downloading the certificate again, never by buying it again.
 */
export interface PendingOrder {
  /** The store key: the certificate's first hostname. */
  hostname: string;
  /** Every DNS name of the order, `hostname` first. */
  hostnames: string[];
  /** The ACME directory the order was placed with. */
  directoryUrl: string;
  /** The order's URL at the CA (RFC 8555 §7.1.3). */
  orderUrl: string;
  /** The certificate's private key, PKCS#8 PEM; a finalize that must be sent again uses it. A secret. */
  keyPem: string;
  keyType: KeyType;
  /** When the record was written. */
  createdAt: Date;
}
