import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MemoryCertificateSink } from '../../src/adapters/memory/memory-certificate-sink.js';
import type { CertificateData } from '../../src/domain/certificate.js';
import { ConsulAcmeError } from '../../src/errors.js';
import type { SinkSnapshot } from '../../src/ports/certificate-sink.js';
import { ManualClock } from '../../src/ports/clock.js';
import { SinkRunner, type SinkOutcome } from '../../src/sinks/sink-runner.js';
import { makeCertificateData } from '../support/certs.js';
import { captureLogs } from '../support/logs.js';
import { waitFor } from '../support/wait.js';

const A = 'a.example.test';
const B = 'b.example.test';
const a1 = await makeCertificateData({ hostname: A });
const a2 = await makeCertificateData({ hostname: A });
const a3 = await makeCertificateData({ hostname: A });
const b1 = await makeCertificateData({ hostname: B });

const FAST = [20, 40, 80];

function runner(
  sinks: MemoryCertificateSink[],
  snapshot: () => Promise<SinkSnapshot> = async () => ({ certificates: [], unreadable: [] }),
  extra: { clock?: ManualClock; retryScheduleMs?: number[] } = {},
): { runner: SinkRunner; outcomes: Array<[string, SinkOutcome]>; lines: ReturnType<typeof captureLogs>['lines'] } {
  const { logger, lines } = captureLogs('debug');
  const outcomes: Array<[string, SinkOutcome]> = [];
  const r = new SinkRunner({
    sinks,
    snapshot,
    logger,
    retryScheduleMs: extra.retryScheduleMs ?? FAST,
    clock: extra.clock,
    onApplied: (sink, outcome) => outcomes.push([sink, outcome]),
  });
  return { runner: r, outcomes, lines };
}

const stored = (certificate: CertificateData) => ({ kind: 'stored' as const, certificate, reason: 'renewed' as const });

function idle(r: SinkRunner): Promise<unknown> {
  return waitFor('every sink idle', () =>
    r.status().every((s) => s.pending === 0 && !s.resyncPending && s.failingSince === undefined),
  );
}

describe('SinkRunner', () => {
  it('applies a change to every sink, and each sink reports success', async () => {
    const one = new MemoryCertificateSink('one');
    const two = new MemoryCertificateSink('two');
    const { runner: r, outcomes } = runner([one, two]);
    r.notify(stored(a1));
    await idle(r);
    assert.equal(one.held.get(A), a1);
    assert.equal(two.held.get(A), a1);
    assert.deepEqual(outcomes.sort(), [
      ['one', 'applied'],
      ['two', 'applied'],
    ]);
    const status = r.status();
    assert.deepEqual(
      status.map((s) => s.name),
      ['one', 'two'],
    );
    assert.ok(status.every((s) => s.lastSuccessAt !== undefined && s.lastError === undefined));
    await r.stop();
  });

  it('keeps only the latest change of a hostname while the sink is busy', async () => {
    const sink = new MemoryCertificateSink();
    const { runner: r } = runner([sink]);
    sink.hold();
    r.notify(stored(a1));
    await waitFor('the first change to be running', () => sink.inFlight === 1);
    r.notify(stored(a2));
    r.notify(stored(a3));
    r.notify(stored(b1));
    assert.equal(r.status()[0]!.pending, 2, 'a (its latest) and b');
    sink.open();
    await idle(r);
    const applied = sink.calls.filter((c) => c.kind === 'apply').map((c) => c.change);
    assert.deepEqual(
      applied.map((c) => (c?.kind === 'stored' ? c.certificate : undefined)),
      [a1, a3, b1],
      'a2 was superseded before it ran',
    );
    assert.equal(sink.held.get(A), a3);
    assert.equal(sink.maxInFlight, 1, 'one operation per sink at a time');
    await r.stop();
  });

  it('retries a failing sink with backoff, shows it in the status, then re-syncs it when it recovers', async () => {
    const sink = new MemoryCertificateSink('flaky');
    const healthy = new MemoryCertificateSink('healthy');
    const snapshot = { certificates: [a1, b1], unreadable: [] };
    const { runner: r, outcomes, lines } = runner([sink, healthy], async () => snapshot);
    sink.failWith(new ConsulAcmeError('HAPROXY_UNREACHABLE', 'socket gone', { retryable: true }));
    r.notify(stored(a1));
    const failing = await waitFor('two failures in the status', () =>
      r.status().find((s) => s.name === 'flaky' && s.failures >= 2),
    );
    assert.ok(failing.failingSince);
    assert.equal(failing.pending, 1);
    assert.match(failing.lastError ?? '', /HAPROXY_UNREACHABLE: socket gone/);
    assert.ok(failing.nextRetryAt, 'says when it tries again');
    assert.equal(healthy.held.get(A), a1, 'the other sink is not held up');

    sink.failWith(undefined);
    await idle(r);
    assert.equal(sink.held.get(A), a1);
    assert.equal(sink.held.get(B), b1, 'the re-sync after recovery brought in the rest of the store');
    const flaky = outcomes.filter(([name]) => name === 'flaky').map(([, o]) => o);
    const failures = flaky.indexOf('applied');
    assert.ok(failures >= 2);
    assert.deepEqual(flaky, [...Array<SinkOutcome>(failures).fill('failed'), 'applied', 'resynced']);
    const retries = lines.filter((l) => l.event === 'sink_failed');
    assert.deepEqual(
      retries.slice(0, 3).map((l) => l.retry_in_ms),
      [20, 40, 80].slice(0, Math.min(3, failures)),
      'the backoff schedule',
    );
    assert.ok(lines.some((l) => l.event === 'sink_recovered' && l.sink === 'flaky'));
    assert.match(r.status()[0]!.lastError ?? '', /socket gone/, 'the last error stays on record');
    await r.stop();
  });

  it('a re-sync applies the store snapshot and retires the changes notified before it was read', async () => {
    const sink = new MemoryCertificateSink();
    let release: (() => void) | undefined;
    let reads = 0;
    const { runner: r } = runner([sink], async () => {
      reads += 1;
      if (reads === 1) await new Promise<void>((resolve) => (release = resolve));
      return { certificates: [a2], unreadable: [] };
    });
    sink.hold();
    r.notify(stored(a1)); // running, held
    await waitFor('the change to be running', () => sink.inFlight === 1);
    r.start(); // queues the re-sync
    r.notify(stored(b1)); // notified before the snapshot is read: the snapshot covers it
    sink.open();
    await waitFor('the snapshot to be read', () => release !== undefined);
    r.notify(stored(a3)); // notified while the snapshot is read: applied after it
    release!();
    await idle(r);
    const calls = sink.calls.map((c) =>
      c.kind === 'resync' ? 'resync' : c.change?.kind === 'stored' ? c.change.certificate : undefined,
    );
    assert.deepEqual(calls, [a1, 'resync', a3]);
    assert.equal(sink.held.get(A), a3);
    assert.equal(sink.held.has(B), false, 'b was not in the store when the snapshot was read');
    await r.stop();
  });

  it('shares one store snapshot between sinks that re-sync together, and retries a snapshot that fails', async () => {
    const sinks = [new MemoryCertificateSink('one'), new MemoryCertificateSink('two')];
    let reads = 0;
    const { runner: r, outcomes } = runner(sinks, async () => {
      reads += 1;
      if (reads === 1) throw new ConsulAcmeError('STORE_UNAVAILABLE', 'vault sealed', { retryable: true });
      await new Promise((resolve) => setTimeout(resolve, 20));
      return { certificates: [a1], unreadable: [] };
    });
    r.start();
    await idle(r);
    assert.ok(sinks.every((s) => s.held.get(A) === a1));
    assert.ok(reads <= 3, `one failed read, then one shared by both sinks unless they retried apart (${reads})`);
    assert.ok(outcomes.some(([, o]) => o === 'resync_failed'));
    assert.ok(r.status().every((s) => s.lastResyncAt !== undefined));
    await r.stop();
  });

  it('names the sinks failing for longer than a threshold, for the health check', async () => {
    const clock = new ManualClock('2026-01-01T00:00:00Z');
    const sink = new MemoryCertificateSink('stuck');
    const { runner: r } = runner([sink], undefined, { clock, retryScheduleMs: [3_600_000] });
    sink.failNext(1);
    r.notify(stored(a1));
    await waitFor('the failure', () => r.status()[0]!.failingSince !== undefined);
    assert.deepEqual(r.failingLongerThan(600_000), []);
    clock.advance(600_000);
    const failing = r.failingLongerThan(600_000);
    assert.deepEqual(
      failing.map((s) => [s.name, s.failingSince]),
      [['stuck', '2026-01-01T00:00:00.000Z']],
    );
    await r.stop();
  });

  it('stop waits for an operation in flight, then aborts it when it takes too long; nothing runs afterwards', async () => {
    const sink = new MemoryCertificateSink();
    const { runner: r } = runner([sink]);
    sink.hold();
    r.notify(stored(a1));
    await waitFor('the change to be running', () => sink.inFlight === 1);
    await r.stop(50);
    assert.equal(sink.inFlight, 0, 'aborted');
    r.notify(stored(b1));
    r.requestResync();
    assert.equal(sink.calls.length, 1);
  });
});
