/**
 * One request from a command (`status`, `adopt`, `reissue`, `revoke`) to a running instance's
 * admin API, and the failures every command reports the same way: an instance it cannot reach
 * (and why), and an admin token that is missing or refused. What a non-2xx answer means is left to
 * the command.
 */
import { ConsulAcmeError } from '../errors.js';

export interface AdminRequest {
  /** The admin address, e.g. `http://127.0.0.1:8403` (a trailing slash is ignored). */
  adminUrl: string;
  adminToken?: string | undefined;
  method?: 'GET' | 'POST';
  /** The path, starting with `/`. */
  path: string;
  /** Sent as JSON when given. */
  body?: unknown;
  timeoutMs: number;
  fetchImpl?: typeof fetch;
}

export interface AdminAnswer {
  status: number;
  ok: boolean;
  /** The body as text. */
  text: string;
  /** The body as JSON; undefined when it is not JSON. */
  json: unknown;
  /** The admin address without a trailing slash, for messages. */
  base: string;
  url: string;
}

/** Why a request failed, as a person reads it: the socket error with its code, or "no answer in time". */
function reasonOf(err: unknown): string {
  if (err instanceof Error && (err.name === 'TimeoutError' || err.name === 'AbortError')) return 'no answer in time';
  // undici throws TypeError('fetch failed') with the socket error as its cause.
  const cause: unknown = err instanceof Error ? err.cause : undefined;
  if (cause instanceof Error) {
    const code = 'code' in cause && typeof cause.code === 'string' ? cause.code : undefined;
    return code !== undefined && !cause.message.includes(code) ? `${code} ${cause.message}` : cause.message;
  }
  return err instanceof Error ? err.message : String(err);
}

/**
 * Sends the request and reads the answer. Throws a ConsulAcmeError naming the address when the
 * instance cannot be reached or the answer cannot be read ("cannot reach consul-acme at <url>:
 * <reason>", retryable), and when it answers 401 (the admin token is missing or refused).
 */
export async function adminRequest(request: AdminRequest): Promise<AdminAnswer> {
  const base = request.adminUrl.replace(/\/+$/, '');
  const url = `${base}${request.path}`;
  const unreachable = (err: unknown, what = ''): ConsulAcmeError => {
    const reason = reasonOf(err);
    const why = reason === 'no answer in time' ? `no answer within ${request.timeoutMs} ms` : reason;
    return new ConsulAcmeError('INTERNAL', `cannot reach consul-acme at ${base}: ${what}${why}`, {
      cause: err,
      retryable: true,
    });
  };
  let response: Response;
  try {
    response = await (request.fetchImpl ?? fetch)(url, {
      method: request.method ?? 'GET',
      headers: {
        accept: 'application/json',
        ...(request.body === undefined ? {} : { 'content-type': 'application/json' }),
        ...(request.adminToken ? { authorization: `Bearer ${request.adminToken}` } : {}),
      },
      ...(request.body === undefined ? {} : { body: JSON.stringify(request.body) }),
      signal: AbortSignal.timeout(request.timeoutMs),
    });
  } catch (err) {
    throw unreachable(err);
  }
  let text: string;
  try {
    text = await response.text();
  } catch (err) {
    throw unreachable(err, 'reading the answer failed: ');
  }
  if (response.status === 401) {
    throw new ConsulAcmeError(
      'INTERNAL',
      `consul-acme at ${base} wants the admin token: set CONSUL_ACME_ADMIN_TOKEN to the instance's token${request.adminToken ? ' (the one set was refused)' : ''}`,
    );
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: response.status, ok: response.ok, text, json, base, url };
}
