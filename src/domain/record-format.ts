/**
 * Format numbers of what consul-acme stores, so that two releases running side by side (a rolling
 * upgrade) never misread each other's records. Every record and Consul KV value we write says
 * which format wrote it; a release that finds a newer format than it knows leaves the record
 * alone, reports it, and does not order for its name (docs/operations.md, "Upgrading").
 *
 * - Vault certificate secrets, file `meta.json`, account records: a `format` field. A record
 *   without one was written before format numbers existed, which is format 1.
 * - Pending orders: the `format` field they always had (src/adapters/pending-record.ts).
 * - Consul KV values (backoff state, budget ledger, locks): the key's `flags` (Consul keeps a
 *   64-bit number per key for its clients, docs/protocols.md §1.6), so that the value itself stays
 *   what earlier releases read; flags 0 (never set) is format 1.
 * - Challenge tokens carry none: the value is the key authorization the CA fetches byte for byte,
 *   and their flags already hold the time they were put (for the clean-up of leftovers).
 */
import { ConsulAcmeError } from '../errors.js';

/** What this release writes, per kind of record. */
export const RECORD_FORMATS = {
  certificate: 1,
  pending: 1,
  account: 1,
  consulKv: 1,
} as const;

export type FormatReading =
  { kind: 'known'; format: number } | { kind: 'newer'; format: number } | { kind: 'invalid'; problem: string };

/**
 * Reads a `format` field written as a number or as a string of digits (string-only layouts, such
 * as Fabio's certificate secret). Absent means 1, the format of records written before format
 * numbers existed.
 */
export function readFormat(value: unknown, known: number): FormatReading {
  if (value === undefined || value === null || value === '') return { kind: 'known', format: 1 };
  const format = typeof value === 'string' && /^\d+$/.test(value) ? Number(value) : value;
  if (typeof format !== 'number' || !Number.isInteger(format) || format < 1)
    return { kind: 'invalid', problem: `has a format field that is not a format number (${JSON.stringify(value)})` };
  return format > known ? { kind: 'newer', format } : { kind: 'known', format };
}

/** The format of a Consul KV value from its key's flags (0: written without flags, format 1). */
export function kvFormatOf(flags: number): FormatReading {
  return readFormat(flags === 0 ? undefined : flags, RECORD_FORMATS.consulKv);
}

/** FORMAT_NEWER: `what` was written by a newer release in a format this one does not read. */
export function newerFormatError(what: string, format: number, known: number): ConsulAcmeError {
  return new ConsulAcmeError(
    'FORMAT_NEWER',
    `${what} was written in format ${format} by a newer release (this one reads format ${known} and below); it is left alone and nothing is ordered for it; an instance of the newer release handles it`,
    { retryable: true },
  );
}
