/**
 * Does one certificate's work: lock → re-check → act → check-and-set write → release.
 *
 * - Before the lock, holds the order gate already knows (a spent budget, a CA pause) defer the job
 *   from memory: a waiting name costs no lock, ledger or store request.
 * - The re-check plans again from a fresh read of the store, so a job queued long ago, or one that
 *   another instance already finished, does nothing.
 * - The write is a check-and-set against the version read in the re-check, so a worker that lost
 *   its lock cannot overwrite a newer certificate.
 * - What happened is published as engine events (planned, stored, retired, failed); the worker
 *   calls nothing back.
 */
import type { CertificateData, StoredFacts } from '../domain/certificate.js';
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
import type { Issuer } from '../ports/issuer.js';
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
    const record = await storeHealth.observe(() => store.get(hostname));
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
    if (plan.action === 'keep') return { kind: 'done' };
    if (plan.action === 'retire') {
      if (stored) await this.retire(hostname, stored, plan);
      return { kind: 'done' };
    }
    if (!desired) return { kind: 'done' };
    const admission = await this.deps.gate?.admit(desired.hostnames, isRenewalOf(stored, desired), signal);
    if (admission && !admission.admitted) return { kind: 'deferred', until: admission.until, why: admission.why };
    await this.obtain(desired, stored, plan, signal, run.attempt);
    return { kind: 'done' };
  }

  private async obtain(
    desired: DesiredCertificate,
    stored: StoredFacts | undefined,
    plan: Plan,
    signal: AbortSignal,
    attempt: number,
  ): Promise<void> {
    const { hostname } = desired;
    const log = this.log.child({ [F.hostname]: hostname, [F.reason]: plan.reason, [F.attempt]: attempt });
    // The gate recorded this order against the budgets when it admitted it.
    log.info({ [F.event]: EVENTS.certObtaining }, 'obtaining certificate');
    try {
      // No write-ahead record yet: the worker's rewrite wires beforeFinalize to the store.
      const issued = await this.deps.issuer.issue(
        { hostnames: desired.hostnames, keyType: desired.keyType },
        { beforeFinalize: async () => {} },
        signal,
      );
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
      await this.store(certificate, stored, plan.reason, log);
    } catch (err) {
      log.warn({ [F.event]: EVENTS.certFailed, [F.err]: describeError(err) }, 'certificate failed');
      await this.deps.gate?.recordFailure(desired.hostnames, err);
      this.deps.events.emit({
        type: 'failed',
        hostname,
        reason: plan.reason,
        code: err instanceof ConsulAcmeError ? err.code : 'INTERNAL',
      });
      throw err;
    }
  }

  /** Writes `certificate` with check-and-set against the version read in the re-check. */
  private async store(
    certificate: CertificateData,
    stored: StoredFacts | undefined,
    reason: PlanReason,
    log: Logger,
  ): Promise<void> {
    const { store, storeHealth, events, clock } = this.deps;
    const version = await storeHealth.observe(() => store.put(certificate, stored?.version ?? 0));
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
        not_after: certificate.notAfter.toISOString(),
        issuer: certificate.issuer,
        store: store.description,
      },
      outcome === 'renewed' ? 'certificate renewed' : 'certificate obtained',
    );
  }

  private async retire(hostname: string, stored: StoredFacts, plan: Plan): Promise<void> {
    await this.deps.storeHealth.observe(() => this.deps.store.delete(hostname, stored.version));
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
