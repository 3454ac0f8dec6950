import type { Lock, Locker } from '../../ports/locker.js';

/** Locker for one process. Locks are never lost unless `loseAll()` is called (tests). */
export class MemoryLocker implements Locker {
  private readonly held = new Map<string, AbortController>();

  async tryAcquire(key: string): Promise<Lock | undefined> {
    if (this.held.has(key)) return undefined;
    const controller = new AbortController();
    this.held.set(key, controller);
    let released = false;
    return {
      key,
      signal: controller.signal,
      release: async () => {
        if (released) return;
        released = true;
        if (this.held.get(key) === controller) this.held.delete(key);
      },
    };
  }

  /** Simulates losing every lock, as when a Consul session is invalidated. */
  loseAll(reason = 'session lost'): void {
    for (const controller of this.held.values()) controller.abort(new Error(reason));
    this.held.clear();
  }

  heldKeys(): string[] {
    return [...this.held.keys()].sort();
  }

  async close(): Promise<void> {
    this.loseAll('locker closed');
  }
}
