/**
 * Whether the certificate store answers: the last store operation's outcome, as the engine saw it.
 * A store fault (Vault sealed, unreachable, a revoked token) makes the certificate health check
 * critical until the store answers again. When nothing else touched the store for `probeEveryMs`,
 * a cheap probe (`list`) asks it, so that a token revoked while every certificate is valid is
 * noticed within about that time, not at the next renewal.
 */
import { describeError, isInfrastructureFault } from '../errors.js';
import { F, type Logger } from '../logging.js';
import type { CertificateStore } from '../ports/certificate-store.js';
import type { Clock, Timer } from '../ports/clock.js';

export const DEFAULT_STORE_PROBE_MS = 30_000;

export interface StoreHealthState {
  /** The fault of the last store operation, e.g. `STORE_PERMISSION_DENIED: …`; undefined when it answered. */
  error: string | undefined;
  /** Since when the store has been failing (ISO time), when it is. */
  failingSince: string | undefined;
}

export class StoreHealth {
  private error: string | undefined;
  private failingSinceMs: number | undefined;
  private lastOperationMs: number;
  private timer: Timer | undefined;
  private stopped = false;

  constructor(private readonly deps: { store: CertificateStore; clock: Clock; logger: Logger; probeEveryMs?: number }) {
    this.lastOperationMs = deps.clock.nowMs();
  }

  /** A store operation succeeded. */
  succeeded(): void {
    this.lastOperationMs = this.deps.clock.nowMs();
    if (this.error === undefined) return;
    this.deps.logger.info({ [F.component]: 'store-health' }, 'certificate store answers again');
    this.error = undefined;
    this.failingSinceMs = undefined;
  }

  /** A store operation failed with `err`; only store faults count (a conflict is an answer). */
  failed(err: unknown): void {
    this.lastOperationMs = this.deps.clock.nowMs();
    if (!isInfrastructureFault(err) || !err.code.startsWith('STORE_')) return;
    const text = describeError(err);
    if (this.error === undefined) {
      this.failingSinceMs = this.deps.clock.nowMs();
      this.deps.logger.error({ [F.component]: 'store-health', [F.err]: text }, 'certificate store fails');
    }
    this.error = text;
  }

  /** Runs `operation` against the store, recording its outcome. */
  async observe<T>(operation: () => Promise<T>): Promise<T> {
    try {
      const result = await operation();
      this.succeeded();
      return result;
    } catch (err) {
      this.failed(err);
      throw err;
    }
  }

  state(): StoreHealthState {
    return {
      error: this.error,
      failingSince: this.failingSinceMs === undefined ? undefined : new Date(this.failingSinceMs).toISOString(),
    };
  }

  start(): void {
    this.stopped = false;
    this.schedule();
  }

  stop(): void {
    this.stopped = true;
    this.timer?.cancel();
    this.timer = undefined;
  }

  private schedule(): void {
    if (this.stopped) return;
    const every = this.deps.probeEveryMs ?? DEFAULT_STORE_PROBE_MS;
    const dueIn = Math.max(0, this.lastOperationMs + every - this.deps.clock.nowMs());
    this.timer = this.deps.clock.setTimer(
      () => void this.probe(),
      this.error === undefined ? dueIn : Math.min(dueIn, every),
    );
  }

  private async probe(): Promise<void> {
    this.timer = undefined;
    if (this.stopped) return;
    const every = this.deps.probeEveryMs ?? DEFAULT_STORE_PROBE_MS;
    if (this.error !== undefined || this.deps.clock.nowMs() - this.lastOperationMs >= every) {
      await this.observe(() => this.deps.store.list()).catch(() => undefined);
    }
    this.schedule();
  }
}
