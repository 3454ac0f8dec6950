/**
 * This instance's own service in the local Consul agent (`/v1/agent/service/register`), carrying
 * the Fabio route tags for the challenge path of every managed hostname. With `checkHttpUrl` an
 * HTTP check is registered with it: Fabio only routes to instances whose checks pass.
 *
 * Self-healing (docs/protocols.md §1.10): an agent restarted without its data, or a
 * deregistration through the API, drops the registration, and nothing tells us. `reassert()`
 * reads the agent's copy (`/v1/agent/services` and `/v1/agent/checks`, filtered to our service
 * name) and registers again whatever is missing or differs. With a check, a registration lost
 * takes its check with it, so only the first and every FULL_REASSERT_EVERY-th call read the
 * registrations themselves (10,000 route tags are about 800 KB); the others read the checks alone
 * and compare everything only when one is missing. Tags another writer changed in place are so
 * put back within that many calls. The agent shows neither the check's
 * URL nor its interval (its `Definition` is empty in 1.8.7), so a check is compared by name and
 * type. Re-registering an existing check keeps its current status; `initialCheckStatus` only
 * applies to a check the agent does not have yet (§1.3), which is what makes a new or restored
 * registration routable at once.
 *
 * Sharding (docs/protocols.md §1.10, with the figures): one change to a registration rewrites
 * all its tags through the agent and a Raft entry, so the cost of adding one name grows with the
 * number of names. Above `maxTagsPerRegistration` tags the routes are spread over several
 * registrations of the same service, `<serviceId>-<n>` for n in [0, S); the names one change adds
 * go to one shard together, and a name stays in its shard until it leaves or its shard is dropped
 * (tag-shards.ts has the rules), so a new service's names cost one registration. The first shard
 * has the HTTP check; every other shard's check is an alias of the first shard (aliasTarget), so
 * Consul polls the instance once however many shards there are. With one shard the registration
 * keeps the plain `<serviceId>`, as small deployments always had.
 * Every registration carries `Meta.consul_acme_registration = <serviceId>`, so the shards of an
 * earlier run (another shard count, a crash) are found and removed. When tags move, the shards
 * that receive them are registered before the shards that lose them, and a shard no longer
 * wanted is removed last, so a route never disappears on the way.
 *
 * Calls close together are coalesced: an `update` or `change` after a quiet spell is sent at once
 * (with the calls made in the same turn of the event loop), and one within `coalesceMs` of the
 * last registration waits until that much time has passed since it; the calls pending when the
 * registration runs are taken in order and their result is sent once. So a single change costs no
 * wait, and a burst costs at most one registration per `coalesceMs`. `change` passes only the tags
 * that moved, so a new name costs work for its own tag, not for every name.
 */
import { describeError, type ConsulAcmeError } from '../../errors.js';
import { F, EVENTS, silentLogger, type Logger } from '../../logging.js';
import type { ServiceRegistration } from '../../ports/service-registration.js';
import { classifyConsulError, consulErrorStatus, type Consul } from './consul-client.js';
import { TagShards } from './tag-shards.js';

export const DEFAULT_REGISTRATION_SERVICE_NAME = 'consul-acme';
/** What the challenge-route registration passes as `deregisterCriticalAfter`. */
export const ROUTE_DEREGISTER_CRITICAL_AFTER = '10m';
export const DEFAULT_REGISTRATION_CHECK_INTERVAL_SECONDS = 10;
/** Most tags one registration carries before the routes are sharded (docs/protocols.md §1.10). */
export const DEFAULT_MAX_TAGS_PER_REGISTRATION = 1_000;
/** How long `update` waits for further calls before registering. */
export const DEFAULT_REGISTRATION_COALESCE_MS = 25;
/** Every how many `reassert` calls the registrations themselves are compared (the checks every time). */
export const FULL_REASSERT_EVERY = 10;
/** Meta key naming the instance's registration (`serviceId`) on every shard. */
export const REGISTRATION_META_KEY = 'consul_acme_registration';

export type CheckStatus = 'passing' | 'warning' | 'critical';

export interface ConsulServiceRegistrationOptions {
  consul: Consul;
  /** Unique per instance, e.g. `consul-acme-<instance name>`. */
  serviceId: string;
  serviceName?: string;
  /** Address Fabio should route to; the agent's address when unset. */
  address?: string;
  port: number;
  /** URL the agent polls; the service is only routed to while it answers 2xx. */
  checkHttpUrl?: string;
  checkIntervalSeconds?: number;
  /** Appended to the registration id to name the check; default `ready`. */
  checkName?: string;
  /**
   * Consul removes a registration whose check stayed critical this long (a Go duration such as
   * `10m`). For the challenge routes, so an instance killed without deregistering leaves the
   * catalog; never for the certificate-health registration, whose critical state is the alert.
   */
  deregisterCriticalAfter?: string;
  /** Status of a newly registered check until its first run; Consul's default is critical. */
  initialCheckStatus?: CheckStatus;
  /** Most tags per registration; more are sharded. Default DEFAULT_MAX_TAGS_PER_REGISTRATION. */
  maxTagsPerRegistration?: number;
  coalesceMs?: number;
  meta?: Record<string, string>;
  logger?: Logger;
}

/** The agent's view of one service (`/v1/agent/services`). */
interface AgentService {
  ID?: string;
  Service?: string;
  Tags?: string[] | null;
  Port?: number;
  Address?: string;
  Meta?: Record<string, string> | null;
}

/** The agent's view of one check (`/v1/agent/checks`). */
interface AgentCheck {
  Name?: string;
  Type?: string;
  ServiceID?: string;
}

interface Waiter {
  resolve: () => void;
  reject: (err: unknown) => void;
}

/** What a call asked for: exactly these tags, or these added and those removed. */
type TagChange = { set: readonly string[] } | { added: readonly string[]; removed: readonly string[] };

interface Batch {
  /** In call order; taken into the shards when the batch is sent. */
  changes: TagChange[];
  waiters: Waiter[];
}

function sameTags(a: readonly string[] | null | undefined, b: readonly string[]): boolean {
  if (!a || a.length !== b.length) return false;
  const sa = [...a].sort();
  return sa.every((t, i) => t === b[i]);
}

function sameMeta(a: Record<string, string> | null | undefined, b: Record<string, string>): boolean {
  const ka = Object.keys(a ?? {}).sort();
  const kb = Object.keys(b).sort();
  return ka.length === kb.length && ka.every((k, i) => k === kb[i] && a?.[k] === b[k]);
}

export class ConsulServiceRegistration implements ServiceRegistration {
  private readonly opts: ConsulServiceRegistrationOptions;
  private readonly serviceName: string;
  private readonly maxTags: number;
  private readonly coalesceMs: number;
  private readonly meta: Record<string, string>;
  private readonly log: Logger;
  /** Registration id → sorted tags, as this process last registered them successfully. */
  private readonly registered = new Map<string, string[]>();
  /** The tags last asked for, by shard; undefined before the first update and after deregister. */
  private shards: TagShards | undefined;
  /** Registrations whose tags changed since they were last registered successfully. */
  private readonly unsent = new Set<string>();
  /** Whether the registrations of an earlier run have been looked for (and removed). */
  private staleChecked = false;
  /** How many `reassert` calls ran. */
  private reasserts = 0;
  private pending: Batch | undefined;
  /** When pending updates were last sent (epoch ms). */
  private lastFlushAt = 0;
  /** Calls run one at a time, in order. */
  private chain: Promise<unknown> = Promise.resolve();

  constructor(opts: ConsulServiceRegistrationOptions) {
    this.opts = opts;
    this.serviceName = opts.serviceName ?? DEFAULT_REGISTRATION_SERVICE_NAME;
    this.maxTags = Math.max(1, opts.maxTagsPerRegistration ?? DEFAULT_MAX_TAGS_PER_REGISTRATION);
    this.coalesceMs = Math.max(0, opts.coalesceMs ?? DEFAULT_REGISTRATION_COALESCE_MS);
    this.meta = { ...opts.meta, [REGISTRATION_META_KEY]: opts.serviceId };
    this.log = (opts.logger ?? silentLogger()).child({ [F.component]: 'consul-registration' });
  }

  /** The registration ids currently in place, sorted (for tests and diagnostics). */
  get registrationIds(): string[] {
    return [...this.registered.keys()].sort();
  }

  update(tags: readonly string[]): Promise<void> {
    return this.enqueue({ set: tags });
  }

  change(added: readonly string[], removed: readonly string[]): Promise<void> {
    return this.enqueue({ added, removed });
  }

  private enqueue(change: TagChange): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      if (this.pending) {
        this.pending.changes.push(change);
        this.pending.waiters.push({ resolve, reject });
        return;
      }
      this.pending = { changes: [change], waiters: [{ resolve, reject }] };
      const wait = Math.max(0, this.lastFlushAt + this.coalesceMs - Date.now());
      setTimeout(() => void this.serialize(() => this.flushPending()), wait);
    });
  }

  reassert(): Promise<boolean> {
    return this.serialize(async () => {
      await this.flushPending();
      if (this.shards === undefined) return false;
      const wanted = this.wantedRegistrations(this.shards);
      const full = this.reasserts % FULL_REASSERT_EVERY === 0; // the first call, then every tenth
      this.reasserts += 1;
      if (!full && this.opts.checkHttpUrl !== undefined) {
        // In between, the checks alone: a lost or deregistered registration takes its check with it.
        const checks = await this.agentChecks();
        if ([...wanted.keys()].every((id) => checks[`service:${id}`]?.ServiceID === id)) return false;
      }
      const services = await this.agentServices();
      const checks = this.opts.checkHttpUrl !== undefined ? await this.agentChecks() : {};
      const redo = [...wanted].filter(([id, t]) => !this.agentHolds(services[id], checks, id, t));
      await this.registerAll(redo.map(([id, tags]) => ({ id, tags })));
      const stale = Object.keys(services).filter((id) => this.isOurs(services[id], id) && !wanted.has(id));
      for (const id of stale) await this.removeRegistration(id);
      this.staleChecked = true;
      if (redo.length > 0 || stale.length > 0) {
        this.log.warn(
          {
            registrations: redo.map(([id]) => id),
            removed: stale,
            tags: redo.reduce((n, [, t]) => n + t.length, 0),
          },
          'service registration was missing or differed in the agent; registered again',
        );
      }
      return redo.length > 0 || stale.length > 0;
    });
  }

  /**
   * Sends every registration in place again, with the tags wanted now. The agent keeps syncing a
   * registration and its check to the catalog with the token that registered it (docs/protocols.md
   * §1.10), so after the Consul token is replaced this is what moves them to the new token before
   * the old one is deleted. Resolves how many registrations were sent; rejects with the first
   * failure.
   */
  registerAgain(): Promise<number> {
    return this.serialize(async () => {
      await this.flushPending();
      if (this.shards === undefined) return 0;
      const current = [...this.wantedRegistrations(this.shards)].filter(([id]) => this.registered.has(id));
      await this.registerAll(current.map(([id, tags]) => ({ id, tags })));
      return current.length;
    });
  }

  deregister(): Promise<void> {
    return this.serialize(async () => {
      await this.flushPending();
      let ids = new Set(this.registered.keys());
      try {
        const services = await this.agentServices();
        ids = new Set([...ids, ...Object.keys(services).filter((id) => this.isOurs(services[id], id))]);
      } catch (err) {
        this.log.warn(
          { [F.err]: describeError(err) },
          'could not list the agent services; removing the known registrations only',
        );
      }
      for (const id of ids) await this.removeRegistration(id);
      this.registered.clear();
      this.unsent.clear();
      this.shards = undefined;
      this.staleChecked = true;
    });
  }

  /** Registers whatever update() calls are pending, and settles their promises. Never rejects. */
  private async flushPending(): Promise<void> {
    const batch = this.pending;
    if (!batch) return;
    this.pending = undefined;
    this.lastFlushAt = Date.now();
    try {
      await this.apply(batch.changes);
      for (const w of batch.waiters) w.resolve();
    } catch (err) {
      for (const w of batch.waiters) w.reject(err);
    }
  }

  /**
   * Takes `changes` into the shards and sends only the shards whose tags changed (and any not in
   * place after an earlier failure); all of them when the shard count changes.
   */
  private async apply(changes: readonly TagChange[]): Promise<void> {
    const shards = this.takeTags(changes);
    const ids = this.idsOf(shards.count);
    const wanted = new Set(ids);
    for (const id of this.unsent) if (!wanted.has(id)) this.unsent.delete(id);
    if (!this.staleChecked) {
      try {
        const services = await this.agentServices();
        // Earlier runs' registrations that are not wanted now; the wanted ones are sent below anyway.
        for (const id of Object.keys(services)) {
          if (this.isOurs(services[id], id) && !wanted.has(id)) this.registered.set(id, []);
        }
        this.staleChecked = true;
      } catch (err) {
        this.log.debug({ [F.err]: describeError(err) }, 'could not look for earlier registrations');
      }
    }
    const added = ids.flatMap((id, n) => (this.registered.has(id) ? [] : [{ id, n }]));
    const changed = ids.flatMap((id, n) => (this.registered.has(id) && this.unsent.has(id) ? [{ id, n }] : []));
    const removed = [...this.registered.keys()].filter((id) => !wanted.has(id));
    if (added.length === 0 && changed.length === 0 && removed.length === 0) return;
    // Receivers first, then the shards that lose tags, then the ones no longer wanted.
    for (const group of [added, changed])
      await this.registerAll(group.map(({ id, n }) => ({ id, tags: shards.tagsOf(n) })));
    for (const id of removed) await this.removeRegistration(id);
    this.log.info(
      { [F.event]: EVENTS.registrationUpdated, tags: shards.size, registrations: wanted.size },
      'service registration updated',
    );
  }

  /**
   * Takes `changes` into the shards, in order (tag-shards.ts opens and drops shards as needed).
   * The registrations whose tags changed (all of them when the routes move from one registration
   * to several or back, which renames them) are marked unsent: each stays to be sent until a
   * registration of it succeeds, so a failure part-way through an update is made good by the next
   * one.
   */
  private takeTags(changes: readonly TagChange[]): TagShards {
    const first = this.shards === undefined;
    const shards = this.shards ?? new TagShards(this.maxTags);
    const countBefore = shards.count;
    const moved = new Set<number>();
    for (const change of changes) {
      const touched = 'set' in change ? shards.setTags(change.set) : shards.change(change.added, change.removed);
      for (const n of touched) moved.add(n);
    }
    // One shard has the plain id, several have numbered ones: crossing that line renames them all.
    const renamed = first || (countBefore === 1) !== (shards.count === 1);
    for (let n = 0; n < shards.count; n++) if (renamed || moved.has(n)) this.unsent.add(this.idOf(n, shards.count));
    this.shards = shards;
    return shards;
  }

  /** The registration ids of `shardCount` shards: the plain service id for one, `<id>-<n>` for more. */
  private idsOf(shardCount: number): string[] {
    return Array.from({ length: shardCount }, (_, n) => this.idOf(n, shardCount));
  }

  private idOf(n: number, shardCount: number): string {
    return shardCount === 1 ? this.opts.serviceId : `${this.opts.serviceId}-${n}`;
  }

  /** Registration id → its sorted tags. */
  private wantedRegistrations(shards: TagShards): Map<string, string[]> {
    return new Map(this.idsOf(shards.count).map((id, n) => [id, shards.tagsOf(n)]));
  }

  /**
   * Registers `list` at once, except that a registration whose check is not an alias (the first
   * shard, which the others' alias checks follow) goes first, so an alias never starts critical
   * for want of its target. Rejects with the first failure, once all have answered.
   */
  private async registerAll(list: ReadonlyArray<{ id: string; tags: string[] }>): Promise<void> {
    const first = list.filter(({ id }) => this.aliasTarget(id) === undefined);
    const rest = list.filter(({ id }) => this.aliasTarget(id) !== undefined);
    for (const group of [first, rest]) {
      const outcomes = await Promise.allSettled(group.map(({ id, tags }) => this.register(id, tags)));
      const failed = outcomes.find((o): o is PromiseRejectedResult => o.status === 'rejected');
      if (failed) throw failed.reason;
    }
  }

  /**
   * With several shards, only the first carries the HTTP check; every other shard's check is an
   * alias of it (docs/protocols.md §1.3): the agent keeps it in step with the first shard's
   * without a request of its own, so the instance answers one check however many shards it has.
   */
  private aliasTarget(id: string): string | undefined {
    const count = this.shards?.count ?? 1;
    if (this.opts.checkHttpUrl === undefined || count === 1) return undefined;
    const first = this.idOf(0, count);
    return id === first ? undefined : first;
  }

  private checkNameFor(id: string): string {
    return `${id} ${this.opts.checkName ?? 'ready'}`;
  }

  private async register(id: string, tags: string[]): Promise<void> {
    const { consul, address, port, checkHttpUrl } = this.opts;
    const intervalSeconds = this.opts.checkIntervalSeconds ?? DEFAULT_REGISTRATION_CHECK_INTERVAL_SECONDS;
    const alias = this.aliasTarget(id);
    const check =
      checkHttpUrl === undefined
        ? undefined
        : {
            name: this.checkNameFor(id),
            ...(alias !== undefined
              ? { aliasservice: alias }
              : { http: checkHttpUrl, interval: `${intervalSeconds}s`, timeout: `${Math.min(intervalSeconds, 5)}s` }),
            ...(this.opts.initialCheckStatus !== undefined ? { status: this.opts.initialCheckStatus } : {}),
            ...(this.opts.deregisterCriticalAfter !== undefined
              ? { deregistercriticalserviceafter: this.opts.deregisterCriticalAfter }
              : {}),
          };
    try {
      await consul.agent.service.register({
        id,
        name: this.serviceName,
        tags,
        port,
        ...(address !== undefined ? { address } : {}),
        meta: this.meta,
        // `as never`: the package's CheckOptions type leaves out alias checks, which it sends (type gap).
        ...(check !== undefined ? { check: check as never } : {}),
      });
    } catch (err) {
      this.registered.delete(id);
      throw classifyConsulError(err, `agent service register ${id}`);
    }
    this.registered.set(id, tags);
    this.unsent.delete(id);
  }

  /** Deregisters `id`; an id the agent does not know is already gone. */
  private async removeRegistration(id: string): Promise<void> {
    try {
      await this.opts.consul.agent.service.deregister(id);
    } catch (err) {
      if (consulErrorStatus(err) !== 404) {
        const classified: ConsulAcmeError = classifyConsulError(err, `agent service deregister ${id}`);
        this.log.warn({ [F.err]: describeError(classified), registration: id }, 'service deregistration failed');
        throw classified;
      }
    }
    this.registered.delete(id);
  }

  /** Ours: carries our marker, or is the plain id registered by a version without the marker. */
  private isOurs(service: AgentService | undefined, id: string): boolean {
    if (!service || service.Service !== this.serviceName) return false;
    const marker = service.Meta?.[REGISTRATION_META_KEY];
    return marker === this.opts.serviceId || (marker === undefined && id === this.opts.serviceId);
  }

  /** Whether the agent holds registration `id` as we registered it, check included. */
  private agentHolds(
    service: AgentService | undefined,
    checks: Record<string, AgentCheck>,
    id: string,
    tags: string[],
  ): boolean {
    if (!service || service.Service !== this.serviceName) return false;
    if (!sameTags(service.Tags, tags) || service.Port !== this.opts.port) return false;
    if (this.opts.address !== undefined && service.Address !== this.opts.address) return false;
    if (!sameMeta(service.Meta, this.meta)) return false;
    if (this.opts.checkHttpUrl === undefined) return true;
    const check = checks[`service:${id}`];
    const type = this.aliasTarget(id) === undefined ? 'http' : 'alias';
    return check?.ServiceID === id && check.Name === this.checkNameFor(id) && check.Type === type;
  }

  private filter(field: 'Service' | 'ServiceName'): string {
    return `${field} == ${JSON.stringify(this.serviceName)}`;
  }

  private async agentServices(): Promise<Record<string, AgentService>> {
    try {
      const body: unknown = await this.opts.consul.agent.service.list({ filter: this.filter('Service') });
      return body !== null && typeof body === 'object' ? (body as Record<string, AgentService>) : {};
    } catch (err) {
      throw classifyConsulError(err, 'agent services');
    }
  }

  private async agentChecks(): Promise<Record<string, AgentCheck>> {
    try {
      const body: unknown = await this.opts.consul.agent.check.list({ filter: this.filter('ServiceName') });
      return body !== null && typeof body === 'object' ? (body as Record<string, AgentCheck>) : {};
    } catch (err) {
      throw classifyConsulError(err, 'agent checks');
    }
  }

  private serialize<T>(step: () => Promise<T>): Promise<T> {
    const run = this.chain.then(step);
    this.chain = run.catch(() => undefined);
    return run;
  }
}
