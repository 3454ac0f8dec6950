/**
 * Where consul-acme puts things outside its own process: Consul KV folders under
 * CONSUL_ACME_KV_PREFIX, its service registrations, and the admin health paths. The service uses
 * these, and test/unit/deploy-agreement.test.ts checks the shipped policies and job against them.
 */

/** Folders under CONSUL_ACME_KV_PREFIX. */
export const CONSUL_KV_FOLDERS = {
  /** HTTP-01 key authorizations, shared by every instance. */
  challenges: 'challenges/',
  /** Per-certificate locks and the renewal leader lock. */
  locks: 'locks/',
  /** Per-certificate attempt state (backoff). */
  state: 'state/',
  /** Deny, allow and always-issued lists, edited by operators. */
  policy: 'policy/',
  /** Client-side rate-limit budgets. */
  budgets: 'budgets/',
  /** Operator requests (reissue, revoke, adopt) until they are carried out, one key per hostname. */
  requests: 'requests/',
} as const;

export function consulKvFolder(kvPrefix: string, folder: keyof typeof CONSUL_KV_FOLDERS): string {
  return `${kvPrefix}${CONSUL_KV_FOLDERS[folder]}`;
}

/** Admin API health paths. */
export const ADMIN_HEALTH_PATHS = {
  live: '/health/live',
  ready: '/health/ready',
  /** 200 passing, 429 warning, 503 critical: read by the certificate health check in Consul. */
  certificates: '/health/certificates',
} as const;

/** The service carrying the certificate health check, beside the instance's own registration. */
export function certificateHealthServiceName(serviceName: string): string {
  return `${serviceName}-certificates`;
}
