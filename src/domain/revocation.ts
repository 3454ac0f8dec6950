/**
 * Revocation reasons: the RFC 5280 §5.3.1 CRLReason names an operator types, and the codes an ACME
 * revokeCert request carries (RFC 8555 §7.6). Only the reasons a subscriber may give are accepted;
 * the others are for a CA's own use, and CAs refuse them (docs/protocols.md §7.1). Pure.
 */

/** Subscriber reasons and their RFC 5280 codes. */
export const REVOCATION_REASONS = {
  unspecified: 0,
  keyCompromise: 1,
  affiliationChanged: 3,
  superseded: 4,
  cessationOfOperation: 5,
} as const;

export type RevocationReason = keyof typeof REVOCATION_REASONS;

/** RFC 5280 reasons a subscriber cannot give (the CA's own), with their codes, for a clear refusal. */
export const CA_ONLY_REVOCATION_REASONS: Readonly<Record<string, number>> = Object.freeze({
  cACompromise: 2,
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
  const caOnly = Object.keys(CA_ONLY_REVOCATION_REASONS).find((name) => name.toLowerCase() === wanted);
  if (caOnly !== undefined) {
    return { ok: false, problem: `${caOnly} is a reason only a CA may give; a subscriber may give ${names}` };
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
