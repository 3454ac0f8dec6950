import type { AccountStore, AcmeAccount } from '../../ports/account-store.js';

function copyAccount(account: AcmeAccount): AcmeAccount {
  return { ...account, createdAt: new Date(account.createdAt) };
}

/** AccountStore for one process (tests, dry runs): same contract as the Vault and file stores. */
export class MemoryAccountStore implements AccountStore {
  private readonly accounts = new Map<string, AcmeAccount>();

  async get(directoryUrl: string): Promise<AcmeAccount | undefined> {
    const account = this.accounts.get(directoryUrl);
    return account === undefined ? undefined : copyAccount(account);
  }

  async create(account: AcmeAccount): Promise<AcmeAccount> {
    const existing = this.accounts.get(account.directoryUrl);
    if (existing !== undefined) return copyAccount(existing);
    this.accounts.set(account.directoryUrl, copyAccount(account));
    return copyAccount(account);
  }

  async update(account: AcmeAccount): Promise<void> {
    this.accounts.set(account.directoryUrl, copyAccount(account));
  }

  /** Directory URLs with an account; tests use it. */
  directories(): string[] {
    return [...this.accounts.keys()].sort();
  }
}
