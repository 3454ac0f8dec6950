import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { normalizeServices, sameServices } from '../../src/adapters/consul/consul-discovery.js';

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
});
