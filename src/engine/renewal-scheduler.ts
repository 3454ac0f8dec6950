/**
 * Runs the renewal scan on a cron schedule (node-cron) and once at start. Only the instance that
 * holds the leader lock scans: the first instance to acquire it keeps it for as long as its
 * session lives, and every other instance skips its ticks. When the leader's session is lost, the
 * next tick of any instance may take over (after Consul's lock-delay).
 *
 * The scan itself is the planner's (planner.ts `scan`): it plans every managed and stored name
 * again and feeds the same queue as discovery; nothing here decides or waits.
 */
import cron, { type ScheduledTask } from 'node-cron';
import { describeError } from '../errors.js';
import { F, type Logger } from '../logging.js';
import type { Clock } from '../ports/clock.js';
import type { Lock, Locker } from '../ports/locker.js';

/** The lock key (under the locker's prefix) of the renewal scan's leader. */
export const RENEWAL_LEADER_KEY = 'leader/renewal-scan';

export type ScanOutcome = 'scanned' | 'not-leader' | 'failed' | 'busy';

export interface RenewalSchedulerDeps {
  locker: Locker;
  clock: Clock;
  scan: () => Promise<void>;
  /** What an instance that does not lead does on its ticks: refresh its view without ordering. */
  refresh?: () => Promise<void>;
  schedule: string;
  logger: Logger;
  /** Told about every tick's outcome (metrics, tests). */
  onTick?: (outcome: ScanOutcome) => void;
}

export class RenewalScheduler {
  private task: ScheduledTask | undefined;
  private leadership: Lock | undefined;
  private scanning: Promise<ScanOutcome> | undefined;
  private readonly log: Logger;

  constructor(private readonly deps: RenewalSchedulerDeps) {
    this.log = deps.logger.child({ [F.component]: 'renewal' });
  }

  /** Schedules the scan and runs one now. */
  start(): void {
    this.task = cron.createTask(this.deps.schedule, () => this.tick(), { name: 'renewal-scan', noOverlap: true });
    void this.task.start();
    void this.tick();
  }

  isLeader(): boolean {
    return this.leadership !== undefined && !this.leadership.signal.aborted;
  }

  /** One tick: take or keep leadership, then scan. Never throws. */
  tick(): Promise<ScanOutcome> {
    if (this.scanning) return Promise.resolve('busy');
    this.scanning = this.runTick().finally(() => {
      this.scanning = undefined;
    });
    return this.scanning;
  }

  async stop(): Promise<void> {
    if (this.task) await this.task.destroy();
    this.task = undefined;
    await this.scanning;
    const lock = this.leadership;
    this.leadership = undefined;
    await lock?.release();
  }

  private async runTick(): Promise<ScanOutcome> {
    const outcome = await this.scanIfLeader();
    this.deps.onTick?.(outcome);
    return outcome;
  }

  private async scanIfLeader(): Promise<ScanOutcome> {
    try {
      if (!this.isLeader()) {
        this.leadership = await this.deps.locker.tryAcquire(RENEWAL_LEADER_KEY);
        if (!this.leadership) {
          await this.deps.refresh?.();
          return 'not-leader';
        }
        this.log.info('became renewal leader');
        this.leadership.signal.addEventListener('abort', () => this.log.warn('lost renewal leadership'), {
          once: true,
        });
      }
      const started = this.deps.clock.nowMs();
      await this.deps.scan();
      this.log.info({ duration_ms: this.deps.clock.nowMs() - started }, 'renewal scan done');
      return 'scanned';
    } catch (err) {
      this.log.error({ [F.err]: describeError(err) }, 'renewal scan failed; next tick retries');
      return 'failed';
    }
  }
}
