import type { KeyType } from '../domain/certificate.js';

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
}

/**
 * Obtains certificates from an ACME CA with HTTP-01.
 *
 * Contract:
 * - Puts each challenge's key authorization into the shared ChallengeStore before asking the CA
 *   to validate, and deletes it afterwards, on success and failure alike.
 * - Honours `signal` between ACME requests: when it fires, the order is abandoned, challenge
 *   tokens are removed and the promise rejects with AbortedError.
 * - Rejects with AcmeProblemError: ACME_RATE_LIMITED (with retryAfterSeconds), ACME_PROBLEM
 *   (problem type kept), ACME_UNREACHABLE. It does no long retries of its own: the queue owns
 *   waiting.
 * - Safe to call concurrently for different hostnames; the account is shared through the
 *   AccountStore.
 */
export interface Issuer {
  readonly directoryUrl: string;
  issue(request: IssueRequest, signal?: AbortSignal): Promise<IssuedCertificate>;
}
