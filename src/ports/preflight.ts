export type PreflightResult =
  | { ok: true }
  | {
      ok: false;
      /** `NoDNS`: the name has no A/AAAA record. `NotRouted`: the challenge path does not reach us. */
      reason: 'NoDNS' | 'NotRouted';
      /** What was seen, for logs and the status API: the DNS error code, or what answered instead. */
      detail: string;
    };

/**
 * Checks, before asking the CA, that an HTTP-01 validation of `hostname` would reach the shared
 * challenge store: the name resolves, and `http://<hostname>/.well-known/acme-challenge/<probe>`
 * answers a probe value we just stored. A failed preflight spares a failed authorization, which
 * Let's Encrypt counts (5 per name per hour).
 *
 * Contract (test/integration/preflight.test.ts):
 * - Resolves a verdict; it does not throw for "not reachable", only for failures of our own side
 *   (the challenge store refusing the probe) and for an aborted `signal` (AbortedError).
 * - Leaves nothing behind: the probe token is deleted afterwards, whatever happened.
 * - Advisory: it sees the network from this instance, not from the CA's vantage points.
 */
export interface Preflight {
  check(hostname: string, signal?: AbortSignal): Promise<PreflightResult>;
}
