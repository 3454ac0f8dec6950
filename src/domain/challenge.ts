/**
 * HTTP-01 in one place: the challenge path, what a token may look like, and the Fabio tags the
 * issuer registers for itself so the CA's requests for that path reach it.
 *
 * A token is base64url (RFC 8555 §8.3); the upper bound only keeps junk away from the store.
 *
 * Fabio tries host-specific routes before host-less ones, so an app tagged
 * `urlprefix-app.example.com/` would swallow `app.example.com/.well-known/acme-challenge/…`
 * ahead of a host-less `urlprefix-/.well-known/acme-challenge/` route. One host-specific route
 * per managed hostname wins, because Fabio sorts paths within a host in reverse order and the
 * challenge path sorts before `/` (docs/protocols.md §4.2).
 */
import { DEFAULT_FABIO_TAG_PREFIX } from './tags.js';

export const ACME_CHALLENGE_PATH = '/.well-known/acme-challenge/';
export const MAX_CHALLENGE_TOKEN_LENGTH = 256;
const CHALLENGE_TOKEN_PATTERN = /^[A-Za-z0-9_-]{1,256}$/;

/** Whether `token` may be an HTTP-01 token (base64url, 1 to 256 characters), so it can name a KV key or a URL path. */
export function isChallengeToken(token: string): boolean {
  return CHALLENGE_TOKEN_PATTERN.test(token);
}

/** The `urlprefix-<host>/.well-known/acme-challenge/` tag that routes the challenge path of `hostname` to us. */
export function challengeRouteTag(hostname: string, fabioTagPrefix: string = DEFAULT_FABIO_TAG_PREFIX): string {
  return `${fabioTagPrefix}${hostname}${ACME_CHALLENGE_PATH}`;
}

/** Sorted, unique challenge route tags, one per hostname. */
export function challengeRouteTags(hostnames: string[], fabioTagPrefix: string = DEFAULT_FABIO_TAG_PREFIX): string[] {
  const tags = new Set(hostnames.map((hostname) => challengeRouteTag(hostname, fabioTagPrefix)));
  return [...tags].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}
