import type { ServiceRegistration } from '../../ports/service-registration.js';

/** ServiceRegistration that records what it was asked to register; for tests and runs without Consul. */
export class MemoryServiceRegistration implements ServiceRegistration {
  /** Tags currently registered; undefined when not registered. */
  tags: string[] | undefined;
  /** Every registration actually made (identical updates are skipped, as in Consul). */
  readonly history: string[][] = [];
  deregistrations = 0;

  async update(tags: string[]): Promise<void> {
    const wanted = [...new Set(tags)];
    this.wanted = wanted;
    const current = this.tags;
    if (current && current.length === wanted.length && [...current].sort().join('\n') === [...wanted].sort().join('\n'))
      return;
    this.tags = wanted;
    this.history.push([...wanted]);
  }

  /** What the last update asked for, kept when the registration is lost (see `lose`). */
  private wanted: string[] | undefined;

  /** Forgets the registration, as an agent that lost its state does. */
  lose(): void {
    this.tags = undefined;
  }

  async reassert(): Promise<boolean> {
    if (this.wanted === undefined || this.tags !== undefined) return false;
    this.tags = [...this.wanted];
    this.history.push([...this.wanted]);
    return true;
  }

  async deregister(): Promise<void> {
    if (this.tags !== undefined) this.deregistrations += 1;
    this.tags = undefined;
    this.wanted = undefined;
  }

  isRegistered(): boolean {
    return this.tags !== undefined;
  }
}
