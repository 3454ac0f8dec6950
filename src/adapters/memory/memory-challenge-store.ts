import type { ChallengeStore } from '../../ports/challenge-store.js';

export interface MemoryChallengeStoreOptions {
  /** Wall clock in Unix milliseconds, for the put times `prune` reads; injectable for tests. */
  now?: () => number;
}

/** ChallengeStore for one process: tests and single-instance runs without Consul. */
export class MemoryChallengeStore implements ChallengeStore {
  private readonly values = new Map<string, { keyAuthorization: string; putAt: number }>();
  private readonly now: () => number;

  constructor(opts: MemoryChallengeStoreOptions = {}) {
    this.now = opts.now ?? Date.now;
  }

  async put(token: string, keyAuthorization: string): Promise<void> {
    this.values.set(token, { keyAuthorization, putAt: this.now() });
  }

  async get(token: string): Promise<string | undefined> {
    return this.values.get(token)?.keyAuthorization;
  }

  async delete(token: string): Promise<void> {
    this.values.delete(token);
  }

  async prune(olderThanMs: number): Promise<number> {
    const cutoff = this.now() - olderThanMs;
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
