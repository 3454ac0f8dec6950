/**
 * Revocation reasons: the RFC 5280 §5.3.1 CRLReason names an operator types, and the codes an ACME
 * revokeCert request carries (RFC 8555 §7.6). Only the four reasons Let's Encrypt accepts from a
 * subscriber are accepted here; it rejects a request with any other (docs/protocols.md §7.2), so
 * the other RFC 5280 reasons are refused before anything is sent. Pure.
 */

/** The reasons a subscriber may give, and their RFC 5280 codes. */
export const REVOCATION_REASONS = {
  unspecified: 0,
  keyCompromise: 1,
  superseded: 4,
  cessationOfOperation: 5,
} as const;

export type RevocationReason = keyof typeof REVOCATION_REASONS;

/** The other RFC 5280 reasons, with their codes: the CA refuses them from a subscriber. */
export const REFUSED_REVOCATION_REASONS: Readonly<Record<string, number>> = Object.freeze({
  cACompromise: 2,
  affiliationChanged: 3,
  certificateHold: 6,
  removeFromCRL: 8,
  privilegeWithdrawn: 9,
  aACompromise: 10,
});

export function isRevocationReason(value: unknown): value is RevocationReason {
  return typeof value === 'string' && Object.hasOwn(REVOCATION_REASONS, value);
}

/** The RFC 5280 code of `reason`. */
export function revocationCode(reason: RevocationReason): number {
  return REVOCATION_REASONS[reason];
}

/**
 * The reason an operator typed, matched without regard to case (`keycompromise` is
 * `keyCompromise`), or why it is refused.
 */
export function parseRevocationReason(
  text: string,
): { ok: true; reason: RevocationReason } | { ok: false; problem: string } {
  const wanted = text.trim().toLowerCase();
  const found = (Object.keys(REVOCATION_REASONS) as RevocationReason[]).find((name) => name.toLowerCase() === wanted);
  if (found !== undefined) return { ok: true, reason: found };
  const names = Object.keys(REVOCATION_REASONS).join(', ');
  const refused = Object.keys(REFUSED_REVOCATION_REASONS).find((name) => name.toLowerCase() === wanted);
  if (refused !== undefined) {
    return { ok: false, problem: `${refused} is not a reason the CA accepts from a subscriber; give one of ${names}` };
  }
  return { ok: false, problem: `"${text}" is not a revocation reason; use one of ${names}` };
}

/**
 * Whether the certificate is revoked before the replacement's order is admitted by the budgets.
 * A compromised key must stop being trusted at once, even if a spent budget delays the new
 * certificate; for every other reason the revocation waits until the order may be placed, so the
 * certificate served is never revoked for longer than one order takes.
 */
export function revokesBeforeAdmission(reason: RevocationReason): boolean {
  return reason === 'keyCompromise';
}
