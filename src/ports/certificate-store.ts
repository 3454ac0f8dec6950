import type { CertificateData, StoredRecord } from '../domain/certificate.js';

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
 */
export interface CertificateStore {
  /** A short description for logs and the status API, e.g. `vault:secret/fabio/certs`. */
  readonly description: string;
  get(hostname: string): Promise<StoredRecord | undefined>;
  put(certificate: CertificateData, expectedVersion: number): Promise<number>;
  delete(hostname: string, expectedVersion: number): Promise<void>;
  list(): Promise<string[]>;
}
