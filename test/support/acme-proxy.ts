/**
 * A small HTTPS proxy in front of Pebble's ACME front end (the WFE), so a test sees exactly what
 * the CA received and can make the CA answer what Pebble never would (a `rateLimited` problem).
 *
 * - TLS with its own certificate (openssl, SAN localhost + 127.0.0.1, as test/support/pebble.ts
 *   does); give the service `caBundlePem` (this certificate + Pebble's WFE certificate).
 * - Every request is forwarded to Pebble with its Host header unchanged (Pebble builds its URLs
 *   and checks the JWS `url` from the Host header, so the client's signatures stay valid), and
 *   Pebble's own origin is rewritten to the proxy's in every response body and in the Location
 *   and Link headers, so the client never talks to Pebble directly.
 * - Every request is recorded: arrival time, method, path, endpoint (directory names such as
 *   `newOrder`, else `finalize`, `order`, `authorization`, `challenge`, `certificate`,
 *   `account`, `other`), the identifiers it concerns (newOrder: from the JWS payload, which is
 *   base64url JSON in the flattened JWS body; finalize and order: the identifiers of the order
 *   whose URL it is), the status and Location answered, and whether the proxy answered itself.
 * - `rateLimitNewOrders(rule)`: newOrder POSTs the rule matches are answered, as a CA in a rate
 *   limit would, with HTTP 429, `Retry-After`, `application/problem+json`
 *   `{"type":"urn:ietf:params:acme:error:rateLimited","detail":…,"status":429}` and a fresh
 *   `Replay-Nonce` (taken from a HEAD to Pebble's newNonce), for `retryAfterSeconds` from the
 *   first refusal (the limit then frees, as the CA promised), or until `clearRateLimits()`.
 * - `failNext(fault)`: the next `times` requests to an endpoint (`directory`, `newNonce`, `order`,
 *   `authorization`, `certificate`, …) are answered by the proxy with `status` (503 by default)
 *   and a `serverInternal` problem, a fresh `Replay-Nonce` and, if asked, `Retry-After`; Pebble
 *   never sees them.
 * - `stallNext(stall)`: the next `times` requests to an endpoint are never forwarded nor answered:
 *   the proxy holds them until the client gives up (its request timeout) or `holdMs` passes, then
 *   drops the connection.
 * - `onAnswered(listener)`: called as soon as the proxy has sent an answer (forwarded or its own),
 *   with its record, e.g. to abort a client right after Pebble answered its finalize.
 *
 * Every upstream request has a deadline; an unreachable Pebble is answered 502 and recorded.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, request as httpsRequest, type Server } from 'node:https';
import type { IncomingHttpHeaders, IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeLocalhostCertificate } from './tls.js';

const UPSTREAM_TIMEOUT_MS = 15_000;
const DEFAULT_STALL_MS = 10_000;
const SERVER_INTERNAL_TYPE = 'urn:ietf:params:acme:error:serverInternal';
export const RATE_LIMITED_TYPE = 'urn:ietf:params:acme:error:rateLimited';

export interface AcmeProxyRequest {
  /** Arrival order, from 1. */
  seq: number;
  /** Date.now() when the whole request had arrived. */
  receivedAt: number;
  method: string;
  path: string;
  endpoint: string;
  /** The identifiers the request concerns (see the module comment); empty when unknown. */
  identifiers: string[];
  /** The status answered; undefined while in flight or when stalled. */
  status: number | undefined;
  /** The Location header answered (the proxy's URL), e.g. a new order's URL. */
  location: string | undefined;
  /** True when the proxy answered (or stalled) itself: an injected rate limit, fault or stall. */
  injected: boolean;
  /** What the proxy injected, e.g. `status 503` or `stalled`; undefined when Pebble answered. */
  fault: string | undefined;
  error: string | undefined;
}

export interface RateLimitRule {
  /** Refuse only newOrders naming this identifier; every newOrder when omitted. */
  identifier?: string;
  /** The problem's detail, e.g. `too many new orders (300) from this account in the last 3h0m0s`. */
  detail: string;
  retryAfterSeconds: number;
}

export interface Fault {
  /** Endpoint name as recorded: `directory`, `newNonce`, `order`, `authorization`, `certificate`, … */
  endpoint: string;
  /** Status to answer; 503 by default. */
  status?: number;
  /** How many matching requests get it; 1 by default. */
  times?: number;
  /** Let this many matching requests through first (e.g. 1 to spare an authorization's first fetch); 0 by default. */
  after?: number;
  /** Sent as `Retry-After` (seconds) when given. */
  retryAfterSeconds?: number;
}

export interface Stall {
  endpoint: string;
  times?: number;
  after?: number;
  /** The longest a request is held before its connection is dropped; 10 s by default. */
  holdMs?: number;
}

interface ActiveFault {
  endpoint: string;
  skip: number;
  left: number;
  apply: (record: AcmeProxyRequest, req: IncomingMessage, res: ServerResponse) => Promise<void>;
}

interface ActiveRule extends RateLimitRule {
  /** Date.now() of the first refusal; the rule ends retryAfterSeconds later. */
  firstRefusalAt: number | undefined;
}

export interface AcmeProxy {
  directoryUrl: string;
  /** The proxy's certificate followed by Pebble's WFE certificate. */
  caBundlePem: string;
  /** Every request so far (copies), in arrival order. */
  requests(): AcmeProxyRequest[];
  /** newOrder POSTs Pebble received (forwarded, not refused by the proxy), optionally for one identifier. */
  newOrders(identifier?: string): AcmeProxyRequest[];
  /** newOrder POSTs the proxy answered with a rateLimited problem, optionally for one identifier. */
  refusedNewOrders(identifier?: string): AcmeProxyRequest[];
  /** finalize POSTs Pebble received, optionally for one identifier. */
  finalizations(identifier?: string): AcmeProxyRequest[];
  rateLimitNewOrders(rule: RateLimitRule): void;
  /** Each rule that has refused: from its first refusal to when it ends (Date.now() values). */
  rateLimitWindows(): Array<{ rule: RateLimitRule; from: number; to: number }>;
  clearRateLimits(): void;
  /** Answers the next `times` requests to `fault.endpoint` with `fault.status` (see the module comment). */
  failNext(fault: Fault): void;
  /** Holds the next `times` requests to `stall.endpoint` unanswered (see the module comment). */
  stallNext(stall: Stall): void;
  /**
   * Holds the next request to `endpoint` (after skipping `after` of them) until `until` settles,
   * then forwards it as usual: to make two clients' requests arrive in a chosen order.
   */
  holdNext(hold: { endpoint: string; after?: number; until: Promise<unknown> }): void;
  /** Faults and stalls not used up yet, e.g. to check a test's fault was really hit. */
  pendingFaults(): Array<{ endpoint: string; left: number }>;
  /** Calls `listener` with each request's record once it has been answered; returns the unsubscribe. */
  onAnswered(listener: (request: AcmeProxyRequest) => void): () => void;
  close(): Promise<void>;
}

export interface StartAcmeProxyOptions {
  /** Pebble's directory URL, e.g. https://127.0.0.1:14000/dir. */
  directoryUrl: string;
  /** Pebble's WFE certificate, to trust toward Pebble. */
  caBundlePem: string;
}

/** The proxy's own certificate (made in a temporary folder that is removed at once). */
async function localhostCertificate(): Promise<{ certPem: string; keyPem: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'acme-proxy-'));
  try {
    return await makeLocalhostCertificate(dir, 'acme-proxy-local');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

interface UpstreamResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

/** Reads what acme-client sends: a flattened JWS whose payload is base64url JSON (empty for POST-as-GET). */
function jwsPayload(body: Buffer): unknown {
  try {
    const jws = JSON.parse(body.toString('utf8')) as { payload?: unknown };
    if (typeof jws.payload !== 'string' || jws.payload === '') return undefined;
    return JSON.parse(Buffer.from(jws.payload, 'base64url').toString('utf8')) as unknown;
  } catch {
    return undefined;
  }
}

function identifiersOf(value: unknown): string[] {
  if (typeof value !== 'object' || value === null) return [];
  const identifiers = (value as { identifiers?: unknown }).identifiers;
  if (!Array.isArray(identifiers)) return [];
  return identifiers
    .map((i: unknown) => (typeof i === 'object' && i !== null ? (i as { value?: unknown }).value : undefined))
    .filter((v): v is string => typeof v === 'string')
    .map((v) => v.toLowerCase());
}

function endpointOfPath(path: string): string {
  const p = path.toLowerCase();
  if (/finali[sz]e/.test(p)) return 'finalize';
  if (/chal/.test(p)) return 'challenge';
  if (/authz/.test(p)) return 'authorization';
  if (/cert/.test(p)) return 'certificate';
  if (/order/.test(p)) return 'order';
  if (/acct|account|reg/.test(p)) return 'account';
  return 'other';
}

export async function startAcmeProxy(opts: StartAcmeProxyOptions): Promise<AcmeProxy> {
  const upstream = new URL(opts.directoryUrl);
  const upstreamOrigin = upstream.origin;
  const tls = await localhostCertificate();
  const log: AcmeProxyRequest[] = [];
  /** Directory path → resource name (newNonce, newAccount, newOrder, …), learned from Pebble. */
  const directoryPaths = new Map<string, string>([[upstream.pathname, 'directory']]);
  /** Order URL path or finalize URL path → the order's identifiers. */
  const orderIdentifiers = new Map<string, string[]>();
  let rules: ActiveRule[] = [];
  const windows: Array<{ rule: RateLimitRule; from: number; to: number }> = [];
  let seq = 0;
  let proxyOrigin = '';
  let faults: ActiveFault[] = [];
  const listeners = new Set<(request: AcmeProxyRequest) => void>();
  const answered = (record: AcmeProxyRequest): void => {
    for (const listener of listeners) {
      try {
        listener({ ...record, identifiers: [...record.identifiers] });
      } catch {
        // a test's listener must not break the proxy
      }
    }
  };

  const send = (method: string, path: string, headers: OutgoingHttpHeaders, body?: Buffer): Promise<UpstreamResponse> =>
    new Promise((resolve, reject) => {
      const req = httpsRequest(
        {
          host: upstream.hostname,
          port: upstream.port,
          method,
          path,
          headers,
          ca: opts.caBundlePem,
          agent: false,
          timeout: UPSTREAM_TIMEOUT_MS,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () =>
            resolve({ status: res.statusCode ?? 502, headers: res.headers, body: Buffer.concat(chunks) }),
          );
          res.on('error', reject);
        },
      );
      req.on('timeout', () => req.destroy(new Error(`Pebble gave no answer within ${UPSTREAM_TIMEOUT_MS} ms`)));
      req.on('error', reject);
      req.end(body);
    });

  // Learn the directory's resource paths (the Host decides the origin Pebble writes, not the path).
  const directory = await send('GET', upstream.pathname, { host: upstream.host });
  if (directory.status !== 200) throw new Error(`Pebble's directory answered ${directory.status}`);
  for (const [name, value] of Object.entries(JSON.parse(directory.body.toString('utf8')) as Record<string, unknown>)) {
    if (typeof value === 'string' && value.startsWith('http')) directoryPaths.set(new URL(value).pathname, name);
  }
  const newNoncePath = [...directoryPaths].find(([, name]) => name === 'newNonce')?.[0];

  const rewrite = (text: string): string => text.split(upstreamOrigin).join(proxyOrigin);

  const freshNonce = async (host: string): Promise<string | undefined> => {
    if (newNoncePath === undefined) return undefined;
    const res = await send('HEAD', newNoncePath, { host });
    const nonce = res.headers['replay-nonce'];
    return typeof nonce === 'string' ? nonce : undefined;
  };

  const activeRuleFor = (identifiers: string[], now: number): ActiveRule | undefined => {
    rules = rules.filter((r) => r.firstRefusalAt === undefined || now < r.firstRefusalAt + r.retryAfterSeconds * 1000);
    return rules.find((r) => r.identifier === undefined || identifiers.includes(r.identifier.toLowerCase()));
  };

  const refuse = async (
    record: AcmeProxyRequest,
    rule: ActiveRule,
    req: IncomingMessage,
    res: ServerResponse,
  ): Promise<void> => {
    if (rule.firstRefusalAt === undefined) {
      rule.firstRefusalAt = record.receivedAt;
      const { firstRefusalAt: _first, ...plain } = rule;
      windows.push({ rule: plain, from: record.receivedAt, to: record.receivedAt + rule.retryAfterSeconds * 1000 });
    }
    record.injected = true;
    const nonce = await freshNonce(req.headers.host ?? upstream.host).catch(() => undefined);
    const body = JSON.stringify({ type: RATE_LIMITED_TYPE, detail: rule.detail, status: 429 });
    record.status = 429;
    res.writeHead(429, {
      'content-type': 'application/problem+json',
      'retry-after': String(rule.retryAfterSeconds),
      'cache-control': 'no-store',
      'content-length': Buffer.byteLength(body),
      ...(nonce === undefined ? {} : { 'replay-nonce': nonce }),
    });
    res.end(body);
    answered(record);
  };

  const injectStatus =
    (fault: Fault) =>
    async (record: AcmeProxyRequest, req: IncomingMessage, res: ServerResponse): Promise<void> => {
      const status = fault.status ?? 503;
      record.injected = true;
      record.fault = `status ${status}`;
      const nonce = await freshNonce(req.headers.host ?? upstream.host).catch(() => undefined);
      const body = JSON.stringify({
        type: SERVER_INTERNAL_TYPE,
        detail: `injected ${status} by the test proxy`,
        status,
      });
      record.status = status;
      res.writeHead(status, {
        'content-type': 'application/problem+json',
        'cache-control': 'no-store',
        'content-length': Buffer.byteLength(body),
        ...(fault.retryAfterSeconds === undefined ? {} : { 'retry-after': String(fault.retryAfterSeconds) }),
        ...(nonce === undefined ? {} : { 'replay-nonce': nonce }),
      });
      res.end(req.method === 'HEAD' ? undefined : body);
      answered(record);
    };

  const injectStall =
    (stall: Stall) =>
    async (record: AcmeProxyRequest, req: IncomingMessage, res: ServerResponse): Promise<void> => {
      record.injected = true;
      record.fault = 'stalled';
      record.error = 'stalled: never forwarded nor answered';
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, stall.holdMs ?? DEFAULT_STALL_MS);
        res.once('close', () => {
          clearTimeout(timer);
          resolve();
        });
      });
      req.socket.destroy();
    };

  let holds: Array<{ endpoint: string; skip: number; until: Promise<unknown> }> = [];
  const takeHold = (endpoint: string): Promise<unknown> | undefined => {
    const hold = holds.find((h) => h.endpoint === endpoint);
    if (hold === undefined) return undefined;
    if (hold.skip > 0) {
      hold.skip--;
      return undefined;
    }
    holds = holds.filter((h) => h !== hold);
    return hold.until;
  };

  const takeFault = (endpoint: string): ActiveFault | undefined => {
    const fault = faults.find((f) => f.endpoint === endpoint && f.left > 0);
    if (fault === undefined) return undefined;
    if (fault.skip > 0) {
      fault.skip--;
      return undefined;
    }
    fault.left--;
    faults = faults.filter((f) => f.left > 0);
    return fault;
  };

  const handle = async (req: IncomingMessage, res: ServerResponse, body: Buffer): Promise<void> => {
    const path = req.url ?? '/';
    const pathname = path.split('?')[0] ?? path;
    const method = req.method ?? 'GET';
    const endpoint = directoryPaths.get(pathname) ?? endpointOfPath(pathname);
    const identifiers =
      endpoint === 'newOrder' && method === 'POST'
        ? identifiersOf(jwsPayload(body))
        : (orderIdentifiers.get(pathname) ?? []);
    const record: AcmeProxyRequest = {
      seq: ++seq,
      receivedAt: Date.now(),
      method,
      path,
      endpoint,
      identifiers,
      status: undefined,
      location: undefined,
      injected: false,
      fault: undefined,
      error: undefined,
    };
    log.push(record);

    const fault = takeFault(endpoint);
    if (fault) {
      await fault.apply(record, req, res);
      return;
    }
    const held = takeHold(endpoint);
    if (held)
      await held.then(
        () => undefined,
        () => undefined,
      );

    if (endpoint === 'newOrder' && method === 'POST') {
      const rule = activeRuleFor(identifiers, record.receivedAt);
      if (rule) {
        await refuse(record, rule, req, res);
        return;
      }
    }

    const headers: OutgoingHttpHeaders = { ...req.headers, connection: 'close' };
    delete headers['content-length'];
    if (body.length > 0) headers['content-length'] = body.length;
    let answer: UpstreamResponse;
    try {
      answer = await send(method, path, headers, method === 'GET' || method === 'HEAD' ? undefined : body);
    } catch (err) {
      record.status = 502;
      record.error = err instanceof Error ? err.message : String(err);
      if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' });
      res.end(`acme proxy: ${record.error}\n`);
      answered(record);
      return;
    }

    // Remember which identifiers an order (and its finalize URL) belongs to.
    const contentType = String(answer.headers['content-type'] ?? '');
    if (contentType.includes('json') && answer.body.length > 0) {
      try {
        const object = JSON.parse(answer.body.toString('utf8')) as { identifiers?: unknown; finalize?: unknown };
        const ids = identifiersOf(object);
        if (ids.length > 0) {
          if (typeof object.finalize === 'string') orderIdentifiers.set(new URL(object.finalize).pathname, ids);
          const location = answer.headers.location;
          if (typeof location === 'string') orderIdentifiers.set(new URL(location, upstreamOrigin).pathname, ids);
          if (endpoint === 'order') orderIdentifiers.set(pathname, ids);
        }
      } catch {
        // not an ACME object: nothing to learn
      }
    }

    const outHeaders: Record<string, string | string[] | number> = {};
    for (const [name, value] of Object.entries(answer.headers)) {
      if (value === undefined || ['content-length', 'transfer-encoding', 'connection', 'keep-alive'].includes(name))
        continue;
      if (name === 'location' || name === 'link') {
        outHeaders[name] = Array.isArray(value) ? value.map(rewrite) : rewrite(value);
      } else {
        outHeaders[name] = value;
      }
    }
    const isText = /json|text/.test(contentType) || contentType.includes('pem');
    const outBody = isText ? Buffer.from(rewrite(answer.body.toString('utf8')), 'utf8') : answer.body;
    if (method !== 'HEAD') outHeaders['content-length'] = outBody.length;
    record.status = answer.status;
    if (typeof outHeaders.location === 'string') record.location = outHeaders.location;
    res.writeHead(answer.status, outHeaders);
    res.end(method === 'HEAD' ? undefined : outBody);
    answered(record);
  };

  const server: Server = createServer({ key: tls.keyPem, cert: tls.certPem }, (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      handle(req, res, Buffer.concat(chunks)).catch((err: unknown) => {
        if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
        res.end(`acme proxy failed: ${err instanceof Error ? err.message : String(err)}\n`);
      });
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  proxyOrigin = `https://127.0.0.1:${port}`;

  const copies = (filter: (r: AcmeProxyRequest) => boolean): AcmeProxyRequest[] =>
    log.filter(filter).map((r) => ({ ...r, identifiers: [...r.identifiers] }));
  const concerns = (r: AcmeProxyRequest, identifier: string | undefined): boolean =>
    identifier === undefined || r.identifiers.includes(identifier.toLowerCase());

  return {
    directoryUrl: `${proxyOrigin}${upstream.pathname}`,
    caBundlePem: `${tls.certPem.trimEnd()}\n${opts.caBundlePem.trimEnd()}\n`,
    requests: () => copies(() => true),
    newOrders: (identifier) =>
      copies((r) => r.endpoint === 'newOrder' && r.method === 'POST' && !r.injected && concerns(r, identifier)),
    refusedNewOrders: (identifier) => copies((r) => r.endpoint === 'newOrder' && r.injected && concerns(r, identifier)),
    finalizations: (identifier) =>
      copies((r) => r.endpoint === 'finalize' && r.method === 'POST' && !r.injected && concerns(r, identifier)),
    rateLimitNewOrders(rule) {
      rules.push({ ...rule, firstRefusalAt: undefined });
    },
    rateLimitWindows: () => windows.map((w) => ({ ...w, rule: { ...w.rule } })),
    clearRateLimits() {
      rules = [];
    },
    failNext(fault) {
      faults.push({
        endpoint: fault.endpoint,
        skip: fault.after ?? 0,
        left: fault.times ?? 1,
        apply: injectStatus(fault),
      });
    },
    holdNext(hold) {
      holds.push({ endpoint: hold.endpoint, skip: hold.after ?? 0, until: hold.until });
    },
    stallNext(stall) {
      faults.push({
        endpoint: stall.endpoint,
        skip: stall.after ?? 0,
        left: stall.times ?? 1,
        apply: injectStall(stall),
      });
    },
    pendingFaults: () => faults.map((f) => ({ endpoint: f.endpoint, left: f.left })),
    onAnswered(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
