import type { KeyType, PendingOrder } from '../domain/certificate.js';

export interface IssueRequest {
  /** DNS names for the certificate, the first becomes the CN. Already validated. */
  hostnames: string[];
  keyType: KeyType;
}

export interface IssuedCertificate {
  certPem: string;
  keyPem: string;
  notBefore: Date;
  notAfter: Date;
  issuer: string;
  directoryUrl: string;
  /** The leaf's serial number, lower-case hex without separators or leading zeros. */
  serial: string;
}

export interface IssueHooks {
  /** Called once every authorization is valid, before finalize. Finalize is sent only after it resolves;
   *  when it rejects, issue() rejects with that same error and nothing is finalized (nothing is bought). */
  beforeFinalize(pending: PendingOrder): Promise<void>;
}

export type ResumeOutcome = { kind: 'issued'; certificate: IssuedCertificate } | { kind: 'gone'; why: string };

/**
 * Obtains certificates from an ACME CA with HTTP-01.
 *
 * Contract:
 * - Puts each challenge's key authorization into the shared ChallengeStore before asking the CA
 *   to validate, and deletes it afterwards, on success and failure alike.
 * - Write-ahead: `issue` calls `hooks.beforeFinalize` with the order's PendingOrder (its URL, the
 *   new private key, the names, this directory) once the CA has validated every name, and sends
 *   finalize only after the hook resolves. The caller makes that record durable in the hook; if
 *   anything goes wrong later, `resume(pending)` (any instance, after any restart) completes the
 *   same order instead of buying a second certificate.
 * - Honours `signal` between ACME requests and in the waits between retries: when it fires, the
 *   order is abandoned, challenge tokens are removed and the promise rejects with AbortedError
 *   (code ABORTED). Once finalize has been sent an abort still rejects with ABORTED: the CA may
 *   issue the certificate anyway, and the pending record lets the next attempt download it.
 * - Rejects with AcmeProblemError: ACME_RATE_LIMITED (with retryAfterSeconds), ACME_PROBLEM
 *   (problem type kept), ACME_UNREACHABLE (with retryAfterSeconds when the CA sent one). The
 *   transport retries idempotent requests (directory, nonce, POST-as-GET fetches) a few times
 *   within about 30 s; it never resends newOrder, challenge or finalize, and it does no long waits
 *   of its own: the queue owns waiting (docs/errors.md).
 * - The certificate returned always matches the key returned: a leaf whose public key is not the
 *   order's key is refused with a non-retryable ACME_PROBLEM.
 * - `resume(pending)` places no new order. It fetches `pending.orderUrl` and: `valid` → downloads
 *   the certificate; `processing` → polls until valid, then downloads; `ready` → finalizes again
 *   with a CSR made from `pending.keyPem`, polls, downloads. It returns `{ kind: 'gone', why }`
 *   when the order cannot give a certificate any more (unknown to the CA, `invalid`, expired,
 *   `pending`, or a record of another directory): the caller then deletes the record and orders
 *   anew. Network errors and 5xx reject (retryable ACME_UNREACHABLE): the caller keeps the record.
 *   The returned certificate's key is `pending.keyPem`.
 * - Safe to call concurrently for different hostnames; the account is shared through the
 *   AccountStore.
 */
export interface Issuer {
  readonly directoryUrl: string;
  issue(request: IssueRequest, hooks: IssueHooks, signal?: AbortSignal): Promise<IssuedCertificate>;
  /** Completes the order of a pending record without placing a new one (see the contract above). */
  resume(pending: PendingOrder, signal?: AbortSignal): Promise<ResumeOutcome>;
}
