import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { MemoryBudgetLedger } from '../../src/adapters/memory/memory-budget-ledger.js';
import { MemoryCertificateStateStore } from '../../src/adapters/memory/memory-certificate-state-store.js';
import { MemoryChallengeStore } from '../../src/adapters/memory/memory-challenge-store.js';
import { Janitor } from '../../src/engine/janitor.js';
import { silentLogger } from '../../src/logging.js';
import { ManualClock } from '../../src/ports/clock.js';

const HOUR = 3_600_000;

describe('janitor', () => {
  test('deletes what is left behind, keeps what is in use, and runs at most once an hour', async () => {
    const clock = new ManualClock();
    const challengeStore = new MemoryChallengeStore({ clock });
    const ledger = new MemoryBudgetLedger({ clock });
    const stateStore = new MemoryCertificateStateStore();
    await challengeStore.put('left-behind-by-a-crash', 'ka-1');
    await ledger.record('paused/name/gone.example.com', new Date(clock.nowMs() + 10 * 60_000));
    for (const hostname of ['gone.example.com', 'failing.example.com']) {
      await stateStore.put({
        hostname,
        consecutiveFailures: 2,
        lastAttemptAt: clock.now(),
        lastError: 'x',
        nextAttemptAt: clock.now(),
      });
    }
    const janitor = new Janitor({
      challengeStore,
      ledger,
      stateStore,
      isKnown: (hostname) => hostname === 'failing.example.com',
      clock,
      logger: silentLogger(),
    });
    clock.advance(2 * HOUR);
    await challengeStore.put('in-flight', 'ka-2');
    const summary = await janitor.maybeRun();
    assert.deepEqual(summary, { tokens: 1, budgetKeys: 1, states: 1 });
    assert.deepEqual(challengeStore.tokens(), ['in-flight']);
    assert.deepEqual(await stateStore.list(), ['failing.example.com']);
    clock.advance(HOUR / 2);
    assert.equal(await janitor.maybeRun(), undefined, 'not again within the hour');
    clock.advance(HOUR / 2);
    assert.deepEqual(await janitor.maybeRun(), { tokens: 0, budgetKeys: 0, states: 0 });
  });
});
