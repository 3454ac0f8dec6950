/**
 * Turns catalog snapshots and policy changes into work. The managed set is a pure function of
 * the catalog's tags, the extra-hostnames setting and the policy lists (deny, allow, always);
 * whenever an input changes it is recomputed, the Fabio challenge routes follow it, names that
 * left have their queued work cancelled, and every new name is planned: the plan reads the store,
 * decides (pure), and submits what needs issuing to the queue. The renewal scan calls
 * `reconcileAll` to plan every name again; instances that do not lead the scan call it with
 * `submit: false`, so their status and health stay current without ordering anything.
 */
import type { KeyType, StoredRecord } from '../domain/certificate.js';
import { challengeRouteTags } from '../domain/challenge-routes.js';
import { desiredFromCatalog, type DesiredOptions } from '../domain/desired.js';
import { normalizeHostname } from '../domain/hostname.js';
import type { DeclaredHostname, RejectedHostname } from '../domain/hostnames-types.js';
import { planCertificate, type DesiredCertificate, type Plan, type PlanOptions } from '../domain/plan.js';
import { applyPolicy, EMPTY_POLICY, type Policy, type RefusedHostname } from '../domain/policy.js';
import { renewalSpreadDelayMs } from '../domain/spread.js';
import { describeError } from '../errors.js';
import { EVENTS, F, type Logger } from '../logging.js';
import type { CertificateStore } from '../ports/certificate-store.js';
import type { Clock } from '../ports/clock.js';
import type { CatalogSnapshot } from '../ports/discovery.js';
import type { ServiceRegistration } from '../ports/service-registration.js';
import type { IssuanceQueue } from './queue.js';
import type { CertificateStatus, PolicyStatus } from './status.js';

export interface ReconcilerOptions {
  desired: DesiredOptions;
  /** Our own service name: its tags are the challenge routes we derive, never a source of names. */
  ownServiceName: string;
  /** Names managed even when no service declares them. */
  extraHostnames: readonly string[];
  directoryUrl: string;
  keyType: KeyType;
  plan: PlanOptions;
  /** Window over which routine renewals are spread (see renewalSpreadDelayMs). */
  renewSpreadMs: number;
}

export interface ReconcilerDeps {
  store: CertificateStore;
  queue: Pick<IssuanceQueue, 'submit' | 'cancel' | 'state'>;
  registration: ServiceRegistration | undefined;
  clock: Clock;
  logger: Logger;
}

interface Known {
  plan: Plan;
  expiresAt: Date | undefined;
  managed: boolean;
}

const EXTRA_SOURCE = '(extra hostnames setting)';
const ALWAYS_SOURCE = '(always-issued list)';

export class Reconciler {
  /** Valid names the catalog (and the extra-hostnames setting) declares, before policy. */
  private catalog = new Map<string, DeclaredHostname>();
  private policy: Policy = EMPTY_POLICY;
  /** The managed set: `catalog` after policy, plus always-issued names. */
  private declared = new Map<string, DeclaredHostname>();
  private refusedByPolicy = new Map<string, RefusedHostname>();
  private rejectedNames: RejectedHostname[] = [];
  private readonly known = new Map<string, Known>();
  private readonly undeclared = new Map<string, Date>();
  private lastSync: { at: Date; services: number } | undefined;
  private readonly log: Logger;

  constructor(
    private readonly deps: ReconcilerDeps,
    private readonly options: ReconcilerOptions,
  ) {
    this.log = deps.logger.child({ [F.component]: 'reconciler' });
  }

  /** Applies one whole catalog snapshot. */
  async applySnapshot(snapshot: CatalogSnapshot): Promise<void> {
    const services = Object.fromEntries(
      Object.entries(snapshot.services).filter(([name]) => name !== this.options.ownServiceName),
    );
    const { hostnames, rejected } = desiredFromCatalog(services, this.options.desired);
    const catalog = new Map(hostnames.map((h) => [h.hostname, h]));
    for (const extra of this.options.extraHostnames) {
      const normalized = normalizeHostname(extra);
      if (!normalized.ok) {
        rejected.push({ value: extra, reason: normalized.reason, service: EXTRA_SOURCE, tag: '' });
        continue;
      }
      const existing = catalog.get(normalized.hostname);
      catalog.set(normalized.hostname, {
        hostname: normalized.hostname,
        services: [...(existing?.services ?? []), EXTRA_SOURCE].sort(),
      });
    }
    this.logNewRejections(rejected);
    this.catalog = catalog;
    this.rejectedNames = rejected;
    this.lastSync = { at: this.deps.clock.now(), services: Object.keys(services).length };
    await this.recompute(`catalog index ${snapshot.index}`);
  }

  /** Applies new policy lists; before the first catalog snapshot they are only kept. */
  async applyPolicy(policy: Policy): Promise<void> {
    this.policy = policy;
    for (const problem of policy.invalid) {
      this.log.warn(
        {
          [F.event]: EVENTS.policyLineInvalid,
          list: problem.list,
          line: problem.line,
          text: problem.text,
          [F.reason]: problem.reason,
        },
        'policy line ignored',
      );
    }
    this.log.info(
      {
        [F.event]: EVENTS.policyChanged,
        deny: policy.deny.length,
        allow: policy.allow.length,
        always: policy.always.length,
        invalid: policy.invalid.length,
      },
      'policy lists applied',
    );
    if (this.hasSynced()) await this.recompute('policy change');
  }

  private async recompute(cause: string): Promise<void> {
    const { hostnames, refused } = applyPolicy([...this.catalog.keys()], this.policy);
    const next = new Map<string, DeclaredHostname>();
    for (const hostname of hostnames)
      next.set(hostname, this.catalog.get(hostname) ?? { hostname, services: [ALWAYS_SOURCE] });
    const refusedNow = new Map(refused.map((r) => [r.hostname, r]));
    for (const r of refused) {
      if (!this.refusedByPolicy.has(r.hostname))
        this.log.warn(
          { [F.event]: EVENTS.hostnameDenied, [F.hostname]: r.hostname, [F.reason]: r.message },
          'hostname refused by policy',
        );
    }
    this.refusedByPolicy = refusedNow;

    const previous = this.declared;
    this.declared = next;
    const now = this.deps.clock.now();
    const added = [...next.keys()].filter((h) => !previous.has(h));
    const removed = [...previous.keys()].filter((h) => !next.has(h));
    for (const name of removed) {
      this.undeclared.set(name, now);
      // Queued work for a name that left (or was denied) must not reach the CA.
      this.deps.queue.cancel(name, 'no longer managed');
    }
    for (const name of next.keys()) this.undeclared.delete(name);
    this.log.info(
      {
        [F.event]: EVENTS.discoverySnapshot,
        cause,
        managed: next.size,
        added: added.length,
        removed: removed.length,
        rejected: this.rejectedNames.length,
        refused: refused.length,
      },
      'managed hostnames updated',
    );

    await this.updateRegistration();
    await Promise.all([...added, ...removed].map((hostname) => this.reconcile(hostname)));
  }

  /**
   * Plans every name again: declared ones and everything in the store. For the renewal scan;
   * with `submit: false` it only refreshes what this instance knows (for the status and health).
   */
  async reconcileAll(options: { submit: boolean } = { submit: true }): Promise<void> {
    const stored = await this.deps.store.list();
    const names = new Set([...this.declared.keys(), ...stored]);
    for (const name of names) await this.reconcile(name, options);
  }

  /** Reads the store for one hostname, plans, and (unless told not to) submits the work the plan calls for. */
  async reconcile(hostname: string, { submit }: { submit: boolean } = { submit: true }): Promise<Plan | undefined> {
    let stored: StoredRecord | undefined;
    try {
      stored = await this.deps.store.get(hostname);
    } catch (err) {
      this.log.warn(
        { [F.hostname]: hostname, [F.err]: describeError(err) },
        'store read failed; will retry from the queue',
      );
      if (submit) this.deps.queue.submit(hostname, { reason: 'StoreUnreadable' });
      return undefined;
    }
    const now = this.deps.clock.now();
    // A stored name nobody declares that no snapshot saw leave (it left before this process
    // started): its grace period starts the first time it is planned, not at every scan.
    if (stored && !this.declared.has(hostname) && !this.undeclared.has(hostname)) this.undeclared.set(hostname, now);
    const plan = planCertificate(
      now,
      this.desiredFor(hostname),
      stored,
      this.options.plan,
      this.undeclared.get(hostname),
    );
    this.recordPlan(hostname, plan, stored);
    if (plan.action === 'keep' || !submit) return plan;
    if (plan.reason === 'Unparseable') {
      this.log.warn(
        { [F.hostname]: hostname, [F.reason]: plan.reason, [F.err]: stored?.problem },
        'stored certificate is unreadable; reissuing',
      );
    }
    let notBefore: Date | undefined;
    const notAfter = stored?.certificate?.notAfter;
    if (plan.reason === 'Expiring' && !plan.emergency && notAfter) {
      notBefore = new Date(
        now.getTime() + renewalSpreadDelayMs(hostname, this.options.renewSpreadMs, notAfter.getTime() - now.getTime()),
      );
    }
    this.deps.queue.submit(hostname, { reason: plan.reason, emergency: plan.emergency, notBefore });
    return plan;
  }

  desiredFor(hostname: string): DesiredCertificate | undefined {
    if (!this.declared.has(hostname)) return undefined;
    return { hostname, hostnames: [hostname], directoryUrl: this.options.directoryUrl, keyType: this.options.keyType };
  }

  undeclaredSince(hostname: string): Date | undefined {
    return this.undeclared.get(hostname);
  }

  recordPlan(hostname: string, plan: Plan, stored: StoredRecord | undefined): void {
    if (!stored && !this.declared.has(hostname)) {
      this.known.delete(hostname);
      this.undeclared.delete(hostname);
      return;
    }
    this.known.set(hostname, { plan, expiresAt: stored?.certificate?.notAfter, managed: stored?.managed ?? true });
  }

  hasSynced(): boolean {
    return this.lastSync !== undefined;
  }

  syncInfo(): { lastSyncAt: Date | undefined; services: number } {
    return { lastSyncAt: this.lastSync?.at, services: this.lastSync?.services ?? 0 };
  }

  managedHostnames(): string[] {
    return [...this.declared.keys()].sort();
  }

  rejected(): RejectedHostname[] {
    return [...this.rejectedNames];
  }

  /** The policy lists in force and their ignored lines, for the status. */
  policyStatus(): PolicyStatus {
    return {
      deny: this.policy.deny.length,
      allow: this.policy.allow.length,
      always: this.policy.always.length,
      invalid: [...this.policy.invalid],
    };
  }

  /** One line per declared, refused or stored name, for GET /status. */
  certificateStatuses(): CertificateStatus[] {
    const names = new Set([...this.declared.keys(), ...this.known.keys(), ...this.refusedByPolicy.keys()]);
    return [...names].sort().map((hostname) => {
      const known = this.known.get(hostname);
      const job = this.deps.queue.state(hostname);
      const refused = this.refusedByPolicy.get(hostname);
      let state: CertificateStatus['state'] = 'pending';
      if (known && !known.managed) state = 'unmanaged';
      else if (refused) state = 'refused';
      else if (job?.phase === 'running') state = 'issuing';
      else if (job?.deferredBecause) state = 'waiting';
      else if (job && job.consecutiveFailures > 0) state = 'failed';
      else if (!job && known?.plan.action === 'keep' && known.expiresAt) state = 'valid';
      return {
        hostname,
        state,
        reason: known?.plan.reason,
        policy: refused?.message,
        services: this.declared.get(hostname)?.services ?? this.catalog.get(hostname)?.services ?? [],
        expiresAt: known?.expiresAt?.toISOString(),
        renewsAt: known?.plan.renewAt?.toISOString(),
        lastError: job?.lastError,
        waitingFor: job?.deferredBecause,
        attempts: job?.consecutiveFailures ?? 0,
        nextAttemptAt: job && job.phase !== 'running' ? job.dueAt.toISOString() : undefined,
      };
    });
  }

  private async updateRegistration(): Promise<void> {
    if (!this.deps.registration) return;
    const tags = challengeRouteTags(this.managedHostnames(), this.options.desired.fabioTagPrefix);
    try {
      await this.deps.registration.update(tags);
      this.log.debug({ [F.event]: EVENTS.registrationUpdated, tags: tags.length }, 'challenge routes registered');
    } catch (err) {
      this.log.error(
        { [F.err]: describeError(err) },
        'could not update the service registration; challenge routes may be stale',
      );
    }
  }

  private logNewRejections(rejected: RejectedHostname[]): void {
    const before = new Set(this.rejectedNames.map((r) => `${r.service}\u0000${r.value}`));
    for (const r of rejected) {
      if (before.has(`${r.service}\u0000${r.value}`)) continue;
      this.log.warn(
        {
          [F.event]: EVENTS.hostnameRejected,
          [F.hostname]: r.value,
          [F.reason]: r.reason,
          [F.service]: r.service,
          tag: r.tag,
        },
        'hostname refused',
      );
    }
  }
}
