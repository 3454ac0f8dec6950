/**
 * The HTTP transport under acme-client, one per AcmeIssuer.
 *
 * Why not acme-client's own axios: `acme.axios` is a module-level singleton shared by every
 * Client in the process, so a CA bundle set on its `defaults.httpsAgent` is global (two issuers
 * for two CAs with different bundles would fight), and its response interceptor retries network
 * errors, 429 and 5xx up to 5 times with sleeps of Retry-After or 5 s × attempt. Worse, with
 * those retries turned down, a network error reaches its `validateStatus(undefined)` and becomes a
 * TypeError that hides the cause. The queue must own all waiting (DESIGN.md), and we need the
 * problem `type`, which acme-client drops.
 *
 * So each Client gets this transport: every request acme-client makes goes through
 * `HttpClient#request(url, method, opts)` (src/http.js: directory, nonce, and every signed POST),
 * and we replace that method on the Client's own HttpClient instance. The transport uses a
 * private axios instance made with `acme.axios.create()` (no interceptors, no retries), with
 * its own https.Agent (system roots + this issuer's CA bundle), `timeout` = requestTimeoutMs,
 * and it reports every request to `onRequest` for metrics. acme-client's global axios settings
 * are left untouched, since nothing of ours goes through them.
 *
 * Error responses are thrown as AcmeServerProblem (problem document, status, headers kept),
 * except 400 badNonce, which is returned so that acme-client's own badNonce retry
 * (http.js, up to 5 times with the fresh nonce, no sleep) keeps working.
 *
 * This relies on one private detail of acme-client 5.4.0 (`client.http.request`), pinned in
 * package.json; `attach` fails loudly if it disappears. We never call `updateAccountKey` (it
 * builds a fresh HttpClient) nor `verifyChallenge` (it uses the shared axios).
 */
import { Agent } from 'node:https';
import { createSecureContext, rootCertificates } from 'node:tls';
import { performance } from 'node:perf_hooks';
import * as acme from 'acme-client';
import { AcmeServerProblem, parseProblemDocument } from './acme-errors.js';

export const ACME_USER_AGENT = 'consul-acme acme-client/5.4.0';
const BAD_NONCE_TYPE = 'urn:ietf:params:acme:error:badNonce';

export type AcmeRequestHook = (endpoint: string, status: number | 'error', durationMs: number) => void;

export interface AcmeHttpOptions {
  directoryUrl: string;
  /** Extra CA certificates (PEM) to trust besides the system roots, e.g. Pebble's WFE certificate. */
  caBundlePem?: string;
  /** Applied to every request (axios `timeout`). */
  requestTimeoutMs: number;
  onRequest?: AcmeRequestHook;
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

type AxiosLike = typeof acme.axios;

export class AcmeHttp {
  private readonly http: AxiosLike;
  private readonly agent: Agent;
  private readonly endpointByUrl = new Map<string, string>();

  constructor(private readonly options: AcmeHttpOptions) {
    this.agent = new Agent({
      keepAlive: true,
      // One secure context built once: passing `ca` instead makes Node parse ~150 roots again
      // for every new connection to the CA (measured: 4x the CPU per certificate).
      ...(options.caBundlePem
        ? { secureContext: createSecureContext({ ca: [...rootCertificates, options.caBundlePem] }) }
        : {}),
    });
    this.http = acme.axios.create({
      adapter: 'http',
      timeout: options.requestTimeoutMs,
      httpsAgent: this.agent,
      headers: { 'User-Agent': ACME_USER_AGENT },
      validateStatus: () => true,
      transitional: { clarifyTimeoutError: true, silentJSONParsing: true, forcedJSONParsing: true },
    });
    this.endpointByUrl.set(options.directoryUrl, 'directory');
  }

  /** Routes every request of this acme-client Client through this transport. */
  attach(client: acme.Client): void {
    const httpClient = (client as unknown as { http?: { request?: unknown } }).http;
    if (!httpClient || typeof httpClient.request !== 'function') {
      throw new Error('acme-client internals changed: Client#http.request not found (acme-client 5.4.0 expected)');
    }
    const request: RequestFn = (url, method, opts) => this.request(url, method, opts);
    httpClient.request = request;
  }

  /** Closes idle keep-alive connections. */
  close(): void {
    this.agent.destroy();
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

  async request(url: string, method: string, opts: ClientRequestOptions = {}): Promise<TransportResponse> {
    const endpoint = this.endpointName(url);
    const started = performance.now();
    let response: TransportResponse;
    try {
      response = await this.http.request({
        url,
        method,
        data: opts.data,
        headers: { ...opts.headers, 'Content-Type': 'application/jose+json' },
      });
    } catch (err) {
      this.report(endpoint, 'error', started);
      throw err;
    }
    this.report(endpoint, response.status, started);

    if (endpoint === 'directory' && response.status === 200) this.learnDirectory(response.data);

    if (response.status >= 400) {
      const problem = parseProblemDocument(response.data);
      if (response.status === 400 && problem?.type === BAD_NONCE_TYPE) return response;
      throw new AcmeServerProblem(
        problem ?? { detail: `HTTP ${response.status} from ${method.toUpperCase()} ${url}` },
        {
          status: response.status,
          headers: response.headers,
          data: response.data,
        },
      );
    }
    return response;
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
