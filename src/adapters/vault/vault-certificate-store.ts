/**
 * CertificateStore on Vault KV v2, in the layout Fabio's Vault certificate source reads
 * (docs/protocols.md §4.1): one secret per hostname at `<mount>/data/<prefix>/<hostname>` whose
 * `cert` (leaf + chain PEM) and `key` (private key PEM) fields Fabio pairs; the other fields are
 * ours. Writes are check-and-set (`options.cas`), so it is safe across processes.
 *
 * - A soft-deleted latest version reads as missing; `put(…, 0)` then writes with cas = that
 *   version (Vault still counts it), so a deleted certificate can be issued again.
 * - `put` and `delete` read first and refuse (STORE_CONFLICT) a secret without
 *   `managed_by: consul-acme`; `put` refuses a certificate whose key does not match.
 * - `delete` removes the metadata (all versions). KV v2 has no check-and-set on delete, so the
 *   version check before it narrows the race with a concurrent writer but cannot close it.
 * - Pending orders live at `<mount>/data/<pendingPath>/<hostname>`, outside the prefix (Fabio would
 *   try to load them; the constructor refuses a pending path inside it), in the fields of
 *   src/adapters/pending-record.ts. `putPending` reads the current version and writes with
 *   check-and-set on it, so it also works where the mount requires check-and-set; it resolves once
 *   Vault acknowledged the write. `deletePending` deletes the metadata: every version of the key.
 * - `adopt` reads the secret, refuses one that is ours already or changed version, and writes a new
 *   version with check-and-set on the one read: the same `cert` and `key` strings, the other
 *   fields it had (an exporter's own fields stay), and ours on top (`managed_by`, dates, names,
 *   `directory_url`, `adopted_at`, `format`). Fabio's next read sees the same pair; no version is
 *   ever deleted or emptied. It reads the new version back.
 * - Every secret carries `format` (domain/record-format.ts). One a newer release wrote reads with
 *   `newerFormat` set and is never replaced or deleted here (FORMAT_NEWER); a pending order of a
 *   newer format makes `getPending` reject with FORMAT_NEWER, so nothing is ordered for its name.
 * - Writes skip their first read when they can: the store remembers the version it last saw of
 *   the secrets it recently read or wrote (`seen`). `put` with the version last seen of a
 *   certificate that is ours (or absent) writes with check-and-set on it at once, and only when
 *   Vault refuses that (the secret changed since) reads and decides as above; `putPending` after
 *   `getPending` writes on the version that read found. An order so costs six requests, not eight.
 * - Each method makes at most three requests, one after another (five when a write on the version
 *   last seen is refused); nothing fans out.
 */
import { MANAGED_BY, type CertificateData, type PendingOrder, type StoredRecord } from '../../domain/certificate.js';
import { adoptedCertificate, assertStorableCertificate, storedRecordFromPem } from '../../domain/pem.js';
import { RECORD_FORMATS, newerFormatError, readFormat } from '../../domain/record-format.js';
import { ConfigError, ConsulAcmeError, StoreConflictError } from '../../errors.js';
import { F, type Logger } from '../../logging.js';
import { RecentMap } from '../../recent-map.js';
import type { Adopted, AdoptionMarks, CertificateStore } from '../../ports/certificate-store.js';
import { pendingFromFields, storablePendingFields } from '../pending-record.js';
import {
  classifyVaultError,
  kvPath,
  readKv,
  trimSlashes,
  vaultResponseOf,
  type KvReadResult,
  type VaultClient,
} from './vault-client.js';

export const DEFAULT_VAULT_MOUNT = 'secret';
export const DEFAULT_VAULT_CERT_PREFIX = 'fabio/certs';
export const DEFAULT_VAULT_PENDING_PATH = 'consul-acme/pending';
const MAX_PENDING_WRITE_ATTEMPTS = 3;

export interface VaultCertificateStoreOptions {
  client: VaultClient;
  /** KV v2 mount; default DEFAULT_VAULT_MOUNT. */
  mount?: string;
  /** Path under the mount that Fabio lists (`cert=<mount>/<prefix>`); default DEFAULT_VAULT_CERT_PREFIX. */
  prefix?: string;
  /** Path under the mount for pending orders, outside `prefix`; default DEFAULT_VAULT_PENDING_PATH. */
  pendingPath?: string;
  /** Where an unreadable pending record is reported (and debug lines of writes). */
  logger?: Logger;
}

/** The fields of one certificate secret. Fabio reads `cert` and `key`. */
export interface VaultCertificateSecret {
  cert: string;
  key: string;
  not_before: string;
  not_after: string;
  hostnames: string;
  directory_url: string;
  issuer: string;
  key_type: string;
  obtained_at: string;
  managed_by: string;
  /** Only on an adopted certificate, until its first renewal. */
  adopted_at?: string;
  /** The record's format (domain/record-format.ts), as a string like every field of this layout. */
  format: string;
}

function assertCertId(hostname: string): void {
  if (
    typeof hostname !== 'string' ||
    hostname === '' ||
    hostname === '.' ||
    hostname === '..' ||
    hostname.includes('/')
  ) {
    throw new ConsulAcmeError('INVALID_HOSTNAME', `hostname ${JSON.stringify(hostname)} cannot be a Vault secret name`);
  }
}

/** Throws FORMAT_NEWER when a newer release wrote `data`: this release neither replaces nor deletes it. */
function refuseNewerFormat(data: Record<string, unknown>, where: string): void {
  const format = readFormat(data.format, RECORD_FORMATS.certificate);
  if (format.kind === 'newer') throw newerFormatError(where, format.format, RECORD_FORMATS.certificate);
}

function stringField(data: Record<string, unknown>, name: string): string | undefined {
  const value = data[name];
  return typeof value === 'string' && value !== '' ? value : undefined;
}

/** The fields of the secret for `certificate`. */
function secretOf(certificate: CertificateData): VaultCertificateSecret {
  return {
    cert: certificate.certPem,
    key: certificate.keyPem,
    not_before: certificate.notBefore.toISOString(),
    not_after: certificate.notAfter.toISOString(),
    hostnames: certificate.hostnames.join(','),
    directory_url: certificate.directoryUrl,
    issuer: certificate.issuer,
    key_type: certificate.keyType,
    obtained_at: certificate.obtainedAt.toISOString(),
    managed_by: MANAGED_BY,
    format: String(RECORD_FORMATS.certificate),
    ...(certificate.adoptedAt === undefined ? {} : { adopted_at: certificate.adoptedAt.toISOString() }),
  };
}

/** How many secrets' versions the store remembers (the names being worked on, not every name). */
const SEEN_VERSIONS = 1_024;

export class VaultCertificateStore implements CertificateStore {
  readonly description: string;
  private readonly client: VaultClient;
  private readonly mount: string;
  private readonly prefix: string;
  private readonly pendingPath: string;
  private readonly logger: Logger | undefined;
  /**
   * The version this process last saw of each secret it recently read or wrote (0: absent), by
   * data path: certificates only when absent or ours in this format, pending records always. A
   * write sends it as its check-and-set version without reading first; Vault refuses it when the
   * secret changed since, and the write then reads and decides as before.
   */
  private readonly seen = new RecentMap<string, number>(SEEN_VERSIONS);

  constructor(options: VaultCertificateStoreOptions) {
    this.client = options.client;
    this.mount = trimSlashes(options.mount ?? DEFAULT_VAULT_MOUNT);
    this.prefix = trimSlashes(options.prefix ?? DEFAULT_VAULT_CERT_PREFIX);
    this.pendingPath = trimSlashes(options.pendingPath ?? DEFAULT_VAULT_PENDING_PATH);
    if (this.pendingPath === '' || this.pendingPath === this.prefix || this.pendingPath.startsWith(`${this.prefix}/`)) {
      throw new ConfigError([
        `the Vault pending-order path "${this.pendingPath}" must not be inside the certificate prefix "${this.prefix}" that Fabio reads`,
      ]);
    }
    this.logger = options.logger;
    this.description = `vault:${this.mount}/${this.prefix}`;
  }

  private dataPath(hostname: string): string {
    return kvPath(this.mount, 'data', this.prefix, hostname);
  }

  private metadataPath(hostname?: string): string {
    return hostname === undefined
      ? kvPath(this.mount, 'metadata', this.prefix)
      : kvPath(this.mount, 'metadata', this.prefix, hostname);
  }

  async get(hostname: string): Promise<StoredRecord | undefined> {
    assertCertId(hostname);
    const path = this.dataPath(hostname);
    const found = await readKv(this.client, path);
    this.remember(path, found);
    if (found.state !== 'present') return undefined;
    return this.toRecord(hostname, found.version, found.data, path);
  }

  /** Remembers a certificate's version when a write may replace it without reading: absent, or ours in this format. */
  private remember(path: string, found: KvReadResult): void {
    if (found.state === 'missing') this.seen.set(path, 0);
    else if (
      found.state === 'present' &&
      found.data.managed_by === MANAGED_BY &&
      readFormat(found.data.format, RECORD_FORMATS.certificate).kind !== 'newer'
    )
      this.seen.set(path, found.version);
    else this.seen.delete(path);
  }

  private toRecord(hostname: string, version: number, data: Record<string, unknown>, path: string): StoredRecord {
    return storedRecordFromPem(
      hostname,
      version,
      data.managed_by === MANAGED_BY,
      {
        cert: stringField(data, 'cert'),
        key: stringField(data, 'key'),
        directoryUrl: stringField(data, 'directory_url'),
        obtainedAt: stringField(data, 'obtained_at'),
        adoptedAt: stringField(data, 'adopted_at'),
        format: data.format,
      },
      `secret ${path}`,
    );
  }

  async put(certificate: CertificateData, expectedVersion: number): Promise<number> {
    const { hostname } = certificate;
    assertCertId(hostname);
    const path = this.dataPath(hostname);
    assertStorableCertificate(certificate, `certificate ${hostname} at ${path}`);
    const data = secretOf(certificate);

    // Last seen at the version the caller expects, ours or absent: write with check-and-set on it
    // straight away. Refused, the secret changed since; then read and decide as below.
    if (this.seen.get(path) === expectedVersion) {
      try {
        const version = await this.writeVerified(path, data, expectedVersion, expectedVersion);
        this.logger?.debug({ [F.hostname]: hostname, version }, 'certificate stored in vault');
        return version;
      } catch (err) {
        if (!(err instanceof StoreConflictError)) throw err;
        this.seen.delete(path);
      }
    }

    // Read first: to refuse a secret we did not write, and because a soft-deleted latest
    // version still counts for check-and-set (the caller saw it as missing, version 0).
    const current = await readKv(this.client, path);
    const currentVersion = current.state === 'missing' ? 0 : current.version;
    const seenVersion = current.state === 'present' ? current.version : 0;
    if (seenVersion !== expectedVersion) throw new StoreConflictError(`write ${path}`, expectedVersion);
    if (current.state === 'present' && current.data.managed_by !== MANAGED_BY) {
      throw new ConsulAcmeError(
        'STORE_CONFLICT',
        `write ${path}: the secret was not written by consul-acme; refusing to overwrite it`,
      );
    }
    if (current.state === 'present') refuseNewerFormat(current.data, `secret ${path}`);

    const version = await this.writeVerified(path, data, currentVersion, expectedVersion);
    this.logger?.debug({ [F.hostname]: hostname, version }, 'certificate stored in vault');
    return version;
  }

  async adopt(hostname: string, expectedVersion: number, marks: AdoptionMarks): Promise<Adopted> {
    assertCertId(hostname);
    const path = this.dataPath(hostname);
    const current = await readKv(this.client, path);
    if (current.state !== 'present' || current.version !== expectedVersion) {
      throw new StoreConflictError(`adopt ${path}`, expectedVersion);
    }
    if (current.data.managed_by === MANAGED_BY) {
      throw new ConsulAcmeError('STORE_CONFLICT', `adopt ${path}: the secret is consul-acme's already`);
    }
    const certificate = adoptedCertificate(
      hostname,
      { certPem: stringField(current.data, 'cert'), keyPem: stringField(current.data, 'key') },
      marks,
      `secret ${path}`,
    );
    // The fields another tool wrote stay; ours go on top; `cert` and `key` are the same strings.
    const data = { ...current.data, ...secretOf(certificate) };
    const version = await this.writeVerified(path, data, current.version, expectedVersion);
    this.logger?.debug({ [F.hostname]: hostname, version }, 'certificate adopted in vault');
    return { version, certificate };
  }

  /** Writes `data` with check-and-set on `cas`, then reads that version back and compares `cert` and `key`. */
  private async writeVerified(
    path: string,
    data: { cert: string; key: string },
    cas: number,
    expectedVersion: number,
  ): Promise<number> {
    let version: number;
    try {
      const response = await this.client.write(path, { options: { cas }, data });
      version = Number(response?.data?.version);
    } catch (err) {
      throw classifyVaultError(err, `write ${path}`, expectedVersion);
    }
    if (!Number.isInteger(version) || version <= 0) {
      throw new ConsulAcmeError('STORE_VERIFY_FAILED', `write ${path}: Vault did not report the new version`);
    }

    const readBack = await readKv(this.client, path, version);
    if (
      readBack.state !== 'present' ||
      readBack.data.cert !== data.cert ||
      readBack.data.key !== data.key ||
      readBack.version !== version
    ) {
      throw new ConsulAcmeError(
        'STORE_VERIFY_FAILED',
        `write ${path}: version ${version} read back does not match what was written`,
        {
          retryable: true,
        },
      );
    }
    this.seen.set(path, version);
    return version;
  }

  async delete(hostname: string, expectedVersion: number): Promise<void> {
    assertCertId(hostname);
    const path = this.dataPath(hostname);
    const current = await readKv(this.client, path);
    if (current.state !== 'present') return;
    if (current.version !== expectedVersion) throw new StoreConflictError(`delete ${path}`, expectedVersion);
    if (current.data.managed_by !== MANAGED_BY) {
      throw new ConsulAcmeError(
        'STORE_CONFLICT',
        `delete ${path}: the secret was not written by consul-acme; refusing to delete it`,
      );
    }
    refuseNewerFormat(current.data, `secret ${path}`);
    // KV v2 has no check-and-set on delete: the read above narrows, but cannot close, the window.
    const metadataPath = this.metadataPath(hostname);
    try {
      await this.client.delete(metadataPath);
    } catch (err) {
      this.seen.delete(path);
      throw classifyVaultError(err, `delete ${metadataPath}`);
    }
    this.seen.set(path, 0);
    this.logger?.debug({ [F.hostname]: hostname, version: expectedVersion }, 'certificate deleted from vault');
  }

  async list(): Promise<string[]> {
    return this.listKeys(this.metadataPath());
  }

  async probe(): Promise<void> {
    await this.list();
  }

  /** The secrets (not sub-folders) under a metadata folder, sorted; an empty folder answers 404. */
  private async listKeys(path: string): Promise<string[]> {
    try {
      const response = await this.client.list(path);
      const keys: unknown = response?.data?.keys;
      if (!Array.isArray(keys)) return [];
      return keys.filter((key): key is string => typeof key === 'string' && key !== '' && !key.endsWith('/')).sort();
    } catch (err) {
      if (vaultResponseOf(err)?.statusCode === 404) return [];
      throw classifyVaultError(err, `list ${path}`);
    }
  }

  private pendingDataPath(hostname: string): string {
    return kvPath(this.mount, 'data', this.pendingPath, hostname);
  }

  async getPending(hostname: string): Promise<PendingOrder | undefined> {
    assertCertId(hostname);
    const path = this.pendingDataPath(hostname);
    const found = await readKv(this.client, path);
    this.seen.set(path, found.state === 'missing' ? 0 : found.version);
    if (found.state !== 'present') return undefined;
    const parsed = pendingFromFields(found.data, hostname);
    if (parsed.ok) return parsed.pending;
    if (parsed.newerFormat !== undefined)
      throw newerFormatError(`the pending order at ${path}`, parsed.newerFormat, RECORD_FORMATS.pending);
    this.logger?.warn(
      { [F.hostname]: hostname, [F.reason]: `secret ${path} ${parsed.problem}` },
      'pending order unreadable; ignored',
    );
    return undefined;
  }

  async putPending(pending: PendingOrder): Promise<void> {
    const { hostname } = pending;
    assertCertId(hostname);
    const path = this.pendingDataPath(hostname);
    const data = storablePendingFields(pending, `at ${path}`);
    // Check-and-set on the version there, so the write also works where the mount requires it; the
    // caller holds the hostname's lock, so a conflict means a writer that lost it: write again.
    // The version last seen (getPending just read it, under the same lock) saves the read.
    let seen = this.seen.get(path);
    for (let attempt = 1; ; attempt += 1) {
      let cas = seen;
      seen = undefined;
      if (cas === undefined) {
        const current = await readKv(this.client, path);
        cas = current.state === 'missing' ? 0 : current.version;
      }
      let version: number;
      try {
        const response = await this.client.write(path, { options: { cas }, data });
        version = Number(response?.data?.version);
      } catch (err) {
        this.seen.delete(path);
        const classified = classifyVaultError(err, `write ${path}`, cas);
        if (classified instanceof StoreConflictError && attempt < MAX_PENDING_WRITE_ATTEMPTS) continue;
        throw classified;
      }
      if (!Number.isInteger(version) || version <= 0) {
        throw new ConsulAcmeError('STORE_VERIFY_FAILED', `write ${path}: Vault did not report the new version`, {
          retryable: true,
        });
      }
      this.seen.set(path, version);
      this.logger?.debug({ [F.hostname]: hostname, version }, 'pending order stored in vault');
      return;
    }
  }

  async deletePending(hostname: string): Promise<void> {
    assertCertId(hostname);
    const path = kvPath(this.mount, 'metadata', this.pendingPath, hostname);
    const dataPath = this.pendingDataPath(hostname);
    try {
      await this.client.delete(path);
    } catch (err) {
      if (vaultResponseOf(err)?.statusCode === 404) {
        this.seen.set(dataPath, 0);
        return;
      }
      this.seen.delete(dataPath);
      throw classifyVaultError(err, `delete ${path}`);
    }
    this.seen.set(dataPath, 0);
  }

  async listPending(): Promise<string[]> {
    return this.listKeys(kvPath(this.mount, 'metadata', this.pendingPath));
  }
}
