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
  private readonly watches = new MemoryWatch<Policy>(() => copy(this.policy));

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

  /** Reports `err` to every watcher's onError, as a failing Consul would. */
  fail(err: unknown): void {
    this.watches.fail(err);
  }

  /** The policy as last set (a copy). */
  current(): Policy {
    return copy(this.policy);
  }
}
