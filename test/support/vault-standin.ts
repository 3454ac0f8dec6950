/**
 * A Vault stand-in for tests: plain HTTP on 127.0.0.1, port 0, faithful to the parts of Vault's
 * documented HTTP API that consul-acme and Fabio use (docs/protocols.md §3, §4.1):
 *
 * - api-docs/index: every route under /v1/; token in `X-Vault-Token` or `Authorization: Bearer`;
 *   errors as `{"errors":[…]}`; 404 for unknown paths and empty lists; 405 for unsupported methods;
 *   200 with the envelope (request_id, lease_id, renewable, lease_duration, data, wrap_info,
 *   warnings, auth) or 204 without a body.
 * - secret/kv/kv-v2 (and vault-plugin-secrets-kv path_data.go / path_metadata.go):
 *   GET/POST/PUT/PATCH/DELETE `<mount>/data/<path>` (read latest or `?version=N`; a deleted or
 *   destroyed version reads as 404 whose body still carries `data.metadata` and `data.data: null`;
 *   writes honour `options.cas`, `cas_required`, and `max_versions` (default 10, older versions
 *   dropped); the exact 400 messages `check-and-set parameter did not match the current version`,
 *   `check-and-set parameter required for this call`, `error parsing check-and-set parameter`,
 *   `no data provided`); `<mount>/metadata/<path>` GET (`?list=true|1` lists keys, folders end in
 *   `/`, an empty list is 404), POST/PUT (max_versions, cas_required, custom_metadata), DELETE
 *   (all versions, permanently); POST `<mount>/delete|undelete|destroy/<path>` `{"versions":[…]}`;
 *   GET/POST `<mount>/config`.
 * - `GET sys/internal/ui/mounts/<path>` (how Fabio detects KV v2), `GET auth/token/lookup-self`
 *   (`ttl` and `renewable` as the token was added, `expire_time`), `POST auth/token/renew-self`
 *   (an `auth` block with `lease_duration`; 400 `lease is not renewable` for a token that is not),
 *   `POST sys/capabilities-self` (`{"paths":[…]}` → each path's capabilities, sorted, `["deny"]`
 *   for none and `["root"]` for a token with the root token's rights; in `data` and, as Vault
 *   also answers, at the top level, with `capabilities` too when one path was asked; docs/protocols.md §3.2),
 *   `POST sys/wrapping/unwrap` (Fabio calls it; answers "wrapping token is not valid or does not
 *   exist" like Vault for a token that is not a wrapping token), `GET sys/health` (no token).
 *   A restricted token also carries what Vault's `default` policy grants: lookup-self, renew-self
 *   and capabilities-self are always allowed.
 * Not implemented: the LIST verb (Node's HTTP parser refuses it; clients must use `?list=`),
 * delete_version_after, namespaces, leases, policies (see `restrictToken` instead).
 *
 * Test hooks: `failNext(status, errors)` answers the next request(s) with an error; `setSealed`
 * makes every request 503 as a sealed Vault does; `restrictToken(token, allowed)` adds a token
 * whose requests are refused with 403 unless `allowed(method, path)`; `readRaw`/`writeRaw` look
 * at and change the store without HTTP. Fault switches for the fault catalogue, each in force until
 * switched off: `refuseWrites`/`allowWrites` (writes under a path answered with an error, reads
 * still served), `revokeToken`/`restoreToken`/`addToken` (a token refused as Vault refuses a
 * revoked one; a new token accepted, for "token replaced"), `delayRequests`/`clearDelays` (matching
 * requests held, for timeouts); `countRequests` counts what arrived by method and path prefix.
 * Order of answers: a delay holds a request before anything else; then `failNext`; sys/health;
 * sealed (503); refused writes; token (403); the API.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export const DEFAULT_MAX_VERSIONS = 10;

export interface StandinVersion {
  data: Record<string, unknown> | null;
  created_time: string;
  deletion_time: string;
  destroyed: boolean;
}

export interface StandinSecret {
  versions: Record<number, StandinVersion>;
  current: number;
  oldest: number;
  maxVersions: number;
  casRequired: boolean;
  customMetadata: Record<string, string> | null;
  createdTime: string;
  updatedTime: string;
}

/** `(method, path)`: method is the HTTP method, or LIST for `GET …?list=true`; path has no `/v1/` and no query. */
export type TokenPolicy = (method: string, path: string) => boolean;

export interface VaultStandin {
  /** e.g. `http://127.0.0.1:43125` (no trailing slash). */
  address: string;
  /** The root token. */
  token: string;
  close(): Promise<void>;
  /** The next request (whatever it is) is answered with `status` and `{"errors": errors}`; calls queue up. */
  failNext(status: number, errors: string[]): void;
  /** While sealed, every request but sys/health gets 503 `Vault is sealed`, and sys/health says sealed. */
  setSealed(sealed: boolean): void;
  /** Adds `token` (or changes it) so that requests it may not make get 403 `permission denied`. */
  restrictToken(token: string, allowed: TokenPolicy): void;
  /** A copy of a secret's stored versions, or undefined. `path` is relative to the mount, e.g. `fabio/certs/a.example.com`. */
  readRaw(mount: string, path: string): { versions: Record<number, StandinVersion>; current: number } | undefined;
  /** Writes a new version as any Vault client could (no check-and-set); returns the version. */
  writeRaw(mount: string, path: string, data: Record<string, unknown>): number;
  /** Every request seen so far, as `METHOD /v1/path?query`. */
  requests(): string[];
  /**
   * From now on, writes (POST, PUT, PATCH, DELETE) whose path (relative to `/v1/`, e.g.
   * `secret/data/fabio/certs/`) starts with `pathPrefix` (every path when omitted) are answered with
   * `status` (default 503) and `{"errors": errors}` (default: what Vault says for that status) and
   * change nothing. Reads keep working. Calls add up; `allowWrites` ends them.
   */
  refuseWrites(opts?: { pathPrefix?: string; status?: number; errors?: string[] }): void;
  /** Ends the refusals of `refuseWrites` with that `pathPrefix`, or all of them when omitted. */
  allowWrites(opts?: { pathPrefix?: string }): void;
  /** Every request with `token` (the root token included) gets 403 `permission denied`, as Vault answers a revoked token. */
  revokeToken(token: string): void;
  /** Accepts a revoked token again, with what it could do before. */
  restoreToken(token: string): void;
  /**
   * Accepts `token` with the root token's rights (a replacement token, say). With `ttlSeconds` it
   * expires that long after it was added or last renewed (then it is refused like a revoked one);
   * `renewable` (default true with a ttl) lets renew-self extend it by `ttlSeconds` again.
   */
  addToken(token: string, opts?: { ttlSeconds?: number; renewable?: boolean }): void;
  /** When a token with a ttl expires (ms since the epoch), or undefined. */
  tokenExpiresAt(token: string): number | undefined;
  /**
   * From now on, requests whose path (relative to `/v1/`) starts with `pathPrefix` (every request
   * when omitted) are held `ms` before they are answered; the longest matching delay applies.
   */
  delayRequests(ms: number, opts?: { pathPrefix?: string }): void;
  /**
   * Ends every delay and answers the requests being held now; with `drop`, closes their connections
   * instead, unanswered and not applied (a request lost on the way to Vault's storage).
   */
  clearDelays(opts?: { drop?: boolean }): void;
  /**
   * How many requests arrived so far whose method is `method` (any when omitted; LIST for `?list=`),
   * whose path (relative to `/v1/`) starts with `pathPrefix`, and (when given) that carried `token`.
   */
  countRequests(opts?: { method?: string; pathPrefix?: string; token?: string }): number;
}

/** The error body Vault sends with a status, for refusals whose errors the test did not choose. */
function defaultErrors(status: number): string[] {
  if (status === 503) return ['Vault is sealed'];
  if (status === 403) return ['1 error occurred:\n\t* permission denied\n\n'];
  if (status === 500) return ['1 error occurred:\n\t* internal error\n\n'];
  return [];
}

const WRITE_METHODS = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

/** What Vault's `default` policy lets every token do to itself; a restricted token keeps these. */
const DEFAULT_POLICY_PATHS = new Set(['auth/token/lookup-self', 'auth/token/renew-self', 'sys/capabilities-self']);

/**
 * A token's capabilities on `path` (no leading or trailing slash), as Vault lists them (sorted):
 * a policy function is asked for each capability's method (read GET, list LIST, create and update
 * POST, delete DELETE, patch PATCH); no policy means the root token's rights.
 */
function capabilitiesOf(policy: TokenPolicy | undefined, path: string): string[] {
  if (policy === undefined) return ['root'];
  const capabilities: string[] = [];
  if (policy('POST', path) || policy('PUT', path)) capabilities.push('create', 'update');
  if (policy('DELETE', path)) capabilities.push('delete');
  if (policy('LIST', path)) capabilities.push('list');
  if (policy('PATCH', path)) capabilities.push('patch');
  if (policy('GET', path)) capabilities.push('read');
  return capabilities.length === 0 ? ['deny'] : capabilities.sort();
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly errors: string[],
  ) {
    super(errors.join('; ') || `status ${status}`);
  }
}

const notFound = (): HttpError => new HttpError(404, []);
const unsupported = (): HttpError => new HttpError(405, ['1 error occurred:\n\t* unsupported operation\n\n']);
const invalid = (message: string): HttpError => new HttpError(400, [message]);

/** Go's strconv.ParseBool, as Vault parses `list`. */
function parseBool(value: string | null): boolean {
  return value !== null && ['1', 't', 'T', 'TRUE', 'true', 'True'].includes(value);
}

function now(): string {
  return new Date().toISOString();
}

function copy<T>(value: T): T {
  return structuredClone(value);
}

async function readBody(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  const text = Buffer.concat(chunks).toString('utf8');
  if (text.trim() === '') return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw invalid(`failed to parse JSON input: ${err instanceof Error ? err.message : String(err)}`);
  }
}

function asObject(value: unknown): Record<string, unknown> | undefined {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
    ? (value as Record<string, unknown>)
    : undefined;
}

/** RFC 7396 JSON merge patch, as Vault's PATCH applies it. */
function mergePatch(target: Record<string, unknown>, patch: Record<string, unknown>): Record<string, unknown> {
  const result: Record<string, unknown> = { ...target };
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) {
      delete result[key];
    } else {
      const patchObject = asObject(value);
      const targetObject = asObject(result[key]);
      result[key] = patchObject !== undefined ? mergePatch(targetObject ?? {}, patchObject) : value;
    }
  }
  return result;
}

function parseVersions(body: unknown): number[] {
  const versions = asObject(body)?.versions;
  const list = Array.isArray(versions)
    ? versions
    : typeof versions === 'number' || typeof versions === 'string'
      ? [versions]
      : [];
  const parsed = list.map((v) => Number(v)).filter((v) => Number.isInteger(v) && v > 0);
  if (parsed.length === 0) throw invalid('no version number provided');
  return parsed;
}

export async function startVaultStandin(opts: { token?: string; mounts?: string[] } = {}): Promise<VaultStandin> {
  const rootToken = opts.token ?? `standin-${randomBytes(12).toString('hex')}`;
  const mounts = new Map<string, { maxVersions: number; casRequired: boolean; secrets: Map<string, StandinSecret> }>();
  for (const mount of opts.mounts ?? ['secret']) {
    mounts.set(mount.replace(/^\/+|\/+$/g, ''), {
      maxVersions: DEFAULT_MAX_VERSIONS,
      casRequired: false,
      secrets: new Map(),
    });
  }
  const policies = new Map<string, TokenPolicy>();
  const failures: { status: number; errors: string[] }[] = [];
  const seen: { line: string; method: string; path: string; token: string | undefined }[] = [];
  let sealed = false;
  const writeRefusals: { pathPrefix: string; status: number; errors: string[] }[] = [];
  const revoked = new Set<string>();
  const addedTokens = new Set<string>();
  /** Tokens with a ttl: how long each renewal grants, whether it may be renewed, and when it ends. */
  const leases = new Map<string, { ttlSeconds: number; renewable: boolean; expiresAtMs: number }>();
  const delays: { pathPrefix: string; ms: number }[] = [];
  const held = new Set<(drop: boolean) => void>();

  function envelope(data: unknown): Record<string, unknown> {
    return {
      request_id: randomUUID(),
      lease_id: '',
      renewable: false,
      lease_duration: 0,
      data,
      wrap_info: null,
      warnings: null,
      auth: null,
    };
  }

  function versionMetadata(secret: StandinSecret, version: number): Record<string, unknown> {
    const v = secret.versions[version];
    return {
      created_time: v?.created_time ?? '',
      custom_metadata: secret.customMetadata === null ? null : { ...secret.customMetadata },
      deletion_time: v?.deletion_time ?? '',
      destroyed: v?.destroyed ?? false,
      version,
    };
  }

  function isLive(v: StandinVersion): boolean {
    return !v.destroyed && (v.deletion_time === '' || Date.parse(v.deletion_time) > Date.now());
  }

  function writeVersion(
    mount: { maxVersions: number; casRequired: boolean; secrets: Map<string, StandinSecret> },
    path: string,
    data: Record<string, unknown>,
    cas: number | undefined,
  ): { secret: StandinSecret; version: number } {
    let secret = mount.secrets.get(path);
    const current = secret?.current ?? 0;
    if (cas === undefined && (mount.casRequired || secret?.casRequired === true)) {
      throw invalid('check-and-set parameter required for this call');
    }
    if (cas !== undefined && cas !== current)
      throw invalid('check-and-set parameter did not match the current version');
    const time = now();
    if (secret === undefined) {
      secret = {
        versions: {},
        current: 0,
        oldest: 0,
        maxVersions: 0,
        casRequired: false,
        customMetadata: null,
        createdTime: time,
        updatedTime: time,
      };
      mount.secrets.set(path, secret);
    }
    const version = secret.current + 1;
    secret.versions[version] = { data: copy(data), created_time: time, deletion_time: '', destroyed: false };
    secret.current = version;
    secret.updatedTime = time;
    if (secret.oldest === 0) secret.oldest = 1;
    const keep = secret.maxVersions > 0 ? secret.maxVersions : mount.maxVersions;
    while (version - secret.oldest + 1 > keep) {
      delete secret.versions[secret.oldest];
      secret.oldest += 1;
    }
    return { secret, version };
  }

  function parseCas(body: Record<string, unknown>): number | undefined {
    const options = asObject(body.options);
    if (options === undefined || options.cas === undefined || options.cas === null) return undefined;
    const cas = typeof options.cas === 'string' && options.cas.trim() !== '' ? Number(options.cas) : options.cas;
    if (typeof cas !== 'number' || !Number.isInteger(cas) || cas < 0)
      throw invalid('error parsing check-and-set parameter');
    return cas;
  }

  function listKeys(secrets: Map<string, StandinSecret>, prefix: string): string[] {
    const keys = new Set<string>();
    const start = prefix === '' ? '' : `${prefix}/`;
    for (const path of secrets.keys()) {
      if (!path.startsWith(start)) continue;
      const rest = path.slice(start.length);
      const slash = rest.indexOf('/');
      keys.add(slash < 0 ? rest : rest.slice(0, slash + 1));
    }
    return [...keys].sort();
  }

  function tokenOf(req: IncomingMessage): string | undefined {
    const header = req.headers['x-vault-token'];
    if (typeof header === 'string' && header !== '') return header;
    const authorization = req.headers.authorization;
    const bearer = typeof authorization === 'string' ? /^Bearer\s+(.+)$/i.exec(authorization) : null;
    return bearer?.[1];
  }

  async function handleKv(
    req: IncomingMessage,
    method: string,
    mountName: string,
    operation: string,
    path: string,
    query: URLSearchParams,
  ): Promise<{ status: number; body?: unknown }> {
    const mount = mounts.get(mountName);
    if (mount === undefined) throw notFound();
    const secrets = mount.secrets;
    switch (operation) {
      case 'data': {
        if (method === 'GET') {
          const secret = secrets.get(path);
          if (path === '' || secret === undefined) throw notFound();
          const asked = Number(query.get('version') ?? '0');
          const version = Number.isInteger(asked) && asked > 0 ? asked : secret.current;
          const v = secret.versions[version];
          if (v === undefined) throw notFound();
          if (!isLive(v))
            return { status: 404, body: envelope({ data: null, metadata: versionMetadata(secret, version) }) };
          return { status: 200, body: envelope({ data: copy(v.data), metadata: versionMetadata(secret, version) }) };
        }
        if (method === 'POST' || method === 'PUT') {
          if (path === '') throw notFound();
          const body = asObject(await readBody(req)) ?? {};
          const data = asObject(body.data);
          if (data === undefined) throw invalid('no data provided');
          const { secret, version } = writeVersion(mount, path, data, parseCas(body));
          const { custom_metadata, created_time, deletion_time, destroyed } = versionMetadata(secret, version);
          return { status: 200, body: envelope({ created_time, custom_metadata, deletion_time, destroyed, version }) };
        }
        if (method === 'PATCH') {
          if (!String(req.headers['content-type'] ?? '').startsWith('application/merge-patch+json')) {
            throw new HttpError(415, ['unsupported content type']);
          }
          const body = asObject(await readBody(req)) ?? {};
          const patch = asObject(body.data);
          if (patch === undefined) throw invalid('no data provided');
          const secret = secrets.get(path);
          const latest = secret?.versions[secret.current];
          if (secret === undefined || latest === undefined || !isLive(latest)) throw notFound();
          const { version } = writeVersion(mount, path, mergePatch(latest.data ?? {}, patch), parseCas(body));
          const { custom_metadata, created_time, deletion_time, destroyed } = versionMetadata(secret, version);
          return { status: 200, body: envelope({ created_time, custom_metadata, deletion_time, destroyed, version }) };
        }
        if (method === 'DELETE') {
          const secret = secrets.get(path);
          const latest = secret?.versions[secret.current];
          if (latest !== undefined && latest.deletion_time === '') latest.deletion_time = now();
          return { status: 204 };
        }
        throw unsupported();
      }
      case 'metadata': {
        if (method === 'GET' && parseBool(query.get('list'))) {
          const keys = listKeys(secrets, path);
          if (keys.length === 0) throw notFound();
          return { status: 200, body: envelope({ keys }) };
        }
        if (method === 'GET') {
          const secret = secrets.get(path);
          if (path === '' || secret === undefined) throw notFound();
          const versions: Record<string, unknown> = {};
          for (const [n, v] of Object.entries(secret.versions)) {
            versions[n] = { created_time: v.created_time, deletion_time: v.deletion_time, destroyed: v.destroyed };
          }
          return {
            status: 200,
            body: envelope({
              cas_required: secret.casRequired,
              created_time: secret.createdTime,
              current_version: secret.current,
              custom_metadata: secret.customMetadata === null ? null : { ...secret.customMetadata },
              delete_version_after: '0s',
              max_versions: secret.maxVersions,
              oldest_version: secret.oldest,
              updated_time: secret.updatedTime,
              versions,
            }),
          };
        }
        if (method === 'POST' || method === 'PUT') {
          if (path === '') throw notFound();
          const body = asObject(await readBody(req)) ?? {};
          const time = now();
          let secret = secrets.get(path);
          if (secret === undefined) {
            secret = {
              versions: {},
              current: 0,
              oldest: 0,
              maxVersions: 0,
              casRequired: false,
              customMetadata: null,
              createdTime: time,
              updatedTime: time,
            };
            secrets.set(path, secret);
          }
          if (body.max_versions !== undefined) secret.maxVersions = Number(body.max_versions) || 0;
          if (body.cas_required !== undefined)
            secret.casRequired = body.cas_required === true || body.cas_required === 'true';
          const custom = asObject(body.custom_metadata);
          if (custom !== undefined)
            secret.customMetadata = Object.fromEntries(Object.entries(custom).map(([k, v]) => [k, String(v)]));
          secret.updatedTime = time;
          return { status: 204 };
        }
        if (method === 'DELETE') {
          secrets.delete(path);
          return { status: 204 };
        }
        throw unsupported();
      }
      case 'delete':
      case 'undelete':
      case 'destroy': {
        if (method !== 'POST' && method !== 'PUT') throw unsupported();
        const versions = parseVersions(await readBody(req));
        const secret = secrets.get(path);
        if (secret === undefined) return { status: 204 };
        for (const n of versions) {
          const v = secret.versions[n];
          if (v === undefined) continue;
          if (operation === 'delete' && v.deletion_time === '') v.deletion_time = now();
          if (operation === 'undelete' && !v.destroyed) v.deletion_time = '';
          if (operation === 'destroy') {
            v.destroyed = true;
            v.data = null;
          }
        }
        return { status: 204 };
      }
      case 'config': {
        if (path !== '') throw notFound();
        if (method === 'GET') {
          return {
            status: 200,
            body: envelope({
              cas_required: mount.casRequired,
              delete_version_after: '0s',
              max_versions: mount.maxVersions,
            }),
          };
        }
        if (method === 'POST' || method === 'PUT') {
          const body = asObject(await readBody(req)) ?? {};
          if (body.max_versions !== undefined) mount.maxVersions = Number(body.max_versions) || DEFAULT_MAX_VERSIONS;
          if (body.cas_required !== undefined)
            mount.casRequired = body.cas_required === true || body.cas_required === 'true';
          return { status: 204 };
        }
        throw unsupported();
      }
      default:
        throw notFound();
    }
  }

  function findMount(path: string): string | undefined {
    return [...mounts.keys()].find((m) => path === m || path.startsWith(`${m}/`));
  }

  /** The path relative to `/v1/`, decoded, without trailing slashes; undefined outside `/v1/`. */
  function apiPath(url: URL): string | undefined {
    if (!url.pathname.startsWith('/v1/')) return undefined;
    return url.pathname
      .slice('/v1/'.length)
      .split('/')
      .map((segment) => {
        try {
          return decodeURIComponent(segment);
        } catch {
          return segment;
        }
      })
      .join('/')
      .replace(/\/+$/, '');
  }

  async function route(req: IncomingMessage, url: URL): Promise<{ status: number; body?: unknown }> {
    const method = (req.method ?? 'GET').toUpperCase();
    const path = apiPath(url);
    if (path === undefined) throw notFound();

    if (path === 'sys/health') {
      if (method !== 'GET' && method !== 'HEAD') throw unsupported();
      const body = {
        initialized: true,
        sealed,
        standby: false,
        performance_standby: false,
        replication_performance_mode: 'disabled',
        replication_dr_mode: 'disabled',
        server_time_utc: Math.floor(Date.now() / 1000),
        version: '1.15.0+standin',
        cluster_name: 'vault-standin',
        cluster_id: 'standin',
      };
      return { status: sealed ? Number(url.searchParams.get('sealedcode') ?? 503) : 200, body };
    }
    if (sealed) throw new HttpError(503, ['Vault is sealed']);
    if (WRITE_METHODS.has(method)) {
      const refusal = writeRefusals.find((r) => path.startsWith(r.pathPrefix));
      if (refusal !== undefined) throw new HttpError(refusal.status, refusal.errors);
    }

    const token = tokenOf(req);
    const lease = token === undefined ? undefined : leases.get(token);
    if (
      token === undefined ||
      revoked.has(token) ||
      (lease !== undefined && lease.expiresAtMs <= Date.now()) ||
      (token !== rootToken && !policies.has(token) && !addedTokens.has(token))
    )
      throw new HttpError(403, ['permission denied']);
    const policy = policies.get(token);
    const policyMethod = method === 'GET' && parseBool(url.searchParams.get('list')) ? 'LIST' : method;
    if (policy !== undefined && !DEFAULT_POLICY_PATHS.has(path) && !policy(policyMethod, path)) {
      throw new HttpError(403, ['1 error occurred:\n\t* permission denied\n\n']);
    }

    if (path === 'sys/capabilities-self') {
      if (method !== 'POST' && method !== 'PUT') throw unsupported();
      const body = asObject(await readBody(req)) ?? {};
      const asked = Array.isArray(body.paths) ? body.paths : typeof body.path === 'string' ? [body.path] : [];
      const paths = asked.filter((p): p is string => typeof p === 'string');
      if (paths.length === 0) throw invalid('paths must be supplied');
      const data: Record<string, string[]> = {};
      for (const asked of paths) data[asked] = capabilitiesOf(policy, asked.replace(/^\/+/, '').replace(/\/+$/, ''));
      if (paths.length === 1) data.capabilities = data[paths[0]!]!;
      return { status: 200, body: { ...data, ...envelope(data) } };
    }
    if (path === 'auth/token/renew-self') {
      if (method !== 'POST' && method !== 'PUT') throw unsupported();
      await readBody(req);
      if (lease === undefined || !lease.renewable) throw invalid('lease is not renewable');
      lease.expiresAtMs = Date.now() + lease.ttlSeconds * 1000;
      return {
        status: 200,
        body: {
          ...envelope(null),
          auth: {
            client_token: token,
            accessor: `accessor-${token.slice(-8)}`,
            policies: ['default'],
            token_policies: ['default'],
            metadata: null,
            lease_duration: lease.ttlSeconds,
            renewable: true,
            entity_id: '',
            token_type: 'service',
            orphan: true,
          },
        },
      };
    }
    if (path === 'auth/token/lookup-self') {
      if (method !== 'GET') throw unsupported();
      const ttl = lease === undefined ? 0 : Math.max(0, Math.floor((lease.expiresAtMs - Date.now()) / 1000));
      return {
        status: 200,
        body: envelope({
          accessor: `accessor-${token.slice(-8)}`,
          creation_time: Math.floor(Date.now() / 1000),
          creation_ttl: lease?.ttlSeconds ?? 0,
          display_name: token === rootToken ? 'root' : 'token',
          entity_id: '',
          expire_time: lease === undefined ? null : new Date(lease.expiresAtMs).toISOString(),
          explicit_max_ttl: 0,
          id: token,
          identity_policies: [],
          issue_time: now(),
          meta: null,
          num_uses: 0,
          orphan: true,
          path: token === rootToken ? 'auth/token/root' : 'auth/token/create',
          policies: token === rootToken ? ['root'] : ['default'],
          renewable: lease?.renewable ?? false,
          ttl,
          type: 'service',
        }),
      };
    }
    if (path === 'sys/wrapping/unwrap') {
      if (method !== 'POST' && method !== 'PUT') throw unsupported();
      throw invalid('wrapping token is not valid or does not exist');
    }
    if (path.startsWith('sys/internal/ui/mounts/')) {
      if (method !== 'GET') throw unsupported();
      const mount = findMount(path.slice('sys/internal/ui/mounts/'.length));
      if (mount === undefined) throw notFound();
      return {
        status: 200,
        body: envelope({
          accessor: `kv_${mount}`,
          config: { default_lease_ttl: 0, force_no_cache: false, max_lease_ttl: 0 },
          description: 'key/value secret storage',
          external_entropy_access: false,
          local: false,
          options: { version: '2' },
          path: `${mount}/`,
          seal_wrap: false,
          type: 'kv',
          uuid: `standin-${mount}`,
        }),
      };
    }
    const mount = findMount(path);
    if (mount !== undefined) {
      const rest = path.slice(mount.length + 1);
      const slash = rest.indexOf('/');
      const operation = slash < 0 ? rest : rest.slice(0, slash);
      const secretPath = slash < 0 ? '' : rest.slice(slash + 1);
      return handleKv(req, method, mount, operation, secretPath, url.searchParams);
    }
    throw notFound();
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://standin');
    const method = (req.method ?? 'GET').toUpperCase();
    const path = apiPath(url) ?? url.pathname;
    seen.push({
      line: `${req.method ?? 'GET'} ${url.pathname}${url.search}`,
      method: method === 'GET' && parseBool(url.searchParams.get('list')) ? 'LIST' : method,
      path,
      token: tokenOf(req),
    });
    const delayMs = Math.max(0, ...delays.filter((d) => path.startsWith(d.pathPrefix)).map((d) => d.ms));
    if (delayMs > 0) {
      const dropped = await new Promise<boolean>((resolve) => {
        const release = (drop: boolean): void => {
          clearTimeout(timer);
          held.delete(release);
          resolve(drop);
        };
        const timer = setTimeout(() => release(false), delayMs);
        held.add(release);
      });
      if (dropped) {
        req.socket.destroy();
        return;
      }
    }
    let status: number;
    let body: unknown;
    try {
      const failure = failures.shift();
      if (failure !== undefined) throw new HttpError(failure.status, failure.errors);
      ({ status, body } = await route(req, url));
    } catch (err) {
      if (err instanceof HttpError) {
        status = err.status;
        body = { errors: err.errors };
      } else {
        status = 500;
        body = { errors: [err instanceof Error ? err.message : String(err)] };
      }
    }
    if (!req.complete) req.resume();
    if (status === 204 || body === undefined) {
      res.writeHead(status === 200 ? 204 : status, { 'Cache-Control': 'no-store' });
      res.end();
      return;
    }
    const text = JSON.stringify(body);
    res.writeHead(status, {
      'Content-Type': 'application/json',
      'Cache-Control': 'no-store',
      'Content-Length': Buffer.byteLength(text),
    });
    res.end(text);
  }

  const server = createServer((req, res) => {
    void handle(req, res);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;

  return {
    address: `http://127.0.0.1:${port}`,
    token: rootToken,
    async close() {
      delays.length = 0;
      for (const release of [...held]) release(false);
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
    failNext(status, errors) {
      failures.push({ status, errors });
    },
    setSealed(value) {
      sealed = value;
    },
    restrictToken(token, allowed) {
      policies.set(token, allowed);
    },
    readRaw(mountName, path) {
      const secret = mounts.get(mountName)?.secrets.get(path.replace(/^\/+|\/+$/g, ''));
      return secret === undefined ? undefined : { versions: copy(secret.versions), current: secret.current };
    },
    writeRaw(mountName, path, data) {
      const mount = mounts.get(mountName);
      if (mount === undefined) throw new Error(`no mount ${mountName}`);
      return writeVersion(mount, path.replace(/^\/+|\/+$/g, ''), data, undefined).version;
    },
    requests() {
      return seen.map((request) => request.line);
    },
    refuseWrites(opts = {}) {
      const status = opts.status ?? 503;
      writeRefusals.push({ pathPrefix: opts.pathPrefix ?? '', status, errors: opts.errors ?? defaultErrors(status) });
    },
    allowWrites(opts = {}) {
      for (let i = writeRefusals.length - 1; i >= 0; i -= 1) {
        if (opts.pathPrefix === undefined || writeRefusals[i]?.pathPrefix === opts.pathPrefix)
          writeRefusals.splice(i, 1);
      }
    },
    revokeToken(token) {
      revoked.add(token);
    },
    restoreToken(token) {
      revoked.delete(token);
    },
    addToken(token, opts = {}) {
      addedTokens.add(token);
      revoked.delete(token);
      if (opts.ttlSeconds !== undefined && opts.ttlSeconds > 0) {
        leases.set(token, {
          ttlSeconds: opts.ttlSeconds,
          renewable: opts.renewable ?? true,
          expiresAtMs: Date.now() + opts.ttlSeconds * 1000,
        });
      } else {
        leases.delete(token);
      }
    },
    tokenExpiresAt(token) {
      return leases.get(token)?.expiresAtMs;
    },
    delayRequests(ms, opts = {}) {
      delays.push({ pathPrefix: opts.pathPrefix ?? '', ms });
    },
    clearDelays(opts = {}) {
      delays.length = 0;
      for (const release of [...held]) release(opts.drop ?? false);
    },
    countRequests(opts = {}) {
      return seen.filter(
        (request) =>
          (opts.method === undefined || request.method === opts.method.toUpperCase()) &&
          request.path.startsWith(opts.pathPrefix ?? '') &&
          (opts.token === undefined || request.token === opts.token),
      ).length;
    },
  };
}
