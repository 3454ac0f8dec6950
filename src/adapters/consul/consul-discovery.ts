/**
 * Discovery on `/v1/catalog/services` with blocking queries (docs/protocols.md §1.1, §1.3).
 * A blocking return is not a change: snapshots are compared by content (sorted services and tags)
 * and only a different one is passed on. The loop is rate-limited by a token bucket (burst 2) and
 * backs off exponentially on errors, reporting each through `onError`.
 */
import { F, silentLogger, type Logger } from '../../logging.js';
import type { CatalogSnapshot, Discovery } from '../../ports/discovery.js';
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

/** Sorted copy: services by name, each tag list sorted and without duplicates; `ignore` left out. */
export function normalizeServices(
  services: Record<string, readonly string[] | null | undefined>,
  ignore: ReadonlySet<string> = new Set(),
): Record<string, string[]> {
  return new ServiceNormalizer(ignore).normalize(services);
}

/** `sorted` without repeats (the same array when it has none). */
function unique(sorted: string[]): string[] {
  for (let i = 1; i < sorted.length; i++) {
    if (sorted[i] === sorted[i - 1]) return sorted.filter((value, j) => j === 0 || value !== sorted[j - 1]);
  }
  return sorted;
}

function sameStrings(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((value, i) => value === b[i]);
}

/** Whether two normalized snapshots are the same; a service whose tags did not change shares its array. */
export function sameServices(a: Record<string, string[]>, b: Record<string, string[]>): boolean {
  const names = Object.keys(a);
  if (names.length !== Object.keys(b).length) return false;
  return names.every((name) => {
    const tags = b[name];
    return tags !== undefined && (a[name] === tags || sameStrings(a[name] ?? [], tags));
  });
}

/**
 * normalizeServices for a stream of answers: a service whose tags come back as they were (in
 * whatever order Consul lists them this time) keeps the sorted array of the previous answer, so
 * sameServices and the desired set compare it by reference and parse nothing again. At 2,000
 * services this is what keeps our own registration's wake-ups (docs/protocols.md §1.1) cheap.
 */
class ServiceNormalizer {
  /** Service → its sorted tags in the last answer. */
  private previous = new Map<string, string[]>();

  constructor(private readonly ignore: ReadonlySet<string>) {}

  normalize(services: Record<string, readonly string[] | null | undefined>): Record<string, string[]> {
    const next = new Map<string, string[]>();
    const out: Record<string, string[]> = {};
    for (const name of Object.keys(services).sort()) {
      if (this.ignore.has(name)) continue;
      // Consul lists a service's tags in a new order in every answer (docs/protocols.md §1.3).
      const sorted = unique([...(services[name] ?? [])].sort());
      const before = this.previous.get(name);
      const tags = before !== undefined && sameStrings(before, sorted) ? before : sorted;
      next.set(name, tags);
      out[name] = tags;
    }
    this.previous = next;
    return out;
  }
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
    await watchBlocking<Record<string, string[] | null>, Record<string, string[]>>(
      signal,
      {
        consul: this.consul,
        method: 'catalog.service.list',
        methodOptions: {},
        waitSeconds: this.waitSeconds,
        stale: this.stale,
        requestsPerSecond: this.requestsPerSecond,
        ...(this.burst === undefined ? {} : { burst: this.burst }),
        backoff: { minMs: this.backoffMinMs, maxMs: this.backoffMaxMs },
        toValue: (body) => this.normalizer.normalize(body ?? {}),
        same: sameServices,
        what: 'catalog',
        log: this.log,
        onReturn: () => {
          this.returns += 1;
        },
      },
      async (services, consulIndex) => {
        await onSnapshot({ services, index: consulIndex });
        this.log.debug({ services: Object.keys(services).length, consul_index: consulIndex }, 'catalog snapshot');
      },
      onError,
    );
  }
}
