/**
 * Per-certificate attempt state as JSON in Consul KV at `<prefix><hostname>`, shared by every
 * instance, so that a restart or another instance respects a failing name's backoff. `list()`
 * reads the key names only (`?keys`), never the values. The key's flags carry the value's format
 * (domain/record-format.ts): a value a newer release wrote is neither read nor overwritten here;
 * `get`, `put` and `delete` reject with FORMAT_NEWER instead.
 */
import type { CertificateState, CertificateStateStore } from '../../ports/certificate-state-store.js';
import { classifyConsulError, consulErrorStatus, type Consul } from './consul-client.js';
import { kvDelete, kvGet, kvPut, type KvEntry } from './consul-kv.js';
import { RECORD_FORMATS, kvFormatOf, newerFormatError } from '../../domain/record-format.js';

interface StoredState {
  consecutive_failures: number;
  last_attempt_at?: string;
  last_error?: string;
  next_attempt_at?: string;
}

function date(value: unknown): Date | undefined {
  if (typeof value !== 'string') return undefined;
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? undefined : d;
}

export class ConsulCertificateStateStore implements CertificateStateStore {
  private readonly prefix: string;

  constructor(private readonly opts: { consul: Consul; prefix: string }) {
    this.prefix = opts.prefix.endsWith('/') ? opts.prefix : `${opts.prefix}/`;
  }

  /** Throws FORMAT_NEWER when a newer release wrote `entry`. */
  private refuseNewer(key: string, entry: KvEntry | undefined): void {
    const format = entry === undefined ? undefined : kvFormatOf(entry.flags);
    if (format?.kind === 'newer')
      throw newerFormatError(`the backoff state ${key}`, format.format, RECORD_FORMATS.consulKv);
  }

  async get(hostname: string): Promise<CertificateState | undefined> {
    const entry = await kvGet(this.opts.consul, this.prefix + hostname);
    if (!entry) return undefined;
    this.refuseNewer(this.prefix + hostname, entry);
    let parsed: unknown;
    try {
      parsed = JSON.parse(entry.value);
    } catch {
      return undefined;
    }
    if (parsed === null || typeof parsed !== 'object') return undefined;
    const fields = parsed as Partial<StoredState>;
    if (typeof fields.consecutive_failures !== 'number') return undefined;
    return {
      hostname,
      consecutiveFailures: fields.consecutive_failures,
      lastAttemptAt: date(fields.last_attempt_at),
      lastError: typeof fields.last_error === 'string' ? fields.last_error : undefined,
      nextAttemptAt: date(fields.next_attempt_at),
    };
  }

  async put(state: CertificateState): Promise<void> {
    const stored: StoredState = {
      consecutive_failures: state.consecutiveFailures,
      last_attempt_at: state.lastAttemptAt?.toISOString(),
      last_error: state.lastError,
      next_attempt_at: state.nextAttemptAt?.toISOString(),
    };
    const key = this.prefix + state.hostname;
    this.refuseNewer(key, await kvGet(this.opts.consul, key));
    await kvPut(this.opts.consul, key, JSON.stringify(stored), { flags: RECORD_FORMATS.consulKv });
  }

  async delete(hostname: string): Promise<void> {
    const key = this.prefix + hostname;
    this.refuseNewer(key, await kvGet(this.opts.consul, key));
    await kvDelete(this.opts.consul, key);
  }

  async list(): Promise<string[]> {
    let keys: unknown;
    try {
      keys = await this.opts.consul.kv.keys({ key: this.prefix });
    } catch (err) {
      // A missing folder answers 404, which the package reports as an error.
      if (consulErrorStatus(err) === 404) return [];
      throw classifyConsulError(err, `kv keys ${this.prefix}`);
    }
    if (!Array.isArray(keys)) return [];
    return keys
      .filter((k): k is string => typeof k === 'string' && k.startsWith(this.prefix))
      .map((k) => k.slice(this.prefix.length))
      .filter((hostname) => hostname !== '' && !hostname.includes('/'))
      .sort();
  }
}
