/**
 * HTTP-01 key authorizations in Consul KV under `prefix`, shared by every instance. Reads go
 * through a small in-memory cache: a value found is kept for `cacheTtlMs` (the CA asks for the same
 * token several times from several vantage points), a miss is never cached, so a token another
 * instance has just written is seen at once.
 */
import { ConsulAcmeError } from '../../errors.js';
import type { ChallengeStore } from '../../ports/challenge-store.js';
import { classifyConsulError, type Consul } from './consul-client.js';

export const DEFAULT_CHALLENGE_CACHE_TTL_MS = 60_000;

/** RFC 8555 §8.3: a token is base64url without padding. */
const TOKEN_PATTERN = /^[A-Za-z0-9_-]+$/;

export function isChallengeToken(token: string): boolean {
  return TOKEN_PATTERN.test(token);
}

export interface ConsulChallengeStoreOptions {
  consul: Consul;
  /** KV folder, e.g. `consul-acme/challenges/` (a trailing slash is added when missing). */
  prefix: string;
  cacheTtlMs?: number;
  /** Milliseconds clock for cache expiry; injectable for tests. */
  now?: () => number;
}

export class ConsulChallengeStore implements ChallengeStore {
  private readonly consul: Consul;
  private readonly prefix: string;
  private readonly cacheTtlMs: number;
  private readonly now: () => number;
  private readonly cache = new Map<string, { value: string; expiresAt: number }>();

  constructor(opts: ConsulChallengeStoreOptions) {
    this.consul = opts.consul;
    this.prefix = opts.prefix.endsWith('/') ? opts.prefix : `${opts.prefix}/`;
    this.cacheTtlMs = opts.cacheTtlMs ?? DEFAULT_CHALLENGE_CACHE_TTL_MS;
    this.now = opts.now ?? Date.now;
  }

  private key(token: string): string {
    return `${this.prefix}${token}`;
  }

  /** Writes the key authorization; resolves only when Consul answered `true`. */
  async put(token: string, keyAuthorization: string): Promise<void> {
    if (!isChallengeToken(token)) {
      throw new ConsulAcmeError(
        'INTERNAL',
        'challenge store put: token is not base64url; refusing to build a KV key from it',
      );
    }
    const what = `kv put ${this.key(token)}`;
    let written: unknown;
    try {
      written = await this.consul.kv.set({ key: this.key(token), value: keyAuthorization });
    } catch (err) {
      throw classifyConsulError(err, what);
    }
    if (written !== true) {
      throw new ConsulAcmeError(
        'CONSUL_UNAVAILABLE',
        `${what}: Consul answered ${JSON.stringify(written)} instead of true`,
        {
          retryable: true,
        },
      );
    }
    this.pruneExpired();
    this.cache.set(token, { value: keyAuthorization, expiresAt: this.now() + this.cacheTtlMs });
  }

  async get(token: string): Promise<string | undefined> {
    if (!isChallengeToken(token)) return undefined;
    const cached = this.cache.get(token);
    if (cached && cached.expiresAt > this.now()) return cached.value;
    if (cached) this.cache.delete(token);
    let item: { Value?: string | null } | null | undefined;
    try {
      item = await this.consul.kv.get({ key: this.key(token) });
    } catch (err) {
      throw classifyConsulError(err, `kv get ${this.key(token)}`);
    }
    if (!item) return undefined; // missing key: the package resolves undefined (types say null)
    const value = item.Value ?? '';
    this.cache.set(token, { value, expiresAt: this.now() + this.cacheTtlMs });
    return value;
  }

  async delete(token: string): Promise<void> {
    if (!isChallengeToken(token)) return;
    this.cache.delete(token);
    try {
      await this.consul.kv.del({ key: this.key(token) });
    } catch (err) {
      throw classifyConsulError(err, `kv delete ${this.key(token)}`);
    }
  }

  private pruneExpired(): void {
    const now = this.now();
    for (const [token, entry] of this.cache) if (entry.expiresAt <= now) this.cache.delete(token);
  }
}
