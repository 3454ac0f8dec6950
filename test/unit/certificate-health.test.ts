import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  certificateHealth,
  MAX_HEALTH_PROBLEMS,
  type CertificateHealthInput,
} from '../../src/domain/certificate-health.js';

const NOW = new Date('2026-06-01T00:00:00Z');
const DAY = 86_400_000;
const at = (days: number): string => new Date(NOW.getTime() + days * DAY).toISOString();
const options = { warnBeforeMs: 14 * DAY, criticalAfterFailures: 10 };

const cases: Array<[string, CertificateHealthInput[], 'passing' | 'warning' | 'critical', RegExp | undefined]> = [
  ['no certificates at all is passing', [], 'passing', undefined],
  [
    'certificates far from expiry are passing',
    [{ hostname: 'a.example.com', expiresAt: at(60), attempts: 0 }],
    'passing',
    undefined,
  ],
  [
    'a certificate inside the warning window is a warning',
    [{ hostname: 'a.example.com', expiresAt: at(3), attempts: 0 }],
    'warning',
    /a\.example\.com: expires/,
  ],
  [
    'an expired certificate is critical',
    [{ hostname: 'a.example.com', expiresAt: at(-1), attempts: 0 }],
    'critical',
    /expired/,
  ],
  [
    'a name that failed on every step of the schedule is critical',
    [{ hostname: 'b.example.com', expiresAt: undefined, attempts: 10 }],
    'critical',
    /failed 10 times/,
  ],
  [
    'a few failures alone are not a problem',
    [{ hostname: 'b.example.com', expiresAt: at(60), attempts: 3 }],
    'passing',
    undefined,
  ],
  [
    'critical wins over warning and lists first',
    [
      { hostname: 'w.example.com', expiresAt: at(2), attempts: 0 },
      { hostname: 'c.example.com', expiresAt: at(-2), attempts: 0 },
    ],
    'critical',
    /^c\.example\.com/,
  ],
];

for (const [name, input, status, firstProblem] of cases) {
  test(name, () => {
    const health = certificateHealth(NOW, input, options);
    assert.equal(health.status, status);
    if (firstProblem) assert.match(health.problems[0] ?? '', firstProblem);
    else assert.deepEqual(health.problems, []);
  });
}

test('names the worst hostnames up to the limit, then says how many more there are', () => {
  const failing = Array.from({ length: 10_000 }, (_, i) => ({
    hostname: `f${String(i).padStart(5, '0')}.example.com`,
    expiresAt: undefined,
    attempts: 12,
  }));
  const expiring = [{ hostname: 'a.example.com', expiresAt: at(3), attempts: 0 }];
  const health = certificateHealth(NOW, [...expiring, ...failing], options);
  assert.equal(health.status, 'critical');
  assert.equal(health.problems.length, MAX_HEALTH_PROBLEMS + 1);
  assert.equal(health.problems[0], 'f00000.example.com: failed 12 times in a row');
  assert.equal(
    health.problems.at(-1),
    `and ${10_001 - MAX_HEALTH_PROBLEMS} more hostnames (GET /status lists them all)`,
  );
  assert.ok(JSON.stringify(health).length < 4_096, 'within what Consul keeps of a check output');
});
