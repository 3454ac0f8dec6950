/**
 * Client-side rate-limit budgets that mirror Let's Encrypt's production limits
 * (docs/protocols.md §7), so that a bug or a flood of declared names stops here, before the CA
 * starts refusing us for hours. Pure: events and `now` are arguments.
 *
 * Each budget is a sliding window: an event counts until `windowMs` after it happened. Let's
 * Encrypt itself uses token buckets, which refill gradually; a sliding window with the same limit
 * and period never allows more than the bucket does over any window, so it is the safe side.
 *
 * Budgets kept (the lead records events with the ledger and checks before each new order):
 * - `account`: 300 new orders per 3 hours (New Orders per Account).
 * - `registered-domain`: 50 new orders per registered domain per 7 days (New Certificates per
 *   Registered Domain; counting orders, not issued certificates, is the safe side).
 * - `failed-authorizations`: 5 failed authorizations per hostname per hour (Authorization
 *   Failures per Identifier per Account).
 * - `exact-set`: 5 orders per exact set of names per 7 days (New Certificates per Exact Set of
 *   Identifiers). Let's Encrypt counts renewals here too, so every order counts, renewal or not;
 *   it is the backstop against reissuing the same certificate in a loop, beside the worker's
 *   write-ahead record (src/engine/worker.ts), which completes an issued order instead of
 *   buying it again. Counting orders, not issued certificates, is the safe side again.
 * Renewals of the same set of names are exempt from the first two, as at Let's Encrypt; failed
 * authorizations always count.
 */
import { createHash } from 'node:crypto';
import { canonicalHostname } from './hostname.js';
import { registeredDomain } from './registered-domain.js';

export type BudgetScope = 'account' | 'registered-domain' | 'failed-authorizations' | 'exact-set';

export interface Budget {
  scope: BudgetScope;
  limit: number;
  windowMs: number;
}

const HOUR_MS = 3_600_000;
const DAY_MS = 24 * HOUR_MS;

export const DEFAULT_BUDGETS: readonly Readonly<Budget>[] = Object.freeze(
  (
    [
      { scope: 'account', limit: 300, windowMs: 3 * HOUR_MS },
      { scope: 'registered-domain', limit: 50, windowMs: 7 * DAY_MS },
      { scope: 'failed-authorizations', limit: 5, windowMs: HOUR_MS },
      { scope: 'exact-set', limit: 5, windowMs: 7 * DAY_MS },
    ] satisfies Budget[]
  ).map((b) => Object.freeze(b)),
);

/** The longest window of the default budgets: ledgers may forget events older than this. */
export const BUDGET_RETENTION_MS = 7 * DAY_MS;

/** The key of the account budget when the caller does not name the account. */
export const DEFAULT_ACCOUNT_BUDGET_KEY = 'default';

export type BudgetEventKind = 'new-order' | 'failed-authorization';

export interface BudgetKey {
  scope: BudgetScope;
  key: string;
}

/** Longest exact-set key spelled out in full; longer sets are keyed by a hash (see exactSetKey). */
export const MAX_EXACT_SET_KEY_LENGTH = 200;

/**
 * The key of an exact set of names: the canonical names, sorted and unique, joined with `_` (a
 * character no valid hostname has, and one the ledger's keys allow), e.g.
 * `a.example.com_www.example.com`; one name is just that name. A set whose key would be longer than
 * MAX_EXACT_SET_KEY_LENGTH is keyed `<first name>_and-<n>-more_<sha256 of the full key, 16 hex>`,
 * still stable and ledger-safe, and still naming a name for the status.
 */
export function exactSetKey(hostnames: string | readonly string[]): string {
  const names = [...new Set((typeof hostnames === 'string' ? [hostnames] : hostnames).map(canonicalHostname))].sort();
  const full = names.join('_');
  if (full.length <= MAX_EXACT_SET_KEY_LENGTH) return full;
  const digest = createHash('sha256').update(full).digest('hex').slice(0, 16);
  return `${names[0]}_and-${names.length - 1}-more_${digest}`;
}

/**
 * The budgets one event counts against.
 * - `new-order` for the names of one order (a string or the order's list): the account once and
 *   each distinct registered domain once, unless `isRenewal` (same set of names); and the exact
 *   set of the order's names, always.
 * - `failed-authorization`: each hostname's own failed-authorizations budget, renewal or not.
 * Keys are sorted and unique, so the result is stable: account, registered domains, exact set.
 */
export function budgetKeys(
  hostnames: string | readonly string[],
  kind: BudgetEventKind,
  isRenewal: boolean,
  accountKey: string = DEFAULT_ACCOUNT_BUDGET_KEY,
): BudgetKey[] {
  const names = [...new Set((typeof hostnames === 'string' ? [hostnames] : hostnames).map(canonicalHostname))].sort();
  if (kind === 'failed-authorization') {
    return names.map((key) => ({ scope: 'failed-authorizations', key }));
  }
  if (names.length === 0) return [];
  const exactSet: BudgetKey = { scope: 'exact-set', key: exactSetKey(names) };
  if (isRenewal) return [exactSet];
  const domains = [...new Set(names.map(registeredDomain))].sort();
  return [
    { scope: 'account', key: accountKey },
    ...domains.map((key): BudgetKey => ({ scope: 'registered-domain', key })),
    exactSet,
  ];
}

/** The ledger key of a budget key: `<scope>/<key>`, e.g. `registered-domain/example.co.uk`. */
export function budgetScopeKey(key: BudgetKey): string {
  return `${key.scope}/${key.key}`;
}

/** The budget for `scope` in `budgets`, or undefined when none is kept for it. */
export function budgetFor(scope: BudgetScope, budgets: readonly Budget[] = DEFAULT_BUDGETS): Budget | undefined {
  return budgets.find((b) => b.scope === scope);
}

/** Whether an event at `at` still counts at `now` in a window of `windowMs` (events in the future count). */
function inWindow(now: Date, at: Date, windowMs: number): boolean {
  return at.getTime() + windowMs > now.getTime();
}

/** The events that still count at `now`, oldest first; invalid dates are dropped. */
export function pruneEvents(now: Date, events: readonly Date[], windowMs: number): Date[] {
  return events
    .filter((at) => Number.isFinite(at.getTime()) && inWindow(now, at, windowMs))
    .sort((a, b) => a.getTime() - b.getTime());
}

export type BudgetCheck = { ok: true } | { ok: false; until: Date; used: number; limit: number };

/**
 * Whether one more event fits the budget at `now`. When it does not, `until` is when enough events
 * have left the window for one more to fit: the oldest event's time + windowMs when exactly at the
 * limit (later when instances racing each other overspent it).
 */
export function checkBudget(now: Date, events: readonly Date[], budget: Budget): BudgetCheck {
  const counted = pruneEvents(now, events, budget.windowMs);
  const used = counted.length;
  if (used < budget.limit) return { ok: true };
  const leaving = counted[used - budget.limit] ?? counted[0];
  const until = new Date((leaving?.getTime() ?? now.getTime()) + budget.windowMs);
  return { ok: false, until, used, limit: budget.limit };
}

export type BudgetsCheck = { ok: true } | { ok: false; key: BudgetKey; until: Date; used: number; limit: number };

/**
 * Checks several budget keys at once (the keys of one order): ok when every one has room;
 * otherwise the exhausted one that frees up last, since the order needs them all. Keys whose
 * scope has no budget in `budgets` always have room.
 */
export function checkBudgets(
  now: Date,
  entries: ReadonlyArray<{ key: BudgetKey; events: readonly Date[] }>,
  budgets: readonly Budget[] = DEFAULT_BUDGETS,
): BudgetsCheck {
  let worst: BudgetsCheck = { ok: true };
  for (const { key, events } of entries) {
    const budget = budgetFor(key.scope, budgets);
    if (!budget) continue;
    const check = checkBudget(now, events, budget);
    if (check.ok) continue;
    if (worst.ok || check.until.getTime() > worst.until.getTime()) worst = { key, ...check };
  }
  return worst;
}
