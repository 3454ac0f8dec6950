import { MemoryWatch } from './memory-watch.js';
import type { CatalogSnapshot, Discovery } from '../../ports/discovery.js';

function normalize(services: Record<string, readonly string[]>): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const name of Object.keys(services).sort()) out[name] = [...new Set(services[name] ?? [])].sort();
  return out;
}

/**
 * Discovery for tests and runs without Consul: the catalog is whatever was last `push`ed. Same
 * contract as ConsulDiscovery: the first snapshot is the current state, later ones only when the
 * content changed, onSnapshot awaited before the next, `watch` resolves when the signal aborts.
 */
export class MemoryDiscovery implements Discovery {
  private services: Record<string, string[]>;
  private index = 1;
  private readonly watches = new MemoryWatch<CatalogSnapshot>(
    () => ({ services: normalize(this.services), index: this.index }),
    (snapshot) => JSON.stringify(snapshot.services),
  );

  constructor(initial: Record<string, readonly string[]> = {}) {
    this.services = normalize(initial);
  }

  watch(
    signal: AbortSignal,
    onSnapshot: (snapshot: CatalogSnapshot) => Promise<void> | void,
    onError?: (err: unknown) => void,
  ): Promise<void> {
    return this.watches.watch(signal, onSnapshot, onError);
  }

  /**
   * Replaces the whole catalog. Watchers whose last snapshot differs get the new one; the promise
   * resolves when every watcher has handled it.
   */
  async push(services: Record<string, readonly string[]>): Promise<void> {
    this.services = normalize(services);
    this.index += 1;
    await this.watches.publish();
  }

  /** Reports `err` to every watcher's onError, as a failing Consul would. */
  fail(err: unknown): void {
    this.watches.fail(err);
  }

  /** The catalog as last pushed (sorted). */
  current(): Record<string, string[]> {
    return normalize(this.services);
  }
}
