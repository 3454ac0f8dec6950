/**
 * The admin API: liveness and readiness for Consul health checks and orchestrators, and the status
 * report that `consul-acme status` renders. JSON everywhere, including errors and 404s.
 *
 * With an admin token, every path but the health paths needs `Authorization: Bearer <token>`
 * (401 otherwise); the comparison is in constant time. The health paths stay open, since Consul's
 * HTTP checks send no credentials.
 *
 * Consul HTTP checks read 2xx as passing, 429 as warning and anything else as critical, so "not
 * ready" is a 503.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { STATUS_CODES } from 'node:http';
import Fastify, { LogController } from 'fastify';
import type { FastifyBaseLogger, FastifyError, FastifyInstance, FastifyReply } from 'fastify';
import { HEALTH_HTTP_STATUS, type CertificateHealth } from '../domain/certificate-health.js';
import type { StatusReport } from '../engine/status.js';
import { ADMIN_HEALTH_PATHS } from '../naming.js';
import { describeError } from '../errors.js';
import { F, type Logger } from '../logging.js';

export const ADMIN_REQUEST_TIMEOUT_MS = 10_000;

export interface AdminServerOptions {
  /** Used as is; pass a child logger carrying the `component` field. */
  logger: Logger;
  /** The process can make progress (event loop turning, not wedged). False → 503. */
  isLive: () => boolean;
  /** The instance can do its job (dependencies reachable, started). False or a throw → 503. */
  isReady: () => boolean | Promise<boolean>;
  status: () => StatusReport | Promise<StatusReport>;
  /** Certificate health for the Consul check: 200 passing, 429 warning, 503 critical. */
  certificateHealth: () => CertificateHealth;
  /** Prometheus exposition for GET /metrics. */
  metrics: () => Promise<{ contentType: string; body: string }>;
  /** When set, everything but the health paths needs it as a bearer token. */
  adminToken?: string | undefined;
}

function digest(text: string): Buffer {
  return createHash('sha256').update(text).digest();
}

/** Whether the request carries `Authorization: Bearer <token>` (compared in constant time). */
function carriesToken(authorization: string | undefined, expected: Buffer): boolean {
  const match = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? '');
  return match !== null && timingSafeEqual(digest(match[1] ?? ''), expected);
}

function noStore(reply: FastifyReply): FastifyReply {
  return reply.header('cache-control', 'no-store');
}

/** Builds (does not start) the admin API. The caller listens and closes it. */
export function buildAdminServer(opts: AdminServerOptions): FastifyInstance {
  const log = opts.logger;

  // Typed as fastify's logger so the instance is the plain FastifyInstance callers expect.
  const fastifyLogger: FastifyBaseLogger = log;
  const app = Fastify({
    loggerInstance: fastifyLogger,
    // Health checks arrive every few seconds from Consul; only log the other requests.
    logController: new LogController({
      disableRequestLogging: (request) => request.url.startsWith('/health/'),
    }),
    connectionTimeout: ADMIN_REQUEST_TIMEOUT_MS,
    requestTimeout: ADMIN_REQUEST_TIMEOUT_MS,
    keepAliveTimeout: 5000,
    http: { connectionsCheckingInterval: 1000, headersTimeout: ADMIN_REQUEST_TIMEOUT_MS },
    bodyLimit: 64 * 1024,
    return503OnClosing: true,
    // Fastify's default answers to a malformed URL quote it back; keep errors short and fixed.
    frameworkErrors: (_err, _request, reply) => {
      void noStore(reply).code(400).send({ error: 'bad request' });
    },
  });

  const tokenDigest = opts.adminToken === undefined ? undefined : digest(opts.adminToken);
  const openPaths = new Set<string>(Object.values(ADMIN_HEALTH_PATHS));
  app.addHook('onRequest', async (request, reply) => {
    if (tokenDigest === undefined || openPaths.has(request.url.split('?')[0] ?? '')) return;
    if (carriesToken(request.headers.authorization, tokenDigest)) return;
    await noStore(reply).code(401).header('www-authenticate', 'Bearer').send({ error: 'admin token required' });
  });

  app.get(ADMIN_HEALTH_PATHS.live, async (_request, reply) => {
    let live = false;
    try {
      live = opts.isLive();
    } catch (err) {
      log.warn({ [F.err]: describeError(err) }, 'liveness probe failed');
    }
    return noStore(reply)
      .code(live ? 200 : 503)
      .send(live ? { status: 'ok' } : { status: 'not live' });
  });

  app.get(ADMIN_HEALTH_PATHS.ready, async (_request, reply) => {
    let ready = false;
    try {
      ready = await opts.isReady();
    } catch (err) {
      log.warn({ [F.err]: describeError(err) }, 'readiness probe failed');
    }
    return noStore(reply)
      .code(ready ? 200 : 503)
      .send(ready ? { status: 'ready' } : { status: 'not ready' });
  });

  app.get('/status', async (_request, reply) => {
    let report: StatusReport;
    try {
      report = await opts.status();
    } catch (err) {
      log.error({ [F.err]: describeError(err) }, 'status report failed');
      return noStore(reply).code(500).send({ error: 'status report failed' });
    }
    return noStore(reply).code(200).send(report);
  });

  app.get(ADMIN_HEALTH_PATHS.certificates, async (_request, reply) => {
    const health = opts.certificateHealth();
    return noStore(reply).code(HEALTH_HTTP_STATUS[health.status]).send(health);
  });

  app.get('/metrics', async (_request, reply) => {
    const { contentType, body } = await opts.metrics();
    return noStore(reply).type(contentType).send(body);
  });

  app.setNotFoundHandler((_request, reply) => {
    return noStore(reply).code(404).send({ error: 'not found' });
  });

  app.setErrorHandler((err: FastifyError, _request, reply) => {
    const status = err.statusCode !== undefined && err.statusCode >= 400 && err.statusCode < 600 ? err.statusCode : 500;
    if (status >= 500) log.error({ [F.err]: err }, 'admin request failed');
    const error = (STATUS_CODES[status] ?? 'error').toLowerCase();
    return noStore(reply).code(status).send({ error });
  });

  return app;
}
