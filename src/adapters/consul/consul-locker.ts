/**
 * Locks as Consul KV keys acquired with a session (docs/protocols.md §1.7, §1.8).
 *
 * One session per locker, shared by all its locks: created once, on the first tryAcquire (calls
 * made together wait for the same creation), and renewed in the background at half the TTL
 * Consul last returned. When a renew answers 404 (session destroyed or expired), or renewing keeps
 * failing for a whole TTL, the session is lost: every lock held under it has its `signal` aborted
 * with a LockLostError, and the next tryAcquire creates a new session.
 *
 * Nothing is left behind in KV. The session has Behavior "delete", so when it is invalidated
 * (holder dead, TTL expired) Consul deletes the keys it holds, and lock-delay still keeps them
 * from others for a while. A release deletes the key while this session still holds it: one
 * transaction checks that the key names this session and deletes it. Another session cannot
 * acquire a held key, so the key deleted is the one this lock held; a late release,
 * after the session was lost and someone else acquired the key, finds their session and leaves
 * the key alone. The KV value names the holder (`{"holder","acquiredAt"}`) while it is held, and
 * the key's flags its format (domain/record-format.ts; nothing reads the value, so a newer format
 * changes nothing here: a held key is never touched by another session anyway).
 */
import { hostname } from 'node:os';
import { RECORD_FORMATS } from '../../domain/record-format.js';
import { AbortedError, ConfigError, ConsulAcmeError, LockLostError, describeError } from '../../errors.js';
import { F, silentLogger, type Logger } from '../../logging.js';
import { systemClock, type Clock } from '../../ports/clock.js';
import type { Lock, Locker } from '../../ports/locker.js';
import { classifyConsulError, isSessionGoneError, type Consul } from './consul-client.js';
import { kvTransact } from './consul-kv.js';

export const DEFAULT_SESSION_TTL_SECONDS = 15;
export const DEFAULT_LOCK_DELAY_SECONDS = 15;
/** Consul's limits: TTL 10 s..24 h; lock-delay at most 60 s. */
const MIN_SESSION_TTL_SECONDS = 10;
const MAX_SESSION_TTL_SECONDS = 86_400;
const MAX_LOCK_DELAY_SECONDS = 60;

export interface ConsulLockerOptions {
  consul: Consul;
  /** KV folder for lock keys, e.g. `consul-acme/locks/` (a trailing slash is added when missing). */
  prefix: string;
  /** Session name, shown in Consul's UI and in the lock value as the holder. */
  sessionName: string;
  sessionTtlSeconds?: number;
  /** How long Consul refuses the key to others after this session is invalidated (not after a release). */
  lockDelaySeconds?: number;
  logger?: Logger;
  /** For the acquisition time in the lock's value and the session's renewal bookkeeping. */
  clock?: Clock;
}

interface SessionState {
  id: string;
  ttlMs: number;
  lastRenewedAt: number;
  timer: NodeJS.Timeout | undefined;
  lost: boolean;
}

interface HeldLock {
  key: string;
  kvKey: string;
  session: SessionState;
  controller: AbortController;
  /** The Lock's release (idempotent); close() uses it too. */
  release: () => Promise<void>;
}

/** Parses a Go duration as Consul prints it ("15s", "1m30s", "1h0m0s", "500ms") into ms. */
export function parseGoDurationMs(text: unknown): number | undefined {
  if (typeof text !== 'string' || text === '') return undefined;
  const units: Record<string, number> = {
    h: 3_600_000,
    m: 60_000,
    s: 1_000,
    ms: 1,
    us: 0.001,
    µs: 0.001,
    ns: 0.000001,
  };
  let total = 0;
  let rest = text;
  while (rest !== '') {
    const match = /^(\d+(?:\.\d+)?)(h|ms|m|s|us|µs|ns)/.exec(rest);
    if (!match) return undefined;
    total += Number(match[1]) * (units[match[2] ?? ''] ?? 0);
    rest = rest.slice(match[0].length);
  }
  return total;
}

/** Consul's answer when a session is created for a node its datacenter does not know (docs/protocols.md §1.13). */
function isMissingNodeError(err: unknown): boolean {
  const body = (err as { response?: { body?: unknown } } | null)?.response?.body;
  const text = `${typeof body === 'string' ? body : ''} ${err instanceof Error ? err.message : String(err)}`;
  return /Missing node registration/i.test(text);
}

/**
 * Creates a session in the client's datacenter (its `dc` default, the home datacenter). A session
 * belongs to a node of that datacenter, and by default Consul names the agent's own node: in a
 * datacenter other than the agent's that node is unknown (500 `Missing node registration`). Then
 * the session is made again on a Consul server node of that datacenter, with no node checks, so
 * only its TTL (renewed by the locker) keeps it alive (docs/protocols.md §1.13). The caller
 * classifies errors.
 */
export async function createLockSession(
  consul: Consul,
  body: { name: string; ttl: string; lockdelay?: string; behavior: 'release' | 'delete' },
): Promise<{ ID?: unknown } | undefined> {
  try {
    return await consul.session.create(body);
  } catch (err) {
    if (!isMissingNodeError(err)) throw err;
    const servers = (await consul.catalog.service.nodes({ service: 'consul' })) as Array<{ Node?: unknown }>;
    const node = servers
      .map((server) => server.Node)
      .filter((name): name is string => typeof name === 'string' && name !== '')
      .sort()[0];
    if (node === undefined) throw err;
    // `checks: []` sends `Checks: []`, which Consul 1.8 takes as no node checks at all.
    return await consul.session.create({ ...body, node, checks: [] });
  }
}

export class ConsulLocker implements Locker {
  private readonly consul: Consul;
  private readonly prefix: string;
  private readonly sessionName: string;
  private readonly holder: string;
  private readonly sessionTtlSeconds: number;
  private readonly lockDelaySeconds: number;
  private readonly log: Logger;
  private session: SessionState | undefined;
  private creating: Promise<SessionState> | undefined;
  private readonly held = new Map<string, HeldLock>();
  private readonly acquiring = new Set<string>();
  private closed = false;
  private readonly clock: Clock;

  constructor(opts: ConsulLockerOptions) {
    const ttl = opts.sessionTtlSeconds ?? DEFAULT_SESSION_TTL_SECONDS;
    const lockDelay = opts.lockDelaySeconds ?? DEFAULT_LOCK_DELAY_SECONDS;
    const problems: string[] = [];
    if (!Number.isInteger(ttl) || ttl < MIN_SESSION_TTL_SECONDS || ttl > MAX_SESSION_TTL_SECONDS) {
      problems.push(
        `sessionTtlSeconds must be an integer from ${MIN_SESSION_TTL_SECONDS} to ${MAX_SESSION_TTL_SECONDS} (got ${ttl})`,
      );
    }
    if (!Number.isInteger(lockDelay) || lockDelay < 0 || lockDelay > MAX_LOCK_DELAY_SECONDS) {
      problems.push(`lockDelaySeconds must be an integer from 0 to ${MAX_LOCK_DELAY_SECONDS} (got ${lockDelay})`);
    }
    if (problems.length > 0) throw new ConfigError(problems);
    this.consul = opts.consul;
    this.prefix = opts.prefix.endsWith('/') ? opts.prefix : `${opts.prefix}/`;
    this.sessionName = opts.sessionName;
    this.holder = `${opts.sessionName} (${hostname()} pid ${process.pid})`;
    this.sessionTtlSeconds = ttl;
    this.lockDelaySeconds = lockDelay;
    this.log = (opts.logger ?? silentLogger()).child({ [F.component]: 'consul-locker' });
    this.clock = opts.clock ?? systemClock;
  }

  /** The current session's ID, if one exists (for tests and diagnostics). */
  get sessionId(): string | undefined {
    return this.session?.id;
  }

  async tryAcquire(key: string): Promise<Lock | undefined> {
    if (this.closed) throw new AbortedError(`lock ${key} acquisition (locker closed)`);
    if (this.held.has(key) || this.acquiring.has(key)) return undefined;
    this.acquiring.add(key);
    try {
      return await this.acquire(key);
    } finally {
      this.acquiring.delete(key);
    }
  }

  private async acquire(key: string): Promise<Lock | undefined> {
    const kvKey = `${this.prefix}${key}`;
    for (let attempt = 1; ; attempt++) {
      const session = await this.ensureSession();
      const value = JSON.stringify({ holder: this.holder, acquiredAt: this.clock.now().toISOString() });
      let acquired: unknown;
      try {
        acquired = await this.consul.kv.set({ key: kvKey, value, acquire: session.id, flags: RECORD_FORMATS.consulKv });
      } catch (err) {
        if (attempt === 1 && isSessionGoneError(err)) {
          // Destroyed between two renewals: lose it now and retry once with a new session.
          this.loseSession(session, err, `lock acquire ${kvKey}`);
          continue;
        }
        throw classifyConsulError(err, `lock acquire ${kvKey}`);
      }
      if (acquired !== true) return undefined; // another holder, or lock-delay after a lost holder
      if (session.lost || this.closed) {
        // Lost (or closed) while the request was in flight: the key is not really ours to work under.
        await this.deleteIfHeld(kvKey, session);
        return undefined;
      }
      return this.makeLock({ key, kvKey, session, controller: new AbortController() });
    }
  }

  private makeLock(fields: Omit<HeldLock, 'release'>): Lock {
    let releasing: Promise<void> | undefined;
    const h: HeldLock = { ...fields, release: () => releasing ?? Promise.resolve() };
    h.release = () => {
      releasing ??= (async () => {
        if (!h.session.lost) await this.deleteIfHeld(h.kvKey, h.session);
        // Forget the key only now, so that this locker cannot re-acquire it while the release is in flight.
        if (this.held.get(h.key) === h) this.held.delete(h.key);
      })();
      return releasing;
    };
    this.held.set(h.key, h);
    return { key: h.key, signal: h.controller.signal, release: h.release };
  }

  /**
   * Releases by deleting the key, only while `session` still holds it: one transaction of a
   * session check and the delete (docs/protocols.md §1.6). Never throws: on failure the key goes
   * with the session.
   */
  private async deleteIfHeld(kvKey: string, session: SessionState): Promise<void> {
    try {
      const outcome = await kvTransact(
        this.consul,
        [
          { verb: 'check-session', key: kvKey, session: session.id },
          { verb: 'delete', key: kvKey },
        ],
        `lock release ${kvKey}`,
      );
      if (outcome.committed || outcome.failed.every((f) => f.what.endsWith("doesn't exist"))) return;
      this.log.warn({ lock: kvKey }, 'lock not held by this session any more; left alone');
    } catch (err) {
      this.log.warn(
        { lock: kvKey, [F.err]: describeError(classifyConsulError(err, `lock release ${kvKey}`)) },
        'lock release failed; the key goes with the session',
      );
    }
  }

  private async ensureSession(): Promise<SessionState> {
    if (this.session && !this.session.lost) return this.session;
    this.creating ??= this.createSession().finally(() => {
      this.creating = undefined;
    });
    return this.creating;
  }

  private async createSession(): Promise<SessionState> {
    let created: { ID?: unknown } | undefined;
    try {
      created = await createLockSession(this.consul, {
        name: this.sessionName,
        ttl: `${this.sessionTtlSeconds}s`,
        lockdelay: `${this.lockDelaySeconds}s`,
        // Keys held by an invalidated session are deleted, not left behind (lock-delay still applies).
        behavior: 'delete',
      });
    } catch (err) {
      throw classifyConsulError(err, 'session create');
    }
    if (typeof created?.ID !== 'string' || created.ID === '') {
      throw new ConsulAcmeError('CONSUL_UNAVAILABLE', 'session create: Consul returned no session ID', {
        retryable: true,
      });
    }
    const session: SessionState = {
      id: created.ID,
      ttlMs: this.sessionTtlSeconds * 1000,
      lastRenewedAt: this.clock.nowMs(),
      timer: undefined,
      lost: false,
    };
    if (this.closed) {
      await this.destroySession(session);
      throw new AbortedError('session create (locker closed)');
    }
    this.session = session;
    this.scheduleRenew(session, session.ttlMs / 2);
    this.log.debug({ session: session.id }, 'session created');
    return session;
  }

  private scheduleRenew(session: SessionState, delayMs: number): void {
    if (session.lost || this.closed) return;
    session.timer = setTimeout(() => void this.renew(session), Math.max(0, delayMs));
    session.timer.unref();
  }

  private async renew(session: SessionState): Promise<void> {
    session.timer = undefined;
    if (session.lost || this.closed) return;
    try {
      // `timeout` is a per-call option the package honours but RenewOptions does not declare.
      const result = await this.consul.session.renew({
        id: session.id,
        timeout: Math.max(1_000, session.ttlMs / 3),
      } as never);
      if (session.lost) return;
      const returned: unknown = Array.isArray(result) ? (result[0] as { TTL?: unknown } | undefined)?.TTL : undefined;
      const ttlMs = parseGoDurationMs(returned);
      // Consul may hand back a longer TTL than asked for (load shedding); renew on its schedule.
      if (ttlMs !== undefined && ttlMs >= MIN_SESSION_TTL_SECONDS * 1000) session.ttlMs = ttlMs;
      session.lastRenewedAt = this.clock.nowMs();
      this.scheduleRenew(session, session.ttlMs / 2);
    } catch (err) {
      if (session.lost) return;
      if (isSessionGoneError(err)) {
        this.loseSession(session, err);
        return;
      }
      const sinceMs = this.clock.nowMs() - session.lastRenewedAt;
      if (sinceMs >= session.ttlMs) {
        this.loseSession(session, err);
        return;
      }
      const retryInMs = Math.min(1_000, session.ttlMs - sinceMs);
      this.log.warn(
        {
          session: session.id,
          [F.err]: describeError(classifyConsulError(err, 'session renew')),
          [F.retryInMs]: retryInMs,
        },
        'session renew failed',
      );
      this.scheduleRenew(session, retryInMs);
    }
  }

  /** Marks the session lost, aborts every lock held under it, and forgets it. */
  private loseSession(session: SessionState, cause: unknown, what = 'session renew'): void {
    if (session.lost) return;
    session.lost = true;
    if (session.timer) clearTimeout(session.timer);
    session.timer = undefined;
    if (this.session === session) this.session = undefined;
    const gone = isSessionGoneError(cause);
    this.log.warn(
      { session: session.id, [F.err]: describeError(classifyConsulError(cause, what)) },
      'session lost; abandoning its locks',
    );
    for (const h of [...this.held.values()]) {
      if (h.session !== session) continue;
      this.held.delete(h.key);
      h.controller.abort(new LockLostError(h.key, { cause }));
    }
    // Renewing failed for a whole TTL but the session may still exist: make sure it ends.
    if (!gone) void this.destroySession(session);
  }

  private async destroySession(session: SessionState): Promise<void> {
    try {
      await this.consul.session.destroy(session.id);
    } catch (err) {
      this.log.warn(
        { session: session.id, [F.err]: describeError(classifyConsulError(err, 'session destroy')) },
        'session destroy failed',
      );
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const locks = [...this.held.values()];
    await Promise.all(
      locks.map(async (h) => {
        await h.release();
        h.controller.abort(new AbortedError(`lock ${h.key} (locker closed)`));
      }),
    );
    await this.creating?.catch(() => undefined);
    const session = this.session;
    this.session = undefined;
    if (session) {
      session.lost = true;
      if (session.timer) clearTimeout(session.timer);
      await this.destroySession(session);
    }
  }
}
