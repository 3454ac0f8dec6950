/**
 * The admin API: liveness and readiness for Consul health checks and orchestrators, the status
 * report that `consul-acme status` renders, and the operator commands (`consul-acme adopt`,
 * `reissue`, `revoke`). JSON everywhere, including errors and 404s.
 *
 * With an admin token, every path but the health paths needs `Authorization: Bearer <token>`
 * (401 otherwise); the comparison is in constant time. The health paths stay open, since Consul's
 * HTTP checks send no credentials. The commands that change certificates (`POST /adopt`,
 * `/reissue`, `/revoke`) are refused (403) while no admin token is set: an admin API listening on
 * every address must not let anyone on the network revoke a certificate.
 *
 * Commands: `POST /adopt` `{"hostnames":[…]}` or `{"all":true}`; `POST /reissue` `{"hostnames":[…]}`,
 * `{"all":true}` or `{"issuedBefore":"<ISO time>"}`; `POST /revoke` `{"hostname":"…","reason":"keyCompromise"}`.
 * Each answers 202 with one result per name (accepted, with the serial to be replaced, or refused
 * with why); the work itself goes through the queue (engine/requests.ts). `GET /certificates/<name>`
 * shows one name's status with what the store holds and its request, both read now (the commands
 * poll it while they wait); `GET /requests` lists the requests not yet carried out. An instance
 * without operations (CONSUL_ACME_MODE=sinks) answers these paths with 409.
 *
 * Consul HTTP checks read 2xx as passing, 429 as warning and anything else as critical, so "not
 * ready" is a 503.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { STATUS_CODES } from 'node:http';
import Fastify, { LogController } from 'fastify';
import type { FastifyBaseLogger, FastifyError, FastifyInstance, FastifyReply } from 'fastify';
import { HEALTH_HTTP_STATUS, type CertificateHealth } from '../domain/certificate-health.js';
import { normalizeHostname } from '../domain/hostname.js';
import { parseRevocationReason, type RevocationReason } from '../domain/revocation.js';
import type {
  AdoptSelection,
  ReissueSelection,
  RequestOutcome,
  RequestStatus,
  StoredCertificateStatus,
} from '../engine/requests.js';
import type { CertificateStatus, StatusReport } from '../engine/status.js';
import { ADMIN_HEALTH_PATHS } from '../naming.js';
import { describeError } from '../errors.js';
import { F, type Logger } from '../logging.js';

export const ADMIN_REQUEST_TIMEOUT_MS = 10_000;
/** Names one command may list. */
export const MAX_COMMAND_HOSTNAMES = 1000;

/** The answer of GET /certificates/<name>. */
export interface CertificateDetail {
  hostname: string;
  /** The status line of the name, as in GET /status; undefined for a name this instance does not know. */
  status: CertificateStatus | undefined;
  /** What the store holds, read now. */
  stored: StoredCertificateStatus | undefined;
  /** Its request not yet carried out, read now. */
  request: RequestStatus | undefined;
}

/** The answer of the command paths. */
export interface CommandAnswer {
  results: RequestOutcome[];
}

/** What the command paths ask of the engine (engine/requests.ts). */
export interface AdminOperations {
  adopt(selection: AdoptSelection): Promise<RequestOutcome[]>;
  reissue(selection: ReissueSelection, revokeReason?: RevocationReason): Promise<RequestOutcome[]>;
  certificate(hostname: string): Promise<CertificateDetail>;
  requests(): Array<RequestStatus & { hostname: string }>;
}

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
  /** When set, everything but the health paths needs it as a bearer token; unset, the commands are refused. */
  adminToken?: string | undefined;
  /** The operator commands; undefined on an instance that runs only the sinks. */
  operations?: AdminOperations | undefined;
}

type Body = Record<string, unknown>;

/** A bad command body: answered 400 with the message. */
class BadCommand extends Error {}

function bodyOf(value: unknown): Body {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new BadCommand('the body must be a JSON object');
  }
  return value as Body;
}

function onlyFields(body: Body, allowed: readonly string[]): void {
  const unknown = Object.keys(body).filter((key) => !allowed.includes(key));
  if (unknown.length > 0)
    throw new BadCommand(`unknown field ${unknown.map((k) => `"${k}"`).join(', ')} (allowed: ${allowed.join(', ')})`);
}

/** One hostname from a command, normalised; throws BadCommand naming the problem. */
function hostnameFrom(value: unknown): string {
  if (typeof value !== 'string') throw new BadCommand('a hostname must be a string');
  const normalized = normalizeHostname(value);
  if (!normalized.ok) throw new BadCommand(normalized.reason);
  return normalized.hostname;
}

/** The `hostnames` list of a command, normalised, every bad name reported. */
function hostnamesFrom(value: unknown): string[] {
  if (!Array.isArray(value) || value.length === 0)
    throw new BadCommand('"hostnames" must be a non-empty list of names');
  if (value.length > MAX_COMMAND_HOSTNAMES)
    throw new BadCommand(`"hostnames" lists more than ${MAX_COMMAND_HOSTNAMES} names`);
  const names: string[] = [];
  const problems: string[] = [];
  for (const item of value) {
    try {
      names.push(hostnameFrom(item));
    } catch (err) {
      problems.push(err instanceof Error ? err.message : String(err));
    }
  }
  if (problems.length > 0) throw new BadCommand(problems.join('; '));
  return [...new Set(names)];
}

/** `all: true`, when given; anything else but absence is refused. */
function allFrom(value: unknown): boolean {
  if (value === undefined || value === false) return false;
  if (value === true) return true;
  throw new BadCommand('"all" must be true');
}

function adoptSelectionFrom(raw: unknown): AdoptSelection {
  const body = bodyOf(raw);
  onlyFields(body, ['hostnames', 'all']);
  const all = allFrom(body.all);
  if (all === (body.hostnames !== undefined)) throw new BadCommand('give either "hostnames" or "all": true');
  return all ? { all } : { hostnames: hostnamesFrom(body.hostnames) };
}

function reissueSelectionFrom(raw: unknown): ReissueSelection {
  const body = bodyOf(raw);
  onlyFields(body, ['hostnames', 'all', 'issuedBefore']);
  const all = allFrom(body.all);
  const given = [all, body.hostnames !== undefined, body.issuedBefore !== undefined].filter(Boolean).length;
  if (given !== 1) throw new BadCommand('give exactly one of "hostnames", "all": true or "issuedBefore"');
  if (all) return { all };
  if (body.hostnames !== undefined) return { hostnames: hostnamesFrom(body.hostnames) };
  const issuedBefore = typeof body.issuedBefore === 'string' ? new Date(body.issuedBefore) : undefined;
  if (issuedBefore === undefined || Number.isNaN(issuedBefore.getTime()))
    throw new BadCommand('"issuedBefore" must be a time such as 2026-03-01T00:00:00Z');
  return { issuedBefore };
}

function revokeFrom(raw: unknown): { hostname: string; reason: RevocationReason } {
  const body = bodyOf(raw);
  onlyFields(body, ['hostname', 'reason']);
  if (body.hostname === undefined) throw new BadCommand('"hostname" is required');
  const hostname = hostnameFrom(body.hostname);
  if (typeof body.reason !== 'string')
    throw new BadCommand('"reason" is required (an RFC 5280 reason name, such as keyCompromise)');
  const parsed = parseRevocationReason(body.reason);
  if (!parsed.ok) throw new BadCommand(parsed.problem);
  return { hostname, reason: parsed.reason };
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

  // ------------------------------------------------------------------ operator commands

  const operations = opts.operations;
  /** Runs a command handler: 409 without operations, 403 without a token (for changes), 400 for a bad body. */
  const command = async (
    reply: FastifyReply,
    changes: boolean,
    handler: (ops: AdminOperations) => Promise<unknown>,
  ): Promise<FastifyReply> => {
    if (operations === undefined) {
      return noStore(reply).code(409).send({
        error: 'this instance runs only the sinks (CONSUL_ACME_MODE=sinks); send the command to one that issues',
      });
    }
    if (changes && tokenDigest === undefined) {
      return noStore(reply)
        .code(403)
        .send({ error: 'commands that change certificates need CONSUL_ACME_ADMIN_TOKEN set on the instance' });
    }
    try {
      const answer = await handler(operations);
      return noStore(reply)
        .code(changes ? 202 : 200)
        .send(answer);
    } catch (err) {
      if (err instanceof BadCommand) return noStore(reply).code(400).send({ error: err.message });
      log.error({ [F.err]: describeError(err) }, 'admin command failed');
      return noStore(reply)
        .code(500)
        .send({ error: describeError(err) });
    }
  };

  app.post('/adopt', async (request, reply) =>
    command(reply, true, async (ops): Promise<CommandAnswer> => ({
      results: await ops.adopt(adoptSelectionFrom(request.body)),
    })),
  );

  app.post('/reissue', async (request, reply) =>
    command(reply, true, async (ops): Promise<CommandAnswer> => ({
      results: await ops.reissue(reissueSelectionFrom(request.body)),
    })),
  );

  app.post('/revoke', async (request, reply) =>
    command(reply, true, async (ops): Promise<CommandAnswer> => {
      const { hostname, reason } = revokeFrom(request.body);
      return { results: await ops.reissue({ hostnames: [hostname] }, reason) };
    }),
  );

  app.get<{ Params: { hostname: string } }>('/certificates/:hostname', async (request, reply) =>
    command(reply, false, async (ops) => ops.certificate(hostnameFrom(request.params.hostname))),
  );

  app.get('/requests', async (_request, reply) => command(reply, false, async (ops) => ({ requests: ops.requests() })));

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
