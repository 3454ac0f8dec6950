import { test } from 'node:test';
import assert from 'node:assert/strict';
import { renewalSpreadDelayMs } from '../../src/domain/spread.js';

const HOUR = 3_600_000;

test('the same certificate always gets the same delay', () => {
  assert.equal(
    renewalSpreadDelayMs('app.example.com', HOUR, 30 * 24 * HOUR),
    renewalSpreadDelayMs('app.example.com', HOUR, 30 * 24 * HOUR),
  );
});

test('every delay falls inside the window', () => {
  for (let i = 0; i < 1000; i++) {
    const d = renewalSpreadDelayMs(`host-${i}.example.com`, HOUR, 30 * 24 * HOUR);
    assert.ok(d >= 0 && d < HOUR, `${d}`);
  }
});

test('the window never exceeds a quarter of the remaining lifetime', () => {
  for (let i = 0; i < 200; i++) assert.ok(renewalSpreadDelayMs(`h${i}.example.com`, HOUR, 60_000) < 15_000);
});

test('10,000 certificates due together spread over the window instead of one minute', () => {
  const perMinute = new Map<number, number>();
  for (let i = 0; i < 10_000; i++) {
    const minute = Math.floor(renewalSpreadDelayMs(`svc-${i}.example.com`, HOUR, 30 * 24 * HOUR) / 60_000);
    perMinute.set(minute, (perMinute.get(minute) ?? 0) + 1);
  }
  assert.equal(perMinute.size, 60, 'every minute of the hour gets some');
  const busiest = Math.max(...perMinute.values());
  assert.ok(busiest < (10_000 / 60) * 1.5, `busiest minute has ${busiest} renewals`);
});

test('no window means no delay', () => {
  assert.equal(renewalSpreadDelayMs('a.example.com', 0, HOUR), 0);
});
