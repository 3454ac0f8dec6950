/**
 * Classification of what acme-client and its HTTP layer throw, at the adapter boundary.
 *
 * acme-client 5.4 throws plain `Error`s carrying only the CA's `detail`: the problem `type`,
 * the HTTP status and `Retry-After` are lost (docs/protocols.md §6). Our transport
 * (acme-http.ts) therefore throws an {@link AcmeServerProblem} itself for every error response,
 * and the issuer throws one for objects that turned `invalid` (their `error` field), so the type
 * survives. Network failures arrive as {@link AcmeTransportError}s (`code`, the request; no
 * `response`); errors shaped like axios's are still read, for anything that uses acme-client's own
 * axios.
 *
 * | What                                                         | code              | retryable |
 * |--------------------------------------------------------------|-------------------|-----------|
 * | type `rateLimited`, or HTTP 429                              | ACME_RATE_LIMITED | yes (Retry-After kept) |
 * | no response (refused, reset, DNS, TLS, timeout), or HTTP 5xx | ACME_UNREACHABLE  | yes       |
 * | `malformed`, `rejectedIdentifier`, `unsupportedIdentifier`,  | ACME_PROBLEM      | no: the same request fails the same way until a person changes something |
 * | `caa`, `badCSR`, `badPublicKey`, `badSignatureAlgorithm`,    |                   |           |
 * | `invalidContact`, `unsupportedContact`,                      |                   |           |
 * | `externalAccountRequired`, `userActionRequired`,             |                   |           |
 * | `badRevocationReason`, `alreadyRevoked`                      |                   |           |
 * | `compound`                                                   | ACME_PROBLEM      | only if every subproblem is |
 * | `unauthorized`, `connection`, `dns`, `incorrectResponse`,    | ACME_PROBLEM      | yes: the name may get routed later |
 * | `tls`, `badNonce`, `orderNotReady`, `accountDoesNotExist`,   |                   |           |
 * | `serverInternal` sent with a 4xx, unknown types, no type     |                   |           |
 * | a plain Error (acme-client's own checks)                     | ACME_PROBLEM      | yes       |
 * | AbortedError, axios cancellation                             | ABORTED           | yes       |
 *
 * Separately, {@link isTransientAcmeFailure} says which failures the transport retries at once
 * for an idempotent request (acme-http.ts): HTTP 5xx, timeouts, refused or reset connections.
 *
 * Messages name the hostnames, the step and the CA's detail, e.g.
 * `acme validation for app.example.test failed: Non-200 status code ... returned 404 (unauthorized)`.
 */
import { AbortedError, AcmeProblemError } from '../../errors.js';

export const ACME_ERROR_PREFIX = 'urn:ietf:params:acme:error:';
export const RATE_LIMITED_TYPE = `${ACME_ERROR_PREFIX}rateLimited`;

/** Problem types (without the urn prefix) that retrying cannot fix. */
export const NON_RETRYABLE_PROBLEM_TYPES: ReadonlySet<string> = new Set([
  'malformed',
  'rejectedIdentifier',
  'unsupportedIdentifier',
  'caa',
  'badCSR',
  'badPublicKey',
  'badSignatureAlgorithm',
  'invalidContact',
  'unsupportedContact',
  'externalAccountRequired',
  'userActionRequired',
  'badRevocationReason',
  'alreadyRevoked',
]);

/** An RFC 8555 §6.7 / RFC 7807 problem document, as far as we read it. */
export interface ProblemDocument {
  type?: string;
  detail?: string;
  status?: number;
  subproblems?: ProblemDocument[];
  identifier?: { type?: string; value?: string };
}

/** The parts of an HTTP response that classification reads (an axios response fits). */
export interface ProblemResponse {
  status: number;
  headers: Record<string, unknown>;
  data: unknown;
}

/**
 * A problem the CA reported: an error response (with `response`), or an order/authorization/
 * challenge that became `invalid` (its `error` field, no HTTP status of its own).
 * Shaped like an axios error (`response`) so one classifier reads both.
 */
export class AcmeServerProblem extends Error {
  readonly problem: ProblemDocument;
  readonly response: ProblemResponse | undefined;
  constructor(problem: ProblemDocument, response?: ProblemResponse, context?: string) {
    super(`${context ? `${context}: ` : ''}${problem.detail ?? problem.type ?? 'ACME problem'}`);
    this.name = 'AcmeServerProblem';
    this.problem = problem;
    this.response = response;
  }
}

/**
 * A request to the CA that got no HTTP answer: refused, reset, timed out, TLS failure. `code` is
 * Node's (`ECONNREFUSED`, `ECONNRESET`, `ETIMEDOUT` for our own deadline, `ERR_TLS_…`, …).
 */
export class AcmeTransportError extends Error {
  readonly code: string;
  readonly method: string;
  readonly url: string;
  constructor(code: string, message: string, request: { method: string; url: string }, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'AcmeTransportError';
    this.code = code;
    this.method = request.method.toUpperCase();
    this.url = request.url;
  }
}

/** Codes of failures that a retry a moment later can get past: the connection, not the request. */
const TRANSIENT_NETWORK_CODES: ReadonlySet<string> = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'ECONNABORTED',
  'EPIPE',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ERR_STREAM_PREMATURE_CLOSE',
]);

/**
 * Whether an idempotent request that failed this way is worth sending again at once: the CA
 * answered 5xx, or the connection was refused, reset or timed out. Not a 4xx (the same request
 * gets the same answer; 429 waits in the queue), not a TLS or DNS name failure, not an abort.
 */
export function isTransientAcmeFailure(err: unknown): boolean {
  if (err instanceof AbortedError || isCancellation(err)) return false;
  const response = err instanceof AcmeServerProblem ? err.response : responseOf(err);
  if (response !== undefined) return response.status >= 500;
  if (err instanceof AcmeServerProblem) return false; // an object that became invalid
  const code = codeOf(err);
  return code !== undefined && TRANSIENT_NETWORK_CODES.has(code);
}

/** The Retry-After of a failure's response, in milliseconds from `now`; undefined when none. */
export function retryAfterMsOf(err: unknown, now: Date): number | undefined {
  const response = err instanceof AcmeServerProblem ? err.response : responseOf(err);
  if (response === undefined) return undefined;
  const seconds = parseRetryAfterSeconds(headerValue(response.headers, 'retry-after'), now);
  return seconds === undefined ? undefined : seconds * 1000;
}

export interface ClassifyContext {
  /** Names the failing request was for; they lead the message. */
  hostnames?: readonly string[];
  /** The step that failed, e.g. `new order`, `validation`, `finalize`. */
  step?: string;
}

const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'ECONNABORTED',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EPIPE',
  'ERR_NETWORK',
  'ERR_SOCKET_CONNECTION_TIMEOUT',
  'UND_ERR_CONNECT_TIMEOUT',
  'CERT_HAS_EXPIRED',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'ERR_TLS_CERT_ALTNAME_INVALID',
  'EPROTO',
]);

/** The short name of an ACME problem type: `urn:ietf:params:acme:error:caa` → `caa`. */
export function shortProblemType(type: string | undefined): string | undefined {
  if (type === undefined) return undefined;
  return type.startsWith(ACME_ERROR_PREFIX) ? type.slice(ACME_ERROR_PREFIX.length) : type;
}

/** Whether retrying can help with a problem of this type (see the table above). */
export function isRetryableProblem(problem: ProblemDocument): boolean {
  const short = shortProblemType(problem.type);
  if (short === undefined) return true;
  if (short === 'compound') return (problem.subproblems ?? []).every(isRetryableProblem);
  return !NON_RETRYABLE_PROBLEM_TYPES.has(short);
}

/**
 * Seconds to wait from a `Retry-After` header (RFC 9110 §10.2.3: delay-seconds or an HTTP date),
 * relative to `now`. A date in the past gives 0; a malformed value gives undefined.
 */
export function parseRetryAfterSeconds(value: unknown, now: Date): number | undefined {
  const text = Array.isArray(value) ? value[0] : value;
  if (typeof text === 'number' && Number.isFinite(text)) return Math.max(0, Math.ceil(text));
  if (typeof text !== 'string' || text.trim() === '') return undefined;
  const trimmed = text.trim();
  if (/^\d+$/.test(trimmed)) return Number.parseInt(trimmed, 10);
  const at = Date.parse(trimmed);
  if (Number.isNaN(at)) return undefined;
  return Math.max(0, Math.ceil((at - now.getTime()) / 1000));
}

function headerValue(headers: Record<string, unknown> | undefined, name: string): unknown {
  if (!headers) return undefined;
  const getter = (headers as { get?: unknown }).get;
  if (typeof getter === 'function') {
    const value: unknown = (getter as (n: string) => unknown).call(headers, name);
    if (value !== undefined && value !== null) return value;
  }
  const key = Object.keys(headers).find((k) => k.toLowerCase() === name);
  return key === undefined ? undefined : headers[key];
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null;
}

/** Reads a problem document from a response body (object or JSON text); undefined if it is none. */
export function parseProblemDocument(data: unknown): ProblemDocument | undefined {
  let body = data;
  if (typeof body === 'string') {
    try {
      body = JSON.parse(body) as unknown;
    } catch {
      return undefined;
    }
  }
  if (!isRecord(body)) return undefined;
  if (typeof body.type !== 'string' && typeof body.detail !== 'string') return undefined;
  const problem: ProblemDocument = {};
  if (typeof body.type === 'string') problem.type = body.type;
  if (typeof body.detail === 'string') problem.detail = body.detail;
  if (typeof body.status === 'number') problem.status = body.status;
  if (Array.isArray(body.subproblems)) {
    problem.subproblems = body.subproblems
      .map(parseProblemDocument)
      .filter((p): p is ProblemDocument => p !== undefined);
  }
  if (isRecord(body.identifier)) {
    const { type, value } = body.identifier;
    problem.identifier = {
      ...(typeof type === 'string' ? { type } : {}),
      ...(typeof value === 'string' ? { value } : {}),
    };
  }
  return problem;
}

function describeProblem(problem: ProblemDocument): string {
  const short = shortProblemType(problem.type);
  let text = problem.detail ?? '(no detail)';
  if (problem.subproblems && problem.subproblems.length > 0) {
    const parts = problem.subproblems.map((s) => `${s.identifier?.value ?? '?'}: ${describeProblem(s)}`);
    text += ` [${parts.join('; ')}]`;
  }
  return short === undefined ? text : `${text} (${short})`;
}

function lead(context: ClassifyContext, problem?: ProblemDocument): string {
  const hostnames = context.hostnames ?? [];
  const names = hostnames.length > 0 ? hostnames.join(', ') : 'unknown hostname';
  const failing = problem?.identifier?.value;
  // In an order for several names, say which one failed.
  if (failing !== undefined && hostnames.length > 1 && hostnames.includes(failing)) {
    return `acme ${context.step ?? 'request'} for ${failing} (order for ${names})`;
  }
  return `acme ${context.step ?? 'request'} for ${names}`;
}

function responseOf(err: unknown): ProblemResponse | undefined {
  if (!isRecord(err) || !isRecord(err.response)) return undefined;
  const { status, headers, data } = err.response;
  if (typeof status !== 'number') return undefined;
  return { status, headers: isRecord(headers) ? headers : {}, data };
}

function codeOf(err: unknown): string | undefined {
  if (!isRecord(err)) return undefined;
  if (typeof err.code === 'string') return err.code;
  return isRecord(err.cause) && typeof err.cause.code === 'string' ? err.cause.code : undefined;
}

function isCancellation(err: unknown): boolean {
  if (!isRecord(err)) return false;
  return err.code === 'ERR_CANCELED' || err.name === 'CanceledError' || err.name === 'AbortError';
}

function requestOf(err: unknown): string {
  if (err instanceof AcmeTransportError) return ` (${err.method} ${err.url})`;
  if (!isRecord(err) || !isRecord(err.config)) return '';
  const { method, url } = err.config;
  return typeof url === 'string'
    ? ` (${typeof method === 'string' ? method.toUpperCase() : ''} ${url})`.replace('( ', '(')
    : '';
}

/**
 * Turns anything thrown while talking to an ACME CA into one of our errors, keeping the problem
 * type, HTTP status and Retry-After (as seconds from `now`).
 */
export function classifyAcmeError(
  err: unknown,
  now: Date,
  context: ClassifyContext = {},
): AcmeProblemError | AbortedError {
  if (err instanceof AcmeProblemError || err instanceof AbortedError) return err;
  if (isCancellation(err)) return new AbortedError(lead(context), { cause: err });

  const response = responseOf(err);
  const problem =
    err instanceof AcmeServerProblem
      ? err.problem
      : response === undefined
        ? undefined
        : parseProblemDocument(response.data);
  const status = response?.status ?? problem?.status;

  if (response !== undefined || problem !== undefined) {
    const retryAfterSeconds =
      response === undefined ? undefined : parseRetryAfterSeconds(headerValue(response.headers, 'retry-after'), now);
    const options = {
      cause: err,
      problemType: problem?.type,
      status,
      retryAfterSeconds,
    };
    const detail = problem
      ? describeProblem(problem)
      : `HTTP ${status ?? '?'}${typeof response?.data === 'string' && response.data ? `: ${response.data.slice(0, 200)}` : ''}`;
    if (problem?.type === RATE_LIMITED_TYPE || response?.status === 429) {
      const wait = retryAfterSeconds === undefined ? '' : `; retry after ${retryAfterSeconds} s`;
      return new AcmeProblemError('ACME_RATE_LIMITED', `${lead(context, problem)} was rate limited: ${detail}${wait}`, {
        ...options,
        retryable: true,
      });
    }
    if (response !== undefined && response.status >= 500) {
      return new AcmeProblemError(
        'ACME_UNREACHABLE',
        `${lead(context, problem)} failed: the CA answered HTTP ${response.status}: ${detail}`,
        {
          ...options,
          retryable: true,
        },
      );
    }
    return new AcmeProblemError('ACME_PROBLEM', `${lead(context, problem)} failed: ${detail}`, {
      ...options,
      retryable: problem === undefined ? true : isRetryableProblem(problem),
    });
  }

  const code = codeOf(err);
  const message = err instanceof Error ? err.message : String(err);
  const isAxiosError = isRecord(err) && err.isAxiosError === true;
  if (
    isAxiosError ||
    err instanceof AcmeTransportError ||
    (code !== undefined && (NETWORK_CODES.has(code) || code.startsWith('ERR_TLS') || code.startsWith('UND_ERR')))
  ) {
    const timedOut = code === 'ECONNABORTED' || code === 'ETIMEDOUT' || /timeout/i.test(message);
    return new AcmeProblemError(
      'ACME_UNREACHABLE',
      `${lead(context)} failed: the CA could not be reached${timedOut ? ' (timed out)' : ''}: ${code ?? 'error'}: ${message}${requestOf(err)}`,
      { cause: err, retryable: true },
    );
  }
  // A plain Error from acme-client (its own checks, or a badNonce it gave up on): keep its text.
  return new AcmeProblemError('ACME_PROBLEM', `${lead(context)} failed: ${message}`, { cause: err, retryable: true });
}
