/**
 * Turns catalog snapshots into work. For each snapshot it computes the desired set (a pure
 * function of the tags), keeps the Fabio challenge routes in step with it, and plans every name
 * that is new: the plan reads the store, decides (pure), and submits what needs issuing to the
 * queue. The renewal scan calls `reconcileAll` to plan every name again.
 */
import type { KeyType, StoredRecord } from '../domain/certificate.js';
import { challengeRouteTags } from '../domain/challenge-routes.js';
import { desiredFromCatalog, type DesiredOptions } from '../domain/desired.js';
import { normalizeHostname } from '../domain/hostname.js';
import type { DeclaredHostname, RejectedHostname } from '../domain/hostnames-types.js';
import { planCertificate, type DesiredCertificate, type Plan, type PlanOptions } from '../domain/plan.js';
import { renewalSpreadDelayMs } from '../domain/spread.js';
import { describeError } from '../errors.js';
import { EVENTS, F, type Logger } from '../logging.js';
import type { CertificateStore } from '../ports/certificate-store.js';
import type { Clock } from '../ports/clock.js';
import type { CatalogSnapshot } from '../ports/discovery.js';
import type { ServiceRegistration } from '../ports/service-registration.js';
import type { IssuanceQueue } from './queue.js';
import type { CertificateStatus } from './status.js';

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

export class Reconciler {
  private declared = new Map<string, DeclaredHostname>();
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
    const services = Object.fromEntries(Object.entries(snapshot.services).filter(([name]) => name !== this.options.ownServiceName));
    const { hostnames, rejected } = desiredFromCatalog(services, this.options.desired);
    const next = new Map(hostnames.map((h) => [h.hostname, h]));
    for (const extra of this.options.extraHostnames) {
      const normalized = normalizeHostname(extra);
      if (!normalized.ok) {
        rejected.push({ value: extra, reason: normalized.reason, service: EXTRA_SOURCE, tag: '' });
        continue;
      }
      const existing = next.get(normalized.hostname);
      next.set(normalized.hostname, { hostname: normalized.hostname, services: [...(existing?.services ?? []), EXTRA_SOURCE].sort() });
    }
    this.logNewRejections(rejected);
    const previous = this.declared;
    this.declared = next;
    this.rejectedNames = rejected;
    this.lastSync = { at: this.deps.clock.now(), services: Object.keys(services).length };

    const now = this.deps.clock.now();
    for (const name of previous.keys()) if (!next.has(name)) this.undeclared.set(name, now);
    for (const name of next.keys()) this.undeclared.delete(name);
    const added = [...next.keys()].filter((h) => !previous.has(h));
    const removed = [...previous.keys()].filter((h) => !next.has(h));
    this.log.info({ [F.event]: EVENTS.discoverySnapshot, index: snapshot.index, managed: next.size, added: added.length, removed: removed.length, rejected: rejected.length }, 'catalog snapshot applied');

    await this.updateRegistration();
    await Promise.all(added.map((hostname) => this.reconcile(hostname)));
  }

  /** Plans every name again: declared ones and everything in the store. For the renewal scan. */
  async reconcileAll(): Promise<void> {
    const stored = await this.deps.store.list();
    const names = new Set([...this.declared.keys(), ...stored]);
    for (const name of names) await this.reconcile(name);
  }

  /** Reads the store for one certId, plans, and submits the work the plan calls for. */
  async reconcile(certId: string): Promise<Plan | undefined> {
    let stored: StoredRecord | undefined;
    try {
      stored = await this.deps.store.get(certId);
    } catch (err) {
      this.log.warn({ [F.certId]: certId, [F.err]: describeError(err) }, 'store read failed; will retry from the queue');
      this.deps.queue.submit(certId, { reason: 'StoreUnreadable' });
      return undefined;
    }
    const now = this.deps.clock.now();
    const plan = planCertificate(now, this.desiredFor(certId), stored, this.options.plan, this.undeclared.get(certId));
    this.recordPlan(certId, plan, stored);
    if (plan.action === 'keep') return plan;
    let notBefore: Date | undefined;
    const notAfter = stored?.certificate?.notAfter;
    if (plan.reason === 'Expiring' && !plan.emergency && notAfter) {
      notBefore = new Date(now.getTime() + renewalSpreadDelayMs(certId, this.options.renewSpreadMs, notAfter.getTime() - now.getTime()));
    }
    this.deps.queue.submit(certId, { reason: plan.reason, emergency: plan.emergency, notBefore });
    return plan;
  }

  desiredFor(certId: string): DesiredCertificate | undefined {
    if (!this.declared.has(certId)) return undefined;
    return { certId, hostnames: [certId], directoryUrl: this.options.directoryUrl, keyType: this.options.keyType };
  }

  undeclaredSince(certId: string): Date | undefined {
    return this.undeclared.get(certId);
  }

  recordPlan(certId: string, plan: Plan, stored: StoredRecord | undefined): void {
    if (!stored && !this.declared.has(certId)) {
      this.known.delete(certId);
      return;
    }
    this.known.set(certId, { plan, expiresAt: stored?.certificate?.notAfter, managed: stored?.managed ?? true });
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

  /** One line per declared or stored name, for GET /status. */
  certificateStatuses(): CertificateStatus[] {
    const names = new Set([...this.declared.keys(), ...this.known.keys()]);
    return [...names].sort().map((hostname) => {
      const known = this.known.get(hostname);
      const job = this.deps.queue.state(hostname);
      let state: CertificateStatus['state'] = 'pending';
      if (known && !known.managed) state = 'unmanaged';
      else if (job?.phase === 'running') state = 'issuing';
      else if (job && job.consecutiveFailures > 0) state = 'failed';
      else if (!job && known?.plan.action === 'keep' && known.expiresAt) state = 'valid';
      return {
        hostname,
        state,
        reason: known?.plan.reason,
        services: this.declared.get(hostname)?.services ?? [],
        expiresAt: known?.expiresAt?.toISOString(),
        renewsAt: known?.plan.renewAt?.toISOString(),
        lastError: job?.lastError,
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
      this.log.error({ [F.err]: describeError(err) }, 'could not update the service registration; challenge routes may be stale');
    }
  }

  private logNewRejections(rejected: RejectedHostname[]): void {
    const before = new Set(this.rejectedNames.map((r) => `${r.service}\u0000${r.value}`));
    for (const r of rejected) {
      if (before.has(`${r.service}\u0000${r.value}`)) continue;
      this.log.warn({ [F.event]: EVENTS.hostnameRejected, [F.hostname]: r.value, [F.reason]: r.reason, [F.service]: r.service, tag: r.tag }, 'hostname refused');
    }
  }
}
