/**
 * Discovery on `/v1/catalog/services` with blocking queries (docs/protocols.md §1.1, §1.3).
 * A blocking return is not a change: snapshots are compared by content (sorted services and tags)
 * and only a different one is passed on. The loop is rate-limited by a token bucket (burst 2) and
 * backs off exponentially on errors, reporting each through `onError`. The answer is read as bytes
 * and our own registrations are cut out before it is parsed (parseCatalogAnswer).
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
  if (a === b) return true;
  const names = Object.keys(a);
  if (names.length !== Object.keys(b).length) return false;
  return names.every((name) => {
    const tags = b[name];
    return tags !== undefined && (a[name] === tags || sameStrings(a[name] ?? [], tags));
  });
}

/**
 * Whether `tags` (in any order, repeats allowed) hold exactly the strings of `sorted` (sorted, no
 * repeats), without allocating for the few tags a service usually has.
 */
function sameTagSet(tags: readonly string[], sorted: readonly string[]): boolean {
  if (tags.length < sorted.length) return false;
  if (tags.length > SMALL_TAG_LIST) return sameStrings(unique([...tags].sort()), sorted);
  for (const tag of tags) if (!sorted.includes(tag)) return false;
  for (const tag of sorted) if (!tags.includes(tag)) return false;
  return true;
}

/** Up to this many tags, tag lists are compared by look-ups instead of sorting a copy. */
const SMALL_TAG_LIST = 16;

/**
 * normalizeServices for a stream of answers: a service whose tags come back as they were (in
 * whatever order Consul lists them this time) keeps the sorted array of the previous answer, so
 * sameServices and the desired set compare it by reference and parse nothing again; an answer in
 * which nothing changed gives back the previous snapshot itself. At 2,000 services this is what
 * keeps our own registration's wake-ups (docs/protocols.md §1.1) cheap.
 */
export class ServiceNormalizer {
  /** The last snapshot given out. */
  private previous = Object.create(null) as Record<string, string[]>;
  private previousCount = 0;

  constructor(private readonly ignore: ReadonlySet<string>) {}

  normalize(services: Record<string, readonly string[] | null | undefined>): Record<string, string[]> {
    const names = Object.keys(services).filter((name) => !this.ignore.has(name));
    if (names.length === this.previousCount && names.every((name) => this.unchanged(name, services[name]))) {
      return this.previous;
    }
    // No prototype (here and in `previous`): a service may be called `__proto__`.
    const out = Object.create(null) as Record<string, string[]>;
    for (const name of names.sort()) {
      const tags = services[name] ?? [];
      const before = this.previous[name];
      // Consul lists a service's tags in a new order in every answer (docs/protocols.md §1.3).
      out[name] = before !== undefined && sameTagSet(tags, before) ? before : unique([...tags].sort());
    }
    this.previous = out;
    this.previousCount = names.length;
    return out;
  }

  private unchanged(name: string, tags: readonly string[] | null | undefined): boolean {
    const before = this.previous[name];
    return before !== undefined && sameTagSet(tags ?? [], before);
  }
}

/**
 * The catalog answer (`/v1/catalog/services`, as bytes) parsed, with the tag lists of `cut` taken
 * out of the bytes first: our own registrations, which the snapshot leaves out anyway and which at
 * 10,000 names are half of the answer, so that neither decoding nor parsing pays for them.
 *
 * Consul writes the answer as one compact object of service name → array of strings. A service's
 * key can appear only as `"<name>":[` at the top level (a quote inside a string is escaped), and
 * its array ends at the first `]` outside a string; the key stays, with an empty list. An answer
 * of another shape is parsed whole.
 */
export function parseCatalogAnswer(body: Buffer | undefined, cut: Iterable<string>): Record<string, string[] | null> {
  if (body === undefined || body.length === 0) return {};
  let bytes = body;
  for (const name of cut) bytes = withEmptyList(bytes, name);
  const parsed = JSON.parse(bytes.toString('utf8')) as Record<string, string[] | null> | null;
  return parsed ?? {};
}

/** `body` with the array under the top-level key `name` emptied; `body` itself when it has none. */
function withEmptyList(body: Buffer, name: string): Buffer {
  const key = Buffer.from(`${JSON.stringify(name)}:[`);
  const at = body.indexOf(key);
  if (at < 0) return body;
  const open = at + key.length;
  const close = closingBracket(body, open);
  if (close === undefined || close === open) return body;
  return Buffer.concat([body.subarray(0, open), body.subarray(close)]);
}

/** Where the array whose contents start at `from` is closed: the first `]` outside a string. */
function closingBracket(body: Buffer, from: number): number | undefined {
  let inString = false;
  for (let i = from; i < body.length; i++) {
    const c = body[i];
    if (inString) {
      if (c === BACKSLASH) i++;
      else if (c === QUOTE) inString = false;
    } else if (c === QUOTE) {
      inString = true;
    } else if (c === CLOSE_BRACKET) {
      return i;
    }
  }
  return undefined;
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const CLOSE_BRACKET = 0x5d;

export class ConsulDiscovery implements Discovery {
  private readonly consul: Consul;
  private readonly waitSeconds: number;
  private readonly stale: boolean;
  private readonly backoffMinMs: number;
  private readonly backoffMaxMs: number;
  private readonly requestsPerSecond: number;
  private readonly burst: number | undefined;
  private readonly normalizer: ServiceNormalizer;
  private readonly ignoreServices: readonly string[];
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
    this.ignoreServices = opts.ignoreServices ?? [];
    this.normalizer = new ServiceNormalizer(new Set(this.ignoreServices));
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
        toValue: (body) => this.normalizer.normalize(parseCatalogAnswer(body, this.ignoreServices)),
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
