/**
 * One set of cases for every Locker: MemoryLocker and ConsulLocker (real Consul 1.8.7). Consul-only
 * cases: a destroyed session aborts the lock's signal, lock-delay after a lost holder reads as
 * "held by someone else", nothing is left in KV (release deletes the key, a lost session's keys
 * go with it, a late release never deletes a key someone else holds now), one session serves
 * every lock of a locker, and a transient local error is a retryable CONSUL_UNAVAILABLE.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { createConsulClient, type Consul } from '../../src/adapters/consul/consul-client.js';
import { ConsulLocker } from '../../src/adapters/consul/consul-locker.js';
import { MemoryLocker } from '../../src/adapters/memory/memory-locker.js';
import { ConsulAcmeError, LockLostError } from '../../src/errors.js';
import type { Locker } from '../../src/ports/locker.js';
import { startConsul, type ConsulInstance } from '../support/consul.js';
import { waitFor } from '../support/wait.js';

interface Subject {
  name: string;
  setup(): Promise<void>;
  teardown(): Promise<void>;
  /** Two lockers over the same locks, as two instances would have (one shared one for memory). */
  pair(): [Locker, Locker];
}

let consulServer: ConsulInstance | undefined;
let consul: Consul | undefined;
const prefix = `consul-acme-test/${randomUUID()}/locks/`;
const lockers: Locker[] = [];

function consulLocker(name: string, lockDelaySeconds = 15): ConsulLocker {
  const locker = new ConsulLocker({
    consul: consul!,
    prefix,
    sessionName: name,
    sessionTtlSeconds: 10,
    lockDelaySeconds,
  });
  lockers.push(locker);
  return locker;
}

async function closeAll(): Promise<void> {
  await Promise.all(lockers.splice(0).map((l) => l.close()));
}

interface KvEntry {
  Key: string;
  Value: string | null;
  Session?: string;
  LockIndex: number;
}

async function readKv(key: string): Promise<KvEntry | undefined> {
  const res = await fetch(`${consulServer!.address}/v1/kv/${prefix}${key}`);
  if (res.status === 404) return undefined;
  assert.equal(res.status, 200);
  const entries = (await res.json()) as KvEntry[];
  return entries[0];
}

function decodeValue(entry: KvEntry | undefined): unknown {
  if (!entry?.Value) return undefined;
  return JSON.parse(Buffer.from(entry.Value, 'base64').toString('utf8'));
}

const subjects: Subject[] = [
  {
    name: 'MemoryLocker',
    setup: async () => undefined,
    teardown: async () => undefined,
    pair: () => {
      const locker = new MemoryLocker();
      return [locker, locker];
    },
  },
  {
    name: 'ConsulLocker',
    setup: async () => {
      consulServer = await startConsul();
      consul = createConsulClient({ address: consulServer.address });
    },
    teardown: async () => {
      await closeAll();
      consul?.destroy();
      await consulServer?.stop();
    },
    pair: () => [consulLocker(`a-${randomUUID()}`), consulLocker(`b-${randomUUID()}`)],
  },
];

for (const subject of subjects) {
  describe(`Locker contract: ${subject.name}`, () => {
    before(() => subject.setup());
    after(() => subject.teardown());

    it('acquires a free key with a live signal', async () => {
      const [a] = subject.pair();
      const key = `k-${randomUUID()}`;
      const lock = await a.tryAcquire(key);
      assert.ok(lock);
      assert.equal(lock.key, key);
      assert.equal(lock.signal.aborted, false);
      await lock.release();
    });

    it('answers undefined for a key that is held, by this or another locker', async () => {
      const [a, b] = subject.pair();
      const key = `k-${randomUUID()}`;
      const lock = await a.tryAcquire(key);
      assert.ok(lock);
      assert.equal(await b.tryAcquire(key), undefined);
      assert.equal(await a.tryAcquire(key), undefined);
      await lock.release();
    });

    it('lets another locker acquire the key once it is released', async () => {
      const [a, b] = subject.pair();
      const key = `k-${randomUUID()}`;
      const lock = await a.tryAcquire(key);
      assert.ok(lock);
      await lock.release();
      const next = await b.tryAcquire(key);
      assert.ok(next, 'released keys are free at once (no lock-delay after a release)');
      assert.equal(lock.signal.aborted, false, 'a release is not a loss');
      await next.release();
    });

    it('releases idempotently', async () => {
      const [a] = subject.pair();
      const lock = await a.tryAcquire(`k-${randomUUID()}`);
      assert.ok(lock);
      await lock.release();
      await lock.release();
    });

    it('holds different keys independently', async () => {
      const [a, b] = subject.pair();
      const one = await a.tryAcquire(`k-${randomUUID()}`);
      const two = await b.tryAcquire(`k-${randomUUID()}`);
      assert.ok(one && two);
      await Promise.all([one.release(), two.release()]);
    });

    it('releases everything on close and aborts the holders', async () => {
      const [a, b] = subject.pair();
      const key = `k-${randomUUID()}`;
      const lock = await a.tryAcquire(key);
      assert.ok(lock);
      await a.close();
      assert.equal(lock.signal.aborted, true);
      const next = await b.tryAcquire(key);
      assert.ok(next, 'a closed locker leaves its keys free');
      await next.release();
    });
  });
}

describe('ConsulLocker with a real Consul', () => {
  before(async () => {
    consulServer = await startConsul();
    consul = createConsulClient({ address: consulServer.address });
  });
  after(async () => {
    await closeAll();
    consul?.destroy();
    await consulServer?.stop();
  });

  it('writes the holder into the value while held, and deletes the key on release', async () => {
    const locker = consulLocker('holder-test');
    const key = `k-${randomUUID()}`;
    const lock = await locker.tryAcquire(key);
    assert.ok(lock);
    const held = await readKv(key);
    assert.equal(held?.Session, locker.sessionId);
    const value = decodeValue(held) as { holder?: unknown; acquiredAt?: unknown };
    assert.match(String(value.holder), /^holder-test /);
    assert.ok(!Number.isNaN(Date.parse(String(value.acquiredAt))));

    await lock.release();
    assert.equal(await readKv(key), undefined, 'the key is gone after release');
  });

  it('leaves no key behind when the session is destroyed (Behavior delete)', async () => {
    const locker = consulLocker('delete-behaviour', 0);
    const key = `k-${randomUUID()}`;
    const lock = await locker.tryAcquire(key);
    assert.ok(lock);
    assert.ok(await readKv(key));
    const res = await fetch(`${consulServer!.address}/v1/session/destroy/${locker.sessionId}`, { method: 'PUT' });
    assert.equal(res.status, 200);
    assert.equal(await readKv(key), undefined, 'Consul deleted the key with the session');
    await waitFor('the lock signal to abort', () => lock.signal.aborted, { timeoutMs: 20_000 });
  });

  it('never deletes a key another session acquired since, when a lost lock is released late', async () => {
    const lost = consulLocker('late-release', 0);
    const other = consulLocker('late-release-other');
    const key = `k-${randomUUID()}`;
    const lock = await lost.tryAcquire(key);
    assert.ok(lock);
    // The session ends behind the locker's back; it has not noticed yet (renewal is seconds away).
    const res = await fetch(`${consulServer!.address}/v1/session/destroy/${lost.sessionId}`, { method: 'PUT' });
    assert.equal(res.status, 200);
    const next = await other.tryAcquire(key);
    assert.ok(next, 'no lock-delay (0 s): the other locker takes the key');
    await lock.release();
    const entry = await readKv(key);
    assert.ok(entry, 'the other holder\u2019s key is still there');
    assert.equal(entry.Session, other.sessionId);
    await next.release();
    assert.equal(await readKv(key), undefined);
  });

  it('creates exactly one session for 200 concurrent acquisitions on a fresh locker', async () => {
    const name = `one-session-${randomUUID()}`;
    const locker = consulLocker(name);
    const keys = Array.from({ length: 200 }, () => `k-${randomUUID()}`);
    const locks = await Promise.all(keys.map((k) => locker.tryAcquire(k)));
    assert.equal(locks.filter(Boolean).length, 200);
    const res = await fetch(`${consulServer!.address}/v1/session/list`);
    const sessions = ((await res.json()) as Array<{ ID: string; Name: string }>).filter((s) => s.Name === name);
    assert.deepEqual(
      sessions.map((s) => s.ID),
      [locker.sessionId],
    );
    for (const key of keys) assert.equal((await readKv(key))?.Session, locker.sessionId);
    await Promise.all(locks.map((l) => l?.release() ?? Promise.resolve()));
    for (const key of keys) assert.equal(await readKv(key), undefined, `${key} left behind`);
  });

  it('aborts the lock signal with LockLostError when the session is destroyed, and carries on with a new session', async () => {
    const locker = consulLocker('destroy-test');
    const key = `k-${randomUUID()}`;
    const lock = await locker.tryAcquire(key);
    assert.ok(lock);
    const sessionId = locker.sessionId;
    assert.ok(sessionId);
    const res = await fetch(`${consulServer!.address}/v1/session/destroy/${sessionId}`, { method: 'PUT' });
    assert.equal(res.status, 200);

    await waitFor('the lock signal to abort', () => lock.signal.aborted, { timeoutMs: 20_000 });
    assert.ok(lock.signal.reason instanceof LockLostError, String(lock.signal.reason));
    await lock.release(); // a lost lock still releases quietly

    const other = await locker.tryAcquire(`k-${randomUUID()}`);
    assert.ok(other, 'later acquisitions use a new session');
    assert.notEqual(locker.sessionId, sessionId);
    await other.release();
  });

  it('answers undefined during lock-delay after the holder was lost, then acquires', async () => {
    const lost = consulLocker('lock-delay-holder', 3);
    const other = consulLocker('lock-delay-other');
    const key = `k-${randomUUID()}`;
    const lock = await lost.tryAcquire(key);
    assert.ok(lock);
    const res = await fetch(`${consulServer!.address}/v1/session/destroy/${lost.sessionId}`, { method: 'PUT' });
    assert.equal(res.status, 200);
    assert.equal(await other.tryAcquire(key), undefined, 'lock-delay (3 s) is running');
    const next = await waitFor('the key to be acquirable after lock-delay', () => other.tryAcquire(key), {
      timeoutMs: 15_000,
      intervalMs: 500,
    });
    await next.release();
  });

  it('re-creates the session when it is destroyed between two renewals', async () => {
    const locker = consulLocker('recreate-test');
    const first = await locker.tryAcquire(`k-${randomUUID()}`);
    assert.ok(first);
    await first.release();
    const sessionId = locker.sessionId;
    await fetch(`${consulServer!.address}/v1/session/destroy/${sessionId}`, { method: 'PUT' });
    // Acquire at once, before the renewal notices: Consul answers 500 "invalid session" and the
    // locker must retry with a fresh session rather than fail.
    const second = await locker.tryAcquire(`k-${randomUUID()}`);
    assert.ok(second);
    assert.notEqual(locker.sessionId, sessionId);
    await second.release();
  });

  it('destroys its session on close', async () => {
    const locker = consulLocker('close-test');
    const lock = await locker.tryAcquire(`k-${randomUUID()}`);
    assert.ok(lock);
    const sessionId = locker.sessionId;
    await locker.close();
    const res = await fetch(`${consulServer!.address}/v1/session/info/${sessionId}`);
    assert.deepEqual(await res.json(), []);
  });
});

describe('ConsulLocker and a transient local error talking to the agent', () => {
  /** A client whose every call fails as a process out of file descriptors (or with a reset socket) would. */
  function failingClient(code: string): Consul {
    const fail = async (): Promise<never> => {
      throw Object.assign(new Error(`connect ${code} 127.0.0.1:8500`), { code, syscall: 'connect' });
    };
    return {
      session: { create: fail, renew: fail, destroy: fail },
      kv: { set: fail, get: fail, del: fail },
    } as unknown as Consul;
  }

  for (const code of ['EMFILE', 'ENFILE', 'ECONNRESET', 'ECONNREFUSED']) {
    it(`reports ${code} as a retryable CONSUL_UNAVAILABLE naming the code`, async () => {
      const locker = new ConsulLocker({ consul: failingClient(code), prefix: 'x/', sessionName: 'transient' });
      await assert.rejects(locker.tryAcquire('k'), (err: unknown) => {
        assert.ok(err instanceof ConsulAcmeError, String(err));
        assert.equal(err.code, 'CONSUL_UNAVAILABLE');
        assert.equal(err.retryable, true);
        assert.match(err.message, new RegExp(code));
        return true;
      });
      await locker.close();
    });
  }
});
