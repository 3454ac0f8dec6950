/**
 * Small typed helpers over the consul package's KV calls, with errors classified in one place.
 * Missing keys read as `undefined`; writes report Consul's `true`/`false` answer.
 */
import { ConsulAcmeError } from '../../errors.js';
import { classifyConsulError, type Consul } from './consul-client.js';

export interface KvEntry {
  value: string;
  modifyIndex: number;
}

/** Reads one key. Missing → undefined. */
export async function kvGet(consul: Consul, key: string): Promise<KvEntry | undefined> {
  let item: { Value?: string | null; ModifyIndex?: number } | null | undefined;
  try {
    item = (await consul.kv.get({ key }));
  } catch (err) {
    throw classifyConsulError(err, `kv get ${key}`);
  }
  if (!item) return undefined;
  return { value: item.Value ?? '', modifyIndex: item.ModifyIndex ?? 0 };
}

/**
 * Writes one key. With `cas`, writes only if the key's ModifyIndex is still `cas` (0: only if
 * absent) and resolves whether it did. Without `cas`, a `false` answer is an error.
 */
export async function kvPut(consul: Consul, key: string, value: string, options: { cas?: number } = {}): Promise<boolean> {
  let written: unknown;
  try {
    written = await consul.kv.set(options.cas === undefined ? { key, value } : { key, value, cas: options.cas });
  } catch (err) {
    throw classifyConsulError(err, `kv put ${key}`);
  }
  if (written === true) return true;
  if (options.cas !== undefined && written === false) return false;
  throw new ConsulAcmeError('CONSUL_UNAVAILABLE', `kv put ${key}: Consul answered ${JSON.stringify(written)} instead of true`, { retryable: true });
}

export async function kvDelete(consul: Consul, key: string): Promise<void> {
  try {
    await consul.kv.del({ key });
  } catch (err) {
    throw classifyConsulError(err, `kv delete ${key}`);
  }
}
