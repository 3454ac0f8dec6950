/**
 * RequestStore in Consul KV: one key per hostname, `<prefix><hostname>` (the service passes
 * `<CONSUL_ACME_KV_PREFIX>requests/`), holding the request as JSON (src/adapters/request-record.ts).
 * The key's ModifyIndex is the request's version: writes are `?cas=` on it (0: create only),
 * deletes are `DELETE ?cas=`. `list` reads the folder once (a recursive read).
 */
import type { OperatorRequest, StoredOperatorRequest } from '../../domain/request.js';
import { F, type Logger } from '../../logging.js';
import type { RequestStore } from '../../ports/request-store.js';
import { requestFromText, requestToText } from '../request-record.js';
import type { Consul } from './consul-client.js';
import { kvDeleteIfUnchanged, kvGet, kvList, kvPut, type KvEntry } from './consul-kv.js';

export interface ConsulRequestStoreOptions {
  consul: Consul;
  /** The folder, ending in `/`. */
  prefix: string;
  /** Where an unreadable request is reported. */
  logger?: Logger;
}

export class ConsulRequestStore implements RequestStore {
  private readonly prefix: string;

  constructor(private readonly opts: ConsulRequestStoreOptions) {
    this.prefix = opts.prefix.endsWith('/') ? opts.prefix : `${opts.prefix}/`;
  }

  private read(hostname: string, entry: KvEntry): StoredOperatorRequest | undefined {
    const parsed = requestFromText(entry.value, hostname);
    if (parsed.ok) return { ...parsed.request, version: entry.modifyIndex };
    this.opts.logger?.warn(
      { [F.hostname]: hostname, [F.reason]: `request ${this.prefix}${hostname} ${parsed.problem}` },
      'operator request unreadable; ignored',
    );
    return undefined;
  }

  async get(hostname: string): Promise<StoredOperatorRequest | undefined> {
    const entry = await kvGet(this.opts.consul, this.prefix + hostname);
    return entry === undefined ? undefined : this.read(hostname, entry);
  }

  async put(request: OperatorRequest, expectedVersion: number): Promise<number | undefined> {
    const key = this.prefix + request.hostname;
    const text = requestToText(request);
    let cas = expectedVersion;
    if (expectedVersion === 0) {
      // An unreadable value counts as no request: replace it, on its own index.
      const entry = await kvGet(this.opts.consul, key);
      if (entry !== undefined) {
        if (requestFromText(entry.value, request.hostname).ok) return undefined;
        cas = entry.modifyIndex;
      }
    }
    if (!(await kvPut(this.opts.consul, key, text, { cas }))) return undefined;
    const written = await kvGet(this.opts.consul, key);
    return written !== undefined && written.value === text ? written.modifyIndex : undefined;
  }

  async delete(hostname: string, version: number): Promise<boolean> {
    return kvDeleteIfUnchanged(this.opts.consul, this.prefix + hostname, version);
  }

  async list(): Promise<StoredOperatorRequest[]> {
    const entries = await kvList(this.opts.consul, this.prefix);
    const requests: StoredOperatorRequest[] = [];
    for (const [key, entry] of entries) {
      const hostname = key.slice(this.prefix.length);
      if (hostname === '' || hostname.includes('/')) continue;
      const request = this.read(hostname, entry);
      if (request !== undefined) requests.push(request);
    }
    return requests.sort((a, b) => (a.hostname < b.hostname ? -1 : a.hostname > b.hostname ? 1 : 0));
  }
}
