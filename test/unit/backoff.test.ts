import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_RETRY_SCHEDULE_MS, jitterMs, retryDelayMs } from '../../src/domain/backoff.js';

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;

describe('retryDelayMs', () => {
  const cases: Array<{ name: string; failures: number; retryAfterMs?: number; schedule?: number[]; expected: number }> =
    [
      { name: 'the first failure waits one minute', failures: 1, expected: MINUTE },
      { name: 'the second failure waits two minutes', failures: 2, expected: 2 * MINUTE },
      { name: 'the fifth failure waits half an hour', failures: 5, expected: 30 * MINUTE },
      { name: 'the tenth failure waits a day', failures: 10, expected: 24 * HOUR },
      { name: 'failures past the end of the table stay at a day', failures: 11, expected: 24 * HOUR },
      { name: 'a thousand failures still wait a day', failures: 1_000, expected: 24 * HOUR },
      { name: 'zero failures count as the first', failures: 0, expected: MINUTE },
      { name: 'a negative count counts as the first', failures: -3, expected: MINUTE },
      { name: 'a NaN count counts as the first', failures: Number.NaN, expected: MINUTE },
      {
        name: 'a Retry-After longer than the scheduled delay wins',
        failures: 1,
        retryAfterMs: 3 * HOUR,
        expected: 3 * HOUR,
      },
      {
        name: 'a Retry-After shorter than the scheduled delay is ignored',
        failures: 3,
        retryAfterMs: 10_000,
        expected: 5 * MINUTE,
      },
      { name: 'a fractional Retry-After is rounded up', failures: 1, retryAfterMs: MINUTE + 0.4, expected: MINUTE + 1 },
      { name: 'a NaN Retry-After is ignored', failures: 1, retryAfterMs: Number.NaN, expected: MINUTE },
      {
        name: 'an infinite Retry-After is ignored',
        failures: 1,
        retryAfterMs: Number.POSITIVE_INFINITY,
        expected: MINUTE,
      },
      { name: 'a custom schedule is followed and capped', failures: 3, schedule: [10, 20], expected: 20 },
    ];
  for (const c of cases) {
    test(c.name, () => assert.equal(retryDelayMs(c.failures, c.schedule, c.retryAfterMs), c.expected));
  }

  test('the default schedule never shrinks from one failure to the next', () => {
    for (let failures = 1; failures < 15; failures += 1) {
      assert.ok(retryDelayMs(failures + 1) >= retryDelayMs(failures), `failure ${failures + 1}`);
    }
    assert.equal(DEFAULT_RETRY_SCHEDULE_MS.length, 10);
  });

  test('an empty schedule is a programming error', () => {
    assert.throws(() => retryDelayMs(1, []), RangeError);
  });
});

describe('jitterMs', () => {
  const cases: Array<{ name: string; delayMs: number; fraction: number; random: number; expected: number }> = [
    { name: 'a random draw of zero adds nothing', delayMs: MINUTE, fraction: 0.1, random: 0, expected: MINUTE },
    {
      name: 'a random draw of one half adds half the spread',
      delayMs: MINUTE,
      fraction: 0.1,
      random: 0.5,
      expected: MINUTE + 3_000,
    },
    {
      name: 'a draw just below one adds nearly the whole spread',
      delayMs: 1_000,
      fraction: 0.5,
      random: 0.999,
      expected: 1_500,
    },
    { name: 'a zero fraction adds nothing', delayMs: MINUTE, fraction: 0, random: 0.9, expected: MINUTE },
    {
      name: 'a negative fraction never shortens the delay',
      delayMs: MINUTE,
      fraction: -1,
      random: 0.9,
      expected: MINUTE,
    },
    { name: 'a draw out of range is clamped', delayMs: 1_000, fraction: 0.5, random: 7, expected: 1_500 },
  ];
  for (const c of cases) {
    test(c.name, () =>
      assert.equal(
        jitterMs(c.delayMs, c.fraction, () => c.random),
        c.expected,
      ),
    );
  }
});
