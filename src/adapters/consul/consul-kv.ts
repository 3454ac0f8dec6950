/**
 * Small typed helpers over the consul package's KV calls, with errors classified in one place.
 * Missing keys read as `undefined`; writes report Consul's `true`/`false` answer.
 */
import { EventEmitter } from 'node:events';
import { ConsulAcmeError } from '../../errors.js';
import { classifyConsulError, consulErrorJson, consulErrorStatus, type Consul } from './consul-client.js';

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

/** Most operations Consul takes in one transaction. */
const MAX_TRANSACTION_OPERATIONS = 64;

/**
 * Reads `keys` (missing ones are left out of the map) in one request: a transaction of `get-tree`
 * operations, which Consul answers with every key under each (docs/protocols.md §1.6) and never
 * refuses for a key that does not exist, so only the exact keys are kept. Anything else, a refusal
 * or an answer of another shape, is left to one kvGet per key, which fails as a single read fails.
 */
export async function kvGetMany(consul: Consul, keys: readonly string[]): Promise<Map<string, KvEntry>> {
  const wanted = [...new Set(keys)];
  if (wanted.length > 1 && wanted.length <= MAX_TRANSACTION_OPERATIONS) {
    const read = await readTransaction(consul, wanted);
    if (read !== undefined) return read;
  }
  const found = new Map<string, KvEntry>();
  const entries = await Promise.all(wanted.map((key) => kvGet(consul, key)));
  entries.forEach((entry, i) => {
    if (entry !== undefined) found.set(wanted[i]!, entry);
  });
  return found;
}

/** One transaction of `get-tree` operations, the entries of exactly `keys`; undefined when Consul answered anything else. */
async function readTransaction(consul: Consul, keys: readonly string[]): Promise<Map<string, KvEntry> | undefined> {
  let body: unknown;
  try {
    body = await consul.transaction.create(keys.map((key) => ({ KV: { Verb: 'get-tree', Key: key } })) as never);
  } catch {
    return undefined;
  }
  const results = (body as { Results?: unknown } | null | undefined)?.Results;
  if (!Array.isArray(results)) return undefined;
  const wanted = new Set(keys);
  const entries = new Map<string, KvEntry>();
  for (const result of results as Array<{ KV?: KvItem & { Value?: string | null } }>) {
    const item = result.KV;
    if (item === undefined || typeof item.Key !== 'string') return undefined;
    // A longer key under one of `keys` (`a/b` asked, `a/bc` given) is not one of them.
    if (!wanted.has(item.Key)) continue;
    // A transaction gives values base64-encoded, as Consul stores them.
    const value = typeof item.Value === 'string' ? Buffer.from(item.Value, 'base64').toString('utf8') : '';
    entries.set(item.Key, kvEntryOf({ ...item, Value: value }));
  }
  return entries;
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

/** One write operation of a KV transaction (docs/protocols.md §1.6). `value` is text; it is sent base64-encoded. */
export type KvWriteOp =
  | { verb: 'cas'; key: string; value: string; index: number; flags?: number }
  | { verb: 'check-session'; key: string; session: string }
  | { verb: 'delete'; key: string };

/**
 * What a transaction did: committed, with the ModifyIndex each written key has now; or refused
 * because a check failed, with each failed operation's key and Consul's words.
 */
export type KvTransactionOutcome =
  | { committed: true; modifyIndex: Map<string, number> }
  | { committed: false; failed: Array<{ key: string | undefined; what: string }> };

/**
 * Runs `ops` as one transaction (`PUT /v1/txn`): all of them or none. A refusal (409: a stale
 * index, a key that does not exist, a session check) is an outcome; any other failure rejects,
 * classified.
 */
export async function kvTransact(
  consul: Consul,
  ops: readonly KvWriteOp[],
  what: string,
): Promise<KvTransactionOutcome> {
  const body = ops.map((op) => {
    if (op.verb === 'cas') {
      const value = Buffer.from(op.value, 'utf8').toString('base64');
      return { KV: { Verb: 'cas', Key: op.key, Value: value, Index: op.index, Flags: op.flags ?? 0 } };
    }
    if (op.verb === 'check-session') return { KV: { Verb: 'check-session', Key: op.key, Session: op.session } };
    return { KV: { Verb: 'delete', Key: op.key } };
  });
  let answer: unknown;
  try {
    answer = await consul.transaction.create(body as never);
  } catch (err) {
    const errors =
      consulErrorStatus(err) === 409 ? (consulErrorJson(err) as { Errors?: unknown } | undefined)?.Errors : undefined;
    if (!Array.isArray(errors) || errors.length === 0) throw classifyConsulError(err, what);
    return {
      committed: false,
      failed: (errors as Array<{ OpIndex?: unknown; What?: unknown }>).map((e) => ({
        key: typeof e.OpIndex === 'number' ? ops[e.OpIndex]?.key : undefined,
        what: typeof e.What === 'string' ? e.What : JSON.stringify(e),
      })),
    };
  }
  const modifyIndex = new Map<string, number>();
  const results = (answer as { Results?: unknown } | null | undefined)?.Results;
  if (Array.isArray(results)) {
    for (const result of results as Array<{ KV?: KvItem }>) {
      const item = result.KV;
      if (typeof item?.Key === 'string' && typeof item.ModifyIndex === 'number')
        modifyIndex.set(item.Key, item.ModifyIndex);
    }
  }
  return { committed: true, modifyIndex };
}

export async function kvDelete(consul: Consul, key: string): Promise<void> {
  try {
    await consul.kv.del({ key });
  } catch (err) {
    throw classifyConsulError(err, `kv delete ${key}`);
  }
}
