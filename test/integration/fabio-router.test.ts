/**
 * The Fabio-rules router (test/support/fabio-router.ts) against a real Consul 1.8.7 and small HTTP
 * backends: the rules of docs/protocols.md §4.2 and §4.2.1, checked by sending requests through it.
 * Every scenario uses its own hostnames and service ids, so they share one Consul and one router.
 */
import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { deregisterService, startConsul, type ConsulInstance } from '../support/consul.js';
import {
  registerRoutedService,
  routeTag,
  setCheckStatus,
  startAppBackend,
  startFabioRouter,
  type AppBackend,
  type FabioRouter,
} from '../support/fabio-router.js';
import { freePort } from '../support/net.js';
import { waitFor } from '../support/wait.js';

const ROUTE_TIMEOUT_MS = 10_000;

let consul: ConsulInstance;
let router: FabioRouter;
const backends = new Map<string, AppBackend>();

/** A backend answering `app <name>`, started once per name. */
async function backend(name: string): Promise<AppBackend> {
  const existing = backends.get(name);
  if (existing) return existing;
  const started = await startAppBackend(name);
  backends.set(name, started);
  return started;
}

/** Registers service `name` (one instance, id = name) on its own backend with passing checks. */
async function routed(name: string, tags: string[], checks?: Array<'passing' | 'critical'>): Promise<string[]> {
  const app = await backend(name);
  return registerRoutedService(consul.address, { id: name, port: app.port, tags, ...(checks ? { checks } : {}) });
}

/** A GET through `r` with exactly this Host header. */
function getWithHost(r: FabioRouter, hostHeader: string, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      { host: '127.0.0.1', port: r.port, path, agent: false, timeout: 10_000, headers: { host: hostHeader } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      },
    );
    req.on('timeout', () => req.destroy(new Error('no answer')));
    req.on('error', reject);
    req.end();
  });
}

async function answersOf(host: string, path: string, times: number): Promise<string[]> {
  const answers: string[] = [];
  for (let i = 0; i < times; i++) {
    const res = await router.get(host, path);
    answers.push(`${res.status} ${res.body}`);
  }
  return answers;
}

async function waitUntilUnrouted(r: FabioRouter, host: string, path: string): Promise<void> {
  await waitFor(`${host}${path} to have no route\n${r.describe()}`, () => r.lookup(host, path) === undefined, {
    timeoutMs: ROUTE_TIMEOUT_MS,
    intervalMs: 50,
  });
}

describe('the Fabio-rules router against a real Consul', () => {
  before(async () => {
    consul = await startConsul();
    router = await startFabioRouter({ consulAddress: consul.address });
  });
  after(async () => {
    await router?.close();
    await Promise.all([...backends.values()].map((b) => b.close()));
    await consul?.stop();
  });

  it("tries a host's own routes first and falls back to host-less routes when none of them matches", async () => {
    await routed('hostless', [routeTag('')]);
    await routed('host-a', [routeTag('a.rules.test')]);
    await routed('host-b-api', [routeTag('b.rules.test', '/api/')]);
    await router.waitForRoute('anything.test', '/', { service: 'hostless', timeoutMs: ROUTE_TIMEOUT_MS });
    await router.waitForRoute('a.rules.test', '/', { service: 'host-a', timeoutMs: ROUTE_TIMEOUT_MS });
    await router.waitForRoute('b.rules.test', '/api/', { service: 'host-b-api', timeoutMs: ROUTE_TIMEOUT_MS });

    assert.deepEqual(await router.get('a.rules.test', '/x'), { status: 200, body: 'app host-a' });
    assert.deepEqual(await router.get('c.rules.test', '/x'), { status: 200, body: 'app hostless' });
    assert.deepEqual(await router.get('b.rules.test', '/api/1'), { status: 200, body: 'app host-b-api' });
    // b.rules.test has routes, but none for /other: Fabio moves on to the host-less routes.
    assert.deepEqual(await router.get('b.rules.test', '/other'), { status: 200, body: 'app hostless' });

    const last = router.requests().at(-1)!;
    assert.equal(last.host, 'b.rules.test');
    assert.deepEqual(last.route, { host: '', path: '/' });
    assert.equal(last.backend?.service, 'hostless');

    // The other scenarios expect no catch-all route.
    await deregisterService(consul.address, 'hostless');
    await waitUntilUnrouted(router, 'c.rules.test', '/x');
  });

  it('tries paths within a host longest first, so the challenge route beats an app that claims /.well-known/', async () => {
    await routed('claimer', [routeTag('app.rules.test'), routeTag('app.rules.test', '/.well-known/')]);
    await routed('issuer', [routeTag('app.rules.test', '/.well-known/acme-challenge/')]);
    await router.waitForRoute('app.rules.test', '/.well-known/acme-challenge/t', {
      service: 'issuer',
      timeoutMs: ROUTE_TIMEOUT_MS,
    });

    assert.deepEqual(
      router
        .table()
        .filter((r) => r.host === 'app.rules.test')
        .map((r) => `${r.path} ${r.targets.map((t) => t.service).join(',')}`),
      ['/.well-known/acme-challenge/ issuer', '/.well-known/ claimer', '/ claimer'],
    );
    assert.deepEqual(await router.get('app.rules.test', '/.well-known/acme-challenge/token-1'), {
      status: 200,
      body: 'app issuer',
    });
    assert.deepEqual(await router.get('app.rules.test', '/.well-known/other'), { status: 200, body: 'app claimer' });
    assert.deepEqual(await router.get('app.rules.test', '/'), { status: 200, body: 'app claimer' });
    // The Host header reaches the backend unchanged.
    assert.equal((await backend('issuer')).requests().at(-1)?.host, `app.rules.test:${router.port}`);
  });

  it('routes only to instances with a passing check, and follows their checks as they change', async () => {
    const one = await startAppBackend('gated one');
    const two = await startAppBackend('gated two');
    backends.set('gated-1', one);
    backends.set('gated-2', two);
    const tags = [routeTag('gated.rules.test')];
    const [check1] = await registerRoutedService(consul.address, {
      id: 'gated-1',
      name: 'gated',
      port: one.port,
      tags,
    });
    const [check2] = await registerRoutedService(consul.address, {
      id: 'gated-2',
      name: 'gated',
      port: two.port,
      tags,
      checks: ['critical'],
    });
    const first = await router.waitForRoute('gated.rules.test', '/', { timeoutMs: ROUTE_TIMEOUT_MS });
    assert.deepEqual(
      first.targets.map((t) => t.instanceId),
      ['gated-1'],
    );
    assert.deepEqual(new Set(await answersOf('gated.rules.test', '/', 10)), new Set(['200 app gated one']));

    await setCheckStatus(consul.address, check2!, 'passing');
    await waitFor('both gated instances routed', () => router.lookup('gated.rules.test', '/')?.targets.length === 2, {
      timeoutMs: ROUTE_TIMEOUT_MS,
      intervalMs: 50,
    });
    // Fabio's default strategy is random: 40 requests all to one of two instances would be a 2^-39 chance.
    assert.deepEqual(
      new Set(await answersOf('gated.rules.test', '/', 40)),
      new Set(['200 app gated one', '200 app gated two']),
    );

    await setCheckStatus(consul.address, check1!, 'critical');
    await waitFor(
      'only gated-2 routed',
      () =>
        router
          .lookup('gated.rules.test', '/')
          ?.targets.map((t) => t.instanceId)
          .join() === 'gated-2',
      { timeoutMs: ROUTE_TIMEOUT_MS, intervalMs: 50 },
    );
    await setCheckStatus(consul.address, check2!, 'warning');
    await waitUntilUnrouted(router, 'gated.rules.test', '/');
    assert.deepEqual(await router.get('gated.rules.test', '/'), { status: 404, body: 'no route\n' });

    const removed = router.routeChanges().filter((c) => c.host === 'gated.rules.test' && c.change === 'removed');
    assert.deepEqual(
      removed.map((c) => c.instanceId),
      ['gated-1', 'gated-2'],
    );
  });

  it("routes an instance with one passing check of two by Fabio's default, and not with checksRequired all", async () => {
    const strict = await startFabioRouter({ consulAddress: consul.address, checksRequired: 'all' });
    try {
      const [, second] = await routed('halfway', [routeTag('halfway.rules.test')], ['passing', 'critical']);
      await router.waitForRoute('halfway.rules.test', '/', { service: 'halfway', timeoutMs: ROUTE_TIMEOUT_MS });
      // Registered after `halfway`: once the strict router routes it, it has seen `halfway` too.
      await routed('witness', [routeTag('witness.rules.test')]);
      await strict.waitForRoute('witness.rules.test', '/', { service: 'witness', timeoutMs: ROUTE_TIMEOUT_MS });
      assert.equal(strict.lookup('halfway.rules.test', '/'), undefined, strict.describe());

      await setCheckStatus(consul.address, second!, 'passing');
      await strict.waitForRoute('halfway.rules.test', '/', { service: 'halfway', timeoutMs: ROUTE_TIMEOUT_MS });
    } finally {
      await strict.close();
    }
  });

  it('takes turns between the instances of a route with the rr strategy', async () => {
    const rr = await startFabioRouter({ consulAddress: consul.address, strategy: 'rr' });
    try {
      const first = await startAppBackend('pair one');
      const second = await startAppBackend('pair two');
      backends.set('pair-1', first);
      backends.set('pair-2', second);
      const tags = [routeTag('pair.rules.test')];
      await registerRoutedService(consul.address, { id: 'pair-1', name: 'pair', port: first.port, tags });
      await registerRoutedService(consul.address, { id: 'pair-2', name: 'pair', port: second.port, tags });
      await waitFor('both pair instances routed', () => rr.lookup('pair.rules.test', '/')?.targets.length === 2, {
        timeoutMs: ROUTE_TIMEOUT_MS,
        intervalMs: 50,
      });
      const answers: string[] = [];
      for (let i = 0; i < 6; i++) answers.push((await rr.get('pair.rules.test', '/')).body);
      assert.equal(new Set(answers).size, 2, answers.join());
      assert.ok(
        answers.every((a, i) => i === 0 || a !== answers[i - 1]),
        `not alternating: ${answers.join()}`,
      );
    } finally {
      await rr.close();
    }
  });

  it('answers 404 when no route matches and 502 when the instance refuses, and records both', async () => {
    assert.deepEqual(await router.get('nobody.rules.test', '/x'), { status: 404, body: 'no route\n' });
    const noRoute = router.requests().at(-1)!;
    assert.equal(noRoute.host, 'nobody.rules.test');
    assert.equal(noRoute.path, '/x');
    assert.equal(noRoute.route, undefined);
    assert.equal(noRoute.backend, undefined);
    assert.equal(noRoute.status, 404);

    const closedPort = await freePort();
    await registerRoutedService(consul.address, {
      id: 'refuser',
      port: closedPort,
      tags: [routeTag('refuser.rules.test')],
    });
    await router.waitForRoute('refuser.rules.test', '/', { service: 'refuser', timeoutMs: ROUTE_TIMEOUT_MS });
    const res = await router.get('refuser.rules.test', '/y');
    assert.equal(res.status, 502);
    const refused = router.requests().at(-1)!;
    assert.deepEqual(
      { status: refused.status, service: refused.backend?.service, instance: refused.backend?.instanceId },
      { status: 502, service: 'refuser', instance: 'refuser' },
    );
    assert.equal(`${refused.backend?.address}:${refused.backend?.port}`, `127.0.0.1:${closedPort}`);
    assert.match(refused.error ?? '', /ECONNREFUSED/);
  });

  it('treats its own port as Fabio treats :80 and keeps any other port in the host; hosts are case-insensitive', async () => {
    await routed('ported', [routeTag('ported.rules.test')]);
    await router.waitForRoute('ported.rules.test', '/', { service: 'ported', timeoutMs: ROUTE_TIMEOUT_MS });
    assert.deepEqual(await getWithHost(router, `ported.rules.test:${router.port}`, '/'), {
      status: 200,
      body: 'app ported',
    });
    assert.deepEqual(await getWithHost(router, 'PORTED.Rules.Test', '/'), { status: 200, body: 'app ported' });
    const otherPort = router.port === 65535 ? 65534 : router.port + 1;
    assert.equal((await getWithHost(router, `ported.rules.test:${otherPort}`, '/')).status, 404);
    assert.equal(router.requests().at(-1)?.host, `ported.rules.test:${otherPort}`);
  });

  it('matches glob hosts, the most specific host first', async () => {
    await routed('glob-any', [routeTag('*.glob.test')]);
    await routed('glob-a', [routeTag('*.a.glob.test')]);
    await routed('glob-exact', [routeTag('x.a.glob.test')]);
    await router.waitForRoute('x.a.glob.test', '/', { service: 'glob-exact', timeoutMs: ROUTE_TIMEOUT_MS });
    await router.waitForRoute('y.a.glob.test', '/', { service: 'glob-a', timeoutMs: ROUTE_TIMEOUT_MS });
    await router.waitForRoute('y.glob.test', '/', { service: 'glob-any', timeoutMs: ROUTE_TIMEOUT_MS });
    assert.deepEqual(await router.get('x.a.glob.test', '/'), { status: 200, body: 'app glob-exact' });
    assert.deepEqual(await router.get('y.a.glob.test', '/'), { status: 200, body: 'app glob-a' });
    assert.deepEqual(await router.get('y.glob.test', '/'), { status: 200, body: 'app glob-any' });
    assert.equal((await router.get('glob.test', '/')).status, 404);
  });

  it('follows tag changes, parses options after a space, applies strip= and skips TCP routes', async () => {
    await routed('opts', [routeTag('opts.rules.test', '/api strip=/api'), 'urlprefix-:7000 proto=tcp', 'other-tag']);
    const match = await router.waitForRoute('opts.rules.test', '/api/items', {
      service: 'opts',
      timeoutMs: ROUTE_TIMEOUT_MS,
    });
    assert.deepEqual(match.route, { host: 'opts.rules.test', path: '/api' });
    assert.equal(match.targets[0]?.options, 'strip=/api');
    assert.ok(!router.table().some((r) => r.host.startsWith(':')), router.describe());
    assert.deepEqual(await router.get('opts.rules.test', '/api/items'), { status: 200, body: 'app opts' });
    assert.equal((await backend('opts')).requests().at(-1)?.path, '/items');

    const renamedAt = Date.now();
    await routed('opts', [routeTag('opts2.rules.test')]);
    await router.waitForRoute('opts2.rules.test', '/', { service: 'opts', timeoutMs: ROUTE_TIMEOUT_MS });
    await waitUntilUnrouted(router, 'opts.rules.test', '/api/items');
    const changes = router
      .routeChanges()
      .filter((c) => c.service === 'opts' && c.at >= renamedAt)
      .map((c) => `${c.change} ${c.host}${c.path}`)
      .sort();
    assert.deepEqual(changes, ['added opts2.rules.test/', 'removed opts.rules.test/api']);
    const liveAt = router.routeLiveAt('opts2.rules.test', '/', 'opts', renamedAt);
    assert.ok(liveAt !== undefined && liveAt >= renamedAt && liveAt <= Date.now(), `route live at ${liveAt}`);
    assert.equal(router.routeLiveAt('opts2.rules.test', '/', 'someone-else', renamedAt), undefined);
  });
});
