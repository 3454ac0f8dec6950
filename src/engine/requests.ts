/**
 * Operator requests, the engine's side: `consul-acme adopt`, `reissue` and `revoke` arrive here
 * through the admin API, are checked against what is declared and stored, recorded in the
 * RequestStore (Consul KV: any instance can carry them out, after any crash), and handed to the
 * queue as a job. From there they flow like every other piece of work:
 *
 *   admin API → OperatorRequests.request*() → RequestStore + queue.submit
 *   renewal scan → Planner (reads `forHostname`, after `refresh`) → queue     (a request whose
 *                                                                            instance died)
 *   worker, under the lock → `read` (fresh) → plan (domain/plan.ts: Adoptable, Requested, Revoked)
 *                          → revoke / adopt / order → `markRevoked`, `complete`
 *
 * Nothing here calls the planner or the worker back: the worker reports through this object's
 * plain methods (the request store's bookkeeping), and the plan is decided from the request by
 * the pure planCertificate.
 *
 * The answer to a command says what was accepted (with the serial being replaced) and what was
 * refused, and why. A request already there is merged with the new one (domain/request.ts
 * mergeRequests: a revocation is never weakened into a reissue).
 */
import { X509Certificate } from 'node:crypto';
import { ADOPTION_REFUSAL_TEXT, adoptionRefusal } from '../domain/adopt.js';
import type { StoredRecord } from '../domain/certificate.js';
import { normalizeSerial, splitPemCertificates } from '../domain/pem.js';
import {
  isBlockedBy,
  mergeRequests,
  type OperatorRequest,
  type RequestKind,
  type StoredOperatorRequest,
} from '../domain/request.js';
import type { RevocationReason } from '../domain/revocation.js';
import { describeError } from '../errors.js';
import { EVENTS, F, type Logger } from '../logging.js';
import type { CertificateStore } from '../ports/certificate-store.js';
import type { Clock } from '../ports/clock.js';
import type { RequestStore } from '../ports/request-store.js';
import type { DesiredSet } from './desired-set.js';
import type { Limiter } from './limiter.js';
import type { IssuanceQueue } from './queue.js';
import type { StoreHealth } from './store-health.js';
import type { StoreIndex } from './store-index.js';

/** Which names a reissue is for: listed names, every managed name, or those issued before a time. */
export interface ReissueSelection {
  hostnames?: readonly string[];
  all?: boolean;
  /** Names whose stored certificate's notBefore is earlier than this. */
  issuedBefore?: Date;
}

export interface AdoptSelection {
  hostnames?: readonly string[];
  /** Every record under the prefix that consul-acme did not write and may adopt. */
  all?: boolean;
}

/** What a command did for one name. */
export type RequestOutcome =
  | {
      hostname: string;
      accepted: true;
      kind: RequestKind;
      requestedAt: string;
      /** The serial of the certificate to be replaced (reissue, revoke); undefined for an adoption. */
      serial: string | undefined;
      /** An equal request was there already: this command changed nothing. */
      alreadyRequested: boolean;
    }
  | { hostname: string; accepted: false; why: string };

/** One name's request as GET /status and GET /certificates/<name> show it. */
export interface RequestStatus {
  kind: RequestKind;
  requestedAt: string;
  requestedBy: string;
  /** The serial of the certificate to replace (reissue, revoke). */
  replacesSerial: string | undefined;
  revokeReason: RevocationReason | undefined;
  /** When the CA confirmed the revocation. */
  revokedAt: string | undefined;
}

/** What the store holds for one name, read now: GET /certificates/<name>. */
export interface StoredCertificateStatus {
  managed: boolean;
  serial: string | undefined;
  notBefore: string | undefined;
  notAfter: string | undefined;
  obtainedAt: string | undefined;
  adoptedAt: string | undefined;
  problem: string | undefined;
}

export interface OperatorRequestsDeps {
  requestStore: RequestStore;
  certificateStore: CertificateStore;
  storeHealth: StoreHealth;
  logger: Logger;
}

export interface OperatorCommandsDeps {
  requests: OperatorRequests;
  requestStore: RequestStore;
  limiter: Limiter;
  desired: Pick<DesiredSet, 'desiredFor' | 'managedHostnames'>;
  index: Pick<StoreIndex, 'facts' | 'hostnames' | 'hasCertificate'>;
  queue: Pick<IssuanceQueue, 'submit' | 'cancel' | 'state'>;
  clock: Clock;
  logger: Logger;
  /** This instance's name, recorded as who took a request. */
  instanceName: string;
}

/** Why adoption refuses a record consul-acme wrote; `adopt --all` leaves these out of its answer. */
const ALREADY_MANAGED = "the record is consul-acme's already";

/** Attempts of a check-and-set write of one request before the command gives up on that name. */
const PUT_ATTEMPTS = 3;

/** The leaf's serial: lower-case hex without leading zeros; undefined when it cannot be read. */
export function leafSerial(certPem: string): string | undefined {
  const leaf = splitPemCertificates(certPem)[0];
  if (leaf === undefined) return undefined;
  try {
    return normalizeSerial(new X509Certificate(leaf).serialNumber);
  } catch {
    return undefined;
  }
}

/**
 * The requests, as the engine keeps them: a mirror of the request store for the planner and the
 * status (refreshed by each renewal scan, updated by every write here), fresh reads for the
 * worker's re-check, and the worker's bookkeeping (a confirmed revocation, a finished request).
 */
export class OperatorRequests {
  private readonly log: Logger;
  /** The requests as last listed or written here; the planner reads it, the worker reads the store. */
  private readonly mirror = new Map<string, StoredOperatorRequest>();

  constructor(private readonly deps: OperatorRequestsDeps) {
    this.log = deps.logger.child({ [F.component]: 'requests' });
  }

  // ------------------------------------------------------------------ planner and status

  /** Lists the stored requests again (the renewal scan calls it before planning). */
  async refresh(): Promise<void> {
    const listed = await this.deps.requestStore.list();
    this.mirror.clear();
    for (const request of listed) this.mirror.set(request.hostname, request);
  }

  /** The request for `hostname` as last listed or written here. */
  forHostname(hostname: string): StoredOperatorRequest | undefined {
    return this.mirror.get(hostname);
  }

  /** Hostnames with a request, as last listed or written here. */
  hostnames(): IterableIterator<string> {
    return this.mirror.keys();
  }

  describe(hostname: string): RequestStatus | undefined {
    const request = this.mirror.get(hostname);
    return request === undefined ? undefined : statusOf(request);
  }

  /** Every request as last listed or written here, for GET /requests. */
  list(): Array<RequestStatus & { hostname: string }> {
    return [...this.mirror.values()]
      .sort((a, b) => (a.hostname < b.hostname ? -1 : 1))
      .map((request) => ({ hostname: request.hostname, ...statusOf(request) }));
  }

  /**
   * What the store holds for `hostname` and its request, both read now (not from memory): what
   * `consul-acme reissue` and `revoke` poll while they wait.
   */
  async current(
    hostname: string,
  ): Promise<{ stored: StoredCertificateStatus | undefined; request: RequestStatus | undefined }> {
    const [record, request] = await Promise.all([this.readRecord(hostname), this.read(hostname)]);
    const certificate = record?.certificate;
    const stored: StoredCertificateStatus | undefined =
      record === undefined
        ? undefined
        : {
            managed: record.managed,
            serial: certificate === undefined ? undefined : leafSerial(certificate.certPem),
            notBefore: certificate?.notBefore.toISOString() ?? record.foreign?.notBefore.toISOString(),
            notAfter: certificate?.notAfter.toISOString() ?? record.foreign?.notAfter.toISOString(),
            obtainedAt: certificate?.obtainedAt.toISOString(),
            adoptedAt: certificate?.adoptedAt?.toISOString(),
            problem: record.problem,
          };
    return { stored, request: request === undefined ? undefined : statusOf(request) };
  }

  // ------------------------------------------------------------------ worker

  /** The request for `hostname`, read from the store now (the worker's re-check under the lock). */
  async read(hostname: string): Promise<StoredOperatorRequest | undefined> {
    const request = await this.deps.requestStore.get(hostname);
    if (request === undefined) this.mirror.delete(hostname);
    else this.mirror.set(hostname, request);
    return request;
  }

  /**
   * Records that the CA revoked the request's certificate. Should the request have changed
   * meanwhile (another command), the change stays and the revocation is sent again later, which
   * the CA answers with `alreadyRevoked`. Resolves the request as it now stands.
   */
  async markRevoked(request: StoredOperatorRequest, at: Date): Promise<StoredOperatorRequest> {
    const revoked = { ...request, revokedAt: at };
    const version = await this.deps.requestStore.put(revoked, request.version);
    if (version === undefined) {
      this.log.info({ [F.hostname]: request.hostname }, 'the request changed while its certificate was revoked');
      return revoked;
    }
    const stored = { ...revoked, version };
    this.mirror.set(request.hostname, stored);
    return stored;
  }

  /**
   * Removes a request that is carried out (`done`) or cannot be any more (`dropped`, with why),
   * and logs it. A request that changed meanwhile stays, for the next run.
   */
  async complete(request: StoredOperatorRequest, outcome: 'done' | 'dropped', why?: string): Promise<void> {
    const gone = await this.deps.requestStore.delete(request.hostname, request.version);
    if (!gone) return;
    if (this.mirror.get(request.hostname)?.version === request.version) this.mirror.delete(request.hostname);
    this.log.info(
      {
        [F.event]: EVENTS.requestCompleted,
        [F.hostname]: request.hostname,
        kind: request.kind,
        outcome,
        requested_at: request.requestedAt.toISOString(),
        ...(why === undefined ? {} : { [F.reason]: why }),
      },
      outcome === 'done' ? 'operator request carried out' : 'operator request dropped',
    );
  }

  /** Remembers a request just written (by a command), for the planner and the status. */
  remember(request: StoredOperatorRequest): void {
    this.mirror.set(request.hostname, request);
  }

  /** What the store holds for `hostname`, read now. */
  readRecord(hostname: string): Promise<StoredRecord | undefined> {
    return this.deps.storeHealth.observe(() => this.deps.certificateStore.get(hostname));
  }
}

/**
 * The commands (`consul-acme adopt`, `reissue`, `revoke`, through the admin API): each selected
 * name is checked against what is declared and stored, its request recorded (merged with one
 * already there) and queued now, as an emergency (see `submitNow`).
 */
export class OperatorCommands {
  private readonly log: Logger;

  constructor(private readonly deps: OperatorCommandsDeps) {
    this.log = deps.logger.child({ [F.component]: 'requests' });
  }

  // ------------------------------------------------------------------ commands (admin API)

  /**
   * `consul-acme reissue` (no `revokeReason`) and `consul-acme revoke` (with one): for each
   * selected name that is declared and has a readable certificate of consul-acme's, records a
   * request to replace that certificate (revoking it first, for a revocation) and queues it.
   */
  async requestReissue(selection: ReissueSelection, revokeReason?: RevocationReason): Promise<RequestOutcome[]> {
    const kind: RequestKind = revokeReason === undefined ? 'reissue' : 'revoke';
    const { desired, index } = this.deps;
    const names = new Set<string>(selection.hostnames ?? []);
    if (selection.all === true || selection.issuedBefore !== undefined) {
      for (const hostname of desired.managedHostnames()) {
        if (!index.hasCertificate(hostname)) continue;
        const notBefore = index.facts(hostname)?.certificate?.notBefore;
        if (selection.issuedBefore !== undefined && !(notBefore !== undefined && notBefore < selection.issuedBefore))
          continue;
        names.add(hostname);
      }
    }
    return this.each([...names].sort(), async (hostname) => {
      if (desired.desiredFor(hostname) === undefined) {
        return refused(hostname, 'the name is not declared by any service (or is refused by the policy lists)');
      }
      const record = await this.readRecord(hostname);
      if (record === undefined) return refused(hostname, 'nothing is stored for it yet; it is being issued');
      if (!record.managed) {
        return refused(
          hostname,
          `the record was not written by consul-acme; adopt it first (consul-acme adopt ${hostname})`,
        );
      }
      const certificate = record.certificate;
      if (certificate === undefined)
        return refused(hostname, `the stored record is unreadable and is being reissued: ${record.problem ?? ''}`);
      if (selection.issuedBefore !== undefined && !(certificate.notBefore < selection.issuedBefore)) {
        return refused(
          hostname,
          `its certificate was issued at ${certificate.notBefore.toISOString()}, not before ${selection.issuedBefore.toISOString()}`,
        );
      }
      const serial = leafSerial(certificate.certPem) ?? '?';
      return this.record({
        hostname,
        kind,
        requestedAt: this.deps.clock.now(),
        requestedBy: this.deps.instanceName,
        replaces: {
          obtainedAt: certificate.obtainedAt,
          notAfter: certificate.notAfter,
          serial,
          ...(kind === 'revoke' ? { certPem: certificate.certPem } : {}),
        },
        revokeReason,
        revokedAt: undefined,
      });
    });
  }

  /**
   * `consul-acme adopt`: for each selected record that consul-acme did not write, whose name is
   * declared and whose certificate may be adopted (domain/adopt.ts), records a request to adopt
   * it and queues it. It works whatever CONSUL_ACME_ADOPT says: the command is the opt-in.
   */
  async requestAdopt(selection: AdoptSelection): Promise<RequestOutcome[]> {
    const names = new Set<string>(selection.hostnames ?? []);
    if (selection.all === true) {
      for (const hostname of this.deps.index.hostnames()) {
        const facts = this.deps.index.facts(hostname);
        if (facts === undefined || !facts.managed) names.add(hostname); // not read yet, or not ours
      }
    }
    const outcomes = await this.each([...names].sort(), async (hostname) => {
      const record = await this.readRecord(hostname);
      if (record === undefined) return refused(hostname, 'nothing is stored under that name');
      if (record.managed) return refused(hostname, ALREADY_MANAGED);
      const refusal =
        this.deps.desired.desiredFor(hostname) === undefined
          ? 'NotDeclared'
          : adoptionRefusal(this.deps.clock.now(), hostname, record.foreign);
      if (refusal !== undefined) {
        this.log.warn(
          { [F.event]: EVENTS.adoptRefused, [F.hostname]: hostname, [F.reason]: refusal },
          'record not adopted',
        );
        return refused(hostname, `${refusal}: ${ADOPTION_REFUSAL_TEXT[refusal]}`);
      }
      return this.record({
        hostname,
        kind: 'adopt',
        requestedAt: this.deps.clock.now(),
        requestedBy: this.deps.instanceName,
        replaces: undefined,
        revokeReason: undefined,
        revokedAt: undefined,
      });
    });
    // `--all` asks for every record not ours: the records read only now and found ours are not news.
    const listed = new Set(selection.hostnames ?? []);
    return outcomes.filter((o) => o.accepted || listed.has(o.hostname) || o.why !== ALREADY_MANAGED);
  }

  // ------------------------------------------------------------------ helpers

  /** Runs `work` for every name through the limiter; a name whose work throws is refused with the error. */
  private async each(
    hostnames: readonly string[],
    work: (hostname: string) => Promise<RequestOutcome>,
  ): Promise<RequestOutcome[]> {
    const settled = await this.deps.limiter.map(hostnames, work);
    return settled.map((result, i) =>
      result.status === 'fulfilled' ? result.value : refused(hostnames[i] ?? '', describeError(result.reason)),
    );
  }

  private readRecord(hostname: string): Promise<StoredRecord | undefined> {
    return this.deps.requests.readRecord(hostname);
  }

  /**
   * Queues the name now, as an emergency (it starts before routine work). A job already waiting
   * for it (a spread renewal, a failing name's backoff) is replaced by one due now: a command is
   * the operator's "now"; the budgets still apply, and a failing name's count of failures is kept
   * in the state store, which the new job reads before it runs. A running job is left alone; it
   * reads the request when it finishes (CertificateWorker.settleAfterStore).
   */
  private submitNow(hostname: string, reason: string): void {
    const { queue, clock } = this.deps;
    const job = queue.state(hostname);
    if (job !== undefined && job.phase !== 'running' && job.dueAt.getTime() > clock.nowMs()) {
      queue.cancel(hostname, 'an operator command wants it now');
    }
    queue.submit(hostname, { reason, emergency: true });
  }

  /** Writes `incoming` merged with the request already stored (check-and-set), then queues it. */
  private async record(incoming: OperatorRequest): Promise<RequestOutcome> {
    const { hostname } = incoming;
    for (let attempt = 1; attempt <= PUT_ATTEMPTS; attempt++) {
      const existing = await this.deps.requestStore.get(hostname);
      if (existing !== undefined && isBlockedBy(existing, incoming)) {
        return refused(
          hostname,
          `the revocation of serial ${existing.replaces?.serial ?? '?'} requested at ${existing.requestedAt.toISOString()} is not done yet; repeat the command once it is`,
        );
      }
      const merged = mergeRequests(existing, incoming);
      const alreadyRequested = existing !== undefined && merged === existing;
      let stored: StoredOperatorRequest | undefined = alreadyRequested ? existing : undefined;
      if (stored === undefined) {
        const version = await this.deps.requestStore.put(merged, existing?.version ?? 0);
        if (version === undefined) continue; // changed meanwhile: merge again
        stored = { ...merged, version };
      }
      this.deps.requests.remember(stored);
      const event =
        stored.kind === 'revoke'
          ? EVENTS.revokeRequested
          : stored.kind === 'adopt'
            ? EVENTS.adoptRequested
            : EVENTS.reissueRequested;
      const serial = stored.replaces?.serial;
      this.log.info(
        {
          [F.event]: event,
          [F.hostname]: hostname,
          serial,
          requested_by: stored.requestedBy,
          already_requested: alreadyRequested,
          ...(stored.revokeReason === undefined ? {} : { [F.reason]: stored.revokeReason }),
        },
        `${stored.kind} requested`,
      );
      this.submitNow(
        hostname,
        stored.kind === 'revoke' ? 'Revoked' : stored.kind === 'adopt' ? 'Adoptable' : 'Requested',
      );
      return {
        hostname,
        accepted: true,
        kind: stored.kind,
        requestedAt: stored.requestedAt.toISOString(),
        serial,
        alreadyRequested,
      };
    }
    return refused(hostname, 'the request kept changing while it was written; repeat the command');
  }
}

function refused(hostname: string, why: string): RequestOutcome {
  return { hostname, accepted: false, why };
}

function statusOf(request: OperatorRequest): RequestStatus {
  return {
    kind: request.kind,
    requestedAt: request.requestedAt.toISOString(),
    requestedBy: request.requestedBy,
    replacesSerial: request.replaces?.serial,
    revokeReason: request.revokeReason,
    revokedAt: request.revokedAt?.toISOString(),
  };
}
