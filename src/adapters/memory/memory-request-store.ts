import type { OperatorRequest, StoredOperatorRequest } from '../../domain/request.js';
import type { RequestStore } from '../../ports/request-store.js';
import { requestFromText, requestToText } from '../request-record.js';

/**
 * RequestStore for one process: the same JSON text as Consul KV (src/adapters/request-record.ts)
 * under a version counter, so requests round-trip exactly as there. Test hook: `plant`.
 */
export class MemoryRequestStore implements RequestStore {
  private readonly entries = new Map<string, { text: string; version: number }>();
  private lastVersion = 0;

  private read(hostname: string): StoredOperatorRequest | undefined {
    const entry = this.entries.get(hostname);
    if (entry === undefined) return undefined;
    const parsed = requestFromText(entry.text, hostname);
    return parsed.ok ? { ...parsed.request, version: entry.version } : undefined;
  }

  async get(hostname: string): Promise<StoredOperatorRequest | undefined> {
    return this.read(hostname);
  }

  async put(request: OperatorRequest, expectedVersion: number): Promise<number | undefined> {
    const current = this.read(request.hostname)?.version ?? 0;
    if (current !== expectedVersion) return undefined;
    const version = ++this.lastVersion;
    this.entries.set(request.hostname, { text: requestToText(request), version });
    return version;
  }

  async delete(hostname: string, version: number): Promise<boolean> {
    const entry = this.entries.get(hostname);
    if (entry === undefined) return true;
    if (entry.version !== version) return false;
    this.entries.delete(hostname);
    return true;
  }

  async list(): Promise<StoredOperatorRequest[]> {
    return [...this.entries.keys()].sort().flatMap((hostname) => {
      const request = this.read(hostname);
      return request === undefined ? [] : [request];
    });
  }

  /** Stores `text` as the request of `hostname` as it is (an older or newer release, a damaged value). */
  plant(hostname: string, text: string): void {
    this.entries.set(hostname, { text, version: ++this.lastVersion });
  }
}
