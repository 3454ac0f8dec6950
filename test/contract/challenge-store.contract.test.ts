/**
 * One set of cases for every ChallengeStore: MemoryChallengeStore and ConsulChallengeStore (real
 * Consul 1.8.7). Consul-only cases: instances share the store (through the watch, or a refresh
 * on a miss), the put time is kept in the KV flags, unknown tokens cost at most one read at a
 * time, and a refused token surfaces as CONSUL_PERMISSION_DENIED.
 */
import assert from 'node:assert/strict';
import { ManualClock, type Clock } from '../../src/ports/clock.js';
import { randomBytes, randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { ConsulChallengeStore } from '../../src/adapters/consul/consul-challenge-store.js';
import { createConsulClient, type Consul } from '../../src/adapters/consul/consul-client.js';
import { MemoryChallengeStore } from '../../src/adapters/memory/memory-challenge-store.js';
import { ConsulAcmeError } from '../../src/errors.js';
import type { ChallengeStore } from '../../src/ports/challenge-store.js';
import { startConsul, type ConsulInstance } from '../support/consul.js';
import { startRoundRobinProxy } from '../support/round-robin-proxy.js';
import { waitFor } from '../support/wait.js';

function newToken(): string {
  return randomBytes(32).toString('base64url');
}

interface Subject {
  name: string;
  setup(): Promise<void>;
  teardown(): Promise<void>;
  create(): ChallengeStore;
  /** A store over a folder nobody else uses, with a wall clock (Unix ms) the test sets. */
  withClock(clock: Clock): ChallengeStore;
}

let consulServer: ConsulInstance | undefined;
const clients: Consul[] = [];
const prefix = `consul-acme-test/${randomUUID()}/challenges/`;

function consulClient(token?: string): Consul {
  if (!consulServer) throw new Error('consul not started');
  const client = createConsulClient({ address: consulServer.address, ...(token ? { token } : {}) });
  clients.push(client);
  return client;
}

const subjects: Subject[] = [
  {
    name: 'MemoryChallengeStore',
    setup: async () => undefined,
    teardown: async () => undefined,
    create: () => new MemoryChallengeStore(),
    withClock: (clock) => new MemoryChallengeStore({ clock }),
  },
  {
    name: 'ConsulChallengeStore',
    setup: async () => {
      consulServer = await startConsul();
    },
    teardown: async () => {
      for (const c of clients) c.destroy();
      await consulServer?.stop();
    },
    create: () => new ConsulChallengeStore({ consul: consulClient(), prefix }),
    withClock: (clock) =>
      new ConsulChallengeStore({
        consul: consulClient(),
        prefix: `consul-acme-test/${randomUUID()}/challenges/`,
        clock,
      }),
  },
];

for (const subject of subjects) {
  describe(`ChallengeStore contract: ${subject.name}`, () => {
    before(() => subject.setup());
    after(() => subject.teardown());

    it('resolves undefined for a token it never stored', async () => {
      const store = subject.create();
      assert.equal(await store.get(newToken()), undefined);
    });

    it('returns what was put, and nothing after delete', async () => {
      const store = subject.create();
      const token = newToken();
      await store.put(token, `${token}.thumbprint`);
      assert.equal(await store.get(token), `${token}.thumbprint`);
      await store.delete(token);
      assert.equal(await store.get(token), undefined);
    });

    it('treats deleting an unknown token as a no-op', async () => {
      const store = subject.create();
      await store.delete(newToken());
    });

    it('overwrites the value of a token put twice', async () => {
      const store = subject.create();
      const token = newToken();
      await store.put(token, 'first');
      await store.put(token, 'second');
      assert.equal(await store.get(token), 'second');
    });

    it('prunes the tokens put longer ago than the age given, and keeps the others', async () => {
      const clock = new ManualClock('2030-01-01T00:00:00Z');
      const store = subject.withClock(clock);
      const [old, renewed, fresh] = [newToken(), newToken(), newToken()];
      await store.put(old, 'old');
      await store.put(renewed, 'renewed-1');
      clock.advance(50 * 60_000);
      await store.put(renewed, 'renewed-2'); // put again: its age starts over
      await store.put(fresh, 'fresh');
      clock.advance(20 * 60_000);
      assert.equal(await store.prune(60 * 60_000), 1);
      assert.equal(await store.get(old), undefined);
      assert.equal(await store.get(renewed), 'renewed-2');
      assert.equal(await store.get(fresh), 'fresh');
      assert.equal(await store.prune(60 * 60_000), 0);
    });
  });
}

describe('ConsulChallengeStore across instances', () => {
  before(async () => {
    consulServer = await startConsul();
  });
  after(async () => {
    for (const c of clients) c.destroy();
    await consulServer?.stop();
  });

  it('serves a token another instance put as soon as its watch sees it, although its own read missed before', async () => {
    const writer = new ConsulChallengeStore({ consul: consulClient(), prefix });
    const reader = new ConsulChallengeStore({ consul: consulClient(), prefix, missFreshnessMs: 3_600_000 });
    reader.start();
    try {
      const token = newToken();
      assert.equal(await reader.get(token), undefined, 'not there yet');
      await writer.put(token, 'key-authorization');
      // The miss above made the mirror fresh for an hour: only the watch can bring the token.
      assert.equal(
        await waitFor('the reader to see the token', () => reader.get(token), { timeoutMs: 5_000, intervalMs: 5 }),
        'key-authorization',
      );
      await writer.delete(token);
      await waitFor('the reader to see the delete', async () => (await reader.get(token)) === undefined, {
        timeoutMs: 5_000,
        intervalMs: 5,
      });
    } finally {
      await reader.close();
    }
  });

  it('without a watch, reads the folder again on a miss once its last read is older than missFreshnessMs', async () => {
    const writer = new ConsulChallengeStore({ consul: consulClient(), prefix });
    const reader = new ConsulChallengeStore({ consul: consulClient(), prefix, missFreshnessMs: 200 });
    const token = newToken();
    assert.equal(await reader.get(token), undefined);
    await writer.put(token, 'key-authorization');
    assert.equal(
      await waitFor('a refresh to bring the token', () => reader.get(token), { timeoutMs: 5_000, intervalMs: 50 }),
      'key-authorization',
    );
  });

  it('answers a token it put itself at once and without a read; a flood of misses shares one read', async () => {
    const proxy = await startRoundRobinProxy([{ name: 'consul', port: consulServer!.httpPort }]);
    const client = createConsulClient({ address: proxy.url });
    clients.push(client);
    const store = new ConsulChallengeStore({
      consul: client,
      prefix: `consul-acme-test/${randomUUID()}/challenges/`,
      missFreshnessMs: 3_600_000,
    });
    try {
      const token = newToken();
      await store.put(token, 'mine');
      const kvReads = (): number =>
        proxy.requests().filter((r) => r.method === 'GET' && r.path.startsWith('/v1/kv/')).length;
      assert.equal(await store.get(token), 'mine');
      assert.equal(kvReads(), 0, 'a token this instance put is answered from its mirror');
      const misses = await Promise.all(Array.from({ length: 200 }, () => store.get(newToken())));
      assert.ok(misses.every((m) => m === undefined));
      assert.equal(kvReads(), 1, '200 concurrent misses, one read of the folder');
      await Promise.all(Array.from({ length: 200 }, () => store.get(newToken())));
      assert.equal(kvReads(), 1, 'misses right after a read cost nothing');
      assert.equal(await store.get(token), 'mine');
    } finally {
      await proxy.close();
    }
  });

  it('stores the key authorization under the prefix with the put time in the KV flags', async () => {
    const putAt = Date.parse('2031-05-06T07:08:09.123Z');
    const store = new ConsulChallengeStore({ consul: consulClient(), prefix, clock: new ManualClock(new Date(putAt)) });
    const token = newToken();
    await store.put(token, 'ka-value');
    const res = await fetch(`${consulServer!.address}/v1/kv/${prefix}${token}`);
    assert.equal(res.status, 200);
    const [entry] = (await res.json()) as Array<{ Value: string; Flags: number }>;
    assert.equal(Buffer.from(entry!.Value, 'base64').toString('utf8'), 'ka-value');
    assert.equal(entry!.Flags, putAt, 'Unix milliseconds round-trip through the 64-bit flags');
  });

  it('gives a token written without a put time one when pruning, and deletes it one age later', async () => {
    const clock = new ManualClock('2030-01-01T00:00:00Z');
    const folder = `consul-acme-test/${randomUUID()}/challenges/`;
    const store = new ConsulChallengeStore({ consul: consulClient(), prefix: folder, clock });
    const token = newToken();
    const written = await fetch(`${consulServer!.address}/v1/kv/${folder}${token}`, { method: 'PUT', body: 'legacy' });
    assert.equal((await written.text()).trim(), 'true');
    assert.equal(await store.prune(60_000), 0, 'no put time: stamped, not deleted');
    clock.advance(61_000);
    assert.equal(await store.prune(60_000), 1);
    assert.equal((await fetch(`${consulServer!.address}/v1/kv/${folder}${token}`)).status, 404);
  });

  it('refuses to build a key from a token that is not base64url', async () => {
    const store = new ConsulChallengeStore({ consul: consulClient(), prefix });
    assert.equal(await store.get('../../secret'), undefined);
    await assert.rejects(store.put('a/b', 'x'), (err: unknown) => err instanceof ConsulAcmeError);
    const res = await fetch(`${consulServer!.address}/v1/kv/${prefix}?keys`);
    const keys = res.status === 200 ? ((await res.json()) as string[]) : [];
    assert.ok(!keys.some((k) => k.includes('secret') || k.endsWith('/b')), `unexpected keys ${keys.join(', ')}`);
  });

  it('reports an unreachable Consul as a retryable CONSUL_UNAVAILABLE, for put and for a miss', async () => {
    const deadClient = createConsulClient({ address: 'http://127.0.0.1:1', requestTimeoutMs: 5_000 });
    clients.push(deadClient);
    const store = new ConsulChallengeStore({ consul: deadClient, prefix });
    for (const attempt of [() => store.put(newToken(), 'x'), () => store.get(newToken())]) {
      await assert.rejects(attempt(), (err: unknown) => {
        assert.ok(err instanceof ConsulAcmeError);
        assert.equal(err.code, 'CONSUL_UNAVAILABLE');
        assert.equal(err.retryable, true);
        return true;
      });
    }
  });
});

describe('ConsulChallengeStore with ACLs (default deny)', () => {
  const masterToken = randomUUID();
  let aclServer: ConsulInstance | undefined;
  const aclClients: Consul[] = [];
  const client = (token?: string): Consul => {
    const c = createConsulClient({ address: aclServer!.address, ...(token ? { token } : {}) });
    aclClients.push(c);
    return c;
  };

  before(async () => {
    aclServer = await startConsul({ acl: { masterToken } });
  });
  after(async () => {
    for (const c of aclClients) c.destroy();
    await aclServer?.stop();
  });

  it('works with a token that may write the prefix', async () => {
    const store = new ConsulChallengeStore({ consul: client(masterToken), prefix });
    const token = newToken();
    await store.put(token, 'ka');
    assert.equal(await store.get(token), 'ka');
  });

  it('reports a token Consul does not know as CONSUL_PERMISSION_DENIED naming "ACL not found"', async () => {
    const store = new ConsulChallengeStore({ consul: client(randomUUID()), prefix });
    await assert.rejects(store.put(newToken(), 'ka'), (err: unknown) => {
      assert.ok(err instanceof ConsulAcmeError);
      assert.equal(err.code, 'CONSUL_PERMISSION_DENIED');
      assert.equal(err.retryable, false);
      assert.match(err.message, /ACL not found/);
      assert.match(err.message, /kv put/);
      return true;
    });
  });

  it('reports a missing permission as CONSUL_PERMISSION_DENIED naming "Permission denied"', async () => {
    const store = new ConsulChallengeStore({ consul: client(), prefix });
    await assert.rejects(store.get(newToken()), (err: unknown) => {
      assert.ok(err instanceof ConsulAcmeError);
      assert.equal(err.code, 'CONSUL_PERMISSION_DENIED');
      assert.match(err.message, /Permission denied/);
      assert.match(err.message, /kv get/);
      return true;
    });
  });
});
