import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  budgetFor,
  budgetKeys,
  budgetScopeKey,
  checkBudget,
  checkBudgets,
  DEFAULT_BUDGETS,
  exactSetKey,
  MAX_EXACT_SET_KEY_LENGTH,
  pruneEvents,
  type Budget,
  type BudgetCheck,
  type BudgetEventKind,
  type BudgetKey,
} from '../../src/domain/budget.js';
import { pauseLedgerKey, pausesFor, rateLimitScope } from '../../src/domain/rate-limit.js';
import { registeredDomain } from '../../src/domain/registered-domain.js';
import { isBudgetScopeKey } from '../../src/ports/budget-ledger.js';

const NOW = new Date('2026-03-01T12:00:00Z');
const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

/** `n` events, the first `firstAgoMs` before NOW, then one every `stepMs`. */
function events(n: number, firstAgoMs: number, stepMs: number): Date[] {
  return Array.from({ length: n }, (_, i) => new Date(NOW.getTime() - firstAgoMs + i * stepMs));
}

function ago(ms: number): Date {
  return new Date(NOW.getTime() - ms);
}

describe('DEFAULT_BUDGETS', () => {
  test('mirror the production limits of Let\u2019s Encrypt', () => {
    assert.deepEqual(
      DEFAULT_BUDGETS.map((b) => [b.scope, b.limit, b.windowMs]),
      [
        ['account', 300, 3 * HOUR],
        ['registered-domain', 50, 7 * DAY],
        ['failed-authorizations', 5, HOUR],
        ['exact-set', 5, 7 * DAY],
      ],
    );
    assert.equal(budgetFor('failed-authorizations')?.limit, 5);
  });
});

describe('checkBudget', () => {
  const fivePerHour: Budget = { scope: 'failed-authorizations', limit: 5, windowMs: HOUR };
  const cases: Array<{ name: string; events: Date[]; budget?: Budget; expected: BudgetCheck }> = [
    { name: 'no events leave the whole budget', events: [], expected: { ok: true } },
    { name: 'one under the limit still has room', events: events(4, 50 * MINUTE, MINUTE), expected: { ok: true } },
    {
      name: 'at the limit it is exhausted until the oldest event leaves the window',
      events: events(5, 50 * MINUTE, MINUTE),
      expected: { ok: false, until: new Date(NOW.getTime() + 10 * MINUTE), used: 5, limit: 5 },
    },
    {
      name: 'the oldest event is found whatever the order of the list',
      events: [ago(MINUTE), ago(40 * MINUTE), ago(2 * MINUTE), ago(3 * MINUTE), ago(4 * MINUTE)],
      expected: { ok: false, until: new Date(NOW.getTime() + 20 * MINUTE), used: 5, limit: 5 },
    },
    {
      name: 'events older than the window no longer count (the window slides)',
      events: [...events(3, 3 * HOUR, MINUTE), ...events(4, 30 * MINUTE, MINUTE)],
      expected: { ok: true },
    },
    {
      name: 'an event exactly one window old has just left',
      events: [ago(HOUR), ...events(4, 30 * MINUTE, MINUTE)],
      expected: { ok: true },
    },
    {
      name: 'an event one millisecond younger than the window still counts',
      events: [ago(HOUR - 1), ...events(4, 30 * MINUTE, MINUTE)],
      expected: { ok: false, until: new Date(NOW.getTime() + 1), used: 5, limit: 5 },
    },
    {
      name: 'when racing instances overspent, it waits until enough events have left for one more',
      events: events(7, 50 * MINUTE, MINUTE),
      expected: { ok: false, until: new Date(NOW.getTime() + 12 * MINUTE), used: 7, limit: 5 },
    },
    {
      name: 'events in the future (clock skew between instances) count',
      events: [...events(4, 30 * MINUTE, MINUTE), new Date(NOW.getTime() + MINUTE)],
      expected: { ok: false, until: new Date(NOW.getTime() + 30 * MINUTE), used: 5, limit: 5 },
    },
    {
      name: 'the account budget allows 300 orders in 3 hours, not 301',
      events: events(300, 2 * HOUR, 10_000),
      budget: DEFAULT_BUDGETS[0],
      expected: { ok: false, until: new Date(NOW.getTime() + HOUR), used: 300, limit: 300 },
    },
    {
      name: 'the registered-domain budget remembers a week',
      events: events(50, 6 * DAY, HOUR),
      budget: DEFAULT_BUDGETS[1],
      expected: { ok: false, until: new Date(NOW.getTime() + DAY), used: 50, limit: 50 },
    },
  ];
  for (const c of cases) {
    test(c.name, () => assert.deepEqual(checkBudget(NOW, c.events, c.budget ?? fivePerHour), c.expected));
  }
});

describe('pruneEvents', () => {
  test('keeps the events inside the window, oldest first', () => {
    const kept = pruneEvents(NOW, [ago(MINUTE), ago(2 * HOUR), ago(30 * MINUTE), ago(HOUR)], HOUR);
    assert.deepEqual(kept, [ago(30 * MINUTE), ago(MINUTE)]);
  });
  test('drops invalid dates', () => {
    assert.deepEqual(pruneEvents(NOW, [new Date('nonsense'), ago(MINUTE)], HOUR), [ago(MINUTE)]);
  });
});

describe('budgetKeys', () => {
  const cases: Array<{
    name: string;
    hostnames: string | string[];
    kind: BudgetEventKind;
    isRenewal: boolean;
    expected: BudgetKey[];
  }> = [
    {
      name: 'a new order counts against the account, its registered domain and its exact set of names',
      hostnames: 'app.example.com',
      kind: 'new-order',
      isRenewal: false,
      expected: [
        { scope: 'account', key: 'default' },
        { scope: 'registered-domain', key: 'example.com' },
        { scope: 'exact-set', key: 'app.example.com' },
      ],
    },
    {
      name: 'a renewal of the same names is exempt from the account and the registered domain, not from the exact set',
      hostnames: 'app.example.com',
      kind: 'new-order',
      isRenewal: true,
      expected: [{ scope: 'exact-set', key: 'app.example.com' }],
    },
    {
      name: 'names under one registered domain count it once per order, and the set once',
      hostnames: ['a.example.co.uk', 'b.example.co.uk', 'example.co.uk'],
      kind: 'new-order',
      isRenewal: false,
      expected: [
        { scope: 'account', key: 'default' },
        { scope: 'registered-domain', key: 'example.co.uk' },
        { scope: 'exact-set', key: 'a.example.co.uk_b.example.co.uk_example.co.uk' },
      ],
    },
    {
      name: 'an order over two registered domains counts each, and the account and the set once',
      hostnames: ['www.example.org', 'shop.example.com'],
      kind: 'new-order',
      isRenewal: false,
      expected: [
        { scope: 'account', key: 'default' },
        { scope: 'registered-domain', key: 'example.com' },
        { scope: 'registered-domain', key: 'example.org' },
        { scope: 'exact-set', key: 'shop.example.com_www.example.org' },
      ],
    },
    {
      name: 'a renewal of several names counts one exact set, whatever the order the names come in',
      hostnames: ['www.example.org', 'Shop.Example.com.', 'www.example.org'],
      kind: 'new-order',
      isRenewal: true,
      expected: [{ scope: 'exact-set', key: 'shop.example.com_www.example.org' }],
    },
    {
      name: 'a failed authorization counts against its own hostname',
      hostnames: 'a.example.co.uk',
      kind: 'failed-authorization',
      isRenewal: false,
      expected: [{ scope: 'failed-authorizations', key: 'a.example.co.uk' }],
    },
    {
      name: 'failed authorizations of a renewal count too, per name',
      hostnames: ['b.example.com', 'a.example.com'],
      kind: 'failed-authorization',
      isRenewal: true,
      expected: [
        { scope: 'failed-authorizations', key: 'a.example.com' },
        { scope: 'failed-authorizations', key: 'b.example.com' },
      ],
    },
  ];
  for (const c of cases) {
    test(c.name, () => assert.deepEqual(budgetKeys(c.hostnames, c.kind, c.isRenewal), c.expected));
  }

  test('the account key can name the account', () => {
    assert.deepEqual(budgetKeys('a.example.com', 'new-order', false, 'le-prod')[0], {
      scope: 'account',
      key: 'le-prod',
    });
  });

  test('the ledger key joins scope and key with a slash', () => {
    assert.equal(
      budgetScopeKey({ scope: 'registered-domain', key: 'example.co.uk' }),
      'registered-domain/example.co.uk',
    );
  });
});

describe('exactSetKey', () => {
  const cases: Array<{ name: string; hostnames: string | string[]; expected: string }> = [
    { name: 'one name is keyed by itself', hostnames: 'app.example.com', expected: 'app.example.com' },
    {
      name: 'the names are canonical, sorted and unique, joined with an underscore',
      hostnames: ['WWW.example.com.', 'api.example.com', 'www.example.com'],
      expected: 'api.example.com_www.example.com',
    },
  ];
  for (const c of cases) test(c.name, () => assert.equal(exactSetKey(c.hostnames), c.expected));

  test('a set too long to spell out is keyed by its first name, its size and a hash, stable in any order', () => {
    const names = Array.from({ length: 20 }, (_, i) => `host-${String(i).padStart(2, '0')}.example.com`);
    const key = exactSetKey(names);
    assert.match(key, /^host-00\.example\.com_and-19-more_[0-9a-f]{16}$/);
    assert.ok(key.length <= MAX_EXACT_SET_KEY_LENGTH);
    assert.equal(exactSetKey([...names].reverse()), key);
    assert.notEqual(exactSetKey(names.slice(1)), key, 'another set, another key');
  });

  test('every exact-set key is a valid ledger key, for budgets and for pauses', () => {
    const sets = [
      ['a.example.com'],
      ['xn--bcher-kva.example', 'b.example.com'],
      Array(30)
        .fill('x')
        .map((x, i) => `${x}${i}.example.org`),
    ];
    for (const set of sets) {
      const key = budgetScopeKey({ scope: 'exact-set', key: exactSetKey(set) });
      assert.ok(isBudgetScopeKey(key), key);
      assert.ok(isBudgetScopeKey(pauseLedgerKey({ scope: 'exact-set', key: exactSetKey(set) })), key);
    }
  });
});

describe('rateLimitScope', () => {
  const cases: Array<{
    name: string;
    detail: string;
    hostnames: string[];
    expected: ReturnType<typeof rateLimitScope>;
  }> = [
    {
      name: 'the exact-set limit pauses the order\u2019s own set of names',
      detail:
        'too many certificates (5) already issued for this exact set of identifiers in the last 168h0m0s, retry after 2026-03-02 00:00:00 UTC',
      hostnames: ['www.example.com', 'example.com'],
      expected: { scope: 'exact-set', key: 'example.com_www.example.com' },
    },
    {
      name: 'the older exact-set wording pauses the set too',
      detail: 'too many certificates already issued for exact set of domains: shop.example.com',
      hostnames: ['shop.example.com'],
      expected: { scope: 'exact-set', key: 'shop.example.com' },
    },
    {
      name: 'failed authorizations pause the name they quote',
      detail: 'too many failed authorizations (5) for "b.example.com" in the last 1h0m0s',
      hostnames: ['a.example.com', 'b.example.com'],
      expected: { scope: 'name', key: 'b.example.com' },
    },
    {
      name: 'certificates per registered domain pause that domain',
      detail: 'too many certificates (50) already issued for "example.com" in the last 168h0m0s',
      hostnames: ['a.example.com'],
      expected: { scope: 'registered-domain', key: 'example.com' },
    },
    {
      name: 'a detail we cannot read pauses the account',
      detail: 'slow down',
      hostnames: ['a.example.com'],
      expected: { scope: 'account', key: 'default' },
    },
  ];
  for (const c of cases) test(c.name, () => assert.deepEqual(rateLimitScope(c.detail, c.hostnames), c.expected));

  test('an order is stopped by a pause of its exact set, but not by a pause of another set sharing a name', () => {
    const mine = pausesFor(['a.example.com', 'b.example.com']).map(pauseLedgerKey);
    assert.ok(mine.includes('paused/exact-set/a.example.com_b.example.com'));
    assert.ok(
      !pausesFor(['a.example.com']).map(pauseLedgerKey).includes('paused/exact-set/a.example.com_b.example.com'),
    );
  });
});

describe('registeredDomain', () => {
  const cases: Array<{ name: string; hostname: string; expected: string }> = [
    {
      name: 'a .com subdomain groups under its second-level name',
      hostname: 'a.b.example.com',
      expected: 'example.com',
    },
    { name: 'a.example.co.uk groups under example.co.uk', hostname: 'a.example.co.uk', expected: 'example.co.uk' },
    { name: 'b.example.co.uk shares example.co.uk', hostname: 'b.example.co.uk', expected: 'example.co.uk' },
    {
      name: 'a private-section suffix separates tenants, as at Let\u2019s Encrypt',
      hostname: 'tenant.github.io',
      expected: 'tenant.github.io',
    },
    { name: 'an unknown TLD counts as one label', hostname: 'app.site.test', expected: 'site.test' },
    { name: 'a name that is itself a public suffix is its own key', hostname: 'co.uk', expected: 'co.uk' },
    { name: 'case and a trailing dot do not matter', hostname: 'WWW.Example.COM.', expected: 'example.com' },
  ];
  for (const c of cases) {
    test(c.name, () => assert.equal(registeredDomain(c.hostname), c.expected));
  }
});

describe('checkBudgets', () => {
  const keys = budgetKeys(['a.example.com'], 'new-order', false);
  test('an order with room in every budget may go ahead', () => {
    assert.deepEqual(
      checkBudgets(
        NOW,
        keys.map((key) => ({ key, events: events(3, HOUR, MINUTE) })),
      ),
      { ok: true },
    );
  });
  test('the exhausted budget that frees up last is reported', () => {
    const result = checkBudgets(NOW, [
      { key: keys[0]!, events: events(300, 2 * HOUR, 10_000) }, // account: free again in 1 h
      { key: keys[1]!, events: events(50, 6 * DAY, HOUR) }, // registered domain: free again in 1 day
    ]);
    assert.deepEqual(result, { ok: false, key: keys[1], until: new Date(NOW.getTime() + DAY), used: 50, limit: 50 });
  });
  test('a spent exact-set budget holds a renewal, which the other budgets exempt', () => {
    const renewal = budgetKeys(['a.example.com'], 'new-order', true);
    const result = checkBudgets(
      NOW,
      renewal.map((key) => ({ key, events: events(5, 3 * DAY, DAY / 2) })),
    );
    assert.deepEqual(result, {
      ok: false,
      key: { scope: 'exact-set', key: 'a.example.com' },
      until: new Date(NOW.getTime() + 4 * DAY),
      used: 5,
      limit: 5,
    });
  });
  test('a scope with no budget configured never blocks', () => {
    assert.deepEqual(checkBudgets(NOW, [{ key: keys[0]!, events: events(500, HOUR, 1) }], []), { ok: true });
  });
});
