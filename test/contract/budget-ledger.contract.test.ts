/**
 * One set of cases for every BudgetLedger: MemoryBudgetLedger and ConsulBudgetLedger (real Consul
 * 1.8.7). "Two instances" are two ConsulBudgetLedgers with their own clients on one Consul; for
 * memory (one process by contract) they are the same object.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { ConsulBudgetLedger } from '../../src/adapters/consul/consul-budget-ledger.js';
import { kvPut } from '../../src/adapters/consul/consul-kv.js';
import { createConsulClient, type Consul } from '../../src/adapters/consul/consul-client.js';
import { kvGet, kvGetMany } from '../../src/adapters/consul/consul-kv.js';
import { MemoryBudgetLedger } from '../../src/adapters/memory/memory-budget-ledger.js';
import { BUDGET_RETENTION_MS, budgetKeys, budgetScopeKey } from '../../src/domain/budget.js';
import { ConsulAcmeError } from '../../src/errors.js';
import { PAUSE_SCOPE_FOLDER, type BudgetLedger } from '../../src/ports/budget-ledger.js';
import { pauseLedgerKey } from '../../src/domain/rate-limit.js';
import { startConsul, type ConsulInstance } from '../support/consul.js';
import { startRoundRobinProxy } from '../support/round-robin-proxy.js';

interface Subject {
  name: string;
  setup(): Promise<void>;
  teardown(): Promise<void>;
  /** Two ledgers sharing one store. */
  pair(): [BudgetLedger, BudgetLedger];
  /** A ledger over a store nobody else uses. */
  isolated(): BudgetLedger;
}

let consulServer: ConsulInstance | undefined;
const clients: Consul[] = [];
const prefix = `consul-acme-test/${randomUUID()}/budgets/`;

function consulClient(): Consul {
  if (!consulServer) throw new Error('consul not started');
  const client = createConsulClient({ address: consulServer.address });
  clients.push(client);
  return client;
}

const subjects: Subject[] = [
  {
    name: 'MemoryBudgetLedger',
    setup: async () => undefined,
    teardown: async () => undefined,
    pair: () => {
      const ledger = new MemoryBudgetLedger();
      return [ledger, ledger];
    },
    isolated: () => new MemoryBudgetLedger(),
  },
  {
    name: 'ConsulBudgetLedger',
    setup: async () => {
      consulServer = await startConsul();
    },
    teardown: async () => {
      for (const c of clients) c.destroy();
      await consulServer?.stop();
    },
    pair: () => [
      new ConsulBudgetLedger({ consul: consulClient(), prefix }),
      new ConsulBudgetLedger({ consul: consulClient(), prefix }),
    ],
    isolated: () =>
      new ConsulBudgetLedger({ consul: consulClient(), prefix: `consul-acme-test/${randomUUID()}/budgets/` }),
  },
];

/** A fresh scope key, e.g. `registered-domain/<uuid>.example.com`. */
function newKey(): string {
  return budgetScopeKey({ scope: 'registered-domain', key: `${randomUUID()}.example.com` });
}

const MINUTE = 60_000;
const EPOCH = new Date(0);

function minutesAgo(n: number): Date {
  return new Date(Math.floor(Date.now() / 1000) * 1000 - n * MINUTE);
}

for (const subject of subjects) {
  describe(`BudgetLedger contract: ${subject.name}`, () => {
    before(() => subject.setup());
    after(() => subject.teardown());

    it('resolves no events for a key never recorded', async () => {
      const [ledger] = subject.pair();
      assert.deepEqual(await ledger.events(newKey(), EPOCH), []);
    });

    it('returns recorded events oldest first, from `since` on', async () => {
      const [ledger] = subject.pair();
      const key = newKey();
      // One reading of the clock, so the expected times cannot straddle a second boundary.
      const now = minutesAgo(0).getTime();
      const [m30, m10, m5, m1] = [30, 10, 5, 1].map((n) => new Date(now - n * MINUTE)) as [Date, Date, Date, Date];
      for (const at of [m5, m30, m10]) await ledger.record(key, at);
      assert.deepEqual(await ledger.events(key, EPOCH), [m30, m10, m5]);
      assert.deepEqual(await ledger.events(key, m10), [m10, m5], 'since is inclusive');
      assert.deepEqual(await ledger.events(key, m1), []);
    });

    it('keeps keys apart', async () => {
      const [ledger] = subject.pair();
      const [a, b] = [newKey(), newKey()];
      await ledger.record(a, minutesAgo(1));
      assert.deepEqual(await ledger.events(b, EPOCH), []);
      assert.equal((await ledger.events(a, EPOCH)).length, 1);
    });

    it('eventsOf gives each key what events gives, missing keys none, in one call', async () => {
      const [ledger, other] = subject.pair();
      const [a, b, missing] = [newKey(), newKey(), newKey()];
      const now = minutesAgo(0).getTime();
      const [m20, m3] = [20, 3].map((n) => new Date(now - n * MINUTE)) as [Date, Date];
      await ledger.record(a, m20);
      await ledger.record(a, m3);
      await other.record(b, m3);
      const read = await other.eventsOf([a, missing, b], new Date(now - 10 * MINUTE));
      assert.deepEqual([...read.keys()], [a, missing, b]);
      assert.deepEqual(read.get(a), [m3]);
      assert.deepEqual(read.get(missing), []);
      assert.deepEqual(read.get(b), [m3]);
      assert.deepEqual([...(await ledger.eventsOf([missing, newKey()], EPOCH)).values()], [[], []], 'none exist');
      assert.deepEqual((await ledger.eventsOf([a], EPOCH)).get(a), [m20, m3], 'one key');
    });

    it('lets two instances see each other\u2019s events', async () => {
      const [one, two] = subject.pair();
      const key = newKey();
      // Read the clock once: two calls may fall on both sides of a second.
      const [m2, m1] = [minutesAgo(2), minutesAgo(1)];
      await one.record(key, m2);
      await two.record(key, m1);
      assert.deepEqual(await one.events(key, EPOCH), [m2, m1]);
      assert.deepEqual(await two.events(key, EPOCH), [m2, m1]);
    });

    it('loses no event when two instances record 20 events at once', async () => {
      const [one, two] = subject.pair();
      const key = newKey();
      const times = Array.from({ length: 20 }, (_, i) => new Date(Date.now() - i * 1000));
      await Promise.all(times.map((at, i) => (i % 2 === 0 ? one : two).record(key, at)));
      const stored = await one.events(key, EPOCH);
      assert.equal(stored.length, 20, `stored ${stored.length} of 20`);
      assert.deepEqual(
        stored.map((d) => d.getTime()),
        times.map((d) => d.getTime()).sort((a, b) => a - b),
      );
    });

    it('loses no event when each instance records 20 at once on the account key', async () => {
      const [one, two] = subject.pair();
      const key = budgetScopeKey(budgetKeys('x.example.com', 'new-order', false, `acct-${randomUUID()}`)[0]!);
      const batch = (ledger: BudgetLedger, offset: number): Array<Promise<void>> =>
        Array.from({ length: 20 }, (_, i) => ledger.record(key, new Date(Date.now() - (offset + i) * 1000)));
      await Promise.all([...batch(one, 0), ...batch(two, 100)]);
      assert.equal((await two.events(key, EPOCH)).length, 40);
    });

    it('forgets events older than the retention when it writes', async () => {
      const [ledger] = subject.pair();
      const key = newKey();
      await ledger.record(key, new Date(Date.now() - BUDGET_RETENTION_MS - MINUTE));
      await ledger.record(key, minutesAgo(1));
      assert.deepEqual(await ledger.events(key, EPOCH), [minutesAgo(1)]);
    });

    it('prunes what is over: old events, ended pauses, and the keys left empty', async () => {
      const ledger = subject.isolated();
      const now = new Date(Math.floor(Date.now() / 1000) * 1000);
      const minuteAgo = new Date(now.getTime() - MINUTE);
      const inAnHour = new Date(now.getTime() + 60 * MINUTE);
      const [mixed, stale] = [newKey(), newKey()];
      const [ended, running] = [
        pauseLedgerKey({ scope: 'name', key: `${randomUUID()}.example.com` }),
        pauseLedgerKey({ scope: 'account', key: `acct-${randomUUID()}` }),
      ];
      assert.ok(ended.startsWith(PAUSE_SCOPE_FOLDER) && running.startsWith(PAUSE_SCOPE_FOLDER));
      await ledger.record(mixed, minuteAgo);
      await ledger.record(mixed, now);
      await ledger.record(stale, minuteAgo);
      await ledger.record(ended, minuteAgo);
      await ledger.record(running, inAnHour);

      assert.equal(await ledger.prune(now), 1, 'the pause that ended is deleted');
      assert.deepEqual(await ledger.events(ended, EPOCH), []);
      assert.deepEqual(await ledger.events(running, EPOCH), [inAnHour]);
      assert.deepEqual(await ledger.events(mixed, EPOCH), [minuteAgo, now]);
      assert.deepEqual(await ledger.events(stale, EPOCH), [minuteAgo]);

      // Almost a retention later: the minute-old events are past it, `now` is not; the pause is over.
      const later = new Date(now.getTime() + BUDGET_RETENTION_MS - 30_000);
      assert.equal(await ledger.prune(later), 2, 'the stale key and the pause are deleted');
      assert.deepEqual(await ledger.events(mixed, EPOCH), [now], 'only the old event is forgotten');
      assert.deepEqual(await ledger.events(stale, EPOCH), []);
      assert.deepEqual(await ledger.events(running, EPOCH), []);

      const muchLater = new Date(now.getTime() + BUDGET_RETENTION_MS + MINUTE);
      assert.equal(await ledger.prune(muchLater), 1);
      assert.deepEqual(await ledger.events(mixed, EPOCH), []);
      assert.equal(await ledger.prune(muchLater), 0, 'nothing left to prune');
    });

    it('rejects a scope key that is not a path of plain segments', async () => {
      const [ledger] = subject.pair();
      for (const bad of ['', '/account', 'account/', 'a//b', 'a/../b', 'a b', 'a/ü']) {
        await assert.rejects(
          ledger.record(bad, new Date()),
          (err: unknown) => err instanceof ConsulAcmeError && err.code === 'INTERNAL',
          bad,
        );
        await assert.rejects(
          ledger.events(bad, EPOCH),
          (err: unknown) => err instanceof ConsulAcmeError && err.code === 'INTERNAL',
          bad,
        );
      }
    });
  });
}

describe('ConsulBudgetLedger storage', () => {
  let server: ConsulInstance | undefined;
  let client: Consul | undefined;
  before(async () => {
    server = await startConsul();
    client = createConsulClient({ address: server.address });
  });
  after(async () => {
    client?.destroy();
    await server?.stop();
  });

  it('stores a JSON array of ISO timestamps at <prefix><scope>/<key>', async () => {
    const ledgerPrefix = `consul-acme-test/${randomUUID()}/budgets`;
    const ledger = new ConsulBudgetLedger({ consul: client!, prefix: ledgerPrefix });
    await ledger.record('failed-authorizations/app.example.com', new Date('2030-01-01T00:00:05Z'));
    await ledger.record('failed-authorizations/app.example.com', new Date('2030-01-01T00:00:01Z'));
    const entry = await kvGet(client!, `${ledgerPrefix}/failed-authorizations/app.example.com`);
    assert.deepEqual(JSON.parse(entry!.value), ['2030-01-01T00:00:01.000Z', '2030-01-01T00:00:05.000Z']);
  });

  it("writes its format into the key's flags; a key a newer release wrote is left alone", async () => {
    const ledgerPrefix = `consul-acme-test/${randomUUID()}/budgets/`;
    const ledger = new ConsulBudgetLedger({ consul: client!, prefix: ledgerPrefix });
    await ledger.record('account/default', new Date('2030-01-01T00:00:00Z'));
    assert.equal((await kvGet(client!, `${ledgerPrefix}account/default`))?.flags, 1);
    const key = `${ledgerPrefix}registered-domain/example.com`;
    await client!.kv.set({ key, value: '{"format 2": "an object now"}', flags: 2 });
    const newer = (err: unknown): boolean => err instanceof ConsulAcmeError && err.code === 'FORMAT_NEWER';
    await assert.rejects(ledger.events('registered-domain/example.com', new Date(0)), newer);
    await assert.rejects(ledger.eventsOf(['account/default', 'registered-domain/example.com'], new Date(0)), newer);
    await assert.rejects(ledger.record('registered-domain/example.com', new Date('2030-01-01T00:00:00Z')), newer);
    assert.equal(await ledger.prune(new Date('2040-01-01T00:00:00Z')), 1, 'only our own key is pruned');
    const left = await kvGet(client!, key);
    assert.deepEqual([left?.value, left?.flags], ['{"format 2": "an object now"}', 2], 'untouched');
  });

  it('reads past unreadable entries and rewrites them away', async () => {
    const ledgerPrefix = `consul-acme-test/${randomUUID()}/budgets/`;
    const key = 'account/default';
    await client!.kv.set({ key: `${ledgerPrefix}${key}`, value: '["2030-01-01T00:00:00.000Z", "yesterday", 42]' });
    const ledger = new ConsulBudgetLedger({ consul: client!, prefix: ledgerPrefix });
    assert.deepEqual(await ledger.events(key, EPOCH), [new Date('2030-01-01T00:00:00Z')]);
    await ledger.record(key, new Date('2030-01-01T00:01:00Z'));
    const entry = await kvGet(client!, `${ledgerPrefix}${key}`);
    assert.deepEqual(JSON.parse(entry!.value), ['2030-01-01T00:00:00.000Z', '2030-01-01T00:01:00.000Z']);
  });

  /** A client whose every KV read is followed by another writer's append, as a racing instance would do. */
  function racingClient(real: Consul, key: string, races: number): Consul {
    let left = races;
    return {
      kv: {
        get: async (opts: unknown) => {
          const item = await real.kv.get(opts as never);
          if (left > 0) {
            left -= 1;
            const current = (item as { Value?: string } | undefined)?.Value;
            const events: string[] = current ? (JSON.parse(current) as string[]) : [];
            events.push(`2030-01-01T00:0${races - left}:00.000Z`);
            await real.kv.set({ key, value: JSON.stringify(events) });
          }
          return item;
        },
        set: (opts: unknown) => real.kv.set(opts as never),
      },
      transaction: { create: (ops: unknown) => real.transaction.create(ops as never) },
    } as unknown as Consul;
  }

  it('retries a write that lost a race and keeps both events', async () => {
    const ledgerPrefix = `consul-acme-test/${randomUUID()}/budgets/`;
    const key = 'failed-authorizations/race.example.com';
    const ledger = new ConsulBudgetLedger({
      consul: racingClient(client!, `${ledgerPrefix}${key}`, 2),
      prefix: ledgerPrefix,
    });
    await ledger.record(key, new Date('2030-01-01T00:00:00Z'));
    assert.equal(ledger.casConflicts, 2);
    assert.deepEqual(
      (await ledger.events(key, EPOCH)).map((d) => d.toISOString()),
      ['2030-01-01T00:00:00.000Z', '2030-01-01T00:01:00.000Z', '2030-01-01T00:02:00.000Z'],
    );
  });

  it('gives up with a retryable STORE_CONFLICT after losing every attempt', async () => {
    const ledgerPrefix = `consul-acme-test/${randomUUID()}/budgets/`;
    const key = 'failed-authorizations/busy.example.com';
    const ledger = new ConsulBudgetLedger({
      consul: racingClient(client!, `${ledgerPrefix}${key}`, 3),
      prefix: ledgerPrefix,
      casAttempts: 3,
    });
    await assert.rejects(
      ledger.record(key, new Date('2030-01-01T00:00:00Z')),
      (err: unknown) => err instanceof ConsulAcmeError && err.code === 'STORE_CONFLICT' && err.retryable,
    );
  });

  it("writes an order's keys recorded together in one transaction, and a race on one of them writes none until it is read again", async () => {
    const ledgerPrefix = `consul-acme-test/${randomUUID()}/budgets/`;
    const keys = ['account/default', 'registered-domain/together.example.com', 'exact-set/a.together.example.com'];
    await client!.kv.set({ key: `${ledgerPrefix}${keys[0]}`, value: '["2030-01-01T00:00:00.000Z"]' });
    const sent: string[] = [];
    let raced = false;
    const counting = {
      kv: {
        get: (opts: unknown) => (sent.push('kv get'), client!.kv.get(opts as never)),
        set: (opts: unknown) => (sent.push('kv set'), client!.kv.set(opts as never)),
      },
      transaction: {
        create: async (ops: Array<{ KV: { Verb: string } }>) => {
          sent.push(`txn ${ops.map((op) => op.KV.Verb).join(',')}`);
          if (!raced && ops[0]!.KV.Verb === 'cas') {
            // Another instance appends to the domain key between this round's read and its write.
            raced = true;
            await client!.kv.set({ key: `${ledgerPrefix}${keys[1]}`, value: '["2030-01-01T00:05:00.000Z"]' });
          }
          return client!.transaction.create(ops as never);
        },
      },
    } as unknown as Consul;
    const ledger = new ConsulBudgetLedger({ consul: counting, prefix: ledgerPrefix });
    const at = new Date('2030-01-01T00:10:00Z');
    await Promise.all(keys.map((key) => ledger.record(key, at)));
    assert.equal(ledger.casConflicts, 1);
    assert.deepEqual(sent, [
      'txn get-tree,get-tree,get-tree', // one read, though only the account key exists yet
      'txn cas,cas,cas', // refused: the domain key was written since it was read
      'txn get-tree,get-tree,get-tree',
      'txn cas,cas,cas',
    ]);
    const events = await ledger.eventsOf(keys, EPOCH);
    assert.deepEqual(
      keys.map((key) => events.get(key)!.map((d) => d.toISOString())),
      [
        ['2030-01-01T00:00:00.000Z', '2030-01-01T00:10:00.000Z'],
        ['2030-01-01T00:05:00.000Z', '2030-01-01T00:10:00.000Z'],
        ['2030-01-01T00:10:00.000Z'],
      ],
    );
  });

  it('writes on what it last read, in one request, and reads again when another instance wrote since', async () => {
    const ledgerPrefix = `consul-acme-test/${randomUUID()}/budgets/`;
    const keys = ['account/default', 'registered-domain/seen.example.com', 'exact-set/a.seen.example.com'];
    const sent: string[] = [];
    const counting = {
      kv: {
        get: (opts: unknown) => (sent.push('kv get'), client!.kv.get(opts as never)),
        set: (opts: unknown) => (sent.push('kv set'), client!.kv.set(opts as never)),
      },
      transaction: {
        create: (ops: Array<{ KV: { Verb: string } }>) => {
          sent.push(`txn ${ops.map((op) => op.KV.Verb).join(',')}`);
          return client!.transaction.create(ops as never);
        },
      },
    } as unknown as Consul;
    const ledger = new ConsulBudgetLedger({ consul: counting, prefix: ledgerPrefix });
    const other = new ConsulBudgetLedger({ consul: client!, prefix: ledgerPrefix });
    await other.record(keys[0]!, new Date('2030-01-01T00:00:00Z'));

    // Admitting an order reads its keys; recording it then costs one transaction.
    await ledger.eventsOf(keys, EPOCH);
    sent.length = 0;
    await Promise.all(keys.map((key) => ledger.record(key, new Date('2030-01-01T00:01:00Z'))));
    assert.deepEqual(sent, ['txn cas,cas,cas']);
    // Its own write is known too: the next order's record is one transaction as well.
    sent.length = 0;
    await ledger.record(keys[0]!, new Date('2030-01-01T00:02:00Z'));
    assert.deepEqual(sent, ['txn cas']);

    // Another instance records in between: the write on the old entry is refused, read, written.
    await other.record(keys[0]!, new Date('2030-01-01T00:03:00Z'));
    sent.length = 0;
    await ledger.record(keys[0]!, new Date('2030-01-01T00:04:00Z'));
    assert.deepEqual(sent, ['txn cas', 'kv get', 'txn cas']);
    assert.equal(ledger.casConflicts, 0, 'an out-of-date entry is not a lost race');
    assert.deepEqual(
      (await other.events(keys[0]!, EPOCH)).map((d) => d.toISOString()),
      ['00:00', '00:01', '00:02', '00:03', '00:04'].map((t) => `2030-01-01T${t}:00.000Z`),
    );
  });

  it('deletes the keys it prunes, and leaves keys that are not ledger keys alone', async () => {
    const ledgerPrefix = `consul-acme-test/${randomUUID()}/budgets/`;
    const ledger = new ConsulBudgetLedger({ consul: client!, prefix: ledgerPrefix });
    await ledger.record('account/default', new Date('2030-01-01T00:00:00Z'));
    await client!.kv.set({ key: `${ledgerPrefix}not a scope key`, value: '[]' });
    await client!.kv.set({ key: `${ledgerPrefix}account/empty`, value: '[]' });
    assert.equal(await ledger.prune(new Date('2030-02-01T00:00:00Z')), 2);
    const res = await fetch(`${server!.address}/v1/kv/${ledgerPrefix}?keys`);
    assert.deepEqual(await res.json(), [`${ledgerPrefix}not a scope key`]);
  });

  it('never loses an event recorded while it prunes: the key stays for the next prune', async () => {
    const ledgerPrefix = `consul-acme-test/${randomUUID()}/budgets/`;
    const key = 'failed-authorizations/pruned.example.com';
    const fresh = '2030-03-01T00:00:00.000Z';
    await new ConsulBudgetLedger({ consul: client!, prefix: ledgerPrefix }).record(
      key,
      new Date('2030-01-01T00:00:00Z'),
    );
    // Another instance records right after this one read the folder.
    const racing = {
      kv: {
        get: async (opts: unknown) => {
          const items = await client!.kv.get(opts as never);
          await client!.kv.set({
            key: `${ledgerPrefix}${key}`,
            value: JSON.stringify(['2030-01-01T00:00:00.000Z', fresh]),
          });
          return items;
        },
        set: (opts: unknown) => client!.kv.set(opts as never),
        del: (opts: unknown) => client!.kv.del(opts as never),
      },
    } as unknown as Consul;
    const ledger = new ConsulBudgetLedger({ consul: racing, prefix: ledgerPrefix });
    assert.equal(await ledger.prune(new Date('2030-02-15T00:00:00Z')), 0);
    assert.deepEqual(JSON.parse((await kvGet(client!, `${ledgerPrefix}${key}`))!.value), [
      '2030-01-01T00:00:00.000Z',
      fresh,
    ]);
  });

  it('kvGetMany reads several keys with one transaction whether they exist or not, and only those keys', async () => {
    const proxy = await startRoundRobinProxy([{ name: 'consul', port: server!.httpPort }]);
    const viaProxy = createConsulClient({ address: proxy.url });
    try {
      const prefix = `consul-acme-test/${randomUUID()}/`;
      const keys = ['a', 'b', 'c', 'd'].map((k) => `${prefix}${k}`);
      let before = proxy.requests().length;
      assert.deepEqual(await kvGetMany(viaProxy, keys), new Map());
      assert.equal(proxy.requests().length - before, 1, 'none exist: one request');
      await client!.kv.set({ key: keys[1]!, value: '["2030-01-01T00:00:00.000Z", "é"]', flags: 1 });
      await client!.kv.set({ key: keys[3]!, value: '' });
      // Keys that begin with an asked key are not it.
      await client!.kv.set({ key: `${keys[0]!}x`, value: 'not a' });
      await client!.kv.set({ key: `${keys[1]!}/deeper`, value: 'not b' });
      before = proxy.requests().length;
      const read = await kvGetMany(viaProxy, keys);
      assert.deepEqual(
        proxy
          .requests()
          .slice(before)
          .map((r) => `${r.method} ${r.path.split('?')[0]}`),
        ['PUT /v1/txn'],
        'some exist, some do not: one request',
      );
      assert.deepEqual([...read.keys()].sort(), [keys[1], keys[3]]);
      assert.equal(read.get(keys[1]!)?.value, '["2030-01-01T00:00:00.000Z", "é"]');
      assert.equal(read.get(keys[1]!)?.flags, 1);
      assert.equal(read.get(keys[3]!)?.value, '');
      assert.deepEqual(read.get(keys[1]!), await kvGet(client!, keys[1]!), 'as a single read gives it');
    } finally {
      viaProxy.destroy();
      await proxy.close();
    }
  });

  it('kvPut with cas tells a lost race (false) from a write (true)', async () => {
    const key = `consul-acme-test/${randomUUID()}/cas`;
    assert.equal(await kvPut(client!, key, 'first', { cas: 0 }), true);
    assert.equal(await kvPut(client!, key, 'second', { cas: 0 }), false, 'cas=0 on an existing key');
    const entry = await kvGet(client!, key);
    assert.equal(await kvPut(client!, key, 'third', { cas: entry!.modifyIndex + 1000 }), false, 'a stale index');
    assert.equal(await kvPut(client!, key, 'fourth', { cas: entry!.modifyIndex }), true);
    assert.equal((await kvGet(client!, key))?.value, 'fourth');
  });
});
