/** A held lock. `signal` fires when the lock is lost (session invalidated); stop work then. */
export interface Lock {
  readonly key: string;
  readonly signal: AbortSignal;
  /** Releases the lock. Idempotent; never throws (a failure is logged and the lock expires with the session). */
  release(): Promise<void>;
}

/**
 * Mutual exclusion across instances (ConsulLocker) or within one process (MemoryLocker).
 *
 * Contract (test/contract/locker.contract.test.ts):
 * - `tryAcquire(key)` resolves a Lock when this caller now holds `key`, or `undefined` when
 *   another holder has it (including during Consul's lock-delay after a holder was lost). It
 *   does not wait.
 * - Holding a lock does not mean the work is still needed: after acquiring, re-read the state.
 * - A lock is lost when the session behind it is invalidated; `lock.signal` then aborts.
 * - `close()` releases every held lock and ends background renewal.
 */
export interface Locker {
  tryAcquire(key: string): Promise<Lock | undefined>;
  close(): Promise<void>;
}
