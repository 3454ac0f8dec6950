/**
 * Keeps this instance's own service registration in the local Consul agent, with Fabio route
 * tags for the challenge path of every managed hostname.
 *
 * Contract:
 * - `update(tags)` registers (or re-registers) the service with exactly `tags`; calling it with
 *   the same tags again does nothing.
 * - `reassert()` reads the agent's copy and registers again when it is missing or differs from
 *   what was last registered (the agent lost its state, or someone deregistered it); resolves
 *   whether it had to. Before the first `update` it does nothing.
 * - `deregister()` removes the registration; idempotent.
 * - Errors are CONSUL_* ConsulAcmeErrors; the caller logs them and retries on the next update.
 */
export interface ServiceRegistration {
  update(tags: string[]): Promise<void>;
  reassert(): Promise<boolean>;
  deregister(): Promise<void>;
}
