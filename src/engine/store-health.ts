/**
 * Whether the certificate store answers: the last store operation's outcome, as the engine saw it.
 * A store fault (Vault sealed, unreachable, a revoked token) makes the certificate health check
 * critical until the store answers again. When nothing else touched the store for `probeEveryMs`,
 * a cheap probe (`CertificateStore.probe`) asks it, so that a token revoked while every certificate is valid is
 * noticed within about that time, not at the next renewal.
 *
 * Reads and writes are told apart, because a store can serve one and refuse the other (a Vault
 * policy or a storage backend that refuses writes): a failed write is not cleared by a read that
 * succeeds (the probe, the worker's re-check), only by a write that succeeds, so the check stays
 * critical while a certificate waits to be written. A job waiting on a store fault writes again at
 * least every 30 s (queue.ts DEFAULT_FAULT_RETRY_SCHEDULE_MS); a failed write nobody retried for
 * `writeFaultHoldMs` (the job was cancelled, or now fails for another reason) no longer counts, and
 * the next read that succeeds clears it.
 */
import { describeError, isInfrastructureFault } from '../errors.js';
import { F, type Logger } from '../logging.js';
import type { CertificateStore } from '../ports/certificate-store.js';
import type { Clock, Timer } from '../ports/clock.js';

export const DEFAULT_STORE_PROBE_MS = 30_000;
/** How long a failed write keeps the store failing when no write was tried since. */
export const DEFAULT_WRITE_FAULT_HOLD_MS = 2 * DEFAULT_STORE_PROBE_MS;

/** What a store operation does: reads (get, list) or writes (put, delete, pending records). */
export type StoreOperationKind = 'read' | 'write';

export interface StoreHealthState {
  /** The fault of the last store operation, e.g. `STORE_PERMISSION_DENIED: …`; undefined when it answered. */
  error: string | undefined;
  /** Since when the store has been failing (ISO time), when it is. */
  failingSince: string | undefined;
}

interface Fault {
  error: string;
  sinceMs: number;
  /** The last failure of this kind. */
  lastMs: number;
}

export class StoreHealth {
  private readFault: Fault | undefined;
  private writeFault: Fault | undefined;
  private lastOperationMs: number;
  private timer: Timer | undefined;
  private stopped = false;

  constructor(
    private readonly deps: {
      store: CertificateStore;
      clock: Clock;
      logger: Logger;
      probeEveryMs?: number;
      writeFaultHoldMs?: number;
    },
  ) {
    this.lastOperationMs = deps.clock.nowMs();
  }

  /** A store operation of `kind` succeeded. */
  succeeded(kind: StoreOperationKind = 'read'): void {
    const now = this.deps.clock.nowMs();
    this.lastOperationMs = now;
    const wasFailing = this.isFailing();
    this.readFault = undefined;
    const holdMs = this.deps.writeFaultHoldMs ?? DEFAULT_WRITE_FAULT_HOLD_MS;
    if (kind === 'write' || (this.writeFault !== undefined && now - this.writeFault.lastMs >= holdMs)) {
      this.writeFault = undefined;
    }
    if (wasFailing && !this.isFailing()) {
      this.deps.logger.info({ [F.component]: 'store-health' }, 'certificate store answers again');
    }
  }

  /** A store operation of `kind` failed with `err`; only store faults count (a conflict is an answer). */
  failed(err: unknown, kind: StoreOperationKind = 'read'): void {
    const now = this.deps.clock.nowMs();
    this.lastOperationMs = now;
    if (!isInfrastructureFault(err) || !err.code.startsWith('STORE_')) return;
    const text = describeError(err);
    if (!this.isFailing()) {
      this.deps.logger.error({ [F.component]: 'store-health', [F.err]: text }, 'certificate store fails');
    }
    const previous = kind === 'write' ? this.writeFault : this.readFault;
    const fault: Fault = { error: text, sinceMs: previous?.sinceMs ?? now, lastMs: now };
    if (kind === 'write') this.writeFault = fault;
    else this.readFault = fault;
  }

  /** Runs `operation` (of `kind`: a read unless told) against the store, recording its outcome. */
  async observe<T>(operation: () => Promise<T>, kind: StoreOperationKind = 'read'): Promise<T> {
    try {
      const result = await operation();
      this.succeeded(kind);
      return result;
    } catch (err) {
      this.failed(err, kind);
      throw err;
    }
  }

  private isFailing(): boolean {
    return this.readFault !== undefined || this.writeFault !== undefined;
  }

  state(): StoreHealthState {
    // The latest fault describes the store now; it has been failing since the earliest.
    const faults = [this.readFault, this.writeFault].filter((f): f is Fault => f !== undefined);
    if (faults.length === 0) return { error: undefined, failingSince: undefined };
    const latest = faults.reduce((a, b) => (b.lastMs > a.lastMs ? b : a));
    const sinceMs = Math.min(...faults.map((f) => f.sinceMs));
    return { error: latest.error, failingSince: new Date(sinceMs).toISOString() };
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
    this.timer = this.deps.clock.setTimer(() => void this.probe(), this.isFailing() ? Math.min(dueIn, every) : dueIn);
  }

  private async probe(): Promise<void> {
    this.timer = undefined;
    if (this.stopped) return;
    const every = this.deps.probeEveryMs ?? DEFAULT_STORE_PROBE_MS;
    if (this.isFailing() || this.deps.clock.nowMs() - this.lastOperationMs >= every) {
      await this.observe(() => this.deps.store.probe()).catch(() => undefined);
    }
    this.schedule();
  }
}
