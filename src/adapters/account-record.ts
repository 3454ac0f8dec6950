/**
 * How an ACME account is recorded by the stores that keep it (Vault, files): its id and its
 * snake_case fields. The id also keys what is per account elsewhere (budgets in Consul KV).
 */
import { createHash } from 'node:crypto';
import { RECORD_FORMATS, newerFormatError, readFormat } from '../domain/record-format.js';
import { ConsulAcmeError } from '../errors.js';
import type { AcmeAccount } from '../ports/account-store.js';

/** The key of an account: first 16 hex digits of sha256(directoryUrl). */
export function accountId(directoryUrl: string): string {
  return createHash('sha256').update(directoryUrl).digest('hex').slice(0, 16);
}

/** The stored fields of an account (snake_case, strings only). */
export interface AccountFields {
  directory_url: string;
  account_key: string;
  account_url?: string;
  email?: string;
  created_at: string;
  /** The record's format (domain/record-format.ts), a string like every field here; absent before format numbers. */
  format?: string;
}

export function accountToFields(account: AcmeAccount): AccountFields {
  const fields: AccountFields = {
    directory_url: account.directoryUrl,
    account_key: account.accountKeyPem,
    created_at: account.createdAt.toISOString(),
    format: String(RECORD_FORMATS.account),
  };
  if (account.accountUrl !== undefined) fields.account_url = account.accountUrl;
  if (account.email !== undefined) fields.email = account.email;
  return fields;
}

/**
 * Parses stored account fields; throws when the record is unusable (a missing key cannot be
 * guessed), and FORMAT_NEWER when a newer release wrote it: this release then neither uses nor
 * replaces the account, so it places no order until an instance of that release runs.
 */
export function accountFromFields(fields: Record<string, unknown>, directoryUrl: string, where: string): AcmeAccount {
  const format = readFormat(fields.format, RECORD_FORMATS.account);
  if (format.kind === 'newer') throw newerFormatError(where, format.format, RECORD_FORMATS.account);
  if (format.kind === 'invalid')
    throw new ConsulAcmeError('INTERNAL', `${where} ${format.problem}`, { retryable: false });
  const text = (name: string): string | undefined => {
    const value = fields[name];
    return typeof value === 'string' && value !== '' ? value : undefined;
  };
  const storedUrl = text('directory_url');
  const accountKeyPem = text('account_key');
  if (storedUrl !== directoryUrl) {
    throw new ConsulAcmeError(
      'INTERNAL',
      `${where} belongs to directory ${JSON.stringify(storedUrl)}, not ${directoryUrl}`,
      { retryable: false },
    );
  }
  if (accountKeyPem === undefined) {
    throw new ConsulAcmeError('INTERNAL', `${where} has no account_key field`, { retryable: false });
  }
  const createdAt = new Date(text('created_at') ?? 0);
  return {
    directoryUrl,
    accountKeyPem,
    accountUrl: text('account_url'),
    email: text('email'),
    createdAt: Number.isNaN(createdAt.getTime()) ? new Date(0) : createdAt,
  };
}
