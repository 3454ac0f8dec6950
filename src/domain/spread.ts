/**
 * Spreads routine renewals over a window, so that thousands of certificates issued together do
 * not all renew in the same minute. The delay is a deterministic hash of the hostname, so every
 * instance computes the same one and restarts do not reshuffle it.
 */

/** FNV-1a, 32 bits: a stable, well-mixed hash of a short string. */
function fnv1a(text: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash >>> 0;
}

/**
 * How long to hold back a routine renewal of `hostname`: a point in [0, window), where the window
 * is `spreadWindowMs` but never more than a quarter of the time the certificate has left, so
 * spreading can never push a renewal close to expiry.
 */
export function renewalSpreadDelayMs(hostname: string, spreadWindowMs: number, remainingMs: number): number {
  const window = Math.max(0, Math.min(spreadWindowMs, remainingMs / 4));
  return Math.floor((fnv1a(hostname) / 0x1_0000_0000) * window);
}
