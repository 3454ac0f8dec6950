/**
 * One set of cases for every RequestStore: MemoryRequestStore and ConsulRequestStore (real Consul
 * 1.8.7). Consul only: two stores on one folder see each other's requests and race with
 * check-and-set, and a value this release cannot read is ignored and replaced.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { createConsulClient, type Consul } from '../../src/adapters/consul/consul-client.js';
import { kvPut } from '../../src/adapters/consul/consul-kv.js';
import { ConsulRequestStore } from '../../src/adapters/consul/consul-request-store.js';
import { MemoryRequestStore } from '../../src/adapters/memory/memory-request-store.js';
import type { OperatorRequest } from '../../src/domain/request.js';
import type { RequestStore } from '../../src/ports/request-store.js';
import { captureLogs } from '../support/logs.js';
import { startConsul, type ConsulInstance } from '../support/consul.js';

interface Subject {
  name: string;
  setup(): Promise<void>;
  teardown(): Promise<void>;
  /** A store on a folder (or memory) nobody else uses. */
  isolated(): RequestStore;
}

let consulServer: ConsulInstance | undefined;
const clients: Consul[] = [];

function consulClient(): Consul {
  if (!consulServer) throw new Error('consul not started');
  const client = createConsulClient({ address: consulServer.address });
  clients.push(client);
  return client;
}

function revoke(hostname: string, overrides: Partial<OperatorRequest> = {}): OperatorRequest {
  return {
    hostname,
    kind: 'revoke',
    requestedAt: new Date('2026-03-01T10:00:00.123Z'),
    requestedBy: 'instance-a',
    replaces: {
      obtainedAt: new Date('2026-02-01T00:00:00.000Z'),
      notAfter: new Date('2026-05-02T00:00:00.000Z'),
      serial: '4f3e2d1c',
      certPem: '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n',
    },
    revokeReason: 'keyCompromise',
    revokedAt: undefined,
    ...overrides,
  };
}

function adopt(hostname: string): OperatorRequest {
  return {
    hostname,
    kind: 'adopt',
    requestedAt: new Date('2026-03-01T10:00:00.000Z'),
    requestedBy: 'instance-b',
    replaces: undefined,
    revokeReason: undefined,
    revokedAt: undefined,
  };
}

const subjects: Subject[] = [
  {
    name: 'MemoryRequestStore',
    setup: async () => undefined,
    teardown: async () => undefined,
    isolated: () => new MemoryRequestStore(),
  },
  {
    name: 'ConsulRequestStore',
    setup: async () => {
      consulServer = await startConsul();
    },
    teardown: async () => {
      for (const client of clients.splice(0)) client.destroy();
      await consulServer?.stop();
    },
    isolated: () =>
      new ConsulRequestStore({ consul: consulClient(), prefix: `consul-acme-test/${randomUUID()}/requests/` }),
  },
];

for (const subject of subjects) {
  describe(`RequestStore contract: ${subject.name}`, () => {
    before(() => subject.setup());
    after(() => subject.teardown());

    it('get of a hostname without a request resolves undefined, and list is empty', async () => {
      const store = subject.isolated();
      assert.equal(await store.get('a.example.test'), undefined);
      assert.deepEqual(await store.list(), []);
    });

    it('put with 0 creates the request, which get and list return as written, with its version', async () => {
      const store = subject.isolated();
      const version = await store.put(revoke('a.example.test'), 0);
      assert.ok(version !== undefined && version > 0);
      const read = await store.get('a.example.test');
      assert.deepEqual(read, { ...revoke('a.example.test'), version });
      await store.put(adopt('b.example.test'), 0);
      assert.deepEqual(
        (await store.list()).map((r) => [r.hostname, r.kind]),
        [
          ['a.example.test', 'revoke'],
          ['b.example.test', 'adopt'],
        ],
      );
    });

    it('put is a check-and-set: a stale version writes nothing and resolves undefined', async () => {
      const store = subject.isolated();
      const first = await store.put(revoke('a.example.test'), 0);
      assert.ok(first);
      assert.equal(await store.put(revoke('a.example.test', { revokeReason: 'superseded' }), 0), undefined);
      const revokedAt = new Date('2026-03-01T10:00:05.000Z');
      const second = await store.put(revoke('a.example.test', { revokedAt }), first);
      assert.ok(second !== undefined && second !== first);
      assert.equal(await store.put(revoke('a.example.test'), first), undefined, 'the version moved on');
      const read = await store.get('a.example.test');
      assert.equal(read?.revokedAt?.getTime(), revokedAt.getTime());
      assert.equal(read?.revokeReason, 'keyCompromise');
    });

    it('delete removes the request only at its version, and a missing one counts as gone', async () => {
      const store = subject.isolated();
      const first = await store.put(revoke('a.example.test'), 0);
      assert.ok(first);
      const second = await store.put(revoke('a.example.test', { revokedAt: new Date() }), first);
      assert.ok(second);
      assert.equal(await store.delete('a.example.test', first), false, 'a newer request stays');
      assert.ok(await store.get('a.example.test'));
      assert.equal(await store.delete('a.example.test', second), true);
      assert.equal(await store.get('a.example.test'), undefined);
      assert.equal(await store.delete('a.example.test', second), true, 'already gone');
    });
  });
}

describe('ConsulRequestStore only', () => {
  let consul: ConsulInstance;
  let client: Consul;
  before(async () => {
    consul = await startConsul();
    client = createConsulClient({ address: consul.address });
  });
  after(async () => {
    client.destroy();
    await consul.stop();
  });

  it("two instances on one folder see each other's requests, and only one of two racing writes wins", async () => {
    const prefix = `consul-acme-test/${randomUUID()}/requests/`;
    const a = new ConsulRequestStore({ consul: client, prefix });
    const b = new ConsulRequestStore({ consul: client, prefix });
    const written = await a.put(revoke('a.example.test'), 0);
    assert.deepEqual(await b.get('a.example.test'), { ...revoke('a.example.test'), version: written });
    const results = await Promise.all([
      a.put(revoke('a.example.test', { revokedAt: new Date('2026-03-01T11:00:00Z') }), written!),
      b.put(revoke('a.example.test', { revokeReason: 'superseded' }), written!),
    ]);
    assert.equal(results.filter((v) => v !== undefined).length, 1, 'exactly one check-and-set wins');
  });

  it('a value this release cannot read is ignored (and logged), and put with 0 replaces it', async () => {
    const prefix = `consul-acme-test/${randomUUID()}/requests/`;
    const { logger, lines } = captureLogs('warn');
    const store = new ConsulRequestStore({ consul: client, prefix, logger });
    await kvPut(client, `${prefix}a.example.test`, '{"format":99}');
    assert.equal(await store.get('a.example.test'), undefined);
    assert.deepEqual(await store.list(), []);
    assert.ok(
      lines.some((l) => l.msg === 'operator request unreadable; ignored' && /format 99/.test(String(l.reason))),
    );
    assert.ok(await store.put(revoke('a.example.test'), 0));
    assert.equal((await store.get('a.example.test'))?.kind, 'revoke');
  });
});
