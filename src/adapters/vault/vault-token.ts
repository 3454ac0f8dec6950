/**
 * Keeps a renewable Vault token alive (docs/protocols.md §3.2): `auth/token/lookup-self` tells the
 * token's remaining `ttl` (seconds) and whether it is `renewable`; a renewable token with a ttl is
 * renewed with `auth/token/renew-self` once half of that ttl has passed, and again at half of the
 * `lease_duration` each renewal grants. A token that is not renewable, or has no ttl (root, or
 * periodic without one), is left alone. When the token changes (a new token file) it is looked up
 * afresh. A failed lookup or renewal is logged and tried again after `retryMs` (sooner when the
 * token would expire first); a renewal that grants less than asked means the token reaches its
 * maximum TTL: that is logged as a warning, since only a new token (which Nomad or Vault Agent
 * writes to the token file) helps then.
 *
 * Both calls are in Vault's `default` policy; deploy/vault-policy.hcl grants them as well, for
 * roles made with `token_no_default_policy`.
 */
import { describeError } from '../../errors.js';
import { F, silentLogger, type Logger } from '../../logging.js';
import { systemClock, type Clock, type Timer } from '../../ports/clock.js';
import type { TokenSource } from '../token-source.js';
import { classifyVaultError, type VaultClient } from './vault-client.js';

export const DEFAULT_TOKEN_RENEW_RETRY_MS = 30_000;
/** A lease shorter than this is not worth renewing again: the token is about to reach its max TTL. */
const MIN_RENEWABLE_LEASE_MS = 2_000;

export interface VaultTokenState {
  renewable: boolean;
  /** When the token expires unless renewed (ISO time); undefined when it does not expire. */
  expiresAt: string | undefined;
  lastRenewedAt: string | undefined;
  lastError: string | undefined;
}

export interface VaultTokenRenewerOptions {
  client: VaultClient;
  tokens: TokenSource;
  clock?: Clock;
  logger?: Logger;
  retryMs?: number;
}

function numberOf(value: unknown): number | undefined {
  const n = typeof value === 'string' ? Number(value) : value;
  return typeof n === 'number' && Number.isFinite(n) ? n : undefined;
}

export class VaultTokenRenewer {
  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly retryMs: number;
  private timer: Timer | undefined;
  private generation = 0;
  private stopped = true;
  private unsubscribe: (() => void) | undefined;
  private readonly current: VaultTokenState = {
    renewable: false,
    expiresAt: undefined,
    lastRenewedAt: undefined,
    lastError: undefined,
  };

  constructor(private readonly opts: VaultTokenRenewerOptions) {
    this.clock = opts.clock ?? systemClock;
    this.log = (opts.logger ?? silentLogger()).child({ [F.component]: 'vault-token' });
    this.retryMs = opts.retryMs ?? DEFAULT_TOKEN_RENEW_RETRY_MS;
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.unsubscribe = this.opts.tokens.onChange(() => this.restart());
    this.restart();
  }

  stop(): void {
    this.stopped = true;
    this.generation += 1;
    this.timer?.cancel();
    this.timer = undefined;
    this.unsubscribe?.();
    this.unsubscribe = undefined;
  }

  state(): VaultTokenState {
    return { ...this.current };
  }

  /** Looks the (new) token up from scratch. */
  private restart(): void {
    if (this.stopped) return;
    this.generation += 1;
    this.timer?.cancel();
    this.timer = undefined;
    void this.lookup(this.generation);
  }

  private schedule(generation: number, delayMs: number, step: 'lookup' | 'renew'): void {
    if (this.stopped || generation !== this.generation) return;
    this.timer?.cancel();
    this.timer = this.clock.setTimer(
      () => void (step === 'lookup' ? this.lookup(generation) : this.renew(generation)),
      Math.max(0, delayMs),
    );
  }

  /** The delay before the next try after a failure: the retry interval, or half the time left when that is shorter. */
  private retryDelay(): number {
    const expiresAtMs = this.current.expiresAt === undefined ? undefined : Date.parse(this.current.expiresAt);
    const remainingMs = expiresAtMs === undefined ? undefined : expiresAtMs - this.clock.nowMs();
    // Expired (or never known): the retry interval; a new token file restarts the renewal anyway.
    if (remainingMs === undefined || remainingMs <= 0) return this.retryMs;
    return Math.max(1_000, Math.min(this.retryMs, remainingMs / 2));
  }

  private async lookup(generation: number): Promise<void> {
    let data: Record<string, unknown>;
    try {
      const response = (await this.opts.client.read('auth/token/lookup-self')) as { data?: Record<string, unknown> };
      data = response?.data ?? {};
    } catch (err) {
      if (generation !== this.generation) return;
      this.failed(classifyVaultError(err, 'read auth/token/lookup-self'), 'could not look the Vault token up');
      this.schedule(generation, this.retryDelay(), 'lookup');
      return;
    }
    if (generation !== this.generation) return;
    const ttlSeconds = numberOf(data.ttl) ?? 0;
    this.current.renewable = data.renewable === true;
    this.current.lastError = undefined;
    this.current.expiresAt =
      ttlSeconds > 0 ? new Date(this.clock.nowMs() + ttlSeconds * 1000).toISOString() : undefined;
    if (!this.current.renewable || ttlSeconds <= 0) {
      this.log.debug(
        { renewable: this.current.renewable, ttl_seconds: ttlSeconds },
        'Vault token needs no renewal from consul-acme',
      );
      return;
    }
    this.log.info({ ttl_seconds: ttlSeconds }, 'Vault token is renewable; renewing it at half its ttl');
    this.schedule(generation, (ttlSeconds * 1000) / 2, 'renew');
  }

  private async renew(generation: number): Promise<void> {
    const before = this.current.expiresAt === undefined ? undefined : Date.parse(this.current.expiresAt);
    let auth: Record<string, unknown>;
    try {
      const response = (await this.opts.client.write('auth/token/renew-self', {})) as {
        auth?: Record<string, unknown>;
      };
      auth = response?.auth ?? {};
    } catch (err) {
      if (generation !== this.generation) return;
      this.failed(classifyVaultError(err, 'write auth/token/renew-self'), 'could not renew the Vault token');
      this.schedule(generation, this.retryDelay(), 'renew');
      return;
    }
    if (generation !== this.generation) return;
    const leaseMs = (numberOf(auth.lease_duration) ?? 0) * 1000;
    const now = this.clock.nowMs();
    this.current.lastRenewedAt = new Date(now).toISOString();
    this.current.lastError = undefined;
    this.current.expiresAt = leaseMs > 0 ? new Date(now + leaseMs).toISOString() : undefined;
    this.current.renewable = auth.renewable !== false;
    this.log.debug({ lease_seconds: leaseMs / 1000 }, 'Vault token renewed');
    if (leaseMs <= 0) return;
    if (before !== undefined && now + leaseMs <= before) {
      this.log.warn(
        { expires_at: this.current.expiresAt },
        'Vault token reaches its maximum TTL; a new token is needed before then (the token file is read again when it changes)',
      );
    }
    if (!this.current.renewable || leaseMs < MIN_RENEWABLE_LEASE_MS) return;
    this.schedule(generation, leaseMs / 2, 'renew');
  }

  private failed(err: Error, message: string): void {
    this.current.lastError = describeError(err);
    this.log.warn({ [F.err]: this.current.lastError, [F.retryInMs]: this.retryDelay() }, message);
  }
}
