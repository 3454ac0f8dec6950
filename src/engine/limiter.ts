/**
 * The one limit on fan-out over names. Every pass that touches many names (the start-up pass, the
 * renewal scan, catalog and policy changes) runs its store reads and Consul calls through one
 * shared Limiter, so that at most `maxInFlight` such operations are open at once, whatever the
 * number of names and whatever the process's open-file limit. Work beyond the limit waits its
 * turn in arrival order.
 */
export class Limiter {
  private inFlight = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(readonly maxInFlight: number) {
    if (!Number.isInteger(maxInFlight) || maxInFlight < 1)
      throw new RangeError(`maxInFlight must be >= 1 (got ${maxInFlight})`);
  }

  /** Operations running now (for tests and metrics). */
  get running(): number {
    return this.inFlight;
  }

  /** Runs `operation` when a slot is free; resolves or rejects as it does. */
  async run<T>(operation: () => Promise<T>): Promise<T> {
    if (this.inFlight >= this.maxInFlight) await new Promise<void>((resolve) => this.waiting.push(resolve));
    else this.inFlight++;
    try {
      return await operation();
    } finally {
      const next = this.waiting.shift();
      if (next)
        next(); // the slot passes straight to the next in line
      else this.inFlight--;
    }
  }

  /**
   * Runs `operation` for every item through the limiter; resolves when all have settled, with their
   * results in order.
   */
  async map<T, R>(items: Iterable<T>, operation: (item: T) => Promise<R>): Promise<PromiseSettledResult<R>[]> {
    return Promise.allSettled([...items].map((item) => this.run(() => operation(item))));
  }
}
