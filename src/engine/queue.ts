/**
 * The issuance queue: every certificate job waits here, and nowhere else. It keeps at most one job
 * per hostname (a second submit does nothing), runs at most `concurrency` jobs at once, starts due
 * emergencies first, and decides when a job runs again:
 *
 * - `done`: the job leaves the queue (and its persisted backoff is cleared).
 * - `busy` (another instance holds the lock): again after `busyRecheckMs`.
 * - `deferred` (a spent budget, a CA pause, a route not yet live): again at its `until`, not a
 *   failure, nothing persisted.
 * - a thrown infrastructure fault (store, Consul, a lost lock; errors.ts isInfrastructureFault):
 *   again on the short `faultRetryScheduleMs`, not counted as the name's failure, not persisted, so
 *   the name recovers as soon as the infrastructure does.
 * - any other thrown error: a failure of the name, counted, and retried after the retry schedule's
 *   delay (or the CA's longer Retry-After); persisted in the state store, so restarts and other
 *   instances keep the backoff.
 *
 * Nothing costs anything while nothing is due: waiting jobs sit in a heap ordered by due time,
 * one clock timer wakes the queue for the earliest, and a job is never taken before its time.
 */
import { retryDelayMs } from '../domain/backoff.js';
import { AbortedError, AcmeProblemError, ConsulAcmeError, describeError, isInfrastructureFault } from '../errors.js';
import { EVENTS, F, type Logger } from '../logging.js';
import type { CertificateState, CertificateStateStore } from '../ports/certificate-state-store.js';
import type { Clock, Timer } from '../ports/clock.js';
import { MinHeap } from './heap.js';

export type JobOutcome =
  /** The work was done or found unnecessary. */
  | { kind: 'done' }
  /** Another instance holds the certificate's lock; look again later. */
  | { kind: 'busy' }
  /** Not now, and not a failure: a budget, a CA pause or a route not yet live ends at `until`. */
  | { kind: 'deferred'; until: Date; why: string };

/** What the handler is told about the run it is asked to do. */
export interface JobRun {
  hostname: string;
  /** The planner's reason for the job, e.g. `Missing`, `Expiring`. */
  reason: string;
  /** 1 for the first attempt, n+1 after n consecutive failures of the name. */
  attempt: number;
  /** Aborted when the job is cancelled or the queue stops. */
  signal: AbortSignal;
}

export type JobHandler = (run: JobRun) => Promise<JobOutcome>;

export interface SubmitOptions {
  reason: string;
  /** Emergencies (expired, nearly expired) start before routine work that is due. */
  emergency?: boolean;
  /** Do not start before this time. */
  notBefore?: Date;
}

/** 1 s growing to 30 s: how soon work hit by an infrastructure fault runs again. */
export const DEFAULT_FAULT_RETRY_SCHEDULE_MS: readonly number[] = Object.freeze([1_000, 2_000, 5_000, 10_000, 30_000]);
export const DEFAULT_BUSY_RECHECK_MS = 30_000;

export interface QueueOptions {
  concurrency: number;
  /** Delay before retry n after n consecutive failures of a name (the last entry repeats). */
  retryScheduleMs: readonly number[];
  /** Delay before retrying work hit by an infrastructure fault; default DEFAULT_FAULT_RETRY_SCHEDULE_MS. */
  faultRetryScheduleMs?: readonly number[];
  /** Delay before looking again at a certificate another instance was working on. */
  busyRecheckMs?: number;
  clock: Clock;
  logger: Logger;
  /**
   * Where failures and the next attempt time are persisted, so that a restart or another
   * instance keeps a failing name's backoff. Optional: without it the backoff lives in memory.
   */
  state?: CertificateStateStore;
}

/**
 * - `queued`: submitted, never run here yet (maybe not due yet: spread renewals).
 * - `running`: the handler is working on it.
 * - `deferred`: held until `dueAt` by a budget, a CA pause, a route not yet live, or an
 *   infrastructure fault (`waitingFor` says which).
 * - `backoff`: the name failed `consecutiveFailures` times in a row; retried at `dueAt`.
 */
export type JobPhase = 'queued' | 'running' | 'deferred' | 'backoff';

export interface JobState {
  hostname: string;
  phase: JobPhase;
  reason: string;
  emergency: boolean;
  consecutiveFailures: number;
  lastError: string | undefined;
  /** Why a deferred job waits; cleared when it runs again. */
  waitingFor: string | undefined;
  /** When a job that is not running may start. */
  dueAt: Date;
}

interface Entry extends JobState {
  controller: AbortController | undefined;
  /** Bumped on every reschedule, so that heap nodes from before are recognised as stale. */
  generation: number;
  /** Whether the persisted state was consulted before the first run. */
  stateLoaded: boolean;
  faultRetries: number;
}

interface HeapNode {
  entry: Entry;
  generation: number;
  dueAtMs: number;
  emergency: boolean;
  seq: number;
}

export class IssuanceQueue {
  private readonly entries = new Map<string, Entry>();
  /** Jobs not yet due, earliest first. */
  private readonly waiting = new MinHeap<HeapNode>(
    (a, b) => a.dueAtMs < b.dueAtMs || (a.dueAtMs === b.dueAtMs && a.seq < b.seq),
  );
  /** Jobs due now: emergencies first, then the longest due. */
  private readonly ready = new MinHeap<HeapNode>(
    (a, b) =>
      (a.emergency && !b.emergency) ||
      (a.emergency === b.emergency && (a.dueAtMs < b.dueAtMs || (a.dueAtMs === b.dueAtMs && a.seq < b.seq))),
  );
  private seq = 0;
  private running = 0;
  private timer: { at: number; handle: Timer } | undefined;
  private stopped = false;
  private readonly idleWaiters: Array<() => void> = [];
  private readonly log: Logger;
  private readonly faultSchedule: readonly number[];

  constructor(
    private readonly handler: JobHandler,
    private readonly options: QueueOptions,
  ) {
    this.log = options.logger.child({ [F.component]: 'queue' });
    this.faultSchedule = options.faultRetryScheduleMs ?? DEFAULT_FAULT_RETRY_SCHEDULE_MS;
  }

  /** Adds a job unless one for the same hostname is already queued or running. Returns whether it was added. */
  submit(hostname: string, options: SubmitOptions): boolean {
    if (this.stopped) return false;
    const now = this.options.clock.nowMs();
    const existing = this.entries.get(hostname);
    if (existing) {
      // An emergency may pull a waiting job forward; it never starts a second job.
      if (existing.phase !== 'running' && options.emergency && !existing.emergency) {
        existing.emergency = true;
        this.schedule(existing, Math.min(existing.dueAt.getTime(), now));
        this.pump();
      }
      return false;
    }
    const notBefore = options.notBefore?.getTime();
    const entry: Entry = {
      hostname,
      phase: 'queued',
      reason: options.reason,
      emergency: options.emergency ?? false,
      consecutiveFailures: 0,
      lastError: undefined,
      waitingFor: undefined,
      dueAt: new Date(now),
      controller: undefined,
      generation: 0,
      stateLoaded: this.options.state === undefined,
      faultRetries: 0,
    };
    this.entries.set(hostname, entry);
    this.schedule(entry, notBefore !== undefined && notBefore > now ? notBefore : now);
    this.pump();
    return true;
  }

  /** Removes a job that is not running; aborts a running one. */
  cancel(hostname: string, why: string): void {
    const entry = this.entries.get(hostname);
    if (!entry) return;
    if (entry.phase === 'running') entry.controller?.abort(new AbortedError(`work on ${hostname} (${why})`));
    else this.entries.delete(hostname);
    this.pump();
  }

  /** How many attempts in a row failed for `hostname`'s job (0 without one), copying nothing. */
  consecutiveFailures(hostname: string): number {
    return this.entries.get(hostname)?.consecutiveFailures ?? 0;
  }

  state(hostname: string): JobState | undefined {
    const entry = this.entries.get(hostname);
    if (!entry) return undefined;
    return {
      hostname: entry.hostname,
      phase: entry.phase,
      reason: entry.reason,
      emergency: entry.emergency,
      consecutiveFailures: entry.consecutiveFailures,
      lastError: entry.lastError,
      waitingFor: entry.waitingFor,
      dueAt: new Date(entry.dueAt),
    };
  }

  /** Jobs waiting (not running). */
  depth(): number {
    return this.entries.size - this.running;
  }

  inFlight(): number {
    return this.running;
  }

  /** Resolves when nothing is running and nothing is due now. For tests and shutdown. */
  async idle(): Promise<void> {
    if (this.isIdle()) return;
    await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
  }

  /**
   * Stops taking jobs, lets running jobs finish for up to `timeoutMs`, then aborts them and
   * waits for them to unwind. Waiting jobs are dropped (another instance, or the next start,
   * picks them up from the store).
   */
  async stop(timeoutMs: number): Promise<void> {
    this.stopped = true;
    this.timer?.handle.cancel();
    this.timer = undefined;
    for (const [hostname, entry] of this.entries) if (entry.phase !== 'running') this.entries.delete(hostname);
    if (this.running === 0) return;
    const finished = new Promise<void>((resolve) => this.idleWaiters.push(resolve));
    let timeoutTimer: Timer | undefined;
    const timeout = new Promise<'timeout'>((resolve) => {
      timeoutTimer = this.options.clock.setTimer(() => resolve('timeout'), timeoutMs);
    });
    const first = await Promise.race([finished, timeout]);
    timeoutTimer?.cancel();
    if (first === 'timeout') {
      this.log.warn({ in_flight: this.running }, 'shutdown timeout reached, abandoning orders in flight');
      for (const entry of this.entries.values())
        entry.controller?.abort(new AbortedError('order in flight at shutdown'));
      await finished;
    }
  }

  private isStale(node: HeapNode): boolean {
    const entry = node.entry;
    return (
      this.entries.get(entry.hostname) !== entry || entry.generation !== node.generation || entry.phase === 'running'
    );
  }

  /** Puts `entry` in the waiting heap for `dueAtMs` (older heap nodes of it become stale). */
  private schedule(entry: Entry, dueAtMs: number): void {
    entry.generation += 1;
    entry.dueAt = new Date(dueAtMs);
    entry.controller = undefined;
    this.waiting.push({ entry, generation: entry.generation, dueAtMs, emergency: entry.emergency, seq: this.seq++ });
  }

  /** Moves due jobs to the ready heap; drops stale nodes from the top of both heaps. */
  private promoteDue(now: number): void {
    for (;;) {
      const top = this.waiting.peek();
      if (!top) break;
      if (this.isStale(top)) {
        this.waiting.pop();
        continue;
      }
      if (top.dueAtMs > now) break;
      this.ready.push(this.waiting.pop()!);
    }
    while (this.ready.size > 0 && this.isStale(this.ready.peek()!)) this.ready.pop();
  }

  private isIdle(): boolean {
    if (this.running > 0) return false;
    this.promoteDue(this.options.clock.nowMs());
    return this.ready.size === 0;
  }

  private pump(): void {
    if (this.stopped) {
      if (this.running === 0) this.idleWaiters.splice(0).forEach((resolve) => resolve());
      return;
    }
    const now = this.options.clock.nowMs();
    this.promoteDue(now);
    while (this.running < this.options.concurrency && this.ready.size > 0) {
      const node = this.ready.pop()!;
      if (this.isStale(node)) continue;
      this.start(node.entry);
      while (this.ready.size > 0 && this.isStale(this.ready.peek()!)) this.ready.pop();
    }
    this.armTimer(now);
    if (this.running === 0 && this.ready.size === 0) this.idleWaiters.splice(0).forEach((resolve) => resolve());
  }

  /** One timer, for the earliest waiting job; re-armed only when that time changes. */
  private armTimer(now: number): void {
    const next = this.waiting.peek()?.dueAtMs;
    if (next === this.timer?.at) return;
    this.timer?.handle.cancel();
    this.timer = undefined;
    if (next === undefined) return;
    this.timer = { at: next, handle: this.options.clock.setTimer(() => this.onTimer(), Math.max(0, next - now)) };
  }

  private onTimer(): void {
    this.timer = undefined;
    this.pump();
  }

  private start(entry: Entry): void {
    entry.phase = 'running';
    entry.controller = new AbortController();
    this.running++;
    void this.run(entry)
      .catch((err: unknown) =>
        this.log.error({ [F.hostname]: entry.hostname, [F.err]: describeError(err) }, 'queue bookkeeping failed'),
      )
      .finally(() => {
        this.running--;
        this.pump();
      });
  }

  private async run(entry: Entry): Promise<void> {
    if (!entry.stateLoaded && (await this.deferToPersistedBackoff(entry))) return;
    let outcome: JobOutcome | undefined;
    let error: unknown;
    try {
      outcome = await this.handler({
        hostname: entry.hostname,
        reason: entry.reason,
        attempt: entry.consecutiveFailures + 1,
        signal: entry.controller!.signal,
      });
    } catch (err) {
      error = err;
    }
    await this.finish(entry, outcome, error);
  }

  /**
   * Before a certificate's first run in this process, honours the backoff another instance (or
   * an earlier run of this one) persisted. Emergencies skip the wait. Returns whether it deferred.
   */
  private async deferToPersistedBackoff(entry: Entry): Promise<boolean> {
    entry.stateLoaded = true;
    let persisted: CertificateState | undefined;
    try {
      persisted = await this.options.state?.get(entry.hostname);
    } catch (err) {
      if (err instanceof ConsulAcmeError && err.code === 'FORMAT_NEWER') {
        // A newer release keeps this name's state: leave the name to it, and look again later.
        entry.stateLoaded = false;
        entry.phase = 'backoff';
        entry.lastError = describeError(err);
        const retryInMs = this.options.retryScheduleMs[0] ?? 60_000;
        this.schedule(entry, this.options.clock.nowMs() + retryInMs);
        this.log.warn(
          { [F.hostname]: entry.hostname, [F.err]: entry.lastError, [F.retryInMs]: retryInMs },
          'persisted backoff was written by a newer release; not ordering',
        );
        return true;
      }
      this.log.warn(
        { [F.hostname]: entry.hostname, [F.err]: describeError(err) },
        'could not read persisted backoff; going ahead',
      );
      return false;
    }
    if (!persisted) return false;
    entry.consecutiveFailures = persisted.consecutiveFailures;
    entry.lastError = persisted.lastError;
    const now = this.options.clock.nowMs();
    const nextAt = persisted.nextAttemptAt?.getTime();
    if (entry.emergency || nextAt === undefined || nextAt <= now) return false;
    entry.phase = 'backoff';
    this.schedule(entry, nextAt);
    this.log.info(
      { [F.hostname]: entry.hostname, [F.attempt]: entry.consecutiveFailures, [F.retryInMs]: nextAt - now },
      'waiting out persisted backoff',
    );
    return true;
  }

  private async finish(entry: Entry, outcome: JobOutcome | undefined, err: unknown): Promise<void> {
    const now = this.options.clock.nowMs();
    if (this.entries.get(entry.hostname) !== entry) return;
    if (outcome?.kind === 'done') {
      this.entries.delete(entry.hostname);
      if (entry.consecutiveFailures > 0) await this.persist(entry.hostname, undefined);
      return;
    }
    if (this.stopped || (outcome === undefined && entry.controller?.signal.aborted)) {
      this.entries.delete(entry.hostname);
      return;
    }
    if (outcome?.kind === 'deferred') {
      // A name deferred again for the same reason (a route still not live, probed every few
      // seconds) is logged at debug: one info line per name and reason, not one per probe.
      const again = entry.waitingFor === outcome.why;
      entry.phase = 'deferred';
      entry.waitingFor = outcome.why;
      entry.faultRetries = 0;
      this.schedule(entry, Math.max(now, outcome.until.getTime()));
      this.log[again ? 'debug' : 'info'](
        {
          [F.event]: EVENTS.certDeferred,
          [F.hostname]: entry.hostname,
          [F.reason]: outcome.why,
          until: outcome.until.toISOString(),
        },
        'certificate deferred',
      );
      return;
    }
    if (outcome?.kind === 'busy') {
      entry.phase = entry.consecutiveFailures > 0 ? 'backoff' : 'queued';
      entry.waitingFor = undefined;
      // The holder may fail and persist a backoff meanwhile: read it again before the next run.
      entry.stateLoaded = this.options.state === undefined;
      this.schedule(entry, now + (this.options.busyRecheckMs ?? DEFAULT_BUSY_RECHECK_MS));
      return;
    }
    if (isInfrastructureFault(err)) {
      entry.faultRetries += 1;
      const delay = retryDelayMs(entry.faultRetries, this.faultSchedule);
      entry.phase = 'deferred';
      entry.waitingFor = describeError(err);
      this.schedule(entry, now + delay);
      this.log.warn(
        {
          [F.event]: EVENTS.retryScheduled,
          [F.hostname]: entry.hostname,
          [F.retryInMs]: delay,
          [F.err]: describeError(err),
        },
        'job hit an infrastructure fault, retrying soon',
      );
      return;
    }
    entry.faultRetries = 0;
    entry.waitingFor = undefined;
    entry.consecutiveFailures++;
    entry.lastError = describeError(err);
    const delay = this.retryDelayFor(entry.consecutiveFailures, err);
    entry.phase = 'backoff';
    this.schedule(entry, now + delay);
    this.log.warn(
      {
        [F.event]: EVENTS.retryScheduled,
        [F.hostname]: entry.hostname,
        [F.attempt]: entry.consecutiveFailures,
        [F.retryInMs]: delay,
        [F.err]: entry.lastError,
      },
      'job failed, retry scheduled',
    );
    await this.persist(entry.hostname, {
      hostname: entry.hostname,
      consecutiveFailures: entry.consecutiveFailures,
      lastAttemptAt: new Date(now),
      lastError: entry.lastError,
      nextAttemptAt: new Date(entry.dueAt),
    });
  }

  /** Saves (or, with undefined, clears) the persisted state. A failure only costs an early retry. */
  private async persist(hostname: string, state: CertificateState | undefined): Promise<void> {
    if (!this.options.state) return;
    try {
      if (state) await this.options.state.put(state);
      else await this.options.state.delete(hostname);
    } catch (err) {
      this.log.warn({ [F.hostname]: hostname, [F.err]: describeError(err) }, 'could not persist backoff state');
    }
  }

  private retryDelayFor(failures: number, err: unknown): number {
    const schedule = this.options.retryScheduleMs;
    const retryAfterMs =
      err instanceof AcmeProblemError && err.retryAfterSeconds !== undefined ? err.retryAfterSeconds * 1000 : undefined;
    // A problem that will not go away by itself waits the longest step of the schedule.
    if (err instanceof ConsulAcmeError && !err.retryable) {
      return Math.max(schedule[schedule.length - 1] ?? 0, retryAfterMs ?? 0);
    }
    return retryDelayMs(failures, schedule, retryAfterMs);
  }
}
