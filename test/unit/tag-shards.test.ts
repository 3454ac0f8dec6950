import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { TagShards } from '../../src/adapters/consul/tag-shards.js';

const tag = (i: number): string => `urlprefix-host-${i}.example.com/.well-known/acme-challenge/`;
const tags = (from: number, to: number): string[] => Array.from({ length: to - from }, (_, k) => tag(from + k));

/** The shards as sorted tag lists, from the outside. */
function contents(shards: TagShards): string[][] {
  return Array.from({ length: shards.count }, (_, n) => shards.tagsOf(n));
}

function sizes(shards: TagShards): number[] {
  return contents(shards).map((list) => list.length);
}

describe('TagShards', () => {
  test('spreads the first tags evenly over as few shards as hold them, each shard sorted', () => {
    const shards = new TagShards(1000);
    assert.deepEqual(shards.change(tags(0, 2500), []), [0, 1, 2]);
    assert.deepEqual(sizes(shards), [834, 833, 833]);
    const all = contents(shards);
    for (const list of all) assert.deepEqual(list, [...list].sort());
    assert.deepEqual(all.flat().sort(), tags(0, 2500).sort(), 'every tag once');
    const one = new TagShards(1000);
    one.setTags(tags(0, 1000));
    assert.equal(one.count, 1, 'up to the limit, one shard');
  });

  test("a new service's names go together into the shard with the most room, and only it is reported", () => {
    const shards = new TagShards(100);
    shards.setTags(tags(0, 250)); // 84 / 83 / 83
    const before = contents(shards);
    const changed = shards.change(tags(1000, 1005), []);
    assert.deepEqual(changed, [1], 'the first of the roomiest');
    const after = contents(shards);
    assert.deepEqual(after[1], [...before[1]!, ...tags(1000, 1005)].sort());
    assert.deepEqual([after[0], after[2]], [before[0], before[2]], 'the others untouched');
    assert.deepEqual(shards.change(tags(2000, 2005), []), [2], 'the next change goes to the next roomiest');
  });

  test('names that fit in no shard get a new shard of their own', () => {
    const shards = new TagShards(10);
    shards.setTags(tags(0, 29)); // 10 / 10 / 9
    assert.deepEqual(shards.change(tags(100, 103), []), [3]);
    assert.deepEqual(shards.tagsOf(3), tags(100, 103).sort());
    assert.deepEqual(shards.change(tags(200, 225), []).length, 4, 'more than one shard holds: dealt over the roomiest');
    assert.ok(Math.max(...sizes(shards)) <= 10);
  });

  test('change removes only tags it holds, reports their shards, and a tag added and removed goes', () => {
    const shards = new TagShards(100);
    shards.setTags(tags(0, 250));
    const at = shards.shardOf(tag(3))!;
    assert.deepEqual(shards.change([], [tag(3), tag(5000)]), [at]); // tag(5000) was never there
    assert.equal(shards.has(tag(3)), false);
    assert.deepEqual(shards.change([tag(7)], []), [], 'a tag held already changes nothing');
    shards.change([tag(1001)], [tag(1001)]);
    assert.equal(shards.has(tag(1001)), false, 'added, then removed');
    assert.equal(shards.size, 249);
  });

  test('the same tags again, in another order or with duplicates, change nothing', () => {
    const shards = new TagShards(20);
    shards.setTags(tags(0, 50));
    assert.deepEqual(shards.setTags([...tags(0, 50)].reverse()), []);
    assert.deepEqual(shards.setTags([...tags(0, 50), tag(7), tag(7)]), []);
    assert.equal(shards.size, 50);
  });

  test('drops the last shard only when the others hold every tag with a quarter to spare, and keeps it near the line', () => {
    const shards = new TagShards(100);
    shards.setTags(tags(0, 300)); // 3 shards of 100
    shards.setTags(tags(0, 160));
    assert.equal(shards.count, 3, '160 would fill two shards to 80 %: kept');
    const before = contents(shards);
    const changed = shards.setTags(tags(0, 150));
    assert.equal(shards.count, 2, '150 fit in two at 75 %');
    assert.deepEqual(contents(shards).flat().sort(), tags(0, 150).sort());
    assert.ok(Math.max(...sizes(shards)) <= 100);
    for (let n = 0; n < 2; n++) {
      assert.equal(changed.includes(n), JSON.stringify(before[n]) !== JSON.stringify(shards.tagsOf(n)), `shard ${n}`);
    }
    shards.setTags([]);
    assert.equal(shards.count, 1);
    assert.deepEqual(shards.tagsOf(0), []);
  });

  test('over random changes: no shard over the limit, every tag once, and exactly the changed shards reported', () => {
    let seed = 11;
    const random = (n: number): number => {
      seed = (seed * 1_103_515_245 + 12_345) % 2_147_483_648;
      return seed % n;
    };
    const shards = new TagShards(10);
    const model = new Set<string>();
    for (let round = 0; round < 400; round++) {
      const before = contents(shards);
      const added = Array.from({ length: random(round % 50 === 0 ? 60 : 6) }, () => tag(random(120)));
      const removed = Array.from({ length: random(round % 37 === 0 ? 80 : 6) }, () => tag(random(120))).filter(
        (t) => !added.includes(t),
      );
      const changed = shards.change(added, removed);
      for (const t of added) model.add(t);
      for (const t of removed) model.delete(t);
      const after = contents(shards);
      assert.deepEqual(after.flat().sort(), [...model].sort(), `round ${round}: the tags`);
      assert.ok(Math.max(...after.map((l) => l.length)) <= 10, `round ${round}: within the limit`);
      const differ = after.flatMap((list, n) => (JSON.stringify(list) !== JSON.stringify(before[n] ?? []) ? [n] : []));
      assert.deepEqual(changed, differ, `round ${round}: the shards reported`);
    }
  });

  test('a shard holds at least one tag', () => {
    assert.throws(() => new TagShards(0), RangeError);
  });
});
