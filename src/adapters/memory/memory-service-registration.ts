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
    const current = this.tags;
    if (current && current.length === wanted.length && [...current].sort().join('\n') === [...wanted].sort().join('\n'))
      return;
    this.tags = wanted;
    this.history.push([...wanted]);
  }

  async deregister(): Promise<void> {
    if (this.tags !== undefined) this.deregistrations += 1;
    this.tags = undefined;
  }

  isRegistered(): boolean {
    return this.tags !== undefined;
  }
}
