/**
 * A plain HTTP pass-through proxy on 127.0.0.1 that records every request it forwards (arrival
 * time, method, path with its percent-encoding undone), so a test can count what a process asked
 * a server, e.g. the Consul KV reads of consul-acme's challenge store, without touching the
 * process. Put it between the process and the server by giving the process the proxy's URL
 * (`CONSUL_HTTP_ADDR`).
 *
 * Unlike round-robin-proxy.ts it sets no timeout on either side, so Consul's blocking queries
 * (which may wait minutes) pass through unchanged, and answers are streamed as they come.
 */
import { createServer, request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface CountedRequest {
  /** Date.now() when the request arrived. */
  at: number;
  method: string;
  /** The path and query, percent-decoded (the consul package encodes a key's slashes). */
  path: string;
}

export interface CountingProxy {
  url: string;
  /** Every request so far (copies), in arrival order. */
  requests(): CountedRequest[];
  close(): Promise<void>;
}

function decoded(path: string): string {
  try {
    return decodeURIComponent(path);
  } catch {
    return path;
  }
}

/** Starts a proxy that forwards everything to `http://127.0.0.1:<targetPort>`. */
export async function startCountingProxy(targetPort: number): Promise<CountingProxy> {
  const log: CountedRequest[] = [];
  const server = createServer((req, res) => {
    log.push({ at: Date.now(), method: req.method ?? 'GET', path: decoded(req.url ?? '/') });
    const upstream = httpRequest(
      { host: '127.0.0.1', port: targetPort, method: req.method, path: req.url, headers: req.headers },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      },
    );
    upstream.on('error', (err) => {
      if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' });
      res.end(`counting proxy: ${err.message}\n`);
    });
    // The client gave up (an aborted blocking query): stop waiting upstream too.
    res.on('close', () => {
      if (!res.writableFinished) upstream.destroy();
    });
    req.pipe(upstream);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests: () => log.map((r) => ({ ...r })),
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
