/**
 * The HTTP transport under acme-client, one per AcmeIssuer.
 *
 * Why not acme-client's own axios: `acme.axios` is a module-level singleton shared by every
 * Client in the process, so a CA bundle set on its `defaults.httpsAgent` is global (two issuers
 * for two CAs with different bundles would fight), and its response interceptor retries network
 * errors, 429 and 5xx, newOrder and finalize included, up to 5 times with sleeps of Retry-After
 * or 5 s × attempt. It also loses the problem `type` (docs/protocols.md §6). So each Client gets
 * this transport, which sends with node:https directly (no axios: measured, its per-request
 * overhead was a tenth of the CPU of an issuance), through one keep-alive https.Agent with this
 * issuer's CA bundle.
 *
 * `attach(client, signal)` replaces, on that Client's own HttpClient instance (acme-client's
 * src/http.js), the methods every request goes through:
 * - `request(url, method, opts)`: directory, nonce and every signed POST;
 * - `signedRequest(url, payload, opts, attempts)`: every JWS request; a `null` payload is a
 *   POST-as-GET (order, authorization, certificate, account fetches), which is idempotent;
 * - `getNonce()`: served from the nonces of earlier answers when one is at hand
 *   (a client may use the Replay-Nonce of any answer: docs/protocols.md §6), else `GET newNonce`;
 * - `getDirectory()`: one cached directory per transport, not one per Client;
 * and gives it the account key parsed once (a KeyObject and its JWK), so acme-client does not
 * parse the PEM again for every signature.
 *
 * Retries, in this one place: the directory GET, the newNonce GET and every POST-as-GET are sent
 * again when the CA answers 5xx, the request times out, or the connection is refused or reset —
 * at most ACME_RETRY_MAX_ATTEMPTS sends within about ACME_RETRY_TOTAL_MS, waiting
 * `retryDelayMs` of ACME_RETRY_SCHEDULE_MS with jitter, or the CA's Retry-After when that is
 * longer. A Retry-After that does not fit in what is left of the bound ends the retries at once,
 * and the error keeps it for the queue. Each POST-as-GET retry is signed anew with a fresh nonce.
 * newAccount, newOrder, challenge POSTs, finalize, deactivation, revokeCert and keyChange carry a
 * payload and are never retried: sent twice, they can act twice (a second order). See
 * docs/errors.md.
 *
 * Error responses are thrown as AcmeServerProblem (problem document, status, headers kept),
 * except 400 badNonce, which is returned so that acme-client's own badNonce retry (src/http.js,
 * up to 5 times with the nonce of that answer, no sleep) keeps working. A request that gets no
 * answer rejects with AcmeTransportError. Every send, retries included, is reported to
 * `onRequest`.
 *
 * This relies on private details of acme-client 5.4.0 (the HttpClient's methods above and its
 * `accountKey` and `jwk` fields), pinned in package.json; `attach` fails loudly if they change.
 * We never call `updateAccountKey` (it builds a fresh HttpClient) nor `verifyChallenge` (it uses
 * the shared axios).
 */
import { createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';
import { Agent as HttpAgent, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import type { Duplex } from 'node:stream';
import { createSecureContext, rootCertificates } from 'node:tls';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import type * as acme from 'acme-client';
import { exponentialSchedule, jitterMs, retryDelayMs } from '../../domain/backoff.js';
import { systemClock, type Clock } from '../../ports/clock.js';
import { AbortedError } from '../../errors.js';
import { exchange, HttpExchangeError, jsonOrText, type HttpAnswer } from '../net/http-exchange.js';
import {
  AcmeServerProblem,
  AcmeTransportError,
  isTransientAcmeFailure,
  parseProblemDocument,
  retryAfterMsOf,
} from './acme-errors.js';

export const ACME_USER_AGENT = 'consul-acme acme-client/5.4.0';

/** Sends of one idempotent request at most, the first included. */
export const ACME_RETRY_MAX_ATTEMPTS = 4;
/**
 * No retry is started once this long has passed since the first send (a send may end later, by one
 * request timeout).
 */
export const ACME_RETRY_TOTAL_MS = 30_000;
/** Waits between sends: 0.5 s, 1 s, 2 s, … (before jitter); a longer Retry-After wins. */
export const ACME_RETRY_SCHEDULE_MS: readonly number[] = exponentialSchedule(500, 8_000);
/** Each wait is lengthened by up to this fraction, so issuers that failed together do not retry together. */
export const ACME_RETRY_JITTER_FRACTION = 0.5;
/** The directory is fetched again after this long (acme-client's own cache time). */
export const ACME_DIRECTORY_MAX_AGE_MS = 24 * 60 * 60 * 1000;
/** Nonces kept from earlier answers, newest used first. */
export const ACME_NONCE_POOL_SIZE = 32;
/** A kept nonce older than this is dropped rather than risk a badNonce round trip. */
export const ACME_NONCE_MAX_AGE_MS = 60_000;

const BAD_NONCE_TYPE = 'urn:ietf:params:acme:error:badNonce';
const ACCEPT = 'application/json, application/pem-certificate-chain, text/plain, */*';

export type AcmeRequestHook = (endpoint: string, status: number | 'error', durationMs: number) => void;

export interface AcmeHttpOptions {
  directoryUrl: string;
  /** Extra CA certificates (PEM) to trust besides the system roots, e.g. Pebble's WFE certificate. */
  caBundlePem?: string;
  /** Deadline of every single send, from the request until the whole answer has arrived. */
  requestTimeoutMs: number;
  onRequest?: AcmeRequestHook;
  /** For Retry-After dates; the system clock by default. */
  clock?: Clock;
  /** Jitter's randomness, in [0, 1); Math.random by default. */
  random?: () => number;
}

/** What acme-client's HttpClient#request receives and must return (src/http.js). */
interface ClientRequestOptions {
  data?: unknown;
  headers?: Record<string, string>;
}
export interface TransportResponse {
  status: number;
  headers: Record<string, unknown>;
  data: unknown;
}
type RequestFn = (url: string, method: string, opts?: ClientRequestOptions) => Promise<TransportResponse>;
type SignedRequestFn = (url: string, payload: unknown, opts?: object, attempts?: number) => Promise<TransportResponse>;

/** The parts of acme-client 5.4.0's HttpClient (src/http.js) that `attach` replaces. */
interface HttpClientInternals {
  accountKey: unknown;
  jwk: unknown;
  request: RequestFn;
  signedRequest: SignedRequestFn;
  getNonce: () => Promise<string>;
  getDirectory: () => Promise<Record<string, unknown>>;
}

interface AccountKey {
  key: KeyObject;
  jwk: Record<string, unknown>;
}

/** Failures that already went through a retry loop: an outer loop must not retry them again. */
const exhausted = new WeakSet<object>();

export class AcmeHttp {
  private readonly agents: { http: HttpAgent; https: HttpsAgent };
  private readonly endpointByUrl = new Map<string, string>();
  private readonly accountKeys = new Map<string, AccountKey>();
  private readonly nonces: Array<{ nonce: string; at: number }> = [];
  private readonly closed = new AbortController();
  private readonly clock: Clock;
  private readonly random: () => number;
  private directoryCache: { at: number; directory: Promise<Record<string, unknown>> } | undefined;
  private opened = 0;

  constructor(private readonly options: AcmeHttpOptions) {
    this.agents = {
      https: new HttpsAgent({
        keepAlive: true,
        // One secure context built once: passing `ca` instead makes Node parse ~150 roots again
        // for every new connection to the CA (measured: 4x the CPU per certificate).
        ...(options.caBundlePem
          ? { secureContext: createSecureContext({ ca: [...rootCertificates, options.caBundlePem] }) }
          : {}),
      }),
      http: new HttpAgent({ keepAlive: true }),
    };
    for (const agent of [this.agents.https, this.agents.http]) this.countConnections(agent);
    this.endpointByUrl.set(options.directoryUrl, 'directory');
    this.clock = options.clock ?? systemClock;
    this.random = options.random ?? Math.random;
  }

  /**
   * Routes every request of this acme-client Client through this transport. `signal` ends the
   * waits between retries of that Client's requests (rejecting with AbortedError); a request
   * already sent is not cut off, so the issuer still knows how it ended.
   */
  attach(client: acme.Client, signal?: AbortSignal): void {
    const http = (client as unknown as { http?: Partial<HttpClientInternals> }).http;
    const missing = (['request', 'signedRequest', 'getNonce', 'getDirectory'] as const).filter(
      (name) => typeof http?.[name] !== 'function',
    );
    if (!http || missing.length > 0 || !('accountKey' in http) || !('jwk' in http)) {
      throw new Error(
        `acme-client internals changed: Client#http lacks ${missing.join(', ') || 'accountKey/jwk'} (acme-client 5.4.0 expected)`,
      );
    }
    const internals = http as HttpClientInternals;
    const account = this.accountKey(internals.accountKey);
    internals.accountKey = account.key;
    internals.jwk = account.jwk;

    const signedRequest = internals.signedRequest.bind(internals);
    internals.request = (url, method, opts) => this.request(url, method, opts, signal);
    internals.getDirectory = () => this.directory(signal);
    internals.getNonce = () => this.nonce(signal);
    internals.signedRequest = (url, payload, opts, attempts = 0) =>
      // A POST-as-GET is retried as a whole: each send gets a fresh nonce and signature. Its
      // badNonce resends (attempts > 0) pass straight through, inside the outer send.
      payload === null && attempts === 0
        ? this.retrying(this.endpointName(url), signal, () => signedRequest(url, null, opts, 0))
        : signedRequest(url, payload, opts, attempts);
  }

  /** TLS (or TCP) connections opened to the CA so far; keep-alive reuses them. */
  connectionsOpened(): number {
    return this.opened;
  }

  /** Closes idle keep-alive connections and ends waits between retries. */
  close(): void {
    this.closed.abort(new Error('the ACME transport was closed'));
    this.agents.https.destroy();
    this.agents.http.destroy();
  }

  /** A low-cardinality name for a URL, for metrics: directory resource names, else the object kind. */
  endpointName(url: string): string {
    const known = this.endpointByUrl.get(url);
    if (known !== undefined) return known;
    const path = (() => {
      try {
        return new URL(url).pathname.toLowerCase();
      } catch {
        return url.toLowerCase();
      }
    })();
    if (/finali[sz]e/.test(path)) return 'finalize';
    if (/chal/.test(path)) return 'challenge';
    if (/authz/.test(path)) return 'authorization';
    if (/cert/.test(path)) return 'certificate';
    if (/order/.test(path)) return 'order';
    if (/acct|account|reg/.test(path)) return 'account';
    return 'other';
  }

  /** One request as acme-client asks for it; GET and HEAD are retried, POSTs are sent once. */
  async request(
    url: string,
    method: string,
    opts: ClientRequestOptions = {},
    signal?: AbortSignal,
  ): Promise<TransportResponse> {
    const verb = method.toUpperCase();
    const endpoint = this.endpointName(url);
    const send = (): Promise<TransportResponse> => this.send(url, verb, endpoint, opts);
    return verb === 'GET' || verb === 'HEAD' ? this.retrying(endpoint, signal, send) : send();
  }

  // ---------------------------------------------------------------- directory and nonces

  /**
   * The directory, fetched once for every Client of this transport. The fetch is shared, so it
   * does not stop for one caller's signal (only when the transport closes); a caller whose signal
   * fires stops waiting for it at once.
   */
  private directory(signal: AbortSignal | undefined): Promise<Record<string, unknown>> {
    let cached = this.directoryCache;
    if (!cached || performance.now() - cached.at >= ACME_DIRECTORY_MAX_AGE_MS) {
      const directory = this.request(this.options.directoryUrl, 'GET', {}, undefined).then((response) => {
        const data = response.data;
        if (typeof data !== 'object' || data === null) {
          throw new Error(`the ACME directory ${this.options.directoryUrl} answered something that is not a directory`);
        }
        return data as Record<string, unknown>;
      });
      const entry = { at: performance.now(), directory };
      this.directoryCache = cached = entry;
      directory.catch(() => {
        if (this.directoryCache === entry) this.directoryCache = undefined;
      });
    }
    return untilAborted(cached.directory, signal, 'the acme directory request');
  }

  private async nonce(signal: AbortSignal | undefined): Promise<string> {
    const freshAfter = performance.now() - ACME_NONCE_MAX_AGE_MS;
    for (let kept = this.nonces.pop(); kept !== undefined; kept = this.nonces.pop()) {
      if (kept.at > freshAfter) return kept.nonce;
    }
    const url = (await this.directory(signal)).newNonce;
    if (typeof url !== 'string') throw new Error('the ACME directory has no newNonce URL');
    // GET, not HEAD (both are allowed): a HEAD answer without Content-Length makes Node
    // close the connection instead of reusing it (docs/protocols.md §6).
    const response = await this.request(url, 'GET', {}, signal);
    const nonce = response.headers['replay-nonce'];
    if (typeof nonce !== 'string' || nonce === '') throw new Error('the ACME server sent no nonce');
    return nonce;
  }

  private keepNonce(nonce: unknown): void {
    if (typeof nonce !== 'string' || nonce === '') return;
    this.nonces.push({ nonce, at: performance.now() });
    if (this.nonces.length > ACME_NONCE_POOL_SIZE) this.nonces.shift();
  }

  private accountKey(pem: unknown): AccountKey {
    const text = Buffer.isBuffer(pem) ? pem.toString('utf8') : pem;
    if (typeof text !== 'string') throw new Error('acme-client internals changed: the account key is not a PEM');
    let account = this.accountKeys.get(text);
    if (!account) {
      const key = createPrivateKey(text);
      const jwk = createPublicKey(key).export({ format: 'jwk' }) as Record<string, unknown>;
      // Members in sorted order, as acme-client's getJwk gives them: the key authorization's
      // thumbprint is a hash of this JSON (docs/protocols.md §6).
      const sorted = Object.fromEntries(
        Object.keys(jwk)
          .sort()
          .map((name) => [name, jwk[name]]),
      );
      account = { key, jwk: sorted };
      this.accountKeys.set(text, account);
    }
    return account;
  }

  // ---------------------------------------------------------------- retries

  /**
   * Runs `send` until it succeeds, fails in a way a retry cannot help, or the attempts or the
   * time bound run out; the last failure is thrown unchanged.
   */
  private async retrying<T>(endpoint: string, signal: AbortSignal | undefined, send: () => Promise<T>): Promise<T> {
    const started = performance.now();
    for (let failures = 0; ;) {
      try {
        return await send();
      } catch (err) {
        if (typeof err === 'object' && err !== null && exhausted.has(err)) throw err;
        failures++;
        const delayMs = nextRetryDelayMs(err, failures, performance.now() - started, this.clock.now(), this.random);
        if (delayMs === undefined) {
          if (typeof err === 'object' && err !== null) exhausted.add(err);
          throw err;
        }
        await this.wait(delayMs, signal, endpoint);
      }
    }
  }

  private async wait(delayMs: number, signal: AbortSignal | undefined, endpoint: string): Promise<void> {
    const stop = signal ? AbortSignal.any([signal, this.closed.signal]) : this.closed.signal;
    try {
      await sleep(delayMs, undefined, { signal: stop });
    } catch {
      throw new AbortedError(`a retry of the acme ${endpoint} request`, { cause: stop.reason });
    }
  }

  // ---------------------------------------------------------------- one send

  private async send(
    url: string,
    method: string,
    endpoint: string,
    opts: ClientRequestOptions,
  ): Promise<TransportResponse> {
    const body =
      opts.data === undefined || method === 'GET' || method === 'HEAD' ? undefined : JSON.stringify(opts.data);
    const started = performance.now();
    let answer: HttpAnswer;
    try {
      answer = await exchange(url, {
        method,
        agents: this.agents,
        timeoutMs: this.options.requestTimeoutMs,
        headers: {
          'User-Agent': ACME_USER_AGENT,
          Accept: ACCEPT,
          ...opts.headers,
          ...(body === undefined
            ? {}
            : { 'Content-Type': 'application/jose+json', 'Content-Length': Buffer.byteLength(body) }),
        },
        ...(body === undefined ? {} : { body }),
      });
    } catch (err) {
      this.report(endpoint, 'error', started);
      if (!(err instanceof HttpExchangeError)) throw err;
      throw new AcmeTransportError(err.code, err.message, { method, url }, err.cause);
    }
    this.report(endpoint, answer.status, started);
    return this.answer(url, method, endpoint, answer.status, answer.headers, answer.body);
  }

  /** Turns an answer into what acme-client expects, or throws the CA's problem. */
  private answer(
    url: string,
    method: string,
    endpoint: string,
    status: number,
    headers: IncomingMessage['headers'],
    raw: Buffer,
  ): TransportResponse {
    const data = jsonOrText(raw, headers['content-type']);
    const response: TransportResponse = { status, headers, data };
    if (endpoint === 'directory' && status === 200) this.learnDirectory(data);
    if (status >= 400) {
      const problem = parseProblemDocument(data);
      // acme-client resends with the nonce of this very answer: do not keep it as well.
      if (status === 400 && problem?.type === BAD_NONCE_TYPE) return response;
      this.keepNonce(headers['replay-nonce']);
      throw new AcmeServerProblem(problem ?? { detail: `HTTP ${status} from ${method} ${url}` }, response);
    }
    // The nonce of a newNonce answer is the one getNonce returns; every other one is kept.
    if (endpoint !== 'newNonce') this.keepNonce(headers['replay-nonce']);
    return response;
  }

  private countConnections(agent: HttpAgent): void {
    const target = agent as unknown as { createConnection: (...args: unknown[]) => Duplex };
    const create = target.createConnection.bind(agent);
    target.createConnection = (...args) => {
      this.opened++;
      return create(...args);
    };
  }

  private learnDirectory(data: unknown): void {
    if (typeof data !== 'object' || data === null) return;
    for (const [name, value] of Object.entries(data)) {
      if (typeof value === 'string') this.endpointByUrl.set(value, name);
    }
  }

  private report(endpoint: string, status: number | 'error', started: number): void {
    if (!this.options.onRequest) return;
    try {
      this.options.onRequest(endpoint, status, performance.now() - started);
    } catch {
      // A metrics hook must never break issuance.
    }
  }
}

/** Resolves as `promise` does, or rejects with AbortedError (`what` was aborted) as soon as `signal` fires. */
export async function untilAborted<T>(promise: Promise<T>, signal: AbortSignal | undefined, what: string): Promise<T> {
  if (!signal) return promise;
  if (signal.aborted) throw new AbortedError(what, { cause: signal.reason });
  let onAbort: (() => void) | undefined;
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => reject(new AbortedError(what, { cause: signal.reason }));
    signal.addEventListener('abort', onAbort, { once: true });
  });
  try {
    return await Promise.race([promise, aborted]);
  } finally {
    if (onAbort) signal.removeEventListener('abort', onAbort);
  }
}

/**
 * How long to wait before sending an idempotent request again after its `failures`-th failure in a
 * row, `elapsedMs` after its first send; undefined to give up now: the failure is not transient,
 * the attempts are used up, the CA's Retry-After does not fit in what is left of the bound (the
 * error carries it to the queue), or the next wait would not.
 */
export function nextRetryDelayMs(
  err: unknown,
  failures: number,
  elapsedMs: number,
  now: Date,
  random: () => number,
): number | undefined {
  if (!isTransientAcmeFailure(err) || failures >= ACME_RETRY_MAX_ATTEMPTS) return undefined;
  const leftMs = ACME_RETRY_TOTAL_MS - elapsedMs;
  const retryAfterMs = retryAfterMsOf(err, now);
  if (retryAfterMs !== undefined && retryAfterMs > leftMs) return undefined;
  const delayMs = jitterMs(
    retryDelayMs(failures, ACME_RETRY_SCHEDULE_MS, retryAfterMs),
    ACME_RETRY_JITTER_FRACTION,
    random,
  );
  return delayMs <= leftMs ? delayMs : undefined;
}
