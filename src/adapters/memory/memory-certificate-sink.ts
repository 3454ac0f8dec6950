import type { CertificateData } from '../../domain/certificate.js';
import { ConsulAcmeError, throwIfAborted } from '../../errors.js';
import type { CertificateSink, SinkChange, SinkSnapshot } from '../../ports/certificate-sink.js';

/**
 * CertificateSink in memory, for tests: holds the certificates it was given, by hostname, and
 * records every call. Same contract as the real sinks (test/contract/certificate-sink.contract.test.ts).
 * Test hooks: `failNext(n, error)` makes the next n calls fail, `failWith(error)` every call until
 * `failWith(undefined)`; `hold()` holds calls until `open()`.
 */
export class MemoryCertificateSink implements CertificateSink {
  readonly held = new Map<string, CertificateData>();
  readonly calls: Array<{ kind: 'apply' | 'resync'; change?: SinkChange; snapshot?: SinkSnapshot }> = [];
  /** Calls running right now, and the most that ever ran at once. */
  inFlight = 0;
  maxInFlight = 0;
  private failures: Error[] = [];
  private failure: Error | undefined;
  private gate: Promise<void> | undefined;
  private openGate: (() => void) | undefined;

  constructor(readonly name = 'memory') {}

  /** The next `count` calls throw `error` (a retryable SINK_WRITE_FAILED by default). */
  failNext(count: number, error?: Error): void {
    for (let i = 0; i < count; i++)
      this.failures.push(
        error ?? new ConsulAcmeError('SINK_WRITE_FAILED', `${this.name}: failing on purpose`, { retryable: true }),
      );
  }

  /** Every call throws `error` until this is called again with undefined. */
  failWith(error: Error | undefined): void {
    this.failure = error;
  }

  /** Calls wait until `open()` is called. */
  hold(): void {
    this.gate ??= new Promise((resolve) => {
      this.openGate = resolve;
    });
  }

  open(): void {
    this.openGate?.();
    this.gate = undefined;
    this.openGate = undefined;
  }

  async apply(change: SinkChange, signal?: AbortSignal): Promise<void> {
    this.calls.push({ kind: 'apply', change });
    await this.enter(signal, async () => {
      if (change.kind === 'stored') this.held.set(change.certificate.hostname, change.certificate);
      else this.held.delete(change.hostname);
    });
  }

  async resync(snapshot: SinkSnapshot, signal?: AbortSignal): Promise<void> {
    this.calls.push({ kind: 'resync', snapshot });
    await this.enter(signal, async () => {
      const keep = new Set(snapshot.unreadable);
      for (const hostname of [...this.held.keys()]) if (!keep.has(hostname)) this.held.delete(hostname);
      for (const certificate of snapshot.certificates) this.held.set(certificate.hostname, certificate);
    });
  }

  private async enter(signal: AbortSignal | undefined, work: () => Promise<void>): Promise<void> {
    this.inFlight += 1;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    try {
      if (this.gate) {
        const gate = this.gate;
        await new Promise<void>((resolve, reject) => {
          const onAbort = (): void => reject(new Error('aborted while held'));
          signal?.addEventListener('abort', onAbort, { once: true });
          void gate.then(() => {
            signal?.removeEventListener('abort', onAbort);
            resolve();
          });
        });
      }
      throwIfAborted(signal, this.name);
      const failure = this.failures.shift() ?? this.failure;
      if (failure) throw failure;
      await work();
    } finally {
      this.inFlight -= 1;
    }
  }
}
