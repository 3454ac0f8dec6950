import type { CertificateData, PendingOrder, StoredRecord } from '../domain/certificate.js';

/** What an adoption writes besides the record's own certificate and key. */
export interface AdoptionMarks {
  /** The directory consul-acme renews the certificate from (an ACME certificate does not name its own). */
  directoryUrl: string;
  /** When consul-acme took the record over; also its `obtainedAt`. */
  adoptedAt: Date;
}

/** What an adoption resolves: the version written and the certificate as now stored. */
export interface Adopted {
  version: number;
  certificate: CertificateData;
}

/**
 * Where certificates live: Vault KV v2 in Fabio's layout, a directory, or memory.
 *
 * Contract (every implementation passes test/contract/certificate-store.contract.test.ts):
 * - Safe across processes: yes for Vault (check-and-set), yes for files (atomic rename plus a
 *   version counter re-read under the write), no for memory (one process).
 * - `get` of a missing hostname resolves `undefined`; it never throws for "missing". A record that
 *   exists but cannot be read as a certificate resolves with `certificate: undefined` and a
 *   `problem`; a record not written by consul-acme resolves with `managed: false`.
 * - `put(cert, expectedVersion)` is a check-and-set: `expectedVersion` is the `version` of the
 *   record read before the work started, or 0 when it was missing. If the stored version differs
 *   it throws StoreConflictError and writes nothing. It resolves the new version. After writing it
 *   reads the record back and throws STORE_VERIFY_FAILED if it does not match.
 * - `delete(hostname, expectedVersion)` removes the record only if its version is still
 *   `expectedVersion` (StoreConflictError otherwise). Deleting a missing record is a no-op.
 * - `list()` resolves every hostname under the store's prefix (managed or not), sorted.
 * - Errors are ConsulAcmeErrors: STORE_UNAVAILABLE (retryable), STORE_PERMISSION_DENIED.
 * - Callers that hold a lock must still re-read after acquiring it, and must write with the
 *   version they read, so a caller that lost its lock can never overwrite a newer certificate.
 *
 * Pending orders (write-ahead issuance, see PendingOrder): one record per hostname, kept apart from
 * the certificates (never where Fabio or `list()` would see it) and holding a private key, so it is
 * removed completely once the certificate is stored. The worker writes it with `putPending` before
 * it finalizes an order and finalizes only once that write resolved; after the certificate is
 * stored it calls `deletePending`; any later attempt, by any instance, first asks `getPending` and
 * completes that order instead of placing a new one. The pending methods take no version: the caller
 * holds the hostname's lock, and the last write wins. Their errors are the STORE_* errors above.
 *
 * Adoption (src/domain/adopt.ts): `adopt(hostname, expectedVersion, marks)` takes over a record
 * consul-acme did not write. It writes a new version holding that record's own certificate and
 * key, unchanged, plus consul-acme's fields (managed_by, the names and dates read from the
 * certificate, `marks.directoryUrl`, and `marks.adoptedAt` as both the obtained and the adopted
 * time), with check-and-set on `expectedVersion`, the version of the record as read. It never
 * removes or empties the record: a reader sees the old version or the new one, with the same
 * certificate and key. It rejects with STORE_CONFLICT (writing nothing) when the version changed,
 * the record is gone or is consul-acme's already, and with ADOPT_REFUSED (writing nothing) when its
 * certificate or key cannot be loaded, do not match, or have a key type consul-acme does not
 * issue. It resolves the version written and the certificate as now stored (`adoptedAt` set).
 * Whether the record should be adopted at all (declared, not expired, valid for its name) is the
 * caller's decision.
 */
export interface CertificateStore {
  /** A short description for logs and the status API, e.g. `vault:secret/fabio/certs`. */
  readonly description: string;
  get(hostname: string): Promise<StoredRecord | undefined>;
  put(certificate: CertificateData, expectedVersion: number): Promise<number>;
  delete(hostname: string, expectedVersion: number): Promise<void>;
  list(): Promise<string[]>;
  /**
   * The cheapest request that fails the way reads and writes would (the store health probe, when
   * nothing else touched the store for a while): Vault lists the certificate folder (one request);
   * the file store checks that its directory can be read and written, without listing 10,000 folders.
   * Rejects with a STORE_* error.
   */
  probe(): Promise<void>;
  /** Takes over a record consul-acme did not write (see the contract above). */
  adopt(hostname: string, expectedVersion: number, marks: AdoptionMarks): Promise<Adopted>;
  /**
   * The pending order recorded for `hostname`, or undefined. A record that cannot be parsed resolves
   * undefined (and is logged when a logger is given): it only costs a new order.
   */
  getPending(hostname: string): Promise<PendingOrder | undefined>;
  /**
   * Makes the record durable (Vault: the write acknowledged; files: written, fsynced, renamed);
   * overwrites. Rejects with a STORE_* error when it cannot (and with INTERNAL, writing nothing,
   * when the order is not one `getPending` could read back: empty fields, a key that is not PEM).
   */
  putPending(pending: PendingOrder): Promise<void>;
  /** Removes the record, every version of it (it holds a private key). No-op when missing. */
  deletePending(hostname: string): Promise<void>;
  /** Hostnames with a pending record, sorted. */
  listPending(): Promise<string[]>;
}
