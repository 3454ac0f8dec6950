/**
 * ConsulServiceRegistration against a real Consul 1.8.7 agent: what `/v1/agent/services` and
 * `/v1/agent/checks` show is what Fabio would see.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { createConsulClient, type Consul } from '../../src/adapters/consul/consul-client.js';
import { ConsulServiceRegistration } from '../../src/adapters/consul/consul-service-registration.js';
import { MemoryServiceRegistration } from '../../src/adapters/memory/memory-service-registration.js';
import { ConsulAcmeError } from '../../src/errors.js';
import { startConsul, type ConsulInstance } from '../support/consul.js';
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
}

let server: ConsulInstance | undefined;
let consul: Consul | undefined;

async function agentServices(): Promise<Record<string, AgentService>> {
  const res = await fetch(`${server!.address}/v1/agent/services`);
  assert.equal(res.status, 200);
  return (await res.json()) as Record<string, AgentService>;
}

async function agentChecks(): Promise<Record<string, AgentCheck>> {
  const res = await fetch(`${server!.address}/v1/agent/checks`);
  assert.equal(res.status, 200);
  return (await res.json()) as Record<string, AgentCheck>;
}

const challengeTag = (host: string): string => `urlprefix-${host}/.well-known/acme-challenge/`;

describe('ConsulServiceRegistration against a real agent', () => {
  before(async () => {
    server = await startConsul();
    consul = createConsulClient({ address: server.address });
  });
  after(async () => {
    consul?.destroy();
    await server?.stop();
  });

  it('registers exactly the given tags, replaces them on change, and deregisters', async () => {
    const serviceId = `consul-acme-${randomUUID()}`;
    const registration = new ConsulServiceRegistration({
      consul: consul!,
      serviceId,
      address: '127.0.0.1',
      port: 8402,
      meta: { version: 'test' },
    });

    await registration.update([challengeTag('a.example.com'), challengeTag('b.example.com')]);
    let service = (await agentServices())[serviceId];
    assert.ok(service, 'registered');
    assert.equal(service.Service, 'consul-acme');
    assert.equal(service.Port, 8402);
    assert.equal(service.Address, '127.0.0.1');
    assert.deepEqual(service.Meta, { version: 'test' });
    assert.deepEqual([...(service.Tags ?? [])].sort(), [challengeTag('a.example.com'), challengeTag('b.example.com')]);

    await registration.update([challengeTag('c.example.com')]);
    service = (await agentServices())[serviceId];
    assert.deepEqual(service?.Tags, [challengeTag('c.example.com')], 'old tags are gone');

    await registration.update([]);
    service = (await agentServices())[serviceId];
    assert.ok(service, 'still registered with no tags');
    assert.deepEqual(service.Tags ?? [], []);

    await registration.deregister();
    assert.equal((await agentServices())[serviceId], undefined, 'deregistered');
    await registration.deregister(); // idempotent

    await registration.update([challengeTag('d.example.com')]);
    assert.deepEqual(
      (await agentServices())[serviceId]?.Tags,
      [challengeTag('d.example.com')],
      're-registers after deregister',
    );
    await registration.deregister();
  });

  it('registers an HTTP check that passes while the URL answers 2xx', async () => {
    let healthy = true;
    const http: Server = createServer((_req, res) => {
      res.statusCode = healthy ? 200 : 503;
      res.end(healthy ? 'ok' : 'not ready');
    });
    await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(http.address() as AddressInfo).port}/health/ready`;
    const serviceId = `consul-acme-${randomUUID()}`;
    const registration = new ConsulServiceRegistration({
      consul: consul!,
      serviceId,
      port: 8402,
      checkHttpUrl: url,
      checkIntervalSeconds: 1,
    });
    try {
      await registration.update([challengeTag('checked.example.com')]);
      const passing = await waitFor('the check to pass', async () =>
        Object.values(await agentChecks()).find((c) => c.ServiceID === serviceId && c.Status === 'passing'),
      );
      assert.ok(passing);
      healthy = false;
      await waitFor('the check to go critical', async () =>
        Object.values(await agentChecks()).some((c) => c.ServiceID === serviceId && c.Status === 'critical'),
      );
      await registration.deregister();
      assert.ok(
        !Object.values(await agentChecks()).some((c) => c.ServiceID === serviceId),
        'check removed with the service',
      );
    } finally {
      await new Promise((resolve) => http.close(resolve));
    }
  });

  it('does not re-register when the tags are the same (in any order)', async () => {
    const serviceId = `consul-acme-${randomUUID()}`;
    const registration = new ConsulServiceRegistration({ consul: consul!, serviceId, port: 8402 });
    await registration.update(['x', 'y']);
    assert.ok((await agentServices())[serviceId], 'registered');
    // Remove it behind the registration's back: an identical update must not put it back.
    await fetch(`${server!.address}/v1/agent/service/deregister/${serviceId}`, { method: 'PUT' });
    await registration.update(['y', 'x']);
    assert.equal((await agentServices())[serviceId], undefined, 'identical update skipped');
    await registration.update(['x']);
    assert.deepEqual((await agentServices())[serviceId]?.Tags, ['x']);
    await registration.deregister();
  });

  it('reports an unreachable agent as CONSUL_UNAVAILABLE and retries on the next update', async () => {
    const dead = createConsulClient({ address: 'http://127.0.0.1:1', requestTimeoutMs: 5_000 });
    const registration = new ConsulServiceRegistration({
      consul: dead,
      serviceId: `consul-acme-${randomUUID()}`,
      port: 8402,
    });
    try {
      await assert.rejects(registration.update(['x']), (err: unknown) => {
        assert.ok(err instanceof ConsulAcmeError);
        assert.equal(err.code, 'CONSUL_UNAVAILABLE');
        return true;
      });
      await assert.rejects(
        registration.update(['x']),
        (err: unknown) => err instanceof ConsulAcmeError,
        'not skipped as identical',
      );
    } finally {
      dead.destroy();
    }
  });
});

describe('MemoryServiceRegistration', () => {
  it('records the registered tags, skips identical updates, and deregisters idempotently', async () => {
    const registration = new MemoryServiceRegistration();
    await registration.update(['b', 'a']);
    await registration.update(['a', 'b']);
    assert.deepEqual(registration.tags, ['b', 'a']);
    assert.equal(registration.history.length, 1);
    await registration.update(['c']);
    assert.deepEqual(registration.history, [['b', 'a'], ['c']]);
    await registration.deregister();
    await registration.deregister();
    assert.equal(registration.isRegistered(), false);
    assert.equal(registration.deregistrations, 1);
  });
});
