/**
 * The renewal scheduler with real node-cron ticks and real ConsulLockers on a real Consul 1.8.7:
 * of several instances only the holder of the leader lock scans, a clean stop hands leadership
 * over at the next tick, a lost session hands it over after the lock-delay, and a failed scan is
 * retried at the next tick. Each instance's tick outcomes come from the scheduler's `onTick`.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, afterEach, before, describe, test } from 'node:test';
import { createConsulClient, type Consul } from '../../src/adapters/consul/consul-client.js';
import { ConsulLocker } from '../../src/adapters/consul/consul-locker.js';
import { RENEWAL_LEADER_KEY, RenewalScheduler, type ScanOutcome } from '../../src/engine/renewal-scheduler.js';
import { systemClock } from '../../src/ports/clock.js';
import { silentLogger } from '../../src/logging.js';
import { startConsul, type ConsulInstance } from '../support/consul.js';
import { waitFor } from '../support/wait.js';

/** node-cron's six-field form: every second. */
const EVERY_SECOND = '* * * * * *';

interface Instance {
  name: string;
  locker: ConsulLocker;
  scheduler: RenewalScheduler;
  /** Every tick's outcome, in order. */
  outcomes: ScanOutcome[];
  /** How many times the scan itself ran. */
  scans: number;
}

/** Every tick of every instance, in the order they finished. */
interface TickEvent {
  instance: string;
  outcome: ScanOutcome;
}

let consulServer: ConsulInstance | undefined;
let consul: Consul | undefined;
let prefix = '';
const instances: Instance[] = [];
let events: TickEvent[] = [];

function startInstance(
  name: string,
  { lockDelaySeconds = 15, scan }: { lockDelaySeconds?: number; scan?: (instance: Instance) => Promise<void> } = {},
): Instance {
  const locker = new ConsulLocker({
    consul: consul!,
    prefix,
    sessionName: `renewal-test ${name}`,
    sessionTtlSeconds: 10,
    lockDelaySeconds,
  });
  const instance: Instance = {
    name,
    locker,
    scheduler: undefined as unknown as RenewalScheduler,
    outcomes: [],
    scans: 0,
  };
  instance.scheduler = new RenewalScheduler({
    locker,
    clock: systemClock,
    schedule: EVERY_SECOND,
    logger: silentLogger(),
    scan: async () => {
      instance.scans++;
      await scan?.(instance);
    },
    onTick: (outcome) => {
      instance.outcomes.push(outcome);
      events.push({ instance: name, outcome });
    },
  });
  instances.push(instance);
  instance.scheduler.start();
  return instance;
}

async function stopInstance(instance: Instance): Promise<void> {
  await instance.scheduler.stop();
  await instance.locker.close();
}

/**
 * The outcomes that say who scanned. 'busy' (this instance's own previous tick still running,
 * e.g. the tick at start meeting the first cron tick) says nothing about leadership.
 */
function decisive(outcomes: ScanOutcome[]): ScanOutcome[] {
  return outcomes.filter((o) => o !== 'busy');
}

function count(instance: Instance, outcome: ScanOutcome): number {
  return instance.outcomes.filter((o) => o === outcome).length;
}

/** The session holding the leader key in Consul, or undefined when nobody holds it. */
async function leaderSession(): Promise<string | undefined> {
  const res = await fetch(`${consulServer!.address}/v1/kv/${prefix}${RENEWAL_LEADER_KEY}`);
  if (res.status === 404) return undefined;
  const [entry] = (await res.json()) as Array<{ Session?: string }>;
  return entry?.Session;
}

describe('renewal scheduler with real Consul locks', () => {
  before(async () => {
    consulServer = await startConsul();
    consul = createConsulClient({ address: consulServer.address });
  });

  after(async () => {
    await Promise.all(instances.splice(0).map(stopInstance));
    consul?.destroy();
    await consulServer?.stop();
  });

  // Each test has its own lock prefix, so a lock-delay left by one test cannot slow the next.
  const fresh = (): void => {
    prefix = `consul-acme-test/${randomUUID()}/locks/`;
    events = [];
  };
  afterEach(async () => {
    await Promise.all(instances.splice(0).map(stopInstance));
  });

  test('of two instances ticking together only one scans; every tick of the other reports not-leader', async () => {
    fresh();
    const a = startInstance('a');
    const b = startInstance('b');
    await waitFor('four ticks on each instance', () => a.outcomes.length >= 4 && b.outcomes.length >= 4, {
      timeoutMs: 15_000,
    });

    const [leader, follower] = a.scans > 0 ? [a, b] : [b, a];
    assert.deepEqual(
      new Set(decisive(leader.outcomes)),
      new Set(['scanned']),
      `${leader.name} scanned on every tick: ${leader.outcomes.join(',')}`,
    );
    assert.deepEqual(
      new Set(decisive(follower.outcomes)),
      new Set(['not-leader']),
      `${follower.name} never scanned: ${follower.outcomes.join(',')}`,
    );
    assert.equal(follower.scans, 0);
    assert.equal(leader.scans, count(leader, 'scanned'));
    assert.equal(leader.scheduler.isLeader(), true);
    assert.equal(follower.scheduler.isLeader(), false);
    assert.equal(
      await leaderSession(),
      leader.locker.sessionId,
      'the leader key in Consul is held by the scanning instance',
    );
  });

  test('when the leader stops, the other instance scans at its next tick, without waiting for the lock-delay', async () => {
    fresh();
    const a = startInstance('a');
    const b = startInstance('b');
    await waitFor(
      'a leader and a follower',
      () => (a.scans > 0 && count(b, 'not-leader') > 0) || (b.scans > 0 && count(a, 'not-leader') > 0),
      { timeoutMs: 10_000 },
    );
    const [leader, follower] = a.scans > 0 ? [a, b] : [b, a];

    const leaderSessionId = leader.locker.sessionId;
    assert.ok(leaderSessionId);
    await stopInstance(leader);
    instances.splice(instances.indexOf(leader), 1);
    const ticksAtStop = leader.outcomes.length;
    const followerTicksAtStop = follower.outcomes.length;
    assert.notEqual(await leaderSession(), leaderSessionId, 'a clean stop releases the leader key');

    // The lock-delay (15 s here) applies only to a lost session; a released key is free at once.
    await waitFor('the follower to scan', () => follower.scans > 0, { timeoutMs: 10_000 });
    assert.equal(follower.scheduler.isLeader(), true);
    const taken = follower.outcomes.slice(followerTicksAtStop);
    assert.ok(taken.includes('scanned'), `the follower's ticks after the stop: ${taken.join(',')}`);
    assert.equal(leader.outcomes.length, ticksAtStop, 'the stopped instance ticks no more');
    assert.equal(leader.scheduler.isLeader(), false);
  });

  test('when the leader loses its session it stops scanning, and once the lock-delay has passed exactly one instance scans again', async () => {
    fresh();
    // Session TTL 10 s: the holder renews (and so notices a destroyed session) within 5 s; the
    // 8 s lock-delay keeps the key from every instance until then.
    const a = startInstance('a', { lockDelaySeconds: 8 });
    const b = startInstance('b', { lockDelaySeconds: 8 });
    await waitFor(
      'a leader and a follower',
      () => (a.scans > 0 && count(b, 'not-leader') > 0) || (b.scans > 0 && count(a, 'not-leader') > 0),
      { timeoutMs: 10_000 },
    );
    const [leader, follower] = a.scans > 0 ? [a, b] : [b, a];
    const lostSession = leader.locker.sessionId;
    assert.ok(lostSession);
    assert.equal(await leaderSession(), lostSession);

    const destroyed = await fetch(`${consulServer!.address}/v1/session/destroy/${lostSession}`, { method: 'PUT' });
    assert.equal(destroyed.status, 200);
    await waitFor('the old leader to notice', () => !leader.scheduler.isLeader(), { timeoutMs: 10_000 });
    const noticed = events.length;

    // Whichever instance wins the key at the first tick after the lock-delay leads from then on.
    await waitFor('a scan after the loss', () => events.slice(noticed).some((e) => e.outcome === 'scanned'), {
      timeoutMs: 20_000,
    });
    const firstScan = noticed + events.slice(noticed).findIndex((e) => e.outcome === 'scanned');
    const newLeader = events[firstScan]!.instance === leader.name ? leader : follower;
    const other = newLeader === leader ? follower : leader;
    const waiting = events.slice(noticed, firstScan);
    assert.ok(
      waiting.some((e) => e.instance === leader.name && e.outcome === 'not-leader'),
      `the old leader was refused the key during the lock-delay: ${waiting.map((e) => `${e.instance}:${e.outcome}`).join(',')}`,
    );
    await waitFor(
      'three more ticks of each instance',
      () => {
        const since = events.slice(firstScan);
        return (
          since.filter((e) => e.instance === 'a').length >= 3 && since.filter((e) => e.instance === 'b').length >= 3
        );
      },
      { timeoutMs: 10_000 },
    );
    const since = events.slice(firstScan);
    assert.deepEqual(
      new Set(decisive(since.filter((e) => e.instance === newLeader.name).map((e) => e.outcome))),
      new Set(['scanned']),
    );
    assert.deepEqual(
      new Set(decisive(since.filter((e) => e.instance === other.name).map((e) => e.outcome))),
      new Set(['not-leader']),
    );
    assert.equal(newLeader.scheduler.isLeader(), true);
    assert.equal(other.scheduler.isLeader(), false);
    const holder = await leaderSession();
    assert.notEqual(holder, lostSession);
    assert.equal(holder, newLeader.locker.sessionId);
  });

  test('a scan that fails is reported, leadership is kept, and the next tick scans again', async () => {
    fresh();
    let failuresLeft = 1;
    const a = startInstance('a', {
      scan: async () => {
        if (failuresLeft > 0) {
          failuresLeft--;
          throw new Error('store unreachable');
        }
      },
    });
    await waitFor(
      'a failed tick then a scanned one',
      () => a.outcomes.includes('failed') && a.outcomes.includes('scanned'),
      { timeoutMs: 10_000 },
    );
    const outcomes = decisive(a.outcomes);
    assert.equal(outcomes[0], 'failed');
    assert.equal(outcomes.indexOf('scanned'), 1, `outcomes: ${a.outcomes.join(',')}`);
    assert.equal(a.scheduler.isLeader(), true);
    assert.equal(await leaderSession(), a.locker.sessionId);
  });

  test('stop waits for the scan in progress, then releases leadership for the next instance', async () => {
    fresh();
    let scanning: (() => void) | undefined;
    let finished = false;
    const a = startInstance('a', {
      scan: async () => {
        await new Promise<void>((resolve) => {
          scanning = resolve;
        });
        finished = true;
      },
    });
    await waitFor('a scan in progress', () => scanning !== undefined, { timeoutMs: 10_000 });
    const stopping = a.scheduler.stop();
    let stopped = false;
    void stopping.then(() => {
      stopped = true;
    });
    await new Promise((r) => setImmediate(r));
    assert.equal(stopped, false, 'stop does not return while a scan runs');
    assert.equal(await leaderSession(), a.locker.sessionId, 'leadership is kept while the scan runs');
    scanning!();
    await stopping;
    assert.equal(finished, true);
    assert.equal(a.outcomes.at(-1), 'scanned');
    assert.equal(await leaderSession(), undefined);

    const b = startInstance('b');
    await waitFor('the next instance to scan', () => b.scans > 0, { timeoutMs: 10_000 });
  });
});
