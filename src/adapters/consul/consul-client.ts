/**
 * The Consul client factory, the one place Consul errors are classified, the one blocking-query
 * helper every watch loop uses, and the token bucket that rate-limits those loops.
 *
 * Facts relied on (docs/protocols.md §1, §2): the `consul` npm package returns only the body
 * unless a `ctx` EventEmitter with `includeResponse: true` is passed (then it resolves
 * `[res, body]`), and `ctx.emit('cancel')` aborts the request. Its errors are papi errors with
 * `statusCode`, `response` and flags such as `isAbort`/`isTimeout`.
 *
 * The token: every call of the package copies its options' defaults (`_defaults`) when it is made,
 * so the default `token` is a getter that asks the TokenSource; a request Consul refuses with 403 is
 * sent once more when re-reading the token source gives a different token (papi's `onResponse`
 * extension and `request.retry()`, docs/protocols.md §2), so a token rotated between two polls of
 * its file costs no failed request.
 */
import { EventEmitter } from 'node:events';
import { readFileSync } from 'node:fs';
import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import type { IncomingMessage } from 'node:http';
import Consul from 'consul';
import { AbortedError, ConsulAcmeError } from '../../errors.js';
import { describeTlsFailure, type ClientSettings } from '../tls-client.js';
import { staticTokenSource, type TokenSource } from '../token-source.js';

export type { Consul };

/** How to reach Consul (`address` without the `/v1`; the token is sent as `X-Consul-Token`). */
export interface ConsulConnection extends ClientSettings {
  /** Datacenter for every request; the agent's own when unset. */
  datacenter?: string;
  /** Timeout of every request that does not set its own (blocking queries do). */
  requestTimeoutMs?: number;
  /** Most connections open to Consul at once; further requests wait for one. */
  maxSockets?: number;
}

/** Default per-request timeout; a hung Consul must not hang a worker or a lock renewal. */
export const DEFAULT_CONSUL_REQUEST_TIMEOUT_MS = 30_000;

/**
 * Most connections to Consul at once. The agent closes connections from one client address beyond
 * `limits.http_max_conns_per_client` (200 by default, shared with every other client on the same
 * host: docs/protocols.md §1.11), so a burst of requests must queue here rather than open a socket
 * each. The few blocking queries (catalog, policy, challenges) hold one each.
 */
export const DEFAULT_CONSUL_MAX_SOCKETS = 32;

type PackageOptions = NonNullable<ConstructorParameters<typeof Consul>[0]>;
/** Constructor options the package accepts but its ConsulOptions type leaves out (type gap): baseUrl, defaults.timeout. */
type ConsulConstructorOptions = Omit<PackageOptions, 'defaults'> & {
  baseUrl: string;
  defaults: NonNullable<PackageOptions['defaults']> & { timeout?: number };
};

/** Creates a client for `conn`. Throws CONFIG_INVALID for an address that is not an http(s) URL. */
export function createConsulClient(conn: ConsulConnection): Consul {
  let url: URL;
  try {
    url = new URL(conn.address);
  } catch (err) {
    throw new ConsulAcmeError('CONFIG_INVALID', `Consul address ${JSON.stringify(conn.address)} is not a URL`, {
      cause: err,
    });
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new ConsulAcmeError(
      'CONFIG_INVALID',
      `Consul address ${JSON.stringify(conn.address)} must start with http:// or https://`,
    );
  }
  const tokens = conn.tokenSource ?? staticTokenSource(conn.token, 'CONSUL_HTTP_TOKEN');
  const options: ConsulConstructorOptions = {
    baseUrl: `${conn.address.replace(/\/+$/, '')}/v1`,
    defaults: {
      timeout: conn.requestTimeoutMs ?? DEFAULT_CONSUL_REQUEST_TIMEOUT_MS,
      ...(conn.datacenter ? { dc: conn.datacenter } : {}),
    },
  };
  const maxSockets = conn.maxSockets ?? DEFAULT_CONSUL_MAX_SOCKETS;
  options.agent =
    url.protocol === 'https:'
      ? new HttpsAgent({
          keepAlive: true,
          maxSockets,
          ...(conn.caCertPath ? { ca: readFileSync(conn.caCertPath) } : {}),
          ...(conn.clientCertPath ? { cert: readFileSync(conn.clientCertPath) } : {}),
          ...(conn.clientKeyPath ? { key: readFileSync(conn.clientKeyPath) } : {}),
          ...(conn.tlsServerName ? { servername: conn.tlsServerName } : {}),
        })
      : new HttpAgent({ keepAlive: true, maxSockets });
  const consul = new Consul(options);
  followTokenSource(consul, tokens);
  return consul;
}

/** The parts of papi's request pipeline the token retry uses (docs/protocols.md §2). */
interface PapiRequest {
  opts: { headers?: Record<string, unknown> };
  res?: { statusCode?: number };
  state: Record<string, unknown>;
  retry(): void;
}
type PapiNext = () => void;
interface PapiClient {
  _defaults?: Record<string, unknown>;
  _ext(event: 'onResponse', callback: (request: PapiRequest, next: PapiNext) => void): void;
}

const TOKEN_HEADER = 'x-consul-token';

/**
 * Makes every request carry the token source's current token, and sends a request refused with
 * 403 once more when the token source, read again, has another token.
 */
function followTokenSource(consul: Consul, tokens: TokenSource): void {
  const client = consul as unknown as PapiClient;
  const defaults = client._defaults ?? {};
  Object.defineProperty(defaults, 'token', { enumerable: true, configurable: true, get: () => tokens.current() });
  client._defaults = defaults;
  client._ext('onResponse', (request, next) => {
    if (request.res?.statusCode !== 403 || request.state.tokenRetried === true) {
      next();
      return;
    }
    const used = request.opts.headers?.[TOKEN_HEADER];
    void tokens.refresh().then(() => {
      const current = tokens.current();
      if (current === '' || current === used) {
        next();
        return;
      }
      request.state.tokenRetried = true;
      request.opts.headers = { ...request.opts.headers, [TOKEN_HEADER]: current };
      try {
        request.retry();
      } catch {
        next(); // a streamed body cannot be sent again (none of ours is streamed)
      }
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Error classification

interface PapiLikeError {
  message?: unknown;
  statusCode?: unknown;
  response?: { statusCode?: unknown; body?: unknown };
  isAbort?: unknown;
  code?: unknown;
}

/** The HTTP status of a failed Consul call, or undefined when no response was received. */
export function consulErrorStatus(err: unknown): number | undefined {
  if (typeof err !== 'object' || err === null) return undefined;
  const e = err as PapiLikeError;
  if (typeof e.statusCode === 'number') return e.statusCode;
  if (typeof e.response?.statusCode === 'number') return e.response.statusCode;
  return undefined;
}

/** The response body of a failed Consul call as text ('' when none). */
function consulErrorBody(err: unknown): string {
  if (typeof err !== 'object' || err === null) return '';
  const body = (err as PapiLikeError).response?.body;
  if (typeof body === 'string') return body;
  if (Buffer.isBuffer(body)) return body.toString('utf8');
  return '';
}

/** The response body of a failed Consul call as JSON (papi may have parsed it already); undefined when it is not. */
export function consulErrorJson(err: unknown): unknown {
  const body = typeof err === 'object' && err !== null ? (err as PapiLikeError).response?.body : undefined;
  if (body !== null && typeof body === 'object' && !Buffer.isBuffer(body)) return body;
  try {
    return JSON.parse(consulErrorBody(err)) as unknown;
  } catch {
    return undefined;
  }
}

function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}

/**
 * True when Consul said the session named in a request does not exist (`acquire` with a destroyed
 * session answers 500 `invalid session "<id>"`; renew answers 404 `Session id '<id>' not found`).
 */
export function isSessionGoneError(err: unknown): boolean {
  const status = consulErrorStatus(err);
  const text = `${consulErrorBody(err)} ${errorMessage(err)}`;
  if (status === 404) return true;
  return status === 500 && /invalid session|failed session lookup/i.test(text);
}

/**
 * Turns anything a Consul call threw into a ConsulAcmeError. `what` names the operation
 * ("kv put consul-acme/challenges/…") and goes into the message.
 * - 403 "Permission denied…" / "ACL not found" → CONSUL_PERMISSION_DENIED (not retryable).
 * - no response (refused, reset, timeout) or 5xx → CONSUL_UNAVAILABLE (retryable).
 * - a cancelled request → ABORTED.
 * - anything else (400, unexpected 4xx, a bug) → INTERNAL, not retryable.
 */
export function classifyConsulError(err: unknown, what: string): ConsulAcmeError {
  if (err instanceof ConsulAcmeError) return err;
  const status = consulErrorStatus(err);
  const body = consulErrorBody(err).trim();
  const text = `${body} ${errorMessage(err)}`;
  if (status === 403) {
    const which = /ACL not found/i.test(text)
      ? 'ACL not found'
      : /Permission denied/i.test(text)
        ? 'Permission denied'
        : `403 ${body.slice(0, 120) || 'forbidden'}`;
    return new ConsulAcmeError('CONSUL_PERMISSION_DENIED', `${what}: Consul refused the token (${which})`, {
      cause: err,
      retryable: false,
    });
  }
  if (status === undefined) {
    if (typeof err === 'object' && err !== null && (err as PapiLikeError).isAbort === true) {
      return new AbortedError(what, { cause: err });
    }
    const errCode = typeof err === 'object' && err !== null ? (err as PapiLikeError).code : undefined;
    const tls = typeof errCode === 'string' ? describeTlsFailure(errCode, 'Consul', 'CONSUL_') : undefined;
    if (tls !== undefined) {
      // Configuration, not an outage: retrying does not help until the setting is fixed.
      return new ConsulAcmeError('CONSUL_UNAVAILABLE', `${what}: ${tls}`, { cause: err, retryable: false });
    }
    const code = typeof errCode === 'string' ? ` (${errCode})` : '';
    return new ConsulAcmeError('CONSUL_UNAVAILABLE', `${what}: Consul unreachable: ${errorMessage(err)}${code}`, {
      cause: err,
      retryable: true,
    });
  }
  if (status >= 500) {
    return new ConsulAcmeError(
      'CONSUL_UNAVAILABLE',
      `${what}: Consul answered ${status}: ${body.slice(0, 200) || errorMessage(err)}`,
      {
        cause: err,
        retryable: true,
      },
    );
  }
  return new ConsulAcmeError(
    'INTERNAL',
    `${what}: Consul answered ${status}: ${body.slice(0, 200) || errorMessage(err)}`,
    {
      cause: err,
      retryable: false,
    },
  );
}

// ---------------------------------------------------------------------------------------------
// Blocking queries

/** The blocking endpoints the adapters watch, named as the client's methods. */
export type BlockingMethod =
  'catalog.service.list' | 'catalog.service.list.bytes' | 'catalog.service.nodes' | 'health.service' | 'kv.get';

/** Options the package sends but its per-method types leave out (type gap): index, wait, stale, ctx, timeout. */
type CallOptions = Record<string, unknown>;

/* `as never`: the package's per-method option types are narrower than what it sends (see CallOptions). */
const BLOCKING_METHODS: Record<BlockingMethod, (consul: Consul, opts: CallOptions) => Promise<unknown>> = {
  'catalog.service.list': (consul, opts) => consul.catalog.service.list(opts as never),
  // The answer's bytes (a Buffer, undefined when empty) instead of the parsed body.
  'catalog.service.list.bytes': (consul, opts) =>
    consul.catalog.service.list.call({ consul: bytesClient(consul) } as never, opts as never),
  'catalog.service.nodes': (consul, opts) => consul.catalog.service.nodes(opts as never),
  'health.service': (consul, opts) => consul.health.service(opts as never),
  'kv.get': (consul, opts) => consul.kv.get(opts as never),
};

/** What the package's methods use of their client (consul@2: `this.consul._defaults`, `this.consul._get`). */
interface PackageClient {
  _defaults: unknown;
  _get(request: Record<string, unknown>, ...middleware: unknown[]): Promise<unknown>;
}

/**
 * The client as a package method sees it, with every request asking papi for the body's bytes
 * (its `buffer` request option, which the package's own options do not pass on): the method
 * builds its request as always (token, datacenter, index, wait), and the body is not decoded.
 */
function bytesClient(consul: Consul): PackageClient {
  const client = consul as unknown as PackageClient;
  return {
    _defaults: client._defaults,
    _get: (request, ...middleware) => client._get({ ...request, buffer: true }, ...middleware),
  };
}

export interface BlockingQuery {
  /** The index from the previous return of this same query; 0 (or absent) for the first request. */
  index?: number;
  /** How long Consul may hold the request (1..600). */
  waitSeconds: number;
  /** Let any server answer (`?stale`). */
  stale?: boolean;
  /** Aborting cancels the in-flight request; the promise then rejects with an AbortedError. */
  signal?: AbortSignal;
}

export interface BlockingResult<T> {
  /** The decoded body (undefined for a missing KV key). */
  body: T;
  /** The index to pass to the next request of this query, after the index rules (always ≥ 0). */
  index: number;
  /** X-Consul-Index exactly as Consul sent it. */
  consulIndex: number;
  /** True when Consul's index went backwards (snapshot restore, new cluster) and the index was reset. */
  indexReset: boolean;
}

/** Longest wait Consul accepts. */
export const MAX_WAIT_SECONDS = 600;

/** HTTP timeout for a blocking request: wait + wait/16 (Consul's jitter) + a margin for the answer. */
export function blockingTimeoutMs(waitSeconds: number): number {
  const waitMs = waitSeconds * 1000;
  return waitMs + Math.ceil(waitMs / 16) + 5_000;
}

/**
 * The index rules of Consul's blocking-query documentation: an index lower than the previous one
 * means the data was reset, so start over from 0 (the next request answers at once); an index below
 * 1 from Consul would make every request non-blocking (a busy loop), so use 1.
 */
export function nextBlockingIndex(previous: number, returned: number): { index: number; reset: boolean } {
  if (!Number.isFinite(returned) || returned < 1) return { index: 1, reset: previous > 1 };
  if (returned < previous) return { index: 0, reset: true };
  return { index: returned, reset: false };
}

/**
 * One blocking query: GET `method` with `?index=&wait=` and returns the body with the index for the
 * next request. Errors are ConsulAcmeErrors (classifyConsulError); an abort rejects with AbortedError.
 */
export async function blockingGet<T>(
  consul: Consul,
  method: BlockingMethod,
  options: Record<string, unknown>,
  query: BlockingQuery,
): Promise<BlockingResult<T>> {
  const { signal } = query;
  const what = `consul ${method}`;
  if (signal?.aborted) throw new AbortedError(what, { cause: signal.reason });
  const waitSeconds = Math.min(Math.max(1, Math.round(query.waitSeconds)), MAX_WAIT_SECONDS);
  const previous = Math.max(0, Math.floor(query.index ?? 0));
  const ctx = Object.assign(new EventEmitter(), { includeResponse: true });
  const onAbort = (): void => {
    ctx.emit('cancel');
  };
  signal?.addEventListener('abort', onAbort, { once: true });
  let result: unknown;
  try {
    result = await BLOCKING_METHODS[method](consul, {
      ...options,
      ...(previous > 0 ? { index: String(previous) } : {}),
      wait: `${waitSeconds}s`,
      ...(query.stale ? { stale: true } : {}),
      timeout: blockingTimeoutMs(waitSeconds),
      ctx,
    });
  } catch (err) {
    if (signal?.aborted) throw new AbortedError(what, { cause: signal.reason });
    throw classifyConsulError(err, what);
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
  if (!Array.isArray(result) || result.length < 1) {
    throw new ConsulAcmeError(
      'INTERNAL',
      `${what}: the consul client did not return the response (includeResponse ignored)`,
    );
  }
  const res = result[0] as IncomingMessage;
  const header = res.headers['x-consul-index'];
  const consulIndex = Number(Array.isArray(header) ? header[0] : header);
  if (header === undefined || !Number.isFinite(consulIndex)) {
    throw new ConsulAcmeError('INTERNAL', `${what}: Consul sent no X-Consul-Index; this endpoint does not block`);
  }
  const next = nextBlockingIndex(previous, consulIndex);
  return { body: result[1] as T, index: next.index, consulIndex, indexReset: next.reset };
}

// ---------------------------------------------------------------------------------------------
// Rate limiting

export interface TokenBucketOptions {
  /** Tokens added per second (may be fractional: 1/15 → one request every 15 s when churning). */
  ratePerSecond: number;
  /** Most tokens held at once; Consul's blocking-query guide suggests 2. */
  burst?: number;
  /** Monotonic milliseconds; injectable for tests. */
  now?: () => number;
}

/** Consul's blocking-query guide: burst 2. */
export const DEFAULT_TOKEN_BUCKET_BURST = 2;

/**
 * At most `ratePerSecond` requests per second after an initial burst. A watch loop takes a token
 * before every request, so a result that changes all the time degrades to polling at that rate
 * while a quiet one (each request blocks for `wait`) never waits.
 */
export class TokenBucket {
  private readonly ratePerMs: number;
  private readonly burst: number;
  private readonly now: () => number;
  private tokens: number;
  private updatedAt: number;

  constructor({
    ratePerSecond,
    burst = DEFAULT_TOKEN_BUCKET_BURST,
    now = () => performance.now(),
  }: TokenBucketOptions) {
    if (!(ratePerSecond > 0)) throw new RangeError('ratePerSecond must be > 0');
    if (!(burst >= 1)) throw new RangeError('burst must be >= 1');
    this.ratePerMs = ratePerSecond / 1000;
    this.burst = burst;
    this.now = now;
    this.tokens = burst;
    this.updatedAt = now();
  }

  private refill(): void {
    const now = this.now();
    this.tokens = Math.min(this.burst, this.tokens + (now - this.updatedAt) * this.ratePerMs);
    this.updatedAt = now;
  }

  /** Takes a token if one is there; otherwise returns how many ms until one will be. */
  tryTake(): { taken: true } | { taken: false; waitMs: number } {
    this.refill();
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return { taken: true };
    }
    return { taken: false, waitMs: Math.ceil((1 - this.tokens) / this.ratePerMs) };
  }

  /** Waits for a token. Resolves false (without taking one) when `signal` aborts first. */
  async take(signal?: AbortSignal): Promise<boolean> {
    for (;;) {
      if (signal?.aborted) return false;
      const attempt = this.tryTake();
      if (attempt.taken) return true;
      if (!(await sleep(attempt.waitMs, signal))) return false;
    }
  }
}

/** Resolves true after `ms`, or false as soon as `signal` aborts. Never rejects. */
export function sleep(ms: number, signal?: AbortSignal): Promise<boolean> {
  return new Promise((resolve) => {
    if (signal?.aborted) {
      resolve(false);
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      resolve(false);
    };
    const timer = setTimeout(
      () => {
        signal?.removeEventListener('abort', onAbort);
        resolve(true);
      },
      Math.max(0, ms),
    );
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
