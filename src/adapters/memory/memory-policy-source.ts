import { EMPTY_POLICY, policyFromTexts, type Policy } from '../../domain/policy.js';
import type { PolicySource } from '../../ports/policy-source.js';
import { MemoryWatch } from './memory-watch.js';

/** The three lists as text, as they are stored in Consul KV; a missing list is empty. */
export interface PolicyTexts {
  deny?: string;
  allow?: string;
  always?: string;
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
    unreadable: (policy.unreadable ?? []).map((u) => ({ ...u })),
  };
}

/**
 * PolicySource for tests and runs without Consul: the policy is whatever was last `set`. Same
 * contract as ConsulPolicySource: the first call is the current policy, later ones only when it
 * changed, onPolicy awaited before the next, `watch` resolves when the signal aborts.
 */
export class MemoryPolicySource implements PolicySource {
  private policy: Policy;
  private unreadable: Policy['unreadable'] = [];
  private readonly watches = new MemoryWatch<Policy>(() => this.current());

  constructor(initial: Policy | PolicyTexts = EMPTY_POLICY) {
    this.policy = isPolicy(initial) ? copy(initial) : policyFromTexts(initial);
  }

  watch(
    signal: AbortSignal,
    onPolicy: (policy: Policy) => Promise<void> | void,
    onError?: (err: unknown) => void,
  ): Promise<void> {
    return this.watches.watch(signal, onPolicy, onError);
  }

  /**
   * Replaces the policy, given parsed or as the lists' texts. Resolves when every watcher whose
   * last policy differs has handled the new one.
   */
  async set(policy: Policy | PolicyTexts): Promise<void> {
    this.policy = isPolicy(policy) ? copy(policy) : policyFromTexts(policy);
    await this.watches.publish();
  }

  /**
   * Marks lists as unreadable (as a Consul token refused them, or a read failed), keeping the rest
   * of the policy; an unreadable list is empty. `[]` makes every list readable again (their last
   * set content comes back). Resolves as `set` does.
   */
  async setUnreadable(unreadable: Policy['unreadable']): Promise<void> {
    this.unreadable = unreadable.map((u) => ({ ...u }));
    await this.watches.publish();
  }

  /** Reports `err` to every watcher's onError, as a failing Consul would. */
  fail(err: unknown): void {
    this.watches.fail(err);
  }

  /** The policy as watchers see it: as last set, with the lists marked unreadable emptied (a copy). */
  current(): Policy {
    const policy = copy(this.policy);
    if (this.unreadable.length === 0) return policy;
    const lists = new Set(this.unreadable.map((u) => u.list));
    const readable = { ...policy, invalid: policy.invalid.filter((p) => !lists.has(p.list)) };
    for (const list of lists) readable[list] = [];
    return { ...readable, unreadable: [...policy.unreadable, ...this.unreadable.map((u) => ({ ...u }))] };
  }
}
