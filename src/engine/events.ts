/**
 * What the engine tells the rest of the service, as values: a plan was made, a certificate was
 * stored or retired, an attempt failed. The worker and the planner
 * publish; the status view, the store index, metrics and the sinks listen. Nothing flows back:
 * a listener cannot change what the engine does, and a listener that throws is logged and skipped.
 */
import type { CertificateData, StoredFacts } from '../domain/certificate.js';
import type { Plan, PlanReason } from '../domain/plan.js';
import { describeError } from '../errors.js';
import { F, type Logger } from '../logging.js';

export type EngineEvent =
  /**
   * A plan for `hostname` from what the store holds (`stored`, undefined when nothing).
   * `readStartedAtMs` is when the read of `stored` started; undefined when the plan was made from
   * what the store index remembered. A read that started before a newer read or write ended is
   * stale, and listeners ignore it.
   */
  | {
      type: 'planned';
      hostname: string;
      plan: Plan;
      stored: StoredFacts | undefined;
      readStartedAtMs: number | undefined;
    }
  /**
   * A certificate was written to the store (version `version`), at `writtenAtMs`: obtained for a
   * name that had none, renewed, or adopted (a record another tool wrote, now consul-acme's, with
   * the same certificate and key).
   */
  | {
      type: 'stored';
      certificate: CertificateData;
      version: number;
      outcome: 'obtained' | 'renewed' | 'adopted';
      reason: PlanReason;
      writtenAtMs: number;
    }
  /** A certificate was removed from the store after its grace period, at `retiredAtMs`. */
  | { type: 'retired'; hostname: string; reason: PlanReason; retiredAtMs: number }
  /** An attempt to obtain a certificate failed with `code`. */
  | { type: 'failed'; hostname: string; reason: PlanReason; code: string };

export type EngineListener = (event: EngineEvent) => void;

export class EngineEvents {
  private readonly listeners: EngineListener[] = [];

  constructor(private readonly logger: Logger) {}

  on(listener: EngineListener): void {
    this.listeners.push(listener);
  }

  emit(event: EngineEvent): void {
    for (const listener of this.listeners) {
      try {
        listener(event);
      } catch (err) {
        this.logger.error({ [F.err]: describeError(err), event: event.type }, 'engine event listener failed');
      }
    }
  }
}
