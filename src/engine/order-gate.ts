/**
 * Decides, before any order, whether the CA may be asked now, and records what the CA will count.
 * Three guards, in this order:
 * 1. Pauses: a `rateLimited` answer from the CA pauses the scope it names (account, registered
 *    domain or name) until its Retry-After, for every instance (kept in the budget ledger).
 * 2. Budgets: client-side copies of the CA's published limits, shared by every instance; a spent
 *    budget defers the order until the window frees a slot. Renewals of the same names are exempt
 *    from the account and registered-domain budgets, as at Let's Encrypt; every order, renewal or
 *    not, counts against the budget of its exact set of names.
 * 3. Pre-flight: the name must resolve, its CAA records must allow the CA, and its challenge path
 *    must reach us; a failure is an ordinary failure (PREFLIGHT_FAILED), retried on the backoff
 *    schedule, and no order is placed.
 * Pauses and budgets are checked again after the pre-flight, and an admitted order is recorded
 * against the budgets in the same step, one admission at a time in this process.
 * The decisions are pure (src/domain/budget.ts, src/domain/rate-limit.ts); this class gathers
 * their inputs and records outcomes. It never waits for a limit: a deferral goes back to the queue.
 *
 * Holds it has seen (a spent budget, a CA pause) are remembered until they end, so that the other
 * names behind the same hold are deferred by `heldInMemory` without a lock, a ledger read or a
 * store read: when the account budget is spent, ten thousand waiting names cost nothing.
 *
 * A pre-flight failure within `routeSettleMs` of the name's challenge route being registered (or
 * asked for, while its registration is under way) is not a failure: the route may not be live yet
 * (the agent and then Fabio have to see it), so the name is deferred on a short
 * schedule ("waiting for the route") before the normal backoff applies. A CAA refusal is the DNS
 * owner's decision, not a route catching up: it fails at once. While a name's route is that new,
 * the worker asks for its pre-flight (`preflightNewRoute`) before it takes the certificate's lock,
 * and hands the verdict to `admit`: when ten thousand routes are registered at once, each name
 * probed while Fabio catches up costs a probe, not a lock, store and ledger round.
 */
import { budgetKeys, budgetScopeKey, checkBudgets, DEFAULT_BUDGETS, type Budget } from '../domain/budget.js';
import { pauseLedgerKey, pausesFor, rateLimitScope } from '../domain/rate-limit.js';
import { AbortedError, AcmeProblemError, ConsulAcmeError, describeError } from '../errors.js';
import { F, type Logger } from '../logging.js';
import type { BudgetLedger } from '../ports/budget-ledger.js';
import type { Clock } from '../ports/clock.js';
import type { Preflight } from '../ports/preflight.js';

export type Admission = { admitted: true } | { admitted: false; until: Date; why: string };

/**
 * What the pre-flight found: every name passed; a route is not live yet (wait until the
 * admission's time); or a failure (PREFLIGHT_FAILED) to be thrown under the certificate's lock.
 */
export type PreflightVerdict =
  | { kind: 'passed' }
  | { kind: 'wait'; admission: Admission & { admitted: false } }
  | { kind: 'failed'; error: ConsulAcmeError };

const PASSED: PreflightVerdict = { kind: 'passed' };

/** ACME problem types that mean an authorization failed (the CA counts them per name). */
const FAILED_AUTHORIZATION_TYPES = new Set(['unauthorized', 'connection', 'dns', 'incorrectResponse', 'caa', 'tls']);

export interface OrderGateDeps {
  ledger: BudgetLedger | undefined;
  preflight: Preflight | undefined;
  budgets?: readonly Budget[];
  clock: Clock;
  logger: Logger;
  /**
   * How old the challenge route of `hostname` is (ms since it was registered, or asked for while its
   * registration is under way), if this instance registers it.
   */
  routeAgeMs?: (hostname: string) => number | undefined;
  /**
   * How long after its route is registered a name's pre-flight failure means "not live yet"; default
   * DEFAULT_ROUTE_SETTLE_MS.
   */
  routeSettleMs?: number;
}

/** How long a new challenge route may take to become live (Consul, then Fabio's refresh). */
export const DEFAULT_ROUTE_SETTLE_MS = 30_000;
/** Shortest and longest wait for a route that is not live yet: 0.5, 1, 2, 4, 8 s as time passes. */
export const ROUTE_WAIT_MIN_MS = 500;
export const ROUTE_WAIT_MAX_MS = 8_000;

/** A shared hold the gate has seen: no order for these scope keys before `until`. */
interface Hold {
  until: number;
  why: string;
}

export class OrderGate {
  private readonly log: Logger;
  private readonly budgets: readonly Budget[];
  /** The end of the chain of admissions in progress (see `exclusively`). */
  private tail: Promise<unknown> = Promise.resolve();
  /** Ledger scope key → the hold seen on it, until it ends. */
  private readonly holds = new Map<string, Hold>();

  constructor(private readonly deps: OrderGateDeps) {
    this.log = deps.logger.child({ [F.component]: 'order-gate' });
    this.budgets = deps.budgets ?? DEFAULT_BUDGETS;
  }

  /**
   * Whether an order for `hostnames` may be placed now; when it may, the order is recorded against
   * the budgets before this resolves (the caller places it next). Throws PREFLIGHT_FAILED when the
   * route is broken. `verdict` is a pre-flight verdict reached moments ago (`preflightNewRoute`),
   * used instead of probing again.
   */
  async admit(
    hostnames: readonly string[],
    isRenewal: boolean,
    signal?: AbortSignal,
    verdict?: PreflightVerdict,
  ): Promise<Admission> {
    // A first look, so that a paused or spent name waits (not fails) without a pre-flight probe.
    // After a passed probe there is nothing to spare: the look below, when recording, decides.
    if (verdict?.kind !== 'passed') {
      const held = await this.holdFor(hostnames, isRenewal);
      if (held) return held;
    }
    const checked = verdict ?? (await this.preflight(hostnames, signal));
    if (checked.kind === 'wait') return checked.admission;
    if (checked.kind === 'failed') throw checked.error;
    // The check that counts and the record of the order are one step in this process: orders
    // admitted at the same moment could otherwise all see the same free slot and overspend a
    // budget. (Instances can still race each other; see domain/budget.ts checkBudget.)
    return this.exclusively(async () => {
      const heldNow = await this.holdFor(hostnames, isRenewal);
      if (heldNow) return heldNow;
      await this.record(budgetKeys(hostnames, 'new-order', isRenewal).map(budgetScopeKey), this.deps.clock.now());
      return { admitted: true };
    });
  }

  /**
   * The pre-flight of names whose challenge route is new (registered less than `routeSettleMs`
   * ago), asked before the worker takes a lock or reads the store. While a route catches up, its
   * name is probed every 0.5–8 s; a route that is not live yet then costs the probe and nothing
   * else. Undefined when no route of `hostnames` is new, or no pre-flight is configured: `admit`
   * probes then.
   */
  async preflightNewRoute(hostnames: readonly string[], signal?: AbortSignal): Promise<PreflightVerdict | undefined> {
    if (!this.deps.preflight || !hostnames.some((h) => this.routeWait(h) !== undefined)) return undefined;
    try {
      return await this.preflight(hostnames, signal);
    } catch (err) {
      // Our own side failed (the challenge store refused the probe): `admit` probes again under the
      // lock, where a failure is reported as every failure of an attempt is.
      if (err instanceof AbortedError) throw err;
      return undefined;
    }
  }

  /** Probes each of `hostnames` in turn; the first that does not pass is the verdict. */
  private async preflight(hostnames: readonly string[], signal: AbortSignal | undefined): Promise<PreflightVerdict> {
    if (!this.deps.preflight) return PASSED;
    for (const hostname of hostnames) {
      const result = await this.deps.preflight.check(hostname, signal);
      if (result.ok) continue;
      const routeWait = result.reason === 'CAA' ? undefined : this.routeWait(hostname);
      if (routeWait !== undefined) {
        const until = new Date(this.deps.clock.nowMs() + routeWait);
        const why = `waiting for the route: ${result.reason}: ${result.detail}`;
        return { kind: 'wait', admission: { admitted: false, until, why } };
      }
      const error = new ConsulAcmeError('PREFLIGHT_FAILED', `${result.reason}: ${hostname}: ${result.detail}`, {
        retryable: true,
      });
      return { kind: 'failed', error };
    }
    return PASSED;
  }

  /**
   * A hold seen before that still covers an order for `hostnames` (a CA pause, a spent budget),
   * decided from memory alone: no ledger, lock or store is touched. Undefined when none is known;
   * `admit` still checks the ledger, since another instance may have spent the budget.
   */
  heldInMemory(hostnames: readonly string[], isRenewal: boolean): Admission | undefined {
    if (this.holds.size === 0) return undefined;
    const now = this.deps.clock.nowMs();
    let latest: Hold | undefined;
    for (const key of this.scopeKeys(hostnames, isRenewal)) {
      const hold = this.holds.get(key);
      if (hold === undefined) continue;
      if (hold.until <= now) {
        this.holds.delete(key);
        continue;
      }
      if (!latest || hold.until > latest.until) latest = hold;
    }
    return latest ? { admitted: false, until: new Date(latest.until), why: latest.why } : undefined;
  }

  /** The ledger keys whose holds stop an order for `hostnames`: pauses, then budgets. */
  private scopeKeys(hostnames: readonly string[], isRenewal: boolean): string[] {
    return [
      ...pausesFor(hostnames).map(pauseLedgerKey),
      ...budgetKeys(hostnames, 'new-order', isRenewal).map(budgetScopeKey),
      ...budgetKeys(hostnames, 'failed-authorization', isRenewal).map(budgetScopeKey),
    ];
  }

  /**
   * How long to wait before probing `hostname` again when its route may not be live yet; undefined
   * when it should be.
   */
  private routeWait(hostname: string): number | undefined {
    const elapsed = this.deps.routeAgeMs?.(hostname);
    if (elapsed === undefined) return undefined;
    if (elapsed >= (this.deps.routeSettleMs ?? DEFAULT_ROUTE_SETTLE_MS)) return undefined;
    return Math.min(Math.max(elapsed, ROUTE_WAIT_MIN_MS), ROUTE_WAIT_MAX_MS);
  }

  private remember(scopeKey: string, until: Date, why: string): void {
    const existing = this.holds.get(scopeKey);
    if (!existing || existing.until < until.getTime()) this.holds.set(scopeKey, { until: until.getTime(), why });
  }

  /**
   * Why an order for `hostnames` must wait now (a CA pause or a spent budget), or undefined. The
   * pause and budget keys are read from the ledger together.
   */
  private async holdFor(hostnames: readonly string[], isRenewal: boolean): Promise<Admission | undefined> {
    const now = this.deps.clock.now();
    const ledger = this.deps.ledger;
    if (!ledger) return undefined;
    const pauses = pausesFor(hostnames);
    const keys = [
      ...budgetKeys(hostnames, 'new-order', isRenewal),
      ...budgetKeys(hostnames, 'failed-authorization', isRenewal),
    ];
    // Pause ends are future times; budget events go back as far as the longest window.
    const windowStart = new Date(now.getTime() - Math.max(...this.budgets.map((b) => b.windowMs)));
    const read = await ledger.eventsOf([...pauses.map(pauseLedgerKey), ...keys.map(budgetScopeKey)], windowStart);
    for (const pause of pauses) {
      const ends = read.get(pauseLedgerKey(pause)) ?? [];
      const until = ends.reduce<Date | undefined>(
        (latest, d) => (d > now && (!latest || d > latest) ? d : latest),
        undefined,
      );
      if (until) {
        const why = `rate limited by the CA for ${pause.scope} ${pause.key}`;
        this.remember(pauseLedgerKey(pause), until, why);
        return { admitted: false, until, why };
      }
    }
    const entries = keys.map((key) => ({ key, events: read.get(budgetScopeKey(key)) ?? [] }));
    const check = checkBudgets(now, entries, this.budgets);
    if (!check.ok) {
      const why = `budget ${check.key.scope} ${check.key.key} spent (${check.used}/${check.limit})`;
      this.remember(budgetScopeKey(check.key), check.until, why);
      return { admitted: false, until: check.until, why };
    }
    return undefined;
  }

  /** Runs `fn` after every earlier call has settled (a one-process mutex). */
  private exclusively<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.tail.then(fn, fn);
    this.tail = run.catch(() => undefined);
    return run;
  }

  /** Records what a failed order costs: a failed authorization per name, or a pause for a rate limit. */
  async recordFailure(hostnames: readonly string[], err: unknown): Promise<void> {
    if (!(err instanceof AcmeProblemError)) return;
    const now = this.deps.clock.now();
    if (err.code === 'ACME_RATE_LIMITED') {
      const pause = rateLimitScope(err.message, hostnames);
      const until = new Date(now.getTime() + (err.retryAfterSeconds ?? 3600) * 1000);
      // Not `key`: the logger redacts fields of that name (private keys).
      this.log.warn(
        { scope: pause.scope, paused: pause.key, until: until.toISOString() },
        'rate limited by the CA; pausing that scope',
      );
      await this.record([pauseLedgerKey(pause)], until);
      return;
    }
    const type = err.problemType?.split(':').pop();
    if (type && FAILED_AUTHORIZATION_TYPES.has(type))
      await this.record(budgetKeys(hostnames, 'failed-authorization', false).map(budgetScopeKey), now);
  }

  private async record(scopeKeys: string[], at: Date): Promise<void> {
    const ledger = this.deps.ledger;
    if (!ledger) return;
    // Recorded together, so that the ledger can write them in one go.
    await Promise.all(
      scopeKeys.map((key) =>
        ledger.record(key, at).catch((err: unknown) => {
          this.log.warn({ key, [F.err]: describeError(err) }, 'could not record a budget event');
        }),
      ),
    );
  }
}
