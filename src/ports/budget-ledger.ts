/**
 * Timestamps of rate-limited events (new orders, failed authorizations), one list per scope key
 * such as `account/default` or `registered-domain/example.co.uk` (domain/budget.ts
 * `budgetScopeKey`), shared by every instance so that together they stay within the CA's limits.
 *
 * Contract (test/contract/budget-ledger.contract.test.ts):
 * - `record(scopeKey, at)` resolves once the event is stored where every instance reads it.
 *   Concurrent records, from one instance or several, are never lost (Consul: check-and-set on
 *   the key's ModifyIndex, retried on conflict). After too many lost races it rejects with a
 *   retryable STORE_CONFLICT; the caller may treat that budget as exhausted for now.
 * - `events(scopeKey, since)` resolves the events at or after `since`, oldest first; an unknown
 *   key resolves `[]`, never a throw for "missing". `eventsOf(scopeKeys, since)` is the same for
 *   several keys at once, each key mapped to what `events` would give (Consul: one or two
 *   requests instead of one per key).
 * - Events older than the retention (BUDGET_RETENTION_MS, 7 days, by default) may be forgotten.
 * - Keys under PAUSE_SCOPE_FOLDER (`paused/`, domain/rate-limit.ts `pauseLedgerKey`) hold the
 *   times pauses end; an event there is over once it is in the past.
 * - `prune(now)` forgets what is over: events older than the retention, pause ends at or before
 *   `now`; a key left with no event is deleted (Consul: check-and-set delete, so an event
 *   recorded meanwhile is never lost; a lost race leaves the key for the next prune). It resolves
 *   how many keys it deleted. The caller runs it now and then (hourly is plenty).
 * - Scope keys are `/`-separated segments of letters, digits, `.`, `_` and `-`; anything else is
 *   rejected with INTERNAL (a programming error).
 * - Safe across processes for Consul; memory is one process only.
 */
export interface BudgetLedger {
  record(scopeKey: string, at: Date): Promise<void>;
  events(scopeKey: string, since: Date): Promise<Date[]>;
  eventsOf(scopeKeys: readonly string[], since: Date): Promise<Map<string, Date[]>>;
  prune(now: Date): Promise<number>;
}

/** The folder of the pause keys: `pauseLedgerKey()` in domain/rate-limit.ts starts with it. */
export const PAUSE_SCOPE_FOLDER = 'paused/';

/**
 * The events of `scopeKey` still worth keeping at `now`: a pause end after `now`, any other event
 * within `retentionMs` before `now`. Sorted, oldest first.
 */
export function eventsToKeep(scopeKey: string, times: readonly number[], now: Date, retentionMs: number): number[] {
  const keep = scopeKey.startsWith(PAUSE_SCOPE_FOLDER)
    ? (t: number) => t > now.getTime()
    : (t: number) => t >= now.getTime() - retentionMs;
  return times.filter(keep).sort((a, b) => a - b);
}

const SCOPE_KEY_PATTERN = /^[A-Za-z0-9._-]+(\/[A-Za-z0-9._-]+)*$/;

/** Whether `scopeKey` is a valid ledger key (no empty segments, no `..`, no odd characters). */
export function isBudgetScopeKey(scopeKey: string): boolean {
  return SCOPE_KEY_PATTERN.test(scopeKey) && !scopeKey.split('/').some((s) => s === '.' || s === '..');
}
