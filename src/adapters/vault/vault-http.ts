/**
 * The HTTP transport under node-vault, through its `request-promise` option: node-vault hands
 * every request (method, full URL, headers, the JSON body as an object) to the function that
 * option's `defaults()` returns and reads `{ statusCode, body, request: { path } }` back, any
 * status included; node-vault then turns a status other than 200 and 204 into its error, which
 * src/adapters/vault/vault-client.ts classifies.
 *
 * Why not node-vault's own axios: measured in `npm run bench -- --throughput`, axios and
 * follow-redirects cost about 1 ms of CPU per Vault request, and an issuance makes about nine.
 * This sends with node:http / node:https directly (src/adapters/net/http-exchange.ts) through one
 * keep-alive agent, whose TLS context (the CA file, a client certificate and key, the name
 * Vault's certificate must carry) is built once. Verification is always on.
 *
 * - A JSON answer is parsed; any other answer is kept as text (an empty body is `''`).
 * - A 307 or 308 (a Vault standby that does not forward requests redirects to the active node)
 *   is followed, with the same method, headers and body, at most MAX_REDIRECTS times.
 * - Nothing is retried here: a request with no answer rejects with the socket's error code
 *   (`ECONNREFUSED`, `ETIMEDOUT`, a TLS code), which vault-client.ts classifies.
 */
import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import { createSecureContext } from 'node:tls';
import { exchange, jsonOrText, type HttpAnswer } from '../net/http-exchange.js';

export const MAX_REDIRECTS = 3;

export interface VaultHttpOptions {
  /** Per-request timeout. */
  timeoutMs: number;
  /** PEM of the CA that signed Vault's certificate, instead of the system's roots. */
  ca?: Buffer;
  /** Client certificate and key (PEM), for Vault's TLS certificate auth or a proxy in front. */
  cert?: Buffer;
  key?: Buffer;
  /** The name Vault's certificate must carry, when it differs from the address's host. */
  servername?: string;
}

/** What node-vault passes for one request (the fields it sets; other request options are ignored). */
export interface VaultHttpRequest {
  method?: string;
  uri: string;
  headers?: Record<string, string>;
  json?: unknown;
}

export interface VaultHttpResponse {
  statusCode: number;
  body: unknown;
  request: { path: string };
}

export type VaultSend = (request: VaultHttpRequest) => Promise<VaultHttpResponse>;

/** The transport: `send` for one request, `destroy` closes the idle connections. */
export interface VaultHttp {
  send: VaultSend;
  destroy(): void;
  /** node-vault's `request-promise` option. */
  asRequestPromise(): { defaults(): VaultSend };
}

export function createVaultHttp(options: VaultHttpOptions): VaultHttp {
  const tls =
    options.ca === undefined && options.cert === undefined && options.key === undefined
      ? {}
      : {
          secureContext: createSecureContext({
            ...(options.ca !== undefined ? { ca: options.ca } : {}),
            ...(options.cert !== undefined ? { cert: options.cert } : {}),
            ...(options.key !== undefined ? { key: options.key } : {}),
          }),
        };
  const agents = {
    http: new HttpAgent({ keepAlive: true }),
    https: new HttpsAgent({
      keepAlive: true,
      rejectUnauthorized: true,
      ...tls,
      ...(options.servername !== undefined ? { servername: options.servername } : {}),
    }),
  };

  const send: VaultSend = async (request) => {
    const method = (request.method ?? 'GET').toUpperCase();
    const body =
      request.json !== undefined && typeof request.json === 'object' ? JSON.stringify(request.json) : undefined;
    const headers: Record<string, string | number> = { Accept: 'application/json', ...request.headers };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      headers['Content-Length'] = Buffer.byteLength(body);
    }
    let url = request.uri;
    let answer: HttpAnswer;
    for (let redirects = 0; ; redirects += 1) {
      answer = await exchange(url, {
        method,
        headers,
        agents,
        timeoutMs: options.timeoutMs,
        ...(body !== undefined ? { body } : {}),
      });
      const location = answer.headers.location;
      if ((answer.status !== 307 && answer.status !== 308) || location === undefined || redirects >= MAX_REDIRECTS) {
        break;
      }
      url = new URL(location, url).toString();
    }
    return {
      statusCode: answer.status,
      body: jsonOrText(answer.body, answer.headers['content-type']),
      request: { path: new URL(url).pathname },
    };
  };

  return {
    send,
    destroy: () => {
      agents.http.destroy();
      agents.https.destroy();
    },
    asRequestPromise: () => ({ defaults: () => send }),
  };
}
