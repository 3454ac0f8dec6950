/**
 * AccountStore in a directory: `<dir>/accounts/<id>.json` (0600), id = first 16 hex digits of
 * sha256(directoryUrl). `create` writes a complete temporary file and hard-links it to the final
 * name, which fails if the name exists: an atomic create-if-absent, safe across processes on one
 * machine. `update` writes a temporary file and renames it over the old one.
 */
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { ConsulAcmeError } from '../../errors.js';
import type { AccountStore, AcmeAccount } from '../../ports/account-store.js';
import { accountFromFields, accountId, accountToFields } from '../account-record.js';
import { isErrno, syncDirectory, writeFileAtomic } from './atomic-files.js';

export interface FileAccountStoreOptions {
  directory: string;
}

function storeError(what: string, err: unknown): ConsulAcmeError {
  if (err instanceof ConsulAcmeError) return err;
  const message = err instanceof Error ? err.message : String(err);
  if (isErrno(err, 'EACCES') || isErrno(err, 'EPERM')) {
    return new ConsulAcmeError('STORE_PERMISSION_DENIED', `${what}: permission denied (${message})`, { cause: err });
  }
  return new ConsulAcmeError('STORE_UNAVAILABLE', `${what}: ${message}`, { cause: err, retryable: true });
}

export class FileAccountStore implements AccountStore {
  private readonly folder: string;

  constructor(options: FileAccountStoreOptions) {
    this.folder = join(options.directory, 'accounts');
  }

  private file(directoryUrl: string): string {
    return join(this.folder, `${accountId(directoryUrl)}.json`);
  }

  async get(directoryUrl: string): Promise<AcmeAccount | undefined> {
    const file = this.file(directoryUrl);
    let text: string;
    try {
      text = await fs.readFile(file, 'utf8');
    } catch (err) {
      if (isErrno(err, 'ENOENT')) return undefined;
      throw storeError(`read ${file}`, err);
    }
    let fields: unknown;
    try {
      fields = JSON.parse(text);
    } catch (err) {
      throw new ConsulAcmeError('INTERNAL', `${file} is not valid JSON`, { cause: err, retryable: false });
    }
    if (typeof fields !== 'object' || fields === null) {
      throw new ConsulAcmeError('INTERNAL', `${file} does not hold an account`, { retryable: false });
    }
    return accountFromFields(fields as Record<string, unknown>, directoryUrl, file);
  }

  async create(account: AcmeAccount): Promise<AcmeAccount> {
    const file = this.file(account.directoryUrl);
    const temporary = `${file}.tmp-${randomBytes(6).toString('hex')}`;
    try {
      await fs.mkdir(this.folder, { recursive: true, mode: 0o700 });
      await writeFileAtomic(temporary, `${JSON.stringify(accountToFields(account), null, 2)}\n`, 0o600);
      try {
        await fs.link(temporary, file);
        await syncDirectory(this.folder);
      } catch (err) {
        if (!isErrno(err, 'EEXIST')) throw err;
      }
    } catch (err) {
      throw storeError(`create ${file}`, err);
    } finally {
      await fs.rm(temporary, { force: true });
    }
    const stored = await this.get(account.directoryUrl);
    if (stored === undefined) {
      throw new ConsulAcmeError('STORE_VERIFY_FAILED', `create ${file}: the account cannot be read back`, {
        retryable: true,
      });
    }
    return stored;
  }

  async update(account: AcmeAccount): Promise<void> {
    const file = this.file(account.directoryUrl);
    try {
      await fs.mkdir(this.folder, { recursive: true, mode: 0o700 });
      await writeFileAtomic(file, `${JSON.stringify(accountToFields(account), null, 2)}\n`, 0o600);
      await syncDirectory(this.folder);
    } catch (err) {
      throw storeError(`update ${file}`, err);
    }
  }
}
