/**
 * The one place that waits. Every certificate job goes through this queue: it keeps at most one
 * job per hostname (a duplicate submit does nothing), runs at most `concurrency` jobs at once,
 * orders emergencies first, and schedules retries after a growing delay from the retry schedule
 * (or the CA's Retry-After, when that is longer). Nothing else in the service sleeps.
 */
import { retryDelayMs } from '../domain/backoff.js';
import { AbortedError, AcmeProblemError, ConsulAcmeError, describeError } from '../errors.js';
import type { CertificateState, CertificateStateStore } from '../ports/certificate-state-store.js';
import type { Clock } from '../ports/clock.js';
import { EVENTS, F, type Logger } from '../logging.js';

export type JobOutcome =
  /** The work was done or found unnecessary. */
  | { kind: 'done' }
  /** Another instance holds the certificate's lock; look again later. */
  | { kind: 'busy' }
  /** Not now, and not a failure: a budget or a CA pause ends at `until`. */
  | { kind: 'deferred'; until: Date; why: string };

export type JobHandler = (hostname: string, signal: AbortSignal, attempt: number) => Promise<JobOutcome>;

export interface SubmitOptions {
  reason: string;
  /** Emergencies (expired, nearly expired) jump ahead of routine work. */
  emergency?: boolean;
  /** Do not start before this time. */
  notBefore?: Date;
}

export interface QueueOptions {
  concurrency: number;
  retryScheduleMs: readonly number[];
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

export type JobPhase = 'waiting' | 'running' | 'retrying';

export interface JobState {
  hostname: string;
  phase: JobPhase;
  reason: string;
  emergency: boolean;
  consecutiveFailures: number;
  lastError: string | undefined;
  /** Why a deferred job waits (a spent budget, a CA pause); cleared when it runs again. */
  deferredBecause: string | undefined;
  /** When a waiting job may start. */
  dueAt: Date;
}

interface Entry extends JobState {
  controller: AbortController | undefined;
  /** Whether the persisted state was consulted before the first run. */
  stateLoaded: boolean;
}

export const DEFAULT_BUSY_RECHECK_MS = 30_000;

export class IssuanceQueue {
  private readonly entries = new Map<string, Entry>();
  private running = 0;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private readonly idleWaiters: Array<() => void> = [];
  private readonly log: Logger;

  constructor(
    private readonly handler: JobHandler,
    private readonly options: QueueOptions,
  ) {
    this.log = options.logger.child({ [F.component]: 'queue' });
  }

  /** Adds a job unless one for the same hostname is already waiting or running. Returns whether it was added. */
  submit(hostname: string, options: SubmitOptions): boolean {
    if (this.stopped) return false;
    const existing = this.entries.get(hostname);
    if (existing) {
      // An emergency may pull a waiting job forward; it never starts a second job.
      if (existing.phase !== 'running' && options.emergency && !existing.emergency) {
        existing.emergency = true;
        this.pump();
      }
      return false;
    }
    const now = this.options.clock.now();
    this.entries.set(hostname, {
      hostname,
      phase: 'waiting',
      reason: options.reason,
      emergency: options.emergency ?? false,
      consecutiveFailures: 0,
      lastError: undefined,
      deferredBecause: undefined,
      dueAt: options.notBefore && options.notBefore > now ? options.notBefore : now,
      controller: undefined,
      stateLoaded: this.options.state === undefined,
    });
    this.pump();
    return true;
  }

  /** Removes a job that has not started. A running job is aborted. */
  cancel(hostname: string, why: string): void {
    const entry = this.entries.get(hostname);
    if (!entry) return;
    if (entry.phase === 'running') entry.controller?.abort(new Error(why));
    else this.entries.delete(hostname);
    this.pump();
  }

  state(hostname: string): JobState | undefined {
    const entry = this.entries.get(hostname);
    if (!entry) return undefined;
    const { controller: _controller, stateLoaded: _loaded, ...state } = entry;
    return { ...state, dueAt: new Date(state.dueAt) };
  }

  /** Jobs waiting or retrying, not running. */
  depth(): number {
    let n = 0;
    for (const e of this.entries.values()) if (e.phase !== 'running') n++;
    return n;
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
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    for (const [id, e] of this.entries) if (e.phase !== 'running') this.entries.delete(id);
    if (this.running === 0) return;
    const finished = new Promise<void>((resolve) => this.idleWaiters.push(resolve));
    const timeout = new Promise<'timeout'>((resolve) => setTimeout(() => resolve('timeout'), timeoutMs));
    if ((await Promise.race([finished, timeout])) === 'timeout') {
      this.log.warn({ in_flight: this.running }, 'shutdown timeout reached, abandoning orders in flight');
      for (const e of this.entries.values()) e.controller?.abort(new AbortedError('order in flight at shutdown'));
      await finished;
    }
  }

  private isIdle(): boolean {
    if (this.running > 0) return false;
    const now = this.options.clock.now().getTime();
    for (const e of this.entries.values()) if (e.dueAt.getTime() <= now) return false;
    return true;
  }

  private pump(): void {
    if (this.stopped) {
      if (this.running === 0) this.idleWaiters.splice(0).forEach((resolve) => resolve());
      return;
    }
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const now = this.options.clock.now().getTime();
    while (this.running < this.options.concurrency) {
      const next = this.nextDue(now);
      if (!next) break;
      this.start(next);
    }
    const nextDueAt = this.nextWaitingTime();
    if (nextDueAt !== undefined) {
      const delay = Math.max(0, nextDueAt - now);
      // Timers beyond ~24.8 days overflow; waking early is harmless.
      this.timer = setTimeout(() => this.pump(), Math.min(delay, 2 ** 31 - 1));
      this.timer.unref();
    }
    if (this.isIdle()) this.idleWaiters.splice(0).forEach((resolve) => resolve());
  }

  private nextDue(now: number): Entry | undefined {
    let best: Entry | undefined;
    for (const e of this.entries.values()) {
      if (e.phase === 'running' || e.dueAt.getTime() > now) continue;
      if (!best || (e.emergency && !best.emergency) || (e.emergency === best.emergency && e.dueAt < best.dueAt))
        best = e;
    }
    return best;
  }

  private nextWaitingTime(): number | undefined {
    let min: number | undefined;
    for (const e of this.entries.values()) {
      if (e.phase === 'running') continue;
      const t = e.dueAt.getTime();
      if (min === undefined || t < min) min = t;
    }
    return min;
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
    const attempt = entry.consecutiveFailures + 1;
    let outcome: JobOutcome | undefined;
    let error: unknown;
    try {
      outcome = await this.handler(entry.hostname, entry.controller!.signal, attempt);
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
    let persisted;
    try {
      persisted = await this.options.state?.get(entry.hostname);
    } catch (err) {
      this.log.warn(
        { [F.hostname]: entry.hostname, [F.err]: describeError(err) },
        'could not read persisted backoff; going ahead',
      );
      return false;
    }
    if (!persisted) return false;
    entry.consecutiveFailures = persisted.consecutiveFailures;
    entry.lastError = persisted.lastError;
    const now = this.options.clock.now().getTime();
    if (entry.emergency || !persisted.nextAttemptAt || persisted.nextAttemptAt.getTime() <= now) return false;
    this.reschedule(entry, persisted.nextAttemptAt.getTime());
    this.log.info(
      {
        [F.hostname]: entry.hostname,
        [F.attempt]: entry.consecutiveFailures,
        [F.retryInMs]: persisted.nextAttemptAt.getTime() - now,
      },
      'waiting out persisted backoff',
    );
    return true;
  }

  private async finish(entry: Entry, outcome: JobOutcome | undefined, err: unknown): Promise<void> {
    const now = this.options.clock.now();
    if (this.entries.get(entry.hostname) !== entry) return;
    if (outcome?.kind === 'done') {
      this.entries.delete(entry.hostname);
      if (entry.consecutiveFailures > 0) await this.persist(entry.hostname, undefined);
      return;
    }
    if (outcome?.kind === 'deferred') {
      entry.deferredBecause = outcome.why;
      this.reschedule(entry, Math.max(now.getTime(), outcome.until.getTime()));
      this.log.info(
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
    entry.deferredBecause = undefined;
    if (outcome?.kind === 'busy') {
      this.reschedule(entry, now.getTime() + (this.options.busyRecheckMs ?? DEFAULT_BUSY_RECHECK_MS));
      return;
    }
    if (this.stopped || entry.controller?.signal.aborted) {
      this.entries.delete(entry.hostname);
      return;
    }
    entry.consecutiveFailures++;
    entry.lastError = describeError(err);
    const delay = this.retryDelayFor(entry.consecutiveFailures, err);
    this.reschedule(entry, now.getTime() + delay);
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
      lastAttemptAt: now,
      lastError: entry.lastError,
      nextAttemptAt: entry.dueAt,
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
    if (err instanceof ConsulAcmeError && !err.retryable)
      return Math.max(schedule[schedule.length - 1] ?? 0, retryAfterMs ?? 0);
    return retryDelayMs(failures, schedule, retryAfterMs);
  }

  private reschedule(entry: Entry, dueAtMs: number): void {
    entry.phase = 'retrying';
    entry.controller = undefined;
    entry.dueAt = new Date(dueAtMs);
  }
}
