/**
 * Rate-limit events in Consul KV, shared by every instance: one key per scope key,
 * `<prefix><scope>/<key>` (e.g. `consul-acme/budgets/registered-domain/example.co.uk`), holding a
 * JSON array of ISO timestamps, oldest first.
 *
 * Appending is a read → check-and-set loop on the keys' ModifyIndex (cas=0 when one is missing),
 * retried at once on conflict: a lost race is a data race, not a reason to wait, so there are no
 * sleeps. Within one instance, records are coalesced: those made in one turn of the event loop
 * (an order's account, domain and name budgets) go in one write, and while a write is in flight
 * later records queue up and go together in the next one, so only instances race each other and
 * a few attempts suffice. One write sets its keys in one Consul transaction (docs/protocols.md
 * §1.6), on the entries this process last read or wrote of them (SeenEntries; the order gate has
 * just read an order's keys to admit it), else on a fresh read of them together: an order's three
 * keys cost one request, where a read and a write per key took six. Events older than
 * `retentionMs` (7 days) are dropped on every write.
 *
 * `prune(now)` reads the whole folder once (a recursive read) and, for each key holding something
 * that is over (docs: ports/budget-ledger.ts), writes back what is left or deletes the key when
 * nothing is, both as check-and-set on the ModifyIndex just read: a record racing the prune wins,
 * and the key is looked at again by the next prune.
 *
 * `eventsOf` reads several keys in one Consul transaction (consul-kv.ts `kvGetMany`): an order's
 * pause and budget keys, seven for one name, cost one request, or two when some exist.
 *
 * The check-and-set write is done here rather than with consul-kv.ts `kvPut`: the consul package
 * (through papi) resolves `undefined` instead of `false` when Consul answers `false`, so a lost
 * race would look like a failure. With `includeResponse` the body comes back as sent.
 *
 * Format: every write sets the key's flags to the value's format (domain/record-format.ts), so the
 * value stays the JSON array earlier releases read. A key a newer release wrote is left alone:
 * `events` and `record` reject with FORMAT_NEWER (so nothing is ordered while its budget cannot be
 * read) and `prune` skips it.
 *
 * Size: at the account budget's full rate (300 per 3 h) a week is 16 800 events of 27 bytes,
 * about 450 kB, under Consul's 512 kB value limit; real rates are far lower.
 */
import { BUDGET_RETENTION_MS } from '../../domain/budget.js';
import { RECORD_FORMATS, kvFormatOf, newerFormatError } from '../../domain/record-format.js';
import { systemClock, type Clock } from '../../ports/clock.js';
import { ConsulAcmeError } from '../../errors.js';
import { F, silentLogger, type Logger } from '../../logging.js';
import { RecentMap } from '../../recent-map.js';
import { eventsToKeep, isBudgetScopeKey, type BudgetLedger } from '../../ports/budget-ledger.js';
import type { Consul } from './consul-client.js';
import {
  kvDeleteIfUnchanged,
  kvGetMany,
  kvList,
  kvPut,
  kvTransact,
  type KvEntry,
  type KvWriteOp,
} from './consul-kv.js';

/** Most keys one write carries: a Consul transaction holds at most 64 operations (docs/protocols.md §1.6). */
const MAX_KEYS_PER_WRITE = 64;

/** Check-and-set attempts per write before giving up with a retryable STORE_CONFLICT. */
export const DEFAULT_LEDGER_CAS_ATTEMPTS = 10;

export interface ConsulBudgetLedgerOptions {
  consul: Consul;
  /** KV folder, e.g. `consul-acme/budgets/` (a trailing slash is added when missing). */
  prefix: string;
  /** Events older than this (relative to `now`) are dropped on write. */
  retentionMs?: number;
  casAttempts?: number;
  clock?: Clock;
  logger?: Logger;
}

interface Waiter {
  resolve: () => void;
  reject: (err: unknown) => void;
}

interface Batch {
  times: number[];
  waiters: Waiter[];
}

/** Throws FORMAT_NEWER when the key's flags say a newer release wrote it. */
function refuseNewer(key: string, flags: number): void {
  const format = kvFormatOf(flags);
  if (format.kind === 'newer')
    throw newerFormatError(`the budget ledger ${key}`, format.format, RECORD_FORMATS.consulKv);
}

/** Reads a stored value: the valid timestamps in ms; anything unreadable is skipped. */
export function parseLedgerValue(text: string): { times: number[]; malformed: boolean } {
  if (text.trim() === '') return { times: [], malformed: false };
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return { times: [], malformed: true };
  }
  if (!Array.isArray(parsed)) return { times: [], malformed: true };
  const times: number[] = [];
  let malformed = false;
  for (const item of parsed) {
    const t = typeof item === 'string' ? Date.parse(item) : Number.NaN;
    if (Number.isFinite(t)) times.push(t);
    else malformed = true;
  }
  times.sort((a, b) => a - b);
  return { times, malformed };
}

/** How many keys' last read or written entries are remembered. */
const SEEN_KEYS = 1_024;

/**
 * The entry this process last read or wrote of each key (null: absent), oldest forgotten first. A
 * write goes on it with check-and-set without reading first; Consul refuses the write when another
 * instance wrote the key since, and the write then reads. An entry never goes back to an older
 * ModifyIndex (a read answered after a later write of ours).
 */
class SeenEntries {
  private readonly entries = new RecentMap<string, KvEntry | null>(SEEN_KEYS);

  note(key: string, entry: KvEntry | undefined): void {
    const known = this.entries.get(key);
    if (entry === undefined && known !== undefined) return; // absent now? the next write finds out
    if (entry !== undefined && known && known.modifyIndex > entry.modifyIndex) return;
    this.entries.set(key, entry ?? null);
  }

  forget(key: string): void {
    this.entries.delete(key);
  }

  /** The entries of `keys` when every one is known (absent ones left out), else undefined. */
  all(keys: readonly string[]): Map<string, KvEntry> | undefined {
    const found = new Map<string, KvEntry>();
    for (const key of keys) {
      const entry = this.entries.get(key);
      if (entry === undefined) return undefined;
      if (entry !== null) found.set(key, entry);
    }
    return found;
  }
}

export class ConsulBudgetLedger implements BudgetLedger {
  private readonly consul: Consul;
  private readonly prefix: string;
  private readonly retentionMs: number;
  private readonly casAttempts: number;
  private readonly clock: Clock;
  private readonly log: Logger;
  /** What this process last read or wrote of each key, for the next write. */
  private readonly seen = new SeenEntries();
  /** Events waiting for the next write of each KV key, with their callers. */
  private pending = new Map<string, Batch>();
  private flushing = false;
  private conflicts = 0;

  constructor(opts: ConsulBudgetLedgerOptions) {
    this.consul = opts.consul;
    this.prefix = opts.prefix.endsWith('/') ? opts.prefix : `${opts.prefix}/`;
    this.retentionMs = opts.retentionMs ?? BUDGET_RETENTION_MS;
    this.casAttempts = Math.max(1, opts.casAttempts ?? DEFAULT_LEDGER_CAS_ATTEMPTS);
    this.clock = opts.clock ?? systemClock;
    this.log = (opts.logger ?? silentLogger()).child({ [F.component]: 'consul-budget-ledger' });
  }

  /** How many check-and-set writes lost a race so far (for tests and metrics). */
  get casConflicts(): number {
    return this.conflicts;
  }

  private kvKey(scopeKey: string): string {
    if (!isBudgetScopeKey(scopeKey)) {
      throw new ConsulAcmeError('INTERNAL', `budget ledger: ${JSON.stringify(scopeKey)} is not a valid scope key`);
    }
    return `${this.prefix}${scopeKey}`;
  }

  async record(scopeKey: string, at: Date): Promise<void> {
    const key = this.kvKey(scopeKey);
    if (!Number.isFinite(at.getTime()))
      throw new ConsulAcmeError('INTERNAL', `budget ledger: invalid event time for ${scopeKey}`);
    return new Promise<void>((resolve, reject) => {
      let batch = this.pending.get(key);
      if (!batch) {
        batch = { times: [], waiters: [] };
        this.pending.set(key, batch);
      }
      batch.times.push(at.getTime());
      batch.waiters.push({ resolve, reject });
      // After this turn of the event loop, so that the events recorded together go in one write.
      if (!this.flushing) {
        this.flushing = true;
        setImmediate(() => void this.flush());
      }
    });
  }

  async events(scopeKey: string, since: Date): Promise<Date[]> {
    const key = this.kvKey(scopeKey);
    return this.eventsIn(key, (await this.read([key])).get(key), since);
  }

  async eventsOf(scopeKeys: readonly string[], since: Date): Promise<Map<string, Date[]>> {
    const keys = scopeKeys.map((scopeKey) => this.kvKey(scopeKey));
    const entries = await this.read(keys);
    return new Map(scopeKeys.map((scopeKey, i) => [scopeKey, this.eventsIn(keys[i]!, entries.get(keys[i]!), since)]));
  }

  /** Reads `keys` together, and notes what was found for the next write. */
  private async read(keys: readonly string[]): Promise<Map<string, KvEntry>> {
    const entries = await kvGetMany(this.consul, keys);
    for (const key of keys) this.seen.note(key, entries.get(key));
    return entries;
  }

  /** The events at or after `since` in the entry read at `key` (none when it is missing). */
  private eventsIn(key: string, entry: KvEntry | undefined, since: Date): Date[] {
    if (!entry) return [];
    refuseNewer(key, entry.flags);
    const { times, malformed } = parseLedgerValue(entry.value);
    if (malformed) this.log.warn({ key }, 'budget ledger value partly unreadable; unreadable events ignored');
    return times.filter((t) => t >= since.getTime()).map((t) => new Date(t));
  }

  async prune(now: Date): Promise<number> {
    const entries = await kvList(this.consul, this.prefix);
    let deleted = 0;
    for (const [key, entry] of entries) {
      const scopeKey = key.slice(this.prefix.length);
      if (!key.startsWith(this.prefix) || !isBudgetScopeKey(scopeKey)) continue;
      if (kvFormatOf(entry.flags).kind === 'newer') continue; // a newer release's: left alone
      const stored = parseLedgerValue(entry.value);
      const kept = eventsToKeep(scopeKey, stored.times, now, this.retentionMs);
      if (kept.length > 0 && kept.length === stored.times.length && !stored.malformed) continue;
      this.seen.forget(key);
      if (kept.length === 0) {
        if (await kvDeleteIfUnchanged(this.consul, key, entry.modifyIndex)) deleted += 1;
        continue;
      }
      const value = JSON.stringify(kept.map((t) => new Date(t).toISOString()));
      if (!(await kvPut(this.consul, key, value, { cas: entry.modifyIndex, flags: RECORD_FORMATS.consulKv }))) {
        this.log.debug({ key }, 'budget ledger prune lost a race; the key is pruned next time');
      }
    }
    if (deleted > 0) this.log.debug({ deleted }, 'budget ledger keys pruned');
    return deleted;
  }

  /**
   * Writes the queued batches, all keys together, one round after another until none is left.
   * Never rejects: each round's outcome goes to the callers of its batches.
   */
  private async flush(): Promise<void> {
    try {
      while (this.pending.size > 0) {
        const round = this.pending;
        this.pending = new Map();
        const keys = [...round.keys()];
        for (let i = 0; i < keys.length; i += MAX_KEYS_PER_WRITE) {
          const chunk = keys.slice(i, i + MAX_KEYS_PER_WRITE);
          let outcomes: Map<string, unknown>;
          try {
            outcomes = await this.append(new Map(chunk.map((key) => [key, round.get(key)!.times])));
          } catch (err) {
            outcomes = new Map(chunk.map((key) => [key, err]));
          }
          for (const key of chunk) {
            const failure = outcomes.get(key);
            for (const w of round.get(key)!.waiters) {
              if (failure === undefined) w.resolve();
              else w.reject(failure);
            }
          }
        }
      }
    } finally {
      this.flushing = false;
    }
  }

  /**
   * One read → check-and-set loop adding each key's `times` to its stored list: the keys' entries
   * last seen (the first attempt, when every key is known) or read together (kvGetMany), written
   * in one transaction of check-and-set operations, so a lost race on any key writes none and the
   * round is read again. Resolves, for each key that was not
   * written, why: FORMAT_NEWER for a key a newer release wrote (the others are still written), or
   * a retryable STORE_CONFLICT after `casAttempts` lost races.
   */
  private async append(batches: ReadonlyMap<string, readonly number[]>): Promise<Map<string, unknown>> {
    const failures = new Map<string, unknown>();
    for (let attempt = 1; attempt <= this.casAttempts; attempt++) {
      const keys = [...batches.keys()].filter((key) => !failures.has(key));
      if (keys.length === 0) return failures;
      // The first attempt writes on what this process last saw of the keys, when it saw them all.
      const known = attempt === 1 ? this.seen.all(keys) : undefined;
      const entries = known ?? (await this.read(keys));
      const writes: KvWriteOp[] = [];
      for (const key of keys) {
        const entry = entries.get(key);
        try {
          if (entry) refuseNewer(key, entry.flags);
        } catch (err) {
          failures.set(key, err);
          continue;
        }
        const stored = entry ? parseLedgerValue(entry.value) : { times: [], malformed: false };
        if (stored.malformed) this.log.warn({ key }, 'budget ledger value partly unreadable; rewriting it');
        const oldest = this.clock.now().getTime() - this.retentionMs;
        const next = [...stored.times, ...batches.get(key)!].filter((t) => t >= oldest).sort((a, b) => a - b);
        const value = JSON.stringify(next.map((t) => new Date(t).toISOString()));
        writes.push({ verb: 'cas', key, value, index: entry?.modifyIndex ?? 0, flags: RECORD_FORMATS.consulKv });
      }
      if (writes.length === 0) return failures;
      const outcome = await kvTransact(
        this.consul,
        writes,
        `budget ledger write ${writes.map((w) => w.key).join(', ')}`,
      );
      if (outcome.committed) {
        for (const write of writes) {
          const modifyIndex = outcome.modifyIndex.get(write.key);
          if (write.verb === 'cas' && modifyIndex !== undefined)
            this.seen.note(write.key, { value: write.value, modifyIndex, flags: write.flags ?? 0, session: undefined });
        }
        return failures;
      }
      for (const key of keys) this.seen.forget(key);
      if (!outcome.failed.every((f) => f.what.includes('index is stale'))) {
        throw new ConsulAcmeError(
          'CONSUL_UNAVAILABLE',
          `budget ledger write: Consul refused it: ${outcome.failed.map((f) => f.what).join('; ')}`,
          { retryable: true },
        );
      }
      if (known !== undefined) continue; // what was known is out of date: read, and it is not a lost race
      this.conflicts += 1;
      this.log.debug(
        { keys: writes.map((w) => w.key), [F.attempt]: attempt },
        'budget ledger write lost a race; retrying',
      );
    }
    for (const key of batches.keys()) {
      if (failures.has(key)) continue;
      const lost = new ConsulAcmeError(
        'STORE_CONFLICT',
        `budget ledger ${key}: check-and-set lost ${this.casAttempts} races in a row; event not recorded`,
        { retryable: true },
      );
      failures.set(key, lost);
    }
    return failures;
  }
}
