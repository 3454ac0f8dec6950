/**
 * One HTTP request and its whole answer, over node:http or node:https and a keep-alive agent the
 * caller owns: the transport under the ACME client (src/adapters/acme/acme-http.ts) and under the
 * Vault client (src/adapters/vault/vault-http.ts). It does no retries and follows no redirects;
 * each caller decides those. `jsonOrText` reads an answer's body the way both want it.
 *
 * It rejects with an HttpExchangeError whose `code` is the socket's error code (`ECONNREFUSED`,
 * a TLS verification code like `UNABLE_TO_VERIFY_LEAF_SIGNATURE`, ...), `ETIMEDOUT` when no
 * complete answer came within `timeoutMs`, or `ECONNRESET` when the connection closed in the
 * middle of the answer.
 */
import {
  request as httpRequest,
  type Agent as HttpAgent,
  type IncomingHttpHeaders,
  type OutgoingHttpHeaders,
} from 'node:http';
import { request as httpsRequest, type Agent as HttpsAgent } from 'node:https';

export interface HttpExchange {
  method: string;
  headers: OutgoingHttpHeaders;
  /** Sent as is; the caller sets Content-Type and Content-Length. */
  body?: string;
  timeoutMs: number;
  /** The agent for an `http:` URL and for an `https:` URL. */
  agents: { http: HttpAgent; https: HttpsAgent };
}

export interface HttpAnswer {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

export class HttpExchangeError extends Error {
  readonly code: string;
  constructor(code: string, message: string, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'HttpExchangeError';
    this.code = code;
  }
}

export function exchange(url: string, opts: HttpExchange): Promise<HttpAnswer> {
  const secure = url.startsWith('https:');
  return new Promise<HttpAnswer>((resolve, reject) => {
    let settled = false;
    const fail = (code: string, message: string, cause?: unknown): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      reject(new HttpExchangeError(code, message, cause));
    };
    const req = (secure ? httpsRequest : httpRequest)(url, {
      method: opts.method,
      agent: secure ? opts.agents.https : opts.agents.http,
      headers: opts.headers,
    });
    const timer = setTimeout(() => {
      fail('ETIMEDOUT', `timeout: no complete answer within ${opts.timeoutMs} ms`);
      req.destroy();
    }, opts.timeoutMs);
    req.on('error', (err: Error & { code?: unknown }) =>
      fail(typeof err.code === 'string' ? err.code : 'ERR_NETWORK', err.message, err),
    );
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('error', (err: Error & { code?: unknown }) =>
        fail(typeof err.code === 'string' ? err.code : 'ECONNRESET', err.message, err),
      );
      res.on('aborted', () => fail('ECONNRESET', 'the connection closed before the whole answer arrived'));
      res.on('end', () => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) });
      });
    });
    req.end(opts.body);
  });
}

/** JSON for a JSON answer (or one that starts like an object), the text otherwise (a PEM chain, `''`). */
export function jsonOrText(raw: Buffer, contentType: string | undefined): unknown {
  const text = raw.toString('utf8');
  if (text === '') return text;
  if ((contentType ?? '').includes('json') || text.startsWith('{')) {
    try {
      return JSON.parse(text) as unknown;
    } catch {
      return text;
    }
  }
  return text;
}
