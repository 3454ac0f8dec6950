/**
 * The order gate's exact-set budget and the pre-flight's CAA refusal, seen through the whole
 * engine in one process (the real composition root with memory adapters, a fake issuer and a
 * clock the test moves), as test/unit/engine.test.ts does for the other budgets.
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
import { EMPTY_POLICY } from '../../src/domain/policy.js';
import type { CertificateStatus } from '../../src/engine/status.js';
import { silentLogger } from '../../src/logging.js';
import { ManualClock } from '../../src/ports/clock.js';
import type { Lock, Locker } from '../../src/ports/locker.js';
import type { Preflight, PreflightResult } from '../../src/ports/preflight.js';
import { createService, type Service } from '../../src/service.js';
import { FakeIssuer } from '../support/fake-issuer.js';
import { waitFor } from '../support/wait.js';

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

/** A pre-flight whose verdict per name the test sets; it counts its checks. */
class ScriptedPreflight implements Preflight {
  readonly verdicts = new Map<string, PreflightResult>();
  readonly checks: string[] = [];
  async check(hostname: string): Promise<PreflightResult> {
    this.checks.push(hostname);
    return this.verdicts.get(hostname) ?? { ok: true };
  }
}

interface Engine {
  service: Service;
  clock: ManualClock;
  issuer: FakeIssuer;
  discovery: MemoryDiscovery;
  lockAttempts(): number;
  status(hostname: string): CertificateStatus | undefined;
  stop(): Promise<void>;
}

async function startEngine(
  services: Record<string, string[]>,
  env: Record<string, string>,
  options: { lifetimeDays?: number; preflight?: Preflight } = {},
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
  const issuer = new FakeIssuer(clock, { lifetimeDays: options.lifetimeDays ?? 90 });
  const discovery = new MemoryDiscovery(services);
  const inner = new MemoryLocker();
  let lockAttempts = 0;
  const locker: Locker = {
    tryAcquire: (key): Promise<Lock | undefined> => {
      lockAttempts++;
      return inner.tryAcquire(key);
    },
    close: () => inner.close(),
  };
  const service = createService({
    config,
    logger: silentLogger(),
    clock,
    discovery,
    certificateStore: new MemoryCertificateStore(),
    challengeStore: new MemoryChallengeStore(),
    issuer,
    locker,
    stateStore: new MemoryCertificateStateStore(),
    registration: new MemoryServiceRegistration(),
    healthRegistration: new MemoryServiceRegistration(),
    policySource: new MemoryPolicySource(EMPTY_POLICY),
    budgetLedger: new MemoryBudgetLedger({ clock }),
    ...(options.preflight ? { preflight: options.preflight } : {}),
  });
  await service.start();
  await waitFor('the first catalog snapshot', () => service.status().ready, { timeoutMs: 5_000, intervalMs: 5 });
  return {
    service,
    clock,
    issuer,
    discovery,
    lockAttempts: () => lockAttempts,
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

/** Runs one renewal scan now (the scheduler's own ticks follow real time, which stands still here). */
async function scan(engine: Engine): Promise<void> {
  await waitFor('a renewal scan', async () => (await engine.service.renewal.tick()) === 'scanned', {
    timeoutMs: 5_000,
    intervalMs: 5,
  });
}

const tag = (hostname: string): string => `urlprefix-${hostname}/`;

describe('engine: the exact-set budget', () => {
  test('renewals count against the exact set: the third order in the window waits, says why, costs nothing while it waits, and goes when the window frees a slot', async () => {
    // 3-day certificates renew when a third is left: 2 days after each order.
    const engine = await startEngine(
      { web: [tag('a.example.com')] },
      { CONSUL_ACME_BUDGET_EXACT_SET: '2/7d' },
      { lifetimeDays: 3 },
    );
    try {
      await until(engine, 'a.example.com', 'valid');
      engine.clock.advance(2 * DAY + HOUR);
      await scan(engine);
      await waitFor('the first renewal', () => engine.issuer.orders.length === 2);
      await until(engine, 'a.example.com', 'valid');

      engine.clock.advance(2 * DAY + HOUR);
      await scan(engine);
      const waiting = await until(engine, 'a.example.com', 'waiting');
      assert.equal(waiting.waitingFor, 'budget exact-set a.example.com spent (2/2)');
      // The window opened with the first order, at the start: it frees a slot 7 days later.
      assert.equal(waiting.nextAttemptAt, new Date('2026-03-08T00:00:00Z').toISOString());
      assert.equal(engine.issuer.orders.length, 2, 'no third order');

      const locks = engine.lockAttempts();
      for (let i = 0; i < 5; i++) {
        engine.clock.advance(10 * MINUTE);
        await scan(engine);
        await settle();
      }
      assert.equal(engine.issuer.orders.length, 2, 'still no third order');
      assert.equal(engine.lockAttempts(), locks, 'the held name takes no lock while it waits');
      assert.equal(engine.status('a.example.com')?.state, 'waiting');

      engine.clock.advance(new Date('2026-03-08T00:00:00Z').getTime() - engine.clock.nowMs());
      await waitFor('the third order once the window frees a slot', () => engine.issuer.orders.length === 3);
      await until(engine, 'a.example.com', 'valid');
    } finally {
      await engine.stop();
    }
  });

  test('another set of names has its own budget: a name waiting on its set does not hold a new name', async () => {
    const engine = await startEngine(
      { web: [tag('a.example.com')] },
      { CONSUL_ACME_BUDGET_EXACT_SET: '1/7d' },
      { lifetimeDays: 3 },
    );
    try {
      await until(engine, 'a.example.com', 'valid');
      engine.clock.advance(2 * DAY + HOUR);
      await scan(engine);
      const waiting = await until(engine, 'a.example.com', 'waiting');
      assert.equal(waiting.waitingFor, 'budget exact-set a.example.com spent (1/1)');
      await engine.discovery.push({ web: [tag('a.example.com'), tag('b.example.com')] });
      await until(engine, 'b.example.com', 'valid');
      assert.deepEqual(engine.issuer.orders, ['a.example.com', 'b.example.com']);
    } finally {
      await engine.stop();
    }
  });
});

describe('engine: a CAA refusal in the pre-flight', () => {
  test('places no order, shows PREFLIGHT_FAILED: CAA with the detail, is retried on the schedule, and the name is issued once the records allow the CA', async () => {
    const preflight = new ScriptedPreflight();
    const detail =
      'the CAA records at example.com (0 issue "ca.example.net") do not allow letsencrypt.org: 0 issue "ca.example.net" names another CA';
    preflight.verdicts.set('a.example.com', { ok: false, reason: 'CAA', detail });
    const engine = await startEngine({}, {}, { preflight });
    try {
      await engine.discovery.push({ web: [tag('a.example.com')] });
      // Right after its route is registered a NotRouted name would be "waiting for the route"; a CAA refusal fails at once.
      const failed = await until(engine, 'a.example.com', 'failed');
      assert.equal(failed.lastError, `PREFLIGHT_FAILED: CAA: a.example.com: ${detail}`);
      assert.equal(failed.attempts, 1);
      assert.equal(failed.nextAttemptAt, new Date(engine.clock.nowMs() + MINUTE).toISOString());
      assert.deepEqual(engine.issuer.orders, [], 'no order');

      engine.clock.advance(MINUTE);
      await waitFor('a second failed attempt', () => engine.status('a.example.com')?.attempts === 2);
      assert.equal(
        engine.status('a.example.com')?.nextAttemptAt,
        new Date(engine.clock.nowMs() + 5 * MINUTE).toISOString(),
      );
      assert.deepEqual(engine.issuer.orders, [], 'still no order');

      preflight.verdicts.delete('a.example.com');
      engine.clock.advance(5 * MINUTE);
      await until(engine, 'a.example.com', 'valid');
      assert.deepEqual(engine.issuer.orders, ['a.example.com']);
      assert.equal(preflight.checks.length, 3, 'one check per attempt');
    } finally {
      await engine.stop();
    }
  });
});

describe('engine: a name whose challenge route is new', () => {
  test('is probed before the lock: while the route is not live it waits without a lock, and the passing probe is the one the order goes on', async () => {
    const preflight = new ScriptedPreflight();
    preflight.verdicts.set('a.example.com', { ok: false, reason: 'NotRouted', detail: 'connection refused' });
    const engine = await startEngine({}, {}, { preflight });
    try {
      const locksAtStart = engine.lockAttempts(); // the renewal scan's leader lock
      await engine.discovery.push({ web: [tag('a.example.com')] });
      const waiting = await until(engine, 'a.example.com', 'waiting');
      assert.equal(waiting.waitingFor, 'waiting for the route: NotRouted: connection refused');
      // The route waits grow 0.5, 1, 2, 4 s as the route ages.
      for (const waitMs of [500, 1_000, 2_000, 4_000]) {
        const checks = preflight.checks.length;
        engine.clock.advance(waitMs);
        await waitFor('the next probe', () => preflight.checks.length === checks + 1);
        await settle();
      }
      assert.equal(engine.status('a.example.com')?.state, 'waiting');
      assert.equal(engine.lockAttempts(), locksAtStart, 'no lock was taken for a route not live yet');

      preflight.verdicts.delete('a.example.com');
      const checks = preflight.checks.length;
      engine.clock.advance(8_000);
      await until(engine, 'a.example.com', 'valid');
      assert.deepEqual(engine.issuer.orders, ['a.example.com']);
      assert.equal(preflight.checks.length, checks + 1, 'the probe before the lock is not repeated under it');
      assert.equal(engine.lockAttempts(), locksAtStart + 1);
    } finally {
      await engine.stop();
    }
  });
});
