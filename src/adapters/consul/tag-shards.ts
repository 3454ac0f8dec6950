/**
 * How the challenge-route tags are spread over registrations (the sharding described in
 * consul-service-registration.ts): each shard holds at most `maxTags` tags, and the tags of one
 * change go together, so that a change re-registers as few shards as it can, usually one.
 *
 * - Tags added in one change all go to the shard with the most room when they fit there (a new
 *   service's names cost one registration, and the smallest one), else to a new shard of their
 *   own when they fill at most one. More than that are dealt one by one to the shard with the most
 *   room, after new shards are opened for what the others cannot hold: the first tags are so
 *   spread evenly over as few shards as hold them.
 * - A tag stays in its shard until it is removed; only when the tags would fit in one shard fewer,
 *   with a quarter of each shard to spare, is the last shard emptied into the others and dropped.
 *   Shards are numbered from 0 and only the last one is ever added or dropped, so a shard keeps its
 *   number (and its registration id) while it exists.
 *
 * `change` and `setTags` report which shards changed, so only those are sent to the agent.
 */

/** Shards are emptied into the others only when these would then be at most this full. */
const SHRINK_FILL = 0.75;

/** The tags of each shard. */
export class TagShards {
  /** Tag → its shard. */
  private readonly shardOfTag = new Map<string, number>();
  private readonly shards: Array<Set<string>> = [];

  constructor(readonly maxTags: number) {
    if (!(maxTags >= 1)) throw new RangeError(`a shard must hold at least one tag, not ${maxTags}`);
  }

  /** How many shards there are (at least one). */
  get count(): number {
    return Math.max(1, this.shards.length);
  }

  /** How many tags are held. */
  get size(): number {
    return this.shardOfTag.size;
  }

  /** Whether `tag` is held. */
  has(tag: string): boolean {
    return this.shardOfTag.has(tag);
  }

  /** The shard holding `tag`, if any. */
  shardOf(tag: string): number | undefined {
    return this.shardOfTag.get(tag);
  }

  /** The tags of shard `n`, sorted. */
  tagsOf(n: number): string[] {
    return [...(this.shards[n] ?? [])].sort();
  }

  /** Makes the tags exactly `wanted` (duplicates ignored); returns the shards whose tags changed, ascending. */
  setTags(wanted: readonly string[]): number[] {
    const next = new Set(wanted);
    return this.change(
      [...next].filter((tag) => !this.shardOfTag.has(tag)),
      [...this.shardOfTag.keys()].filter((tag) => !next.has(tag)),
    );
  }

  /**
   * Adds `added`, then removes `removed` (so a tag in both goes); costs work for these tags only.
   * Returns the shards whose tags changed, ascending: a shard opened for new tags is among them, a
   * shard dropped is not (there is no such shard any more).
   */
  change(added: Iterable<string>, removed: Iterable<string>): number[] {
    const changed = new Set<number>();
    const fresh = [...new Set(added)].filter((tag) => !this.shardOfTag.has(tag));
    this.place(fresh, changed);
    for (const tag of removed) {
      const n = this.shardOfTag.get(tag);
      if (n === undefined) continue;
      this.shards[n]!.delete(tag);
      this.shardOfTag.delete(tag);
      changed.add(n);
    }
    this.shrink(changed);
    return [...changed].filter((n) => n < this.count).sort((a, b) => a - b);
  }

  /** Puts `tags` (none held yet) into shards, opening new ones as needed; marks the shards that took any. */
  private place(tags: readonly string[], changed: Set<number>): void {
    if (tags.length === 0) return;
    if (this.shards.length === 0) this.shards.push(new Set());
    const roomiest = this.roomiest();
    if (this.maxTags - this.shards[roomiest]!.size >= tags.length) {
      for (const tag of tags) this.put(tag, roomiest);
      changed.add(roomiest);
      return;
    }
    if (tags.length <= this.maxTags) {
      // A new shard of these tags alone: one small registration instead of a few tags in many.
      this.shards.push(new Set());
      for (const tag of tags) this.put(tag, this.shards.length - 1);
      changed.add(this.shards.length - 1);
      return;
    }
    const room = this.shards.reduce((sum, shard) => sum + Math.max(0, this.maxTags - shard.size), 0);
    for (let missing = tags.length - room; missing > 0; missing -= this.maxTags) this.shards.push(new Set());
    for (const tag of tags) {
      const n = this.roomiest();
      this.put(tag, n);
      changed.add(n);
    }
  }

  /** Empties the last shard into the others while they hold everything with room to spare. */
  private shrink(changed: Set<number>): void {
    while (this.shards.length > 1 && this.shardOfTag.size <= (this.shards.length - 1) * this.maxTags * SHRINK_FILL) {
      const last = this.shards.pop()!;
      changed.delete(this.shards.length);
      for (const tag of last) {
        const n = this.roomiest();
        this.put(tag, n);
        changed.add(n);
      }
    }
  }

  /** The shard with the fewest tags (the lowest-numbered of equals). */
  private roomiest(): number {
    let best = 0;
    for (let n = 1; n < this.shards.length; n++) if (this.shards[n]!.size < this.shards[best]!.size) best = n;
    return best;
  }

  private put(tag: string, n: number): void {
    this.shards[n]!.add(tag);
    this.shardOfTag.set(tag, n);
  }
}
