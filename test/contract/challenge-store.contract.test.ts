/**
 * One set of cases for every ChallengeStore: MemoryChallengeStore and ConsulChallengeStore (real
 * Consul 1.8.7). Consul-only cases: instances share the store at once despite their caches, and a
 * refused token surfaces as CONSUL_PERMISSION_DENIED.
 */
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { ConsulChallengeStore } from '../../src/adapters/consul/consul-challenge-store.js';
import { createConsulClient, type Consul } from '../../src/adapters/consul/consul-client.js';
import { MemoryChallengeStore } from '../../src/adapters/memory/memory-challenge-store.js';
import { ConsulAcmeError } from '../../src/errors.js';
import type { ChallengeStore } from '../../src/ports/challenge-store.js';
import { startConsul, type ConsulInstance } from '../support/consul.js';

function newToken(): string {
  return randomBytes(32).toString('base64url');
}

interface Subject {
  name: string;
  setup(): Promise<void>;
  teardown(): Promise<void>;
  create(): ChallengeStore;
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

  it('serves a token put by another instance at once, although its own read missed before', async () => {
    const writer = new ConsulChallengeStore({ consul: consulClient(), prefix });
    const reader = new ConsulChallengeStore({ consul: consulClient(), prefix });
    const token = newToken();
    assert.equal(await reader.get(token), undefined, 'not there yet');
    await writer.put(token, 'key-authorization');
    assert.equal(await reader.get(token), 'key-authorization', 'a miss must not be cached');
  });

  it('stores the key authorization under the prefix, readable through the KV API', async () => {
    const store = new ConsulChallengeStore({ consul: consulClient(), prefix });
    const token = newToken();
    await store.put(token, 'ka-value');
    const res = await fetch(`${consulServer!.address}/v1/kv/${prefix}${token}?raw`);
    assert.equal(res.status, 200);
    assert.equal(await res.text(), 'ka-value');
  });

  it('refuses to build a key from a token that is not base64url', async () => {
    const store = new ConsulChallengeStore({ consul: consulClient(), prefix });
    assert.equal(await store.get('../../secret'), undefined);
    await assert.rejects(store.put('a/b', 'x'), (err: unknown) => err instanceof ConsulAcmeError);
    const res = await fetch(`${consulServer!.address}/v1/kv/${prefix}?keys`);
    const keys = res.status === 200 ? ((await res.json()) as string[]) : [];
    assert.ok(!keys.some((k) => k.includes('secret') || k.endsWith('/b')), `unexpected keys ${keys.join(', ')}`);
  });

  it('reports an unreachable Consul as a retryable CONSUL_UNAVAILABLE', async () => {
    const deadClient = createConsulClient({ address: 'http://127.0.0.1:1', requestTimeoutMs: 5_000 });
    clients.push(deadClient);
    const store = new ConsulChallengeStore({ consul: deadClient, prefix });
    await assert.rejects(store.put(newToken(), 'x'), (err: unknown) => {
      assert.ok(err instanceof ConsulAcmeError);
      assert.equal(err.code, 'CONSUL_UNAVAILABLE');
      assert.equal(err.retryable, true);
      return true;
    });
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
