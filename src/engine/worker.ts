/**
 * Does one certificate's work: lock → re-check → act → release.
 * The re-check plans again from a fresh read of the store, so a job queued long ago, or one that
 * another instance already finished, does nothing. The write is a check-and-set against the
 * version read in the re-check, so a worker that lost its lock cannot overwrite a newer
 * certificate.
 */
import type { CertificateData, StoredRecord } from '../domain/certificate.js';
import {
  planCertificate,
  sameHostnames,
  type DesiredCertificate,
  type Plan,
  type PlanOptions,
} from '../domain/plan.js';
import { AbortedError, ConsulAcmeError, describeError, LockLostError } from '../errors.js';
import { EVENTS, F, type Logger } from '../logging.js';
import type { CertificateStore } from '../ports/certificate-store.js';
import type { Clock } from '../ports/clock.js';
import type { Issuer } from '../ports/issuer.js';
import type { Locker } from '../ports/locker.js';
import type { OrderGate } from './order-gate.js';
import type { JobOutcome } from './queue.js';

export interface WorkerDeps {
  store: CertificateStore;
  issuer: Issuer;
  locker: Locker;
  clock: Clock;
  logger: Logger;
  planOptions: PlanOptions;
  /** What the catalog currently asks for under this hostname; undefined when nobody does. */
  desiredFor: (hostname: string) => DesiredCertificate | undefined;
  /** When the hostname stopped being declared, for the retirement grace period. */
  undeclaredSince: (hostname: string) => Date | undefined;
  /** Told about every fresh plan and every write, so the status stays current. */
  onPlanned: (hostname: string, plan: Plan, stored: StoredRecord | undefined) => void;
  /** Told about every attempt's outcome (metrics). */
  onOutcome?: (event: WorkerOutcome) => void;
  /** Pauses, budgets and the pre-flight check, asked before every order. */
  gate?: OrderGate;
}

export interface WorkerOutcome {
  hostname: string;
  /** The planner's reason for the attempt. */
  reason: string;
  outcome: 'obtained' | 'renewed' | 'failed' | 'retired';
  /** The error code of a failure. */
  code: string | undefined;
}

/** The Consul KV key (under the locker's prefix) that guards one certificate. */
export function certificateLockKey(hostname: string): string {
  return `certs/${hostname}`;
}

export class CertificateWorker {
  private readonly log: Logger;

  constructor(private readonly deps: WorkerDeps) {
    this.log = deps.logger.child({ [F.component]: 'worker' });
  }

  async process(hostname: string, signal: AbortSignal, attempt: number): Promise<JobOutcome> {
    const lock = await this.deps.locker.tryAcquire(certificateLockKey(hostname));
    if (!lock) {
      this.log.debug({ [F.hostname]: hostname }, 'certificate is locked by another instance');
      return { kind: 'busy' };
    }
    const work = AbortSignal.any([signal, lock.signal]);
    try {
      const stored = await this.deps.store.get(hostname);
      const desired = this.deps.desiredFor(hostname);
      const plan = planCertificate(
        this.deps.clock.now(),
        desired,
        stored,
        this.deps.planOptions,
        this.deps.undeclaredSince(hostname),
      );
      this.deps.onPlanned(hostname, plan, stored);
      if (plan.action === 'keep') return { kind: 'done' };
      if (plan.action === 'retire') {
        if (stored) {
          await this.retire(hostname, stored, plan);
          // Nothing is stored any more: a fresh plan lets the status forget the name.
          this.deps.onPlanned(
            hostname,
            planCertificate(this.deps.clock.now(), desired, undefined, this.deps.planOptions),
            undefined,
          );
        }
        return { kind: 'done' };
      }
      if (!desired) return { kind: 'done' };
      // Let's Encrypt exempts renewals of the same set of names from its order limits; a
      // certificate from another directory (staging, before production) is new to this CA.
      const isRenewal =
        stored?.certificate !== undefined &&
        stored.certificate.directoryUrl === desired.directoryUrl &&
        sameHostnames(stored.certificate.hostnames, desired.hostnames);
      const admission = await this.deps.gate?.admit(desired.hostnames, isRenewal, work);
      if (admission && !admission.admitted) return { kind: 'deferred', until: admission.until, why: admission.why };
      await this.obtain(hostname, desired, stored, plan, work, attempt);
      return { kind: 'done' };
    } catch (err) {
      if (lock.signal.aborted && !signal.aborted) throw new LockLostError(certificateLockKey(hostname), { cause: err });
      if (signal.aborted && !(err instanceof AbortedError))
        throw new AbortedError(`work on ${hostname}`, { cause: err });
      throw err;
    } finally {
      await lock.release();
    }
  }

  private async obtain(
    hostname: string,
    desired: DesiredCertificate,
    stored: StoredRecord | undefined,
    plan: Plan,
    signal: AbortSignal,
    attempt: number,
  ): Promise<void> {
    const log = this.log.child({
      [F.hostname]: hostname,
      [F.reason]: plan.reason,
      [F.attempt]: attempt,
    });
    // The gate recorded this order against the budgets when it admitted it.
    log.info({ [F.event]: EVENTS.certObtaining }, 'obtaining certificate');
    try {
      const issued = await this.deps.issuer.issue({ hostnames: desired.hostnames, keyType: desired.keyType }, signal);
      const certificate: CertificateData = {
        hostname,
        hostnames: desired.hostnames,
        certPem: issued.certPem,
        keyPem: issued.keyPem,
        notBefore: issued.notBefore,
        notAfter: issued.notAfter,
        directoryUrl: issued.directoryUrl,
        issuer: issued.issuer,
        keyType: desired.keyType,
        obtainedAt: this.deps.clock.now(),
      };
      const version = await this.deps.store.put(certificate, stored?.version ?? 0);
      const fresh = await this.deps.store.get(hostname);
      this.deps.onPlanned(
        hostname,
        planCertificate(this.deps.clock.now(), desired, fresh, this.deps.planOptions),
        fresh,
      );
      const renewed = stored?.certificate !== undefined;
      this.deps.onOutcome?.({
        hostname,
        reason: plan.reason,
        outcome: renewed ? 'renewed' : 'obtained',
        code: undefined,
      });
      log.info(
        {
          [F.event]: renewed ? EVENTS.certRenewed : EVENTS.certObtained,
          version,
          not_after: issued.notAfter.toISOString(),
          issuer: issued.issuer,
          store: this.deps.store.description,
        },
        renewed ? 'certificate renewed' : 'certificate obtained',
      );
    } catch (err) {
      log.warn({ [F.event]: EVENTS.certFailed, [F.err]: describeError(err) }, 'certificate failed');
      await this.deps.gate?.recordFailure(desired.hostnames, err);
      this.deps.onOutcome?.({
        hostname,
        reason: plan.reason,
        outcome: 'failed',
        code: err instanceof ConsulAcmeError ? err.code : 'INTERNAL',
      });
      throw err;
    }
  }

  private async retire(hostname: string, stored: StoredRecord, plan: Plan): Promise<void> {
    await this.deps.store.delete(hostname, stored.version);
    this.deps.onOutcome?.({ hostname, reason: plan.reason, outcome: 'retired', code: undefined });
    this.log.info(
      {
        [F.event]: EVENTS.certRetired,
        [F.hostname]: hostname,
        [F.reason]: plan.reason,
        not_after: stored.certificate?.notAfter.toISOString(),
      },
      'certificate retired',
    );
  }
}
