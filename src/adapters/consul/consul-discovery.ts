/**
 * Discovery on `/v1/catalog/services` with blocking queries (reference/protocols.md §1.1, §1.3).
 * A blocking return is not a change: snapshots are compared by content (sorted services and tags)
 * and only a different one is passed on. The loop is rate-limited by a token bucket (burst 2) and
 * backs off exponentially on errors, reporting each through `onError`.
 */
import { AbortedError, asConsulAcmeError, describeError } from '../../errors.js';
import { F, EVENTS, silentLogger, type Logger } from '../../logging.js';
import type { CatalogSnapshot, Discovery } from '../../ports/discovery.js';
import { blockingGet, sleep, TokenBucket, type Consul } from './consul-client.js';

export const DEFAULT_DISCOVERY_WAIT_SECONDS = 300;
export const DEFAULT_DISCOVERY_BACKOFF_MIN_MS = 1_000;
export const DEFAULT_DISCOVERY_BACKOFF_MAX_MS = 30_000;
/** One request per 15 s once the burst of 2 is spent, i.e. a churning catalog is polled every ~15 s. */
export const DEFAULT_DISCOVERY_REQUESTS_PER_SECOND = 1 / 15;

export interface ConsulDiscoveryOptions {
  consul: Consul;
  /** How long each blocking query may wait (Consul caps it at 600). */
  waitSeconds?: number;
  /** Let any server answer (fine for the catalog watch). */
  stale?: boolean;
  /** Delay after consecutive errors: minMs, doubling, capped at maxMs. */
  backoff?: { minMs?: number; maxMs?: number };
  /** Token-bucket rate (burst 2) of catalog requests. */
  requestsPerSecond?: number;
  logger?: Logger;
}

/** Exponential backoff: minMs after the first failure, doubling, never above maxMs. */
export function discoveryBackoffMs(consecutiveFailures: number, minMs: number, maxMs: number): number {
  const exponent = Math.min(Math.max(0, consecutiveFailures - 1), 30);
  return Math.min(maxMs, minMs * 2 ** exponent);
}

/** Sorted copy: services by name, each tag list sorted and without duplicates. */
export function normalizeServices(services: Record<string, readonly string[] | null | undefined>): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const name of Object.keys(services).sort()) {
    out[name] = [...new Set(services[name] ?? [])].sort();
  }
  return out;
}

export class ConsulDiscovery implements Discovery {
  private readonly consul: Consul;
  private readonly waitSeconds: number;
  private readonly stale: boolean;
  private readonly backoffMinMs: number;
  private readonly backoffMaxMs: number;
  private readonly requestsPerSecond: number;
  private readonly log: Logger;
  private returns = 0;

  constructor(opts: ConsulDiscoveryOptions) {
    this.consul = opts.consul;
    this.waitSeconds = opts.waitSeconds ?? DEFAULT_DISCOVERY_WAIT_SECONDS;
    this.stale = opts.stale ?? false;
    this.backoffMinMs = opts.backoff?.minMs ?? DEFAULT_DISCOVERY_BACKOFF_MIN_MS;
    this.backoffMaxMs = opts.backoff?.maxMs ?? DEFAULT_DISCOVERY_BACKOFF_MAX_MS;
    this.requestsPerSecond = opts.requestsPerSecond ?? DEFAULT_DISCOVERY_REQUESTS_PER_SECOND;
    this.log = (opts.logger ?? silentLogger()).child({ [F.component]: 'consul-discovery' });
  }

  /** How many blocking queries have returned successfully, over all watches (for tests and metrics). */
  get blockingReturns(): number {
    return this.returns;
  }

  async watch(
    signal: AbortSignal,
    onSnapshot: (snapshot: CatalogSnapshot) => Promise<void> | void,
    onError?: (err: unknown) => void,
  ): Promise<void> {
    const bucket = new TokenBucket({ ratePerSecond: this.requestsPerSecond });
    let index = 0;
    let lastEmitted: string | undefined;
    let failures = 0;
    const report = (err: unknown): void => {
      try {
        onError?.(err);
      } catch (hookErr) {
        this.log.warn({ [F.err]: describeError(hookErr) }, 'discovery onError threw');
      }
    };

    while (!signal.aborted) {
      if (!(await bucket.take(signal))) break;
      let result;
      try {
        result = await blockingGet<Record<string, string[] | null> | undefined>(
          this.consul,
          'catalog.service.list',
          {},
          { index, waitSeconds: this.waitSeconds, stale: this.stale, signal },
        );
      } catch (err) {
        if (signal.aborted || err instanceof AbortedError) break;
        failures += 1;
        const retryInMs = discoveryBackoffMs(failures, this.backoffMinMs, this.backoffMaxMs);
        this.log.warn({ [F.err]: describeError(err), [F.attempt]: failures, [F.retryInMs]: retryInMs }, 'catalog query failed');
        report(err);
        if (!(await sleep(retryInMs, signal))) break;
        continue;
      }
      failures = 0;
      this.returns += 1;
      if (result.indexReset) this.log.info({ consul_index: result.consulIndex }, 'catalog index went backwards; index reset');

      const services = normalizeServices(result.body ?? {});
      const content = JSON.stringify(services);
      if (content === lastEmitted) {
        index = result.index;
        continue;
      }
      try {
        await onSnapshot({ services, index: result.consulIndex });
        lastEmitted = content;
        index = result.index;
        this.log.debug(
          { [F.event]: EVENTS.discoverySnapshot, services: Object.keys(services).length, consul_index: result.consulIndex },
          'catalog snapshot',
        );
      } catch (err) {
        // Keep the old index so the next request answers at once and the snapshot is offered again.
        failures += 1;
        const retryInMs = discoveryBackoffMs(failures, this.backoffMinMs, this.backoffMaxMs);
        this.log.warn({ [F.err]: describeError(err), [F.attempt]: failures, [F.retryInMs]: retryInMs }, 'snapshot consumer failed');
        report(asConsulAcmeError(err, 'discovery onSnapshot'));
        if (!(await sleep(retryInMs, signal))) break;
      }
    }
  }
}
