import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { normalizeServices, sameServices, ServiceNormalizer } from '../../src/adapters/consul/catalog-snapshots.js';

describe('catalog snapshots (/v1/catalog/services answers)', () => {
  it('sorts services and tags, drops duplicate tags and the ignored services', () => {
    const snapshot = normalizeServices(
      {
        web: ['urlprefix-b.example.com/', 'urlprefix-a.example.com/', 'urlprefix-a.example.com/'],
        'consul-acme': ['x'],
        api: null,
      },
      new Set(['consul-acme']),
    );
    assert.deepEqual(Object.keys(snapshot), ['api', 'web']);
    assert.deepEqual(snapshot.web, ['urlprefix-a.example.com/', 'urlprefix-b.example.com/']);
    assert.deepEqual(snapshot.api, []);
  });

  it('answers with the same tags in another order are the same; one tag more or one service less is a change', () => {
    const before = normalizeServices({ web: ['b', 'a'], api: ['c'] });
    assert.equal(sameServices(before, normalizeServices({ api: ['c'], web: ['a', 'b'] })), true);
    assert.equal(sameServices(before, normalizeServices({ web: ['a', 'b', 'd'], api: ['c'] })), false);
    assert.equal(sameServices(before, normalizeServices({ web: ['a', 'b'] })), false);
    assert.equal(sameServices(before, normalizeServices({ web: ['a', 'b'], db: ['c'] })), false);
  });

  it('an answer in which nothing changed gives back the previous snapshot; a changed one keeps the unchanged lists', () => {
    const normalizer = new ServiceNormalizer(new Set(['consul-acme']));
    const first = normalizer.normalize({ web: ['b', 'a'], api: ['c'], 'consul-acme': ['x'] });
    const again = normalizer.normalize({ api: ['c'], web: ['a', 'b', 'a'], 'consul-acme': ['y'] });
    assert.equal(again, first, 'the same object');
    const changed = normalizer.normalize({ api: ['c'], web: ['a', 'b', 'd'] });
    assert.notEqual(changed, first);
    assert.equal(changed.api, first.api, 'an unchanged service keeps its array');
    assert.deepEqual(changed.web, ['a', 'b', 'd']);
    const many = Array.from({ length: 40 }, (_, i) => `t${i}`);
    const big = normalizer.normalize({ api: ['c'], web: many });
    assert.equal(normalizer.normalize({ api: ['c'], web: [...many].reverse() }), big);
    assert.notEqual(
      normalizer.normalize({ api: ['c'], web: [...many.slice(1), 't1'] }),
      big,
      'a repeat is not the tag it replaced',
    );
  });

  it('a service called __proto__ is a service like any other', () => {
    const snapshot = normalizeServices(JSON.parse('{"__proto__":["urlprefix-a.example.com/"],"web":[]}'));
    assert.deepEqual(Object.keys(snapshot), ['__proto__', 'web']);
    assert.deepEqual(snapshot['__proto__'], ['urlprefix-a.example.com/']);
  });
});

describe('ServiceNormalizer.read (the answer as bytes)', () => {
  /** As Consul writes it: keys sorted, compact, or indented by `indent` spaces. */
  const answer = (services: Record<string, string[] | null>, indent?: number): Buffer =>
    Buffer.from(
      JSON.stringify(Object.fromEntries(Object.entries(services).sort(([a], [b]) => (a < b ? -1 : 1))), null, indent),
    );
  const own = new Set(['consul-acme', 'consul-acme-certificates']);
  /** What the bytes say, the obvious way: parse all, then normalize. */
  const expected = (body: Buffer): Record<string, string[]> =>
    normalizeServices(JSON.parse(body.toString('utf8')) as Record<string, string[] | null>, own);

  it('reads tags holding brackets, quotes, backslashes, escapes and non-ASCII text, and leaves our own services out', () => {
    const services = {
      api: ['urlprefix-"consul-acme":[x]/', 'a\\"]', 'tab\there', 'é-ü.example.com', '\u2028', ''],
      'consul-acme': ['urlprefix-a.example.com/.well-known/acme-challenge/', 'odd ] "quoted" \\', ']'],
      'consul-acme-certificates': [],
      'my-consul-acme': ['urlprefix-b.example.com/'],
      'sérvice "x"': ['y', 'y'],
      web: null,
    };
    const body = answer(services);
    const snapshot = new ServiceNormalizer(own).read(body);
    assert.deepEqual(snapshot, expected(body));
    assert.deepEqual(Object.keys(snapshot), ['api', 'my-consul-acme', 'sérvice "x"', 'web']);
    assert.deepEqual(snapshot['sérvice "x"'], ['y']);
    assert.deepEqual(snapshot.web, []);
  });

  it('an answer with the tags in another order gives back the previous snapshot; a change keeps the unchanged lists', () => {
    const reader = new ServiceNormalizer(own);
    const first = reader.read(answer({ web: ['b', 'a', 'é'], api: ['c'], 'consul-acme': ['x'] }));
    assert.equal(reader.read(answer({ 'consul-acme': ['y', 'z'], api: ['c'], web: ['é', 'a', 'b'] })), first);
    const changed = reader.read(answer({ api: ['c'], web: ['a', 'b', 'd'] }));
    assert.notEqual(changed, first);
    assert.equal(changed.api, first.api, 'an unchanged service keeps its array');
    assert.deepEqual(changed.web, ['a', 'b', 'd']);
    assert.notEqual(
      reader.read(answer({ api: ['c'], web: ['a', 'b', 'b'] })),
      changed,
      'a repeat is not the tag it replaced',
    );
    assert.deepEqual({ ...reader.read(answer({ api: ['c'] })) }, { api: ['c'] }, 'a service that left');
    const many = Array.from({ length: 40 }, (_, i) => `t${i}`);
    const big = reader.read(answer({ api: ['c'], web: many }));
    assert.equal(
      reader.read(answer({ api: ['c'], web: [...many].reverse() })),
      big,
      'more tags than are matched in place',
    );
  });

  it('gives what parsing the whole answer gives, over random answers read one after another', () => {
    const pool = ['a', 'b', 'urlprefix-x.example.com/', 'tag "q"', 'back\\slash', 'ü', ']', ''];
    let seed = 7;
    const random = (n: number): number => {
      seed = (seed * 1_103_515_245 + 12_345) % 2_147_483_648;
      return seed % n;
    };
    const reader = new ServiceNormalizer(own);
    let previous: Record<string, string[]> | undefined;
    for (let round = 0; round < 300; round++) {
      const services = Object.create(null) as Record<string, string[] | null>;
      for (const name of ['web', 'api', 'db', 'consul-acme', '__proto__', 'x"y']) {
        if (random(4) === 0) continue;
        services[name] = random(8) === 0 ? null : Array.from({ length: random(5) }, () => pool[random(pool.length)]!);
      }
      // Mostly as Consul writes it; now and then with the keys in another order (parsed whole).
      const body =
        random(5) === 0 ? Buffer.from(JSON.stringify(services)) : answer(services, random(3) === 0 ? 4 : undefined);
      const snapshot = reader.read(body);
      assert.deepEqual({ ...snapshot }, { ...expected(body) }, `round ${round}: ${body.toString()}`);
      if (previous !== undefined && sameServices(previous, snapshot))
        assert.equal(snapshot, previous, `round ${round}`);
      previous = snapshot;
    }
  });

  it('reads compact and indented answers (as a dev agent sends them) without parsing them whole', () => {
    const reader = new ServiceNormalizer(own);
    const services = { 'consul-acme': ['x'], web: ['urlprefix-a.example.com/', 'b'], api: null };
    const parse = JSON.parse;
    let parsed = 0;
    JSON.parse = ((...args: Parameters<typeof JSON.parse>) => {
      parsed++;
      return parse(...args) as unknown;
    }) as typeof JSON.parse;
    try {
      const compact = reader.read(answer(services));
      assert.deepEqual({ ...compact }, { api: [], web: ['b', 'urlprefix-a.example.com/'] });
      assert.equal(reader.read(Buffer.from(` ${answer(services, 4).toString()}\n`)), compact);
    } finally {
      JSON.parse = parse;
    }
    assert.equal(parsed, 0);
  });

  it('reads an answer of another shape whole, and an empty answer as no services', () => {
    const reader = new ServiceNormalizer(own);
    const repeated = Buffer.from('{"web":["a"],"web":["b"]}');
    assert.deepEqual({ ...reader.read(repeated) }, { web: ['b'] }, 'a repeated key counts as JSON.parse counts it');
    assert.deepEqual({ ...reader.read(undefined) }, {});
    assert.deepEqual({ ...reader.read(Buffer.alloc(0)) }, {});
    assert.deepEqual({ ...reader.read(Buffer.from('null')) }, {});
    assert.deepEqual({ ...reader.read(Buffer.from('{}\n')) }, {});
  });

  it('an answer that is not JSON throws, and the next good answer is read as usual', () => {
    const reader = new ServiceNormalizer(own);
    const first = reader.read(answer({ web: ['a'] }));
    for (const bad of ['<html>', '{"web":["a"]', '{"web":["a\u0001"]}', '{"web":nul}', '{"web":["a"]} x']) {
      assert.throws(() => reader.read(Buffer.from(bad)), SyntaxError, bad);
    }
    assert.equal(reader.read(answer({ web: ['a'] })), first);
  });
});
