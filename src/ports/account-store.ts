/** The ACME account shared by every instance: one per directory URL. */
export interface AcmeAccount {
  directoryUrl: string;
  /** Account private key, PEM. A secret. */
  accountKeyPem: string;
  /** The account URL (kid) the CA assigned; undefined until registered. */
  accountUrl: string | undefined;
  email: string | undefined;
  createdAt: Date;
}

/**
 * Keeps ACME accounts, keyed by directory URL, beside the certificates (Vault, files, memory),
 * but never under the path Fabio reads.
 *
 * Contract (test/contract/account-store.contract.test.ts):
 * - `get` of an unknown directory resolves `undefined`.
 * - `create(account)` writes only if no account exists for that directory (check-and-set 0) and
 *   resolves the account that is stored afterwards: the caller's when it won, the existing one
 *   when another instance created it first. So two instances starting together share one account.
 * - `update(account)` overwrites the account for its directory (used to record the accountUrl).
 * - Safe across processes for Vault and files.
 */
export interface AccountStore {
  get(directoryUrl: string): Promise<AcmeAccount | undefined>;
  create(account: AcmeAccount): Promise<AcmeAccount>;
  update(account: AcmeAccount): Promise<void>;
}
