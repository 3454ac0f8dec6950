/**
 * The domain policy from Consul KV: the keys `<prefix>policy/deny`, `<prefix>policy/allow` and
 * `<prefix>policy/always`, each a list as text (domain/policy.ts). It fails closed.
 *
 * A blocking query on the folder `<prefix>policy/` with `?recurse` (docs/protocols.md §1.1, §1.6)
 * tells when something changed; the lists themselves are then read each on its own. Under ACLs a
 * recursive read silently leaves out keys the token may not read, so an unreadable list would
 * look empty (§1.6); read alone, it answers 403, and the list goes into `policy.unreadable` with
 * the reason (`Consul refused the token (Permission denied)`), as does a list whose read failed
 * for any other reason. A missing key is an empty list.
 *
 * - First policy: if the very first attempt fails (Consul unreachable at start), a policy with all
 *   three lists unreadable, naming the error, is passed on at once, so the engine can keep
 *   renewing what it has; the real policy follows as soon as it is read.
 * - After that, a failing watch query changes nothing: it is retried with backoff and reported
 *   through `onError`.
 * - While a list is unreadable the folder query waits only `unreadableRecheckSeconds`, because
 *   fixing a token's ACL does not touch the KV index and would never wake a longer wait.
 * - Otherwise a blocking return whose folder content is unchanged is not a change (no key reads),
 *   and only a policy different from the last one passed on is passed on. The loop is rate-limited
 *   by a token bucket (burst 2) and backs off exponentially on errors.
 *
 * Other keys under the folder are ignored.
 */
import { exponentialSchedule, retryDelayMs } from '../../domain/backoff.js';
import { policyFromTexts, type Policy, type PolicyListName } from '../../domain/policy.js';
import { AbortedError, asConsulAcmeError, describeError } from '../../errors.js';
import { F, silentLogger, type Logger } from '../../logging.js';
import { CONSUL_KV_FOLDERS } from '../../naming.js';
import type { PolicySource } from '../../ports/policy-source.js';
import { blockingGet, classifyConsulError, sleep, TokenBucket, type Consul } from './consul-client.js';
import { kvGet, type KvItem } from './consul-kv.js';

export const DEFAULT_POLICY_WAIT_SECONDS = 300;
export const DEFAULT_POLICY_BACKOFF_MIN_MS = 1_000;
export const DEFAULT_POLICY_BACKOFF_MAX_MS = 30_000;
/** A policy edited all the time is re-read at most every ~15 s once the burst of 2 is spent. */
export const DEFAULT_POLICY_REQUESTS_PER_SECOND = 1 / 15;
/** How often an unreadable list is tried again. */
export const DEFAULT_POLICY_UNREADABLE_RECHECK_SECONDS = 15;

/** The folder under the prefix and the three keys in it. */
export const POLICY_FOLDER = CONSUL_KV_FOLDERS.policy;
export const POLICY_LISTS: readonly PolicyListName[] = Object.freeze(['deny', 'allow', 'always']);

export interface ConsulPolicySourceOptions {
  consul: Consul;
  /** The service's KV folder, e.g. `consul-acme/` (a trailing slash is added when missing). */
  prefix: string;
  /** How long each blocking query may wait (Consul caps it at 600). */
  waitSeconds?: number;
  /** How long it waits instead while a list is unreadable. */
  unreadableRecheckSeconds?: number;
  /** Delay after consecutive errors: minMs, doubling, capped at maxMs. */
  backoff?: { minMs?: number; maxMs?: number };
  /** Token-bucket rate (burst 2) of folder queries. */
  requestsPerSecond?: number;
  logger?: Logger;
}

/** The KV key of one list, e.g. `consul-acme/policy/deny`. */
export function policyKey(prefix: string, list: PolicyListName): string {
  const folder = prefix.endsWith('/') ? prefix : `${prefix}/`;
  return `${folder}${POLICY_FOLDER}${list}`;
}

/** A classified error's message without the operation in front: why a list is unreadable. */
function reasonOf(err: unknown, what: string): string {
  const message = classifyConsulError(err, what).message;
  return message.startsWith(`${what}: `) ? message.slice(what.length + 2) : message;
}

/** The policy when no list could be read. */
export function unreadablePolicy(reason: string): Policy {
  return { ...policyFromTexts({}), unreadable: POLICY_LISTS.map((list) => ({ list, reason })) };
}

export class ConsulPolicySource implements PolicySource {
  private readonly consul: Consul;
  private readonly prefix: string;
  private readonly waitSeconds: number;
  private readonly unreadableRecheckSeconds: number;
  private readonly backoffMinMs: number;
  private readonly backoffMaxMs: number;
  private readonly requestsPerSecond: number;
  private readonly log: Logger;
  private returns = 0;

  constructor(opts: ConsulPolicySourceOptions) {
    this.consul = opts.consul;
    this.prefix = opts.prefix.endsWith('/') ? opts.prefix : `${opts.prefix}/`;
    this.waitSeconds = opts.waitSeconds ?? DEFAULT_POLICY_WAIT_SECONDS;
    this.unreadableRecheckSeconds = opts.unreadableRecheckSeconds ?? DEFAULT_POLICY_UNREADABLE_RECHECK_SECONDS;
    this.backoffMinMs = opts.backoff?.minMs ?? DEFAULT_POLICY_BACKOFF_MIN_MS;
    this.backoffMaxMs = opts.backoff?.maxMs ?? DEFAULT_POLICY_BACKOFF_MAX_MS;
    this.requestsPerSecond = opts.requestsPerSecond ?? DEFAULT_POLICY_REQUESTS_PER_SECOND;
    this.log = (opts.logger ?? silentLogger()).child({ [F.component]: 'consul-policy-source' });
  }

  /** How many folder queries have returned successfully, over all watches (for tests and metrics). */
  get blockingReturns(): number {
    return this.returns;
  }

  /** The folder the watch reads, e.g. `consul-acme/policy/`. */
  get folder(): string {
    return `${this.prefix}${POLICY_FOLDER}`;
  }

  /** Reads the three lists, each on its own. Never throws: a list that cannot be read is unreadable. */
  async readPolicy(): Promise<Policy> {
    const texts: Partial<Record<PolicyListName, string>> = {};
    const unreadable: Policy['unreadable'] = [];
    await Promise.all(
      POLICY_LISTS.map(async (list) => {
        const key = policyKey(this.prefix, list);
        try {
          texts[list] = (await kvGet(this.consul, key))?.value ?? '';
        } catch (err) {
          unreadable.push({ list, reason: reasonOf(err, `kv get ${key}`) });
        }
      }),
    );
    const policy = policyFromTexts(texts);
    policy.unreadable = POLICY_LISTS.flatMap((list) => unreadable.filter((u) => u.list === list));
    return policy;
  }

  async watch(
    signal: AbortSignal,
    onPolicy: (policy: Policy) => Promise<void> | void,
    onError?: (err: unknown) => void,
  ): Promise<void> {
    const bucket = new TokenBucket({ ratePerSecond: this.requestsPerSecond });
    const schedule = exponentialSchedule(this.backoffMinMs, this.backoffMaxMs);
    let index = 0;
    let failures = 0;
    /** The folder's content when the last policy was passed on. */
    let lastFolder: string | undefined;
    let lastPolicy: string | undefined;
    let someUnreadable = false;

    const report = (err: unknown, message: string): number => {
      failures += 1;
      const retryInMs = retryDelayMs(failures, schedule);
      this.log.warn({ [F.err]: describeError(err), [F.attempt]: failures, [F.retryInMs]: retryInMs }, message);
      try {
        onError?.(err);
      } catch (hookErr) {
        this.log.warn({ [F.err]: describeError(hookErr) }, 'policy onError threw');
      }
      return retryInMs;
    };
    /** Passes `policy` on unless it is the last one passed on; after a throwing onPolicy, waits the backoff. */
    const offer = async (policy: Policy): Promise<'passed' | 'failed' | 'aborted'> => {
      const content = JSON.stringify(policy);
      if (content === lastPolicy) return 'passed';
      try {
        await onPolicy(policy);
      } catch (err) {
        const retryInMs = report(asConsulAcmeError(err, 'policy consumer'), 'policy consumer failed');
        return (await sleep(retryInMs, signal)) ? 'failed' : 'aborted';
      }
      lastPolicy = content;
      if (policy.unreadable.length > 0) {
        this.log.warn({ unreadable: policy.unreadable }, 'policy lists unreadable; failing closed for them');
      }
      return 'passed';
    };

    while (!signal.aborted) {
      if (!(await bucket.take(signal))) break;
      let result;
      try {
        result = await blockingGet<KvItem[] | undefined>(
          this.consul,
          'kv.get',
          { key: this.folder, recurse: true },
          { index, waitSeconds: someUnreadable ? this.unreadableRecheckSeconds : this.waitSeconds, signal },
        );
      } catch (err) {
        if (signal.aborted || err instanceof AbortedError) break;
        const retryInMs = report(err, 'policy query failed');
        // Nothing read yet: fail closed at once rather than leave the engine without a policy.
        if (lastPolicy === undefined) {
          if ((await offer(unreadablePolicy(reasonOf(err, 'consul kv.get')))) === 'aborted') break;
        }
        if (!(await sleep(retryInMs, signal))) break;
        continue;
      }
      failures = 0;
      this.returns += 1;
      if (result.indexReset) this.log.info({ consul_index: result.consulIndex }, 'policy index went backwards; reset');
      const folder = JSON.stringify(
        (Array.isArray(result.body) ? result.body : []).map((item) => [item.Key, item.ModifyIndex, item.Value]),
      );
      if (folder === lastFolder && !someUnreadable) {
        index = result.index;
        continue;
      }
      const policy = await this.readPolicy();
      if (signal.aborted) break;
      const outcome = await offer(policy);
      if (outcome === 'aborted') break;
      // onPolicy threw: keep the old index, so the next query answers at once and offers it again.
      if (outcome === 'failed') continue;
      someUnreadable = policy.unreadable.length > 0;
      lastFolder = folder;
      index = result.index;
    }
  }
}
