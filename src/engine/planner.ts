/**
 * Planning: for each hostname, what the store holds, what the planner decides (pure,
 * domain/plan.ts), and the queue job the decision calls for. Three callers:
 *
 * - a desired-set change (`applyChange`): the names that joined or left are read and planned;
 *   queued work for a name that left is cancelled, so it never reaches the CA;
 * - the renewal scan (`scan`): every known name is planned from memory first (no I/O), then every
 *   name not read since the previous scan started is read again (at the first scan: not read since
 *   the service started), so another instance's writes and a damaged record are noticed, and no
 *   name is read twice per scan interval;
 * - an instance that does not lead the scan runs the same scan with `submit: false`, so its status
 *   and health stay current without ordering anything.
 *
 * Operator requests (engine/requests.ts) are listed again at the start of each scan and planned
 * with their names (a request taken by an instance that died is carried out by the next scan); a
 * name whose plan keeps its certificate but that still has a request gets a job too, so the worker
 * settles the request (finishes a revocation, removes it).
 *
 * Every read goes through the shared Limiter, so a pass over ten thousand names keeps a bounded
 * number of store requests open. A read that fails is logged, the name keeps its last known facts,
 * and (when submitting) the queue gets a job for it, whose retries wait in the queue.
 */
import { factsOf, type StoredFacts } from '../domain/certificate.js';
import { planCertificate, type Plan, type PlanOptions } from '../domain/plan.js';
import { renewalSpreadDelayMs } from '../domain/spread.js';
import { describeError } from '../errors.js';
import { EVENTS, F, type Logger } from '../logging.js';
import type { CertificateStore } from '../ports/certificate-store.js';
import type { Clock } from '../ports/clock.js';
import type { DesiredChange, DesiredSet } from './desired-set.js';
import type { EngineEvents } from './events.js';
import type { Limiter } from './limiter.js';
import type { IssuanceQueue } from './queue.js';
import type { OperatorRequests } from './requests.js';
import type { StoreHealth } from './store-health.js';
import type { StoreIndex } from './store-index.js';

export interface PlannerDeps {
  store: CertificateStore;
  index: StoreIndex;
  desired: DesiredSet;
  queue: Pick<IssuanceQueue, 'submit' | 'cancel'>;
  events: EngineEvents;
  limiter: Limiter;
  storeHealth: StoreHealth;
  clock: Clock;
  logger: Logger;
  planOptions: PlanOptions;
  /** Window over which routine renewals are spread (domain/spread.ts). */
  renewSpreadMs: number;
  /** Operator requests, planned with their names; none: no request is ever planned. */
  requests?: Pick<OperatorRequests, 'refresh' | 'forHostname' | 'hostnames'>;
}

export interface ScanSummary {
  /** Names planned. */
  planned: number;
  /** Names read from the store. */
  read: number;
  /** Jobs the scan submitted (0 when not submitting). */
  submitted: number;
}

export class Planner {
  private readonly log: Logger;
  /** Names read after this were read by this scan interval already. */
  private rereadBeforeMs: number;

  constructor(private readonly deps: PlannerDeps) {
    this.log = deps.logger.child({ [F.component]: 'planner' });
    this.rereadBeforeMs = deps.clock.nowMs();
  }

  /** Cancels the queued or running work of the names a desired-set change removed, so it never reaches the CA. */
  cancelRemoved(change: DesiredChange): void {
    for (const hostname of change.removed) this.deps.queue.cancel(hostname, 'no longer managed');
  }

  /**
   * Plans the names a desired-set change touched (cancelling the work of names that left first).
   * A new name the last listing of the store did not show is planned as having nothing stored,
   * without a read: the worker reads it under the lock before anything is ordered, so a record
   * another instance wrote since the listing is still found in time.
   */
  async applyChange(change: DesiredChange): Promise<void> {
    this.cancelRemoved(change);
    const { index } = this.deps;
    const toRead = [...change.removed];
    for (const hostname of change.added) {
      if (index.hasListing() && !index.has(hostname))
        this.planFrom(hostname, undefined, { submit: true, readStartedAtMs: undefined });
      else toRead.push(hostname);
    }
    await this.planFresh(toRead, { submit: true });
  }

  /** Reads each name (through the limiter) and plans it; submits the work plans call for when `submit`. */
  async planFresh(hostnames: Iterable<string>, { submit }: { submit: boolean }): Promise<number> {
    let submitted = 0;
    await this.deps.limiter.map(hostnames, async (hostname) => {
      if (await this.readAndPlan(hostname, submit)) submitted++;
    });
    return submitted;
  }

  /**
   * The renewal scan: lists the store, plans every managed or stored name from what is known, then
   * reads every listed name not read since the previous scan started and plans it from the fresh
   * read.
   */
  async scan({ submit }: { submit: boolean }): Promise<ScanSummary> {
    const { index, desired, limiter, storeHealth, store, clock } = this.deps;
    const startedAtMs = clock.nowMs();
    const rereadBefore = this.rereadBeforeMs;
    this.rereadBeforeMs = startedAtMs;
    const listed = await limiter.run(() => storeHealth.observe(() => store.list()));
    index.applyListing(listed, startedAtMs);
    const requests = this.deps.requests;
    await requests
      ?.refresh()
      .catch((err: unknown) =>
        this.log.warn({ [F.err]: describeError(err) }, 'could not list operator requests; planning with those known'),
      );
    const names = new Set<string>([
      ...desired.managedHostnames(),
      ...index.hostnames(),
      ...(requests?.hostnames() ?? []),
    ]);
    const toRead: string[] = [];
    let submitted = 0;
    for (const hostname of names) {
      const readAt = index.readAtMs(hostname);
      if (index.has(hostname) && readAt === undefined) {
        toRead.push(hostname); // listed, never read
        continue;
      }
      if (this.planFrom(hostname, index.facts(hostname), { submit, readStartedAtMs: undefined })) submitted++;
      // Names read before the previous scan started are read again. A name the listing did not
      // show is not read: the listing is as fresh as a read, and another instance's write of it
      // shows up in the next listing.
      if (readAt !== undefined && readAt < rereadBefore) toRead.push(hostname);
    }
    submitted += await this.planFresh(toRead, { submit });
    return { planned: names.size, read: toRead.length, submitted };
  }

  /** Reads `hostname` and plans it. Returns whether a job was submitted. */
  private async readAndPlan(hostname: string, submit: boolean): Promise<boolean> {
    let facts: StoredFacts | undefined;
    const startedAtMs = this.deps.clock.nowMs();
    try {
      const record = await this.deps.storeHealth.observe(() => this.deps.store.get(hostname));
      facts = record === undefined ? undefined : factsOf(record);
    } catch (err) {
      this.log.warn({ [F.hostname]: hostname, [F.err]: describeError(err) }, 'store read failed; the queue retries it');
      if (!submit || !(this.deps.desired.isManaged(hostname) || this.deps.index.has(hostname))) return false;
      return this.deps.queue.submit(hostname, { reason: 'StoreUnreadable' });
    }
    if (this.deps.index.isStale(hostname, startedAtMs)) return false; // a newer read or write won
    return this.planFrom(hostname, facts, { submit, readStartedAtMs: startedAtMs });
  }

  /**
   * Plans `hostname` from `facts` (no I/O) and submits the job the plan calls for.
   * `readStartedAtMs` is when the read of `facts` started, undefined when they come from the
   * index. Returns whether a job was submitted.
   */
  planFrom(
    hostname: string,
    facts: StoredFacts | undefined,
    { submit, readStartedAtMs }: { submit: boolean; readStartedAtMs: number | undefined },
  ): boolean {
    const { desired, clock, planOptions } = this.deps;
    const now = clock.now();
    if (facts !== undefined) desired.noteStoredUndeclared(hostname, now);
    const request = this.deps.requests?.forHostname(hostname);
    const plan = planCertificate(
      now,
      desired.desiredFor(hostname),
      facts,
      planOptions,
      desired.undeclaredSince(hostname),
      request,
    );
    this.deps.events.emit({ type: 'planned', hostname, plan, stored: facts, readStartedAtMs });
    if (facts === undefined && !desired.isManaged(hostname)) desired.forget(hostname);
    if (plan.reason === 'NewerFormat' && readStartedAtMs !== undefined) {
      this.log.warn(
        { [F.event]: EVENTS.recordNewerFormat, [F.hostname]: hostname, [F.reason]: facts?.problem },
        'stored certificate was written by a newer release; left alone',
      );
    }
    if (!submit || plan.reason === 'NewerFormat') return false;
    // A kept certificate with a request left: the worker settles the request.
    if (plan.action === 'keep' && request !== undefined)
      return this.deps.queue.submit(hostname, { reason: plan.reason });
    if (plan.action === 'keep') return false;
    if (plan.reason === 'Unparseable' && readStartedAtMs !== undefined) {
      this.log.warn(
        { [F.hostname]: hostname, [F.reason]: plan.reason, [F.err]: facts?.problem },
        'stored certificate is unreadable; reissuing',
      );
    }
    return this.deps.queue.submit(hostname, {
      reason: plan.reason,
      emergency: plan.emergency,
      notBefore: this.spreadUntil(hostname, plan, facts, now),
    });
  }

  /** Routine renewals are spread over a window by a stable hash of the name; everything else starts now. */
  private spreadUntil(hostname: string, plan: Plan, facts: StoredFacts | undefined, now: Date): Date | undefined {
    const notAfter = facts?.certificate?.notAfter;
    if (plan.reason !== 'Expiring' || plan.emergency || notAfter === undefined) return undefined;
    const delay = renewalSpreadDelayMs(hostname, this.deps.renewSpreadMs, notAfter.getTime() - now.getTime());
    return new Date(now.getTime() + delay);
  }
}
