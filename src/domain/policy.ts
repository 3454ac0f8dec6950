/**
 * Domain policy: which declared hostnames may be issued. Pure: no I/O, no clock.
 *
 * Three lists, each kept as text (one Consul KV key per list, see ports/policy-source.ts):
 * - `deny`: never issue a matching name. Deny wins over everything.
 * - `allow`: when non-empty, only matching names are issued; when empty, every valid name is.
 * - `always`: exact names are issued even when no service declares them; a matching declared
 *   name is issued even when the allow list would not include it. Deny still wins.
 *
 * List syntax: one pattern per line; `#` starts a comment (whole line or trailing); blank lines
 * are ignored; whitespace around a pattern is trimmed; patterns are lower-cased. A pattern is an
 * exact hostname (validated and normalised as a declared one: trailing dot dropped, IDN to
 * punycode) or `*.` followed by such a hostname.
 *
 * Decision: `*` stands for exactly one label, as in TLS wildcard certificates (RFC 6125 §6.4.3).
 * `*.example.com` matches `a.example.com`, but neither `a.b.example.com` nor `example.com`. To
 * cover an apex and its subdomains, list both, and one `*.` line per depth. A one-label reach
 * cannot surprise anyone: `*.example.com` in an allow list never lets `x.internal.example.com`
 * through. Anything else with a `*` (`*foo.com`, `a.*.com`, `**.x`, `*`) is invalid, as are IP
 * addresses and patterns with spaces inside; an invalid line is reported and skipped, the rest of
 * the list applies.
 */
import { normalizeHostname } from './hostname.js';

export type PolicyListName = 'deny' | 'allow' | 'always';

/** One line of a list that is not a pattern, with the reason (1-based line number). */
export interface PolicyLineProblem {
  line: number;
  text: string;
  reason: string;
}

export interface ParsedPolicyList {
  /** Valid patterns in first-seen order, without duplicates. */
  patterns: string[];
  invalid: PolicyLineProblem[];
}

export interface Policy {
  deny: string[];
  allow: string[];
  always: string[];
  /** Lines that were skipped, with the list they came from. */
  invalid: Array<PolicyLineProblem & { list: PolicyListName }>;
  /**
   * Lists that could not be read (ACL 403, Consul error), with why. While any list is unreadable
   * the policy fails closed: no new name is issued, names that already have a certificate renew.
   */
  unreadable: Array<{ list: PolicyListName; reason: string }>;
}

function freezePolicy(policy: Policy): Policy {
  for (const list of [policy.deny, policy.allow, policy.always, policy.invalid, policy.unreadable]) Object.freeze(list);
  return Object.freeze(policy);
}

/** The policy when nothing is configured: every valid declared name is issued. Frozen. */
export const EMPTY_POLICY: Policy = freezePolicy({ deny: [], allow: [], always: [], invalid: [], unreadable: [] });

export const WILDCARD_PREFIX = '*.';
export const BAD_WILDCARD_REASON = '`*` may only be the whole first label, as in *.example.com';
export const INNER_WHITESPACE_REASON = 'a pattern may not contain whitespace';

/** Longest line quoted in a problem, so a pasted blob cannot flood the status API. */
const SHOWN_MAX = 120;

function shorten(text: string): string {
  return text.length > SHOWN_MAX ? `${text.slice(0, SHOWN_MAX)}…` : text;
}

/** Validates one trimmed, lower-cased, comment-free pattern: the normalised pattern, or a reason. */
export function parsePattern(text: string): { ok: true; pattern: string } | { ok: false; reason: string } {
  if (/\s/.test(text)) return { ok: false, reason: INNER_WHITESPACE_REASON };
  const isWildcard = text.startsWith(WILDCARD_PREFIX);
  const base = isWildcard ? text.slice(WILDCARD_PREFIX.length) : text;
  if (base.includes('*')) return { ok: false, reason: BAD_WILDCARD_REASON };
  const normalized = normalizeHostname(base);
  if (!normalized.ok) {
    return { ok: false, reason: isWildcard ? `after "*.": ${normalized.reason}` : normalized.reason };
  }
  return { ok: true, pattern: isWildcard ? `${WILDCARD_PREFIX}${normalized.hostname}` : normalized.hostname };
}

/** Parses one list's text. Never throws: bad lines are reported in `invalid` and skipped. */
export function parsePolicyList(text: string): ParsedPolicyList {
  const patterns: string[] = [];
  const seen = new Set<string>();
  const invalid: PolicyLineProblem[] = [];
  const lines = text.split(/\r\n|\r|\n/);
  lines.forEach((raw, i) => {
    const hash = raw.indexOf('#');
    const content = (hash === -1 ? raw : raw.slice(0, hash)).trim().toLowerCase();
    if (content === '') return;
    const parsed = parsePattern(content);
    if (!parsed.ok) {
      invalid.push({ line: i + 1, text: shorten(content), reason: parsed.reason });
      return;
    }
    if (seen.has(parsed.pattern)) return;
    seen.add(parsed.pattern);
    patterns.push(parsed.pattern);
  });
  return { patterns, invalid };
}

/** Builds a Policy from the three lists' texts; a missing list is empty. */
export function policyFromTexts(texts: { deny?: string; allow?: string; always?: string }): Policy {
  const policy: Policy = { deny: [], allow: [], always: [], invalid: [], unreadable: [] };
  for (const list of ['deny', 'allow', 'always'] as const) {
    const parsed = parsePolicyList(texts[list] ?? '');
    policy[list] = parsed.patterns;
    for (const problem of parsed.invalid) policy.invalid.push({ list, ...problem });
  }
  return policy;
}

function canonicalHostname(hostname: string): string {
  const lower = hostname.trim().toLowerCase();
  return lower.endsWith('.') ? lower.slice(0, -1) : lower;
}

/**
 * Whether `hostname` (already normalised) matches `pattern`: an exact name matches itself only;
 * `*.base` matches exactly one label followed by `.base`.
 */
export function matchPattern(hostname: string, pattern: string): boolean {
  const name = canonicalHostname(hostname);
  if (!pattern.startsWith(WILDCARD_PREFIX)) return name === pattern;
  const suffix = pattern.slice(1); // ".base"
  if (!name.endsWith(suffix)) return false;
  const label = name.slice(0, name.length - suffix.length);
  return label !== '' && !label.includes('.');
}

export type PolicyVerdict =
  | { allowed: true }
  | { allowed: false; verdict: 'denied'; pattern: string; message: string }
  | { allowed: false; verdict: 'not-allowed'; message: 'not on the allow list' };

export const NOT_ALLOWED_MESSAGE = 'not on the allow list';

/** Decides one hostname: deny wins; then `always`; then a non-empty allow list must match. */
export function policyVerdict(hostname: string, policy: Policy): PolicyVerdict {
  const denyingPattern = policy.deny.find((p) => matchPattern(hostname, p));
  if (denyingPattern !== undefined) {
    return { allowed: false, verdict: 'denied', pattern: denyingPattern, message: `denied by ${denyingPattern}` };
  }
  if (policy.always.some((p) => matchPattern(hostname, p))) return { allowed: true };
  if (policy.allow.length > 0 && !policy.allow.some((p) => matchPattern(hostname, p))) {
    return { allowed: false, verdict: 'not-allowed', message: NOT_ALLOWED_MESSAGE };
  }
  return { allowed: true };
}

export interface RefusedHostname {
  hostname: string;
  verdict: 'denied' | 'not-allowed';
  message: string;
}

/**
 * Applies the policy to the declared (already normalised) hostnames. `hostnames` holds the allowed
 * declared names plus the exact names of the `always` list (unless denied), sorted and unique.
 * Wildcard patterns in `always` are never issued by themselves (HTTP-01 cannot prove a wildcard);
 * they only exempt matching declared names from the allow list. `refused` lists each refused name
 * once, sorted, including `always` names that the deny list refuses.
 */
export function applyPolicy(
  declared: readonly string[],
  policy: Policy,
): { hostnames: string[]; refused: RefusedHostname[] } {
  const candidates = new Set(declared.map(canonicalHostname));
  for (const pattern of policy.always) if (!pattern.startsWith(WILDCARD_PREFIX)) candidates.add(pattern);
  const hostnames: string[] = [];
  const refused: RefusedHostname[] = [];
  for (const hostname of [...candidates].sort()) {
    const verdict = policyVerdict(hostname, policy);
    if (verdict.allowed) hostnames.push(hostname);
    else refused.push({ hostname, verdict: verdict.verdict, message: verdict.message });
  }
  return { hostnames, refused };
}
