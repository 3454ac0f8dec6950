/**
 * RouteRegistration: what it hands to the registration for each change of the managed set, and
 * when it counts a name's route as registered (the order gate waits on that time).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { MemoryServiceRegistration } from '../../src/adapters/memory/memory-service-registration.js';
import { challengeRouteTag } from '../../src/domain/challenge.js';
import { RouteRegistration } from '../../src/engine/route-registration.js';
import { silentLogger } from '../../src/logging.js';
import { ManualClock } from '../../src/ports/clock.js';

/** A memory registration that records each change call and can be told to refuse them. */
class RecordingRegistration extends MemoryServiceRegistration {
  readonly changes: Array<{ added: string[]; removed: string[] }> = [];
  refuse = false;
  /** While set, each change waits until the test calls the function it left in `held`. */
  hold = false;
  readonly held: Array<() => void> = [];

  override async change(added: readonly string[], removed: readonly string[]): Promise<void> {
    this.changes.push({ added: [...added], removed: [...removed] });
    if (this.hold) await new Promise<void>((resolve) => this.held.push(resolve));
    // The tags are taken even when the registration fails, as in Consul's adapter.
    await super.change(added, removed);
    if (this.refuse) throw new Error('agent unreachable');
  }
}

/** `registrationOff`: the routes are not registered at all (CONSUL_ACME_REGISTER_SERVICE=false). */
function setUp({ registrationOff = false } = {}): {
  routes: RouteRegistration;
  registration: RecordingRegistration;
  clock: ManualClock;
} {
  const registration = new RecordingRegistration();
  const clock = new ManualClock();
  const routes = new RouteRegistration({
    routes: registrationOff ? undefined : registration,
    health: undefined,
    fabioTagPrefix: 'urlprefix-',
    clock,
    logger: silentLogger(),
  });
  return { routes, registration, clock };
}

const tag = (hostname: string): string => challengeRouteTag(hostname, 'urlprefix-');

describe('RouteRegistration.sync', () => {
  test('hands over only the names that joined or left, and nothing when the set is the same', async () => {
    const { routes, registration } = setUp();
    await routes.sync(new Set(['a.example.com', 'b.example.com']));
    await routes.sync(new Set(['b.example.com', 'c.example.com']));
    await routes.sync(new Set(['b.example.com', 'c.example.com']));
    assert.deepEqual(registration.changes, [
      { added: [tag('a.example.com'), tag('b.example.com')], removed: [] },
      { added: [tag('c.example.com')], removed: [tag('a.example.com')] },
    ]);
    assert.deepEqual(registration.tags, [tag('b.example.com'), tag('c.example.com')]);
  });

  test('a name counts as registered once a registration took it; one that failed is taken by the next', async () => {
    const { routes, registration, clock } = setUp();
    await routes.sync(new Set(['a.example.com']));
    assert.equal(routes.registeredAtMs('a.example.com'), clock.nowMs());
    const registeredA = clock.nowMs();

    clock.advance(1_000);
    registration.refuse = true;
    await routes.sync(new Set(['a.example.com', 'b.example.com']));
    assert.equal(routes.registeredAtMs('b.example.com'), undefined, 'not registered while the agent refuses');

    clock.advance(1_000);
    registration.refuse = false;
    await routes.sync(new Set(['a.example.com', 'b.example.com']));
    assert.equal(routes.registeredAtMs('b.example.com'), clock.nowMs(), 'the next sync sends it and counts it');
    assert.equal(routes.registeredAtMs('a.example.com'), registeredA, 'an earlier name keeps its time');

    await routes.sync(new Set(['b.example.com']));
    assert.equal(routes.registeredAtMs('a.example.com'), undefined, 'a name that left is forgotten');
  });

  test('a sync does not count the names of a later sync whose registration is still under way', async () => {
    const { routes, registration, clock } = setUp();
    registration.hold = true;
    const first = routes.sync(new Set(['a.example.com']));
    const second = routes.sync(new Set(['a.example.com', 'b.example.com']));
    registration.held[0]!();
    await first;
    assert.equal(routes.registeredAtMs('a.example.com'), clock.nowMs());
    assert.equal(routes.registeredAtMs('b.example.com'), undefined, 'its registration has not answered');
    clock.advance(500);
    registration.held[1]!();
    await second;
    assert.equal(routes.registeredAtMs('b.example.com'), clock.nowMs());
  });

  test("a route's age counts from when it was asked for while its registration is under way or failed", async () => {
    const { routes, registration, clock } = setUp();
    assert.equal(routes.routeAgeMs('a.example.com'), undefined, 'a name the routes do not carry');
    registration.hold = true;
    const first = routes.sync(new Set(['a.example.com']));
    clock.advance(700);
    assert.equal(routes.routeAgeMs('a.example.com'), 700, 'asked for 700 ms ago, not confirmed yet');
    registration.held[0]!();
    await first;
    assert.equal(routes.routeAgeMs('a.example.com'), 0, 'registered just now');

    registration.hold = false;
    registration.refuse = true;
    await routes.sync(new Set(['a.example.com', 'b.example.com']));
    clock.advance(40_000);
    assert.equal(routes.routeAgeMs('b.example.com'), 40_000, 'a refused registration ages all the same');
  });

  test('no route has an age when registration is switched off', async () => {
    const { routes } = setUp({ registrationOff: true });
    await routes.sync(new Set(['a.example.com']));
    assert.equal(routes.routeAgeMs('a.example.com'), undefined);
  });
});
