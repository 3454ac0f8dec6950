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
import { canonicalHostname, normalizeHostname } from './hostname.js';

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

/**
 * Whether `hostname` (already normalised) matches `pattern`: an exact name matches itself only;
 * `*.base` matches exactly one label followed by `.base`.
 */
export function matchPattern(hostname: string, pattern: string): boolean {
  const name = canonicalHostname(hostname);
  if (!pattern.startsWith(WILDCARD_PREFIX)) return name === pattern;
  return parentOf(name) === pattern.slice(WILDCARD_PREFIX.length);
}

/** `a.example.com` → `example.com`: what `*.example.com` is keyed by; undefined for a single label. */
function parentOf(name: string): string | undefined {
  const dot = name.indexOf('.');
  return dot > 0 ? name.slice(dot + 1) : undefined;
}

export type PolicyVerdict =
  | { allowed: true }
  | { allowed: false; verdict: 'denied'; pattern: string; message: string }
  | { allowed: false; verdict: 'not-allowed'; message: string }
  | { allowed: false; verdict: 'unreadable'; message: string };

export const NOT_ALLOWED_MESSAGE = 'not on the allow list';

/**
 * One list as two indexes: exact names, and the bases of its `*.` patterns, each with the
 * pattern's position so the first matching pattern can be named. Matching is two look-ups.
 */
class PatternIndex {
  private readonly exact = new Map<string, number>();
  private readonly wildcardBases = new Map<string, number>();
  readonly size: number;

  constructor(patterns: readonly string[]) {
    patterns.forEach((pattern, position) => {
      if (pattern.startsWith(WILDCARD_PREFIX)) this.wildcardBases.set(pattern.slice(WILDCARD_PREFIX.length), position);
      else this.exact.set(pattern, position);
    });
    this.size = patterns.length;
  }

  /** The first pattern (in list order) that matches the canonical `name`, or undefined. */
  firstMatch(name: string): string | undefined {
    const exactAt = this.exact.get(name);
    const parent = parentOf(name);
    const wildcardAt = parent === undefined ? undefined : this.wildcardBases.get(parent);
    if (exactAt === undefined && wildcardAt === undefined) return undefined;
    if (wildcardAt === undefined || (exactAt !== undefined && exactAt < wildcardAt)) return name;
    return `${WILDCARD_PREFIX}${parent}`;
  }
}

/** A policy turned into indexes, so that deciding a name costs a few look-ups, whatever the list lengths. */
export interface CompiledPolicy {
  readonly policy: Policy;
  /**
   * Why the policy refuses every name that has no certificate yet (a list that cannot be read),
   * or undefined. Names that already have one keep renewing: the caller decides that.
   */
  readonly failsClosed: string | undefined;
  /** The exact names of the always list, which are issued even when no service declares them. */
  readonly alwaysNames: readonly string[];
  verdict(hostname: string): PolicyVerdict;
}

/**
 * Compiles a policy. Rules, first match wins: a deny match refuses (`denied by <pattern>`); a list
 * that cannot be read refuses (`unreadable`: no new names while the policy is unknown); an
 * always match allows; an allow list whose every line is invalid refuses every name (it was meant
 * to restrict, so it fails closed); a non-empty allow list refuses names it does not match.
 */
export function compilePolicy(policy: Policy): CompiledPolicy {
  const deny = new PatternIndex(policy.deny);
  const allow = new PatternIndex(policy.allow);
  const always = new PatternIndex(policy.always);
  const failsClosed =
    policy.unreadable.length === 0
      ? undefined
      : `the policy cannot be read (${policy.unreadable.map((u) => `${u.list}: ${u.reason}`).join('; ')}); no new names are issued`;
  const invalidAllowLines = policy.invalid.filter((p) => p.list === 'allow').length;
  const allowHasNoValidPattern = allow.size === 0 && invalidAllowLines > 0;
  const noValidAllowMessage = `the allow list has no valid pattern (${invalidAllowLines} invalid line${invalidAllowLines === 1 ? '' : 's'}); every name is refused`;
  return {
    policy,
    failsClosed,
    alwaysNames: policy.always.filter((p) => !p.startsWith(WILDCARD_PREFIX)),
    verdict(hostname: string): PolicyVerdict {
      const name = canonicalHostname(hostname);
      const denying = deny.firstMatch(name);
      if (denying !== undefined)
        return { allowed: false, verdict: 'denied', pattern: denying, message: `denied by ${denying}` };
      if (failsClosed !== undefined) return { allowed: false, verdict: 'unreadable', message: failsClosed };
      if (always.firstMatch(name) !== undefined) return { allowed: true };
      if (allowHasNoValidPattern) return { allowed: false, verdict: 'not-allowed', message: noValidAllowMessage };
      if (allow.size > 0 && allow.firstMatch(name) === undefined) {
        return { allowed: false, verdict: 'not-allowed', message: NOT_ALLOWED_MESSAGE };
      }
      return { allowed: true };
    },
  };
}

/** Decides one hostname (see compilePolicy for the rules). */
export function policyVerdict(hostname: string, policy: Policy): PolicyVerdict {
  return compilePolicy(policy).verdict(hostname);
}

export interface RefusedHostname {
  hostname: string;
  verdict: 'denied' | 'not-allowed' | 'unreadable';
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
  const compiled = compilePolicy(policy);
  const candidates = new Set([...declared.map(canonicalHostname), ...compiled.alwaysNames]);
  const hostnames: string[] = [];
  const refused: RefusedHostname[] = [];
  for (const hostname of [...candidates].sort()) {
    const verdict = compiled.verdict(hostname);
    if (verdict.allowed) hostnames.push(hostname);
    else refused.push({ hostname, verdict: verdict.verdict, message: verdict.message });
  }
  return { hostnames, refused };
}
