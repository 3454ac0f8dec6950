/**
 * The Fabio tags the issuer registers for itself so the CA's HTTP-01 requests reach it.
 *
 * Fabio tries host-specific routes before host-less ones, so an app tagged
 * `urlprefix-app.example.com/` would swallow `app.example.com/.well-known/acme-challenge/…`
 * ahead of a host-less `urlprefix-/.well-known/acme-challenge/` route. One host-specific route
 * per managed hostname wins, because Fabio sorts paths within a host in reverse order and the
 * challenge path sorts before `/` (docs/protocols.md §4.2).
 */
import { DEFAULT_FABIO_TAG_PREFIX } from './tags.js';

export const ACME_CHALLENGE_PATH = '/.well-known/acme-challenge/';

/** Sorted, unique `urlprefix-<host>/.well-known/acme-challenge/` tags, one per hostname. */
export function challengeRouteTags(hostnames: string[], fabioTagPrefix: string = DEFAULT_FABIO_TAG_PREFIX): string[] {
  const tags = new Set(hostnames.map((hostname) => `${fabioTagPrefix}${hostname}${ACME_CHALLENGE_PATH}`));
  return [...tags].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}
