/**
 * Does one certificate's work: lock → re-check → act → check-and-set write → release.
 *
 * - Before the lock, holds the order gate already knows (a spent budget, a CA pause) defer the job
 *   from memory: a waiting name costs no lock, ledger or store request. A name with nothing stored
 *   whose challenge route is new is probed before the lock too, so that a route not live yet costs
 *   the probe alone (engine/order-gate.ts `preflightNewRoute`).
 * - The re-check plans again from a fresh read of the store, so a job queued long ago, or one that
 *   another instance already finished, does nothing.
 * - Write-ahead: before an order is finalized its pending record (key, order URL) is durable in
 *   the store; a pending record found in the re-check is completed (`issuer.resume`) before any new
 *   order, so a certificate the CA issued is downloaded again, never bought again.
 * - The write is a check-and-set against the version read in the re-check, so a worker that lost
 *   its lock cannot overwrite a newer certificate.
 * - What happened is published as engine events (planned, stored, retired, failed); the worker
 *   calls nothing back.
 * - Operator requests (engine/requests.ts): the re-check also reads the name's request from the
 *   request store, and the plan carries it out (Adoptable: the record is adopted, nothing is
 *   ordered; Revoked: the certificate is revoked, then replaced; Requested: replaced). A request
 *   another instance already carried out, or that cannot be any more, is settled: what is left of
 *   it (a revocation not yet confirmed) is done, and it is removed.
 */
import type { CertificateData, PendingOrder, StoredFacts, StoredRecord } from '../domain/certificate.js';
import { factsOf } from '../domain/certificate.js';
import {
  planCertificate,
  sameHostnames,
  type DesiredCertificate,
  type Plan,
  type PlanOptions,
  type PlanReason,
} from '../domain/plan.js';
import { isRequestOpen, needsRevocation, type StoredOperatorRequest } from '../domain/request.js';
import { revokesBeforeAdmission } from '../domain/revocation.js';
import { splitPemCertificates } from '../domain/pem.js';
import { AbortedError, ConsulAcmeError, describeError, LockLostError } from '../errors.js';
import { EVENTS, F, type Logger } from '../logging.js';
import type { CertificateStore } from '../ports/certificate-store.js';
import type { Clock } from '../ports/clock.js';
import type { IssuedCertificate, Issuer } from '../ports/issuer.js';
import type { Locker } from '../ports/locker.js';
import type { DesiredSet } from './desired-set.js';
import type { EngineEvents } from './events.js';
import type { OrderGate, PreflightVerdict } from './order-gate.js';
import type { JobOutcome, JobRun } from './queue.js';
import { leafSerial, type OperatorRequests } from './requests.js';
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
  index: Pick<StoreIndex, 'facts' | 'has'>;
  events: EngineEvents;
  storeHealth: StoreHealth;
  /** Pauses, budgets and the pre-flight check, asked before every order. */
  gate?: OrderGate;
  /** Operator requests (reissue, revoke, adopt); none: no request is ever read. */
  requests?: Pick<OperatorRequests, 'read' | 'markRevoked' | 'complete' | 'forHostname'>;
}

/** The Consul KV key (under the locker's prefix) that guards one certificate. */
export function certificateLockKey(hostname: string): string {
  return `certs/${hostname}`;
}

/**
 * Whether an order for `desired` renews `stored`: the same names from the same directory. Let's
 * Encrypt exempts those from its order limits; a certificate from another directory (staging,
 * before production) is new to this CA.
 *
 * An adopted certificate (src/domain/adopt.ts) records as its directory the one consul-acme
 * renews it from, because an ACME certificate does not name the directory that issued it. So the
 * first order for an adopted name counts as a renewal here, as Let's Encrypt counts an order for
 * exactly the names of an earlier certificate of its own, whichever account obtained it. Should
 * the adopted certificate come from another CA, the CA counts that order as new while our budgets
 * do not; its rateLimited answer, if any, still pauses the scope (engine/order-gate.ts).
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
    const request = this.deps.requests?.forHostname(hostname);
    // A compromised key is revoked before any budget is asked (domain/revocation.ts): no hold from memory.
    const revokesFirst = request?.revokeReason;
    if (expected !== undefined && !(revokesFirst !== undefined && revokesBeforeAdmission(revokesFirst))) {
      const held = this.deps.gate?.heldInMemory(
        expected.hostnames,
        isRenewalOf(this.deps.index.facts(hostname), expected),
      );
      if (held && !held.admitted) return { kind: 'deferred', until: held.until, why: held.why };
    }
    // A name with nothing stored and no request whose route is new is probed first (engine/order-gate.ts).
    let early: { hostnames: readonly string[]; verdict: PreflightVerdict } | undefined;
    if (expected !== undefined && !this.deps.index.has(hostname) && request === undefined) {
      const verdict = await this.deps.gate?.preflightNewRoute(expected.hostnames, signal);
      if (verdict?.kind === 'wait')
        return { kind: 'deferred', until: verdict.admission.until, why: verdict.admission.why };
      if (verdict) early = { hostnames: expected.hostnames, verdict };
    }
    const lock = await this.deps.locker.tryAcquire(certificateLockKey(hostname));
    if (!lock) {
      this.log.debug({ [F.hostname]: hostname }, 'certificate is locked by another instance');
      return { kind: 'busy' };
    }
    const work = AbortSignal.any([signal, lock.signal]);
    try {
      return await this.underLock(run, work, early);
    } catch (err) {
      if (lock.signal.aborted && !signal.aborted) throw new LockLostError(certificateLockKey(hostname), { cause: err });
      if (signal.aborted && !(err instanceof AbortedError))
        throw new AbortedError(`work on ${hostname}`, { cause: err });
      throw err;
    } finally {
      await lock.release();
    }
  }

  /** `early`: the pre-flight verdict reached before the lock, and for which names. */
  private async underLock(
    run: JobRun,
    signal: AbortSignal,
    early: { hostnames: readonly string[]; verdict: PreflightVerdict } | undefined,
  ): Promise<JobOutcome> {
    const { hostname } = run;
    const { store, storeHealth, events, clock, planOptions } = this.deps;
    const readStartedAtMs = clock.nowMs();
    const [[record, pending], requestRead] = await Promise.all([
      storeHealth.observe(() => Promise.all([store.get(hostname), store.getPending(hostname)])),
      this.deps.requests?.read(hostname),
    ]);
    let request = requestRead;
    const stored = record === undefined ? undefined : factsOf(record);
    const desired = this.deps.desired.desiredFor(hostname);
    const plan = planCertificate(
      clock.now(),
      desired,
      stored,
      planOptions,
      this.deps.desired.undeclaredSince(hostname),
      request,
    );
    events.emit({ type: 'planned', hostname, plan, stored, readStartedAtMs });
    const log = this.log.child({ [F.hostname]: hostname, [F.reason]: plan.reason, [F.attempt]: run.attempt });
    // (An adopt plan always has a desired certificate: domain/plan.ts adopts declared names only.)
    if (plan.action === 'keep' || plan.action === 'retire' || !desired) {
      // A pending order nobody needs any more: its certificate was stored, or the name left.
      if (pending) await this.discardPending(pending, 'no longer needed');
      if (plan.action === 'retire' && stored) await this.retire(hostname, stored, plan);
      // A request another instance carried out, or one that cannot be carried out any more.
      if (request) await this.settle(request, record, plan.adoptionRefused, signal, log);
      return { kind: 'done' };
    }
    try {
      if (plan.action === 'adopt' && stored) {
        await this.adopt(stored, desired, request, log);
        return { kind: 'done' };
      }
      if (pending) {
        if (this.canResume(pending, desired)) {
          if (await this.resume(pending, desired, stored, plan, signal, log)) {
            return await this.settleAfterStore(hostname, request, signal, log);
          }
        } else {
          await this.discardPending(pending, 'it was placed for other names, key type or directory');
        }
      }
      // A compromised key stops being trusted at once, whatever the budgets say (domain/revocation.ts).
      if (plan.reason === 'Revoked' && request?.revokeReason && revokesBeforeAdmission(request.revokeReason))
        request = await this.revokeFor(request, record, signal, log);
      // The verdict reached before the lock holds for those names only.
      const verdict = early && sameHostnames(desired.hostnames, early.hostnames) ? early.verdict : undefined;
      const admission = await this.deps.gate?.admit(desired.hostnames, isRenewalOf(stored, desired), signal, verdict);
      if (admission && !admission.admitted) return { kind: 'deferred', until: admission.until, why: admission.why };
      if (plan.reason === 'Revoked' && request) request = await this.revokeFor(request, record, signal, log);
      await this.obtain(desired, stored, plan, signal, log);
      return await this.settleAfterStore(hostname, request, signal, log);
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

  /**
   * Takes over a record another tool wrote (plan Adoptable): the store writes the same certificate
   * and key again as consul-acme's, with check-and-set on the version planned from. Nothing is ordered.
   */
  private async adopt(
    stored: StoredFacts,
    desired: DesiredCertificate,
    request: StoredOperatorRequest | undefined,
    log: Logger,
  ): Promise<void> {
    const { store, storeHealth, clock } = this.deps;
    const { version, certificate } = await storeHealth.observe(() =>
      store.adopt(stored.hostname, stored.version, { directoryUrl: desired.directoryUrl, adoptedAt: clock.now() }),
    );
    this.announceStored(certificate, version, 'adopted', 'Adoptable');
    log.info(
      {
        [F.event]: EVENTS.certAdopted,
        version,
        serial: leafSerial(certificate.certPem),
        not_after: certificate.notAfter.toISOString(),
        issuer: certificate.issuer,
        store: store.description,
        requested: request !== undefined,
      },
      'certificate adopted',
    );
    if (request) await this.deps.requests?.complete(request, 'done');
  }

  /**
   * Revokes the certificate a revoke request names, unless the CA confirmed it already; with the
   * stored key when that certificate is still the stored one (so a certificate another account
   * obtained can be revoked too). Resolves the request as it now stands.
   */
  private async revokeFor(
    request: StoredOperatorRequest,
    record: StoredRecord | undefined,
    signal: AbortSignal,
    log: Logger,
  ): Promise<StoredOperatorRequest> {
    const { clock, issuer, requests } = this.deps;
    const certPem = request.replaces?.certPem;
    if (
      !needsRevocation(request, clock.now()) ||
      certPem === undefined ||
      request.revokeReason === undefined ||
      !requests
    )
      return request;
    const leaf = splitPemCertificates(certPem)[0];
    const storedLeaf =
      record?.certificate === undefined ? undefined : splitPemCertificates(record.certificate.certPem)[0];
    const keyPem = leaf !== undefined && leaf === storedLeaf ? record?.certificate?.keyPem : undefined;
    const outcome = await issuer.revoke(
      { certPem, reason: request.revokeReason, ...(keyPem ? { keyPem } : {}) },
      signal,
    );
    log.info(
      {
        [F.event]: EVENTS.certRevoked,
        serial: request.replaces?.serial,
        revocation_reason: request.revokeReason,
        already_revoked: outcome.alreadyRevoked,
        signed_with: outcome.signedWith,
      },
      outcome.alreadyRevoked ? 'certificate was revoked already' : 'certificate revoked',
    );
    return requests.markRevoked(request, clock.now());
  }

  /**
   * Finishes a request the plan does not carry out: revokes what is still to be revoked, then
   * removes it, as done (another instance replaced or adopted the certificate) or dropped (the
   * name is no longer declared, or the record cannot be adopted).
   */
  private async settle(
    request: StoredOperatorRequest,
    record: StoredRecord | undefined,
    adoptionRefused: string | undefined,
    signal: AbortSignal,
    log: Logger,
    replaced = false,
  ): Promise<void> {
    const current = await this.revokeFor(request, record, signal, log);
    const stored = record === undefined ? undefined : factsOf(record);
    if (replaced || !isRequestOpen(current, stored)) {
      await this.deps.requests?.complete(current, 'done');
      return;
    }
    if (adoptionRefused !== undefined) {
      log.warn({ [F.event]: EVENTS.adoptRefused, [F.reason]: adoptionRefused }, 'record not adopted');
    }
    await this.deps.requests?.complete(
      current,
      'dropped',
      adoptionRefused ??
        (this.deps.desired.desiredFor(request.hostname) === undefined ? 'NoLongerDeclared' : 'NotManaged'),
    );
  }

  /**
   * After a certificate was stored: the name's request is read again, when this run carried one
   * out or this instance accepted one meanwhile. The one this run carried out (`carriedOut`, same
   * version) is finished as done (the certificate it named was just replaced, whatever the clocks
   * say). One that arrived meanwhile is settled if it named the replaced certificate; if it names
   * the new one, it is left for another run, and this resolves a deferral until now, so the queue
   * runs the name again at once.
   */
  private async settleAfterStore(
    hostname: string,
    carriedOut: StoredOperatorRequest | undefined,
    signal: AbortSignal,
    log: Logger,
  ): Promise<JobOutcome> {
    const requests = this.deps.requests;
    const done: JobOutcome = { kind: 'done' };
    if (!requests) return done;
    // Without a request, only one accepted here meanwhile needs a look (the mirror has it): one
    // accepted by another instance is that instance's job, which waits for this lock and finds the
    // new certificate.
    if (carriedOut === undefined && requests.forHostname(hostname) === undefined) return done;
    const request = await requests.read(hostname);
    if (!request) return done;
    const record = await this.deps.storeHealth.observe(() => this.deps.store.get(hostname));
    if (carriedOut !== undefined && request.version === carriedOut.version) {
      await this.settle(request, record, undefined, signal, log, true);
      return done;
    }
    if (isRequestOpen(request, record === undefined ? undefined : factsOf(record))) {
      return {
        kind: 'deferred',
        until: this.deps.clock.now(),
        why: 'an operator request arrived while the certificate was replaced',
      };
    }
    await this.settle(request, record, undefined, signal, log);
    return done;
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
    const { store, storeHealth } = this.deps;
    const version = await storeHealth.observe(() => store.put(certificate, stored?.version ?? 0), 'write');
    await storeHealth
      .observe(() => store.deletePending(certificate.hostname), 'write')
      .catch((err: unknown) =>
        log.warn({ [F.err]: describeError(err) }, 'could not remove the pending order; the next attempt does'),
      );
    const outcome = stored?.certificate !== undefined ? 'renewed' : 'obtained';
    this.announceStored(certificate, version, outcome, reason);
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

  /** Tells the engine what was just written, and plans it: the status shows it valid with its renewal time. */
  private announceStored(
    certificate: CertificateData,
    version: number,
    outcome: 'obtained' | 'renewed' | 'adopted',
    reason: PlanReason,
  ): void {
    const { events, clock, desired } = this.deps;
    const hostname = certificate.hostname;
    const writtenAtMs = clock.nowMs();
    events.emit({ type: 'stored', certificate, version, outcome, reason, writtenAtMs });
    const facts = factsOf({ hostname, version, managed: true, certificate, problem: undefined });
    const plan = planCertificate(
      clock.now(),
      desired.desiredFor(hostname),
      facts,
      this.deps.planOptions,
      desired.undeclaredSince(hostname),
    );
    events.emit({ type: 'planned', hostname, plan, stored: facts, readStartedAtMs: writtenAtMs });
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
