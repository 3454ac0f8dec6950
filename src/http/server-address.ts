import type { FastifyInstance } from 'fastify';

/** The URL a listening Fastify server answers on, e.g. `http://127.0.0.1:8080` or `http://[::1]:8080`. */
export function addressOf(app: FastifyInstance): string {
  const address = app.server.address();
  if (address === null || typeof address === 'string') return String(address);
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return `http://${host}:${address.port}`;
}
