import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { StoredFacts } from '../../src/domain/certificate.js';
import type { Plan } from '../../src/domain/plan.js';
import type { JobState } from '../../src/engine/queue.js';
import { StatusView, type StatusViewDeps } from '../../src/engine/status-view.js';

const NOW = new Date('2026-11-27T12:00:00Z');
const DAY = 86_400_000;
const OPTIONS = { warnBeforeMs: 14 * DAY, criticalAfterFailures: 3 };

function stored(hostname: string, expiresInMs: number, managed = true): StoredFacts {
  const notAfter = new Date(NOW.getTime() + expiresInMs);
  return {
    hostname,
    version: 1,
    managed,
    problem: undefined,
    certificate: {
      hostname,
      hostnames: [hostname],
      notBefore: new Date(notAfter.getTime() - 90 * DAY),
      notAfter,
      directoryUrl: 'https://ca.test/directory',
      issuer: 'Test CA',
      keyType: 'ec-p256',
      obtainedAt: new Date(notAfter.getTime() - 90 * DAY),
    },
  };
}

/** A view over fixed facts: managed names, stored records, queue states and last plans. */
function view(opts: {
  managed: string[];
  records: StoredFacts[];
  failures?: Record<string, number>;
  plans?: Record<string, Plan>;
  storeError?: string;
}): StatusView {
  const facts = new Map(opts.records.map((r) => [r.hostname, r]));
  const deps = {
    desired: {
      managedHostnames: () => [...opts.managed].sort(),
      managedSet: () => new Set(opts.managed),
      refusedHostnames: () => [][Symbol.iterator](),
      isManaged: (h: string) => opts.managed.includes(h),
      refusal: () => undefined,
    },
    index: {
      facts: (h: string) => facts.get(h),
      hostnames: () => facts.keys(),
      forEachHostname: (visit: (h: string) => void) => facts.forEach((_, h) => visit(h)),
      isStale: () => false,
    },
    queue: {
      state: (h: string): JobState | undefined =>
        opts.failures?.[h] === undefined
          ? undefined
          : {
              hostname: h,
              phase: 'queued',
              reason: 'Missing',
              emergency: false,
              consecutiveFailures: opts.failures[h],
              lastError: 'ACME_PROBLEM: no',
              waitingFor: undefined,
              dueAt: NOW,
            },
      consecutiveFailures: (h: string): number => opts.failures?.[h] ?? 0,
    },
    storeHealth: { state: () => ({ error: opts.storeError }) },
  } as unknown as StatusViewDeps;
  const v = new StatusView(deps);
  for (const [hostname, plan] of Object.entries(opts.plans ?? {}))
    v.onEvent({ type: 'planned', hostname, plan, stored: facts.get(hostname) } as never);
  return v;
}

describe('StatusView.health: what the certificate health check reports', () => {
  it('passes with nothing to say about thousands of valid names', () => {
    const names = Array.from({ length: 5000 }, (_, i) => `n${i}.example.test`);
    const health = view({ managed: names, records: names.map((h) => stored(h, 60 * DAY)) }).health(NOW, OPTIONS);
    assert.deepEqual(health, { status: 'passing', problems: [] });
  });

  it('names the expired and the failing first, then the expiring, each group by hostname', () => {
    const health = view({
      managed: ['z-expiring.test', 'b-expired.test', 'a-failing.test', 'c-fine.test', 'a-expiring.test'],
      records: [
        stored('z-expiring.test', 3 * DAY),
        stored('a-expiring.test', 5 * DAY),
        stored('b-expired.test', -DAY),
        stored('c-fine.test', 40 * DAY),
      ],
      failures: { 'a-failing.test': 3, 'c-fine.test': 2 },
    }).health(NOW, OPTIONS);
    assert.equal(health.status, 'critical');
    assert.deepEqual(
      health.problems.map((p) => p.split(':')[0]),
      ['a-failing.test', 'b-expired.test', 'a-expiring.test', 'z-expiring.test'],
    );
  });

  it('leaves out records consul-acme does not manage and names on their way out', () => {
    const health = view({
      managed: ['leaving.test'],
      records: [stored('foreign.test', -DAY, false), stored('leaving.test', DAY)],
      plans: { 'leaving.test': { action: 'keep', reason: 'GracePeriod' } as Plan },
    }).health(NOW, OPTIONS);
    assert.deepEqual(health, { status: 'passing', problems: [] });
  });

  it('is critical while the store fails, with the store named first', () => {
    const health = view({
      managed: ['a.test'],
      records: [stored('a.test', 5 * DAY)],
      storeError: 'STORE_UNAVAILABLE: x',
    }).health(NOW, OPTIONS);
    assert.equal(health.status, 'critical');
    assert.equal(health.problems[0], 'certificate store: STORE_UNAVAILABLE: x');
    assert.match(health.problems[1] ?? '', /^a\.test: expires at /);
  });
});
