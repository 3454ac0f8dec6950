/**
 * Does one certificate's work: lock → re-check → act → check-and-set write → release.
 *
 * - Before the lock, holds the order gate already knows (a spent budget, a CA pause) defer the job
 *   from memory: a waiting name costs no lock, ledger or store request.
 * - The re-check plans again from a fresh read of the store, so a job queued long ago, or one that
 *   another instance already finished, does nothing.
 * - Write-ahead: before an order is finalized its pending record (key, order URL) is durable in
 *   the store; a pending record found in the re-check is completed (`issuer.resume`) before any new
 *   order, so a certificate the CA issued is downloaded again, never bought again.
 * - The write is a check-and-set against the version read in the re-check, so a worker that lost
 *   its lock cannot overwrite a newer certificate.
 * - What happened is published as engine events (planned, stored, retired, failed); the worker
 *   calls nothing back.
 */
import type { CertificateData, PendingOrder, StoredFacts } from '../domain/certificate.js';
import { factsOf } from '../domain/certificate.js';
import {
  planCertificate,
  sameHostnames,
  type DesiredCertificate,
  type Plan,
  type PlanOptions,
  type PlanReason,
} from '../domain/plan.js';
import { AbortedError, ConsulAcmeError, describeError, LockLostError } from '../errors.js';
import { EVENTS, F, type Logger } from '../logging.js';
import type { CertificateStore } from '../ports/certificate-store.js';
import type { Clock } from '../ports/clock.js';
import type { IssuedCertificate, Issuer } from '../ports/issuer.js';
import type { Locker } from '../ports/locker.js';
import type { DesiredSet } from './desired-set.js';
import type { EngineEvents } from './events.js';
import type { OrderGate } from './order-gate.js';
import type { JobOutcome, JobRun } from './queue.js';
import type { StoreHealth } from './store-health.js';
import type { StoreIndex } from './store-index.js';

export interface WorkerDeps {
  store: CertificateStore;
  issuer: Issuer;
  locker: Locker;
  clock: Clock;
  logger: Logger;
  planOptions: PlanOptions;
  /** What is desired under a hostname, and since when it is not. */
  desired: Pick<DesiredSet, 'desiredFor' | 'undeclaredSince'>;
  /** What the store held at the last read, to tell a renewal from a new order before the lock. */
  index: Pick<StoreIndex, 'facts'>;
  events: EngineEvents;
  storeHealth: StoreHealth;
  /** Pauses, budgets and the pre-flight check, asked before every order. */
  gate?: OrderGate;
}

/** The Consul KV key (under the locker's prefix) that guards one certificate. */
export function certificateLockKey(hostname: string): string {
  return `certs/${hostname}`;
}

/**
 * Whether an order for `desired` renews `stored`: the same names from the same directory. Let's
 * Encrypt exempts those from its order limits; a certificate from another directory (staging,
 * before production) is new to this CA.
 */
export function isRenewalOf(stored: StoredFacts | undefined, desired: DesiredCertificate): boolean {
  const certificate = stored?.certificate;
  return (
    certificate !== undefined &&
    certificate.directoryUrl === desired.directoryUrl &&
    sameHostnames(certificate.hostnames, desired.hostnames)
  );
}

export class CertificateWorker {
  private readonly log: Logger;

  constructor(private readonly deps: WorkerDeps) {
    this.log = deps.logger.child({ [F.component]: 'worker' });
  }

  async process(run: JobRun): Promise<JobOutcome> {
    const { hostname, signal } = run;
    const expected = this.deps.desired.desiredFor(hostname);
    if (expected !== undefined) {
      const held = this.deps.gate?.heldInMemory(
        expected.hostnames,
        isRenewalOf(this.deps.index.facts(hostname), expected),
      );
      if (held && !held.admitted) return { kind: 'deferred', until: held.until, why: held.why };
    }
    const lock = await this.deps.locker.tryAcquire(certificateLockKey(hostname));
    if (!lock) {
      this.log.debug({ [F.hostname]: hostname }, 'certificate is locked by another instance');
      return { kind: 'busy' };
    }
    const work = AbortSignal.any([signal, lock.signal]);
    try {
      return await this.underLock(run, work);
    } catch (err) {
      if (lock.signal.aborted && !signal.aborted) throw new LockLostError(certificateLockKey(hostname), { cause: err });
      if (signal.aborted && !(err instanceof AbortedError))
        throw new AbortedError(`work on ${hostname}`, { cause: err });
      throw err;
    } finally {
      await lock.release();
    }
  }

  private async underLock(run: JobRun, signal: AbortSignal): Promise<JobOutcome> {
    const { hostname } = run;
    const { store, storeHealth, events, clock, planOptions } = this.deps;
    const readStartedAtMs = clock.nowMs();
    const [record, pending] = await storeHealth.observe(() =>
      Promise.all([store.get(hostname), store.getPending(hostname)]),
    );
    const stored = record === undefined ? undefined : factsOf(record);
    const desired = this.deps.desired.desiredFor(hostname);
    const plan = planCertificate(
      clock.now(),
      desired,
      stored,
      planOptions,
      this.deps.desired.undeclaredSince(hostname),
    );
    events.emit({ type: 'planned', hostname, plan, stored, readStartedAtMs });
    if (plan.action === 'keep' || plan.action === 'retire' || !desired) {
      // A pending order nobody needs any more: its certificate was stored, or the name left.
      if (pending) await this.discardPending(pending, 'no longer needed');
      if (plan.action === 'retire' && stored) await this.retire(hostname, stored, plan);
      return { kind: 'done' };
    }
    const log = this.log.child({ [F.hostname]: hostname, [F.reason]: plan.reason, [F.attempt]: run.attempt });
    try {
      if (pending) {
        if (this.canResume(pending, desired)) {
          if (await this.resume(pending, desired, stored, plan, signal, log)) return { kind: 'done' };
        } else {
          await this.discardPending(pending, 'it was placed for other names, key type or directory');
        }
      }
      const admission = await this.deps.gate?.admit(desired.hostnames, isRenewalOf(stored, desired), signal);
      if (admission && !admission.admitted) return { kind: 'deferred', until: admission.until, why: admission.why };
      await this.obtain(desired, stored, plan, signal, log);
      return { kind: 'done' };
    } catch (err) {
      log.warn({ [F.event]: EVENTS.certFailed, [F.err]: describeError(err) }, 'certificate failed');
      await this.deps.gate?.recordFailure(desired.hostnames, err);
      events.emit({
        type: 'failed',
        hostname,
        reason: plan.reason,
        code: err instanceof ConsulAcmeError ? err.code : 'INTERNAL',
      });
      throw err;
    }
  }

  /** Whether `pending` is an order for exactly what is desired now, from this issuer's CA. */
  private canResume(pending: PendingOrder, desired: DesiredCertificate): boolean {
    return (
      pending.directoryUrl === this.deps.issuer.directoryUrl &&
      pending.keyType === desired.keyType &&
      sameHostnames(pending.hostnames, desired.hostnames)
    );
  }

  /**
   * Completes the order a pending record describes, without a new order: downloads the
   * certificate the CA issued (or finalizes an order that is still ready) and stores it. Returns
   * false when the CA no longer has a usable order (the record is discarded; a new order follows).
   */
  private async resume(
    pending: PendingOrder,
    desired: DesiredCertificate,
    stored: StoredFacts | undefined,
    plan: Plan,
    signal: AbortSignal,
    log: Logger,
  ): Promise<boolean> {
    const outcome = await this.deps.issuer.resume(pending, signal);
    if (outcome.kind === 'gone') {
      await this.discardPending(pending, outcome.why);
      return false;
    }
    log.info(
      { [F.event]: EVENTS.certResumed, order: pending.orderUrl, serial: outcome.certificate.serial },
      'order completed from its pending record, without a new order',
    );
    await this.store(
      this.certificateFrom(desired, outcome.certificate),
      outcome.certificate.serial,
      stored,
      plan.reason,
      log,
    );
    return true;
  }

  /**
   * Places a new order. Before it is finalized, the pending record (key, order URL) is made
   * durable in the store, so a certificate the CA issues is never lost: whatever happens between
   * finalize and the final write, the next attempt resumes it.
   */
  private async obtain(
    desired: DesiredCertificate,
    stored: StoredFacts | undefined,
    plan: Plan,
    signal: AbortSignal,
    log: Logger,
  ): Promise<void> {
    // The gate recorded this order against the budgets when it admitted it.
    log.info({ [F.event]: EVENTS.certObtaining }, 'obtaining certificate');
    const issued = await this.deps.issuer.issue(
      { hostnames: desired.hostnames, keyType: desired.keyType },
      {
        beforeFinalize: (pending) => this.deps.storeHealth.observe(() => this.deps.store.putPending(pending), 'write'),
      },
      signal,
    );
    await this.store(this.certificateFrom(desired, issued), issued.serial, stored, plan.reason, log);
  }

  private certificateFrom(desired: DesiredCertificate, issued: IssuedCertificate): CertificateData {
    return {
      hostname: desired.hostname,
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
  }

  /** Removes a pending record; a failure is only logged (the next attempt finds it and decides again). */
  private async discardPending(pending: PendingOrder, why: string): Promise<void> {
    try {
      await this.deps.storeHealth.observe(() => this.deps.store.deletePending(pending.hostname), 'write');
      this.log.info(
        { [F.hostname]: pending.hostname, order: pending.orderUrl, [F.reason]: why },
        'pending order discarded',
      );
    } catch (err) {
      this.log.warn(
        { [F.hostname]: pending.hostname, [F.err]: describeError(err) },
        'could not discard a pending order; the next attempt does',
      );
    }
  }

  /**
   * Writes `certificate` with check-and-set against the version read in the re-check, then removes
   * the pending record it came from.
   */
  private async store(
    certificate: CertificateData,
    serial: string,
    stored: StoredFacts | undefined,
    reason: PlanReason,
    log: Logger,
  ): Promise<void> {
    const { store, storeHealth, events, clock } = this.deps;
    const version = await storeHealth.observe(() => store.put(certificate, stored?.version ?? 0), 'write');
    await storeHealth
      .observe(() => store.deletePending(certificate.hostname), 'write')
      .catch((err: unknown) =>
        log.warn({ [F.err]: describeError(err) }, 'could not remove the pending order; the next attempt does'),
      );
    const writtenAtMs = clock.nowMs();
    const outcome = stored?.certificate !== undefined ? 'renewed' : 'obtained';
    events.emit({ type: 'stored', certificate, version, outcome, reason, writtenAtMs });
    // What is stored now, planned: the status shows it valid with its renewal time.
    const facts = factsOf({ hostname: certificate.hostname, version, managed: true, certificate, problem: undefined });
    const desired = this.deps.desired.desiredFor(certificate.hostname);
    const plan = planCertificate(
      clock.now(),
      desired,
      facts,
      this.deps.planOptions,
      this.deps.desired.undeclaredSince(certificate.hostname),
    );
    events.emit({ type: 'planned', hostname: certificate.hostname, plan, stored: facts, readStartedAtMs: writtenAtMs });
    log.info(
      {
        [F.event]: outcome === 'renewed' ? EVENTS.certRenewed : EVENTS.certObtained,
        version,
        serial,
        not_after: certificate.notAfter.toISOString(),
        issuer: certificate.issuer,
        store: store.description,
      },
      outcome === 'renewed' ? 'certificate renewed' : 'certificate obtained',
    );
  }

  private async retire(hostname: string, stored: StoredFacts, plan: Plan): Promise<void> {
    await this.deps.storeHealth.observe(() => this.deps.store.delete(hostname, stored.version), 'write');
    this.deps.events.emit({ type: 'retired', hostname, reason: plan.reason, retiredAtMs: this.deps.clock.nowMs() });
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
