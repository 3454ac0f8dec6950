import type { RejectedHostname } from '../domain/hostnames-types.js';

/** What one hostname looks like from outside: served by GET /status and `consul-acme status`. */
export interface CertificateStatus {
  hostname: string;
  /** `valid`: stored and not due; `pending`: waiting in the queue; `issuing`: an order is running;
   *  `failed`: the last attempt failed and a retry is scheduled; `unmanaged`: a record under our
   *  prefix that consul-acme did not write. */
  state: 'valid' | 'pending' | 'issuing' | 'failed' | 'unmanaged';
  /** The planner's reason for the last decision, e.g. `Missing`, `NotYetDue`. */
  reason: string | undefined;
  services: string[];
  expiresAt: string | undefined;
  renewsAt: string | undefined;
  lastError: string | undefined;
  attempts: number;
  nextAttemptAt: string | undefined;
}

export interface StatusReport {
  instance: string;
  ready: boolean;
  store: string;
  directoryUrl: string;
  discovery: { lastSyncAt: string | undefined; lastError: string | undefined; services: number };
  certificates: CertificateStatus[];
  rejected: RejectedHostname[];
}
