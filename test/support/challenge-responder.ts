/**
 * A minimal HTTP-01 responder for tests of the issuer alone: answers
 * GET /.well-known/acme-challenge/:token from a ChallengeStore, 404 otherwise. The service's real
 * responder is the Fastify one in src/http; this one exists so that the issuer's tests do not
 * depend on it.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { ChallengeStore } from '../../src/ports/challenge-store.js';

const PREFIX = '/.well-known/acme-challenge/';
const TOKEN = /^[A-Za-z0-9_-]+$/;

export interface ChallengeRequest {
  host: string;
  path: string;
  status: number;
}

export interface ChallengeResponder {
  port: number;
  /** Requests seen so far, oldest first: proves the CA really came to us. */
  requests(): ChallengeRequest[];
  stop(): Promise<void>;
}

export async function startChallengeResponder(
  store: ChallengeStore,
  { host = '127.0.0.1', port = 0 }: { host?: string; port?: number } = {},
): Promise<ChallengeResponder> {
  const seen: ChallengeRequest[] = [];

  const answer = async (req: IncomingMessage, res: ServerResponse): Promise<number> => {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    if ((req.method !== 'GET' && req.method !== 'HEAD') || !path.startsWith(PREFIX)) return 404;
    const token = path.slice(PREFIX.length);
    if (!TOKEN.test(token)) return 404;
    const keyAuthorization = await store.get(token);
    if (keyAuthorization === undefined) return 404;
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end(req.method === 'HEAD' ? undefined : keyAuthorization);
    return 200;
  };

  const server = createServer((req, res) => {
    const record = (status: number): void => {
      seen.push({ host: req.headers.host ?? '', path: req.url ?? '', status });
    };
    answer(req, res).then(
      (status) => {
        record(status);
        if (status !== 200) res.writeHead(status, { 'content-type': 'text/plain' }).end('not found');
      },
      () => {
        record(500);
        if (!res.headersSent) res.writeHead(500).end();
      },
    );
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });

  return {
    port: (server.address() as AddressInfo).port,
    requests: () => [...seen],
    async stop(): Promise<void> {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
