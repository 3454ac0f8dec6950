import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { IssuanceQueue, type JobHandler, type JobOutcome } from '../../src/engine/queue.js';
import { AcmeProblemError, ConsulAcmeError } from '../../src/errors.js';
import { silentLogger } from '../../src/logging.js';
import { ManualClock, systemClock } from '../../src/ports/clock.js';
import { MemoryCertificateStateStore } from '../../src/adapters/memory/memory-certificate-state-store.js';
import { captureLogs } from '../support/logs.js';
import { waitFor } from '../support/wait.js';

function deferred<T>(): { promise: Promise<T>; resolve: (v: T) => void; reject: (e: unknown) => void } {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

function queueWith(handler: JobHandler, concurrency = 2, retryScheduleMs = [20, 40, 80]): IssuanceQueue {
  return new IssuanceQueue(handler, {
    concurrency,
    retryScheduleMs,
    busyRecheckMs: 20,
    clock: systemClock,
    logger: silentLogger(),
  });
}

describe('issuance queue', () => {
  test('a duplicate submit of a waiting or running certificate does nothing', async () => {
    const gate = deferred<JobOutcome>();
    let calls = 0;
    const queue = queueWith(async () => {
      calls++;
      return gate.promise;
    });
    assert.equal(queue.submit('a.example.com', { reason: 'Missing' }), true);
    assert.equal(queue.submit('a.example.com', { reason: 'Missing' }), false);
    await waitFor('job running', () => queue.state('a.example.com')?.phase === 'running');
    assert.equal(queue.submit('a.example.com', { reason: 'Expiring' }), false);
    gate.resolve({ kind: 'done' });
    await queue.idle();
    assert.equal(calls, 1);
    assert.equal(queue.state('a.example.com'), undefined);
  });

  test('no more than the configured number of jobs run at once', async () => {
    let running = 0;
    let maxRunning = 0;
    const queue = queueWith(async () => {
      running++;
      maxRunning = Math.max(maxRunning, running);
      await new Promise((r) => setTimeout(r, 5));
      running--;
      return { kind: 'done' };
    }, 3);
    for (let i = 0; i < 20; i++) queue.submit(`h${i}.example.com`, { reason: 'Missing' });
    await queue.idle();
    assert.equal(maxRunning, 3);
  });

  test('a failed job is retried after a growing delay, and its state records the failures', async () => {
    const attempts: number[] = [];
    const seenOnRetry: Array<ReturnType<IssuanceQueue['state']>> = [];
    const queue: IssuanceQueue = queueWith(async ({ hostname: id, attempt }) => {
      attempts.push(attempt);
      if (attempt > 1) seenOnRetry.push(queue.state(id));
      if (attempt < 3) throw new ConsulAcmeError('ACME_UNREACHABLE', 'down', { retryable: true });
      return { kind: 'done' };
    });
    queue.submit('a.example.com', { reason: 'Missing' });
    await waitFor('third attempt succeeded', () => attempts.length === 3 && queue.state('a.example.com') === undefined);
    assert.deepEqual(attempts, [1, 2, 3]);
    assert.deepEqual(
      seenOnRetry.map((s) => s?.consecutiveFailures),
      [1, 2],
    );
    assert.match(seenOnRetry[0]?.lastError ?? '', /ACME_UNREACHABLE/);
  });

  test('a Retry-After longer than the schedule decides when the retry happens', async () => {
    const queue = queueWith(async () => {
      throw new AcmeProblemError('ACME_RATE_LIMITED', 'slow down', { retryAfterSeconds: 3600 });
    });
    const before = Date.now();
    queue.submit('a.example.com', { reason: 'Missing' });
    await waitFor('failure recorded', () => queue.state('a.example.com')?.consecutiveFailures === 1);
    const due = queue.state('a.example.com')!.dueAt.getTime();
    assert.ok(due - before >= 3_599_000, `retry due ${due - before} ms later`);
    await queue.stop(0);
  });

  test('emergencies start before routine work that was queued earlier', async () => {
    const order: string[] = [];
    const gate = deferred<JobOutcome>();
    const queue = queueWith(async ({ hostname: id }) => {
      order.push(id);
      if (id === 'blocker.example.com') return gate.promise;
      return { kind: 'done' };
    }, 1);
    queue.submit('blocker.example.com', { reason: 'Missing' });
    queue.submit('routine.example.com', { reason: 'Expiring' });
    queue.submit('urgent.example.com', { reason: 'Expired', emergency: true });
    gate.resolve({ kind: 'done' });
    await queue.idle();
    assert.deepEqual(order, ['blocker.example.com', 'urgent.example.com', 'routine.example.com']);
  });

  test('a certificate another instance holds is looked at again later without counting a failure', async () => {
    let calls = 0;
    const queue = queueWith(async () => (++calls === 1 ? { kind: 'busy' } : { kind: 'done' }));
    queue.submit('a.example.com', { reason: 'Missing' });
    await waitFor('second look', () => calls === 2 && queue.state('a.example.com') === undefined);
  });

  test('stop lets running jobs finish within the bound, then aborts them', async () => {
    let aborted = false;
    const queue = queueWith(
      ({ signal }) =>
        new Promise<JobOutcome>((_resolve, reject) => {
          signal.addEventListener('abort', () => {
            aborted = true;
            reject(new Error('aborted'));
          });
        }),
    );
    queue.submit('a.example.com', { reason: 'Missing' });
    await waitFor('running', () => queue.inFlight() === 1);
    // The queue's timers never hold the process open; a real job's own I/O would.
    const keepAlive = setInterval(() => undefined, 1_000);
    await queue.stop(50);
    clearInterval(keepAlive);
    assert.equal(aborted, true);
    assert.equal(queue.inFlight(), 0);
    assert.equal(queue.submit('b.example.com', { reason: 'Missing' }), false, 'a stopped queue takes no jobs');
  });

  test('a backoff persisted by one queue is respected by the next one (a restart or another instance)', async () => {
    const state = new MemoryCertificateStateStore();
    const first = new IssuanceQueue(
      async () => {
        throw new ConsulAcmeError('ACME_UNREACHABLE', 'down', { retryable: true });
      },
      { concurrency: 1, retryScheduleMs: [3_600_000], clock: systemClock, logger: silentLogger(), state },
    );
    first.submit('a.example.com', { reason: 'Missing' });
    await waitFor('failure persisted', async () => (await state.get('a.example.com'))?.consecutiveFailures === 1);
    await first.stop(0);

    let calls = 0;
    const second = new IssuanceQueue(
      async () => {
        calls++;
        return { kind: 'done' };
      },
      { concurrency: 1, retryScheduleMs: [3_600_000], clock: systemClock, logger: silentLogger(), state },
    );
    second.submit('a.example.com', { reason: 'Missing' });
    const deferred = await waitFor('deferred to the persisted time', () =>
      second.state('a.example.com')?.phase === 'backoff' ? second.state('a.example.com') : undefined,
    );
    assert.equal(calls, 0, 'no attempt before the persisted time');
    assert.equal(deferred.consecutiveFailures, 1);
    assert.equal(second.consecutiveFailures('a.example.com'), 1, 'the count the health check reads');
    assert.equal(second.consecutiveFailures('other.example.com'), 0, 'no job, no failures');
    assert.ok(deferred.dueAt.getTime() > Date.now() + 3_500_000);
    await second.stop(0);
  });

  test('a success clears the persisted backoff', async () => {
    const state = new MemoryCertificateStateStore();
    await state.put({
      hostname: 'a.example.com',
      consecutiveFailures: 3,
      lastAttemptAt: new Date(),
      lastError: 'x',
      nextAttemptAt: new Date(Date.now() - 1000),
    });
    const withState = new IssuanceQueue(async () => ({ kind: 'done' }), {
      concurrency: 1,
      retryScheduleMs: [20],
      clock: systemClock,
      logger: silentLogger(),
      state,
    });
    withState.submit('a.example.com', { reason: 'Missing' });
    await waitFor('state cleared', async () => (await state.get('a.example.com')) === undefined);
  });

  test('a deferred job is not taken again before its time, and runs once when it comes', () => {
    const clock = new ManualClock();
    const runs: number[] = [];
    const queue = new IssuanceQueue(
      async () => {
        runs.push(clock.nowMs());
        return runs.length === 1
          ? {
              kind: 'deferred',
              until: new Date(clock.nowMs() + 3 * 3_600_000),
              why: 'budget account default spent (1/1)',
            }
          : { kind: 'done' };
      },
      { concurrency: 4, retryScheduleMs: [60_000], clock, logger: silentLogger() },
    );
    queue.submit('a.example.com', { reason: 'Missing' });
    return settle().then(async () => {
      assert.equal(runs.length, 1);
      assert.equal(queue.state('a.example.com')?.phase, 'deferred');
      assert.equal(queue.state('a.example.com')?.waitingFor, 'budget account default spent (1/1)');
      for (let minute = 1; minute < 180; minute++) {
        clock.advance(60_000);
        await settle();
      }
      assert.equal(runs.length, 1, 'not taken again while the hold lasts');
      assert.equal(clock.pendingTimers(), 1, 'one timer for the whole queue');
      clock.advance(60_000);
      await settle();
      assert.equal(runs.length, 2, 'taken once when the hold ends');
      assert.equal(queue.state('a.example.com'), undefined);
    });
  });

  test('a name deferred again for the same reason is logged at debug; a new reason at info', async () => {
    const clock = new ManualClock();
    const whys = [
      'waiting for the route: NotRouted: refused',
      'waiting for the route: NotRouted: refused',
      'budget spent',
    ];
    let runs = 0;
    const { logger, lines } = captureLogs('debug');
    const queue = new IssuanceQueue(
      async () => {
        const why = whys[runs++];
        return why === undefined ? { kind: 'done' } : { kind: 'deferred', until: new Date(clock.nowMs() + 1_000), why };
      },
      { concurrency: 1, retryScheduleMs: [60_000], clock, logger },
    );
    queue.submit('a.example.com', { reason: 'Missing' });
    for (let i = 0; i < 4; i++) {
      await settle();
      clock.advance(1_000);
    }
    await settle();
    assert.equal(runs, 4);
    const deferrals = lines.filter((l) => l.event === 'cert_deferred').map((l) => [l.level, l.reason]);
    assert.deepEqual(deferrals, [
      [30, 'waiting for the route: NotRouted: refused'],
      [20, 'waiting for the route: NotRouted: refused'],
      [30, 'budget spent'],
    ]);
  });

  test('with 10,000 jobs waiting, each starts at its due time, in due order, and none early', async () => {
    const clock = new ManualClock();
    const started: string[] = [];
    const queue = new IssuanceQueue(
      async ({ hostname }) => {
        started.push(hostname);
        return { kind: 'done' };
      },
      { concurrency: 2, retryScheduleMs: [60_000], clock, logger: silentLogger() },
    );
    const dueAt = new Map<string, number>();
    for (let i = 0; i < 10_000; i++) {
      const hostname = `h${String(i).padStart(5, '0')}.example.com`;
      // Due times 60 ms apart over ten minutes, submitted in a scrambled order (7919 is prime to 10,000).
      const at = ((i * 7919) % 10_000) * 60;
      dueAt.set(hostname, at);
      queue.submit(hostname, { reason: 'Expiring', emergency: i % 97 === 0, notBefore: new Date(clock.nowMs() + at) });
    }
    const start = clock.nowMs();
    for (let step = 0; step < 10_000; step++) {
      await settle();
      const elapsed = clock.nowMs() - start;
      const dueNow = step + 1; // the jobs due at 0, 60, …, elapsed
      assert.equal(started.length, dueNow, `at ${elapsed} ms exactly the ${dueNow} jobs due have started`);
      clock.advance(60);
    }
    const expected = [...dueAt.entries()].sort((a, b) => a[1] - b[1]).map(([hostname]) => hostname);
    assert.deepEqual(started, expected);
    assert.equal(queue.depth(), 0);
  });

  test('an infrastructure fault is retried on the short schedule and never counts as the name failing', async () => {
    const clock = new ManualClock();
    const state = new MemoryCertificateStateStore();
    let calls = 0;
    const queue = new IssuanceQueue(
      async () => {
        calls++;
        if (calls <= 3) throw new ConsulAcmeError('STORE_PERMISSION_DENIED', 'write secret/data/x: permission denied');
        return { kind: 'done' };
      },
      {
        concurrency: 1,
        retryScheduleMs: [86_400_000],
        faultRetryScheduleMs: [1_000, 2_000],
        clock,
        logger: silentLogger(),
        state,
      },
    );
    queue.submit('a.example.com', { reason: 'Missing' });
    await settle();
    assert.equal(calls, 1);
    const held = queue.state('a.example.com');
    assert.equal(held?.phase, 'deferred');
    assert.equal(held?.consecutiveFailures, 0);
    assert.match(held?.waitingFor ?? '', /STORE_PERMISSION_DENIED/);
    assert.equal(held?.dueAt.getTime(), clock.nowMs() + 1_000);
    clock.advance(1_000);
    await settle();
    assert.equal(calls, 2);
    clock.advance(2_000);
    await settle();
    assert.equal(calls, 3);
    clock.advance(2_000);
    await settle();
    assert.equal(calls, 4);
    assert.equal(queue.state('a.example.com'), undefined);
    assert.equal(await state.get('a.example.com'), undefined, 'nothing was persisted as a backoff');
  });
});

/** Lets pending promise callbacks run (the queue's bookkeeping is asynchronous). */
async function settle(): Promise<void> {
  for (let i = 0; i < 10; i++) await new Promise((resolve) => setImmediate(resolve));
}
