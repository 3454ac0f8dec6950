import type { ChallengeStore } from '../../ports/challenge-store.js';
import { systemClock, type Clock } from '../../ports/clock.js';

export interface MemoryChallengeStoreOptions {
  /** For the put times `prune` reads. */
  clock?: Clock;
}

/** ChallengeStore for one process: tests and single-instance runs without Consul. */
export class MemoryChallengeStore implements ChallengeStore {
  private readonly values = new Map<string, { keyAuthorization: string; putAt: number }>();
  private readonly clock: Clock;

  constructor(opts: MemoryChallengeStoreOptions = {}) {
    this.clock = opts.clock ?? systemClock;
  }

  async put(token: string, keyAuthorization: string): Promise<void> {
    this.values.set(token, { keyAuthorization, putAt: this.clock.nowMs() });
  }

  async get(token: string): Promise<string | undefined> {
    return this.values.get(token)?.keyAuthorization;
  }

  async delete(token: string): Promise<void> {
    this.values.delete(token);
  }

  async prune(olderThanMs: number): Promise<number> {
    const cutoff = this.clock.nowMs() - olderThanMs;
    let deleted = 0;
    for (const [token, entry] of [...this.values]) {
      if (entry.putAt < cutoff) {
        this.values.delete(token);
        deleted += 1;
      }
    }
    return deleted;
  }

  /** One process: nothing can be lost behind its back. */
  async reassert(): Promise<number> {
    return 0;
  }

  /** Tokens currently held; tests use it to check nothing is left behind. */
  tokens(): string[] {
    return [...this.values.keys()].sort();
  }
}
