/**
 * A small HTTP proxy on 127.0.0.1 that stands in for Fabio in front of several consul-acme
 * instances: each request goes to the next backend in turn (round robin), so that the CA's HTTP-01
 * validations reach every instance, not only the one that placed the order. Every request is
 * recorded with the backend that answered it, its Host (without the port), path and status, so a
 * test can show that an instance answered a token for an order another instance placed.
 *
 * `hold()` parks new requests (the CA's validation is then "in flight" for as long as the test
 * wants: a deterministic slow validation) until `release()` forwards them, in arrival order, to
 * the backends configured at that moment. `hold(match)` parks only the requests `match` accepts
 * (with one backend, e.g. in front of Consul, it stalls one kind of write for one instance). `removeBackend()` takes an instance out of the rotation,
 * as Fabio does once a dead instance's health check fails or it deregisters. There is no retry on
 * a failed backend: a refused connection is answered 502 and recorded with its error.
 */
import { createServer, request as httpRequest, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

const UPSTREAM_TIMEOUT_MS = 30_000;

export interface Backend {
  /** Recorded with each request, e.g. the instance name. */
  name: string;
  port: number;
  /** Default 127.0.0.1. */
  host?: string;
}

export interface ProxiedRequest {
  /** Arrival order, from 1. */
  seq: number;
  receivedAt: number;
  /** Host header without the port, lower case (the hostname being validated). */
  host: string;
  path: string;
  method: string;
  /** User-Agent header (Pebble's validations say `LetsEncrypt-Pebble-VA`). */
  userAgent: string;
  /** The backend the request was forwarded to; undefined when none was configured. */
  backend: string | undefined;
  /** The backend's status, 502 when it could not be reached, undefined while in flight or held. */
  status: number | undefined;
  error: string | undefined;
  /** Whether the request was parked by hold() before being forwarded. */
  wasHeld: boolean;
}

export interface RoundRobinProxy {
  port: number;
  url: string;
  backends(): Backend[];
  removeBackend(name: string): void;
  /**
   * Parks every new request (or those `match` accepts) until release(); a request parked already
   * that `match` does not accept is forwarded at once.
   */
  hold(match?: (request: HoldCandidate) => boolean): void;
  /** Forwards the parked requests and stops parking. */
  release(): void;
  /** Requests parked right now. */
  held(): ProxiedRequest[];
  /** Every request so far (copies). */
  requests(): ProxiedRequest[];
  close(): Promise<void>;
}

/** What hold()'s `match` sees of a request. */
export interface HoldCandidate {
  method: string;
  path: string;
  host: string;
  userAgent: string;
  body: string;
}

interface Parked {
  record: ProxiedRequest;
  req: IncomingMessage;
  res: ServerResponse;
  body: Buffer;
}

export async function startRoundRobinProxy(
  initialBackends: Backend[],
  opts: { port?: number } = {},
): Promise<RoundRobinProxy> {
  let backends = [...initialBackends];
  let next = 0;
  let holding: ((request: HoldCandidate) => boolean) | undefined;
  let seq = 0;
  const log: ProxiedRequest[] = [];
  const parked: Parked[] = [];

  const forward = (p: Parked): void => {
    const { record, req, res, body } = p;
    if (res.destroyed || res.writableEnded) {
      record.status = undefined;
      record.error = 'client went away before the request was forwarded';
      return;
    }
    if (backends.length === 0) {
      record.status = 502;
      record.error = 'no backend';
      res.writeHead(502).end('no backend\n');
      return;
    }
    const backend = backends[next % backends.length]!;
    next = (next + 1) % Math.max(1, backends.length);
    record.backend = backend.name;
    const upstream = httpRequest(
      {
        host: backend.host ?? '127.0.0.1',
        port: backend.port,
        method: req.method,
        path: req.url,
        headers: { ...req.headers, connection: 'close' },
        agent: false,
        timeout: UPSTREAM_TIMEOUT_MS,
      },
      (upstreamRes) => {
        record.status = upstreamRes.statusCode;
        res.writeHead(upstreamRes.statusCode ?? 502, upstreamRes.headers);
        upstreamRes.pipe(res);
      },
    );
    upstream.on('timeout', () => upstream.destroy(new Error(`no answer within ${UPSTREAM_TIMEOUT_MS} ms`)));
    upstream.on('error', (err) => {
      record.status = 502;
      record.error = err.message;
      if (!res.headersSent) res.writeHead(502);
      res.end(`backend ${backend.name}: ${err.message}\n`);
    });
    upstream.end(body);
  };

  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const record: ProxiedRequest = {
        seq: ++seq,
        receivedAt: Date.now(),
        host: (req.headers.host ?? '').replace(/:\d+$/, '').toLowerCase(),
        path: req.url ?? '',
        method: req.method ?? 'GET',
        userAgent: req.headers['user-agent'] ?? '',
        backend: undefined,
        status: undefined,
        error: undefined,
        wasHeld: false,
      };
      const body = Buffer.concat(chunks);
      record.wasHeld = holding !== undefined && holding({ ...record, body: body.toString('utf8') });
      log.push(record);
      const p: Parked = { record, req, res, body };
      if (record.wasHeld) parked.push(p);
      else forward(p);
    });
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;

  return {
    port,
    url: `http://127.0.0.1:${port}`,
    backends: () => backends.map((b) => ({ ...b })),
    removeBackend(name) {
      backends = backends.filter((b) => b.name !== name);
      next = 0;
    },
    hold(match = () => true) {
      holding = match;
      // Narrowing a hold: what is parked already and no longer matches goes on now.
      const still = parked.splice(0).filter((p) => {
        if (match({ ...p.record, body: p.body.toString('utf8') })) return true;
        forward(p);
        return false;
      });
      parked.push(...still);
    },
    release() {
      holding = undefined;
      for (const p of parked.splice(0)) forward(p);
    },
    held: () => parked.map((p) => ({ ...p.record })),
    requests: () => log.map((r) => ({ ...r })),
    async close() {
      for (const p of parked.splice(0)) p.res.destroy();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
