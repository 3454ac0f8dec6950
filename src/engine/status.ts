import type { RejectedHostname } from '../domain/hostnames-types.js';
import type { SinkStatus } from '../sinks/sink-runner.js';
import type { RequestStatus } from './requests.js';

export type { RequestStatus, SinkStatus };

/** What one hostname looks like from outside: served by GET /status and `consul-acme status`. */
export interface CertificateStatus {
  hostname: string;
  /** `valid`: stored and not due; `pending`: waiting in the queue; `issuing`: an order is running;
   *  `failed`: the last attempt failed and a retry is scheduled; `waiting`: held until
   *  `nextAttemptAt` by a spent budget, a CA pause, a route not yet live or a store or Consul
   *  fault (see `waitingFor`); `refused`: the policy lists refuse it (see `policy`);
   *  `unmanaged`: a record under our prefix that consul-acme did not write;
   *  `newer-format`: a record a newer release wrote in a format this one does not read (left alone). */
  state: 'valid' | 'pending' | 'issuing' | 'failed' | 'waiting' | 'refused' | 'unmanaged' | 'newer-format';
  /** The planner's reason for the last decision, e.g. `Missing`, `NotYetDue`. */
  reason: string | undefined;
  /** The policy verdict when refused: `denied by <pattern>` or `not on the allow list`. */
  policy: string | undefined;
  /** Why a waiting name waits: the spent budget, the paused scope, the route, the fault. */
  waitingFor: string | undefined;
  services: string[];
  expiresAt: string | undefined;
  /** When a kept certificate falls due for renewal. */
  renewsAt: string | undefined;
  /** When a certificate nobody declares any more will be removed (its grace period ends). */
  retiresAt: string | undefined;
  lastError: string | undefined;
  attempts: number;
  nextAttemptAt: string | undefined;
  /** When consul-acme adopted the certificate another tool wrote (until its first renewal). */
  adoptedAt?: string | undefined;
  /** Why a record consul-acme did not write is not adopted, when adoption is asked for it. */
  adoption?: string | undefined;
  /** The operator's request for this name (reissue, revoke, adopt) until it is carried out. */
  request?: RequestStatus | undefined;
}

export interface PolicyStatus {
  deny: number;
  allow: number;
  always: number;
  /** Lines of the policy lists that were ignored, with why. */
  invalid: Array<{ list: string; line: number; text: string; reason: string }>;
  /** Lists that could not be read, with why. */
  unreadable: Array<{ list: string; reason: string }>;
  /** Why the policy refuses every name without a certificate now (fail closed), if it does. */
  failsClosed: string | undefined;
}

/** Whether the certificate store answers, as the engine saw it last. */
export interface StoreHealthStatus {
  /** The store's current fault, e.g. `STORE_PERMISSION_DENIED: …`; undefined while it answers. */
  error: string | undefined;
  failingSince: string | undefined;
}

export interface StatusReport {
  instance: string;
  /** `issuer` (the whole service) or `sinks` (CONSUL_ACME_MODE=sinks: only the sinks, from the store). */
  mode?: 'issuer' | 'sinks';
  ready: boolean;
  /** The certificate store, e.g. `vault:secret/fabio/certs`. */
  store: string;
  storeHealth: StoreHealthStatus;
  directoryUrl: string;
  discovery: { lastSyncAt: string | undefined; lastError: string | undefined; services: number };
  certificates: CertificateStatus[];
  rejected: RejectedHostname[];
  policy: PolicyStatus;
  /** The configured sinks (HAProxy, Traefik, hook): empty when none is. */
  sinks: SinkStatus[];
  /** The start-up self-check of the tokens' permissions (src/engine/self-check.ts). */
  permissions?: PermissionsStatus;
}

/** What the start-up self-check found: ready only once `passed`. */
export interface PermissionsStatus {
  passed: boolean;
  /** When the last check ran (ISO time); undefined before the first. */
  checkedAt: string | undefined;
  /** Each missing permission, named as the policy would grant it. */
  missing: Array<{ system: 'vault' | 'consul'; permission: string; neededFor: string; detail: string }>;
  /** Why the last check could not tell (Vault or Consul unreachable, an unknown datacenter). */
  error: string | undefined;
}
