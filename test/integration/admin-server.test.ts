import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { FastifyInstance } from 'fastify';
import { buildAdminServer } from '../../src/http/admin-server.js';
import type { StatusReport } from '../../src/engine/status.js';
import { silentLogger } from '../../src/logging.js';
import { fetchStatus } from '../../src/cli/status-command.js';
import type { CertificateHealth } from '../../src/domain/certificate-health.js';
import { createServer as createHttpServer } from 'node:http';
import { freePort } from '../support/net.js';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';

const REPORT: StatusReport = {
  instance: 'node-1',
  ready: true,
  store: 'vault',
  storeHealth: { error: undefined, failingSince: undefined },
  directoryUrl: 'https://127.0.0.1:14000/dir',
  discovery: { lastSyncAt: '2025-03-01T10:00:00.000Z', lastError: undefined, services: 2 },
  certificates: [
    {
      hostname: 'app.example.com',
      state: 'valid',
      reason: 'NotYetDue',
      services: ['app'],
      expiresAt: '2025-05-30T10:00:00.000Z',
      renewsAt: '2025-05-01T10:00:00.000Z',
      retiresAt: undefined,
      lastError: undefined,
      policy: undefined,
      waitingFor: undefined,
      attempts: 0,
      nextAttemptAt: undefined,
    },
  ],
  policy: { deny: 0, allow: 0, always: 0, invalid: [], unreadable: [], failsClosed: undefined },
  rejected: [{ value: 'localhost', reason: 'not a public name', service: 'web', tag: 'urlprefix-localhost/' }],
  sinks: [],
};

interface Switches {
  live: boolean;
  ready: boolean | 'throw';
  status: 'ok' | 'throw';
  health?: CertificateHealth;
}

async function start(switches: Switches, adminToken?: string): Promise<{ app: FastifyInstance; base: string }> {
  const app = buildAdminServer({
    adminToken,
    logger: silentLogger(),
    isLive: () => switches.live,
    isReady: async () => {
      if (switches.ready === 'throw') throw new Error('consul down');
      return switches.ready;
    },
    status: () => {
      if (switches.status === 'throw') throw new Error('boom');
      return REPORT;
    },
    certificateHealth: () => switches.health ?? { status: 'passing', problems: [] },
    metrics: async () => ({ contentType: 'text/plain; version=0.0.4', body: 'm 1\n' }),
  });
  await app.listen({ port: 0, host: '127.0.0.1' });
  return { app, base: `http://127.0.0.1:${(app.server.address() as AddressInfo).port}` };
}

async function getJson(
  url: string,
  init?: RequestInit,
): Promise<{ status: number; type: string | null; body: unknown }> {
  const res = await fetch(url, init);
  const text = await res.text();
  return {
    status: res.status,
    type: res.headers.get('content-type'),
    body: text === '' ? undefined : JSON.parse(text),
  };
}

describe('admin server over real HTTP', () => {
  const switches: Switches = { live: true, ready: true, status: 'ok' };
  let app: FastifyInstance;
  let base: string;

  before(async () => {
    ({ app, base } = await start(switches));
  });
  after(async () => {
    await app.close();
  });

  it('reports live as 200 {"status":"ok"}', async () => {
    switches.live = true;
    const res = await getJson(`${base}/health/live`);
    assert.equal(res.status, 200);
    assert.match(res.type ?? '', /^application\/json/);
    assert.deepEqual(res.body, { status: 'ok' });
  });

  it('reports not live as 503', async () => {
    switches.live = false;
    const res = await getJson(`${base}/health/live`);
    assert.equal(res.status, 503);
    switches.live = true;
  });

  it('reports ready as 200 {"status":"ready"}', async () => {
    switches.ready = true;
    const res = await getJson(`${base}/health/ready`);
    assert.equal(res.status, 200);
    assert.deepEqual(res.body, { status: 'ready' });
  });

  it('reports not ready as 503 {"status":"not ready"}, which Consul treats as critical', async () => {
    switches.ready = false;
    const res = await getJson(`${base}/health/ready`);
    assert.equal(res.status, 503);
    assert.deepEqual(res.body, { status: 'not ready' });
    switches.ready = true;
  });

  it('reports a readiness probe that throws as 503 not ready', async () => {
    switches.ready = 'throw';
    const res = await getJson(`${base}/health/ready`);
    assert.equal(res.status, 503);
    assert.deepEqual(res.body, { status: 'not ready' });
    switches.ready = true;
  });

  it('serves the status report as JSON, unchanged', async () => {
    const res = await getJson(`${base}/status`);
    assert.equal(res.status, 200);
    assert.match(res.type ?? '', /^application\/json/);
    // undefined fields are dropped by JSON, as they are for every client.
    assert.deepEqual(res.body, JSON.parse(JSON.stringify(REPORT)));
  });

  it('answers 500 with a JSON error when the status report cannot be built', async () => {
    switches.status = 'throw';
    const res = await getJson(`${base}/status`);
    assert.equal(res.status, 500);
    assert.deepEqual(res.body, { error: 'status report failed' });
    switches.status = 'ok';
  });

  for (const [method, path] of [
    ['GET', '/'],
    ['GET', '/nope'],
    ['GET', '/.well-known/acme-challenge/abc'],
    ['POST', '/health/live'],
    ['DELETE', '/status'],
  ] as const) {
    it(`answers ${method} ${path} with 404 {"error":"not found"}`, async () => {
      const res = await getJson(`${base}${path}`, { method });
      assert.equal(res.status, 404);
      assert.match(res.type ?? '', /^application\/json/);
      assert.deepEqual(res.body, { error: 'not found' });
    });
  }

  it('serves the Prometheus exposition at /metrics', async () => {
    const res = await fetch(`${base}/metrics`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^text\/plain/);
    assert.equal(await res.text(), 'm 1\n');
  });

  for (const [status, code] of [
    ['passing', 200],
    ['warning', 429],
    ['critical', 503],
  ] as const) {
    it(`certificate health ${status} answers ${code}, which Consul reads as ${status}`, async () => {
      switches.health = { status, problems: status === 'passing' ? [] : ['a.example.com: expires soon'] };
      const res = await getJson(`${base}/health/certificates`);
      assert.equal(res.status, code);
      assert.deepEqual(res.body, switches.health);
    });
  }
});

describe('fetchStatus (what `consul-acme status` calls)', () => {
  const switchesForFetch: Switches = { live: true, ready: true, status: 'ok' };
  let app: FastifyInstance;
  let base: string;
  let silent: Server;
  let silentPort: number;
  const silentSockets: Socket[] = [];

  before(async () => {
    ({ app, base } = await start(switchesForFetch));
    // Accepts connections and never answers.
    silent = createServer((socket) => void silentSockets.push(socket));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    silentPort = (silent.address() as AddressInfo).port;
  });
  after(async () => {
    await app.close();
    for (const socket of silentSockets) socket.destroy();
    await new Promise<void>((resolve) => silent.close(() => resolve()));
  });

  it('returns the report a running instance serves', async () => {
    assert.deepEqual(await fetchStatus(`${base}/`), JSON.parse(JSON.stringify(REPORT)));
  });

  it('says which address it cannot reach and why', async () => {
    const port = await freePort();
    await assert.rejects(fetchStatus(`http://127.0.0.1:${port}`, { timeoutMs: 2000 }), {
      message: new RegExp(`^cannot reach consul-acme at http://127\\.0\\.0\\.1:${port}: .*ECONNREFUSED`),
    });
  });

  it('gives up after the timeout when the instance does not answer', async () => {
    await assert.rejects(fetchStatus(`http://127.0.0.1:${silentPort}`, { timeoutMs: 300 }), {
      message: `cannot reach consul-acme at http://127.0.0.1:${silentPort}: no answer within 300 ms`,
    });
  });

  it('reports an HTTP error status with the start of the body', async () => {
    switchesForFetch.status = 'throw';
    try {
      await assert.rejects(fetchStatus(base), {
        message: `consul-acme at ${base} answered ${base}/status with HTTP 500: {"error":"status report failed"}`,
      });
    } finally {
      switchesForFetch.status = 'ok';
    }
  });

  it('refuses an answer that is not a status report', async () => {
    const other = createHttpServer((_req, res) =>
      res.setHeader('content-type', 'application/json').end('{"hello":"world"}'),
    );
    await new Promise<void>((resolve) => other.listen(0, '127.0.0.1', resolve));
    const otherBase = `http://127.0.0.1:${(other.address() as AddressInfo).port}`;
    try {
      await assert.rejects(fetchStatus(otherBase), {
        message: `${otherBase}/status did not return a consul-acme status report (is ${otherBase} the admin address?)`,
      });
    } finally {
      other.close();
    }
  });
});

describe('admin server with an admin token', () => {
  const TOKEN = 'the-admin-token-of-this-test';
  let app: FastifyInstance;
  let base: string;

  before(async () => {
    ({ app, base } = await start({ live: true, ready: true, status: 'ok' }, TOKEN));
  });
  after(async () => {
    await app.close();
  });

  it('answers /status and /metrics only with the token as a bearer token', async () => {
    for (const path of ['/status', '/metrics']) {
      const without = await fetch(`${base}${path}`);
      assert.equal(without.status, 401, `${path} without a token`);
      assert.equal(without.headers.get('www-authenticate'), 'Bearer');
      assert.deepEqual(await without.json(), { error: 'admin token required' });
      const wrong = await fetch(`${base}${path}`, { headers: { authorization: 'Bearer not-the-token-at-all' } });
      assert.equal(wrong.status, 401, `${path} with a wrong token`);
      const right = await fetch(`${base}${path}`, { headers: { authorization: `Bearer ${TOKEN}` } });
      assert.equal(right.status, 200, `${path} with the token`);
    }
  });

  it("keeps the health paths open for Consul's checks", async () => {
    for (const path of ['/health/live', '/health/ready', '/health/certificates']) {
      assert.equal((await fetch(`${base}${path}`)).status, 200, path);
    }
  });

  it('consul-acme status sends the token, and says what to set when it has none', async () => {
    assert.equal((await fetchStatus(base, { adminToken: TOKEN })).instance, REPORT.instance);
    await assert.rejects(fetchStatus(base), {
      message: `consul-acme at ${base} wants the admin token: set CONSUL_ACME_ADMIN_TOKEN to the instance's token`,
    });
    await assert.rejects(fetchStatus(base, { adminToken: 'wrong-token-of-some-length' }), /the one set was refused/);
  });
});
