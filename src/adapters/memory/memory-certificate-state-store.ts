import type { CertificateState, CertificateStateStore } from '../../ports/certificate-state-store.js';

/** CertificateStateStore for one process. */
export class MemoryCertificateStateStore implements CertificateStateStore {
  private readonly states = new Map<string, CertificateState>();

  async get(hostname: string): Promise<CertificateState | undefined> {
    const state = this.states.get(hostname);
    return state ? { ...state } : undefined;
  }

  async put(state: CertificateState): Promise<void> {
    this.states.set(state.hostname, { ...state });
  }

  async delete(hostname: string): Promise<void> {
    this.states.delete(hostname);
  }

  async list(): Promise<string[]> {
    return [...this.states.keys()].sort();
  }
}
