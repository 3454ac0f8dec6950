/**
 * One set of cases for every PolicySource: MemoryPolicySource and ConsulPolicySource (real Consul
 * 1.8.7). Each case uses a fresh KV prefix, so it starts with the policy folder missing. The
 * Consul blocking queries wait 60 s, so a case that sees a change within its 10 s bound was woken
 * by the change, not by a timeout. Consul-only cases: the policy fails closed (a list the ACL
 * token may not read is unreadable, not empty; Consul unreachable at start gives a policy with
 * every list unreadable), and a failing watch after a good policy changes nothing.
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

describe('MemoryPolicySource specifics', () => {
  it('marks lists unreadable, emptied, and brings them back', async () => {
    const source = new MemoryPolicySource({ deny: 'bad.example.com', allow: '*.example.com\n*bad' });
    const rec = recorder();
    const watch = startWatch(source, rec);
    try {
      await waitFor('first policy', () => rec.policies[0]);
      await source.setUnreadable([{ list: 'allow', reason: 'Consul refused the token (Permission denied)' }]);
      const failed = await waitFor('a policy with an unreadable list', () =>
        rec.policies.find((p) => p.unreadable.length > 0),
      );
      assert.deepEqual(lists(failed), { deny: ['bad.example.com'], allow: [], always: [] });
      assert.deepEqual(failed.invalid, [], 'an unreadable list has no invalid lines either');
      assert.deepEqual(failed.unreadable, [{ list: 'allow', reason: 'Consul refused the token (Permission denied)' }]);
      await source.setUnreadable([]);
      assert.deepEqual(lists(rec.policies.at(-1)!), {
        deny: ['bad.example.com'],
        allow: ['*.example.com'],
        always: [],
      });
      assert.deepEqual(rec.policies.at(-1)!.unreadable, []);
    } finally {
      await watch.stop();
    }
  });
});

describe('ConsulPolicySource under ACLs (default deny)', () => {
  const masterToken = randomUUID();
  let aclServer: ConsulInstance | undefined;
  let master: Consul | undefined;
  const clients: Consul[] = [];

  async function asMaster(method: string, path: string, body?: unknown): Promise<unknown> {
    const res = await fetch(`${aclServer!.address}${path}`, {
      method,
      headers: { 'X-Consul-Token': masterToken },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await res.text();
    assert.equal(res.status, 200, `${method} ${path}: ${text}`);
    return text === '' ? undefined : JSON.parse(text);
  }

  function readRules(prefix: string, lists: PolicyListName[]): string {
    return lists.map((l) => `key_prefix ${JSON.stringify(policyKey(prefix, l))} {\n  policy = "read"\n}\n`).join('');
  }

  before(async () => {
    aclServer = await startConsul({ acl: { masterToken } });
    master = createConsulClient({ address: aclServer.address, token: masterToken });
  });
  after(async () => {
    master?.destroy();
    for (const c of clients) c.destroy();
    await aclServer?.stop();
  });

  it('marks the list the token may not read unreadable, applies the others, and recovers once it may', async () => {
    const prefix = newPrefix();
    for (const [list, text] of [
      ['deny', 'denied.example.com'],
      ['allow', '*.example.com'],
      ['always', 'status.example.org'],
    ] as const) {
      assert.equal(await master!.kv.set({ key: policyKey(prefix, list), value: text }), true);
    }
    const aclPolicy = (await asMaster('PUT', '/v1/acl/policy', {
      Name: `policy-reader-${randomUUID()}`,
      Rules: readRules(prefix, ['allow', 'always']),
    })) as { ID: string; Name: string };
    const token = (await asMaster('PUT', '/v1/acl/token', { Policies: [{ ID: aclPolicy.ID }] })) as {
      SecretID: string;
    };
    const client = createConsulClient({ address: aclServer!.address, token: token.SecretID });
    clients.push(client);
    const rec = recorder();
    const watch = startWatch(
      new ConsulPolicySource({
        consul: client,
        prefix,
        waitSeconds: 60,
        unreadableRecheckSeconds: 1,
        requestsPerSecond: 20,
        backoff: { minMs: 50, maxMs: 200 },
      }),
      rec,
    );
    try {
      const first = await waitFor('first policy', () => rec.policies[0]);
      assert.deepEqual(lists(first), { deny: [], allow: ['*.example.com'], always: ['status.example.org'] });
      assert.deepEqual(first.unreadable, [{ list: 'deny', reason: 'Consul refused the token (Permission denied)' }]);

      // Granting the read changes no KV index; the short recheck still finds it.
      await asMaster('PUT', `/v1/acl/policy/${aclPolicy.ID}`, {
        Name: aclPolicy.Name,
        Rules: readRules(prefix, ['deny', 'allow', 'always']),
      });
      const recovered = await waitFor(
        'the deny list once the token may read it',
        () => rec.policies.find((p) => p.deny.length > 0),
        { timeoutMs: 45_000 },
      );
      assert.deepEqual(lists(recovered), {
        deny: ['denied.example.com'],
        allow: ['*.example.com'],
        always: ['status.example.org'],
      });
      assert.deepEqual(recovered.unreadable, []);
    } finally {
      await watch.stop();
    }
  });
});

describe('ConsulPolicySource when Consul is unreachable at start', () => {
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

  it('passes a policy with every list unreadable after the first failure, then the real one', async () => {
    const prefix = newPrefix();
    server!.kill9();
    await waitFor('consul to be down', () =>
      fetch(`${server!.address}/v1/status/leader`).then(
        () => false,
        () => true,
      ),
    );
    const rec = recorder();
    const watch = startWatch(
      new ConsulPolicySource({
        consul: client!,
        prefix,
        waitSeconds: 60,
        requestsPerSecond: 20,
        backoff: { minMs: 50, maxMs: 500 },
      }),
      rec,
    );
    try {
      const first = await waitFor('the first policy', () => rec.policies[0]);
      assert.deepEqual(lists(first), { deny: [], allow: [], always: [] });
      assert.deepEqual(
        first.unreadable.map((u) => u.list),
        ['deny', 'allow', 'always'],
      );
      for (const u of first.unreadable) assert.match(u.reason, /^Consul unreachable: .*\(E[A-Z]+\)$/);
      assert.ok(rec.errors.length >= 1);
      await waitFor('a few more failed attempts', () => rec.errors.length >= 3);
      assert.equal(rec.policies.length, 1, 'the same failure is not passed on again');

      await server!.restart(); // a -dev agent: back, empty
      assert.equal(await client!.kv.set({ key: policyKey(prefix, 'deny'), value: 'x.example.com' }), true);
      const real = await waitFor('the real policy', () => rec.policies.find((p) => p.deny.length > 0), {
        timeoutMs: 20_000,
      });
      assert.deepEqual(real.unreadable, []);
      assert.deepEqual(lists(real), { deny: ['x.example.com'], allow: [], always: [] });
    } finally {
      await watch.stop();
    }
  });
});

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
