/**
 * The watch mechanics shared by the in-memory sources (MemoryDiscovery, MemoryPolicySource),
 * with the same contract as the Consul watches: the first delivery is the current value, later
 * ones only when the content changed, the consumer is awaited before the next delivery, a
 * consumer that throws is told through onError and gets the value again on the next publish,
 * and `watch` resolves when the signal aborts.
 */
interface Watcher<T> {
  lastDelivered: string | undefined;
  chain: Promise<void>;
  onValue: (value: T) => Promise<void> | void;
  onError: ((err: unknown) => void) | undefined;
}

export class MemoryWatch<T> {
  private readonly watchers = new Set<Watcher<T>>();

  /**
   * `current` gives a fresh copy of the value to deliver each time it is called; `contentOf` is
   * what counts as a change (by default the whole value).
   */
  constructor(
    private readonly current: () => T,
    private readonly contentOf: (value: T) => string = (value) => JSON.stringify(value),
  ) {}

  async watch(
    signal: AbortSignal,
    onValue: (value: T) => Promise<void> | void,
    onError?: (err: unknown) => void,
  ): Promise<void> {
    if (signal.aborted) return;
    const watcher: Watcher<T> = { lastDelivered: undefined, chain: Promise.resolve(), onValue, onError };
    this.watchers.add(watcher);
    void this.deliver(watcher);
    await new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
    this.watchers.delete(watcher);
    await watcher.chain;
  }

  /** Offers the current value to every watcher; resolves when each has handled it (or skipped an unchanged one). */
  async publish(): Promise<void> {
    await Promise.all([...this.watchers].map((w) => this.deliver(w)));
  }

  /** Reports `err` to every watcher's onError, as a failing Consul would. */
  fail(err: unknown): void {
    for (const w of this.watchers) w.onError?.(err);
  }

  private deliver(watcher: Watcher<T>): Promise<void> {
    const value = this.current();
    watcher.chain = watcher.chain.then(async () => {
      const content = this.contentOf(value);
      if (content === watcher.lastDelivered) return;
      try {
        await watcher.onValue(value);
        watcher.lastDelivered = content;
      } catch (err) {
        // Offered again on the next publish; a throwing onError must not break the chain.
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
