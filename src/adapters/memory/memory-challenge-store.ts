import type { ChallengeStore } from '../../ports/challenge-store.js';

/** ChallengeStore for one process: tests and single-instance runs without Consul. */
export class MemoryChallengeStore implements ChallengeStore {
  private readonly values = new Map<string, string>();

  async put(token: string, keyAuthorization: string): Promise<void> {
    this.values.set(token, keyAuthorization);
  }

  async get(token: string): Promise<string | undefined> {
    return this.values.get(token);
  }

  async delete(token: string): Promise<void> {
    this.values.delete(token);
  }

  /** Tokens currently held; tests use it to check nothing is left behind. */
  tokens(): string[] {
    return [...this.values.keys()].sort();
  }
}
