/**
 * One set of cases for every Discovery: MemoryDiscovery and ConsulDiscovery (real Consul 1.8.7).
 * Consul-only cases: blocking returns without a change emit nothing, errors are reported while
 * Consul is down, and the blocking-query helper follows Consul's index rules.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import {
  blockingGet,
  blockingTimeoutMs,
  createConsulClient,
  TokenBucket,
  type Consul,
} from '../../src/adapters/consul/consul-client.js';
import { ConsulDiscovery } from '../../src/adapters/consul/consul-discovery.js';
import { MemoryDiscovery } from '../../src/adapters/memory/memory-discovery.js';
import { ConsulAcmeError } from '../../src/errors.js';
import type { CatalogSnapshot, Discovery } from '../../src/ports/discovery.js';
import { startConsul, type ConsulInstance } from '../support/consul.js';
import { waitFor } from '../support/wait.js';

interface Recorder {
  snapshots: CatalogSnapshot[];
  errors: unknown[];
  onSnapshot: (s: CatalogSnapshot) => void;
  onError: (e: unknown) => void;
}

function recorder(): Recorder {
  const r: Recorder = {
    snapshots: [],
    errors: [],
    onSnapshot: (s) => {
      r.snapshots.push(s);
    },
    onError: (e) => {
      r.errors.push(e);
    },
  };
  return r;
}

/** Starts a watch; `done` turns true when it resolves, `stop` aborts it and waits for that. */
function startWatch(
  discovery: Discovery,
  rec: Recorder,
): { stop(): Promise<void>; done: () => boolean; controller: AbortController } {
  const controller = new AbortController();
  let finished = false;
  let failure: unknown;
  discovery.watch(controller.signal, rec.onSnapshot, rec.onError).then(
    () => {
      finished = true;
    },
    (err: unknown) => {
      failure = err;
      finished = true;
    },
  );
  return {
    controller,
    done: () => finished,
    stop: async () => {
      controller.abort();
      await waitFor('watch to resolve after abort', () => finished, { timeoutMs: 5_000, intervalMs: 20 });
      if (failure !== undefined)
        throw failure instanceof Error ? failure : new Error(`watch rejected with ${JSON.stringify(failure)}`);
    },
  };
}

interface Subject {
  name: string;
  setup(): Promise<void>;
  teardown(): Promise<void>;
  /** A discovery whose blocking queries (if any) wait `waitSeconds`. */
  create(waitSeconds: number): Discovery;
  /** Registers `name` with `tags` and resolves once the catalog shows it. */
  addService(name: string, tags: string[]): Promise<void>;
  /** Makes the running watch observe at least three more answers whose content is unchanged. */
  unchangedReturns(discovery: Discovery, existing: { name: string; tags: string[] }): Promise<void>;
}

let consulServer: ConsulInstance | undefined;
let consul: Consul | undefined;
const memory = new MemoryDiscovery({ seed: ['x'] });

const subjects: Subject[] = [
  {
    name: 'MemoryDiscovery',
    setup: async () => undefined,
    teardown: async () => undefined,
    create: () => memory,
    addService: async (name, tags) => {
      await memory.push({ ...memory.current(), [name]: tags });
    },
    unchangedReturns: async () => {
      for (let i = 0; i < 3; i++) await memory.push(memory.current());
    },
  },
  {
    name: 'ConsulDiscovery',
    setup: async () => {
      consulServer = await startConsul();
      consul = createConsulClient({ address: consulServer.address });
    },
    teardown: async () => {
      consul?.destroy();
      await consulServer?.stop();
    },
    create: (waitSeconds) =>
      new ConsulDiscovery({ consul: consul!, waitSeconds, requestsPerSecond: 20, backoff: { minMs: 50, maxMs: 200 } }),
    addService: async (name, tags) => {
      await consul!.agent.service.register({ name, id: name, tags, port: 8080 });
      await waitFor(`catalog to list ${name}`, async () => {
        const services = await consul!.catalog.service.list();
        return JSON.stringify([...(services[name] ?? [])].sort()) === JSON.stringify([...tags].sort());
      });
    },
    unchangedReturns: async (discovery, existing) => {
      const d = discovery as ConsulDiscovery;
      const start = d.blockingReturns;
      // A second instance with the same tags moves X-Consul-Index but not the service → tags map.
      await consul!.agent.service.register({
        name: existing.name,
        id: `${existing.name}-2`,
        tags: existing.tags,
        port: 8081,
      });
      // With waitSeconds 1 every request also returns unchanged after about a second.
      await waitFor('three more blocking returns', () => d.blockingReturns >= start + 3, { timeoutMs: 20_000 });
    },
  },
];

for (const subject of subjects) {
  describe(`Discovery contract: ${subject.name}`, () => {
    before(() => subject.setup());
    after(() => subject.teardown());

    it('passes the current catalog as the first snapshot', async () => {
      const name = `pre-${randomUUID()}`;
      await subject.addService(name, ['urlprefix-pre.example.com/', 'acme=pre.example.com']);
      const rec = recorder();
      const watch = startWatch(subject.create(1), rec);
      try {
        const first = await waitFor('first snapshot', () => rec.snapshots[0]);
        assert.deepEqual(first.services[name], ['acme=pre.example.com', 'urlprefix-pre.example.com/']);
      } finally {
        await watch.stop();
      }
    });

    it('passes a new snapshot with the tags of a newly registered service', async () => {
      const rec = recorder();
      const watch = startWatch(subject.create(1), rec);
      try {
        await waitFor('first snapshot', () => rec.snapshots[0]);
        const name = `web-${randomUUID()}`;
        await subject.addService(name, ['urlprefix-app.example.com/', 'acme=app.example.com']);
        const snapshot = await waitFor('a snapshot listing the new service', () =>
          rec.snapshots.find((s) => name in s.services),
        );
        assert.deepEqual(snapshot.services[name], ['acme=app.example.com', 'urlprefix-app.example.com/']);
        assert.ok(rec.snapshots.length >= 2);
      } finally {
        await watch.stop();
      }
    });

    it('passes nothing when answers repeat the same content', async () => {
      const existing = { name: `same-${randomUUID()}`, tags: ['urlprefix-same.example.com/'] };
      await subject.addService(existing.name, existing.tags);
      const discovery = subject.create(1);
      const rec = recorder();
      const watch = startWatch(discovery, rec);
      try {
        await waitFor('first snapshot', () => rec.snapshots[0]);
        await subject.unchangedReturns(discovery, existing);
        assert.equal(
          rec.snapshots.length,
          1,
          `expected one snapshot, got ${JSON.stringify(rec.snapshots.map((s) => s.index))}`,
        );
        assert.deepEqual(rec.errors, []);
      } finally {
        await watch.stop();
      }
    });

    it('resolves watch when the signal aborts, even while a query is waiting', async () => {
      const rec = recorder();
      const watch = startWatch(subject.create(300), rec);
      await waitFor('first snapshot', () => rec.snapshots[0]);
      await watch.stop(); // bounded: fails unless the in-flight 300 s query is cancelled
      assert.ok(watch.done());
    });

    it('resolves at once when the signal has already aborted', async () => {
      const rec = recorder();
      const controller = new AbortController();
      controller.abort();
      await subject.create(300).watch(controller.signal, rec.onSnapshot, rec.onError);
      assert.equal(rec.snapshots.length, 0);
    });
  });
}

describe('ConsulDiscovery when Consul goes away', () => {
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

  it('reports errors through onError without rejecting, and still ends on abort', async () => {
    const discovery = new ConsulDiscovery({
      consul: client!,
      waitSeconds: 30,
      requestsPerSecond: 20,
      backoff: { minMs: 50, maxMs: 200 },
    });
    const rec = recorder();
    const watch = startWatch(discovery, rec);
    await waitFor('first snapshot', () => rec.snapshots[0]);
    server!.kill9();
    await waitFor('two errors reported', () => rec.errors.length >= 2, { timeoutMs: 15_000 });
    for (const err of rec.errors) {
      assert.ok(err instanceof ConsulAcmeError, String(err));
      assert.equal(err.code, 'CONSUL_UNAVAILABLE');
      assert.equal(err.retryable, true);
    }
    assert.ok(!watch.done(), 'watch must keep retrying');
    await watch.stop();
    assert.equal(rec.snapshots.length, 1);
  });
});

describe('blockingGet index rules (a stub answering with scripted X-Consul-Index values)', () => {
  let server: Server | undefined;
  let client: Consul | undefined;
  const seen: URLSearchParams[] = [];
  const script: number[] = [];

  before(async () => {
    server = createServer((req, res) => {
      seen.push(new URL(req.url ?? '/', 'http://stub').searchParams);
      res.setHeader('Content-Type', 'application/json');
      res.setHeader('X-Consul-Index', String(script.shift() ?? 1));
      res.end('{"consul":[]}');
    });
    await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
    client = createConsulClient({ address: `http://127.0.0.1:${(server.address() as AddressInfo).port}` });
  });
  after(async () => {
    client?.destroy();
    await new Promise((resolve) => server?.close(resolve));
  });

  it('passes index and wait, resets to 0 when the index goes backwards, and never returns an index below 1 otherwise', async () => {
    script.push(100, 5, 0);
    const first = await blockingGet<Record<string, string[]>>(
      client!,
      'catalog.service.list',
      {},
      { index: 0, waitSeconds: 2 },
    );
    assert.deepEqual(first.body, { consul: [] });
    assert.equal(first.index, 100);
    assert.equal(seen[0]?.get('index'), null, 'the first request does not block');

    const backwards = await blockingGet(
      client!,
      'catalog.service.list',
      {},
      { index: first.index, waitSeconds: 2, stale: true },
    );
    assert.equal(seen[1]?.get('index'), '100');
    assert.equal(seen[1]?.get('wait'), '2s');
    assert.equal(seen[1]?.has('stale'), true);
    assert.equal(backwards.consulIndex, 5);
    assert.equal(backwards.index, 0);
    assert.equal(backwards.indexReset, true);

    const zero = await blockingGet(client!, 'catalog.service.list', {}, { index: backwards.index, waitSeconds: 2 });
    assert.equal(zero.consulIndex, 0);
    assert.equal(zero.index, 1);
  });

  it('gives the HTTP request more time than wait + wait/16', () => {
    for (const wait of [1, 30, 300, 600]) assert.ok(blockingTimeoutMs(wait) > wait * 1000 * (1 + 1 / 16));
  });
});

describe('TokenBucket (burst 2)', () => {
  it('lets two requests through at once, then one per 1/rate seconds', () => {
    let now = 0;
    const bucket = new TokenBucket({ ratePerSecond: 1 / 15, now: () => now });
    assert.deepEqual(bucket.tryTake(), { taken: true });
    assert.deepEqual(bucket.tryTake(), { taken: true });
    assert.deepEqual(bucket.tryTake(), { taken: false, waitMs: 15_000 });
    now = 14_999;
    assert.equal(bucket.tryTake().taken, false);
    now = 15_000;
    assert.deepEqual(bucket.tryTake(), { taken: true });
    now = 1_000_000;
    assert.deepEqual(bucket.tryTake(), { taken: true });
    assert.deepEqual(bucket.tryTake(), { taken: true });
    assert.equal(bucket.tryTake().taken, false, 'never more than the burst after a quiet spell');
  });

  it('stops waiting when the signal aborts', async () => {
    const bucket = new TokenBucket({ ratePerSecond: 1 / 3600, burst: 1 });
    assert.equal(await bucket.take(), true);
    const controller = new AbortController();
    const pending = bucket.take(controller.signal);
    controller.abort();
    assert.equal(await pending, false);
  });
});
