import { systemClock, type Clock } from '../../ports/clock.js';
import { BUDGET_RETENTION_MS } from '../../domain/budget.js';
import { ConsulAcmeError } from '../../errors.js';
import { eventsToKeep, isBudgetScopeKey, type BudgetLedger } from '../../ports/budget-ledger.js';

export interface MemoryBudgetLedgerOptions {
  /** Events older than this (relative to `now`) are forgotten on write. */
  retentionMs?: number;
  clock?: Clock;
}

/** BudgetLedger for one process: tests and single-instance runs without Consul. */
export class MemoryBudgetLedger implements BudgetLedger {
  private readonly entries = new Map<string, number[]>();
  private readonly retentionMs: number;
  private readonly clock: Clock;

  constructor(opts: MemoryBudgetLedgerOptions = {}) {
    this.retentionMs = opts.retentionMs ?? BUDGET_RETENTION_MS;
    this.clock = opts.clock ?? systemClock;
  }

  async record(scopeKey: string, at: Date): Promise<void> {
    checkKey(scopeKey);
    const oldest = this.clock.now().getTime() - this.retentionMs;
    const kept = (this.entries.get(scopeKey) ?? []).filter((t) => t >= oldest);
    kept.push(at.getTime());
    kept.sort((a, b) => a - b);
    this.entries.set(scopeKey, kept);
  }

  async events(scopeKey: string, since: Date): Promise<Date[]> {
    checkKey(scopeKey);
    return (this.entries.get(scopeKey) ?? []).filter((t) => t >= since.getTime()).map((t) => new Date(t));
  }

  async eventsOf(scopeKeys: readonly string[], since: Date): Promise<Map<string, Date[]>> {
    return new Map(await Promise.all(scopeKeys.map(async (key) => [key, await this.events(key, since)] as const)));
  }

  async prune(now: Date): Promise<number> {
    let deleted = 0;
    for (const [scopeKey, times] of [...this.entries]) {
      const kept = eventsToKeep(scopeKey, times, now, this.retentionMs);
      if (kept.length > 0) this.entries.set(scopeKey, kept);
      else {
        this.entries.delete(scopeKey);
        deleted += 1;
      }
    }
    return deleted;
  }

  /** Scope keys with events, sorted; tests use it to check what is left. */
  scopeKeys(): string[] {
    return [...this.entries.keys()].sort();
  }
}

function checkKey(scopeKey: string): void {
  if (!isBudgetScopeKey(scopeKey)) {
    throw new ConsulAcmeError('INTERNAL', `budget ledger: ${JSON.stringify(scopeKey)} is not a valid scope key`);
  }
}
