/**
 * Keeps the Consul KV footprint per name bounded: what a crash or a departed name left behind is
 * deleted, at most once per `everyMs` (an hour), by the instance that leads the renewal scan.
 *
 * - challenge tokens older than `tokenMaxAgeMs` (an hour; a validation takes seconds): a crash
 *   between putting and deleting a token leaves one behind;
 * - budget events past their window, and CA pauses that have ended;
 * - the persisted backoff of names that are neither managed nor stored any more.
 * Locks need nothing here: a released lock's key is deleted, and a dead holder's session deletes
 * its keys. docs/operations.md lists the keys a name can have and when each goes.
 */
import { describeError } from '../errors.js';
import { F, type Logger } from '../logging.js';
import type { BudgetLedger } from '../ports/budget-ledger.js';
import type { CertificateStateStore } from '../ports/certificate-state-store.js';
import type { ChallengeStore } from '../ports/challenge-store.js';
import type { Clock } from '../ports/clock.js';

export const DEFAULT_JANITOR_EVERY_MS = 3_600_000;
export const DEFAULT_TOKEN_MAX_AGE_MS = 3_600_000;

export interface JanitorDeps {
  challengeStore: ChallengeStore;
  ledger: BudgetLedger | undefined;
  stateStore: CertificateStateStore | undefined;
  /** Whether a name still needs its backoff: managed, or with a record in the store. */
  isKnown: (hostname: string) => boolean;
  clock: Clock;
  logger: Logger;
  everyMs?: number;
  tokenMaxAgeMs?: number;
}

export interface JanitorSummary {
  tokens: number;
  budgetKeys: number;
  states: number;
}

export class Janitor {
  private lastRunMs: number | undefined;
  private readonly log: Logger;

  constructor(private readonly deps: JanitorDeps) {
    this.log = deps.logger.child({ [F.component]: 'janitor' });
  }

  /** Runs when the last run is at least `everyMs` ago (or never ran); resolves what it deleted, or undefined. */
  async maybeRun(): Promise<JanitorSummary | undefined> {
    const now = this.deps.clock.nowMs();
    if (this.lastRunMs !== undefined && now - this.lastRunMs < (this.deps.everyMs ?? DEFAULT_JANITOR_EVERY_MS)) {
      return undefined;
    }
    this.lastRunMs = now;
    return this.run();
  }

  /** One clean-up, now. Each part that fails is logged; the others still run. */
  async run(): Promise<JanitorSummary> {
    const summary: JanitorSummary = { tokens: 0, budgetKeys: 0, states: 0 };
    const { challengeStore, ledger, stateStore, clock } = this.deps;
    summary.tokens = await this.part('challenge tokens', () =>
      challengeStore.prune(this.deps.tokenMaxAgeMs ?? DEFAULT_TOKEN_MAX_AGE_MS),
    );
    if (ledger) summary.budgetKeys = await this.part('budget events', () => ledger.prune(clock.now()));
    if (stateStore) {
      summary.states = await this.part('backoff state', async () => {
        let deleted = 0;
        for (const hostname of await stateStore.list()) {
          if (this.deps.isKnown(hostname)) continue;
          await stateStore.delete(hostname);
          deleted += 1;
        }
        return deleted;
      });
    }
    if (summary.tokens + summary.budgetKeys + summary.states > 0) {
      this.log.info({ ...summary }, 'consul kv cleaned up');
    }
    return summary;
  }

  private async part(what: string, work: () => Promise<number>): Promise<number> {
    try {
      return await work();
    } catch (err) {
      this.log.warn({ part: what, [F.err]: describeError(err) }, 'clean-up failed; next run retries');
      return 0;
    }
  }
}
