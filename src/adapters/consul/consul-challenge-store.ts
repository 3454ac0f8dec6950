/**
 * HTTP-01 key authorizations in Consul KV under `prefix`, one key per token, shared by every
 * instance. Each key's `flags` holds the time it was put (Unix milliseconds; a PUT without
 * `?flags` resets them to 0, docs/protocols.md §1.6), so `prune` can delete what a crash left.
 *
 * Reads are served from a local mirror of the whole folder, so that a flood of requests for
 * unknown tokens costs Consul almost nothing (docs/protocols.md §1.12 has the figures):
 * - `start()` keeps the mirror current with a blocking query on the folder (`?recurse`). The
 *   folder holds only the tokens in flight, so each return is small.
 * - A token put or deleted by this instance is in (or out of) its mirror at once.
 * - A token in the mirror is answered without a read. A token not in it is unknown if the mirror
 *   was confirmed within the last `missFreshnessMs` (1 s); otherwise the folder is read again
 *   first. Those reads are single-flight: however many misses arrive together, one read is in
 *   flight, and they all wait for it. So for unknown tokens Consul sees at most about one read a
 *   second, and none for a known token.
 * - A failed read is remembered for `missFreshnessMs` too: during an outage unknown tokens get
 *   the error (the responder answers 503) without a read each, and known tokens still answer.
 * - Reads are applied only if their X-Consul-Index is not older than the mirror's, and writes
 *   this instance made after a read was sent are laid over it, so a slow read never hides a newer
 *   token.
 * - A recursive read leaves out what the token may not read and answers an empty folder, just as
 *   when nothing is in flight (§1.6). When the folder reads empty, the folder key itself is read
 *   alone at most once a minute: a 403 there makes every miss fail with CONSUL_PERMISSION_DENIED
 *   instead of looking like an unknown token.
 *
 * - A miss waits up to 250 ms for the watch's next return while the watch runs (in a blocking
 *   query, or between two when the folder is busy): a token another instance put a moment ago
 *   wakes the query and arrives with that return. This closes the race in which the CA's request
 *   (or a pre-flight probe) reaches this instance before the put of the instance that placed the
 *   order reached this instance's mirror; an unknown token costs 250 ms, not a read.
 *
 * What this costs: a token put by another instance is seen as soon as the watch returns (a few
 * milliseconds after the write, on a healthy agent), and in any case by a miss more than
 * `missFreshnessMs` after the put: any read confirmed later than the put holds it. Until then a
 * miss for it may answer "unknown".
 */
import { exponentialSchedule, retryDelayMs } from '../../domain/backoff.js';
import { isChallengeToken } from '../../domain/challenge.js';
import { AbortedError, ConsulAcmeError, describeError } from '../../errors.js';
import { F, silentLogger, type Logger } from '../../logging.js';
import type { ChallengeStore } from '../../ports/challenge-store.js';
import { systemClock, type Clock } from '../../ports/clock.js';
import { blockingGet, classifyConsulError, sleep, TokenBucket, type Consul } from './consul-client.js';
import { kvDelete, kvDeleteIfUnchanged, kvGet, kvList, kvPut, type KvItem } from './consul-kv.js';

/** A miss is answered without a read when the mirror was confirmed this recently. */
export const DEFAULT_CHALLENGE_MISS_FRESHNESS_MS = 1_000;
export const DEFAULT_CHALLENGE_WATCH_WAIT_SECONDS = 300;
/**
 * The folder changes with issuance only; a folder changing all the time is re-read at most 20
 * times a second, so the mirror lags a busy folder by 50 ms at most.
 */
export const DEFAULT_CHALLENGE_WATCH_REQUESTS_PER_SECOND = 20;
/** How long a miss waits for a watch that is between two queries to catch up. */
export const CHALLENGE_WATCH_CATCH_UP_MS = 250;
/** How often an empty folder is checked for an ACL refusal. */
export const CHALLENGE_PERMISSION_PROBE_INTERVAL_MS = 60_000;

export interface ConsulChallengeStoreOptions {
  consul: Consul;
  /** KV folder, e.g. `consul-acme/challenges/` (a trailing slash is added when missing). */
  prefix: string;
  missFreshnessMs?: number;
  /** How long each blocking query of the watch may wait (Consul caps it at 600). */
  watchWaitSeconds?: number;
  watchRequestsPerSecond?: number;
  /** Delay after consecutive watch errors: minMs, doubling, capped at maxMs. */
  backoff?: { minMs?: number; maxMs?: number };
  /** For the put times in `flags`. */
  clock?: Clock;
  logger?: Logger;
}

/** A write this instance made, laid over reads sent before it completed. */
interface LocalWrite {
  /** undefined: deleted. */
  value: string | undefined;
  seq: number;
}

const monotonicMs = (): number => performance.now();

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve = (): void => undefined;
  const promise = new Promise<void>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

export class ConsulChallengeStore implements ChallengeStore {
  private readonly consul: Consul;
  private readonly prefix: string;
  private readonly missFreshnessMs: number;
  private readonly watchWaitSeconds: number;
  private readonly watchRequestsPerSecond: number;
  private readonly backoffMinMs: number;
  private readonly backoffMaxMs: number;
  private readonly clock: Clock;
  private readonly log: Logger;

  private mirror = new Map<string, string>();
  /** X-Consul-Index of the read the mirror comes from. */
  private mirrorIndex = 0;
  /** When (monotonic ms) the mirror was last known to match Consul. */
  private confirmedAt = Number.NEGATIVE_INFINITY;
  private readonly localWrites = new Map<string, LocalWrite>();
  /** Tokens this instance put and has not deleted: the validations it has in flight. */
  private readonly inFlight = new Map<string, string>();
  private writeSeq = 0;
  private refreshing: Promise<void> | undefined;
  private lastFailure: { at: number; err: ConsulAcmeError } | undefined;
  private permission: { checkedAt: number; err: ConsulAcmeError | undefined } | undefined;
  private reads = 0;
  private watchAbort: AbortController | undefined;
  private watching: Promise<void> | undefined;
  /**
   * The watch's state: waiting in a blocking query for changes after the mirror's index, between two
   * queries, or backing off.
   */
  private watchState: 'stopped' | 'waiting' | 'between' | 'failing' = 'stopped';
  /** Resolved (and replaced) each time the watch applies a return. */
  private watchApplied = deferred();

  constructor(opts: ConsulChallengeStoreOptions) {
    this.consul = opts.consul;
    this.prefix = opts.prefix.endsWith('/') ? opts.prefix : `${opts.prefix}/`;
    this.missFreshnessMs = opts.missFreshnessMs ?? DEFAULT_CHALLENGE_MISS_FRESHNESS_MS;
    this.watchWaitSeconds = opts.watchWaitSeconds ?? DEFAULT_CHALLENGE_WATCH_WAIT_SECONDS;
    this.watchRequestsPerSecond = opts.watchRequestsPerSecond ?? DEFAULT_CHALLENGE_WATCH_REQUESTS_PER_SECOND;
    this.backoffMinMs = opts.backoff?.minMs ?? 1_000;
    this.backoffMaxMs = opts.backoff?.maxMs ?? 30_000;
    this.clock = opts.clock ?? systemClock;
    this.log = (opts.logger ?? silentLogger()).child({ [F.component]: 'consul-challenge-store' });
  }

  /** How many times the folder was read (watch returns, refreshes and permission probes); for tests and metrics. */
  get folderReads(): number {
    return this.reads;
  }

  private key(token: string): string {
    return `${this.prefix}${token}`;
  }

  /**
   * Starts keeping the mirror current in the background (a blocking query on the folder), until
   * `signal` aborts or `close()`. Idempotent. Without it the store still works: misses refresh
   * the mirror at most once every `missFreshnessMs`.
   */
  start(signal?: AbortSignal): void {
    if (this.watching) return;
    const controller = new AbortController();
    if (signal) {
      if (signal.aborted) return;
      signal.addEventListener('abort', () => controller.abort(), { once: true });
    }
    this.watchAbort = controller;
    this.watchState = 'between';
    this.watching = this.watch(controller.signal).catch((err: unknown) => {
      this.log.error({ [F.err]: describeError(err) }, 'challenge watch ended unexpectedly');
    });
  }

  /** Stops the background watch and waits for it to end. */
  async close(): Promise<void> {
    this.watchAbort?.abort();
    await this.watching;
  }

  /** Writes the key authorization with the time in `flags`; resolves only when Consul answered `true`. */
  async put(token: string, keyAuthorization: string): Promise<void> {
    if (!isChallengeToken(token)) {
      throw new ConsulAcmeError(
        'INTERNAL',
        'challenge store put: token is not base64url; refusing to build a KV key from it',
      );
    }
    await kvPut(this.consul, this.key(token), keyAuthorization, { flags: this.clock.nowMs() });
    this.writeLocally(token, keyAuthorization);
    this.inFlight.set(token, keyAuthorization);
  }

  async get(token: string): Promise<string | undefined> {
    if (!isChallengeToken(token)) return undefined;
    const known = this.mirror.get(token);
    if (known !== undefined) return known;
    if (monotonicMs() - this.confirmedAt < this.missFreshnessMs) {
      this.throwIfRefused();
      // A token another instance put a moment ago may be on its way: a watch in a blocking query
      // returns as soon as it lands, and one between two queries is about to ask. Let it catch up.
      if (this.watchState === 'between' || this.watchState === 'waiting') {
        await Promise.race([this.watchApplied.promise, sleep(CHALLENGE_WATCH_CATCH_UP_MS)]);
        return this.mirror.get(token);
      }
      return undefined;
    }
    if (this.lastFailure && monotonicMs() - this.lastFailure.at < this.missFreshnessMs) throw this.lastFailure.err;
    await this.refresh();
    this.throwIfRefused();
    return this.mirror.get(token);
  }

  async delete(token: string): Promise<void> {
    if (!isChallengeToken(token)) return;
    this.inFlight.delete(token);
    await kvDelete(this.consul, this.key(token));
    this.writeLocally(token, undefined);
  }

  /** Puts again the tokens in flight here that a fresh read of the folder no longer shows. */
  async reassert(): Promise<number> {
    if (this.inFlight.size === 0) return 0;
    const entries = await kvList(this.consul, this.prefix);
    let restored = 0;
    for (const [token, keyAuthorization] of [...this.inFlight]) {
      if (entries.has(this.key(token)) || !this.inFlight.has(token)) continue;
      await kvPut(this.consul, this.key(token), keyAuthorization, { flags: this.clock.nowMs() });
      restored += 1;
    }
    if (restored > 0) this.log.warn({ restored }, 'challenge tokens in flight were missing from Consul; put again');
    return restored;
  }

  /**
   * Deletes the tokens put more than `olderThanMs` ago (check-and-set, so a token put again
   * meanwhile stays). A token without a put time (written without `flags`) is given the current
   * time, so it goes one `olderThanMs` later. Resolves how many it deleted.
   */
  async prune(olderThanMs: number): Promise<number> {
    const entries = await kvList(this.consul, this.prefix);
    const now = this.clock.nowMs();
    let deleted = 0;
    for (const [key, entry] of entries) {
      const token = key.slice(this.prefix.length);
      if (!key.startsWith(this.prefix) || !isChallengeToken(token)) continue;
      if (entry.flags === 0) {
        await kvPut(this.consul, key, entry.value, { cas: entry.modifyIndex, flags: now });
      } else if (entry.flags < now - olderThanMs) {
        if (await kvDeleteIfUnchanged(this.consul, key, entry.modifyIndex)) {
          this.writeLocally(token, undefined);
          this.inFlight.delete(token);
          deleted += 1;
        }
      }
    }
    if (deleted > 0) this.log.info({ deleted }, 'challenge tokens left behind were deleted');
    return deleted;
  }

  private writeLocally(token: string, value: string | undefined): void {
    this.writeSeq += 1;
    this.localWrites.set(token, { value, seq: this.writeSeq });
    if (value === undefined) this.mirror.delete(token);
    else this.mirror.set(token, value);
  }

  private throwIfRefused(): void {
    const refused = this.permission?.err;
    if (refused) throw refused;
  }

  /** Reads the folder once; concurrent callers share the read. Rejects with the classified error. */
  private refresh(): Promise<void> {
    this.refreshing ??= (async () => {
      const sentAt = monotonicMs();
      const seq = this.writeSeq;
      try {
        this.reads += 1;
        const result = await blockingGet<KvItem[] | undefined>(
          this.consul,
          'kv.get',
          { key: this.prefix, recurse: true },
          { waitSeconds: 1 },
        );
        this.apply(result.body, result.consulIndex, seq, sentAt, false);
        this.lastFailure = undefined;
        // Something was readable: the token may read the folder.
        if (this.mirror.size > 0) this.permission = undefined;
        else await this.probePermission();
      } catch (err) {
        const classified = classifyConsulError(err, `kv list ${this.prefix}`);
        this.lastFailure = { at: monotonicMs(), err: classified };
        throw classified;
      }
    })().finally(() => {
      this.refreshing = undefined;
    });
    return this.refreshing;
  }

  /** An empty folder may be one the token may not read: ask for the folder key itself (403 or not). */
  private async probePermission(): Promise<void> {
    if (this.permission && monotonicMs() - this.permission.checkedAt < CHALLENGE_PERMISSION_PROBE_INTERVAL_MS) return;
    try {
      this.reads += 1;
      await kvGet(this.consul, this.prefix);
      this.permission = { checkedAt: monotonicMs(), err: undefined };
    } catch (err) {
      const classified = classifyConsulError(err, `kv get ${this.prefix}`);
      if (classified.code === 'CONSUL_PERMISSION_DENIED') {
        this.permission = { checkedAt: monotonicMs(), err: classified };
        this.log.error({ [F.err]: describeError(classified) }, 'the Consul token may not read the challenge folder');
      }
    }
  }

  /**
   * Replaces the mirror with a read's content, unless an older read than the mirror's; writes made
   * since it was sent win.
   */
  private apply(items: KvItem[] | undefined, consulIndex: number, seq: number, at: number, force: boolean): void {
    if (!force && consulIndex < this.mirrorIndex) return;
    const next = new Map<string, string>();
    for (const item of Array.isArray(items) ? items : []) {
      const token = typeof item.Key === 'string' ? item.Key.slice(this.prefix.length) : '';
      if (item.Key?.startsWith(this.prefix) && isChallengeToken(token)) next.set(token, item.Value ?? '');
    }
    for (const [token, write] of this.localWrites) {
      if (write.seq <= seq) {
        this.localWrites.delete(token);
        continue;
      }
      if (write.value === undefined) next.delete(token);
      else next.set(token, write.value);
    }
    this.mirror = next;
    this.mirrorIndex = consulIndex;
    this.confirmedAt = Math.max(this.confirmedAt, at);
  }

  private async watch(signal: AbortSignal): Promise<void> {
    const bucket = new TokenBucket({ ratePerSecond: this.watchRequestsPerSecond });
    const schedule = exponentialSchedule(this.backoffMinMs, this.backoffMaxMs);
    let index = 0;
    let failures = 0;
    while (!signal.aborted) {
      if (!(await bucket.take(signal))) break;
      const seq = this.writeSeq;
      let result;
      try {
        this.reads += 1;
        this.watchState = index > 0 && index >= this.mirrorIndex ? 'waiting' : 'between';
        result = await blockingGet<KvItem[] | undefined>(
          this.consul,
          'kv.get',
          { key: this.prefix, recurse: true },
          { index, waitSeconds: this.watchWaitSeconds, signal },
        );
      } catch (err) {
        if (signal.aborted || err instanceof AbortedError) break;
        this.watchState = 'failing';
        failures += 1;
        const retryInMs = retryDelayMs(failures, schedule);
        this.log.warn(
          { [F.err]: describeError(err), [F.attempt]: failures, [F.retryInMs]: retryInMs },
          'challenge watch failed; retrying',
        );
        if (!(await sleep(retryInMs, signal))) break;
        continue;
      }
      failures = 0;
      this.watchState = 'between';
      // The content is as of the answer, not of the request: it confirms the mirror now.
      this.apply(result.body, result.consulIndex, seq, monotonicMs(), result.indexReset);
      index = result.index;
      const applied = this.watchApplied;
      this.watchApplied = deferred();
      applied.resolve();
    }
    this.watchState = 'stopped';
  }
}
