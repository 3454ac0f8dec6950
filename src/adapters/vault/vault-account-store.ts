/**
 * AccountStore on Vault KV v2: one secret per ACME directory at `<mount>/data/<path>/<id>`, id =
 * the first 16 hex digits of sha256(directoryUrl). Kept apart from the certificates Fabio lists.
 * `create` is check-and-set 0, so instances starting together end up sharing one account.
 */
import { ConfigError, ConsulAcmeError, StoreConflictError } from '../../errors.js';
import type { AccountStore, AcmeAccount } from '../../ports/account-store.js';
import { accountFromFields, accountId, accountToFields } from '../account-record.js';
import { DEFAULT_VAULT_CERT_PREFIX, DEFAULT_VAULT_MOUNT } from './vault-certificate-store.js';
import { classifyVaultError, kvPath, readKv, trimSlashes, type VaultClient } from './vault-client.js';

export const DEFAULT_VAULT_ACCOUNT_PATH = 'consul-acme/accounts';

export interface VaultAccountStoreOptions {
  client: VaultClient;
  /** KV v2 mount; default DEFAULT_VAULT_MOUNT. */
  mount?: string;
  /** Path under the mount; default DEFAULT_VAULT_ACCOUNT_PATH. */
  path?: string;
  /** Fabio's certificate prefix on the same mount (default DEFAULT_VAULT_CERT_PREFIX); `path` must not be inside it. */
  certificatePrefix?: string;
}

const MAX_UPDATE_ATTEMPTS = 3;

export class VaultAccountStore implements AccountStore {
  private readonly client: VaultClient;
  private readonly mount: string;
  private readonly path: string;

  constructor(options: VaultAccountStoreOptions) {
    this.client = options.client;
    this.mount = trimSlashes(options.mount ?? DEFAULT_VAULT_MOUNT);
    this.path = trimSlashes(options.path ?? DEFAULT_VAULT_ACCOUNT_PATH);
    const certificatePrefix = trimSlashes(options.certificatePrefix ?? DEFAULT_VAULT_CERT_PREFIX);
    if (this.path === '' || this.path === certificatePrefix || this.path.startsWith(`${certificatePrefix}/`)) {
      throw new ConfigError([
        `the Vault account path "${this.path}" must not be inside the certificate prefix "${certificatePrefix}" that Fabio reads`,
      ]);
    }
  }

  private dataPath(directoryUrl: string): string {
    return kvPath(this.mount, 'data', this.path, accountId(directoryUrl));
  }

  async get(directoryUrl: string): Promise<AcmeAccount | undefined> {
    const path = this.dataPath(directoryUrl);
    const found = await readKv(this.client, path);
    if (found.state !== 'present') return undefined;
    return accountFromFields(found.data, directoryUrl, `secret ${path}`);
  }

  async create(account: AcmeAccount): Promise<AcmeAccount> {
    const path = this.dataPath(account.directoryUrl);
    const current = await readKv(this.client, path);
    if (current.state === 'present') return accountFromFields(current.data, account.directoryUrl, `secret ${path}`);
    // A soft-deleted latest version still counts for check-and-set.
    const cas = current.state === 'deleted' ? current.version : 0;
    try {
      await this.client.write(path, { options: { cas }, data: accountToFields(account) });
    } catch (err) {
      const classified = classifyVaultError(err, `write ${path}`, cas);
      if (!(classified instanceof StoreConflictError)) throw classified;
    }
    const stored = await this.get(account.directoryUrl);
    if (stored === undefined) {
      throw new ConsulAcmeError('STORE_VERIFY_FAILED', `write ${path}: the account cannot be read back`, {
        retryable: true,
      });
    }
    return stored;
  }

  async update(account: AcmeAccount): Promise<void> {
    const path = this.dataPath(account.directoryUrl);
    // Check-and-set against what is there, so it also works on mounts with cas_required.
    for (let attempt = 1; ; attempt += 1) {
      const current = await readKv(this.client, path);
      const cas = current.state === 'missing' ? 0 : current.version;
      try {
        await this.client.write(path, { options: { cas }, data: accountToFields(account) });
        return;
      } catch (err) {
        const classified = classifyVaultError(err, `write ${path}`, cas);
        if (!(classified instanceof StoreConflictError) || attempt >= MAX_UPDATE_ATTEMPTS) throw classified;
      }
    }
  }
}
