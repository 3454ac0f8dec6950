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
}

/** Reads one key. Missing → undefined. */
export async function kvGet(consul: Consul, key: string): Promise<KvEntry | undefined> {
  let item: { Value?: string | null; ModifyIndex?: number } | null | undefined;
  try {
    item = await consul.kv.get({ key });
  } catch (err) {
    throw classifyConsulError(err, `kv get ${key}`);
  }
  if (!item) return undefined;
  return { value: item.Value ?? '', modifyIndex: item.ModifyIndex ?? 0 };
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
  options: { cas?: number } = {},
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

export async function kvDelete(consul: Consul, key: string): Promise<void> {
  try {
    await consul.kv.del({ key });
  } catch (err) {
    throw classifyConsulError(err, `kv delete ${key}`);
  }
}
