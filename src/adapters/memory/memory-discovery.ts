import type { CatalogSnapshot, Discovery } from '../../ports/discovery.js';

interface Watcher {
  lastEmitted: string | undefined;
  /** Deliveries run one after another: onSnapshot is awaited before the next. */
  chain: Promise<void>;
  onSnapshot: (snapshot: CatalogSnapshot) => Promise<void> | void;
  onError: ((err: unknown) => void) | undefined;
}

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
  private readonly watchers = new Set<Watcher>();

  constructor(initial: Record<string, readonly string[]> = {}) {
    this.services = normalize(initial);
  }

  async watch(
    signal: AbortSignal,
    onSnapshot: (snapshot: CatalogSnapshot) => Promise<void> | void,
    onError?: (err: unknown) => void,
  ): Promise<void> {
    if (signal.aborted) return;
    const watcher: Watcher = { lastEmitted: undefined, chain: Promise.resolve(), onSnapshot, onError };
    this.watchers.add(watcher);
    void this.deliver(watcher);
    await new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
    this.watchers.delete(watcher);
    await watcher.chain;
  }

  /**
   * Replaces the whole catalog. Watchers whose last snapshot differs get the new one; the promise
   * resolves when every watcher has handled it.
   */
  async push(services: Record<string, readonly string[]>): Promise<void> {
    this.services = normalize(services);
    this.index += 1;
    await Promise.all([...this.watchers].map((w) => this.deliver(w)));
  }

  /** Reports `err` to every watcher's onError, as a failing Consul would. */
  fail(err: unknown): void {
    for (const w of this.watchers) w.onError?.(err);
  }

  /** The catalog as last pushed (sorted). */
  current(): Record<string, string[]> {
    return normalize(this.services);
  }

  private deliver(watcher: Watcher): Promise<void> {
    const services = this.services;
    const index = this.index;
    watcher.chain = watcher.chain.then(async () => {
      const content = JSON.stringify(services);
      if (content === watcher.lastEmitted) return;
      try {
        await watcher.onSnapshot({ services: normalize(services), index });
        watcher.lastEmitted = content;
      } catch (err) {
        // Offered again on the next push; a throwing onError must not break the chain.
        try {
          watcher.onError?.(err);
        } catch {
          /* ignored */
        }
      }
    });
    return watcher.chain;
  }
}
