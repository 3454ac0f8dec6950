/**
 * One set of cases for every PolicySource: MemoryPolicySource and ConsulPolicySource (real Consul
 * 1.8.7). Each case uses a fresh KV prefix, so it starts with the policy folder missing. The
 * Consul blocking queries wait 60 s, so a case that sees a change within its 10 s bound was woken
 * by the change, not by a timeout.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { createConsulClient, type Consul } from '../../src/adapters/consul/consul-client.js';
import { ConsulPolicySource, policyKey } from '../../src/adapters/consul/consul-policy-source.js';
import { MemoryPolicySource, type PolicyTexts } from '../../src/adapters/memory/memory-policy-source.js';
import { BAD_WILDCARD_REASON, EMPTY_POLICY, type Policy, type PolicyListName } from '../../src/domain/policy.js';
import { ConsulAcmeError } from '../../src/errors.js';
import type { PolicySource } from '../../src/ports/policy-source.js';
import { startConsul, type ConsulInstance } from '../support/consul.js';
import { waitFor } from '../support/wait.js';

const CHANGE_TIMEOUT_MS = 10_000;

interface Recorder {
  policies: Policy[];
  errors: unknown[];
  onPolicy: (p: Policy) => void;
  onError: (e: unknown) => void;
}

function recorder(): Recorder {
  const r: Recorder = {
    policies: [],
    errors: [],
    onPolicy: (p) => {
      r.policies.push(p);
    },
    onError: (e) => {
      r.errors.push(e);
    },
  };
  return r;
}

function startWatch(source: PolicySource, rec: Recorder): { stop(): Promise<void>; done: () => boolean } {
  const controller = new AbortController();
  let finished = false;
  let failure: unknown;
  source.watch(controller.signal, rec.onPolicy, rec.onError).then(
    () => {
      finished = true;
    },
    (err: unknown) => {
      failure = err;
      finished = true;
    },
  );
  return {
    done: () => finished,
    stop: async () => {
      controller.abort();
      await waitFor('watch to resolve after abort', () => finished, { timeoutMs: 5_000, intervalMs: 20 });
      if (failure !== undefined)
        throw failure instanceof Error ? failure : new Error(`watch rejected with ${JSON.stringify(failure)}`);
    },
  };
}

/** The policy without its invalid lines' reasons, for short assertions. */
function lists(p: Policy): Pick<Policy, 'deny' | 'allow' | 'always'> {
  return { deny: p.deny, allow: p.allow, always: p.always };
}

interface Subject {
  name: string;
  setup(): Promise<void>;
  teardown(): Promise<void>;
  /** A source for the KV folder `prefix` (nothing stored there yet). */
  create(prefix: string): PolicySource;
  write(prefix: string, list: PolicyListName, text: string): Promise<void>;
  remove(prefix: string, list: PolicyListName): Promise<void>;
}

let consulServer: ConsulInstance | undefined;
let consul: Consul | undefined;
const memorySources = new Map<string, { source: MemoryPolicySource; texts: PolicyTexts }>();

const subjects: Subject[] = [
  {
    name: 'MemoryPolicySource',
    setup: async () => undefined,
    teardown: async () => undefined,
    create: (prefix) => {
      const entry = { source: new MemoryPolicySource(), texts: {} };
      memorySources.set(prefix, entry);
      return entry.source;
    },
    write: async (prefix, list, text) => {
      const entry = memorySources.get(prefix)!;
      entry.texts = { ...entry.texts, [list]: text };
      await entry.source.set(entry.texts);
    },
    remove: async (prefix, list) => {
      const entry = memorySources.get(prefix)!;
      const texts = { ...entry.texts };
      delete texts[list];
      entry.texts = texts;
      await entry.source.set(texts);
    },
  },
  {
    name: 'ConsulPolicySource',
    setup: async () => {
      consulServer = await startConsul();
      consul = createConsulClient({ address: consulServer.address });
    },
    teardown: async () => {
      consul?.destroy();
      await consulServer?.stop();
    },
    create: (prefix) =>
      new ConsulPolicySource({
        consul: consul!,
        prefix,
        waitSeconds: 60,
        requestsPerSecond: 20,
        backoff: { minMs: 50, maxMs: 200 },
      }),
    write: async (prefix, list, text) => {
      assert.equal(await consul!.kv.set({ key: policyKey(prefix, list), value: text }), true);
    },
    remove: async (prefix, list) => {
      await consul!.kv.del({ key: policyKey(prefix, list) });
    },
  },
];

function newPrefix(): string {
  return `consul-acme-test/${randomUUID()}/`;
}

for (const subject of subjects) {
  describe(`PolicySource contract: ${subject.name}`, () => {
    before(() => subject.setup());
    after(() => subject.teardown());

    it('passes the empty policy first when nothing is configured', async () => {
      const prefix = newPrefix();
      const rec = recorder();
      const watch = startWatch(subject.create(prefix), rec);
      try {
        const first = await waitFor('first policy', () => rec.policies[0]);
        assert.deepEqual(first, { ...EMPTY_POLICY });
        assert.deepEqual(rec.errors, []);
      } finally {
        await watch.stop();
      }
    });

    it('passes the configured policy first when the lists exist before the watch', async () => {
      const prefix = newPrefix();
      const source = subject.create(prefix);
      await subject.write(prefix, 'allow', '*.example.com\n');
      await subject.write(prefix, 'always', 'status.example.org');
      const rec = recorder();
      const watch = startWatch(source, rec);
      try {
        const first = await waitFor('first policy', () => rec.policies[0]);
        assert.deepEqual(lists(first), { deny: [], allow: ['*.example.com'], always: ['status.example.org'] });
      } finally {
        await watch.stop();
      }
    });

    it('wakes when the deny list is created and passes the parsed list', async () => {
      const prefix = newPrefix();
      const rec = recorder();
      const watch = startWatch(subject.create(prefix), rec);
      try {
        await waitFor('first policy', () => rec.policies[0]);
        await subject.write(prefix, 'deny', '# no staging\n*.staging.example.com\nAdmin.Example.com  # internal\n');
        const changed = await waitFor(
          'a policy with the deny list',
          () => rec.policies.find((p) => p.deny.length > 0),
          {
            timeoutMs: CHANGE_TIMEOUT_MS,
          },
        );
        assert.deepEqual(lists(changed), {
          deny: ['*.staging.example.com', 'admin.example.com'],
          allow: [],
          always: [],
        });
        assert.deepEqual(changed.invalid, []);
      } finally {
        await watch.stop();
      }
    });

    it('reports an invalid line in invalid and applies the rest', async () => {
      const prefix = newPrefix();
      const rec = recorder();
      const watch = startWatch(subject.create(prefix), rec);
      try {
        await waitFor('first policy', () => rec.policies[0]);
        await subject.write(prefix, 'allow', 'a.example.com\n*foo.com\nb.example.com');
        const changed = await waitFor(
          'a policy with the allow list',
          () => rec.policies.find((p) => p.allow.length > 0),
          {
            timeoutMs: CHANGE_TIMEOUT_MS,
          },
        );
        assert.deepEqual(changed.allow, ['a.example.com', 'b.example.com']);
        assert.deepEqual(changed.invalid, [{ list: 'allow', line: 2, text: '*foo.com', reason: BAD_WILDCARD_REASON }]);
      } finally {
        await watch.stop();
      }
    });

    it('empties a list when its key is deleted', async () => {
      const prefix = newPrefix();
      const rec = recorder();
      const watch = startWatch(subject.create(prefix), rec);
      try {
        await waitFor('first policy', () => rec.policies[0]);
        await subject.write(prefix, 'deny', 'bad.example.com');
        await waitFor('the deny list', () => rec.policies.some((p) => p.deny.length === 1), {
          timeoutMs: CHANGE_TIMEOUT_MS,
        });
        const before = rec.policies.length;
        await subject.remove(prefix, 'deny');
        const emptied = await waitFor(
          'the deny list emptied',
          () => rec.policies.slice(before).find((p) => p.deny.length === 0),
          {
            timeoutMs: CHANGE_TIMEOUT_MS,
          },
        );
        assert.deepEqual(lists(emptied), { deny: [], allow: [], always: [] });
      } finally {
        await watch.stop();
      }
    });

    it('passes a policy only when it changed, not when only a comment did', async () => {
      const prefix = newPrefix();
      const rec = recorder();
      const watch = startWatch(subject.create(prefix), rec);
      try {
        await waitFor('first policy', () => rec.policies[0]);
        await subject.write(prefix, 'deny', 'a.example.com');
        await waitFor('the deny list', () => rec.policies.some((p) => p.deny.length === 1), {
          timeoutMs: CHANGE_TIMEOUT_MS,
        });
        await subject.write(prefix, 'deny', 'a.example.com   # still the same list');
        await subject.write(prefix, 'always', 'b.example.com');
        await waitFor('the always list', () => rec.policies.some((p) => p.always.length === 1), {
          timeoutMs: CHANGE_TIMEOUT_MS,
        });
        assert.deepEqual(rec.policies.map(lists), [
          { deny: [], allow: [], always: [] },
          { deny: ['a.example.com'], allow: [], always: [] },
          { deny: ['a.example.com'], allow: [], always: ['b.example.com'] },
        ]);
      } finally {
        await watch.stop();
      }
    });

    it('resolves watch when the signal aborts, even while a query is waiting', async () => {
      const rec = recorder();
      const watch = startWatch(subject.create(newPrefix()), rec);
      await waitFor('first policy', () => rec.policies[0]);
      await watch.stop(); // bounded: fails unless the in-flight 60 s query is cancelled
      assert.ok(watch.done());
    });

    it('resolves at once when the signal has already aborted', async () => {
      const rec = recorder();
      const controller = new AbortController();
      controller.abort();
      await subject.create(newPrefix()).watch(controller.signal, rec.onPolicy, rec.onError);
      assert.equal(rec.policies.length, 0);
    });
  });
}

describe('ConsulPolicySource specifics', () => {
  let server: ConsulInstance | undefined;
  let client: Consul | undefined;
  before(async () => {
    server = await startConsul();
    client = createConsulClient({ address: server.address, requestTimeoutMs: 5_000 });
  });
  after(async () => {
    client?.destroy();
    await server?.stop();
  });

  it('ignores other keys in the policy folder', async () => {
    const prefix = newPrefix();
    await client!.kv.set({ key: `${prefix}policy/notes`, value: 'not.a.list.example.com' });
    await client!.kv.set({ key: `${prefix}policy/deny/extra`, value: 'x.example.com' });
    await client!.kv.set({ key: `${prefix}policy/deny`, value: 'd.example.com' });
    const rec = recorder();
    const watch = startWatch(
      new ConsulPolicySource({ consul: client!, prefix: prefix.slice(0, -1), waitSeconds: 60 }),
      rec,
    );
    try {
      const first = await waitFor('first policy', () => rec.policies[0]);
      assert.deepEqual(lists(first), { deny: ['d.example.com'], allow: [], always: [] });
    } finally {
      await watch.stop();
    }
  });

  it('reports errors through onError without rejecting while Consul is down, and still ends on abort', async () => {
    const source = new ConsulPolicySource({
      consul: client!,
      prefix: newPrefix(),
      waitSeconds: 30,
      requestsPerSecond: 20,
      backoff: { minMs: 50, maxMs: 200 },
    });
    const rec = recorder();
    const watch = startWatch(source, rec);
    await waitFor('first policy', () => rec.policies[0]);
    server!.kill9();
    await waitFor('two errors reported', () => rec.errors.length >= 2, { timeoutMs: 15_000 });
    for (const err of rec.errors) {
      assert.ok(err instanceof ConsulAcmeError, String(err));
      assert.equal(err.code, 'CONSUL_UNAVAILABLE');
    }
    assert.ok(!watch.done(), 'watch must keep retrying');
    await watch.stop();
    assert.equal(rec.policies.length, 1);
  });
});
