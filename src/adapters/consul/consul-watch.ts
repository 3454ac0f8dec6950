/**
 * The one watch loop over a Consul blocking query, shared by the catalog discovery and the policy
 * source (docs/protocols.md §1.1): the index rules live in `blockingGet`; this loop adds a
 * token bucket (burst 2) so a churning result degrades to polling, exponential backoff on
 * errors (each reported through `onError`), and change detection — a blocking return is not a
 * change, so a value is passed on only when its content differs from the last one accepted. A
 * consumer that throws gets the same value again after the backoff.
 */
import { exponentialSchedule, retryDelayMs } from '../../domain/backoff.js';
import { AbortedError, asConsulAcmeError, describeError } from '../../errors.js';
import { F, type Logger } from '../../logging.js';
import { blockingGet, sleep, TokenBucket, type BlockingMethod, type Consul } from './consul-client.js';

export interface BlockingWatchOptions<Body, Value> {
  consul: Consul;
  method: BlockingMethod;
  methodOptions: Record<string, unknown>;
  waitSeconds: number;
  stale?: boolean;
  requestsPerSecond: number;
  /** Requests answered at once after a quiet spell before the rate applies; default 2. */
  burst?: number;
  backoff: { minMs: number; maxMs: number };
  /** Turns a response body (undefined for a 404) into the value, in a canonical form for comparison. */
  toValue: (body: Body | undefined) => Value;
  /**
   * Whether a value is the same as the last one accepted (which the consumer must not have
   * changed); by default the JSON texts are compared, the last one kept as text.
   */
  same?: (a: Value, b: Value) => boolean;
  /** What is watched, for log messages, e.g. `catalog`. */
  what: string;
  log: Logger;
  /** Called after every successful blocking return (for tests and metrics). */
  onReturn?: () => void;
}

/** Runs until `signal` aborts; never rejects for a transient error. */
export async function watchBlocking<Body, Value>(
  signal: AbortSignal,
  opts: BlockingWatchOptions<Body, Value>,
  onValue: (value: Value, consulIndex: number) => Promise<void> | void,
  onError?: (err: unknown) => void,
): Promise<void> {
  const bucket = new TokenBucket({
    ratePerSecond: opts.requestsPerSecond,
    ...(opts.burst === undefined ? {} : { burst: opts.burst }),
  });
  let index = 0;
  let lastAccepted: { value: Value; text: string | undefined } | undefined;
  let failures = 0;
  const backoffSchedule = exponentialSchedule(opts.backoff.minMs, opts.backoff.maxMs);
  const fail = async (err: unknown, message: string): Promise<boolean> => {
    failures += 1;
    const retryInMs = retryDelayMs(failures, backoffSchedule);
    opts.log.warn({ [F.err]: describeError(err), [F.attempt]: failures, [F.retryInMs]: retryInMs }, message);
    try {
      onError?.(err);
    } catch (hookErr) {
      opts.log.warn({ [F.err]: describeError(hookErr) }, `${opts.what} onError threw`);
    }
    return sleep(retryInMs, signal);
  };

  while (!signal.aborted) {
    if (!(await bucket.take(signal))) break;
    let result;
    try {
      result = await blockingGet<Body | undefined>(opts.consul, opts.method, opts.methodOptions, {
        index,
        waitSeconds: opts.waitSeconds,
        stale: opts.stale ?? false,
        signal,
      });
    } catch (err) {
      if (signal.aborted || err instanceof AbortedError) break;
      if (!(await fail(err, `${opts.what} query failed`))) break;
      continue;
    }
    failures = 0;
    opts.onReturn?.();
    if (result.indexReset)
      opts.log.info({ consul_index: result.consulIndex }, `${opts.what} index went backwards; index reset`);

    let value: Value;
    try {
      value = opts.toValue(result.body);
    } catch (err) {
      // An answer that cannot be read (not JSON, say) is retried like a failed request.
      if (!(await fail(asConsulAcmeError(err, `${opts.what} answer`), `${opts.what} answer unreadable`))) break;
      continue;
    }
    const text = opts.same ? undefined : JSON.stringify(value);
    const unchanged =
      lastAccepted !== undefined && (opts.same ? opts.same(value, lastAccepted.value) : text === lastAccepted.text);
    if (unchanged) {
      index = result.index;
      continue;
    }
    try {
      await onValue(value, result.consulIndex);
      lastAccepted = { value, text };
      index = result.index;
    } catch (err) {
      // Keep the old index so the next request answers at once and the value is offered again.
      if (!(await fail(asConsulAcmeError(err, `${opts.what} consumer`), `${opts.what} consumer failed`))) break;
    }
  }
}
