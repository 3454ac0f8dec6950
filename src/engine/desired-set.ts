/**
 * The desired set: which hostnames this service manages, kept up to date incrementally. Inputs are
 * the catalog snapshots (service → tags), the policy lists and the extra-hostnames setting; the
 * output of every change is the names that joined and left the managed set. No I/O, no waiting.
 *
 * A catalog snapshot costs work in proportion to what changed: a service whose tags are the same as
 * in the previous snapshot is not parsed again, and only the names of changed services are decided
 * again. A policy change decides every candidate again, with the compiled policy (a few look-ups
 * per name).
 *
 * A name is managed when it is a candidate (declared by a service or the extra-hostnames setting,
 * or an exact name of the always list) and the policy allows it. While the policy fails closed (a
 * list cannot be read) a name is managed only if a certificate for it is stored already, so that
 * certificates keep renewing and no new name is issued.
 */
import type { KeyType } from '../domain/certificate.js';
import { compareRejected, serviceDeclarations, type DesiredOptions } from '../domain/desired.js';
import { normalizeHostname } from '../domain/hostname.js';
import type { RejectedHostname } from '../domain/hostnames-types.js';
import type { DesiredCertificate } from '../domain/plan.js';
import {
  compilePolicy,
  EMPTY_POLICY,
  type CompiledPolicy,
  type Policy,
  type RefusedHostname,
} from '../domain/policy.js';

export interface DesiredSetOptions {
  tags: DesiredOptions;
  /** Our own services (the challenge routes and the health check): their tags are never a source of names. */
  ownServiceNames: readonly string[];
  /** Names managed even when no service declares them. */
  extraHostnames: readonly string[];
  directoryUrl: string;
  keyType: KeyType;
  /** Whether a certificate for `hostname` is stored (asked only while the policy fails closed). */
  hasCertificate: (hostname: string) => boolean;
}

export interface DesiredChange {
  /** Names that joined the managed set, sorted. */
  added: string[];
  /** Names that left it (no longer declared, or refused now), sorted. */
  removed: string[];
  /** Rejections not seen before (a malformed tag, an invalid name), to be logged once. */
  newlyRejected: RejectedHostname[];
  /** Names the policy refuses now that it did not refuse before, to be logged once. */
  newlyRefused: RefusedHostname[];
}

/** How the extra-hostnames setting appears among the declaring services. */
export const EXTRA_HOSTNAMES_SOURCE = '(extra hostnames setting)';
/** How the always-issued list appears among the declaring services. */
export const ALWAYS_LIST_SOURCE = '(always-issued list)';

interface ServiceEntry {
  /** The tags as given (an unchanged service may come with the same array again). */
  tags: readonly string[];
  /** The tags as one string, to tell a changed service from an unchanged one. */
  tagsKey: string;
  hostnames: string[];
  rejected: RejectedHostname[];
}

export class DesiredSet {
  private readonly services = new Map<string, ServiceEntry>();
  /** Candidate names → the services (and setting) that declare them. */
  private readonly declaredBy = new Map<string, Set<string>>();
  private readonly extraRejected: RejectedHostname[] = [];
  private policy: CompiledPolicy = compilePolicy(EMPTY_POLICY);
  private alwaysNames = new Set<string>();
  private readonly managed = new Set<string>();
  private readonly refused = new Map<string, RefusedHostname>();
  /** When each name that left the managed set (or was only ever stored) stopped being declared. */
  private readonly undeclared = new Map<string, Date>();
  private sortedManaged: string[] | undefined;
  private sortedRejected: RejectedHostname[] | undefined;
  private snapshotSeen = false;
  private readonly ownServices: ReadonlySet<string>;

  constructor(private readonly options: DesiredSetOptions) {
    this.ownServices = new Set(options.ownServiceNames);
    for (const extra of options.extraHostnames) {
      const normalized = normalizeHostname(extra);
      if (!normalized.ok) {
        this.extraRejected.push({ value: extra, reason: normalized.reason, service: EXTRA_HOSTNAMES_SOURCE, tag: '' });
        continue;
      }
      this.declare(normalized.hostname, EXTRA_HOSTNAMES_SOURCE);
    }
  }

  /**
   * Applies one whole catalog snapshot; only services whose tags changed are parsed again. At
   * 2,000 services nothing is copied for the unchanged ones: no entry arrays, no list of
   * rejections unless a service that has or had some changed.
   */
  applySnapshot(services: Readonly<Record<string, readonly string[]>>, now: Date): DesiredChange {
    const rejectedBefore = this.rejectedList();
    let rejectionsMoved = false;
    const touched = new Set<string>();
    const first = !this.snapshotSeen;
    this.snapshotSeen = true;
    // Names that no service declares, known before the first snapshot: the extra hostnames, and the
    // always list when the policy was read first (as it is at start).
    if (first) for (const hostname of [...this.declaredBy.keys(), ...this.alwaysNames]) touched.add(hostname);
    // How many of the services known before are in this snapshot: fewer than all means some left.
    let stayed = 0;
    for (const service of Object.keys(services)) {
      if (this.ownServices.has(service)) continue;
      const tags = services[service]!;
      const previous = this.services.get(service);
      if (previous !== undefined) stayed++;
      if (previous?.tags === tags) continue;
      const tagsKey = tags.join('\n');
      if (previous?.tagsKey === tagsKey) {
        previous.tags = tags;
        continue;
      }
      const declared = serviceDeclarations(service, tags, this.options.tags);
      for (const hostname of previous?.hostnames ?? []) this.undeclare(hostname, service, touched);
      for (const hostname of declared.hostnames) {
        this.declare(hostname, service);
        touched.add(hostname);
      }
      this.services.set(service, { tags, tagsKey, hostnames: declared.hostnames, rejected: declared.rejected });
      if ((previous?.rejected.length ?? 0) > 0 || declared.rejected.length > 0) rejectionsMoved = true;
    }
    if (stayed < this.services.size) {
      for (const service of this.services.keys()) {
        if (Object.hasOwn(services, service)) continue;
        const entry = this.services.get(service)!;
        for (const hostname of entry.hostnames) this.undeclare(hostname, service, touched);
        this.services.delete(service);
        if (entry.rejected.length > 0) rejectionsMoved = true;
      }
    }
    const change = this.decide(touched, now);
    if (rejectionsMoved) {
      this.sortedRejected = undefined;
      const before = new Set(rejectedBefore.map(rejectionKey));
      change.newlyRejected = this.rejectedList().filter((r) => !before.has(rejectionKey(r)));
    }
    return change;
  }

  /** Applies new policy lists: every candidate is decided again. */
  applyPolicy(policy: Policy, now: Date): DesiredChange {
    const previousAlways = this.alwaysNames;
    this.policy = compilePolicy(policy);
    this.alwaysNames = new Set(this.policy.alwaysNames);
    const touched = new Set<string>([...this.declaredBy.keys(), ...previousAlways, ...this.alwaysNames]);
    return this.snapshotSeen ? this.decide(touched, now) : emptyChange();
  }

  /** Decides `hostnames` again (e.g. after a certificate appeared or went while the policy fails closed). */
  reconsider(hostnames: Iterable<string>, now: Date): DesiredChange {
    return this.snapshotSeen ? this.decide(new Set(hostnames), now) : emptyChange();
  }

  hasSnapshot(): boolean {
    return this.snapshotSeen;
  }

  /** What the catalog and policy ask for under `hostname`; undefined when it is not managed. */
  desiredFor(hostname: string): DesiredCertificate | undefined {
    if (!this.managed.has(hostname)) return undefined;
    return { hostname, hostnames: [hostname], directoryUrl: this.options.directoryUrl, keyType: this.options.keyType };
  }

  isManaged(hostname: string): boolean {
    return this.managed.has(hostname);
  }

  /** The managed names, in no order (no copy, no sort: for callers that look at every name). */
  managedSet(): ReadonlySet<string> {
    return this.managed;
  }

  /** The managed names, sorted. */
  managedHostnames(): readonly string[] {
    this.sortedManaged ??= [...this.managed].sort();
    return this.sortedManaged;
  }

  /** The policy's refusal of `hostname`, if it refuses it. */
  refusal(hostname: string): RefusedHostname | undefined {
    return this.refused.get(hostname);
  }

  refusedHostnames(): IterableIterator<string> {
    return this.refused.keys();
  }

  /** The services (or setting, or list) that declare `hostname`, sorted. */
  declaringServices(hostname: string): string[] {
    const services = [...(this.declaredBy.get(hostname) ?? [])];
    if (this.alwaysNames.has(hostname)) services.push(ALWAYS_LIST_SOURCE);
    return services.sort();
  }

  /** Names and tags refused as invalid, sorted. */
  rejected(): RejectedHostname[] {
    return [...this.rejectedList()];
  }

  /** The rejections, sorted, kept until a service's rejections change (not a copy). */
  private rejectedList(): readonly RejectedHostname[] {
    this.sortedRejected ??= [...this.extraRejected, ...[...this.services.values()].flatMap((s) => s.rejected)].sort(
      compareRejected,
    );
    return this.sortedRejected;
  }

  /** When `hostname` stopped being declared (for the retirement grace period). */
  undeclaredSince(hostname: string): Date | undefined {
    return this.undeclared.get(hostname);
  }

  /**
   * A stored name nobody declares that no snapshot saw leave (it left before this process
   * started): its grace period starts the first time it is planned, not at every scan.
   */
  noteStoredUndeclared(hostname: string, now: Date): void {
    if (!this.managed.has(hostname) && !this.undeclared.has(hostname)) this.undeclared.set(hostname, now);
  }

  /** Forgets a name that is neither managed nor stored any more. */
  forget(hostname: string): void {
    if (!this.managed.has(hostname)) this.undeclared.delete(hostname);
  }

  /** The policy in force, for the status. */
  currentPolicy(): Policy {
    return this.policy.policy;
  }

  /** Why the policy fails closed now, or undefined. */
  policyFailsClosed(): string | undefined {
    return this.policy.failsClosed;
  }

  servicesSeen(): number {
    return this.services.size;
  }

  private declare(hostname: string, source: string): void {
    let by = this.declaredBy.get(hostname);
    if (!by) {
      by = new Set();
      this.declaredBy.set(hostname, by);
    }
    by.add(source);
  }

  private undeclare(hostname: string, source: string, touched: Set<string>): void {
    const by = this.declaredBy.get(hostname);
    if (!by) return;
    by.delete(source);
    if (by.size === 0) this.declaredBy.delete(hostname);
    touched.add(hostname);
  }

  /** Decides each touched name: managed, refused, or neither; returns who joined and who left. */
  private decide(touched: Set<string>, now: Date): DesiredChange {
    const change = emptyChange();
    for (const hostname of touched) {
      const candidate = this.declaredBy.has(hostname) || this.alwaysNames.has(hostname);
      const verdict = candidate ? this.policy.verdict(hostname) : undefined;
      const managedNow =
        verdict !== undefined &&
        (verdict.allowed || (verdict.verdict === 'unreadable' && this.options.hasCertificate(hostname)));
      const wasManaged = this.managed.has(hostname);
      if (managedNow && !wasManaged) {
        this.managed.add(hostname);
        this.undeclared.delete(hostname);
        change.added.push(hostname);
      } else if (!managedNow && wasManaged) {
        this.managed.delete(hostname);
        this.undeclared.set(hostname, now);
        change.removed.push(hostname);
      }
      if (verdict !== undefined && !verdict.allowed && !managedNow) {
        const refusal: RefusedHostname = { hostname, verdict: verdict.verdict, message: verdict.message };
        if (this.refused.get(hostname)?.message !== refusal.message) change.newlyRefused.push(refusal);
        this.refused.set(hostname, refusal);
      } else {
        this.refused.delete(hostname);
      }
    }
    if (change.added.length > 0 || change.removed.length > 0) this.sortedManaged = undefined;
    change.added.sort();
    change.removed.sort();
    return change;
  }
}

function rejectionKey(r: RejectedHostname): string {
  return `${r.service}\u0000${r.tag}\u0000${r.value}\u0000${r.reason}`;
}

function emptyChange(): DesiredChange {
  return { added: [], removed: [], newlyRejected: [], newlyRefused: [] };
}
