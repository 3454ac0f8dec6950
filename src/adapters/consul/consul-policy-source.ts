/**
 * The domain policy from Consul KV: the keys `<prefix>policy/deny`, `<prefix>policy/allow` and
 * `<prefix>policy/always`, each a list as text (domain/policy.ts), watched with ONE blocking
 * query on the folder `<prefix>policy/` with `?recurse` (reference/protocols.md §1.1, §1.6), so an
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
import { AbortedError, asConsulAcmeError, describeError } from '../../errors.js';
import { F, silentLogger, type Logger } from '../../logging.js';
import { policyFromTexts, type Policy, type PolicyListName } from '../../domain/policy.js';
import type { PolicySource } from '../../ports/policy-source.js';
import { blockingGet, sleep, TokenBucket, type Consul } from './consul-client.js';
import { discoveryBackoffMs } from './consul-discovery.js';

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
    const bucket = new TokenBucket({ ratePerSecond: this.requestsPerSecond });
    let index = 0;
    let lastEmitted: string | undefined;
    let failures = 0;
    const report = (err: unknown): void => {
      try {
        onError?.(err);
      } catch (hookErr) {
        this.log.warn({ [F.err]: describeError(hookErr) }, 'policy onError threw');
      }
    };

    while (!signal.aborted) {
      if (!(await bucket.take(signal))) break;
      let result;
      try {
        result = await blockingGet<KvItem[] | undefined>(
          this.consul,
          'kv.get',
          { key: this.folder, recurse: true },
          { index, waitSeconds: this.waitSeconds, signal },
        );
      } catch (err) {
        if (signal.aborted || err instanceof AbortedError) break;
        failures += 1;
        const retryInMs = discoveryBackoffMs(failures, this.backoffMinMs, this.backoffMaxMs);
        this.log.warn({ [F.err]: describeError(err), [F.attempt]: failures, [F.retryInMs]: retryInMs }, 'policy query failed');
        report(err);
        if (!(await sleep(retryInMs, signal))) break;
        continue;
      }
      failures = 0;
      this.returns += 1;
      if (result.indexReset) this.log.info({ consul_index: result.consulIndex }, 'policy index went backwards; index reset');

      const policy = this.policyFromItems(Array.isArray(result.body) ? result.body : undefined);
      const content = JSON.stringify(policy);
      if (content === lastEmitted) {
        index = result.index;
        continue;
      }
      try {
        await onPolicy(policy);
        lastEmitted = content;
        index = result.index;
        this.log.info(
          {
            deny: policy.deny.length,
            allow: policy.allow.length,
            always: policy.always.length,
            invalid: policy.invalid.length,
            consul_index: result.consulIndex,
          },
          'policy loaded',
        );
        for (const problem of policy.invalid) {
          this.log.warn({ list: problem.list, line: problem.line, text: problem.text, [F.reason]: problem.reason }, 'policy line skipped');
        }
      } catch (err) {
        // Keep the old index so the next request answers at once and the policy is offered again.
        failures += 1;
        const retryInMs = discoveryBackoffMs(failures, this.backoffMinMs, this.backoffMaxMs);
        this.log.warn({ [F.err]: describeError(err), [F.attempt]: failures, [F.retryInMs]: retryInMs }, 'policy consumer failed');
        report(asConsulAcmeError(err, 'policy onPolicy'));
        if (!(await sleep(retryInMs, signal))) break;
      }
    }
  }
}
