/**
 * Keeps this instance's own service registration in the local Consul agent, with Fabio route
 * tags for the challenge path of every managed hostname.
 *
 * Contract:
 * - `update(tags)` registers (or re-registers) the service with exactly `tags`; calling it with
 *   the same tags again does nothing.
 * - `deregister()` removes the registration; idempotent.
 * - Errors are CONSUL_* ConsulAcmeErrors; the caller logs them and retries on the next update.
 */
export interface ServiceRegistration {
  update(tags: string[]): Promise<void>;
  deregister(): Promise<void>;
}
