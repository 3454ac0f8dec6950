/**
 * Small typed helpers over the consul package's KV calls, with errors classified in one place.
 * Missing keys read as `undefined`; writes report Consul's `true`/`false` answer.
 */
import { EventEmitter } from 'node:events';
import { ConsulAcmeError } from '../../errors.js';
import { classifyConsulError, type Consul } from './consul-client.js';

export interface KvEntry {
  value: string;
  modifyIndex: number;
  /** The 64-bit `flags` field Consul keeps for the client (0 unless written with `?flags=`). */
  flags: number;
  /** The session holding the key as a lock, if any. */
  session: string | undefined;
}

/** One entry as the consul package returns it (Value decoded to text). */
export interface KvItem {
  Key?: string;
  Value?: string | null;
  ModifyIndex?: number;
  Flags?: number;
  Session?: string;
}

export function kvEntryOf(item: KvItem): KvEntry {
  return {
    value: item.Value ?? '',
    modifyIndex: item.ModifyIndex ?? 0,
    flags: item.Flags ?? 0,
    session: typeof item.Session === 'string' && item.Session !== '' ? item.Session : undefined,
  };
}

/** Reads one key. Missing → undefined. */
export async function kvGet(consul: Consul, key: string): Promise<KvEntry | undefined> {
  let item: KvItem | null | undefined;
  try {
    item = await consul.kv.get({ key });
  } catch (err) {
    throw classifyConsulError(err, `kv get ${key}`);
  }
  if (!item) return undefined;
  return kvEntryOf(item);
}

/**
 * Reads every key under `prefix` (a recursive read: keys the token may not read are left out,
 * docs/protocols.md §1.6). A missing folder resolves an empty map.
 */
export async function kvList(consul: Consul, prefix: string): Promise<Map<string, KvEntry>> {
  let items: unknown;
  try {
    items = await consul.kv.get({ key: prefix, recurse: true });
  } catch (err) {
    throw classifyConsulError(err, `kv list ${prefix}`);
  }
  const entries = new Map<string, KvEntry>();
  if (!Array.isArray(items)) return entries;
  for (const item of items as KvItem[]) if (typeof item.Key === 'string') entries.set(item.Key, kvEntryOf(item));
  return entries;
}

/**
 * Writes one key. With `cas`, writes only if the key's ModifyIndex is still `cas` (0: only if
 * absent) and resolves whether it did. Without `cas`, a `false` answer is an error.
 *
 * The consul package resolves `undefined` for a refused CAS write, so the raw body is read
 * through `includeResponse` (docs/protocols.md §2).
 */
export async function kvPut(
  consul: Consul,
  key: string,
  value: string,
  options: { cas?: number; flags?: number } = {},
): Promise<boolean> {
  const what = options.cas === undefined ? `kv put ${key}` : `kv put ${key}?cas=${options.cas}`;
  const ctx = Object.assign(new EventEmitter(), { includeResponse: true });
  let result: unknown;
  try {
    result = await consul.kv.set({
      key,
      value,
      ctx,
      ...(options.cas === undefined ? {} : { cas: options.cas }),
      ...(options.flags === undefined ? {} : { flags: options.flags }),
    } as never);
  } catch (err) {
    throw classifyConsulError(err, what);
  }
  const body: unknown = Array.isArray(result) ? result[1] : result;
  if (body === true) return true;
  if (options.cas !== undefined && body === false) return false;
  throw new ConsulAcmeError('CONSUL_UNAVAILABLE', `${what}: Consul answered ${JSON.stringify(body)} instead of true`, {
    retryable: true,
  });
}

/**
 * Deletes `key` only if its ModifyIndex is still `modifyIndex` (`DELETE ?cas=`), and resolves
 * whether it did; a key already gone resolves true. The raw body is read as in kvPut.
 */
export async function kvDeleteIfUnchanged(consul: Consul, key: string, modifyIndex: number): Promise<boolean> {
  const what = `kv delete ${key}?cas=${modifyIndex}`;
  const ctx = Object.assign(new EventEmitter(), { includeResponse: true });
  let result: unknown;
  try {
    result = await consul.kv.del({ key, cas: modifyIndex, ctx } as never);
  } catch (err) {
    throw classifyConsulError(err, what);
  }
  const body: unknown = Array.isArray(result) ? result[1] : result;
  if (body === true || body === false) return body;
  throw new ConsulAcmeError('CONSUL_UNAVAILABLE', `${what}: Consul answered ${JSON.stringify(body)} instead of true`, {
    retryable: true,
  });
}

export async function kvDelete(consul: Consul, key: string): Promise<void> {
  try {
    await consul.kv.del({ key });
  } catch (err) {
    throw classifyConsulError(err, `kv delete ${key}`);
  }
}
