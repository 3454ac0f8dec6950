/**
 * The one configuration schema. Every setting has a key (used in the config file), an environment
 * variable, a default, a parser and a description; the README's settings table is checked against
 * this list by test/unit/config-docs.test.ts, so the two cannot drift apart.
 */
import { hostname as osHostname } from 'node:os';
import cron from 'node-cron';
import { parseAdoptionSetting, type AdoptionSetting } from '../domain/adopt.js';
import { KEY_TYPES, type KeyType } from '../domain/certificate.js';

export type Parsed<T> = { ok: true; value: T } | { ok: false; problem: string };

export interface SettingSpec<T> {
  /** Key in the config file and in the effective configuration. */
  key: string;
  /** Environment variable; the standard Consul and Vault ones keep their usual names. */
  env: string;
  /** The default, or undefined when the setting is optional and has none. */
  default: T | undefined;
  /** How the default reads in the docs, when it is computed. */
  defaultDoc?: string;
  /** Type as shown in the docs, e.g. `integer 1–64`. */
  type: string;
  description: string;
  secret?: boolean;
  parse(raw: unknown): Parsed<T>;
}

const ok = <T>(value: T): Parsed<T> => ({ ok: true, value });
const bad = <T>(problem: string): Parsed<T> => ({ ok: false, problem });

function text(raw: unknown): string | undefined {
  if (typeof raw === 'string') return raw.trim();
  if (typeof raw === 'number' || typeof raw === 'boolean') return String(raw);
  return undefined;
}

const str =
  (opts: { nonEmpty?: boolean; pattern?: RegExp; patternDoc?: string } = {}) =>
  (raw: unknown): Parsed<string> => {
    const s = text(raw);
    if (s === undefined) return bad('must be a string');
    if (opts.nonEmpty && s === '') return bad('must not be empty');
    if (opts.pattern && !opts.pattern.test(s))
      return bad(`must be ${opts.patternDoc ?? `like ${String(opts.pattern)}`}, got "${s}"`);
    return ok(s);
  };

const int =
  (min: number, max: number) =>
  (raw: unknown): Parsed<number> => {
    const s = text(raw);
    if (s === undefined || !/^-?\d+$/.test(s)) return bad(`must be a whole number, got "${String(raw)}"`);
    const n = Number(s);
    if (n < min || n > max) return bad(`must be between ${min} and ${max}, got ${n}`);
    return ok(n);
  };

const fraction =
  () =>
  (raw: unknown): Parsed<number> => {
    const s = text(raw);
    const n = s === undefined || s === '' ? NaN : Number(s);
    if (!Number.isFinite(n) || n <= 0 || n >= 1)
      return bad(`must be a number between 0 and 1 (exclusive), got "${String(raw)}"`);
    return ok(n);
  };

const bool =
  () =>
  (raw: unknown): Parsed<boolean> => {
    const s = text(raw)?.toLowerCase();
    if (s === 'true' || s === '1' || s === 'yes') return ok(true);
    if (s === 'false' || s === '0' || s === 'no') return ok(false);
    return bad(`must be true or false, got "${String(raw)}"`);
  };

const oneOf =
  <T extends string>(values: readonly T[]) =>
  (raw: unknown): Parsed<T> => {
    const s = text(raw);
    if (s !== undefined && (values as readonly string[]).includes(s)) return ok(s as T);
    return bad(`must be one of ${values.join(', ')}, got "${String(raw)}"`);
  };

const httpUrl =
  () =>
  (raw: unknown): Parsed<string> => {
    const s = text(raw);
    if (!s) return bad('must be a URL');
    try {
      const url = new URL(s);
      if (url.protocol !== 'http:' && url.protocol !== 'https:') return bad(`must be an http or https URL, got "${s}"`);
      return ok(s.replace(/\/+$/, ''));
    } catch {
      return bad(`must be a URL, got "${s}"`);
    }
  };

/** Consul accepts CONSUL_HTTP_ADDR with or without a scheme (`127.0.0.1:8500`). */
const consulAddress =
  () =>
  (raw: unknown): Parsed<string> => {
    const s = text(raw);
    if (!s) return bad('must be an address such as http://127.0.0.1:8500');
    return httpUrl()(/^[a-z]+:\/\//i.test(s) ? s : `http://${s}`);
  };

/** Well-known ACME directories, so that production is one documented word. */
export const DIRECTORY_ALIASES: Record<string, string> = {
  'letsencrypt-staging': 'https://acme-staging-v02.api.letsencrypt.org/directory',
  'letsencrypt-production': 'https://acme-v02.api.letsencrypt.org/directory',
};

const directory =
  () =>
  (raw: unknown): Parsed<string> => {
    const s = text(raw);
    if (s !== undefined && DIRECTORY_ALIASES[s]) return ok(DIRECTORY_ALIASES[s]);
    const parsed = httpUrl()(raw);
    if (!parsed.ok)
      return bad(
        `must be an ACME directory URL or one of ${Object.keys(DIRECTORY_ALIASES).join(', ')}, got "${String(raw)}"`,
      );
    if (!parsed.value.startsWith('https://')) return bad(`must use https (RFC 8555 §6.1), got "${parsed.value}"`);
    return parsed;
  };

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Parses `500ms`, `30s`, `5m`, `2h`, `7d`. */
export function parseDurationMs(s: string): number | undefined {
  const match = /^(\d+)(ms|s|m|h|d)$/.exec(s.trim());
  if (!match) return undefined;
  return Number(match[1]) * (DURATION_UNITS[match[2]!] ?? NaN);
}

const durationList =
  () =>
  (raw: unknown): Parsed<number[]> => {
    const items = Array.isArray(raw) ? raw.map(String) : text(raw)?.split(',');
    if (!items || items.length === 0) return bad('must be a comma-separated list of durations such as 1m,5m,1h');
    const values: number[] = [];
    for (const item of items) {
      const ms = parseDurationMs(item);
      if (ms === undefined || ms <= 0)
        return bad(`"${item.trim()}" is not a duration (use ms, s, m, h or d, e.g. 90s)`);
      values.push(ms);
    }
    return ok(values);
  };

const duration =
  () =>
  (raw: unknown): Parsed<number> => {
    const s = text(raw);
    const ms = s === undefined ? undefined : parseDurationMs(s);
    if (ms === undefined) return bad(`must be a duration such as 30s, 5m, 2h or 7d, got "${String(raw)}"`);
    return ok(ms);
  };

/** A budget `limit/window`, e.g. `300/3h`, or `off`. */
export interface BudgetSetting {
  limit: number;
  windowMs: number;
}

const budget =
  () =>
  (raw: unknown): Parsed<BudgetSetting | 'off'> => {
    const s = text(raw);
    if (s === 'off') return ok('off');
    const match = s === undefined ? null : /^(\d+)\/(\S+)$/.exec(s);
    const windowMs = match ? parseDurationMs(match[2]!) : undefined;
    if (!match || windowMs === undefined || Number(match[1]) < 1)
      return bad(`must be "<count>/<window>" such as 50/7d, or off, got "${String(raw)}"`);
    return ok({ limit: Number(match[1]), windowMs });
  };

const adoption =
  () =>
  (raw: unknown): Parsed<AdoptionSetting> => {
    const items = Array.isArray(raw) ? raw.map(String) : text(raw);
    if (items === undefined) return bad('must be off, all, or a comma-separated list of hostnames and *. patterns');
    const parsed = parseAdoptionSetting(items);
    return parsed.ok ? ok(parsed.value) : bad(parsed.problem);
  };

/** Issuer domain names as CAA records write them (RFC 8659 §4.2): letters, digits and inner hyphens, dot-separated. */
const ISSUER_DOMAIN_NAME = /^[A-Za-z0-9](?:-*[A-Za-z0-9])*(?:\.[A-Za-z0-9](?:-*[A-Za-z0-9])*)+$/;

const caaIdentities =
  () =>
  (raw: unknown): Parsed<string[] | 'off'> => {
    const s = Array.isArray(raw) ? raw.map(String).join(',') : text(raw);
    if (s === 'off') return ok('off');
    const items = (s ?? '')
      .split(',')
      .map((i) => i.trim())
      .filter((i) => i !== '');
    if (items.length === 0)
      return bad(`must be issuer domain names such as letsencrypt.org (comma-separated), or off, got "${String(raw)}"`);
    const badItem = items.find((i) => !ISSUER_DOMAIN_NAME.test(i));
    if (badItem !== undefined)
      return bad(`"${badItem}" is not an issuer domain name as CAA records write it (such as letsencrypt.org)`);
    return ok(items);
  };

const cronExpression =
  () =>
  (raw: unknown): Parsed<string> => {
    const s = text(raw);
    if (!s || !cron.validate(s)) return bad(`must be a cron expression such as "*/10 * * * *", got "${String(raw)}"`);
    return ok(s);
  };

const listOf =
  () =>
  (raw: unknown): Parsed<string[]> => {
    const items = Array.isArray(raw) ? raw.map(String) : text(raw)?.split(',');
    if (!items) return bad('must be a comma-separated list');
    return ok(items.map((i) => i.trim()).filter((i) => i !== ''));
  };

interface RequiredSetting<T> extends SettingSpec<T> {
  default: T;
  optional: false;
}
interface OptionalSetting<T> extends SettingSpec<T> {
  default: undefined;
  optional: true;
}

function setting<T>(spec: Omit<SettingSpec<T>, 'default'> & { default: T }): RequiredSetting<T> {
  return { ...spec, optional: false };
}

function optional<T>(spec: Omit<SettingSpec<T>, 'default'> & { default: undefined }): OptionalSetting<T> {
  return { ...spec, optional: true };
}

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export const LETS_ENCRYPT_STAGING = DIRECTORY_ALIASES['letsencrypt-staging']!;
export const DEFAULT_CHALLENGE_PORT = 8080;
export const DEFAULT_ADMIN_PORT = 8081;

/** Every setting. Order is the order of the README table. */
export const SETTINGS = {
  // Consul
  consulAddress: setting({
    key: 'consulAddress',
    env: 'CONSUL_HTTP_ADDR',
    default: 'http://127.0.0.1:8500',
    type: 'URL or host:port',
    description: 'Consul HTTP API of the local agent.',
    parse: consulAddress(),
  }),
  consulToken: optional<string>({
    key: 'consulToken',
    env: 'CONSUL_HTTP_TOKEN',
    default: undefined,
    type: 'string',
    secret: true,
    description: 'Consul ACL token (see deploy/consul-policy.hcl).',
    parse: str(),
  }),
  consulTokenFile: optional<string>({
    key: 'consulTokenFile',
    env: 'CONSUL_HTTP_TOKEN_FILE',
    default: undefined,
    type: 'file path',
    description:
      'File holding the Consul ACL token (Nomad writes it from a `template` block). Read at start, again whenever the file changes (checked every 2 s) and before a refused request fails; wins over `CONSUL_HTTP_TOKEN`. Registrations are made again with a new token.',
    parse: str({ nonEmpty: true }),
  }),
  consulCaCert: optional<string>({
    key: 'consulCaCert',
    env: 'CONSUL_CACERT',
    default: undefined,
    type: 'file path',
    description: "CA bundle to verify Consul's TLS certificate.",
    parse: str({ nonEmpty: true }),
  }),
  consulClientCert: optional<string>({
    key: 'consulClientCert',
    env: 'CONSUL_CLIENT_CERT',
    default: undefined,
    type: 'file path',
    description:
      'Client certificate (PEM) presented to Consul, for agents with `verify_incoming`; needs `CONSUL_CLIENT_KEY`.',
    parse: str({ nonEmpty: true }),
  }),
  consulClientKey: optional<string>({
    key: 'consulClientKey',
    env: 'CONSUL_CLIENT_KEY',
    default: undefined,
    type: 'file path',
    description: 'Private key (PEM) of `CONSUL_CLIENT_CERT`.',
    parse: str({ nonEmpty: true }),
  }),
  consulTlsServerName: optional<string>({
    key: 'consulTlsServerName',
    env: 'CONSUL_TLS_SERVER_NAME',
    default: undefined,
    defaultDoc: 'the host of `CONSUL_HTTP_ADDR`',
    type: 'hostname',
    description:
      "Name Consul's certificate is checked against (and sent as SNI), when the address is an IP or another name.",
    parse: str({ nonEmpty: true, pattern: /^[A-Za-z0-9.-]+$/, patternDoc: 'a hostname' }),
  }),
  homeDatacenter: optional<string>({
    key: 'homeDatacenter',
    env: 'CONSUL_ACME_HOME_DATACENTER',
    default: undefined,
    defaultDoc: "the local agent's datacenter",
    type: 'datacenter name',
    description:
      'The one Consul datacenter that holds the coordination state (locks and their sessions, backoff state, budgets, CA pauses, challenge tokens, policy lists): every instance, in any datacenter, reads and writes it there with `?dc=`. The catalog watch and the registrations stay in the local datacenter. Set it to the same name everywhere when instances in several datacenters share one Vault and ACME account (docs/operations.md, "Several datacenters").',
    parse: str({ nonEmpty: true, pattern: /^[A-Za-z0-9_-]+$/, patternDoc: 'letters, digits, "_" or "-"' }),
  }),
  consulStale: setting({
    key: 'consulStale',
    env: 'CONSUL_ACME_CONSUL_STALE',
    default: false,
    type: 'boolean',
    description: 'Read the catalog with `?stale`, so any Consul server can answer the watch.',
    parse: bool(),
  }),
  watchWaitSeconds: setting({
    key: 'watchWaitSeconds',
    env: 'CONSUL_ACME_WATCH_WAIT_SECONDS',
    default: 300,
    type: 'integer 1–600',
    description: 'How long one blocking query may wait for a change.',
    parse: int(1, 600),
  }),
  kvPrefix: setting({
    key: 'kvPrefix',
    env: 'CONSUL_ACME_KV_PREFIX',
    default: 'consul-acme/',
    type: 'string ending in /',
    description: 'Consul KV prefix for challenges, locks and state.',
    parse: str({ pattern: /^[A-Za-z0-9_.\-/]*[A-Za-z0-9_.-]\/$/, patternDoc: 'a KV path ending in /' }),
  }),
  sessionTtlSeconds: setting({
    key: 'sessionTtlSeconds',
    env: 'CONSUL_ACME_SESSION_TTL_SECONDS',
    default: 15,
    type: 'integer 10–86400',
    description:
      "TTL of the Consul session behind this instance's locks; renewed at half of it. A dead instance's locks are freed after up to twice this, plus the lock delay.",
    parse: int(10, 86_400),
  }),
  lockDelaySeconds: setting({
    key: 'lockDelaySeconds',
    env: 'CONSUL_ACME_LOCK_DELAY_SECONDS',
    default: 15,
    type: 'integer 0–60',
    description: "Consul lock-delay: after a holder's session is lost, its locks cannot be taken for this long.",
    parse: int(0, 60),
  }),
  // Which names
  tagPrefix: setting({
    key: 'tagPrefix',
    env: 'CONSUL_ACME_TAG_PREFIX',
    default: 'consul-acme',
    type: 'string',
    description: 'Prefix of our own tags: `<prefix>.hosts=a,b` and `<prefix>.enable`.',
    parse: str({ pattern: /^[A-Za-z0-9_.-]+$/, patternDoc: 'letters, digits, ".", "_" or "-"' }),
  }),
  fabioTagPrefix: setting({
    key: 'fabioTagPrefix',
    env: 'CONSUL_ACME_FABIO_TAG_PREFIX',
    default: 'urlprefix-',
    type: 'string',
    description: "Fabio's `registry.consul.tagprefix`.",
    parse: str({ nonEmpty: true }),
  }),
  requireEnableTag: setting({
    key: 'requireEnableTag',
    env: 'CONSUL_ACME_REQUIRE_ENABLE_TAG',
    default: false,
    type: 'boolean',
    description: 'Consider only services tagged `<tagPrefix>.enable`.',
    parse: bool(),
  }),
  // ACME
  directoryUrl: setting({
    key: 'directoryUrl',
    env: 'CONSUL_ACME_DIRECTORY_URL',
    default: LETS_ENCRYPT_STAGING,
    defaultDoc: '`letsencrypt-staging`',
    type: 'URL, `letsencrypt-staging` or `letsencrypt-production`',
    description:
      'ACME directory. Staging by default, so a first run cannot spend production rate limits; set `letsencrypt-production` for trusted certificates.',
    parse: directory(),
  }),
  caBundle: optional<string>({
    key: 'caBundle',
    env: 'CONSUL_ACME_CA_BUNDLE',
    default: undefined,
    type: 'file path',
    description: 'Extra CA certificates (PEM) to trust for the ACME directory (step-ca, Vault PKI, Pebble).',
    parse: str({ nonEmpty: true }),
  }),
  email: optional<string>({
    key: 'email',
    env: 'CONSUL_ACME_EMAIL',
    default: undefined,
    type: 'email',
    description:
      "Contact address of the ACME account, for the CA's notices about the account (policy changes, certificates it must revoke). Let's Encrypt no longer sends expiry e-mails (since June 2025): watch the `consul-acme-certificates` check in Consul and `consul_acme_certificate_expiry_timestamp_seconds` instead.",
    parse: str({ pattern: /^[^@\s]+@[^@\s]+$/, patternDoc: 'an email address' }),
  }),
  eabKid: optional<string>({
    key: 'eabKid',
    env: 'CONSUL_ACME_EAB_KID',
    default: undefined,
    type: 'string',
    description: 'External Account Binding key id, for CAs that require it.',
    parse: str({ nonEmpty: true }),
  }),
  eabHmacKey: optional<string>({
    key: 'eabHmacKey',
    env: 'CONSUL_ACME_EAB_HMAC_KEY',
    default: undefined,
    type: 'base64url',
    secret: true,
    description: 'External Account Binding HMAC key.',
    parse: str({ pattern: /^[A-Za-z0-9_-]+=*$/, patternDoc: 'base64url' }),
  }),
  keyType: setting<KeyType>({
    key: 'keyType',
    env: 'CONSUL_ACME_KEY_TYPE',
    default: 'ec-p256',
    type: KEY_TYPES.join(', '),
    description: 'Private key type of new certificates.',
    parse: oneOf(KEY_TYPES),
  }),
  acmePollMinMs: setting({
    key: 'acmePollMinMs',
    env: 'CONSUL_ACME_ACME_POLL_MIN_MS',
    default: 1000,
    type: 'integer ms',
    description: 'First delay when polling an order or challenge for its status.',
    parse: int(10, 600_000),
  }),
  acmePollMaxMs: setting({
    key: 'acmePollMaxMs',
    env: 'CONSUL_ACME_ACME_POLL_MAX_MS',
    default: 10_000,
    type: 'integer ms',
    description: 'Longest delay between status polls.',
    parse: int(10, 600_000),
  }),
  acmePollAttempts: setting({
    key: 'acmePollAttempts',
    env: 'CONSUL_ACME_ACME_POLL_ATTEMPTS',
    default: 30,
    type: 'integer 1–1000',
    description: 'Status polls before an order is given up (and retried later by the queue).',
    parse: int(1, 1000),
  }),
  acmeRequestTimeoutMs: setting({
    key: 'acmeRequestTimeoutMs',
    env: 'CONSUL_ACME_ACME_REQUEST_TIMEOUT_MS',
    default: 30_000,
    type: 'integer ms',
    description: 'Timeout of one request to the ACME server.',
    parse: int(100, 600_000),
  }),
  // Safety before ordering
  preflight: setting({
    key: 'preflight',
    env: 'CONSUL_ACME_PREFLIGHT',
    default: true,
    type: 'boolean',
    description:
      'Before any order, check that the name resolves, that its CAA records allow the CA (`CONSUL_ACME_CAA_IDENTITIES`) and that `http://<name>/.well-known/acme-challenge/<probe>` reaches consul-acme; a name that fails is retried on the backoff schedule and never ordered.',
    parse: bool(),
  }),
  preflightDnsServers: setting({
    key: 'preflightDnsServers',
    env: 'CONSUL_ACME_PREFLIGHT_DNS_SERVERS',
    default: [] as string[],
    defaultDoc: 'the system resolver',
    type: 'comma-separated host:port',
    description: 'DNS servers the pre-flight check asks (address and CAA lookups).',
    parse: listOf(),
  }),
  preflightHttpPort: setting({
    key: 'preflightHttpPort',
    env: 'CONSUL_ACME_PREFLIGHT_HTTP_PORT',
    default: 80,
    type: 'port',
    description: 'Port the pre-flight probe connects to (where the CA validates: 80).',
    parse: int(1, 65535),
  }),
  preflightTimeoutMs: setting({
    key: 'preflightTimeoutMs',
    env: 'CONSUL_ACME_PREFLIGHT_TIMEOUT_MS',
    default: 5000,
    type: 'integer ms',
    description: 'Timeout of the pre-flight DNS lookups (address, CAA) and probe request.',
    parse: int(100, 60_000),
  }),
  caaIdentities: optional<string[] | 'off'>({
    key: 'caaIdentities',
    env: 'CONSUL_ACME_CAA_IDENTITIES',
    default: undefined,
    defaultDoc: "`letsencrypt.org` for Let's Encrypt directories; none (no CAA check) for other CAs",
    type: 'comma-separated issuer domain names, or `off`',
    description:
      "The CA's identities in CAA records (RFC 8659). The pre-flight check looks up CAA at the name and each parent; when the first record set found has `issue` records and none names one of these (exactly as written, with `validationmethods`, if any, listing `http-01`), or a lookup fails with SERVFAIL or a timeout, the name is not ordered (`PREFLIGHT_FAILED: CAA`) and is retried on the backoff schedule. Set it for any CA other than Let's Encrypt (its documentation names its identity); `off` skips the check. Needs `CONSUL_ACME_PREFLIGHT`.",
    parse: caaIdentities(),
  }),
  routeSettleMs: setting({
    key: 'routeSettleMs',
    env: 'CONSUL_ACME_ROUTE_SETTLE',
    default: 30_000,
    defaultDoc: '`30s`',
    type: 'duration',
    description:
      'How long after a name\'s challenge route is registered a pre-flight failure means "the route is not live yet" (Consul and Fabio still catching up): the name is probed again after 0.5, 1, 2, 4, 8 s, logged as waiting for the route, before the retry schedule applies.',
    parse: duration(),
  }),
  budgetNewOrders: setting<BudgetSetting | 'off'>({
    key: 'budgetNewOrders',
    env: 'CONSUL_ACME_BUDGET_NEW_ORDERS',
    default: { limit: 300, windowMs: 3 * 3_600_000 },
    defaultDoc: '`300/3h`',
    type: '`<count>/<window>` or `off`',
    description:
      "New orders per ACME account, shared by every instance (Let's Encrypt's limit); renewals of the same names are exempt.",
    parse: budget(),
  }),
  budgetRegisteredDomain: setting<BudgetSetting | 'off'>({
    key: 'budgetRegisteredDomain',
    env: 'CONSUL_ACME_BUDGET_REGISTERED_DOMAIN',
    default: { limit: 50, windowMs: 7 * 86_400_000 },
    defaultDoc: '`50/7d`',
    type: '`<count>/<window>` or `off`',
    description: 'New certificates per registered domain (Public Suffix List); renewals of the same names are exempt.',
    parse: budget(),
  }),
  budgetFailedAuthorizations: setting<BudgetSetting | 'off'>({
    key: 'budgetFailedAuthorizations',
    env: 'CONSUL_ACME_BUDGET_FAILED_AUTHORIZATIONS',
    default: { limit: 5, windowMs: 3_600_000 },
    defaultDoc: '`5/1h`',
    type: '`<count>/<window>` or `off`',
    description: 'Failed authorizations per hostname before it waits for the window.',
    parse: budget(),
  }),
  budgetExactSet: setting<BudgetSetting | 'off'>({
    key: 'budgetExactSet',
    env: 'CONSUL_ACME_BUDGET_EXACT_SET',
    default: { limit: 5, windowMs: 7 * 86_400_000 },
    defaultDoc: '`5/7d`',
    type: '`<count>/<window>` or `off`',
    description:
      "Orders per exact set of names (one certificate's names), renewals included, as Let's Encrypt counts them; a name whose budget is spent waits for the window.",
    parse: budget(),
  }),
  // Store
  store: setting<'file' | 'vault'>({
    key: 'store',
    env: 'CONSUL_ACME_STORE',
    default: 'file',
    type: '`file` or `vault`',
    description: "Where certificates are written: a directory (single node) or Vault KV v2 in Fabio's layout.",
    parse: oneOf(['file', 'vault'] as const),
  }),
  fileStoreDir: setting({
    key: 'fileStoreDir',
    env: 'CONSUL_ACME_FILE_STORE_DIR',
    default: './consul-acme-data',
    type: 'directory',
    description: 'Directory of the file store: `<dir>/<hostname>/{cert.pem,key.pem,meta.json}`.',
    parse: str({ nonEmpty: true }),
  }),
  vaultAddress: setting({
    key: 'vaultAddress',
    env: 'VAULT_ADDR',
    default: 'http://127.0.0.1:8200',
    type: 'URL',
    description: 'Vault address (store `vault`).',
    parse: httpUrl(),
  }),
  vaultToken: optional<string>({
    key: 'vaultToken',
    env: 'VAULT_TOKEN',
    default: undefined,
    type: 'string',
    secret: true,
    description: 'Vault token (store `vault`; see deploy/vault-policy.hcl).',
    parse: str({ nonEmpty: true }),
  }),
  vaultTokenFile: optional<string>({
    key: 'vaultTokenFile',
    env: 'VAULT_TOKEN_FILE',
    default: undefined,
    type: 'file path',
    description:
      "File holding the Vault token (Nomad's `vault` block writes `secrets/vault_token`). Read at start, again whenever the file changes (checked every 2 s) and before a refused request fails; wins over `VAULT_TOKEN`. A renewable token is renewed before it expires, from either source.",
    parse: str({ nonEmpty: true }),
  }),
  vaultCaCert: optional<string>({
    key: 'vaultCaCert',
    env: 'VAULT_CACERT',
    default: undefined,
    type: 'file path',
    description: "CA bundle to verify Vault's TLS certificate. Verification is never switched off.",
    parse: str({ nonEmpty: true }),
  }),
  vaultClientCert: optional<string>({
    key: 'vaultClientCert',
    env: 'VAULT_CLIENT_CERT',
    default: undefined,
    type: 'file path',
    description:
      'Client certificate (PEM) presented to Vault (listeners with `tls_require_and_verify_client_cert`); needs `VAULT_CLIENT_KEY`.',
    parse: str({ nonEmpty: true }),
  }),
  vaultClientKey: optional<string>({
    key: 'vaultClientKey',
    env: 'VAULT_CLIENT_KEY',
    default: undefined,
    type: 'file path',
    description: 'Private key (PEM) of `VAULT_CLIENT_CERT`.',
    parse: str({ nonEmpty: true }),
  }),
  vaultTlsServerName: optional<string>({
    key: 'vaultTlsServerName',
    env: 'VAULT_TLS_SERVER_NAME',
    default: undefined,
    defaultDoc: 'the host of `VAULT_ADDR`',
    type: 'hostname',
    description:
      "Name Vault's certificate is checked against (and sent as SNI), when the address is an IP or another name.",
    parse: str({ nonEmpty: true, pattern: /^[A-Za-z0-9.-]+$/, patternDoc: 'a hostname' }),
  }),
  vaultMount: setting({
    key: 'vaultMount',
    env: 'CONSUL_ACME_VAULT_MOUNT',
    default: 'secret',
    type: 'string',
    description: 'KV v2 mount.',
    parse: str({
      pattern: /^[A-Za-z0-9_.-]+(\/[A-Za-z0-9_.-]+)*$/,
      patternDoc: 'a mount path without leading or trailing /',
    }),
  }),
  vaultPrefix: setting({
    key: 'vaultPrefix',
    env: 'CONSUL_ACME_VAULT_PREFIX',
    default: 'fabio/certs',
    type: 'string',
    description: "Path under the mount where certificates go; Fabio's `cert=<mount>/<prefix>`.",
    parse: str({
      pattern: /^[A-Za-z0-9_.-]+(\/[A-Za-z0-9_.-]+)*$/,
      patternDoc: 'a path without leading or trailing /',
    }),
  }),
  vaultAccountPath: setting({
    key: 'vaultAccountPath',
    env: 'CONSUL_ACME_VAULT_ACCOUNT_PATH',
    default: 'consul-acme/accounts',
    type: 'string',
    description: 'Path under the mount where the ACME account key is kept (never under the Fabio prefix).',
    parse: str({
      pattern: /^[A-Za-z0-9_.-]+(\/[A-Za-z0-9_.-]+)*$/,
      patternDoc: 'a path without leading or trailing /',
    }),
  }),
  vaultPendingPath: setting({
    key: 'vaultPendingPath',
    env: 'CONSUL_ACME_VAULT_PENDING_PATH',
    default: 'consul-acme/pending',
    type: 'string',
    description:
      "Path under the mount where an order's URL and private key are kept from just before it is finalized until its certificate is stored, so a crash or a Vault outage costs a download, not a new order (never under the Fabio prefix).",
    parse: str({
      pattern: /^[A-Za-z0-9_.-]+(\/[A-Za-z0-9_.-]+)*$/,
      patternDoc: 'a path without leading or trailing /',
    }),
  }),
  adopt: setting<AdoptionSetting>({
    key: 'adopt',
    env: 'CONSUL_ACME_ADOPT',
    default: 'off',
    type: '`off`, `all`, or hostnames and `*.` patterns',
    description:
      "Take over, without a command, the certificates another tool wrote under the prefix (no `managed_by`) for the declared names this matches: the same certificate and key are written again as a new version marked consul-acme's (nothing is removed or emptied), and renewed on schedule from then on. Only a certificate and key that load and match, have not expired and cover the name are adopted. `consul-acme adopt` does the same for the records it names, whatever this says.",
    parse: adoption(),
  }),
  // Queue
  queueConcurrency: setting({
    key: 'queueConcurrency',
    env: 'CONSUL_ACME_QUEUE_CONCURRENCY',
    default: 4,
    type: 'integer 1–64',
    description: 'Orders in flight at once in this instance.',
    parse: int(1, 64),
  }),
  ioConcurrency: setting({
    key: 'ioConcurrency',
    env: 'CONSUL_ACME_IO_CONCURRENCY',
    default: 8,
    type: 'integer 1–256',
    description:
      'Store reads and other per-name requests in flight at once when a pass covers many names (start-up, renewal scan, catalog and policy changes), shared by all of them; bounds open connections and files whatever the number of names.',
    parse: int(1, 256),
  }),
  retryScheduleMs: setting({
    key: 'retryScheduleMs',
    env: 'CONSUL_ACME_RETRY_SCHEDULE',
    default: [60_000, 120_000, 300_000, 600_000, 1_800_000, 3_600_000, 7_200_000, 21_600_000, 43_200_000, 86_400_000],
    defaultDoc: '`1m,2m,5m,10m,30m,1h,2h,6h,12h,24h`',
    type: 'durations',
    description:
      'Delay before retry n after n consecutive failures; the last entry repeats. A longer `Retry-After` from the CA wins.',
    parse: durationList(),
  }),
  lockedRecheckMs: setting({
    key: 'lockedRecheckMs',
    env: 'CONSUL_ACME_LOCKED_RECHECK',
    default: 30_000,
    defaultDoc: '`30s`',
    type: 'duration',
    description:
      "When another instance holds a certificate's lock, look at it again after this long (it bounds how soon survivors take over a dead instance's work, after its session is reaped).",
    parse: duration(),
  }),
  // Renewal
  renewRemainingFraction: setting({
    key: 'renewRemainingFraction',
    env: 'CONSUL_ACME_RENEW_REMAINING_FRACTION',
    default: 1 / 3,
    defaultDoc: '`0.3333` (one third)',
    type: 'number 0–1',
    description: 'Renew when less than this fraction of the lifetime is left.',
    parse: fraction(),
  }),
  renewSchedule: setting({
    key: 'renewSchedule',
    env: 'CONSUL_ACME_RENEW_SCHEDULE',
    default: '*/10 * * * *',
    type: 'cron',
    description: 'When the renewal scan runs (and once at start).',
    parse: cronExpression(),
  }),
  renewSpreadMs: setting({
    key: 'renewSpreadMs',
    env: 'CONSUL_ACME_RENEW_SPREAD',
    default: 3_600_000,
    defaultDoc: '`1h`',
    type: 'duration',
    description:
      'Routine renewals that fall due together are spread over this window (never beyond a quarter of the remaining lifetime); emergencies are not delayed.',
    parse: duration(),
  }),
  retireGraceMs: optional<number>({
    key: 'retireGraceMs',
    env: 'CONSUL_ACME_RETIRE_GRACE',
    default: undefined,
    defaultDoc: 'until it expires',
    type: 'duration',
    description:
      'How long a certificate whose hostname no longer appears in Consul stays in the store before it is removed.',
    parse: duration(),
  }),
  // Listeners and registration
  challengeHost: setting({
    key: 'challengeHost',
    env: 'CONSUL_ACME_CHALLENGE_HOST',
    default: '0.0.0.0',
    type: 'address',
    description: 'Listen address of the HTTP-01 responder.',
    parse: str({ nonEmpty: true }),
  }),
  challengePort: setting({
    key: 'challengePort',
    env: 'CONSUL_ACME_CHALLENGE_PORT',
    default: DEFAULT_CHALLENGE_PORT,
    type: 'port',
    description: 'Port of the HTTP-01 responder; Fabio proxies `/.well-known/acme-challenge/` here.',
    parse: int(0, 65535),
  }),
  adminHost: setting({
    key: 'adminHost',
    env: 'CONSUL_ACME_ADMIN_HOST',
    default: '0.0.0.0',
    type: 'address',
    description: 'Listen address of the admin API (health, status).',
    parse: str({ nonEmpty: true }),
  }),
  adminPort: setting({
    key: 'adminPort',
    env: 'CONSUL_ACME_ADMIN_PORT',
    default: DEFAULT_ADMIN_PORT,
    type: 'port',
    description: 'Port of the admin API.',
    parse: int(0, 65535),
  }),
  adminToken: optional<string>({
    key: 'adminToken',
    env: 'CONSUL_ACME_ADMIN_TOKEN',
    default: undefined,
    type: 'string, 16 characters or more',
    secret: true,
    description:
      "When set, every admin path but the health paths needs `Authorization: Bearer <token>` (`consul-acme status`, `adopt`, `reissue` and `revoke` send it from this variable); the health paths stay open for Consul's checks. The commands that change certificates (`POST /adopt`, `/reissue`, `/revoke`) are refused while it is unset.",
    parse: str({ pattern: /^\S{16,}$/, patternDoc: 'at least 16 characters without spaces' }),
  }),
  healthDeregisterAfterMs: setting({
    key: 'healthDeregisterAfterMs',
    env: 'CONSUL_ACME_HEALTH_DEREGISTER_AFTER',
    default: 86_400_000,
    defaultDoc: '`24h`',
    type: 'duration, 1m or more',
    description:
      'Consul removes the certificate-health check of an instance that has been critical this long, so a dead instance does not alert forever; a live instance registers it again within 30 s, so a certificate problem stays visible.',
    parse: (raw: unknown) => {
      const parsed = duration()(raw);
      return parsed.ok && parsed.value < 60_000
        ? bad<number>(`must be at least 1m (Consul's minimum), got "${String(raw)}"`)
        : parsed;
    },
  }),
  registerService: setting({
    key: 'registerService',
    env: 'CONSUL_ACME_REGISTER_SERVICE',
    default: true,
    type: 'boolean',
    description:
      'Register this instance in the local Consul agent with one Fabio challenge route per managed hostname.',
    parse: bool(),
  }),
  serviceName: setting({
    key: 'serviceName',
    env: 'CONSUL_ACME_SERVICE_NAME',
    default: 'consul-acme',
    type: 'string',
    description: 'Consul service name of the registration.',
    parse: str({ pattern: /^[A-Za-z0-9-]+$/, patternDoc: 'letters, digits and -' }),
  }),
  serviceAddress: optional<string>({
    key: 'serviceAddress',
    env: 'CONSUL_ACME_SERVICE_ADDRESS',
    default: undefined,
    defaultDoc: "the agent's address",
    type: 'address',
    description: 'Address Fabio should proxy challenges to.',
    parse: str({ nonEmpty: true }),
  }),
  instanceName: setting({
    key: 'instanceName',
    env: 'CONSUL_ACME_INSTANCE_NAME',
    default: `${osHostname()}-${process.pid}`,
    defaultDoc: '`<hostname>-<pid>`',
    type: 'string',
    description: 'Name of this instance in locks, logs and the status.',
    parse: str({ pattern: /^[A-Za-z0-9_.-]+$/, patternDoc: 'letters, digits, ".", "_" or "-"' }),
  }),
  expiryWarningMs: setting({
    key: 'expiryWarningMs',
    env: 'CONSUL_ACME_EXPIRY_WARNING',
    default: 14 * 86_400_000,
    defaultDoc: '`14d`',
    type: 'duration',
    description:
      'The certificate health check in Consul turns warning when a certificate expires within this time (critical once one has expired or has failed on every step of the retry schedule).',
    parse: duration(),
  }),
  // Sinks: where certificates are copied after every store write
  haproxyDir: optional<string>({
    key: 'haproxyDir',
    env: 'CONSUL_ACME_HAPROXY_DIR',
    default: undefined,
    defaultDoc: '(none: no HAProxy sink)',
    type: 'directory',
    description:
      'Folder of the HAProxy sink: one `<hostname>.pem` (leaf, chain, key) per certificate and the crt-list that names them. HAProxy must see it at the same path.',
    parse: str({ nonEmpty: true }),
  }),
  haproxyCrtList: optional<string>({
    key: 'haproxyCrtList',
    env: 'CONSUL_ACME_HAPROXY_CRT_LIST',
    default: undefined,
    defaultDoc: '`<haproxyDir>/crt-list`',
    type: 'file path',
    description:
      "The crt-list file, written exactly as HAProxy's `bind ... crt-list <path>` names it (the runtime API knows it by that path).",
    parse: str({ nonEmpty: true }),
  }),
  haproxySocket: optional<string>({
    key: 'haproxySocket',
    env: 'CONSUL_ACME_HAPROXY_SOCKET',
    default: undefined,
    defaultDoc: '(none: files only)',
    type: 'file path',
    description:
      "HAProxy's stats socket (`stats socket <path> level admin`): changes are pushed through its runtime API, without a reload. Unset, HAProxy reads the files when it restarts.",
    parse: str({ nonEmpty: true }),
  }),
  traefikDir: optional<string>({
    key: 'traefikDir',
    env: 'CONSUL_ACME_TRAEFIK_DIR',
    default: undefined,
    defaultDoc: '(none: no Traefik sink)',
    type: 'directory',
    description:
      "Folder of the Traefik file-provider sink: `consul-acme.yml` lists the certificates it keeps under `certs/`. Point Traefik's `providers.file` at it.",
    parse: str({ nonEmpty: true }),
  }),
  hookCommand: optional<string>({
    key: 'hookCommand',
    env: 'CONSUL_ACME_HOOK_COMMAND',
    default: undefined,
    defaultDoc: '(none: no hook)',
    type: 'shell command',
    description:
      'Runs with `/bin/sh -c` after a certificate is obtained, renewed or retired, and at start; hostname, file paths and reason are in its environment (see "Command hook").',
    parse: str({ nonEmpty: true }),
  }),
  hookTimeoutMs: setting({
    key: 'hookTimeoutMs',
    env: 'CONSUL_ACME_HOOK_TIMEOUT',
    default: 30_000,
    defaultDoc: '`30s`',
    type: 'duration',
    description: 'A hook still running after this long is killed (its process group) and counts as failed.',
    parse: duration(),
  }),
  sinkResyncIntervalMs: setting({
    key: 'sinkResyncIntervalMs',
    env: 'CONSUL_ACME_SINK_RESYNC_INTERVAL',
    default: 600_000,
    defaultDoc: '`10m`',
    type: 'duration',
    description:
      'Besides at start, every sink is re-synced with the store this often, which brings in certificates other instances wrote; `0s` for never.',
    parse: duration(),
  }),
  sinkFailingWarningMs: setting({
    key: 'sinkFailingWarningMs',
    env: 'CONSUL_ACME_SINK_FAILING_WARNING',
    default: 600_000,
    defaultDoc: '`10m`',
    type: 'duration',
    description: 'The certificate health check turns warning when a sink has been failing for this long.',
    parse: duration(),
  }),
  sinkPollIntervalMs: setting({
    key: 'sinkPollIntervalMs',
    env: 'CONSUL_ACME_SINK_POLL_INTERVAL',
    default: 30_000,
    defaultDoc: '`30s`',
    type: 'duration',
    description:
      'In `sinks` mode, how often the store is listed (one request) so that names that appeared or left reach the sinks; a renewed certificate of a name already there arrives with the next re-sync (`CONSUL_ACME_SINK_RESYNC_INTERVAL`).',
    parse: duration(),
  }),
  // Process
  mode: setting<'issuer' | 'sinks'>({
    key: 'mode',
    env: 'CONSUL_ACME_MODE',
    default: 'issuer',
    type: '`issuer` or `sinks`',
    description:
      "`issuer` runs the whole service. `sinks` runs only the sinks (HAProxy, Traefik, hook) from the store, on the proxy's node: no issuance, no challenge responder, no locks, no catalog watch, no Consul at all; its admin API serves health and the sinks' status. `consul-acme run --sinks-only` is the same.",
    parse: oneOf(['issuer', 'sinks'] as const),
  }),
  logLevel: setting<LogLevel>({
    key: 'logLevel',
    env: 'CONSUL_ACME_LOG_LEVEL',
    default: 'info',
    type: LOG_LEVELS.join(', '),
    description: 'Log level (JSON lines on stdout).',
    parse: oneOf(LOG_LEVELS),
  }),
  shutdownTimeoutMs: setting({
    key: 'shutdownTimeoutMs',
    env: 'CONSUL_ACME_SHUTDOWN_TIMEOUT_MS',
    default: 30_000,
    type: 'integer ms',
    description: 'How long SIGTERM waits for orders in flight before abandoning them.',
    parse: int(0, 600_000),
  }),
  extraHostnames: setting({
    key: 'extraHostnames',
    env: 'CONSUL_ACME_EXTRA_HOSTNAMES',
    default: [] as string[],
    defaultDoc: 'empty',
    type: 'comma-separated names',
    description: 'Names to manage even when no service declares them.',
    parse: listOf(),
  }),
} as const;

type SettingsTable = typeof SETTINGS;
type ValueOf<S> = S extends OptionalSetting<infer T> ? T | undefined : S extends RequiredSetting<infer T> ? T : never;

/** The effective configuration: frozen, every value parsed. */
export type Config = { readonly [K in keyof SettingsTable]: ValueOf<SettingsTable[K]> } & {
  readonly configFile: string | undefined;
};

/** The environment variable that names the optional config file (JSON, keys as in SETTINGS). */
export const CONFIG_FILE_ENV = 'CONSUL_ACME_CONFIG_FILE';
