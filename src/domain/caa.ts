/**
 * Whether the CAA records of a name (RFC 8659) let the configured CA issue for it, decided before
 * an order so that a name the CA would refuse spends no failed authorization. Pure: the lookups
 * are gathered by the pre-flight (src/adapters/net/http-preflight.ts) and passed in.
 *
 * The rules, as a CA applies them (docs/protocols.md §7.1):
 * - The relevant record set is the first non-empty CAA set found climbing the tree from the name
 *   itself to its top-level label (`a.b.example.com`, `b.example.com`, `example.com`, `com`). A
 *   lookup that fails (SERVFAIL, timeout, refused) before a set is found hides what may be there,
 *   so it refuses (a CA must not issue when it cannot read the records). A name or node that does
 *   not exist (NXDOMAIN) or has no CAA records (NODATA) is "no records" and the climb goes on.
 * - Aliases: CAA(X) is what a recursive resolver answers for X, which follows CNAME chains to
 *   their target; the climb continues at X's parent, not at the target's (RFC 8659 dropped RFC
 *   6844's climb from the target). So the lookups here are of the name and its parents only.
 * - No relevant set: any CA may issue.
 * - A record with the Issuer Critical flag whose tag is not `issue`, `issuewild` or `iodef` forbids
 *   issuance (the CA does not understand it). The critical flag is bit 128 of the flags byte; the
 *   bit of value 1 is read as critical too, since many zones set that one by mistake and Let's
 *   Encrypt honours it.
 * - Tags are compared without regard to case. Only `issue` records count: `issuewild` applies to
 *   wildcard names, which HTTP-01 never orders; `iodef` only asks for reports. A set with no
 *   `issue` record (only `issuewild` or `iodef`) does not restrict non-wildcard names.
 * - An `issue` record allows the CA when its issuer domain name equals one of the CA's identities
 *   exactly as written (Let's Encrypt compares it as written, so `LetsEncrypt.org` does not allow
 *   `letsencrypt.org`; the detail says so), and its parameters after `;` allow this order:
 *   `validationmethods` must list `http-01`; `accounturi` must name our account when the caller
 *   knows it (when it does not, the record is given the benefit of the doubt and the CA decides).
 *   Unknown parameters are ignored. `issue ";"` (no issuer) allows no CA. A malformed value
 *   (a parameter that is not `tag=value`, characters the grammar forbids) allows no CA.
 */

/** One CAA record as the resolver returned it. */
export interface CaaRecord {
  /** The flags byte, 0–255 (bit 128: Issuer Critical). */
  flags: number;
  /** The property tag as written, e.g. `issue`, `Issue`, `iodef`. */
  tag: string;
  /** The property value as written, e.g. `letsencrypt.org; validationmethods=http-01`. */
  value: string;
}

/** What the CAA lookup of one node of the tree gave. */
export type CaaLookup =
  | { node: string; kind: 'records'; records: readonly CaaRecord[] }
  /** NOERROR without CAA records (NODATA), or a name that does not exist (NXDOMAIN). */
  | { node: string; kind: 'none' }
  /** Any other outcome: SERVFAIL, a timeout, a refusal; `error` is the resolver's code. */
  | { node: string; kind: 'failed'; error: string };

/** Why issuance is allowed or refused. Closed list; it flows into the status and logs. */
export type CaaReason =
  /** No node from the name up to its top-level label has CAA records. */
  | 'NoRecords'
  /** The relevant set has no `issue` record (only `issuewild`, `iodef`, non-critical others). */
  | 'NoIssueProperty'
  /** An `issue` record names one of the CA's identities, with parameters that allow this order. */
  | 'Authorized'
  /** The relevant set has `issue` records and none allows the CA. */
  | 'NotAuthorized'
  /** The relevant set has a critical record with a tag the CA does not understand. */
  | 'CriticalUnknown'
  /** A lookup failed before a relevant set was found. */
  | 'LookupFailed';

export type CaaVerdict =
  | { allowed: true; reason: 'NoRecords' | 'NoIssueProperty' | 'Authorized'; node: string | undefined }
  | { allowed: false; reason: 'NotAuthorized' | 'CriticalUnknown' | 'LookupFailed'; node: string; detail: string };

export interface CaaOptions {
  /** The CA's issuer domain names, e.g. `['letsencrypt.org']`. */
  identities: readonly string[];
  /** The ACME challenge type the order will use; consul-acme uses `http-01`. */
  validationMethod?: string;
  /** Our ACME account URL, when known, for `accounturi` parameters (RFC 8657). */
  accountUri?: string;
}

export const CAA_VALIDATION_METHOD = 'http-01';

/** Tags a CA understands (RFC 8659 §4); a critical record with another tag forbids issuance. */
const KNOWN_TAGS = new Set(['issue', 'issuewild', 'iodef']);
/** Bit 128 is Issuer Critical; bit 1 is honoured too (see the module comment). */
const CRITICAL_FLAGS = 0x80 | 0x01;

/** Let's Encrypt's issuer domain name in CAA records. */
export const LETS_ENCRYPT_CAA_IDENTITY = 'letsencrypt.org';

/**
 * The CAA identities to check for `directoryUrl` when none are configured: `letsencrypt.org`
 * for Let's Encrypt's directories (production and staging check CAA alike), none (no CAA check)
 * for any other CA, whose identity we cannot guess.
 */
export function defaultCaaIdentities(directoryUrl: string): string[] {
  let host: string;
  try {
    host = new URL(directoryUrl).hostname.toLowerCase();
  } catch {
    return [];
  }
  return host === LETS_ENCRYPT_CAA_IDENTITY || host.endsWith(`.${LETS_ENCRYPT_CAA_IDENTITY}`)
    ? [LETS_ENCRYPT_CAA_IDENTITY]
    : [];
}

/**
 * The nodes whose CAA records decide for `hostname`, in the order they count: the name, then each
 * parent up to its top-level label.
 */
export function caaLookupNodes(hostname: string): string[] {
  const labels = hostname.trim().toLowerCase().replace(/\.$/, '').split('.');
  return labels.map((_, i) => labels.slice(i).join('.')).filter((node) => node !== '');
}

/** A record in zone-file form, for details: `0 issue "letsencrypt.org"`. */
export function showCaaRecord(record: CaaRecord): string {
  return `${record.flags} ${record.tag} ${JSON.stringify(record.value)}`;
}

function isCritical(record: CaaRecord): boolean {
  return (record.flags & CRITICAL_FLAGS) !== 0;
}

/** The issuer domain name and parameters of an `issue` value (RFC 8659 §4.2), or why it is malformed. */
export type ParsedIssueValue =
  { ok: true; issuer: string; parameters: ReadonlyMap<string, string> } | { ok: false; problem: string };

const WSP = /^[ \t]+|[ \t]+$/g;
const ISSUER_DOMAIN = /^[A-Za-z0-9](?:-*[A-Za-z0-9])*(?:\.[A-Za-z0-9](?:-*[A-Za-z0-9])*)*$/;
const PARAMETER_TAG = /^[A-Za-z0-9](?:-*[A-Za-z0-9])*$/;
const PARAMETER_VALUE = /^[\x21-\x3a\x3c-\x7e]*$/;
const VALIDATION_METHOD = /^[A-Za-z0-9-]+$/;

export function parseIssueValue(value: string): ParsedIssueValue {
  const [head = '', ...rest] = value.split(';');
  const issuer = head.replace(WSP, '');
  if (issuer !== '' && !ISSUER_DOMAIN.test(issuer))
    return { ok: false, problem: `issuer "${issuer}" is not a domain name` };
  const parameters = new Map<string, string>();
  // `issuer;` and `;` carry no parameters.
  if (rest.length === 1 && rest[0]!.replace(WSP, '') === '') return { ok: true, issuer, parameters };
  for (const part of rest) {
    const eq = part.indexOf('=');
    if (eq < 0) return { ok: false, problem: `parameter "${part.replace(WSP, '')}" is not tag=value` };
    const tag = part.slice(0, eq).replace(WSP, '');
    const parameterValue = part.slice(eq + 1).replace(WSP, '');
    if (!PARAMETER_TAG.test(tag)) return { ok: false, problem: `parameter tag "${tag}" has characters CAA forbids` };
    if (!PARAMETER_VALUE.test(parameterValue))
      return { ok: false, problem: `parameter value "${parameterValue}" has characters CAA forbids` };
    parameters.set(tag.toLowerCase(), parameterValue);
  }
  return { ok: true, issuer, parameters };
}

/** Why one `issue` record does not allow the CA, or undefined when it does. */
function issueRecordProblem(record: CaaRecord, options: CaaOptions): string | undefined {
  const parsed = parseIssueValue(record.value);
  if (!parsed.ok) return `is malformed (${parsed.problem}), which allows no CA`;
  const { issuer, parameters } = parsed;
  if (issuer === '') return 'allows no CA';
  if (!options.identities.includes(issuer)) {
    const sameButCase = options.identities.find((id) => id.toLowerCase() === issuer.toLowerCase());
    return sameButCase !== undefined
      ? `differs from ${sameButCase} only in case, and the CA compares the name as written`
      : 'names another CA';
  }
  const methods = parameters.get('validationmethods');
  const method = options.validationMethod ?? CAA_VALIDATION_METHOD;
  if (methods !== undefined) {
    const listed = methods.split(',');
    if (listed.some((m) => !VALIDATION_METHOD.test(m)))
      return `has a malformed validationmethods list, which allows no CA`;
    if (!listed.includes(method)) return `allows only validation by ${methods}, not ${method}`;
  }
  const accountUri = parameters.get('accounturi');
  if (accountUri !== undefined && options.accountUri !== undefined && accountUri !== options.accountUri)
    return `allows only the account ${accountUri}, not ${options.accountUri}`;
  return undefined;
}

/**
 * The verdict for `hostname` from the lookups of its nodes (caaLookupNodes order; nodes that were
 * not looked up may be left out at the end, after the first node with records or a failure).
 */
export function decideCaa(hostname: string, lookups: readonly CaaLookup[], options: CaaOptions): CaaVerdict {
  const relevant = lookups.find((lookup) => lookup.kind !== 'none');
  if (relevant === undefined) return { allowed: true, reason: 'NoRecords', node: undefined };
  const node = relevant.node;
  if (relevant.kind === 'failed') {
    return {
      allowed: false,
      reason: 'LookupFailed',
      node,
      detail: `the CAA lookup of ${node} failed (${relevant.error}); a CA does not issue while it cannot read the CAA records of ${hostname} or a parent`,
    };
  }
  const records = relevant.records;
  const shownSet = records.map(showCaaRecord).join(', ');
  const identities = options.identities.join(' or ') || '(no identity configured)';
  const criticalUnknown = records.find((r) => isCritical(r) && !KNOWN_TAGS.has(r.tag.toLowerCase()));
  if (criticalUnknown !== undefined) {
    return {
      allowed: false,
      reason: 'CriticalUnknown',
      node,
      detail: `the CAA records at ${node} (${shownSet}) include ${showCaaRecord(criticalUnknown)}, marked critical with a tag the CA does not understand, which forbids issuance by any CA`,
    };
  }
  const issue = records.filter((r) => r.tag.toLowerCase() === 'issue');
  if (issue.length === 0) return { allowed: true, reason: 'NoIssueProperty', node };
  const problems: string[] = [];
  for (const record of issue) {
    const problem = issueRecordProblem(record, options);
    if (problem === undefined) return { allowed: true, reason: 'Authorized', node };
    problems.push(`${showCaaRecord(record)} ${problem}`);
  }
  return {
    allowed: false,
    reason: 'NotAuthorized',
    node,
    detail: `the CAA records at ${node} (${shownSet}) do not allow ${identities}: ${problems.join('; ')}`,
  };
}
