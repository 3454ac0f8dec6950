import type { ServiceRegistration } from '../../ports/service-registration.js';

/**
 * ServiceRegistration that records what it was asked to register; for tests and runs without
 * Consul. Same contract as ConsulServiceRegistration, with a simulated agent: `lose()` drops the
 * registration from it, as an agent restarted without its data would, and `reassert()` puts it
 * back. Calls are not coalesced (each update that changes the tags is one registration).
 */
export class MemoryServiceRegistration implements ServiceRegistration {
  /** Tags last asked for, sorted; undefined before the first update and after deregister. */
  tags: string[] | undefined;
  /** Every registration actually made (identical updates are skipped, as in Consul), reassertions included. */
  readonly history: string[][] = [];
  deregistrations = 0;
  /** How many reassert() calls had to register again. */
  reassertions = 0;
  /** Whether the simulated agent holds the registration. */
  private inAgent = false;

  async change(added: readonly string[], removed: readonly string[]): Promise<void> {
    const next = new Set([...(this.tags ?? []), ...added]);
    for (const tag of removed) next.delete(tag);
    await this.update([...next]);
  }

  async update(tags: readonly string[]): Promise<void> {
    const wanted = [...new Set(tags)].sort();
    const current = this.tags;
    if (current && current.length === wanted.length && current.join('\n') === wanted.join('\n')) return;
    this.tags = wanted;
    this.inAgent = true;
    this.history.push([...wanted]);
  }

  async reassert(): Promise<boolean> {
    if (this.tags === undefined || this.inAgent) return false;
    this.inAgent = true;
    this.reassertions += 1;
    this.history.push([...this.tags]);
    return true;
  }

  async deregister(): Promise<void> {
    if (this.tags !== undefined) this.deregistrations += 1;
    this.tags = undefined;
    this.inAgent = false;
  }

  /** Drops the registration from the simulated agent behind this object's back. */
  lose(): void {
    this.inAgent = false;
  }

  /** Whether the (simulated) agent holds the registration, i.e. whether Fabio would route to it. */
  isRegistered(): boolean {
    return this.tags !== undefined && this.inAgent;
  }
}
