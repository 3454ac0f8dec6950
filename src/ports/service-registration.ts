/**
 * Keeps this instance's own service registration in the local Consul agent, with Fabio route
 * tags for the challenge path of every managed hostname.
 *
 * Contract (test/integration/consul-registration.test.ts runs the same cases on both):
 * - `update(tags)` registers (or re-registers) the service with exactly `tags`; calling it with
 *   the same tags again sends nothing. Calls close together are coalesced into one registration
 *   with the last tag set; each call resolves once the registration of its tags, or of a later
 *   set that replaced them, is in place in the agent, and rejects with that registration's error.
 * - `change(added, removed)` is `update` with the tags last asked for, `added` added and then
 *   `removed` removed, at a cost that grows with these tags only (the caller keeps the whole set);
 *   it is coalesced with `update` calls in call order.
 * - `reassert()` reads the agent's copy and registers again whatever is missing or differs from
 *   what was last registered (an agent restarted without its data, a deregistration through the
 *   API); it resolves whether it had to. Before the first `update` and after `deregister` there
 *   is nothing to reassert and it resolves `false`. The caller runs it periodically.
 * - `deregister()` removes the registration; idempotent.
 * - Errors are CONSUL_* ConsulAcmeErrors; the caller logs them and retries on the next update
 *   or reassert. Calls run one after another in the order they were made. One process only.
 */
export interface ServiceRegistration {
  update(tags: readonly string[]): Promise<void>;
  change(added: readonly string[], removed: readonly string[]): Promise<void>;
  reassert(): Promise<boolean>;
  deregister(): Promise<void>;
}
