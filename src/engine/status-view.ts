/**
 * The status projection: one line per declared, refused or stored hostname, and the certificate
 * health Consul's check reads, computed from the desired set, the store index, the queue and the
 * last plan of each name. It only reads; the engine's events keep its one piece of state (the last
 * plan per name) current.
 */
import { ADOPTION_REFUSAL_TEXT } from '../domain/adopt.js';
import {
  certificateHealth,
  withStoreFault,
  type CertificateHealth,
  type CertificateHealthInput,
} from '../domain/certificate-health.js';
import type { Plan } from '../domain/plan.js';
import type { DesiredSet } from './desired-set.js';
import type { EngineEvent } from './events.js';
import type { IssuanceQueue } from './queue.js';
import type { OperatorRequests } from './requests.js';
import type { CertificateStatus, PolicyStatus } from './status.js';
import type { StoreHealth } from './store-health.js';
import type { StoreIndex } from './store-index.js';
import type { StoredFacts } from '../domain/certificate.js';

/** Plans that mean the name is on its way out: its expiry is no reason to warn anyone. */
const LEAVING_REASONS: ReadonlySet<string> = new Set(['GracePeriod', 'NoLongerDeclared']);

export interface StatusViewDeps {
  desired: DesiredSet;
  index: StoreIndex;
  queue: Pick<IssuanceQueue, 'state' | 'consecutiveFailures'>;
  storeHealth: StoreHealth;
  /** Operator requests, shown with their names. */
  requests?: Pick<OperatorRequests, 'describe'>;
}

export interface HealthOptions {
  warnBeforeMs: number;
  /** Consecutive failures of a name that make the check critical. */
  criticalAfterFailures: number;
}

export class StatusView {
  private readonly plans = new Map<string, Plan>();

  constructor(private readonly deps: StatusViewDeps) {}

  onEvent(event: EngineEvent): void {
    if (event.type === 'planned') {
      // A plan from a read that a newer read or write overtook is stale (the index kept the newer one).
      if (event.readStartedAtMs !== undefined && this.deps.index.isStale(event.hostname, event.readStartedAtMs)) return;
      if (event.stored === undefined && !this.deps.desired.isManaged(event.hostname)) this.plans.delete(event.hostname);
      else this.plans.set(event.hostname, event.plan);
    } else if (event.type === 'retired') {
      this.plans.delete(event.hostname);
    }
  }

  /** One line per declared, refused or stored name, sorted by hostname. */
  certificateStatuses(): CertificateStatus[] {
    return this.hostnames().map((hostname) => this.statusOf(hostname));
  }

  /** Every declared, refused or stored name, sorted. */
  private hostnames(): string[] {
    const { desired, index } = this.deps;
    const names = new Set<string>([...desired.managedHostnames(), ...index.hostnames(), ...desired.refusedHostnames()]);
    return [...names].sort();
  }

  /** A stored record consul-acme does not manage and is not adopting: shown, never issued or warned about. */
  private isUnmanaged(facts: StoredFacts | undefined, plan: Plan | undefined): boolean {
    return facts !== undefined && !facts.managed && plan?.action !== 'adopt';
  }

  statusOf(hostname: string): CertificateStatus {
    const { desired, index, queue } = this.deps;
    const facts = index.facts(hostname);
    const plan = this.plans.get(hostname);
    const job = queue.state(hostname);
    const refusal = desired.isManaged(hostname) ? undefined : desired.refusal(hostname);
    let state: CertificateStatus['state'] = 'pending';
    if (facts?.newerFormat !== undefined) state = 'newer-format';
    else if (this.isUnmanaged(facts, plan)) state = 'unmanaged';
    else if (refusal) state = 'refused';
    else if (job?.phase === 'running') state = 'issuing';
    else if (job?.phase === 'deferred') state = 'waiting';
    else if (job && job.consecutiveFailures > 0) state = 'failed';
    else if (!job && plan?.action === 'keep' && facts?.certificate) state = 'valid';
    return {
      hostname,
      state,
      reason: plan?.reason,
      policy: refusal?.message,
      services: desired.declaringServices(hostname),
      expiresAt: facts?.certificate?.notAfter.toISOString(),
      renewsAt: plan?.renewAt?.toISOString(),
      retiresAt: plan?.retireAt?.toISOString(),
      lastError: job?.lastError ?? (facts?.newerFormat !== undefined ? facts.problem : undefined),
      waitingFor: job?.waitingFor,
      attempts: job?.consecutiveFailures ?? 0,
      nextAttemptAt: job && job.phase !== 'running' ? job.dueAt.toISOString() : undefined,
      adoptedAt: facts?.certificate?.adoptedAt?.toISOString(),
      adoption:
        plan?.adoptionRefused === undefined
          ? undefined
          : `not adopted: ${plan.adoptionRefused}: ${ADOPTION_REFUSAL_TEXT[plan.adoptionRefused]}`,
      request: this.deps.requests?.describe(hostname),
    };
  }

  policyStatus(): PolicyStatus {
    const policy = this.deps.desired.currentPolicy();
    return {
      deny: policy.deny.length,
      allow: policy.allow.length,
      always: policy.always.length,
      invalid: [...policy.invalid],
      unreadable: [...policy.unreadable],
      failsClosed: this.deps.desired.policyFailsClosed(),
    };
  }

  /**
   * The certificate health for Consul's check: critical when a certificate expired, a name failed on
   * every step of the retry schedule, or the store fails; warning when one expires within the
   * warning window. Names on their way out (grace period) are left out of the expiry checks.
   */
  health(now: Date, options: HealthOptions): CertificateHealth {
    // Consul asks every few seconds. Only names with something to say are handed on: a certificate
    // within the warning window (or expired), or a name at the failure limit. The rest pass, and
    // at 10,000 names building and sorting a line for each would be most of the instance's idle CPU.
    const { desired, index, queue } = this.deps;
    const nowMs = now.getTime();
    const inputs: CertificateHealthInput[] = [];
    const added = new Set<string>();
    const consider = (hostname: string): void => {
      if (added.has(hostname)) return;
      const facts = index.facts(hostname);
      const plan = this.plans.get(hostname);
      if (facts?.newerFormat !== undefined || this.isUnmanaged(facts, plan)) return;
      if (plan?.reason !== undefined && LEAVING_REASONS.has(plan.reason)) return;
      const notAfter = facts?.certificate?.notAfter;
      const attempts = queue.consecutiveFailures(hostname);
      const expiring = notAfter !== undefined && notAfter.getTime() - nowMs < options.warnBeforeMs;
      if (!expiring && attempts < options.criticalAfterFailures) return;
      added.add(hostname);
      inputs.push({ hostname, expiresAt: notAfter?.toISOString(), attempts });
    };
    // forEach rather than for-of: no iterator result per name.
    desired.managedSet().forEach(consider);
    index.forEachHostname(consider);
    for (const hostname of desired.refusedHostnames()) consider(hostname);
    inputs.sort((a, b) => (a.hostname < b.hostname ? -1 : a.hostname > b.hostname ? 1 : 0));
    return withStoreFault(certificateHealth(now, inputs, options), this.deps.storeHealth.state().error);
  }
}
