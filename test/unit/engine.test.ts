/**
 * The engine end to end in one process, in seconds: the real composition root (createService)
 * with memory adapters, a fake issuer and a clock the test moves. Planning and queueing, budgets
 * and backoff across the order gate, and the lock → re-check → act → check-and-set path, without
 * Consul or Pebble. (The end-to-end tests run the same engine against the real servers.)
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { MemoryBudgetLedger } from '../../src/adapters/memory/memory-budget-ledger.js';
import { MemoryCertificateStateStore } from '../../src/adapters/memory/memory-certificate-state-store.js';
import { MemoryCertificateStore } from '../../src/adapters/memory/memory-certificate-store.js';
import { MemoryChallengeStore } from '../../src/adapters/memory/memory-challenge-store.js';
import { MemoryDiscovery } from '../../src/adapters/memory/memory-discovery.js';
import { MemoryLocker } from '../../src/adapters/memory/memory-locker.js';
import { MemoryPolicySource } from '../../src/adapters/memory/memory-policy-source.js';
import { MemoryServiceRegistration } from '../../src/adapters/memory/memory-service-registration.js';
import { loadConfig } from '../../src/config/load.js';
import type { CertificateData } from '../../src/domain/certificate.js';
import { EMPTY_POLICY, type Policy } from '../../src/domain/policy.js';
import type { CertificateStatus } from '../../src/engine/status.js';
import { AcmeProblemError, ConsulAcmeError } from '../../src/errors.js';
import { silentLogger } from '../../src/logging.js';
import type { BudgetLedger } from '../../src/ports/budget-ledger.js';
import type { CertificateStore } from '../../src/ports/certificate-store.js';
import { ManualClock } from '../../src/ports/clock.js';
import type { Lock, Locker } from '../../src/ports/locker.js';
import { createService, type Service } from '../../src/service.js';
import { makeCertificateData } from '../support/certs.js';
import { FakeIssuer } from '../support/fake-issuer.js';
import { waitFor } from '../support/wait.js';

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;

/** Counts the calls the engine makes, per hostname where there is one. */
class Counting {
  readonly storeGets = new Map<string, number>();
  lockAttempts = 0;
  ledgerReads = 0;

  store(inner: MemoryCertificateStore): CertificateStore {
    return {
      description: inner.description,
      get: (hostname) => {
        this.storeGets.set(hostname, (this.storeGets.get(hostname) ?? 0) + 1);
        return inner.get(hostname);
      },
      put: (certificate, version) => inner.put(certificate, version),
      delete: (hostname, version) => inner.delete(hostname, version),
      list: () => inner.list(),
      probe: () => inner.probe(),
      adopt: (hostname, version, marks) => inner.adopt(hostname, version, marks),
      getPending: (hostname) => inner.getPending(hostname),
      putPending: (pending) => inner.putPending(pending),
      deletePending: (hostname) => inner.deletePending(hostname),
      listPending: () => inner.listPending(),
    };
  }

  locker(inner: Locker): Locker {
    return {
      tryAcquire: (key): Promise<Lock | undefined> => {
        this.lockAttempts++;
        return inner.tryAcquire(key);
      },
      close: () => inner.close(),
    };
  }

  ledger(inner: BudgetLedger): BudgetLedger {
    return {
      record: (key, at) => inner.record(key, at),
      events: (key, since) => {
        this.ledgerReads++;
        return inner.events(key, since);
      },
      eventsOf: (keys, since) => {
        this.ledgerReads += keys.length;
        return inner.eventsOf(keys, since);
      },
      prune: (now) => inner.prune(now),
    };
  }
}

interface Engine {
  service: Service;
  adminUrl: string;
  clock: ManualClock;
  issuer: FakeIssuer;
  store: MemoryCertificateStore;
  locker: MemoryLocker;
  discovery: MemoryDiscovery;
  policy: MemoryPolicySource;
  registration: MemoryServiceRegistration;
  counting: Counting;
  status(hostname: string): CertificateStatus | undefined;
  stop(): Promise<void>;
}

async function startEngine(
  services: Record<string, string[]>,
  env: Record<string, string> = {},
  options: { seed?: (store: MemoryCertificateStore, clock: ManualClock) => Promise<void>; policy?: Policy } = {},
): Promise<Engine> {
  const clock = new ManualClock('2026-03-01T00:00:00Z');
  const config = loadConfig({
    env: {
      CONSUL_ACME_CHALLENGE_HOST: '127.0.0.1',
      CONSUL_ACME_CHALLENGE_PORT: '0',
      CONSUL_ACME_ADMIN_HOST: '127.0.0.1',
      CONSUL_ACME_ADMIN_PORT: '0',
      CONSUL_ACME_RETRY_SCHEDULE: '1m,5m',
      CONSUL_ACME_LOCKED_RECHECK: '10s',
      CONSUL_ACME_RENEW_SPREAD: '0s',
      ...env,
    },
  });
  const counting = new Counting();
  const store = new MemoryCertificateStore();
  await options.seed?.(store, clock);
  const issuer = new FakeIssuer(clock);
  const locker = new MemoryLocker();
  const discovery = new MemoryDiscovery(services);
  const policy = new MemoryPolicySource(options.policy ?? EMPTY_POLICY);
  const registration = new MemoryServiceRegistration();
  const service = createService({
    config,
    logger: silentLogger(),
    clock,
    discovery,
    certificateStore: counting.store(store),
    challengeStore: new MemoryChallengeStore(),
    issuer,
    locker: counting.locker(locker),
    stateStore: new MemoryCertificateStateStore(),
    registration,
    healthRegistration: new MemoryServiceRegistration(),
    policySource: policy,
    budgetLedger: counting.ledger(new MemoryBudgetLedger({ clock })),
  });
  const listening = await service.start();
  await waitFor('the first catalog snapshot', () => service.status().ready, { timeoutMs: 5_000, intervalMs: 5 });
  return {
    service,
    adminUrl: listening.adminUrl,
    clock,
    issuer,
    store,
    locker,
    discovery,
    policy,
    registration,
    counting,
    status: (hostname) => service.status().certificates.find((c) => c.hostname === hostname),
    stop: () => service.stop(),
  };
}

/** Waits (in real time, the clock standing still) until `hostname` is in `state`. */
async function until(engine: Engine, hostname: string, state: CertificateStatus['state']): Promise<CertificateStatus> {
  return waitFor(
    `${hostname} ${state} (now ${JSON.stringify(engine.status(hostname))})`,
    () => (engine.status(hostname)?.state === state ? engine.status(hostname) : undefined),
    { timeoutMs: 5_000, intervalMs: 5 },
  );
}

/** Lets the engine's pending promise callbacks run. */
async function settle(): Promise<void> {
  for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
}

const tag = (hostname: string): string => `urlprefix-${hostname}/`;

describe('engine: planning and queueing', () => {
  test('every declared name is planned, ordered once and stored', async () => {
    const engine = await startEngine({
      web: [tag('a.example.com'), tag('b.example.com')],
      api: [tag('c.example.com')],
    });
    try {
      for (const hostname of ['a.example.com', 'b.example.com', 'c.example.com'])
        await until(engine, hostname, 'valid');
      assert.deepEqual([...engine.issuer.orders].sort(), ['a.example.com', 'b.example.com', 'c.example.com']);
      assert.deepEqual(engine.registration.tags, [
        'urlprefix-a.example.com/.well-known/acme-challenge/',
        'urlprefix-b.example.com/.well-known/acme-challenge/',
        'urlprefix-c.example.com/.well-known/acme-challenge/',
      ]);
    } finally {
      await engine.stop();
    }
  });

  test('a change to one service plans only the names it added', async () => {
    const engine = await startEngine({
      web: [tag('a.example.com'), tag('b.example.com')],
      api: [tag('c.example.com')],
    });
    try {
      for (const hostname of ['a.example.com', 'b.example.com', 'c.example.com'])
        await until(engine, hostname, 'valid');
      const readsBefore = new Map(engine.counting.storeGets);
      await engine.discovery.push({
        web: [tag('a.example.com'), tag('b.example.com')],
        api: [tag('c.example.com'), tag('d.example.com')],
      });
      await until(engine, 'd.example.com', 'valid');
      for (const hostname of ['a.example.com', 'b.example.com', 'c.example.com']) {
        assert.equal(
          engine.counting.storeGets.get(hostname),
          readsBefore.get(hostname),
          `${hostname} was not read again`,
        );
      }
      assert.deepEqual(
        engine.issuer.orders.filter((h) => h === 'd.example.com'),
        ['d.example.com'],
      );
      assert.equal(
        engine.counting.storeGets.get('d.example.com'),
        1,
        'the new name is read once, under the lock: the listing showed nothing stored for it',
      );
    } finally {
      await engine.stop();
    }
  });

  test('a name that leaves the catalog has its queued work cancelled and is never ordered', async () => {
    const engine = await startEngine({ web: [tag('a.example.com')] }, { CONSUL_ACME_BUDGET_NEW_ORDERS: '1/3h' });
    try {
      await until(engine, 'a.example.com', 'valid');
      await engine.discovery.push({ web: [tag('a.example.com'), tag('late.example.com')] });
      await until(engine, 'late.example.com', 'waiting');
      await engine.discovery.push({ web: [tag('a.example.com')] });
      await waitFor('late.example.com gone from the status', () => engine.status('late.example.com') === undefined);
      engine.clock.advance(4 * HOUR);
      await settle();
      assert.deepEqual(engine.issuer.orders, ['a.example.com']);
    } finally {
      await engine.stop();
    }
  });
});

describe('engine: budgets and backoff across the order gate', () => {
  test('names behind a spent budget wait without a lock, a ledger read or a store read, and go when it frees', async () => {
    const engine = await startEngine(
      { web: [tag('a.example.com'), tag('b.example.com'), tag('c.example.com')] },
      { CONSUL_ACME_BUDGET_NEW_ORDERS: '1/3h' },
    );
    try {
      await waitFor('one issued, two waiting', () => {
        const states = ['a.example.com', 'b.example.com', 'c.example.com'].map((h) => engine.status(h)?.state);
        return states.filter((s) => s === 'valid').length === 1 && states.filter((s) => s === 'waiting').length === 2;
      });
      const waiting = engine.service.status().certificates.filter((c) => c.state === 'waiting');
      for (const c of waiting) assert.match(c.waitingFor ?? '', /budget account default spent \(1\/1\)/);
      const locks = engine.counting.lockAttempts;
      const ledgerReads = engine.counting.ledgerReads;
      const gets = [...engine.counting.storeGets.values()].reduce((a, b) => a + b, 0);
      for (let minute = 0; minute < 170; minute++) {
        engine.clock.advance(MINUTE);
        await settle();
      }
      assert.equal(engine.counting.lockAttempts, locks, 'no lock taken while the budget is spent');
      assert.equal(engine.counting.ledgerReads, ledgerReads, 'no ledger read while the budget is spent');
      assert.equal(
        [...engine.counting.storeGets.values()].reduce((a, b) => a + b, 0),
        gets,
        'no store read either',
      );
      assert.equal(engine.issuer.orders.length, 1);
      engine.clock.advance(11 * MINUTE);
      await waitFor('a second name issued once the window frees a slot', () => engine.issuer.orders.length === 2);
      await settle();
      assert.equal(engine.issuer.orders.length, 2, 'and only one: the budget is spent again');
    } finally {
      await engine.stop();
    }
  });

  test('a failed order is retried on the schedule, not before', async () => {
    const engine = await startEngine({});
    try {
      engine.issuer.failWith(
        new AcmeProblemError('ACME_PROBLEM', 'acme validation for a.example.com failed: 404 (unauthorized)', {
          problemType: 'urn:ietf:params:acme:error:unauthorized',
        }),
      );
      await engine.discovery.push({ web: [tag('a.example.com')] });
      const failed = await until(engine, 'a.example.com', 'failed');
      assert.equal(failed.attempts, 1);
      assert.equal(failed.nextAttemptAt, new Date(engine.clock.nowMs() + MINUTE).toISOString());
      engine.clock.advance(MINUTE - 1_000);
      await settle();
      assert.equal(engine.issuer.orders.length, 1, 'no second order before the retry is due');
      engine.clock.advance(1_000);
      await until(engine, 'a.example.com', 'valid');
      assert.equal(engine.issuer.orders.length, 2);
    } finally {
      await engine.stop();
    }
  });

  test('a store fault is retried within seconds, is not the name failing, and turns the health check critical meanwhile', async () => {
    const engine = await startEngine({});
    try {
      engine.store.failNext(
        'put',
        new ConsulAcmeError(
          'STORE_PERMISSION_DENIED',
          'write secret/data/fabio/certs/a.example.com: permission denied',
        ),
      );
      await engine.discovery.push({ web: [tag('a.example.com')] });
      const waiting = await until(engine, 'a.example.com', 'waiting');
      assert.equal(waiting.attempts, 0);
      assert.match(waiting.waitingFor ?? '', /STORE_PERMISSION_DENIED/);
      const critical = await fetch(`${engine.adminUrl}/health/certificates`);
      assert.equal(critical.status, 503);
      assert.match(JSON.stringify(await critical.json()), /certificate store: STORE_PERMISSION_DENIED/);
      engine.clock.advance(1_000);
      await until(engine, 'a.example.com', 'valid');
      assert.equal((await fetch(`${engine.adminUrl}/health/certificates`)).status, 200);
    } finally {
      await engine.stop();
    }
  });
});

describe('engine: lock → re-check → act → check-and-set', () => {
  test('a certificate another instance stored while this one waited for the lock is not ordered again', async () => {
    const engine = await startEngine({});
    try {
      const held = await engine.locker.tryAcquire('certs/a.example.com');
      assert.ok(held);
      await engine.discovery.push({ web: [tag('a.example.com')] });
      await waitFor('the job found the lock taken', () => engine.counting.lockAttempts >= 1);
      await settle();
      const theirs: CertificateData = await makeCertificateData({
        hostname: 'a.example.com',
        notBefore: engine.clock.now(),
      });
      await engine.store.put(theirs, 0);
      await held.release();
      engine.clock.advance(10_000);
      await until(engine, 'a.example.com', 'valid');
      assert.deepEqual(engine.issuer.orders, [], 'no order: the re-check found the stored certificate');
      assert.equal((await engine.store.get('a.example.com'))?.certificate?.certPem, theirs.certPem);
    } finally {
      await engine.stop();
    }
  });

  test('a write that finds a newer version than it read is refused and leaves the newer certificate', async () => {
    const engine = await startEngine({});
    try {
      let theirs: CertificateData | undefined;
      engine.issuer.onIssue = async () => {
        theirs = await makeCertificateData({ hostname: 'a.example.com', notBefore: engine.clock.now() });
        await engine.store.put(theirs, 0); // another writer, while our order was in flight
      };
      await engine.discovery.push({ web: [tag('a.example.com')] });
      const failed = await until(engine, 'a.example.com', 'failed');
      assert.match(failed.lastError ?? '', /STORE_CONFLICT/);
      const stored = await engine.store.get('a.example.com');
      assert.equal(stored?.version, 1);
      assert.equal(stored?.certificate?.certPem, theirs?.certPem, 'the newer certificate is kept');
    } finally {
      await engine.stop();
    }
  });
});

describe('engine: write-ahead issuance', () => {
  test('a certificate issued while the store refuses the final write is stored later from its pending record, without a second order', async () => {
    const engine = await startEngine({});
    try {
      engine.store.failNext(
        'put',
        new ConsulAcmeError('STORE_UNAVAILABLE', 'write secret/data/fabio/certs/a.example.com: Vault is sealed', {
          retryable: true,
        }),
      );
      await engine.discovery.push({ web: [tag('a.example.com')] });
      await until(engine, 'a.example.com', 'waiting');
      assert.deepEqual(await engine.store.listPending(), ['a.example.com'], 'the order is recorded before finalize');
      engine.clock.advance(1_000);
      await until(engine, 'a.example.com', 'valid');
      assert.deepEqual(engine.issuer.orders, ['a.example.com'], 'one order');
      assert.equal(engine.issuer.resumed.length, 1, 'completed from the pending record');
      assert.deepEqual(await engine.store.listPending(), [], 'and the record is gone');
    } finally {
      await engine.stop();
    }
  });

  test('an order whose pending record cannot be written is never finalized', async () => {
    const engine = await startEngine({});
    try {
      engine.store.failNext(
        'putPending',
        new ConsulAcmeError(
          'STORE_PERMISSION_DENIED',
          'write secret/data/consul-acme/pending/a.example.com: permission denied',
        ),
      );
      await engine.discovery.push({ web: [tag('a.example.com')] });
      const waiting = await until(engine, 'a.example.com', 'waiting');
      assert.match(waiting.waitingFor ?? '', /STORE_PERMISSION_DENIED/);
      assert.equal(engine.issuer.resumed.length, 0);
      assert.equal(await engine.store.get('a.example.com'), undefined, 'nothing was issued into the store');
      engine.clock.advance(1_000);
      await until(engine, 'a.example.com', 'valid');
    } finally {
      await engine.stop();
    }
  });

  test('a connection lost after finalize costs no second order', async () => {
    const engine = await startEngine({});
    try {
      engine.issuer.failAfterFinalize(
        new ConsulAcmeError('ACME_UNREACHABLE', 'acme certificate download for a.example.com failed: ECONNRESET', {
          retryable: true,
        }),
      );
      await engine.discovery.push({ web: [tag('a.example.com')] });
      await until(engine, 'a.example.com', 'failed');
      engine.clock.advance(MINUTE);
      await until(engine, 'a.example.com', 'valid');
      assert.deepEqual(engine.issuer.orders, ['a.example.com']);
      assert.equal(engine.issuer.resumed.length, 1);
    } finally {
      await engine.stop();
    }
  });
});

describe('engine: the policy fails closed, and the registration heals', () => {
  test('with a list that cannot be read, no new name is ordered and a stored one still renews', async () => {
    const engine = await startEngine(
      { web: [tag('new.example.com'), tag('old.example.com')] },
      {},
      {
        policy: {
          ...EMPTY_POLICY,
          unreadable: [{ list: 'deny', reason: 'Consul refused the token (Permission denied)' }],
        },
        // A certificate with a ninth of its life left: due for renewal now.
        seed: async (store, clock) => {
          const notBefore = new Date(Math.floor(clock.nowMs() / 1000) * 1000 - 80 * 24 * HOUR);
          const notAfter = new Date(notBefore.getTime() + 90 * 24 * HOUR);
          await store.put(await makeCertificateData({ hostname: 'old.example.com', notBefore, notAfter }), 0);
        },
      },
    );
    try {
      const refused = await until(engine, 'new.example.com', 'refused');
      assert.match(
        refused.policy ?? '',
        /the policy cannot be read \(deny: Consul refused the token \(Permission denied\)\); no new names are issued/,
      );
      assert.equal(engine.service.status().policy.failsClosed, refused.policy);
      const renewed = await until(engine, 'old.example.com', 'valid');
      assert.equal(renewed.reason, 'NotYetDue');
      assert.deepEqual(
        engine.issuer.orders,
        ['old.example.com'],
        'the stored name renewed, the new one was never ordered',
      );
    } finally {
      await engine.stop();
    }
  });

  test('an allow list whose every line is invalid refuses every name', async () => {
    const engine = await startEngine({});
    try {
      await engine.policy.set({ allow: '*bad*\nexample..com' });
      await engine.discovery.push({ web: [tag('a.example.com')] });
      const refused = await until(engine, 'a.example.com', 'refused');
      assert.match(
        refused.policy ?? '',
        /the allow list has no valid pattern \(2 invalid lines\); every name is refused/,
      );
      assert.deepEqual(engine.issuer.orders, []);
    } finally {
      await engine.stop();
    }
  });

  test('a registration the agent lost is registered again at the next check', async () => {
    const engine = await startEngine({ web: [tag('a.example.com')] });
    try {
      await until(engine, 'a.example.com', 'valid');
      engine.registration.lose();
      assert.equal(engine.registration.isRegistered(), false);
      engine.clock.advance(30_000);
      await waitFor('the registration restored', () => engine.registration.isRegistered());
      assert.deepEqual(engine.registration.tags, ['urlprefix-a.example.com/.well-known/acme-challenge/']);
    } finally {
      await engine.stop();
    }
  });
});
