/**
 * The HTTP-01 responder: answers `GET /.well-known/acme-challenge/<token>` from the shared
 * challenge store, so whichever instance Fabio routes the CA's validation request to can answer.
 * Nothing else is served: every other path and method is a plain-text 404 that does not echo the
 * URL. Tokens and key authorizations are never logged (the URL itself contains the token, so
 * fastify's per-request logs are switched off).
 */
import { createHash } from 'node:crypto';
import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import Fastify, { LogController } from 'fastify';
import type { FastifyBaseLogger, FastifyError, FastifyInstance, FastifyReply } from 'fastify';
import { ACME_CHALLENGE_PATH, isChallengeToken, MAX_CHALLENGE_TOKEN_LENGTH } from '../domain/challenge.js';
import type { ChallengeStore } from '../ports/challenge-store.js';
import { F, type Logger } from '../logging.js';

export const DEFAULT_CHALLENGE_REQUEST_TIMEOUT_MS = 5000;
/** No route accepts a body; this only bounds what fastify reads before answering 404. */
export const CHALLENGE_BODY_LIMIT_BYTES = 1024;

const TEXT = 'text/plain; charset=utf-8';
const NOT_FOUND = 'not found\n';

export interface ChallengeServerOptions {
  challengeStore: ChallengeStore;
  /** Used as is; pass a child logger carrying the `component` field. */
  logger: Logger;
  /** Bounds receiving one request, the idle socket time and keep-alive. Default 5000 ms. */
  requestTimeoutMs?: number;
}

function notFound(reply: FastifyReply): FastifyReply {
  return reply.code(404).type(TEXT).send(NOT_FOUND);
}

/** Log-safe facts about a token: its length and the first 8 hex digits of its SHA-256. */
function tokenFacts(token: string): { token_length: number; token_sha256_prefix: string } {
  return {
    token_length: token.length,
    token_sha256_prefix: createHash('sha256').update(token).digest('hex').slice(0, 8),
  };
}

/** An error as a log field, with every occurrence of `secret` cut out of its message. */
function scrubbedError(err: unknown, secret: string): { type: string; code?: string; message: string } {
  const type = err instanceof Error ? err.name : typeof err;
  const raw = err instanceof Error ? err.message : String(err);
  const message = secret === '' ? raw : raw.split(secret).join('[token]');
  const code = err instanceof Error && 'code' in err && typeof err.code === 'string' ? err.code : undefined;
  return code === undefined ? { type, message } : { type, code, message };
}

/** Builds (does not start) the challenge responder. The caller listens and closes it. */
export function buildChallengeServer(opts: ChallengeServerOptions): FastifyInstance {
  const timeoutMs = opts.requestTimeoutMs ?? DEFAULT_CHALLENGE_REQUEST_TIMEOUT_MS;
  const log = opts.logger;

  // Typed as fastify's logger so the instance is the plain FastifyInstance callers expect.
  const fastifyLogger: FastifyBaseLogger = log;
  const app = Fastify({
    loggerInstance: fastifyLogger,
    // The URL holds the token: no per-request, not-found or default-error log lines.
    logController: new LogController({ disableRequestLogging: true }),
    connectionTimeout: timeoutMs,
    requestTimeout: timeoutMs,
    keepAliveTimeout: timeoutMs,
    // Node checks requestTimeout only every connectionsCheckingInterval (30 s by default), and
    // headersTimeout must not exceed requestTimeout.
    http: { connectionsCheckingInterval: Math.min(1000, timeoutMs), headersTimeout: timeoutMs },
    bodyLimit: CHALLENGE_BODY_LIMIT_BYTES,
    // Longer params never reach the handler: they go to frameworkErrors (a 404 below).
    routerOptions: { maxParamLength: MAX_CHALLENGE_TOKEN_LENGTH },
    return503OnClosing: true,
    // Fastify's own answers to a malformed URL (400) or an over-long param (414) quote the path,
    // which holds the would-be token. We answer like any other request we do not serve.
    frameworkErrors: (_err, _request, reply) => {
      void notFound(reply);
    },
    // The default handler logs the raw request bytes (path and token included) at trace level.
    clientErrorHandler: (err: Error & { code?: string }, socket: Socket) => {
      if (err.code === 'ECONNRESET' || socket.destroyed) return;
      log.debug({ [F.err]: { type: err.name, code: err.code } }, 'malformed http request');
      const status = err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : err.code === 'HPE_HEADER_OVERFLOW' ? 431 : 400;
      const body = `${(STATUS_CODES[status] ?? 'bad request').toLowerCase()}\n`;
      if (socket.writable) {
        socket.write(
          `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n` +
            `Content-Type: ${TEXT}\r\nConnection: close\r\n\r\n${body}`,
        );
      }
      socket.destroy();
    },
  });

  app.get<{ Params: { token: string } }>(`${ACME_CHALLENGE_PATH}:token`, async (request, reply) => {
    const { token } = request.params;
    reply.header('cache-control', 'no-store');
    if (!isChallengeToken(token)) {
      return notFound(reply);
    }
    let keyAuthorization: string | undefined;
    try {
      keyAuthorization = await opts.challengeStore.get(token);
    } catch (err) {
      log.error({ ...tokenFacts(token), [F.err]: scrubbedError(err, token) }, 'challenge store read failed');
      return reply.code(503).header('retry-after', '1').type(TEXT).send('challenge store unavailable\n');
    }
    if (keyAuthorization === undefined) {
      // Debug, not info: a flood of made-up tokens must not become a flood of log lines.
      log.debug(tokenFacts(token), 'unknown challenge token');
      return notFound(reply);
    }
    log.info(tokenFacts(token), 'challenge answered');
    return reply.code(200).type(TEXT).send(keyAuthorization);
  });

  app.setNotFoundHandler((_request, reply) => {
    return notFound(reply);
  });

  // Errors fastify raises itself (body too large, unsupported media type, ...). No route takes
  // input, so a client error is answered like any other request we do not serve; the message is
  // not sent back because it may quote the request.
  app.setErrorHandler((err: FastifyError, _request, reply) => {
    const status = err.statusCode ?? 500;
    if (status >= 400 && status < 500) {
      return notFound(reply);
    }
    log.error({ [F.err]: { type: err.name, code: err.code } }, 'challenge server error');
    return reply.code(500).type(TEXT).send('internal error\n');
  });

  return app;
}
