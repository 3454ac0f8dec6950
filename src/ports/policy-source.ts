import type { Policy } from '../domain/policy.js';

/**
 * Watches the domain policy (deny / allow / always lists; see domain/policy.ts for the syntax).
 *
 * Contract (test/contract/policy-source.contract.test.ts):
 * - `watch` calls `onPolicy` with whole policies, never deltas; the first call is the current
 *   state (EMPTY_POLICY-like when nothing is configured: a missing list is an empty list). It
 *   calls again only when the parsed policy changed (a blocking query returning the same data,
 *   or an edit that changes only comments, is not a change).
 * - Invalid lines do not stop the rest of a list from applying; they are reported in
 *   `policy.invalid` with list, line, text and reason.
 * - It fails closed: a list that cannot be read (an ACL refusal, a failed read) is not an empty
 *   list but an entry in `policy.unreadable` with the reason (e.g. `Consul refused the token
 *   (Permission denied)`), and the list itself is empty. If nothing can be read at the very
 *   start, the first call comes at once with all three lists unreadable, and the real policy
 *   follows as soon as it is read. An unreadable list is tried again on its own every few
 *   seconds (a permission granted later is found without any edit).
 * - It retries errors itself with backoff, reporting each through `onError`, and never rejects
 *   for a transient error; once a policy was passed on, a failing watch does not change it. It
 *   resolves when `signal` aborts.
 * - `onPolicy` is awaited before the next query; when it throws, the same policy is offered
 *   again after a backoff.
 * - Safe across processes: every instance watching the same source sees the same policy.
 */
export interface PolicySource {
  watch(
    signal: AbortSignal,
    onPolicy: (policy: Policy) => Promise<void> | void,
    onError?: (err: unknown) => void,
  ): Promise<void>;
}
