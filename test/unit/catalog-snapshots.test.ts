import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  normalizeServices,
  parseCatalogAnswer,
  sameServices,
  ServiceNormalizer,
} from '../../src/adapters/consul/consul-discovery.js';

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

describe('parseCatalogAnswer (the answer as bytes, our own lists cut out before parsing)', () => {
  const answer = (services: Record<string, string[] | null>): Buffer => Buffer.from(JSON.stringify(services));

  it('empties the lists of the services named, and leaves every other service as Consul sent it', () => {
    const services = {
      api: ['urlprefix-"consul-acme":[x]/', 'a\\"]'],
      'consul-acme': ['urlprefix-a.example.com/.well-known/acme-challenge/', 'odd ] "quoted" \\', ']'],
      'consul-acme-certificates': [],
      'my-consul-acme': ['urlprefix-b.example.com/'],
      web: null,
    };
    const parsed = parseCatalogAnswer(answer(services), ['consul-acme', 'consul-acme-certificates', 'absent']);
    assert.deepEqual(parsed, { ...services, 'consul-acme': [] });
  });

  it('parses an answer of another shape whole, and an empty answer as no services', () => {
    const spaced = Buffer.from(JSON.stringify({ 'consul-acme': ['x'], web: ['y'] }, null, 2));
    assert.deepEqual(parseCatalogAnswer(spaced, ['consul-acme']), { 'consul-acme': ['x'], web: ['y'] });
    assert.deepEqual(parseCatalogAnswer(undefined, ['consul-acme']), {});
    assert.deepEqual(parseCatalogAnswer(Buffer.alloc(0), ['consul-acme']), {});
    assert.deepEqual(parseCatalogAnswer(Buffer.from('null'), ['consul-acme']), {});
  });

  it('an answer that is not JSON throws, naming no service', () => {
    assert.throws(() => parseCatalogAnswer(Buffer.from('<html>'), ['consul-acme']), SyntaxError);
  });
});
