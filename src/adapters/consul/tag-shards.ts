/**
 * How the challenge-route tags are spread over registrations (the sharding described in
 * consul-service-registration.ts): a tag goes to shard `sha256(tag) mod S`, S a power of two.
 *
 * `TagShards` holds the tags of every shard, so that a change to the tag set costs work for the
 * tags that moved: `setTags` says which shards changed, and only those are sent to the agent. The
 * shard count is looked at again only when a shard's size says it may have to change.
 */
import { createHash } from 'node:crypto';

/** Shard counts are powers of two up to this. */
export const MAX_SHARDS = 1 << 12;
/** A shard count is halved only when the halves would each stay at or under this share of the limit. */
const SHRINK_FILL = 0.75;

const hashCache = new Map<string, number>();

/** A tag's 32-bit hash: the first four bytes of its SHA-256. Stable across processes and versions. */
function tagHash(tag: string): number {
  let hash = hashCache.get(tag);
  if (hash === undefined) {
    hash = createHash('sha256').update(tag).digest().readUInt32BE(0);
    if (hashCache.size >= 100_000) hashCache.clear();
    hashCache.set(tag, hash);
  }
  return hash;
}

/** The shard of `tag` among `shardCount` (a power of two). */
export function shardOf(tag: string, shardCount: number): number {
  return tagHash(tag) % shardCount;
}

function largestShard(tags: Iterable<string>, shardCount: number): number {
  const counts = new Array<number>(shardCount).fill(0);
  for (const tag of tags) {
    const shard = shardOf(tag, shardCount);
    counts[shard] = (counts[shard] ?? 0) + 1;
  }
  return Math.max(0, ...counts);
}

/**
 * How many shards `tags` need so that none holds more than `maxTags`, starting from `current`:
 * doubled until every shard fits, halved only while the halves would stay at or under 3/4 of the
 * limit, so a number of names close to a boundary does not move names back and forth.
 */
export function shardCountFor(tags: Iterable<string>, maxTags: number, current = 1): number {
  const all = [...tags];
  let count = Math.max(1, current);
  while (count < MAX_SHARDS && largestShard(all, count) > maxTags) count *= 2;
  while (count > 1 && largestShard(all, count / 2) <= maxTags * SHRINK_FILL) count /= 2;
  return count;
}

/** The tags of each of `count` shards. */
export class TagShards {
  private readonly all = new Set<string>();
  private readonly shards: Array<Set<string>>;

  constructor(
    readonly count: number,
    tags: Iterable<string> = [],
  ) {
    this.shards = Array.from({ length: count }, () => new Set<string>());
    for (const tag of tags) this.add(tag);
  }

  /** Every tag held. */
  tags(): ReadonlySet<string> {
    return this.all;
  }

  /** The tags of shard `n`, sorted. */
  tagsOf(n: number): string[] {
    return [...(this.shards[n] ?? [])].sort();
  }

  /** Makes the tags exactly `wanted` (duplicates ignored); returns the shards whose tags changed, ascending. */
  setTags(wanted: readonly string[]): number[] {
    const next = new Set(wanted);
    return this.change(
      next,
      [...this.all].filter((tag) => !next.has(tag)),
    );
  }

  /**
   * Adds `added`, then removes `removed` (so a tag in both goes); costs work for these tags only.
   * Returns the shards whose tags changed, ascending.
   */
  change(added: Iterable<string>, removed: Iterable<string>): number[] {
    const changed = new Set<number>();
    for (const tag of added) if (!this.all.has(tag)) changed.add(this.add(tag));
    for (const tag of removed) {
      if (!this.all.has(tag)) continue;
      const n = shardOf(tag, this.count);
      this.shards[n]!.delete(tag);
      this.all.delete(tag);
      changed.add(n);
    }
    return [...changed].sort((a, b) => a - b);
  }

  /**
   * Whether the shard count may have to change for `maxTags`: a shard over the limit, or halves
   * that would fit well under it. Only then is the whole set looked at again (shardCountFor).
   */
  mayNeedResize(maxTags: number): boolean {
    const sizes = this.shards.map((s) => s.size);
    if (Math.max(0, ...sizes) > maxTags) return true;
    if (this.count === 1) return false;
    // With powers of two, shard i of count/2 is shards i and i + count/2 of count.
    const half = this.count / 2;
    let largestHalf = 0;
    for (let i = 0; i < half; i++) largestHalf = Math.max(largestHalf, sizes[i]! + sizes[i + half]!);
    return largestHalf <= maxTags * SHRINK_FILL;
  }

  private add(tag: string): number {
    const n = shardOf(tag, this.count);
    this.shards[n]!.add(tag);
    this.all.add(tag);
    return n;
  }
}
