/**
 * Operator requests: what `consul-acme reissue`, `revoke` and `adopt` ask of one name's
 * certificate, kept until carried out (in Consul KV, src/ports/request-store.ts) so that any
 * instance can carry them out, after any crash. Pure: the decisions below are functions of the
 * request, what the store holds, and `now`.
 *
 * A reissue or a revocation names the certificate it is about (`replaces`: the stored one when it
 * was asked), not a point in time: it is open while that certificate is still the stored one, so
 * the clocks of the instances never have to agree, and a certificate another instance stored
 * meanwhile settles it. A revocation also carries the certificate's PEM (public), so it can be
 * revoked even after a renewal replaced it in the store.
 */
import type { CertificateFacts, StoredFacts } from './certificate.js';
import type { RevocationReason } from './revocation.js';

export const REQUEST_KINDS = ['reissue', 'revoke', 'adopt'] as const;
export type RequestKind = (typeof REQUEST_KINDS)[number];

/** The certificate a reissue or revocation is about. */
export interface ReplacedCertificate {
  /** The stored certificate's `obtainedAt`: the request is open while the stored one has it. */
  obtainedAt: Date;
  notAfter: Date;
  /** The leaf's serial, lower-case hex without leading zeros. */
  serial: string;
  /** Leaf and chain, PEM (revocations only: the CA is sent the leaf). */
  certPem?: string;
}

export interface OperatorRequest {
  hostname: string;
  kind: RequestKind;
  requestedAt: Date;
  /** The instance that took the request. */
  requestedBy: string;
  /** The certificate to replace (reissue, revoke); undefined for an adoption. */
  replaces: ReplacedCertificate | undefined;
  /** Revocations: the RFC 5280 reason sent to the CA. */
  revokeReason: RevocationReason | undefined;
  /** Revocations: when the CA confirmed it (or said it was revoked already). */
  revokedAt: Date | undefined;
}

/** A request as stored, with the store's version for check-and-set (Consul's ModifyIndex). */
export interface StoredOperatorRequest extends OperatorRequest {
  version: number;
}

/** Whether `certificate` is the one `replaces` names. */
export function isReplacedCertificate(
  replaces: ReplacedCertificate | undefined,
  certificate: CertificateFacts | undefined,
): boolean {
  return (
    replaces !== undefined &&
    certificate !== undefined &&
    certificate.obtainedAt.getTime() === replaces.obtainedAt.getTime() &&
    certificate.notAfter.getTime() === replaces.notAfter.getTime()
  );
}

/**
 * Whether the request still calls for work on the stored record (`stored`, undefined when nothing
 * is stored): a reissue or revocation while its certificate is still the stored one of ours, an
 * adoption while the record is still not ours.
 */
export function isRequestOpen(request: OperatorRequest, stored: StoredFacts | undefined): boolean {
  if (request.kind === 'adopt') return stored !== undefined && !stored.managed;
  return stored !== undefined && stored.managed && isReplacedCertificate(request.replaces, stored.certificate);
}

/**
 * Whether the CA must still be asked to revoke the request's certificate: a revocation not yet
 * confirmed, of a certificate that has not expired (a CA does not revoke an expired certificate,
 * and nobody trusts it any more).
 */
export function needsRevocation(request: OperatorRequest, now: Date): boolean {
  return (
    request.kind === 'revoke' &&
    request.revokedAt === undefined &&
    request.replaces?.certPem !== undefined &&
    now.getTime() < request.replaces.notAfter.getTime()
  );
}

/** Whether the request is finished: nothing to revoke, nothing to replace or adopt. */
export function isRequestDone(request: OperatorRequest, stored: StoredFacts | undefined, now: Date): boolean {
  return !needsRevocation(request, now) && !isRequestOpen(request, stored);
}

/**
 * Whether `existing` must be carried out before `incoming` may take its place: a revocation not yet
 * confirmed, of another certificate than the one `incoming` is about (one request per name is kept,
 * and a revocation is never dropped).
 */
export function isBlockedBy(existing: OperatorRequest | undefined, incoming: OperatorRequest): boolean {
  if (existing === undefined || existing.kind !== 'revoke' || existing.revokedAt !== undefined) return false;
  return !aboutSameCertificate(existing, incoming);
}

/** Both requests name the certificate they replace, and it is the same one (by when it was obtained). */
function aboutSameCertificate(a: OperatorRequest, b: OperatorRequest): boolean {
  return (
    a.replaces !== undefined &&
    b.replaces !== undefined &&
    a.replaces.obtainedAt.getTime() === b.replaces.obtainedAt.getTime()
  );
}

/**
 * The request to keep when `incoming` arrives while `existing` is stored (unless it is blocked:
 * isBlockedBy). A revocation is never
 * weakened into a reissue of the same certificate, and a pending revocation is raised to
 * keyCompromise when that is asked; otherwise a request about the same certificate keeps the
 * first one (the command is idempotent), and one about another certificate replaces it.
 */
export function mergeRequests(existing: OperatorRequest | undefined, incoming: OperatorRequest): OperatorRequest {
  if (existing === undefined) return incoming;
  const sameCertificate = aboutSameCertificate(existing, incoming);
  if (existing.kind === 'adopt' && incoming.kind === 'adopt') return existing;
  if (!sameCertificate) return incoming;
  // A compromised key outranks any other reason, while the certificate is not revoked yet.
  if (
    existing.kind === 'revoke' &&
    incoming.kind === 'revoke' &&
    existing.revokedAt === undefined &&
    incoming.revokeReason === 'keyCompromise' &&
    existing.revokeReason !== 'keyCompromise'
  ) {
    return incoming;
  }
  if (existing.kind === incoming.kind) return existing;
  // A revocation and a reissue of the same certificate: the revocation, which does both.
  return existing.kind === 'revoke' ? existing : incoming;
}
