/** One permission this instance needs and its token lacks, named as the policy would grant it. */
export interface MissingPermission {
  system: 'vault' | 'consul';
  /**
   * The grant that is missing, in the policy's own words: for Vault `create, update on
   * "secret/data/consul-acme/pending/*"`, for Consul `session_prefix "" write`.
   */
  permission: string;
  /** What consul-acme needs it for. */
  neededFor: string;
  /** What the check saw: Vault's capabilities on the path, or Consul's answer. */
  detail: string;
}

/**
 * Finds the permissions a token lacks before the instance says it is ready (the start-up
 * self-check, src/engine/self-check.ts).
 *
 * Contract:
 * - `check(signal)` resolves the missing permissions, `[]` when nothing is missing. It leaves
 *   nothing behind that another reader could see: Vault is only asked what the token may do
 *   (`sys/capabilities-self`); Consul is asked by doing (a probe key, a session, a registration
 *   without tags), each undone at once.
 * - It rejects (a ConsulAcmeError) when it cannot tell: the system unreachable, sealed, an
 *   unknown datacenter, an unexpected answer. The caller retries later.
 * - Honours `signal` between requests. Safe to run from several instances at once.
 */
export interface PermissionCheck {
  /** `vault` or `consul`, for logs. */
  readonly name: string;
  check(signal?: AbortSignal): Promise<MissingPermission[]>;
}

/** One line per missing permission, for logs, errors and the status command. */
export function describeMissingPermission(missing: MissingPermission): string {
  return `${missing.system}: ${missing.permission} (needed because ${missing.neededFor}; ${missing.detail})`;
}
