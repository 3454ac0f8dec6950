/**
 * ServiceRegistration against a real Consul 1.8.7 agent (what `/v1/agent/services`,
 * `/v1/agent/checks` and `/v1/health/service` show is what Fabio would see), the contract cases
 * shared with MemoryServiceRegistration, and the restartable Consul of test/support/consul.ts.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { createConsulClient, type Consul } from '../../src/adapters/consul/consul-client.js';
import {
  ConsulServiceRegistration,
  FULL_REASSERT_EVERY,
  REGISTRATION_META_KEY,
  type ConsulServiceRegistrationOptions,
} from '../../src/adapters/consul/consul-service-registration.js';
import { MemoryServiceRegistration } from '../../src/adapters/memory/memory-service-registration.js';
import { ConsulAcmeError } from '../../src/errors.js';
import type { ServiceRegistration } from '../../src/ports/service-registration.js';
import { startConsul, type ConsulInstance } from '../support/consul.js';
import { startRoundRobinProxy } from '../support/round-robin-proxy.js';
import { waitFor } from '../support/wait.js';

interface AgentService {
  ID: string;
  Service: string;
  Tags: string[] | null;
  Port: number;
  Address: string;
  Meta: Record<string, string> | null;
}

interface AgentCheck {
  CheckID: string;
  ServiceID: string;
  Status: string;
  Type: string;
}

let server: ConsulInstance | undefined;
let consul: Consul | undefined;

async function agentServices(address = server!.address): Promise<Record<string, AgentService>> {
  const res = await fetch(`${address}/v1/agent/services`);
  assert.equal(res.status, 200);
  return (await res.json()) as Record<string, AgentService>;
}

async function agentChecks(address = server!.address): Promise<Record<string, AgentCheck>> {
  const res = await fetch(`${address}/v1/agent/checks`);
  assert.equal(res.status, 200);
  return (await res.json()) as Record<string, AgentCheck>;
}

/** Instance ids of `name` whose checks all pass, as Fabio asks for them. */
async function passingIds(name: string): Promise<string[]> {
  const res = await fetch(`${server!.address}/v1/health/service/${name}?passing`);
  assert.equal(res.status, 200);
  return ((await res.json()) as Array<{ Service: { ID: string } }>).map((e) => e.Service.ID).sort();
}

/** Every tag the agent holds for the registrations whose id starts with `serviceId`. */
/** A registration that shards above 50 tags, so that a few hundred names make several shards. */
function shardedRegistration(consul: Consul, serviceId: string): ConsulServiceRegistration {
  return new ConsulServiceRegistration({ consul, serviceId, port: 8402, maxTagsPerRegistration: 50 });
}

async function registeredTags(serviceId: string, address = server!.address): Promise<string[]> {
  const services = await agentServices(address);
  return Object.values(services)
    .filter((s) => s.ID === serviceId || s.ID.startsWith(`${serviceId}-`))
    .flatMap((s) => s.Tags ?? [])
    .sort();
}

async function deregisterBehindItsBack(id: string): Promise<void> {
  const res = await fetch(`${server!.address}/v1/agent/service/deregister/${id}`, { method: 'PUT' });
  assert.equal(res.status, 200);
}

const challengeTag = (host: string): string => `urlprefix-${host}/.well-known/acme-challenge/`;

/** Registers `id` again through the agent's API with other tags, as another writer would. */
async function retagBehindItsBack(
  id: string,
  serviceId: string,
  check?: { Name: string; HTTP: string },
): Promise<void> {
  const res = await fetch(`${server!.address}/v1/agent/service/register`, {
    method: 'PUT',
    body: JSON.stringify({
      ID: id,
      Name: 'consul-acme',
      Port: 8402,
      Tags: ['urlprefix-wrong/'],
      Meta: { [REGISTRATION_META_KEY]: serviceId },
      ...(check !== undefined ? { Check: { ...check, Interval: '10s' } } : {}),
    }),
  });
  assert.equal(res.status, 200);
}

/** An HTTP endpoint for checks, answering 200 while `healthy`; `polls` counts the requests. */
async function checkTarget(): Promise<{
  url: string;
  setHealthy(h: boolean): void;
  polls(): number;
  close(): Promise<void>;
}> {
  let healthy = true;
  let polls = 0;
  const http: Server = createServer((_req, res) => {
    polls += 1;
    res.statusCode = healthy ? 200 : 503;
    res.end(healthy ? 'ok' : 'not ready');
  });
  await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(http.address() as AddressInfo).port}/health/ready`,
    setHealthy: (h) => {
      healthy = h;
    },
    polls: () => polls,
    close: () => new Promise((resolve) => http.close(() => resolve())),
  };
}

function consulRegistration(
  opts: Partial<ConsulServiceRegistrationOptions> & { serviceId: string },
): ConsulServiceRegistration {
  return new ConsulServiceRegistration({ consul: consul!, port: 8402, ...opts });
}

// ---------------------------------------------------------------------------------------------
// The contract, on both implementations

interface Subject {
  name: string;
  setup(): Promise<void>;
  teardown(): Promise<void>;
  create(): ServiceRegistration;
  /** The tags the agent holds for `registration` (undefined: not registered). */
  held(registration: ServiceRegistration): Promise<string[] | undefined>;
  /** Loses the registration behind the object's back, as an agent restarted without its data would. */
  lose(registration: ServiceRegistration): Promise<void>;
}

const consulIds = new WeakMap<ServiceRegistration, string>();

const subjects: Subject[] = [
  {
    name: 'MemoryServiceRegistration',
    setup: async () => undefined,
    teardown: async () => undefined,
    create: () => new MemoryServiceRegistration(),
    held: async (r) => {
      const m = r as MemoryServiceRegistration;
      return m.isRegistered() ? [...(m.tags ?? [])].sort() : undefined;
    },
    lose: async (r) => (r as MemoryServiceRegistration).lose(),
  },
  {
    name: 'ConsulServiceRegistration',
    setup: async () => {
      server = await startConsul();
      consul = createConsulClient({ address: server.address });
    },
    teardown: async () => {
      consul?.destroy();
      await server?.stop();
    },
    create: () => {
      const serviceId = `consul-acme-${randomUUID()}`;
      const r = consulRegistration({ serviceId, maxTagsPerRegistration: 4 });
      consulIds.set(r, serviceId);
      return r;
    },
    held: async (r) => {
      const id = consulIds.get(r)!;
      const services = await agentServices();
      const ours = Object.values(services).filter((s) => s.Meta?.[REGISTRATION_META_KEY] === id);
      return ours.length === 0 ? undefined : ours.flatMap((s) => s.Tags ?? []).sort();
    },
    lose: async (r) => {
      const id = consulIds.get(r)!;
      const services = await agentServices();
      for (const s of Object.values(services)) {
        if (s.Meta?.[REGISTRATION_META_KEY] === id) await deregisterBehindItsBack(s.ID);
      }
    },
  },
];

for (const subject of subjects) {
  describe(`ServiceRegistration contract: ${subject.name}`, () => {
    before(() => subject.setup());
    after(() => subject.teardown());

    it('registers exactly the tags given, and replaces them on change', async () => {
      const r = subject.create();
      await r.update(['b', 'a', 'a']);
      assert.deepEqual(await subject.held(r), ['a', 'b']);
      await r.update(['c', 'd', 'e', 'f', 'g', 'h']);
      assert.deepEqual(await subject.held(r), ['c', 'd', 'e', 'f', 'g', 'h']);
      await r.update([]);
      assert.deepEqual(await subject.held(r), []);
      await r.deregister();
    });

    it('has nothing to reassert before the first update', async () => {
      const r = subject.create();
      assert.equal(await r.reassert(), false);
      assert.equal(await subject.held(r), undefined);
    });

    it('reasserts nothing while the agent holds the registration', async () => {
      const r = subject.create();
      await r.update(['a', 'b']);
      assert.equal(await r.reassert(), false);
      assert.deepEqual(await subject.held(r), ['a', 'b']);
      await r.deregister();
    });

    it('registers again, with the same tags, what the agent lost, and says so once', async () => {
      const r = subject.create();
      const tags = ['t1', 't2', 't3', 't4', 't5', 't6', 't7', 't8', 't9'];
      await r.update(tags);
      await subject.lose(r);
      assert.equal(await subject.held(r), undefined);
      assert.equal(await r.reassert(), true);
      assert.deepEqual(await subject.held(r), tags);
      assert.equal(await r.reassert(), false, 'restored: nothing more to do');
      await r.deregister();
    });

    it('does not send an identical update again, even when the agent lost it (reassert heals that)', async () => {
      const r = subject.create();
      await r.update(['x', 'y']);
      await subject.lose(r);
      await r.update(['y', 'x']);
      assert.equal(await subject.held(r), undefined, 'identical update skipped');
      assert.equal(await r.reassert(), true);
      assert.deepEqual(await subject.held(r), ['x', 'y']);
      await r.deregister();
    });

    it('deregisters idempotently, and then has nothing to reassert', async () => {
      const r = subject.create();
      await r.update(['a']);
      await r.deregister();
      assert.equal(await subject.held(r), undefined);
      await r.deregister();
      assert.equal(await r.reassert(), false);
      assert.equal(await subject.held(r), undefined);
      await r.update(['d']);
      assert.deepEqual(await subject.held(r), ['d'], 're-registers after deregister');
      await r.deregister();
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Consul specifics

describe('ConsulServiceRegistration against a real agent', () => {
  before(async () => {
    server = await startConsul();
    consul = createConsulClient({ address: server.address });
  });
  after(async () => {
    consul?.destroy();
    await server?.stop();
  });

  it('registers the service with its name, address, port and meta, and a marker naming the registration', async () => {
    const serviceId = `consul-acme-${randomUUID()}`;
    const registration = consulRegistration({ serviceId, address: '127.0.0.1', meta: { version: 'test' } });
    await registration.update([challengeTag('a.example.com'), challengeTag('b.example.com')]);
    const service = (await agentServices())[serviceId];
    assert.ok(service, 'registered under the plain id while one registration suffices');
    assert.equal(service.Service, 'consul-acme');
    assert.equal(service.Port, 8402);
    assert.equal(service.Address, '127.0.0.1');
    assert.deepEqual(service.Meta, { version: 'test', [REGISTRATION_META_KEY]: serviceId });
    await registration.deregister();
    assert.equal((await agentServices())[serviceId], undefined, 'deregistered');
  });

  it('registers an HTTP check that passes while the URL answers 2xx', async () => {
    const target = await checkTarget();
    const serviceId = `consul-acme-${randomUUID()}`;
    const registration = consulRegistration({ serviceId, checkHttpUrl: target.url, checkIntervalSeconds: 1 });
    try {
      await registration.update([challengeTag('checked.example.com')]);
      await waitFor('the check to pass', async () =>
        Object.values(await agentChecks()).some((c) => c.ServiceID === serviceId && c.Status === 'passing'),
      );
      target.setHealthy(false);
      await waitFor('the check to go critical', async () =>
        Object.values(await agentChecks()).some((c) => c.ServiceID === serviceId && c.Status === 'critical'),
      );
      await registration.deregister();
      assert.ok(
        !Object.values(await agentChecks()).some((c) => c.ServiceID === serviceId),
        'check removed with the service',
      );
    } finally {
      await target.close();
    }
  });

  it('is routable at once with initialCheckStatus passing; without it a new check starts critical', async () => {
    // The check URL never answers and the interval is long: any passing status is the initial one.
    const deadUrl = 'http://127.0.0.1:1/health/ready';
    const name = `routable-${randomUUID()}`;
    const withStatus = consulRegistration({
      serviceId: `${name}-a`,
      serviceName: name,
      checkHttpUrl: deadUrl,
      checkIntervalSeconds: 3600,
      initialCheckStatus: 'passing',
    });
    const without = consulRegistration({
      serviceId: `${name}-b`,
      serviceName: name,
      checkHttpUrl: deadUrl,
      checkIntervalSeconds: 3600,
    });
    await Promise.all([withStatus.update(['x']), without.update(['y'])]);
    assert.deepEqual(await passingIds(name), [`${name}-a`]);
    const checks = await agentChecks();
    assert.equal(checks[`service:${name}-b`]?.Status, 'critical');
    // Lost and restored: the restored check is passing at once too.
    await deregisterBehindItsBack(`${name}-a`);
    assert.deepEqual(await passingIds(name), []);
    assert.equal(await withStatus.reassert(), true);
    assert.deepEqual(await passingIds(name), [`${name}-a`]);
    await Promise.all([withStatus.deregister(), without.deregister()]);
  });

  it('re-registering an existing check keeps its status: a failing instance does not turn passing by an update', async () => {
    const target = await checkTarget();
    const name = `keeps-${randomUUID()}`;
    const registration = consulRegistration({
      serviceId: name,
      serviceName: name,
      checkHttpUrl: target.url,
      checkIntervalSeconds: 1,
      initialCheckStatus: 'passing',
    });
    try {
      target.setHealthy(false);
      await registration.update(['a']);
      await waitFor('the check to go critical', async () => (await passingIds(name)).length === 0);
      await registration.update(['a', 'b']);
      assert.deepEqual(await passingIds(name), [], 'still critical right after the update');
    } finally {
      await registration.deregister();
      await target.close();
    }
  });

  it('registers again when another writer changed the tags, and removes registrations an earlier run left', async () => {
    const serviceId = `consul-acme-${randomUUID()}`;
    const first = consulRegistration({ serviceId, maxTagsPerRegistration: 2 });
    const tags = ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'].map(challengeTag);
    await first.update(tags);
    const ids = first.registrationIds;
    assert.ok(ids.length >= 4, `sharded over ${ids.join(', ')}`);
    // Someone re-registers one shard with other tags.
    await retagBehindItsBack(ids[0]!, serviceId);
    assert.equal(await first.reassert(), true);
    assert.deepEqual(await registeredTags(serviceId), [...tags].sort());

    // A new process of the same instance, with fewer names: one registration, the old shards go.
    const second = consulRegistration({ serviceId, maxTagsPerRegistration: 2 });
    await second.update([challengeTag('a')]);
    assert.deepEqual(
      Object.keys(await agentServices()).filter((id) => id.startsWith(serviceId)),
      [serviceId],
    );
    assert.deepEqual(await registeredTags(serviceId), [challengeTag('a')]);
    await second.deregister();
    assert.deepEqual(await registeredTags(serviceId), []);
  });

  it('spreads many tags over shards of at most the limit, and a one-name change re-registers one shard', async () => {
    const proxy = await startRoundRobinProxy([{ name: 'consul', port: server!.httpPort }]);
    const client = createConsulClient({ address: proxy.url });
    const serviceId = `consul-acme-${randomUUID()}`;
    const registration = shardedRegistration(client, serviceId);
    try {
      const tags = Array.from({ length: 300 }, (_, i) => challengeTag(`host-${i}.example.com`));
      await registration.update(tags);
      const services = Object.values(await agentServices()).filter((s) => s.ID.startsWith(`${serviceId}-`));
      assert.equal(services.length, 6, `${services.length} shards`);
      for (const s of services) assert.ok((s.Tags ?? []).length <= 50, `${s.ID} holds ${(s.Tags ?? []).length} tags`);
      assert.deepEqual(
        services.flatMap((s) => s.Tags ?? []).sort(),
        [...tags].sort(),
        'every tag in exactly one shard',
      );

      // A new service's five names: one shard registered again, nothing else sent.
      const added = Array.from({ length: 5 }, (_, i) => challengeTag(`new-${i}.example.com`));
      const before = proxy.requests().length;
      await registration.change(added, []);
      const sent = proxy.requests().slice(before);
      assert.deepEqual(
        sent.map((r) => `${r.method} ${r.path.split('?')[0]}`),
        ['PUT /v1/agent/service/register'],
        'one shard registered again, nothing else sent',
      );
      assert.deepEqual(await registeredTags(serviceId), [...tags, ...added].sort());
    } finally {
      await registration.deregister();
      assert.deepEqual(await registeredTags(serviceId), [], 'every shard removed');
      client.destroy();
      await proxy.close();
    }
  });

  it('moves to more shards as names grow past the limit and back to the plain id as they shrink, with every tag in place at each step', async () => {
    const client = createConsulClient({ address: server!.address });
    const serviceId = `consul-acme-${randomUUID()}`;
    const registration = shardedRegistration(client, serviceId);
    const ids = async (): Promise<string[]> =>
      Object.keys(await agentServices())
        .filter((id) => id === serviceId || id.startsWith(`${serviceId}-`))
        .sort();
    try {
      const few = Array.from({ length: 40 }, (_, i) => challengeTag(`host-${i}.example.com`));
      await registration.update(few);
      assert.deepEqual(await ids(), [serviceId], 'one registration under the limit');
      assert.deepEqual(await registeredTags(serviceId), [...few].sort());

      const many = Array.from({ length: 160 }, (_, i) => challengeTag(`host-${i}.example.com`));
      await registration.update(many);
      const sharded = await ids();
      assert.ok(sharded.length >= 4 && !sharded.includes(serviceId), `sharded: ${sharded.join(', ')}`);
      assert.deepEqual(await registeredTags(serviceId), [...many].sort());

      const fewer = many.slice(0, 10);
      await registration.update(fewer);
      assert.deepEqual(await ids(), [serviceId], 'back to one registration well under the limit');
      assert.deepEqual(await registeredTags(serviceId), [...fewer].sort());
    } finally {
      await registration.deregister();
      client.destroy();
    }
  });

  it('checks the instance once however many shards: the first shard polls it, the others alias the first, and Fabio sees all pass or all fail', async () => {
    const target = await checkTarget();
    const serviceId = `consul-acme-${randomUUID()}`;
    const name = `aliased-${randomUUID()}`;
    const registration = consulRegistration({
      serviceId,
      serviceName: name,
      checkHttpUrl: target.url,
      checkIntervalSeconds: 1,
      initialCheckStatus: 'passing',
      maxTagsPerRegistration: 50,
    });
    try {
      await registration.update(Array.from({ length: 160 }, (_, i) => challengeTag(`host-${i}.example.com`)));
      const checks = Object.values(await agentChecks()).filter((c) => c.ServiceID.startsWith(`${serviceId}-`));
      const types = checks.map((c) => `${c.ServiceID.slice(serviceId.length + 1)}:${c.Type}`).sort();
      assert.ok(checks.length >= 4, `one check per shard: ${types.join(', ')}`);
      assert.deepEqual(
        types,
        checks
          .map((c) => c.ServiceID.slice(serviceId.length + 1))
          .sort()
          .map((n) => `${n}:${n === '0' ? 'http' : 'alias'}`),
      );
      await waitFor('every shard to pass', async () => (await passingIds(name)).length === checks.length);
      const before = target.polls();
      await sleep(3_000);
      const polled = target.polls() - before;
      assert.ok(
        polled >= 1 && polled <= 5,
        `one check a second polls the instance, not one per shard: ${polled} in 3 s`,
      );
      target.setHealthy(false);
      await waitFor('every shard to fail with the first', async () => (await passingIds(name)).length === 0);
      target.setHealthy(true);
      await waitFor('every shard to pass again', async () => (await passingIds(name)).length === checks.length);

      // Lost behind its back, every shard comes back, aliases included, and passes.
      for (const c of checks) await deregisterBehindItsBack(c.ServiceID);
      assert.equal(await registration.reassert(), true);
      await waitFor('the restored shards to pass', async () => (await passingIds(name)).length === checks.length);
      assert.equal(
        await registration.reassert(),
        false,
        'the agent now holds what was registered, alias checks included',
      );
    } finally {
      await registration.deregister();
      await target.close();
    }
  });

  it('between full comparisons reads only the checks: a lost registration comes back at once, tags changed in place at the next full one', async () => {
    const target = await checkTarget();
    const proxy = await startRoundRobinProxy([{ name: 'consul', port: server!.httpPort }]);
    const client = createConsulClient({ address: proxy.url });
    const serviceId = `consul-acme-${randomUUID()}`;
    const registration = new ConsulServiceRegistration({
      consul: client,
      serviceId,
      port: 8402,
      checkHttpUrl: target.url,
      maxTagsPerRegistration: 2,
    });
    const reads = (from: number): string[] =>
      proxy
        .requests()
        .slice(from)
        .filter((r) => r.method === 'GET')
        .map((r) => r.path.split('?')[0]!);
    try {
      const tags = ['a', 'b', 'c', 'd'].map(challengeTag);
      await registration.update(tags);
      const ids = registration.registrationIds;
      let from = proxy.requests().length;
      assert.equal(await registration.reassert(), false);
      assert.deepEqual(reads(from), ['/v1/agent/services', '/v1/agent/checks'], 'the first call compares everything');

      from = proxy.requests().length;
      assert.equal(await registration.reassert(), false);
      assert.deepEqual(reads(from), ['/v1/agent/checks'], 'then the checks alone');

      // Lost behind its back (its check goes with it): found from the checks, registered again.
      await deregisterBehindItsBack(ids[1]!);
      from = proxy.requests().length;
      assert.equal(await registration.reassert(), true);
      assert.deepEqual(reads(from), ['/v1/agent/checks', '/v1/agent/services', '/v1/agent/checks']);
      assert.deepEqual(await registeredTags(serviceId), [...tags].sort());

      // Tags changed in place, the check kept: put back by the next full comparison.
      await retagBehindItsBack(ids[0]!, serviceId, { Name: `${ids[0]} ready`, HTTP: target.url });
      let light = 0;
      while (light < 2 * FULL_REASSERT_EVERY && !(await registration.reassert())) light += 1;
      // Calls 1 and 11 compare everything; calls 4 to 10 read the checks and find nothing amiss.
      assert.equal(light, FULL_REASSERT_EVERY - 3, 'put back by the eleventh call, the next full comparison');
      assert.deepEqual(await registeredTags(serviceId), [...tags].sort());
    } finally {
      await registration.deregister();
      client.destroy();
      await proxy.close();
      await target.close();
    }
  });

  it('coalesces updates made together into one registration with the last tag set', async () => {
    const proxy = await startRoundRobinProxy([{ name: 'consul', port: server!.httpPort }]);
    const client = createConsulClient({ address: proxy.url });
    const serviceId = `consul-acme-${randomUUID()}`;
    const registration = new ConsulServiceRegistration({ consul: client, serviceId, port: 8402 });
    try {
      await registration.update(['first']);
      const before = proxy.requests().length;
      await Promise.all(Array.from({ length: 10 }, (_, i) => registration.update([`tag-${i}`])));
      const registers = proxy
        .requests()
        .slice(before)
        .filter((r) => r.path.startsWith('/v1/agent/service/register'));
      assert.equal(registers.length, 1, `${registers.length} registrations for 10 updates`);
      assert.deepEqual((await agentServices())[serviceId]?.Tags, ['tag-9']);
    } finally {
      await registration.deregister();
      client.destroy();
      await proxy.close();
    }
  });

  it('sends an update after a quiet spell at once, and holds the updates that follow a registration for the window', async () => {
    const proxy = await startRoundRobinProxy([{ name: 'consul', port: server!.httpPort }]);
    const client = createConsulClient({ address: proxy.url });
    const serviceId = `consul-acme-${randomUUID()}`;
    // A window longer than the test's own timeout: an update that waited for it would fail the test.
    const registration = new ConsulServiceRegistration({ consul: client, serviceId, port: 8402, coalesceMs: 3_000 });
    const registers = (): number =>
      proxy.requests().filter((r) => r.path.startsWith('/v1/agent/service/register')).length;
    try {
      await registration.update(['first']);
      assert.equal(registers(), 1);
      // Each in its own turn of the event loop, right after the registration: one registration for all.
      const updates: Array<Promise<void>> = [];
      for (let i = 0; i < 5; i++) {
        updates.push(registration.update([`tag-${i}`]));
        await new Promise((resolve) => setImmediate(resolve));
      }
      await Promise.all(updates);
      assert.equal(registers(), 2, 'the five updates after the first were sent as one');
      assert.deepEqual((await agentServices())[serviceId]?.Tags, ['tag-4']);
    } finally {
      await registration.deregister();
      client.destroy();
      await proxy.close();
    }
  });

  it('reports an unreachable agent as CONSUL_UNAVAILABLE to every coalesced caller, and retries on the next update', async () => {
    const dead = createConsulClient({ address: 'http://127.0.0.1:1', requestTimeoutMs: 5_000 });
    const registration = new ConsulServiceRegistration({
      consul: dead,
      serviceId: `consul-acme-${randomUUID()}`,
      port: 8402,
    });
    try {
      const outcomes = await Promise.allSettled([registration.update(['x']), registration.update(['x', 'y'])]);
      for (const o of outcomes) {
        assert.equal(o.status, 'rejected');
        assert.ok(o.reason instanceof ConsulAcmeError);
        assert.equal(o.reason.code, 'CONSUL_UNAVAILABLE');
        assert.equal(o.reason.retryable, true);
      }
      await assert.rejects(
        registration.update(['x', 'y']),
        (err: unknown) => err instanceof ConsulAcmeError,
        'not skipped as identical',
      );
      await assert.rejects(registration.reassert(), (err: unknown) => err instanceof ConsulAcmeError);
    } finally {
      dead.destroy();
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Only the challenge routes may delete themselves while critical

describe('deregisterCriticalAfter', () => {
  let own: ConsulInstance | undefined;
  let client: Consul | undefined;
  before(async () => {
    own = await startConsul();
    client = createConsulClient({ address: own.address });
  });
  after(async () => {
    client?.destroy();
    await own?.stop();
  });

  it('removes a critical route registration that asks for it, and keeps the health registration that does not', async () => {
    const deadUrl = 'http://127.0.0.1:1/health';
    const routes = new ConsulServiceRegistration({
      consul: client!,
      serviceId: 'routes',
      port: 8402,
      checkHttpUrl: deadUrl,
      checkIntervalSeconds: 1,
      deregisterCriticalAfter: '1m', // Consul's shortest
    });
    const health = new ConsulServiceRegistration({
      consul: client!,
      serviceId: 'health',
      serviceName: 'consul-acme-certificates',
      port: 8403,
      checkHttpUrl: deadUrl,
      checkIntervalSeconds: 1,
    });
    await Promise.all([routes.update(['r']), health.update([])]);
    // Consul reaps critical services every 30 s, so this takes 60 to 90 s.
    await waitFor(
      'the critical route registration to be removed',
      async () => !(await agentServices(own!.address)).routes,
      {
        timeoutMs: 150_000,
        intervalMs: 1_000,
      },
    );
    assert.ok((await agentServices(own!.address)).health, 'the critical health registration stays');
    await health.deregister();
  });
});

// ---------------------------------------------------------------------------------------------
// test/support/consul.ts: an agent that can be restarted

describe('a restartable Consul (test/support/consul.ts)', () => {
  it('keeps a KV key and a registered service across a restart with a data directory', async () => {
    const persistent = await startConsul({ dataDir: true });
    try {
      assert.ok(persistent.dataDir);
      const put = await fetch(`${persistent.address}/v1/kv/restart-test/key`, { method: 'PUT', body: 'kept' });
      assert.equal((await put.text()).trim(), 'true');
      const reg = await fetch(`${persistent.address}/v1/agent/service/register`, {
        method: 'PUT',
        body: JSON.stringify({ ID: 'kept-service', Name: 'kept', Port: 9000, Tags: ['urlprefix-kept.example.com/'] }),
      });
      assert.equal(reg.status, 200);
      const portBefore = persistent.httpPort;

      await persistent.restart();

      assert.equal(persistent.httpPort, portBefore);
      const get = await fetch(`${persistent.address}/v1/kv/restart-test/key?raw`);
      assert.equal(get.status, 200);
      assert.equal(await get.text(), 'kept');
      assert.deepEqual((await agentServices(persistent.address))['kept-service']?.Tags, [
        'urlprefix-kept.example.com/',
      ]);
    } finally {
      await persistent.stop();
    }
  });

  it('brings a -dev agent back empty, and a registration comes back by reassert', async () => {
    const dev = await startConsul();
    const client = createConsulClient({ address: dev.address });
    const registration = new ConsulServiceRegistration({ consul: client, serviceId: 'lost', port: 8402 });
    try {
      await registration.update(['urlprefix-lost.example.com/.well-known/acme-challenge/']);
      await dev.restart();
      assert.equal((await agentServices(dev.address)).lost, undefined, 'the agent forgot it');
      assert.equal(await registration.reassert(), true);
      assert.deepEqual(await registeredTags('lost', dev.address), [
        'urlprefix-lost.example.com/.well-known/acme-challenge/',
      ]);
    } finally {
      await registration.deregister();
      client.destroy();
      await dev.stop();
    }
  });
});
