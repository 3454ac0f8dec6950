export type PreflightResult =
  | { ok: true }
  | {
      ok: false;
      /**
       * `NoDNS`: the name has no A/AAAA record. `CAA`: the name's relevant CAA record set (RFC 8659,
       * src/domain/caa.ts) does not allow the configured CA identity, or its lookup failed (a CA
       * does not issue when it cannot read the records). `NotRouted`: the challenge path does not
       * reach us.
       */
      reason: 'NoDNS' | 'CAA' | 'NotRouted';
      /**
       * What was seen, for logs and the status API: the DNS error code, the CAA records and the
       * identity they do not allow, or what answered the probe instead.
       */
      detail: string;
    };

/**
 * Checks, before asking the CA, that an HTTP-01 validation of `hostname` would succeed: the name
 * resolves, its CAA records (when CA identities are configured) allow the CA, and
 * `http://<hostname>/.well-known/acme-challenge/<probe>` answers a probe value we just stored in the
 * shared challenge store. A failed preflight spares a failed authorization, which Let's Encrypt
 * counts (5 per name per hour). The checks run in that order and the first failure is the verdict.
 *
 * Contract (test/integration/preflight.test.ts, test/integration/preflight-caa.test.ts):
 * - Resolves a verdict; it does not throw for "not reachable" or "not allowed", only for failures
 *   of our own side (the challenge store refusing the probe) and for an aborted `signal`
 *   (AbortedError).
 * - Leaves nothing behind: the probe token is deleted afterwards, whatever happened.
 * - Advisory: it sees DNS and the network from this instance, not from the CA's vantage points.
 */
export interface Preflight {
  check(hostname: string, signal?: AbortSignal): Promise<PreflightResult>;
}
