import type { KeyType, PendingOrder } from '../domain/certificate.js';
import type { RevocationReason } from '../domain/revocation.js';

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

export interface RevokeRequest {
  /** The certificate to revoke, PEM: the leaf first (the chain, if any, is not sent). */
  certPem: string;
  /** Sent to the CA as its RFC 5280 code (src/domain/revocation.ts). */
  reason: RevocationReason;
  /**
   * The certificate's private key (PEM), when at hand: if the CA refuses this account the
   * revocation (another account obtained the certificate, e.g. one consul-acme adopted), the
   * request is sent again, signed with this key instead (RFC 8555 §7.6). Never sent to the CA.
   */
  keyPem?: string;
}

export interface RevokeOutcome {
  /** The CA answered that the certificate was revoked already (`alreadyRevoked`): nothing changed. */
  alreadyRevoked: boolean;
  /** What signed the request the CA accepted: this account, or the certificate's own key. */
  signedWith: 'account' | 'certificate-key';
}

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
 * - `revoke(request)` asks the CA to revoke a certificate (RFC 8555 §7.6) with the request's reason
 *   code, signed by this account, and, when the CA refuses the account (`unauthorized`) and
 *   `request.keyPem` is given, once more signed with the certificate's key. A certificate the CA
 *   says is revoked already resolves `{ alreadyRevoked: true }`, so a revocation repeated after a
 *   crash is harmless. The request is sent once (never retried by the transport, docs/errors.md);
 *   other refusals reject with the classified AcmeProblemError (e.g. `badRevocationReason`), no
 *   answer with ACME_UNREACHABLE; an aborted `signal` before it is sent rejects with ABORTED.
 * - Safe to call concurrently for different hostnames; the account is shared through the
 *   AccountStore.
 */
export interface Issuer {
  readonly directoryUrl: string;
  issue(request: IssueRequest, hooks: IssueHooks, signal?: AbortSignal): Promise<IssuedCertificate>;
  /** Completes the order of a pending record without placing a new one (see the contract above). */
  resume(pending: PendingOrder, signal?: AbortSignal): Promise<ResumeOutcome>;
  /** Revokes a certificate at the CA (see the contract above). */
  revoke(request: RevokeRequest, signal?: AbortSignal): Promise<RevokeOutcome>;
}
