/**
 * ConsulServiceRegistration when a registration fails part-way through an update: what was not
 * sent is sent by the next update, even when that update asks for nothing new. The agent is a
 * stub here so that one chosen registration can fail; test/integration/consul-registration.test.ts
 * runs the rest against a real agent.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Consul } from '../../src/adapters/consul/consul-client.js';
import { ConsulServiceRegistration } from '../../src/adapters/consul/consul-service-registration.js';

interface Registered {
  id: string;
  tags: string[];
}

/** An agent that keeps registrations in a map and refuses the registrations `failing` names. */
function stubAgent(): { consul: Consul; services: Map<string, string[]>; failing: Set<string>; sent: Registered[] } {
  const services = new Map<string, string[]>();
  const failing = new Set<string>();
  const sent: Registered[] = [];
  const consul = {
    agent: {
      service: {
        register: async (opts: { id: string; tags: string[] }) => {
          sent.push({ id: opts.id, tags: opts.tags });
          if (failing.has(opts.id)) throw Object.assign(new Error('internal error'), { statusCode: 500 });
          services.set(opts.id, opts.tags);
        },
        deregister: async (id: string) => {
          services.delete(id);
        },
        list: async () => ({}),
      },
      check: { list: async () => ({}) },
    },
  } as unknown as Consul;
  return { consul, services, failing, sent };
}

const tags = (n: number): string[] =>
  Array.from({ length: n }, (_, i) => `urlprefix-h${i}.example.com/.well-known/acme-challenge/`);

/** A registration over a stub agent that shards above 20 tags and sends each update at once. */
function sharded(): { agent: ReturnType<typeof stubAgent>; registration: ConsulServiceRegistration } {
  const agent = stubAgent();
  const registration = new ConsulServiceRegistration({
    consul: agent.consul,
    serviceId: 'svc',
    port: 8402,
    maxTagsPerRegistration: 20,
    coalesceMs: 0,
  });
  return { agent, registration };
}

describe('ConsulServiceRegistration after a failed registration', () => {
  test('a shard left unsent when another failed is sent by the next update, though its tags did not change again', async () => {
    const { agent, registration } = sharded();
    await registration.update(tags(30));
    const before = [...agent.services.keys()].sort();
    assert.ok(before.length >= 2, `sharded: ${before.join(', ')}`);

    // Growing past what the shards hold: new shards are opened and every shard takes some of the
    // new tags; the new shards are registered first. They fail, so the old ones are not sent.
    const grown = tags(80);
    for (let n = before.length; n < 64; n++) agent.failing.add(`svc-${n}`);
    await assert.rejects(registration.update(grown));
    agent.failing.clear();
    const heldBefore = new Map(agent.services);

    agent.sent.length = 0;
    await registration.update(grown);
    const all = [...agent.services.values()].flat().sort();
    assert.deepEqual(all, [...grown].sort(), 'every tag in exactly one registration');
    for (const id of before) {
      assert.ok(
        agent.sent.some((r) => r.id === id),
        `${id} sent again (it held ${heldBefore.get(id)?.length ?? 0} tags, fewer than it was given)`,
      );
    }
  });

  test('change sends only the shards of the tags that moved, and a failed one goes with the next change', async () => {
    const { agent, registration } = sharded();
    const all = tags(60);
    await registration.update(all.slice(0, 50));
    const shardCount = agent.services.size;
    assert.ok(shardCount >= 3, `sharded: ${shardCount}`);

    agent.sent.length = 0;
    await registration.change([all[50]!], [all[0]!]);
    assert.ok(agent.sent.length <= 2, `at most the two touched shards sent: ${agent.sent.map((r) => r.id).join(', ')}`);
    assert.deepEqual([...agent.services.values()].flat().sort(), all.slice(1, 51).sort());

    // The registration taking the next tag fails; the following change, which asks only to
    // remove another tag, sends it too.
    const failingTag = all[51]!;
    for (const id of agent.services.keys()) agent.failing.add(id);
    await assert.rejects(registration.change([failingTag], []));
    agent.failing.clear();
    await registration.change([], [all[1]!]);
    assert.deepEqual(
      [...agent.services.values()].flat().sort(),
      [...all.slice(2, 51), failingTag].sort(),
      'every tag asked for is in place',
    );
  });

  test('updates and changes made together are taken in call order and sent once', async () => {
    const agent = stubAgent();
    const registration = new ConsulServiceRegistration({ consul: agent.consul, serviceId: 'svc', port: 8402 });
    await registration.update(tags(3));
    agent.sent.length = 0;
    const all = tags(6);
    await Promise.all([
      registration.change([all[3]!], []),
      registration.update([all[0]!, all[4]!]),
      registration.change([all[5]!], [all[0]!]),
    ]);
    assert.equal(agent.sent.length, 1, 'one registration');
    assert.deepEqual([...agent.services.get('svc')!].sort(), [all[4]!, all[5]!].sort());
  });
});
