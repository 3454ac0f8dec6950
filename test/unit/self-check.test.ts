/** The start-up self-check: passes only when no check finds anything missing, retries on the clock, names what is missing. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SelfCheck } from '../../src/engine/self-check.js';
import { ConsulAcmeError } from '../../src/errors.js';
import { ManualClock } from '../../src/ports/clock.js';
import type { MissingPermission, PermissionCheck } from '../../src/ports/permission-check.js';
import { captureLogs } from '../support/logs.js';

const SESSION: MissingPermission = {
  system: 'consul',
  permission: 'session_prefix "" write',
  neededFor: "locks are held with a session on the local agent's node",
  detail: 'CONSUL_PERMISSION_DENIED: session create: Consul refused the token (Permission denied)',
};

/** A check whose answers the test sets: a list of missing permissions, or an error. */
class ScriptedCheck implements PermissionCheck {
  readonly name = 'consul';
  calls = 0;
  constructor(public answer: MissingPermission[] | Error) {}
  check(): Promise<MissingPermission[]> {
    this.calls += 1;
    return this.answer instanceof Error ? Promise.reject(this.answer) : Promise.resolve(this.answer);
  }
}

/** Lets the check's promises settle. */
const settle = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe('SelfCheck', () => {
  it('passes at once without checks (memory adapters, tests)', async () => {
    const check = new SelfCheck({ checks: [], clock: new ManualClock(), logger: captureLogs().logger, retryMs: 1000 });
    assert.equal(await check.start(), true);
    assert.equal(check.passed(), true);
  });

  it('stays failed while a permission is missing, names it, checks again on the clock, and passes once granted', async () => {
    const clock = new ManualClock();
    const { logger, lines } = captureLogs();
    const scripted = new ScriptedCheck([SESSION]);
    const check = new SelfCheck({ checks: [scripted], clock, logger, retryMs: 1000 });
    let passed: boolean | undefined;
    void check.start().then((value) => (passed = value));
    await settle();
    assert.equal(check.passed(), false);
    assert.deepEqual(check.status().missing, [SESSION]);
    assert.equal(check.status().checkedAt, clock.now().toISOString());
    const logged = lines.find((l) => l.event === 'permission_missing');
    assert.deepEqual(logged?.missing, ['consul: session_prefix "" write']);
    assert.match(
      String(logged?.err),
      /^PERMISSION_MISSING: missing permissions: consul: session_prefix "" write \(needed because locks/,
    );

    clock.advance(999);
    await settle();
    assert.equal(scripted.calls, 1, 'not before retryMs');
    scripted.answer = [];
    clock.advance(1);
    await settle();
    assert.equal(scripted.calls, 2);
    assert.equal(check.passed(), true);
    assert.equal(passed, true);
    assert.deepEqual(check.status().missing, []);
    assert.ok(lines.some((l) => l.event === 'self_check_passed'));
    clock.advance(10_000);
    await settle();
    assert.equal(scripted.calls, 2, 'not run again once passed');
  });

  it('a check that cannot tell keeps it failed with the error, not a missing permission', async () => {
    const clock = new ManualClock();
    const scripted = new ScriptedCheck(
      new ConsulAcmeError('CONSUL_UNAVAILABLE', 'kv put x: Consul answered 500: No path to datacenter', {
        retryable: true,
      }),
    );
    const check = new SelfCheck({ checks: [scripted], clock, logger: captureLogs().logger, retryMs: 1000 });
    void check.start();
    await settle();
    assert.equal(check.passed(), false);
    assert.deepEqual(check.status().missing, []);
    assert.equal(
      check.status().error,
      'consul: CONSUL_UNAVAILABLE: kv put x: Consul answered 500: No path to datacenter',
    );
  });

  it('stop() ends the waiting with false and schedules nothing more', async () => {
    const clock = new ManualClock();
    const scripted = new ScriptedCheck([SESSION]);
    const check = new SelfCheck({ checks: [scripted], clock, logger: captureLogs().logger, retryMs: 1000 });
    const waiting = check.start();
    await settle();
    check.stop();
    assert.equal(await waiting, false);
    clock.advance(5_000);
    await settle();
    assert.equal(scripted.calls, 1);
  });
});
