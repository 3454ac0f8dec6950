import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { shardCountFor, shardOf, TagShards } from '../../src/adapters/consul/tag-shards.js';

const tag = (i: number): string => `urlprefix-host-${i}.example.com/.well-known/acme-challenge/`;
const tags = (from: number, to: number): string[] => Array.from({ length: to - from }, (_, k) => tag(from + k));

/** The shards as sorted tag lists, from the outside. */
function contents(shards: TagShards): string[][] {
  return Array.from({ length: shards.count }, (_, n) => shards.tagsOf(n));
}

describe('TagShards', () => {
  test('puts every tag in its shard, each shard sorted', () => {
    const shards = new TagShards(8, tags(0, 200));
    const all = contents(shards);
    assert.equal(all.flat().length, 200);
    all.forEach((list, n) => {
      assert.deepEqual(list, [...list].sort());
      for (const t of list) assert.equal(shardOf(t, 8), n);
    });
  });

  test('setTags reports exactly the shards a change touched', () => {
    const shards = new TagShards(8, tags(0, 200));
    const before = contents(shards);
    const gone = tag(3);
    const added = tag(1000);
    const changed = shards.setTags([...tags(0, 200).filter((t) => t !== gone), added]);
    assert.deepEqual(
      changed,
      [...new Set([shardOf(gone, 8), shardOf(added, 8)])].sort((a, b) => a - b),
    );
    const after = contents(shards);
    for (let n = 0; n < 8; n++) {
      if (changed.includes(n)) assert.notDeepEqual(after[n], before[n], `shard ${n} changed`);
      else assert.deepEqual(after[n], before[n], `shard ${n} untouched`);
    }
    assert.ok(!shards.tags().has(gone));
    assert.ok(shards.tags().has(added));
  });

  test('change adds and removes only the tags given, and reports the shards they touched', () => {
    const shards = new TagShards(8, tags(0, 200));
    const viaSet = new TagShards(8, tags(0, 200));
    const changed = shards.change([tag(1000)], [tag(3), tag(5000)]); // tag(5000) was never there
    const expected = viaSet.setTags([...tags(0, 200).filter((t) => t !== tag(3)), tag(1000)]);
    assert.deepEqual(changed, expected);
    assert.deepEqual(contents(shards), contents(viaSet));
    assert.deepEqual(shards.change([tag(1000)], []), [], 'a tag held already changes nothing');
    shards.change([tag(1001)], [tag(1001)]);
    assert.ok(!shards.tags().has(tag(1001)), 'added, then removed');
  });

  test('the same tags again, in another order or with duplicates, change nothing', () => {
    const shards = new TagShards(4, tags(0, 50));
    assert.deepEqual(shards.setTags([...tags(0, 50)].reverse()), []);
    assert.deepEqual(shards.setTags([...tags(0, 50), tag(7), tag(7)]), []);
    assert.equal(shards.tags().size, 50);
  });

  test('asks for a new shard count only when a shard is over the limit or the halves fit well under it', () => {
    const max = 100;
    const count = shardCountFor(tags(0, 300), max);
    const shards = new TagShards(count, tags(0, 300));
    assert.equal(shards.mayNeedResize(max), false, 'settled at the count shardCountFor chose');
    shards.setTags(tags(0, 1000));
    assert.equal(shards.mayNeedResize(max), true, 'a shard is over the limit');
    assert.ok(shardCountFor(shards.tags(), max, count) > count);
    shards.setTags(tags(0, 20));
    assert.equal(shards.mayNeedResize(max), true, 'the halves fit well under the limit');
    assert.ok(shardCountFor(shards.tags(), max, count) < count);
  });

  test('one shard never asks to be halved', () => {
    const shards = new TagShards(1, tags(0, 3));
    assert.equal(shards.mayNeedResize(100), false);
    shards.setTags([]);
    assert.equal(shards.mayNeedResize(100), false);
    assert.deepEqual(shards.tagsOf(0), []);
  });
});
