import type { RejectedHostname } from '../domain/hostnames-types.js';
import type { SinkStatus } from '../sinks/sink-runner.js';

export type { SinkStatus };

/** What one hostname looks like from outside: served by GET /status and `consul-acme status`. */
export interface CertificateStatus {
  hostname: string;
  /** `valid`: stored and not due; `pending`: waiting in the queue; `issuing`: an order is running;
   *  `failed`: the last attempt failed and a retry is scheduled; `waiting`: a spent budget or a
   *  CA pause holds it until `nextAttemptAt`; `refused`: the policy lists refuse it (see `policy`);
   *  `unmanaged`: a record under our prefix that consul-acme did not write. */
  state: 'valid' | 'pending' | 'issuing' | 'failed' | 'waiting' | 'refused' | 'unmanaged';
  /** The planner's reason for the last decision, e.g. `Missing`, `NotYetDue`. */
  reason: string | undefined;
  /** The policy verdict when refused: `denied by <pattern>` or `not on the allow list`. */
  policy: string | undefined;
  /** Why a waiting name waits: the spent budget or the paused scope. */
  waitingFor: string | undefined;
  services: string[];
  expiresAt: string | undefined;
  renewsAt: string | undefined;
  lastError: string | undefined;
  attempts: number;
  nextAttemptAt: string | undefined;
}

export interface PolicyStatus {
  deny: number;
  allow: number;
  always: number;
  /** Lines of the policy lists that were ignored, with why. */
  invalid: Array<{ list: string; line: number; text: string; reason: string }>;
}

export interface StatusReport {
  instance: string;
  ready: boolean;
  store: string;
  directoryUrl: string;
  discovery: { lastSyncAt: string | undefined; lastError: string | undefined; services: number };
  certificates: CertificateStatus[];
  rejected: RejectedHostname[];
  policy: PolicyStatus;
  /** The configured sinks (HAProxy, Traefik, hook): empty when none is. */
  sinks: SinkStatus[];
}
