import { EMPTY_POLICY, policyFromTexts, type Policy } from '../../domain/policy.js';
import type { PolicySource } from '../../ports/policy-source.js';

/** The three lists as text, as they are stored in Consul KV; a missing list is empty. */
export interface PolicyTexts {
  deny?: string;
  allow?: string;
  always?: string;
}

interface Watcher {
  lastEmitted: string | undefined;
  /** Deliveries run one after another: onPolicy is awaited before the next. */
  chain: Promise<void>;
  onPolicy: (policy: Policy) => Promise<void> | void;
  onError: ((err: unknown) => void) | undefined;
}

function isPolicy(value: Policy | PolicyTexts): value is Policy {
  return Array.isArray((value as Policy).invalid);
}

function copy(policy: Policy): Policy {
  return {
    deny: [...policy.deny],
    allow: [...policy.allow],
    always: [...policy.always],
    invalid: policy.invalid.map((p) => ({ ...p })),
  };
}

/**
 * PolicySource for tests and runs without Consul: the policy is whatever was last `set`. Same
 * contract as ConsulPolicySource: the first call is the current policy, later ones only when it
 * changed, onPolicy awaited before the next, `watch` resolves when the signal aborts.
 */
export class MemoryPolicySource implements PolicySource {
  private policy: Policy;
  private readonly watchers = new Set<Watcher>();

  constructor(initial: Policy | PolicyTexts = EMPTY_POLICY) {
    this.policy = isPolicy(initial) ? copy(initial) : policyFromTexts(initial);
  }

  async watch(
    signal: AbortSignal,
    onPolicy: (policy: Policy) => Promise<void> | void,
    onError?: (err: unknown) => void,
  ): Promise<void> {
    if (signal.aborted) return;
    const watcher: Watcher = { lastEmitted: undefined, chain: Promise.resolve(), onPolicy, onError };
    this.watchers.add(watcher);
    void this.deliver(watcher);
    await new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
    this.watchers.delete(watcher);
    await watcher.chain;
  }

  /**
   * Replaces the policy, given parsed or as the lists' texts. Resolves when every watcher whose
   * last policy differs has handled the new one.
   */
  async set(policy: Policy | PolicyTexts): Promise<void> {
    this.policy = isPolicy(policy) ? copy(policy) : policyFromTexts(policy);
    await Promise.all([...this.watchers].map((w) => this.deliver(w)));
  }

  /** Reports `err` to every watcher's onError, as a failing Consul would. */
  fail(err: unknown): void {
    for (const w of this.watchers) w.onError?.(err);
  }

  /** The policy as last set (a copy). */
  current(): Policy {
    return copy(this.policy);
  }

  private deliver(watcher: Watcher): Promise<void> {
    const policy = this.policy;
    watcher.chain = watcher.chain.then(async () => {
      const content = JSON.stringify(policy);
      if (content === watcher.lastEmitted) return;
      try {
        await watcher.onPolicy(copy(policy));
        watcher.lastEmitted = content;
      } catch (err) {
        // Offered again on the next set; a throwing onError must not break the chain.
        try {
          watcher.onError?.(err);
        } catch {
          /* ignored */
        }
      }
    });
    return watcher.chain;
  }
}
