/**
 * A stand-in for Fabio: an HTTP reverse proxy on a free 127.0.0.1 port that builds its routing table
 * from the Consul catalog by Fabio's rules (docs/protocols.md §4.2 and §4.2.1), so that tests and
 * benchmarks see what an operator running Fabio in front of consul-acme would see.
 *
 * The table:
 * - is rebuilt from scratch whenever the blocking query on `/v1/health/state/any` returns, from the
 *   checks of services carrying a route tag and `/v1/catalog/service/<name>` for each service that
 *   has a routable instance, as Fabio's Consul registry does;
 * - holds only routable instances: at least one of the instance's own checks has a status in
 *   `serviceStatus` (default `passing`; `checksRequired: 'all'` asks every check), its node's
 *   `serfHealth` is not critical, and neither node nor service is in maintenance. An instance with
 *   no check is never routed;
 * - takes routes from `urlprefix-<host><path>[ options]` tags (prefix configurable): the host is
 *   lower-cased, a tag without `/` routes `/`, options after the first space are kept and only
 *   `strip=<prefix>` acts; `urlprefix-:<port>` (TCP) tags are skipped.
 *
 * A request is matched like Fabio matches it: the request's host (lower-cased, port handling below)
 * against every route host, `*` and `?` globs included, most specific first (compared back to
 * front), then the host-less routes. Within a host the paths are tried in reverse lexicographic
 * order as prefixes, so the longest matching prefix wins. Several instances on one route: random
 * (Fabio's default `rnd`) or round robin (`rr`). No route → 404; a backend that cannot be reached →
 * 502. The Host header is forwarded unchanged.
 *
 * Port handling: Fabio removes only `:80` from a plain HTTP request's Host, and it listens on 80 for
 * HTTP-01. Here the router listens on a free port (Pebble validates against
 * it, `test/support/pebble.ts` `httpPort`), and Pebble and the pre-flight probe send
 * `Host: <name>:<that port>`. So this router treats its own listening port as Fabio treats `:80`:
 * it is removed from the request's Host and from route hosts; any other port stays part of the host.
 *
 * Every proxied request is recorded (`requests()`): host, path, User-Agent, the route that matched
 * or that none did, the instance that answered (service, instance id, address:port), the status,
 * and the first bytes of the answer. The answer can be an ACME key authorization: tests may compare
 * it, never print it.
 *
 * `waitForRoute(host, path)` waits until a request would be routed (to a given service), `table()`
 * shows the table, `routeChanges()` says when each route target came and went and `routeLiveAt()`
 * when a service's route first appeared (a benchmark's "route live" time). The exports at the
 * end (app backends, routed service registration, request classification) are what the end-to-end
 * test and a tag-to-certificate benchmark need around the router.
 */
import { createServer, request as httpRequest, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export const DEFAULT_ROUTE_TAG_PREFIX = 'urlprefix-';
/** Fabio's `registry.consul.service.status` default. */
export const DEFAULT_SERVICE_STATUS: readonly string[] = ['passing'];
/** How long each blocking query may wait (Consul adds up to wait/16). */
const WATCH_WAIT_SECONDS = 30;
/** Fabio waits a second after a failed query. */
const WATCH_ERROR_DELAY_MS = 1_000;
const FIRST_TABLE_TIMEOUT_MS = 15_000;
const DEFAULT_WAIT_FOR_ROUTE_MS = 30_000;
const UPSTREAM_TIMEOUT_MS = 30_000;
const CATALOG_TIMEOUT_MS = 10_000;
/** Answer bytes kept per recorded request. */
const RECORDED_BODY_BYTES = 512;

const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'upgrade',
  'te',
  'trailer',
  'proxy-authenticate',
  'proxy-authorization',
]);

export interface FabioRouterOptions {
  /** Consul's HTTP address, `http://127.0.0.1:PORT`. */
  consulAddress: string;
  consulToken?: string;
  /** Fabio's `registry.consul.tagprefix`; default `urlprefix-`. */
  tagPrefix?: string;
  /** Fabio's `registry.consul.service.status`; default `['passing']`. */
  serviceStatus?: readonly string[];
  /** Fabio's `registry.consul.checksRequired`; default `one`. */
  checksRequired?: 'one' | 'all';
  /** Fabio's `proxy.strategy`; default `rnd`. */
  strategy?: 'rnd' | 'rr';
  /** Port to listen on; default a free one. */
  port?: number;
}

/** One instance a route forwards to. */
export interface RouteTarget {
  service: string;
  /** The Consul service ID. */
  instanceId: string;
  node: string;
  /** The service address, or the node's when the service has none. */
  address: string;
  port: number;
  /** What followed the first space in the tag ('' when nothing). */
  options: string;
}

/** One route of the table: a host ('' for host-less) and a path prefix. */
export interface Route {
  host: string;
  path: string;
  targets: RouteTarget[];
}

/** When a target joined or left a route, from diffing consecutive tables. */
export interface RouteChange {
  /** Epoch ms of the rebuild that showed the change. */
  at: number;
  change: 'added' | 'removed';
  host: string;
  path: string;
  service: string;
  instanceId: string;
}

export interface RoutedRequest {
  /** Arrival order, from 1. */
  seq: number;
  /** Epoch ms. */
  receivedAt: number;
  method: string;
  /** The Host header as received. */
  hostHeader: string;
  /** The host matched against routes: lower case, the router's own port removed. */
  host: string;
  /** Path with query, as received. */
  path: string;
  userAgent: string;
  /** The route that matched; undefined when none did (answered 404). */
  route: { host: string; path: string } | undefined;
  /** The instance the request went to. */
  backend: RouteTarget | undefined;
  /** The backend's status; 404 for no route, 502 when the backend could not be reached; undefined while in flight. */
  status: number | undefined;
  /** Why the backend could not be reached. */
  error: string | undefined;
  /** The first bytes of the answer (utf-8). May be a key authorization: compare it, do not print it. */
  body: string;
  /** Epoch ms when the answer ended. */
  answeredAt: number | undefined;
}

/** The route a request would take now, and the targets one of which it would reach. */
export interface RouteMatch {
  route: { host: string; path: string };
  targets: RouteTarget[];
}

export interface FabioRouter {
  port: number;
  url: string;
  /** The table now, in lookup order: host routes (most specific host first), then host-less; longest paths first. */
  table(): Route[];
  /** The route a request for `host` (a Host header; the router's port is removed) and `path` would take now. */
  lookup(host: string, path: string): RouteMatch | undefined;
  /**
   * Resolves once a request for `host` and `path` would be routed, and, with `service`, reach only
   * instances of that service. Rejects after `timeoutMs` (default 30 s) with the table.
   */
  waitForRoute(host: string, path: string, opts?: { service?: string; timeoutMs?: number }): Promise<RouteMatch>;
  /** Every change of the table's targets since start (copies). */
  routeChanges(): RouteChange[];
  /**
   * Epoch ms of the first rebuild, at or after `sinceMs`, that added an instance of `service` to the
   * route `host` + `path` (exactly that route, as tagged); undefined when none did. A benchmark's
   * "route live" time.
   */
  routeLiveAt(host: string, path: string, service: string, sinceMs?: number): number | undefined;
  /** Every request so far (copies). */
  requests(): RoutedRequest[];
  /** Tables built so far (one per return of the health query). */
  rebuilds(): number;
  /** The watch's last error, undefined when the last query succeeded. */
  lastError(): string | undefined;
  /** A GET through the router with `Host: <host>:<router port>`, as Pebble sends it. */
  get(host: string, path: string, opts?: { userAgent?: string }): Promise<{ status: number; body: string }>;
  /** Human-readable table, for failure messages. */
  describe(): string;
  close(): Promise<void>;
}

// ---------------------------------------------------------------------------------------------
// Rules (pure)

interface HealthCheck {
  Node: string;
  CheckID: string;
  Status: string;
  ServiceID: string;
  ServiceName: string;
  ServiceTags: string[] | null;
}

interface CatalogService {
  Node: string;
  Address: string;
  ServiceID: string;
  ServiceName: string;
  ServiceAddress: string;
  ServicePort: number;
  ServiceTags: string[] | null;
}

/** A route tag's host, path and options; undefined when the tag is not an HTTP route tag. */
export function parseRouteTag(
  tag: string,
  prefix: string = DEFAULT_ROUTE_TAG_PREFIX,
): { host: string; path: string; options: string } | undefined {
  let rest = tag.trim();
  if (!rest.startsWith(prefix)) return undefined;
  rest = rest.slice(prefix.length).trim();
  const space = rest.indexOf(' ');
  const options = space < 0 ? '' : rest.slice(space + 1).trim();
  const source = space < 0 ? rest : rest.slice(0, space);
  if (source === '' || source.startsWith(':')) return undefined; // empty, or a TCP route
  const slash = source.indexOf('/');
  if (slash < 0) return { host: source.toLowerCase(), path: '/', options };
  return { host: source.slice(0, slash).toLowerCase(), path: source.slice(slash), options };
}

function isServiceCheck(c: HealthCheck): boolean {
  return (
    c.ServiceID !== '' &&
    c.CheckID !== 'serfHealth' &&
    c.CheckID !== '_node_maintenance' &&
    !c.CheckID.startsWith('_service_maintenance:')
  );
}

/**
 * `<node>.<service id>` of every routable instance, by service name: the checks of services with a
 * route tag, judged as Fabio judges them (docs/protocols.md §4.2.1).
 */
export function routableInstances(
  checks: readonly HealthCheck[],
  opts: { tagPrefix: string; serviceStatus: readonly string[]; checksRequired: 'one' | 'all' },
): Map<string, Set<string>> {
  const relevant = checks.filter(
    (c) =>
      c.CheckID === 'serfHealth' ||
      c.CheckID === '_node_maintenance' ||
      c.CheckID.startsWith('_service_maintenance') ||
      (c.ServiceTags ?? []).some((t) => t.startsWith(opts.tagPrefix)),
  );
  const result = new Map<string, Set<string>>();
  for (const check of relevant) {
    if (!isServiceCheck(check)) continue;
    let total = 0;
    let passing = 0;
    let excluded = false;
    for (const c of relevant) {
      if (c.Node !== check.Node) continue;
      if (c.ServiceID === check.ServiceID) {
        total++;
        if (opts.serviceStatus.includes(c.Status)) passing++;
      }
      if (c.CheckID === 'serfHealth' && c.Status === 'critical') excluded = true;
      if (c.CheckID === '_node_maintenance') excluded = true;
      if (c.CheckID === `_service_maintenance:${check.ServiceID}` && c.Status === 'critical') excluded = true;
    }
    if (excluded || passing === 0 || (opts.checksRequired === 'all' && passing !== total)) continue;
    const instances = result.get(check.ServiceName) ?? new Set<string>();
    instances.add(`${check.Node}.${check.ServiceID}`);
    result.set(check.ServiceName, instances);
  }
  return result;
}

type Table = Map<string, Route[]>;

function compareDescending(a: string, b: string): number {
  return a < b ? 1 : a > b ? -1 : 0;
}

/** Builds a table from the routable instances' catalog entries. */
export function buildTable(
  instances: readonly CatalogService[],
  routable: ReadonlyMap<string, ReadonlySet<string>>,
  tagPrefix: string,
): Table {
  const table: Table = new Map();
  for (const svc of instances) {
    if (!routable.get(svc.ServiceName)?.has(`${svc.Node}.${svc.ServiceID}`)) continue;
    for (const tag of svc.ServiceTags ?? []) {
      const parsed = parseRouteTag(tag, tagPrefix);
      if (!parsed) continue;
      const target: RouteTarget = {
        service: svc.ServiceName,
        instanceId: svc.ServiceID,
        node: svc.Node,
        address: svc.ServiceAddress !== '' ? svc.ServiceAddress : svc.Address,
        port: svc.ServicePort,
        options: parsed.options,
      };
      const routes = table.get(parsed.host) ?? [];
      let route = routes.find((r) => r.path === parsed.path);
      if (!route) {
        route = { host: parsed.host, path: parsed.path, targets: [] };
        routes.push(route);
      }
      const duplicate = route.targets.some(
        (t) => t.node === target.node && t.instanceId === target.instanceId && t.options === target.options,
      );
      if (!duplicate) route.targets.push(target);
      table.set(parsed.host, routes);
    }
  }
  for (const routes of table.values()) routes.sort((a, b) => compareDescending(a.path, b.path));
  return table;
}

function globToRegExp(pattern: string): RegExp {
  const source = pattern
    .replace(/[.+^${}()|[\]\\]/g, '\\$&')
    .replace(/\*/g, '.*')
    .replace(/\?/g, '.');
  return new RegExp(`^${source}$`);
}

function reverseHost(host: string): string {
  const colon = host.lastIndexOf(':');
  const [name, port] = colon > 0 ? [host.slice(0, colon), host.slice(colon)] : [host, ''];
  return [...name].reverse().join('') + port;
}

/** Removes the port that stands for Fabio's `:80` (the router's own) and lower-cases. */
export function normalizeHost(host: string, ownPort: number): string {
  const lower = host.toLowerCase();
  const suffix = `:${ownPort}`;
  return lower.endsWith(suffix) ? lower.slice(0, -suffix.length) : lower;
}

/** The route hosts to try for a request host, most specific first, host-less last. */
function candidateHosts(table: Table, host: string, ownPort: number): string[] {
  const matching = [...table.keys()].filter((pattern) => globToRegExp(normalizeHost(pattern, ownPort)).test(host));
  const sorted = matching
    .map(reverseHost)
    .sort(compareDescending)
    .map(reverseHost)
    .filter((h) => h !== '');
  return [...sorted, ''];
}

function lookupIn(table: Table, host: string, path: string, ownPort: number): RouteMatch | undefined {
  for (const candidate of candidateHosts(table, normalizeHost(host, ownPort), ownPort)) {
    for (const route of table.get(candidate) ?? []) {
      if (!path.startsWith(route.path)) continue;
      if (route.targets.length === 0) break; // Fabio moves on to the next host
      return { route: { host: route.host, path: route.path }, targets: route.targets.map((t) => ({ ...t })) };
    }
  }
  return undefined;
}

function flatten(table: Table): Route[] {
  const hosts = [...table.keys()].filter((h) => h !== '').sort(compareDescending);
  if (table.has('')) hosts.push('');
  return hosts.flatMap((h) =>
    (table.get(h) ?? []).map((r) => ({ host: r.host, path: r.path, targets: r.targets.map((t) => ({ ...t })) })),
  );
}

function targetKeys(table: Table): Map<string, Omit<RouteChange, 'at' | 'change'>> {
  const keys = new Map<string, Omit<RouteChange, 'at' | 'change'>>();
  for (const route of flatten(table)) {
    for (const t of route.targets) {
      keys.set(`${route.host}\u0000${route.path}\u0000${t.node}\u0000${t.instanceId}`, {
        host: route.host,
        path: route.path,
        service: t.service,
        instanceId: t.instanceId,
      });
    }
  }
  return keys;
}

/** The request path as Fabio matches it: without the query, percent-decoded. */
function matchPath(url: string): string {
  const raw = url.split('?')[0] ?? '';
  try {
    return decodeURIComponent(raw);
  } catch {
    return raw;
  }
}

function describeTable(routes: readonly Route[]): string {
  if (routes.length === 0) return '  (empty)';
  return routes
    .map(
      (r) =>
        `  ${r.host === '' ? '(any host)' : r.host}${r.path} → ` +
        r.targets.map((t) => `${t.service}/${t.instanceId}@${t.address}:${t.port}`).join(', '),
    )
    .join('\n');
}

// ---------------------------------------------------------------------------------------------
// The router

export async function startFabioRouter(opts: FabioRouterOptions): Promise<FabioRouter> {
  const tagPrefix = opts.tagPrefix ?? DEFAULT_ROUTE_TAG_PREFIX;
  const serviceStatus = opts.serviceStatus ?? DEFAULT_SERVICE_STATUS;
  const checksRequired = opts.checksRequired ?? 'one';
  const strategy = opts.strategy ?? 'rnd';
  const consulHeaders: Record<string, string> = opts.consulToken ? { 'X-Consul-Token': opts.consulToken } : {};

  let table: Table = new Map();
  let rebuildCount = 0;
  let watchError: string | undefined;
  let closed = false;
  let roundRobin = 0;
  let seq = 0;
  const changes: RouteChange[] = [];
  const log: RoutedRequest[] = [];
  const listeners = new Set<() => void>();
  const abort = new AbortController();

  const server: Server = createServer((req, res) => {
    const hostHeader = req.headers.host ?? '';
    const path = req.url ?? '/';
    const record: RoutedRequest = {
      seq: ++seq,
      receivedAt: Date.now(),
      method: req.method ?? 'GET',
      hostHeader,
      host: normalizeHost(hostHeader, port),
      path,
      userAgent: req.headers['user-agent'] ?? '',
      route: undefined,
      backend: undefined,
      status: undefined,
      error: undefined,
      body: '',
      answeredAt: undefined,
    };
    log.push(record);
    const match = lookupIn(table, hostHeader, matchPath(path), port);
    if (!match) {
      record.status = 404;
      record.answeredAt = Date.now();
      req.resume();
      res.writeHead(404, { 'content-type': 'text/plain' }).end('no route\n');
      return;
    }
    const index = strategy === 'rr' ? roundRobin++ % match.targets.length : randomIndex(match.targets.length);
    const target = match.targets[index]!;
    record.route = match.route;
    record.backend = target;
    const strip = /(?:^|\s)strip=(\S+)/.exec(target.options)?.[1];
    const upstreamPath = strip !== undefined && path.startsWith(strip) ? path.slice(strip.length) || '/' : path;
    const headers: IncomingHttpHeaders = {};
    for (const [name, value] of Object.entries(req.headers)) if (!HOP_BY_HOP.has(name)) headers[name] = value;
    const client = req.socket.remoteAddress ?? '';
    headers['x-forwarded-for'] = headers['x-forwarded-for']
      ? `${String(headers['x-forwarded-for'])}, ${client}`
      : client;
    headers['x-forwarded-proto'] = 'http';
    const upstream = httpRequest(
      {
        host: target.address,
        port: target.port,
        method: req.method,
        path: upstreamPath,
        headers,
        agent: false,
        timeout: UPSTREAM_TIMEOUT_MS,
      },
      (upstreamRes) => {
        record.status = upstreamRes.statusCode;
        const responseHeaders: IncomingHttpHeaders = {};
        for (const [name, value] of Object.entries(upstreamRes.headers))
          if (!HOP_BY_HOP.has(name)) responseHeaders[name] = value;
        res.writeHead(upstreamRes.statusCode ?? 502, responseHeaders);
        let kept = 0;
        const chunks: Buffer[] = [];
        upstreamRes.on('data', (chunk: Buffer) => {
          if (kept < RECORDED_BODY_BYTES) {
            chunks.push(chunk.subarray(0, RECORDED_BODY_BYTES - kept));
            kept += Math.min(chunk.length, RECORDED_BODY_BYTES - kept);
          }
          res.write(chunk);
        });
        upstreamRes.on('end', () => {
          record.body = Buffer.concat(chunks).toString('utf8');
          record.answeredAt = Date.now();
          res.end();
        });
        upstreamRes.on('error', (err) => {
          record.error = err.message;
          record.answeredAt = Date.now();
          res.destroy(err);
        });
      },
    );
    upstream.on('timeout', () => upstream.destroy(new Error(`no answer within ${UPSTREAM_TIMEOUT_MS} ms`)));
    upstream.on('error', (err) => {
      record.error = err.message;
      record.answeredAt = Date.now();
      if (res.headersSent) {
        res.destroy(err);
        return;
      }
      record.status = 502;
      res.writeHead(502, { 'content-type': 'text/plain' }).end(`bad gateway: ${err.message}\n`);
    });
    req.pipe(upstream);
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;

  const consulGet = async <T>(path: string, timeoutMs: number): Promise<{ body: T; index: number }> => {
    const res = await fetch(`${opts.consulAddress}${path}`, {
      headers: consulHeaders,
      signal: AbortSignal.any([abort.signal, AbortSignal.timeout(timeoutMs)]),
    });
    if (res.status !== 200) throw new Error(`GET ${path}: ${res.status} ${await res.text()}`);
    return { body: (await res.json()) as T, index: Number(res.headers.get('x-consul-index') ?? '0') };
  };

  const rebuild = async (checks: HealthCheck[]): Promise<void> => {
    const routable = routableInstances(checks, { tagPrefix, serviceStatus, checksRequired });
    const instances: CatalogService[] = [];
    for (const name of [...routable.keys()].sort()) {
      const { body } = await consulGet<CatalogService[]>(
        `/v1/catalog/service/${encodeURIComponent(name)}?consistent`,
        CATALOG_TIMEOUT_MS,
      );
      instances.push(...body);
    }
    const next = buildTable(instances, routable, tagPrefix);
    const at = Date.now();
    const before = targetKeys(table);
    const after = targetKeys(next);
    for (const [key, value] of after) if (!before.has(key)) changes.push({ at, change: 'added', ...value });
    for (const [key, value] of before) if (!after.has(key)) changes.push({ at, change: 'removed', ...value });
    table = next;
    rebuildCount++;
    for (const listener of [...listeners]) listener();
  };

  const watch = async (): Promise<void> => {
    let index = 0;
    while (!closed) {
      try {
        const query = index > 0 ? `&index=${index}&wait=${WATCH_WAIT_SECONDS}s` : '';
        const { body, index: next } = await consulGet<HealthCheck[]>(
          `/v1/health/state/any?consistent${query}`,
          (WATCH_WAIT_SECONDS + WATCH_WAIT_SECONDS / 16 + 5) * 1000,
        );
        await rebuild(body);
        // An index that went backwards (a restored snapshot) starts over (docs/protocols.md §1.1).
        // Kept only once the table is built, so a failed rebuild is retried at once.
        index = next < index ? 0 : next;
        watchError = undefined;
      } catch (err) {
        if (closed) return;
        watchError = err instanceof Error ? err.message : String(err);
        await new Promise((r) => setTimeout(r, WATCH_ERROR_DELAY_MS));
      }
    }
  };

  const waitUntil = <T>(what: string, probe: () => T | undefined, timeoutMs: number): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      const check = (): boolean => {
        const value = probe();
        if (value === undefined) return false;
        finish();
        resolve(value);
        return true;
      };
      const timer = setTimeout(() => {
        finish();
        const problem = watchError ? `; last Consul error: ${watchError}` : '';
        reject(
          new Error(
            `timed out after ${timeoutMs} ms waiting for ${what}${problem}\nrouting table:\n${describeTable(flatten(table))}`,
          ),
        );
      }, timeoutMs);
      const finish = (): void => {
        clearTimeout(timer);
        listeners.delete(onChange);
      };
      const onChange = (): void => {
        if (closed) {
          finish();
          reject(new Error(`router closed while waiting for ${what}`));
          return;
        }
        check();
      };
      listeners.add(onChange);
      check();
    });

  const watching = watch();
  try {
    await waitUntil(
      'the first routing table from Consul',
      () => (rebuildCount > 0 ? true : undefined),
      FIRST_TABLE_TIMEOUT_MS,
    );
  } catch (err) {
    closed = true;
    abort.abort();
    await watching;
    await new Promise<void>((resolve) => server.close(() => resolve()));
    throw err;
  }

  const lookup = (host: string, path: string): RouteMatch | undefined => lookupIn(table, host, path, port);

  return {
    port,
    url: `http://127.0.0.1:${port}`,
    table: () => flatten(table),
    lookup,
    waitForRoute(host, path, { service, timeoutMs = DEFAULT_WAIT_FOR_ROUTE_MS } = {}) {
      const what = `a route for ${host}${path}${service === undefined ? '' : ` to ${service} only`}`;
      return waitUntil(
        what,
        () => {
          const match = lookup(host, path);
          if (!match) return undefined;
          if (service !== undefined && !match.targets.every((t) => t.service === service)) return undefined;
          return match;
        },
        timeoutMs,
      );
    },
    routeChanges: () => changes.map((c) => ({ ...c })),
    routeLiveAt: (host, path, service, sinceMs = 0) =>
      changes.find(
        (c) => c.change === 'added' && c.at >= sinceMs && c.host === host && c.path === path && c.service === service,
      )?.at,
    requests: () => log.map((r) => ({ ...r, backend: r.backend && { ...r.backend } })),
    rebuilds: () => rebuildCount,
    lastError: () => watchError,
    get: (host, path, { userAgent = 'fabio-router-test' } = {}) => getThrough(port, host, path, userAgent),
    describe: () => describeTable(flatten(table)),
    async close() {
      if (closed) return;
      closed = true;
      abort.abort();
      for (const listener of [...listeners]) listener();
      await watching;
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

function randomIndex(n: number): number {
  return Math.floor(Math.random() * n);
}

function getThrough(
  port: number,
  host: string,
  path: string,
  userAgent: string,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      {
        host: '127.0.0.1',
        port,
        path,
        method: 'GET',
        agent: false,
        timeout: 10_000,
        headers: { host: `${host}:${port}`, 'user-agent': userAgent },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`GET ${host}${path}: no answer within 10000 ms`)));
    req.on('error', reject);
    req.end();
  });
}

// ---------------------------------------------------------------------------------------------
// Around the router: app backends, routed registrations, telling requests apart

/** A route tag for `host` and `path` (default `/`). */
export function routeTag(host: string, path = '/', prefix: string = DEFAULT_ROUTE_TAG_PREFIX): string {
  return `${prefix}${host}${path}`;
}

export interface AppBackend {
  name: string;
  port: number;
  /** What it answers on every path: `app <name>`. */
  answer: string;
  /** Requests it received: Host header and path. */
  requests(): Array<{ host: string; path: string }>;
  close(): Promise<void>;
}

/** A tiny HTTP app on a free port that answers `app <name>` (200) on every path. */
export async function startAppBackend(name: string): Promise<AppBackend> {
  const answer = `app ${name}`;
  const seen: Array<{ host: string; path: string }> = [];
  const server = createServer((req, res) => {
    seen.push({ host: req.headers.host ?? '', path: req.url ?? '' });
    req.resume();
    res.writeHead(200, { 'content-type': 'text/plain' }).end(answer);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  return {
    name,
    port: (server.address() as AddressInfo).port,
    answer,
    requests: () => seen.map((r) => ({ ...r })),
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

export type CheckStatus = 'passing' | 'warning' | 'critical';

export interface RoutedServiceRegistration {
  /** Service ID; also the service name unless `name` is given. */
  id: string;
  name?: string;
  /** Default 127.0.0.1. */
  address?: string;
  port: number;
  tags: string[];
  /**
   * One TTL check per entry, registered with that status (default one `passing` check). Their ids
   * are `<id>:check<n>` from 1; change them with `setCheckStatus`.
   */
  checks?: CheckStatus[];
}

/**
 * Registers (or re-registers, replacing its tags) a service instance in the agent with TTL checks
 * in the given states, as an application with health checks would. The checks are part of every
 * registration, so a change of tags reaches the health state the router watches.
 */
export async function registerRoutedService(
  consulAddress: string,
  service: RoutedServiceRegistration,
): Promise<string[]> {
  const statuses = service.checks ?? ['passing'];
  const checkIds = statuses.map((_, i) => `${service.id}:check${i + 1}`);
  const res = await fetch(`${consulAddress}/v1/agent/service/register`, {
    method: 'PUT',
    body: JSON.stringify({
      ID: service.id,
      Name: service.name ?? service.id,
      Address: service.address ?? '127.0.0.1',
      Port: service.port,
      Tags: service.tags,
      Checks: statuses.map((status, i) => ({
        CheckID: checkIds[i],
        Name: `${service.id} check ${i + 1}`,
        TTL: '1h',
        Status: status,
      })),
    }),
  });
  if (res.status !== 200) throw new Error(`registering ${service.id}: ${res.status} ${await res.text()}`);
  return checkIds;
}

/** Sets a TTL check's status (`registerRoutedService`'s check ids). */
export async function setCheckStatus(consulAddress: string, checkId: string, status: CheckStatus): Promise<void> {
  const res = await fetch(`${consulAddress}/v1/agent/check/update/${encodeURIComponent(checkId)}`, {
    method: 'PUT',
    body: JSON.stringify({ Status: status, Output: `set by the test: ${status}` }),
  });
  if (res.status !== 200) throw new Error(`updating check ${checkId}: ${res.status} ${await res.text()}`);
}

/** User-Agent of Pebble's validation authority (its HTTP-01 requests). */
export const PEBBLE_VALIDATION_USER_AGENT = 'LetsEncrypt-Pebble-VA';
/** User-Agent of consul-acme's pre-flight probe (src/adapters/net/http-preflight.ts). */
export const PREFLIGHT_USER_AGENT = 'consul-acme-preflight';
export const ACME_CHALLENGE_PATH = '/.well-known/acme-challenge/';

/** Who sent a request to the challenge path: the CA validating, consul-acme's pre-flight probe, or anyone else. */
export function challengeRequestOrigin(
  request: Pick<RoutedRequest, 'path' | 'userAgent'>,
): 'ca' | 'preflight' | 'other' {
  if (!request.path.startsWith(ACME_CHALLENGE_PATH)) return 'other';
  if (request.userAgent.includes(PEBBLE_VALIDATION_USER_AGENT)) return 'ca';
  if (request.userAgent === PREFLIGHT_USER_AGENT) return 'preflight';
  return 'other';
}

/**
 * Whether the answer to a challenge request was the key authorization of the token in its path
 * (`<token>.<account key thumbprint>`, RFC 8555 §8.1) rather than something else answering 200.
 */
export function answeredKeyAuthorization(request: Pick<RoutedRequest, 'path' | 'status' | 'body'>): boolean {
  const token = request.path.slice(ACME_CHALLENGE_PATH.length).split('?')[0] ?? '';
  const body = request.body.trim();
  return request.status === 200 && token !== '' && body.startsWith(`${token}.`) && body.length > token.length + 1;
}
