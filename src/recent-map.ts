/**
 * A map that holds at most `capacity` entries and forgets the least recently used first: `get` and
 * `set` make an entry the most recent. The caches and the remembered versions of the stores use it
 * (domain/pem.ts, adapters/vault/vault-certificate-store.ts, adapters/consul/consul-budget-ledger.ts).
 */
export class RecentMap<K, V> {
  private readonly entries = new Map<K, V>();

  constructor(private readonly capacity: number) {}

  get size(): number {
    return this.entries.size;
  }

  get(key: K): V | undefined {
    const value = this.entries.get(key);
    if (value !== undefined) this.set(key, value);
    return value;
  }

  set(key: K, value: V): void {
    this.entries.delete(key);
    this.entries.set(key, value);
    if (this.entries.size > this.capacity) this.entries.delete(this.entries.keys().next().value as K);
  }

  delete(key: K): void {
    this.entries.delete(key);
  }

  clear(): void {
    this.entries.clear();
  }
}
