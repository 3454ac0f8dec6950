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
 *   key resolves `[]`, never a throw for "missing".
 * - Events older than the retention (BUDGET_RETENTION_MS, 7 days, by default) may be forgotten.
 * - Scope keys are `/`-separated segments of letters, digits, `.`, `_` and `-`; anything else is
 *   rejected with INTERNAL (a programming error).
 * - Safe across processes for Consul; memory is one process only.
 */
export interface BudgetLedger {
  record(scopeKey: string, at: Date): Promise<void>;
  events(scopeKey: string, since: Date): Promise<Date[]>;
}

const SCOPE_KEY_PATTERN = /^[A-Za-z0-9._-]+(\/[A-Za-z0-9._-]+)*$/;

/** Whether `scopeKey` is a valid ledger key (no empty segments, no `..`, no odd characters). */
export function isBudgetScopeKey(scopeKey: string): boolean {
  return SCOPE_KEY_PATTERN.test(scopeKey) && !scopeKey.split('/').some((s) => s === '.' || s === '..');
}
