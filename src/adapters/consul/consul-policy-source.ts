/**
 * The domain policy from Consul KV: the keys `<prefix>policy/deny`, `<prefix>policy/allow` and
 * `<prefix>policy/always`, each a list as text (domain/policy.ts), watched with ONE blocking
 * query on the folder `<prefix>policy/` with `?recurse` (docs/protocols.md §1.1, §1.6), so an
 * edit to any of the three wakes it.
 *
 * A missing folder answers 404 with an X-Consul-Index, which the consul package turns into an
 * undefined body while blockingGet still returns the index: all three lists are then empty, and
 * the next request blocks on that index, so creating a key later wakes the watch. Other keys
 * under the folder are ignored. As in ConsulDiscovery, a blocking return is not a change:
 * policies are compared by content and only a different one is passed on; the loop is
 * rate-limited by a token bucket (burst 2) and backs off exponentially on errors.
 */
import { CONSUL_KV_FOLDERS } from '../../naming.js';
import { F, silentLogger, type Logger } from '../../logging.js';
import { policyFromTexts, type Policy, type PolicyListName } from '../../domain/policy.js';
import type { PolicySource } from '../../ports/policy-source.js';
import type { Consul } from './consul-client.js';
import { watchBlocking } from './consul-watch.js';

export const DEFAULT_POLICY_WAIT_SECONDS = 300;
export const DEFAULT_POLICY_BACKOFF_MIN_MS = 1_000;
export const DEFAULT_POLICY_BACKOFF_MAX_MS = 30_000;
/** A policy edited all the time is re-read at most every ~15 s once the burst of 2 is spent. */
export const DEFAULT_POLICY_REQUESTS_PER_SECOND = 1 / 15;

/** The folder under the prefix and the three keys in it. */
export const POLICY_FOLDER = CONSUL_KV_FOLDERS.policy;
export const POLICY_LISTS: readonly PolicyListName[] = Object.freeze(['deny', 'allow', 'always']);

export interface ConsulPolicySourceOptions {
  consul: Consul;
  /** The service's KV folder, e.g. `consul-acme/` (a trailing slash is added when missing). */
  prefix: string;
  /** How long each blocking query may wait (Consul caps it at 600). */
  waitSeconds?: number;
  /** Delay after consecutive errors: minMs, doubling, capped at maxMs. */
  backoff?: { minMs?: number; maxMs?: number };
  /** Token-bucket rate (burst 2) of KV requests. */
  requestsPerSecond?: number;
  logger?: Logger;
}

/** One entry of a recursive KV read, as the consul package returns it (Value decoded to text). */
interface KvItem {
  Key?: string;
  Value?: string | null;
}

/** The KV key of one list, e.g. `consul-acme/policy/deny`. */
export function policyKey(prefix: string, list: PolicyListName): string {
  const folder = prefix.endsWith('/') ? prefix : `${prefix}/`;
  return `${folder}${POLICY_FOLDER}${list}`;
}

export class ConsulPolicySource implements PolicySource {
  private readonly consul: Consul;
  private readonly prefix: string;
  private readonly waitSeconds: number;
  private readonly backoffMinMs: number;
  private readonly backoffMaxMs: number;
  private readonly requestsPerSecond: number;
  private readonly log: Logger;
  private returns = 0;

  constructor(opts: ConsulPolicySourceOptions) {
    this.consul = opts.consul;
    this.prefix = opts.prefix.endsWith('/') ? opts.prefix : `${opts.prefix}/`;
    this.waitSeconds = opts.waitSeconds ?? DEFAULT_POLICY_WAIT_SECONDS;
    this.backoffMinMs = opts.backoff?.minMs ?? DEFAULT_POLICY_BACKOFF_MIN_MS;
    this.backoffMaxMs = opts.backoff?.maxMs ?? DEFAULT_POLICY_BACKOFF_MAX_MS;
    this.requestsPerSecond = opts.requestsPerSecond ?? DEFAULT_POLICY_REQUESTS_PER_SECOND;
    this.log = (opts.logger ?? silentLogger()).child({ [F.component]: 'consul-policy-source' });
  }

  /** How many blocking queries have returned successfully, over all watches (for tests and metrics). */
  get blockingReturns(): number {
    return this.returns;
  }

  /** The folder the watch reads, e.g. `consul-acme/policy/`. */
  get folder(): string {
    return `${this.prefix}${POLICY_FOLDER}`;
  }

  /** Builds the policy from a recursive read of the folder (undefined: the folder is missing). */
  policyFromItems(items: readonly KvItem[] | undefined): Policy {
    const texts: Partial<Record<PolicyListName, string>> = {};
    for (const item of items ?? []) {
      const list = POLICY_LISTS.find((l) => item.Key === policyKey(this.prefix, l));
      if (list !== undefined) texts[list] = typeof item.Value === 'string' ? item.Value : '';
    }
    return policyFromTexts(texts);
  }

  async watch(
    signal: AbortSignal,
    onPolicy: (policy: Policy) => Promise<void> | void,
    onError?: (err: unknown) => void,
  ): Promise<void> {
    await watchBlocking<KvItem[], Policy>(
      signal,
      {
        consul: this.consul,
        method: 'kv.get',
        methodOptions: { key: this.folder, recurse: true },
        waitSeconds: this.waitSeconds,
        requestsPerSecond: this.requestsPerSecond,
        backoff: { minMs: this.backoffMinMs, maxMs: this.backoffMaxMs },
        toValue: (body) => this.policyFromItems(Array.isArray(body) ? body : undefined),
        what: 'policy',
        log: this.log,
        onReturn: () => {
          this.returns += 1;
        },
      },
      onPolicy,
      onError,
    );
  }
}
