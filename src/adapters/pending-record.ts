/**
 * How a pending order (PendingOrder in src/domain/certificate.ts) is recorded by every
 * CertificateStore that keeps one (Vault, files, memory): snake_case fields and a `format` number,
 * so a later release can tell a record it does not understand from a damaged one. Reading is
 * strict, because a record that is wrong in any way only costs a new order, while acting on it
 * (finalizing with a key that does not fit, at another CA) would cost more.
 */
import { KEY_TYPES, type KeyType, type PendingOrder } from '../domain/certificate.js';
import { keyTypeOf, parsePrivateKey } from '../domain/pem.js';
import { ConsulAcmeError } from '../errors.js';
import { RECORD_FORMATS } from '../domain/record-format.js';

/** The format this release writes and the only one it reads (a newer one is left alone: `newerFormat`). */
export const PENDING_FORMAT = RECORD_FORMATS.pending;

/** The stored fields of a pending order. `key_pem` is a secret. */
export interface PendingFields {
  format: typeof PENDING_FORMAT;
  hostname: string;
  hostnames: string[];
  directory_url: string;
  order_url: string;
  key_pem: string;
  key_type: KeyType;
  created_at: string;
}

/**
 * The outcome of reading a stored pending order. `newerFormat` is set when a newer release wrote
 * it: the caller must leave it alone and must not order for the name (FORMAT_NEWER).
 */
export type PendingParse = { ok: true; pending: PendingOrder } | { ok: false; problem: string; newerFormat?: number };

export function pendingToFields(pending: PendingOrder): PendingFields {
  return {
    format: PENDING_FORMAT,
    hostname: pending.hostname,
    hostnames: [...pending.hostnames],
    directory_url: pending.directoryUrl,
    order_url: pending.orderUrl,
    key_pem: pending.keyPem,
    key_type: pending.keyType,
    created_at: pending.createdAt instanceof Date ? pending.createdAt.toISOString() : String(pending.createdAt),
  };
}

function isHttpUrl(value: string): boolean {
  try {
    const url = new URL(value);
    return url.protocol === 'https:' || url.protocol === 'http:';
  } catch {
    return false;
  }
}

/**
 * Reads stored fields as the pending order of `hostname`. Never throws; a problem names the field
 * and never quotes the key.
 */
export function pendingFromFields(fields: unknown, hostname: string): PendingParse {
  const fail = (problem: string): PendingParse => ({ ok: false, problem });
  if (typeof fields !== 'object' || fields === null || Array.isArray(fields)) return fail('is not an object');
  const f = fields as Record<string, unknown>;
  if (f.format !== PENDING_FORMAT) {
    if (typeof f.format === 'number' && Number.isInteger(f.format) && f.format > PENDING_FORMAT)
      return {
        ok: false,
        problem: `has format ${f.format}, written by a newer release (this one reads format ${PENDING_FORMAT})`,
        newerFormat: f.format,
      };
    return typeof f.format === 'number'
      ? fail(`has format ${f.format}, which this release does not read (it reads format ${PENDING_FORMAT})`)
      : fail('has no format number');
  }
  const text = (name: string): string | undefined => {
    const value = f[name];
    return typeof value === 'string' && value !== '' ? value : undefined;
  };
  const missing = ['hostname', 'directory_url', 'order_url', 'key_pem', 'key_type', 'created_at'].filter(
    (name) => text(name) === undefined,
  );
  if (missing.length > 0) return fail(`has no ${missing.join(', ')} field`);
  if (f.hostname !== hostname) return fail(`is for ${JSON.stringify(f.hostname)}, not ${hostname}`);
  const hostnames = f.hostnames;
  if (
    !Array.isArray(hostnames) ||
    hostnames.length === 0 ||
    !hostnames.every((name) => typeof name === 'string' && name !== '')
  ) {
    return fail('has no hostnames list');
  }
  if (hostnames[0] !== hostname) return fail(`lists ${JSON.stringify(hostnames[0])} first, not ${hostname}`);
  const directoryUrl = text('directory_url') ?? '';
  const orderUrl = text('order_url') ?? '';
  if (!isHttpUrl(directoryUrl)) return fail('has a directory_url that is not an http(s) URL');
  if (!isHttpUrl(orderUrl)) return fail('has an order_url that is not an http(s) URL');
  const keyType = text('key_type') as KeyType;
  if (!(KEY_TYPES as readonly string[]).includes(keyType)) return fail(`has an unknown key_type "${keyType}"`);
  const keyPem = text('key_pem') ?? '';
  let actualKeyType: KeyType | undefined;
  try {
    actualKeyType = keyTypeOf(parsePrivateKey(keyPem));
  } catch {
    return fail('has a key_pem that is not a PEM private key');
  }
  if (actualKeyType !== keyType) return fail(`has a key_pem that is not a ${keyType} key`);
  const createdAt = new Date(text('created_at') ?? '');
  if (Number.isNaN(createdAt.getTime())) return fail('has a created_at that is not a date');
  return {
    ok: true,
    pending: {
      hostname,
      hostnames: [...(hostnames as string[])],
      directoryUrl,
      orderUrl,
      keyPem,
      keyType,
      createdAt,
    },
  };
}

/**
 * The fields to store for `pending`, after checking that they read back as the same order; throws
 * INTERNAL (not retryable) otherwise, so nothing unreadable is ever stored.
 */
export function storablePendingFields(pending: PendingOrder, where: string): PendingFields {
  const fields = pendingToFields(pending);
  const parsed = pendingFromFields(fields, pending.hostname);
  if (!parsed.ok) {
    throw new ConsulAcmeError('INTERNAL', `refusing to store the pending order ${where}: it ${parsed.problem}`, {
      retryable: false,
    });
  }
  return fields;
}
