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
 *   whose URL it is), the status answered, and whether the proxy answered itself.
 * - `rateLimitNewOrders(rule)`: newOrder POSTs the rule matches are answered, as a CA in a rate
 *   limit would, with HTTP 429, `Retry-After`, `application/problem+json`
 *   `{"type":"urn:ietf:params:acme:error:rateLimited","detail":…,"status":429}` and a fresh
 *   `Replay-Nonce` (taken from a HEAD to Pebble's newNonce), for `retryAfterSeconds` from the
 *   first refusal (the limit then frees, as the CA promised), or until `clearRateLimits()`.
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
  /** The status answered; undefined while in flight. */
  status: number | undefined;
  /** True when the proxy answered itself (an injected rate limit). */
  injected: boolean;
  error: string | undefined;
}

export interface RateLimitRule {
  /** Refuse only newOrders naming this identifier; every newOrder when omitted. */
  identifier?: string;
  /** The problem's detail, e.g. `too many new orders (300) from this account in the last 3h0m0s`. */
  detail: string;
  retryAfterSeconds: number;
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
      injected: false,
      error: undefined,
    };
    log.push(record);

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
    res.writeHead(answer.status, outHeaders);
    res.end(method === 'HEAD' ? undefined : outBody);
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
      copies((r) => r.endpoint === 'finalize' && r.method === 'POST' && concerns(r, identifier)),
    rateLimitNewOrders(rule) {
      rules.push({ ...rule, firstRefusalAt: undefined });
    },
    rateLimitWindows: () => windows.map((w) => ({ ...w, rule: { ...w.rule } })),
    clearRateLimits() {
      rules = [];
    },
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
