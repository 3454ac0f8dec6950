/**
 * Discovery on `/v1/catalog/services` with blocking queries (docs/protocols.md §1.1, §1.3).
 * A blocking return is not a change: snapshots are compared by content (sorted services and tags)
 * and only a different one is passed on. The loop is rate-limited by a token bucket (burst 2) and
 * backs off exponentially on errors, reporting each through `onError`. The answer is read as bytes
 * (ServiceNormalizer.read in catalog-snapshots.ts): our own registrations are skipped and an
 * unchanged service is not decoded.
 */
import { F, silentLogger, type Logger } from '../../logging.js';
import type { CatalogSnapshot, Discovery } from '../../ports/discovery.js';
import { sameServices, ServiceNormalizer } from './catalog-snapshots.js';
import type { Consul } from './consul-client.js';
import { watchBlocking } from './consul-watch.js';

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
  /** Token-bucket rate of catalog requests once the burst is spent. */
  requestsPerSecond?: number;
  /** Requests answered at once after a quiet spell; default 2. */
  burst?: number;
  /**
   * Services left out of every snapshot before it is compared: our own registrations, whose tags
   * we derive, so that updating them is never a catalog change for us.
   */
  ignoreServices?: readonly string[];
  logger?: Logger;
}

export class ConsulDiscovery implements Discovery {
  private readonly consul: Consul;
  private readonly waitSeconds: number;
  private readonly stale: boolean;
  private readonly backoffMinMs: number;
  private readonly backoffMaxMs: number;
  private readonly requestsPerSecond: number;
  private readonly burst: number | undefined;
  private readonly normalizer: ServiceNormalizer;
  private readonly log: Logger;
  private returns = 0;

  constructor(opts: ConsulDiscoveryOptions) {
    this.consul = opts.consul;
    this.waitSeconds = opts.waitSeconds ?? DEFAULT_DISCOVERY_WAIT_SECONDS;
    this.stale = opts.stale ?? false;
    this.backoffMinMs = opts.backoff?.minMs ?? DEFAULT_DISCOVERY_BACKOFF_MIN_MS;
    this.backoffMaxMs = opts.backoff?.maxMs ?? DEFAULT_DISCOVERY_BACKOFF_MAX_MS;
    this.requestsPerSecond = opts.requestsPerSecond ?? DEFAULT_DISCOVERY_REQUESTS_PER_SECOND;
    this.burst = opts.burst;
    this.normalizer = new ServiceNormalizer(new Set(opts.ignoreServices ?? []));
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
    await watchBlocking<Buffer, Record<string, string[]>>(
      signal,
      {
        consul: this.consul,
        method: 'catalog.service.list.bytes',
        methodOptions: {},
        waitSeconds: this.waitSeconds,
        stale: this.stale,
        requestsPerSecond: this.requestsPerSecond,
        ...(this.burst === undefined ? {} : { burst: this.burst }),
        backoff: { minMs: this.backoffMinMs, maxMs: this.backoffMaxMs },
        toValue: (body) => this.normalizer.read(body),
        same: sameServices,
        what: 'catalog',
        log: this.log,
        onReturn: () => {
          this.returns += 1;
        },
      },
      async (services, consulIndex) => {
        await onSnapshot({ services, index: consulIndex });
        this.log.debug({ services: this.normalizer.serviceCount, consul_index: consulIndex }, 'catalog snapshot');
      },
      onError,
    );
  }
}
