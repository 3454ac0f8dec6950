/**
 * Hostname validation for HTTP-01 issuance. Pure: no I/O, no clock.
 *
 * A name is accepted when a public CA could issue a certificate for it by fetching
 * `http://<name>/.well-known/acme-challenge/<token>`: a multi-label DNS name in its ASCII
 * (punycode) form whose labels follow RFC 1123. Everything else gets a short reason that names
 * the problem and the offending part, for the log and the status API.
 */
import { isIPv4, isIPv6 } from 'node:net';
import { domainToASCII } from 'node:url';

export const MAX_HOSTNAME_LENGTH = 253;
export const MAX_LABEL_LENGTH = 63;

export const WILDCARD_REASON = 'wildcard names need DNS-01; HTTP-01 cannot prove them';
export const IP_ADDRESS_REASON = 'IP addresses cannot be validated with HTTP-01';
export const SINGLE_LABEL_REASON = 'single-label names are not publicly issuable';

export type HostnameResult = { ok: true; hostname: string } | { ok: false; reason: string };

const RFC1123_LABEL = /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/;
/** ASCII characters that may appear before IDN conversion; `_` is let through so the label check can name it. */
const ALLOWED_ASCII = /^[a-z0-9._-]$/;
const ALL_DIGITS = /^[0-9]+$/;
const SHOWN_MAX = 64;

/** Quotes a piece of input for a reason string, shortened so a 10 kB tag cannot flood a log line. */
function shown(text: string): string {
  const short = text.length > SHOWN_MAX ? `${text.slice(0, SHOWN_MAX)}…` : text;
  return JSON.stringify(short);
}

function fail(reason: string): HostnameResult {
  return { ok: false, reason };
}

function isIpLiteral(name: string): boolean {
  if (isIPv4(name)) return true;
  const unbracketed = name.startsWith('[') && name.endsWith(']') ? name.slice(1, -1) : name;
  return unbracketed.includes(':') && isIPv6(unbracketed);
}

/** Checks that need the name as written: they must run before IDN conversion, which maps or drops characters. */
function checkBeforeConversion(name: string): string | undefined {
  if (name === '') return 'hostname is empty';
  if (name.includes('*')) return WILDCARD_REASON;
  if (isIpLiteral(name)) return IP_ADDRESS_REASON;
  for (const char of name) {
    const code = char.codePointAt(0) ?? 0;
    if (code < 0x80 && !ALLOWED_ASCII.test(char)) {
      return `hostname contains the character ${JSON.stringify(char)}`;
    }
  }
  return undefined;
}

/** Structural checks on the ASCII form. */
function checkAscii(name: string): string | undefined {
  const early = checkBeforeConversion(name);
  if (early !== undefined) return early;
  if (name.length > MAX_HOSTNAME_LENGTH) {
    return `hostname is ${name.length} characters long; the limit is ${MAX_HOSTNAME_LENGTH}`;
  }
  const labels = name.split('.');
  if (labels.length === 1) return SINGLE_LABEL_REASON;
  for (const label of labels) {
    if (label === '') return `hostname ${shown(name)} has an empty label`;
    if (label.length > MAX_LABEL_LENGTH) {
      return `label ${shown(label)} is ${label.length} characters long; the limit is ${MAX_LABEL_LENGTH}`;
    }
    if (!RFC1123_LABEL.test(label)) {
      if (label.startsWith('-') || label.endsWith('-')) return `label ${shown(label)} starts or ends with a hyphen`;
      return `label ${shown(label)} may contain only letters, digits and hyphens`;
    }
  }
  const topLevel = labels[labels.length - 1] ?? '';
  if (ALL_DIGITS.test(topLevel)) return `top-level label ${shown(topLevel)} is all digits`;
  // Catches labels that look fine but break IDNA/URL host rules, e.g. bad punycode after "xn--".
  if (domainToASCII(name) !== name) {
    const badPunycode = labels.find((label) => label.startsWith('xn--') && domainToASCII(`${label}.example`) === '');
    if (badPunycode !== undefined) return `label ${shown(badPunycode)} is not valid punycode`;
    return `hostname ${shown(name)} is not a valid domain name`;
  }
  return undefined;
}

/**
 * The canonical spelling of a name that is already a hostname: trimmed, lower-case, without a
 * trailing dot. (normalizeHostname also validates and converts IDNs; use it for input.)
 */
export function canonicalHostname(name: string): string {
  const lower = name.trim().toLowerCase();
  return lower.endsWith('.') ? lower.slice(0, -1) : lower;
}

/**
 * Normalises a declared hostname: trims, lower-cases, drops one trailing dot, converts an
 * internationalised name to punycode, then validates it for HTTP-01 issuance.
 */
export function normalizeHostname(input: string): HostnameResult {
  let name = canonicalHostname(input);

  const early = checkBeforeConversion(name);
  if (early !== undefined) return fail(early);

  // eslint-disable-next-line no-control-regex
  if (/[^\x00-\x7f]/.test(name)) {
    const ascii = domainToASCII(name);
    if (ascii === '') return fail(`hostname ${shown(name)} is not a valid internationalised name`);
    name = ascii;
  }

  const problem = checkAscii(name);
  return problem === undefined ? { ok: true, hostname: name } : fail(problem);
}

/** Whether `input` normalises to an issuable hostname. */
export function isValidHostname(input: string): boolean {
  return normalizeHostname(input).ok;
}
