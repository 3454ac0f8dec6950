/**
 * Keeps every configured sink in step with the certificate store, without ever holding up or
 * failing an issuance.
 *
 * - `notify(change)` queues the change for every sink and returns at once. Each sink keeps at most
 *   one pending change per hostname: the latest wins, since it describes the store as it is now.
 * - Each sink works through its changes one at a time (sinks run side by side, so at most one
 *   operation per sink is in flight). A failed change stays queued and is retried after
 *   `retryDelayMs(failures, retryScheduleMs)`; a newer change for the same hostname replaces it.
 * - A full re-sync (`requestResync()`, at start, after a sink recovers from failing, and every
 *   `resyncIntervalMs`) reads a snapshot of the store and hands it to each sink; it retires the
 *   queued changes that were notified before the snapshot was read, and is retried like a change.
 * - `status()` and `failingLongerThan()` show each sink's state to /status, metrics and the
 *   certificate health check; `stop()` waits briefly for operations in flight, then aborts them.
 */
import { exponentialSchedule, retryDelayMs } from '../domain/backoff.js';
import { describeError } from '../errors.js';
import { EVENTS, F, type Logger } from '../logging.js';
import type { CertificateSink, SinkChange, SinkSnapshot } from '../ports/certificate-sink.js';
import { systemClock, type Clock } from '../ports/clock.js';

/** 1 s, 2 s, 4 s, … up to 5 min between attempts of a failing sink. */
export const DEFAULT_SINK_RETRY_SCHEDULE_MS = exponentialSchedule(1_000, 300_000);
export const DEFAULT_SINK_STOP_TIMEOUT_MS = 5_000;

/** One sink as GET /status shows it. */
export interface SinkStatus {
  name: string;
  /** Hostnames whose latest change this sink has not applied yet (queued or being retried). */
  pending: number;
  /** A full re-sync is queued or being retried. */
  resyncPending: boolean;
  /** Consecutive failures of the change failing longest; 0 when the sink is healthy. */
  failures: number;
  /** When the sink started failing; undefined while it is healthy. */
  failingSince: string | undefined;
  /** The last error, kept after the sink recovers (see `failingSince` for whether it still fails). */
  lastError: string | undefined;
  lastErrorAt: string | undefined;
  lastSuccessAt: string | undefined;
  lastResyncAt: string | undefined;
  /** When the next retry of a failing change is due. */
  nextRetryAt: string | undefined;
}

export type SinkOutcome = 'applied' | 'failed' | 'resynced' | 'resync_failed';

export interface SinkRunnerOptions {
  sinks: readonly CertificateSink[];
  /** Reads what the store holds now; called for every re-sync (shared by sinks that re-sync together). */
  snapshot: () => Promise<SinkSnapshot>;
  logger: Logger;
  clock?: Clock;
  retryScheduleMs?: readonly number[];
  /** A full re-sync this often besides the one at start; 0 or undefined: none. */
  resyncIntervalMs?: number;
  /** Told about every operation's outcome (metrics). */
  onApplied?: (sink: string, outcome: SinkOutcome) => void;
}

interface Work {
  failures: number;
  dueAt: number;
  firstFailedAt: number | undefined;
}

interface PendingChange extends Work {
  change: SinkChange;
  /** Order of notification, to tell which changes a snapshot already covers. */
  sequence: number;
}

interface Lane {
  sink: CertificateSink;
  log: Logger;
  pending: Map<string, PendingChange>;
  resync: Work | undefined;
  running: Promise<void> | undefined;
  /** Set when new work arrives while the lane drains, so it looks again before it sleeps. */
  kicked: boolean;
  timer: NodeJS.Timeout | undefined;
  failingSince: number | undefined;
  lastError: string | undefined;
  lastErrorAt: number | undefined;
  lastSuccessAt: number | undefined;
  lastResyncAt: number | undefined;
}

function hostnameOf(change: SinkChange): string {
  return change.kind === 'stored' ? change.certificate.hostname : change.hostname;
}

function iso(ms: number | undefined): string | undefined {
  return ms === undefined ? undefined : new Date(ms).toISOString();
}

export class SinkRunner {
  private readonly lanes: Lane[];
  private readonly clock: Clock;
  private readonly schedule: readonly number[];
  private readonly abort = new AbortController();
  private sequence = 0;
  private snapshotInFlight: { sequence: number; promise: Promise<SinkSnapshot> } | undefined;
  private interval: NodeJS.Timeout | undefined;
  private stopping = false;

  constructor(private readonly options: SinkRunnerOptions) {
    this.clock = options.clock ?? systemClock;
    this.schedule = options.retryScheduleMs ?? DEFAULT_SINK_RETRY_SCHEDULE_MS;
    this.lanes = options.sinks.map((sink) => ({
      sink,
      log: options.logger.child({ [F.component]: 'sinks', [F.sink]: sink.name }),
      pending: new Map(),
      resync: undefined,
      running: undefined,
      kicked: false,
      timer: undefined,
      failingSince: undefined,
      lastError: undefined,
      lastErrorAt: undefined,
      lastSuccessAt: undefined,
      lastResyncAt: undefined,
    }));
  }

  /** The configured sinks' names, in order. */
  get sinkNames(): string[] {
    return this.lanes.map((l) => l.sink.name);
  }

  /** Re-syncs every sink now, then every `resyncIntervalMs`. Call once, at start. */
  start(): void {
    this.requestResync();
    const every = this.options.resyncIntervalMs;
    if (every !== undefined && every > 0 && this.interval === undefined) {
      this.interval = setInterval(() => this.requestResync(), every);
      this.interval.unref();
    }
  }

  /** Queues `change` for every sink; returns at once. */
  notify(change: SinkChange): void {
    if (this.stopping) return;
    const hostname = hostnameOf(change);
    const sequence = ++this.sequence;
    const now = this.clock.now().getTime();
    for (const lane of this.lanes) {
      const previous = lane.pending.get(hostname);
      // A newer change is tried at once, but keeps the count of failures so a broken sink still backs off.
      lane.pending.set(hostname, {
        change,
        sequence,
        failures: previous?.failures ?? 0,
        firstFailedAt: previous?.firstFailedAt,
        dueAt: now,
      });
      this.kick(lane);
    }
  }

  /** Queues a full re-sync of every sink (one already queued is brought forward). */
  requestResync(): void {
    if (this.stopping) return;
    const now = this.clock.now().getTime();
    for (const lane of this.lanes) {
      lane.resync = lane.resync ? { ...lane.resync, dueAt: Math.min(lane.resync.dueAt, now) } : this.fresh(now);
      this.kick(lane);
    }
  }

  status(): SinkStatus[] {
    return this.lanes.map((lane) => {
      const works: Work[] = [...lane.pending.values(), ...(lane.resync ? [lane.resync] : [])];
      const failing = works.filter((w) => w.failures > 0);
      return {
        name: lane.sink.name,
        pending: lane.pending.size,
        resyncPending: lane.resync !== undefined,
        failures: Math.max(0, ...failing.map((w) => w.failures)),
        failingSince: iso(lane.failingSince),
        lastError: lane.lastError,
        lastErrorAt: iso(lane.lastErrorAt),
        lastSuccessAt: iso(lane.lastSuccessAt),
        lastResyncAt: iso(lane.lastResyncAt),
        nextRetryAt: failing.length === 0 ? undefined : iso(Math.min(...failing.map((w) => w.dueAt))),
      };
    });
  }

  /** The sinks that have been failing for at least `thresholdMs` (for the certificate health check). */
  failingLongerThan(thresholdMs: number): SinkStatus[] {
    const now = this.clock.now().getTime();
    const names = new Set(
      this.lanes
        .filter((l) => l.failingSince !== undefined && now - l.failingSince >= thresholdMs)
        .map((l) => l.sink.name),
    );
    return this.status().filter((s) => names.has(s.name));
  }

  /** Waits up to `timeoutMs` for the operations in flight, then aborts them. Queued changes are dropped. Idempotent. */
  async stop(timeoutMs = DEFAULT_SINK_STOP_TIMEOUT_MS): Promise<void> {
    this.stopping = true;
    if (this.interval) clearInterval(this.interval);
    for (const lane of this.lanes) clearTimeout(lane.timer);
    const running = Promise.all(this.lanes.map((l) => l.running ?? Promise.resolve()));
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, timeoutMs);
    });
    await Promise.race([running, timedOut]);
    clearTimeout(timer);
    this.abort.abort();
    await running;
  }

  private fresh(now: number): Work {
    return { failures: 0, dueAt: now, firstFailedAt: undefined };
  }

  private kick(lane: Lane): void {
    if (this.stopping) return;
    if (lane.running) {
      lane.kicked = true;
      return;
    }
    clearTimeout(lane.timer);
    lane.timer = undefined;
    lane.running = this.drain(lane).finally(() => {
      lane.running = undefined;
      if (lane.kicked) this.kick(lane);
    });
  }

  private async drain(lane: Lane): Promise<void> {
    for (;;) {
      lane.kicked = false;
      if (this.stopping) return;
      const now = this.clock.now().getTime();
      if (lane.resync && lane.resync.dueAt <= now) {
        await this.runResync(lane, lane.resync);
        continue;
      }
      const due = [...lane.pending.entries()]
        .filter(([, p]) => p.dueAt <= now)
        .sort(([, a], [, b]) => a.dueAt - b.dueAt || a.sequence - b.sequence)[0];
      if (due) {
        await this.runChange(lane, due[0], due[1]);
        continue;
      }
      const next = Math.min(...[...lane.pending.values()].map((p) => p.dueAt), lane.resync?.dueAt ?? Infinity);
      if (Number.isFinite(next)) {
        lane.timer = setTimeout(() => this.kick(lane), Math.max(0, next - now));
        lane.timer.unref();
      }
      return;
    }
  }

  private async runChange(lane: Lane, hostname: string, item: PendingChange): Promise<void> {
    const { change } = item;
    try {
      await lane.sink.apply(change, this.abort.signal);
      if (lane.pending.get(hostname) === item) lane.pending.delete(hostname);
      this.options.onApplied?.(lane.sink.name, 'applied');
      lane.log.info(
        {
          [F.event]: EVENTS.sinkApplied,
          [F.hostname]: hostname,
          change: change.kind,
          [F.reason]: change.kind === 'stored' ? change.reason : 'retired',
        },
        'sink applied a change',
      );
      this.succeeded(lane, false);
    } catch (err) {
      if (this.abort.signal.aborted) return;
      // A newer change notified meanwhile has its own due time; only this change backs off.
      const retryInMs = this.failed(lane, item, err, lane.pending.get(hostname) === item);
      this.options.onApplied?.(lane.sink.name, 'failed');
      lane.log.warn(
        {
          [F.event]: EVENTS.sinkFailed,
          [F.hostname]: hostname,
          change: change.kind,
          [F.attempt]: item.failures,
          [F.retryInMs]: retryInMs,
          [F.err]: describeError(err),
        },
        'sink failed to apply a change; retrying',
      );
    }
  }

  private async runResync(lane: Lane, work: Work): Promise<void> {
    try {
      const { sequence, promise } = this.sharedSnapshot();
      const snapshot = await promise;
      await lane.sink.resync(snapshot, this.abort.signal);
      if (lane.resync === work) lane.resync = undefined;
      // The snapshot covers every change notified before it was read.
      for (const [hostname, p] of lane.pending) if (p.sequence <= sequence) lane.pending.delete(hostname);
      lane.lastResyncAt = this.clock.now().getTime();
      this.options.onApplied?.(lane.sink.name, 'resynced');
      lane.log.info(
        {
          [F.event]: EVENTS.sinkResynced,
          certificates: snapshot.certificates.length,
          unreadable: snapshot.unreadable.length,
        },
        'sink re-synced with the store',
      );
      this.succeeded(lane, true);
    } catch (err) {
      if (this.abort.signal.aborted) return;
      const retryInMs = this.failed(lane, work, err, lane.resync === work);
      this.options.onApplied?.(lane.sink.name, 'resync_failed');
      lane.log.warn(
        {
          [F.event]: EVENTS.sinkFailed,
          change: 'resync',
          [F.attempt]: work.failures,
          [F.retryInMs]: retryInMs,
          [F.err]: describeError(err),
        },
        'sink re-sync failed; retrying',
      );
    }
  }

  /** One store snapshot for every sink that asks while it is being read. */
  private sharedSnapshot(): { sequence: number; promise: Promise<SinkSnapshot> } {
    if (this.snapshotInFlight) return this.snapshotInFlight;
    const inFlight = { sequence: this.sequence, promise: Promise.resolve().then(() => this.options.snapshot()) };
    this.snapshotInFlight = inFlight;
    const clear = (): void => {
      if (this.snapshotInFlight === inFlight) this.snapshotInFlight = undefined;
    };
    inFlight.promise.then(clear, clear);
    return inFlight;
  }

  /** Records a failure of `work`; returns the delay before its retry. */
  private failed(lane: Lane, work: Work, err: unknown, reschedule: boolean): number {
    const now = this.clock.now().getTime();
    work.failures += 1;
    work.firstFailedAt ??= now;
    const delay = retryDelayMs(work.failures, this.schedule);
    if (reschedule) work.dueAt = now + delay;
    lane.failingSince ??= now;
    lane.lastError = describeError(err);
    lane.lastErrorAt = now;
    return delay;
  }

  private succeeded(lane: Lane, wasResync: boolean): void {
    const now = this.clock.now().getTime();
    lane.lastSuccessAt = now;
    if (lane.failingSince === undefined) return;
    const stillFailing =
      [...lane.pending.values()].some((p) => p.failures > 0) || (lane.resync !== undefined && lane.resync.failures > 0);
    if (stillFailing) return;
    lane.log.info(
      { [F.event]: EVENTS.sinkRecovered, failing_since: iso(lane.failingSince) },
      'sink recovered; re-syncing it',
    );
    lane.failingSince = undefined;
    // What failed may have left the sink behind in ways a single change does not repair.
    if (!wasResync) lane.resync ??= this.fresh(now);
  }
}
