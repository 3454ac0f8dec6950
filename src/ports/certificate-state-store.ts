/** What the queue remembers about a certificate's attempts, shared by every instance. */
export interface CertificateState {
  hostname: string;
  consecutiveFailures: number;
  lastAttemptAt: Date | undefined;
  lastError: string | undefined;
  /** No attempt before this time (backoff or the CA's Retry-After). */
  nextAttemptAt: Date | undefined;
}

/**
 * Persisted per-certificate attempt state (Consul KV in production), so that restarts and other
 * instances respect a failing name's backoff.
 *
 * Contract (test/contract/certificate-state-store.contract.test.ts):
 * - `get` of an unknown hostname resolves `undefined`; a value that cannot be parsed also resolves
 *   `undefined` (it is only a hint: the worst case is one early retry).
 * - `put` overwrites; `delete` of an unknown hostname is a no-op.
 * - `list()` resolves the hostnames that have a state, sorted (a state that cannot be parsed
 *   counts: it is there to be deleted). The engine deletes the state of names no longer managed.
 * - Safe across processes for Consul (last writer wins, which is fine: the writer holds the
 *   certificate's lock).
 */
export interface CertificateStateStore {
  get(hostname: string): Promise<CertificateState | undefined>;
  put(state: CertificateState): Promise<void>;
  delete(hostname: string): Promise<void>;
  list(): Promise<string[]>;
}
