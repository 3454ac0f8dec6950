import type { CertificateData } from '../domain/certificate.js';

/** Why a certificate reaches a sink: a new name, a replaced certificate, or a full re-sync. */
export type SinkReason = 'obtained' | 'renewed' | 'resync';

/** One change of the store that a sink must reflect. */
export type SinkChange =
  | { kind: 'stored'; certificate: CertificateData; reason: SinkReason }
  /** The certificate of `hostname` was retired (removed from the store). */
  | { kind: 'removed'; hostname: string };

/** What the store holds, for a full re-sync. */
export interface SinkSnapshot {
  /** Every readable certificate consul-acme wrote to the store. */
  certificates: readonly CertificateData[];
  /**
   * Hostnames whose record exists but cannot be read as a certificate right now (being reissued):
   * a sink keeps whatever it holds for them, so a damaged record never takes a name off the air.
   */
  unreadable: readonly string[];
}

/**
 * A derived output of the certificate store: HAProxy's crt-list and runtime API, Traefik's file
 * provider, an operator's command. The store stays the single source of truth.
 *
 * Contract:
 * - Idempotent: applying the same change twice, or a re-sync that matches what the sink holds,
 *   leaves the sink as it was (and pushes nothing it does not need to). So a failed call is simply
 *   made again, and a sink that was down catches up.
 * - A sink is called by one caller at a time (the SinkRunner serialises the calls of each sink);
 *   it is not safe across processes unless its own documentation says so.
 * - `apply` and `resync` throw a ConsulAcmeError on failure (retryable when a later call may
 *   succeed); what was written before the failure stays written and is consistent on its own.
 * - `resync(snapshot)` makes the sink hold exactly `snapshot.certificates`: it removes what it
 *   holds for other names, except the names in `snapshot.unreadable`, which it leaves alone.
 * - Both honour `signal` between steps (an aborted call throws ABORTED); neither ever touches the store.
 */
export interface CertificateSink {
  /** A short name for logs, metrics and the status API: `haproxy`, `traefik`, `hook`. */
  readonly name: string;
  apply(change: SinkChange, signal?: AbortSignal): Promise<void>;
  resync(snapshot: SinkSnapshot, signal?: AbortSignal): Promise<void>;
}
