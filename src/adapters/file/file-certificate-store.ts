/**
 * CertificateStore in a directory: `<dir>/<hostname>/cert.pem` (0644), `key.pem` (0600) and
 * `meta.json` (version, managed_by, facts, and sha256 of both PEM files).
 *
 * - Writers (put, delete) hold a per-hostname mutex, the directory `<dir>/.<hostname>.lock` (mkdir is
 *   atomic); a lock older than LOCK_STALE_MS is taken to be left by a crashed process and broken.
 *   A writer that cannot get the lock within LOCK_WAIT_MS fails with a retryable STORE_UNAVAILABLE.
 * - Each file is written to a temporary name, fsynced and renamed into place, meta.json last; the
 *   folder is fsynced. Readers take no lock: meta.json carries the hashes of cert.pem and key.pem,
 *   so a read that straddles a write is noticed and repeated.
 * - Safe across processes on one machine (not on network file systems without atomic mkdir/rename).
 */
import { createHash, randomBytes } from 'node:crypto';
import { promises as fs, type Dirent } from 'node:fs';
import { dirname, join } from 'node:path';
import { MANAGED_BY, type CertificateData, type StoredRecord } from '../../domain/certificate.js';
import { assertStorableCertificate, storedRecordFromPem } from '../../domain/pem.js';
import { ConsulAcmeError, StoreConflictError } from '../../errors.js';
import type { CertificateStore } from '../../ports/certificate-store.js';

export const LOCK_STALE_MS = 30_000;
export const LOCK_WAIT_MS = 2_000;
const LOCK_POLL_MS = 20;
const TORN_READ_ATTEMPTS = 5;

export const CERT_FILE = 'cert.pem';
export const KEY_FILE = 'key.pem';
export const META_FILE = 'meta.json';

export interface FileCertificateStoreOptions {
  directory: string;
}

/** meta.json */
export interface FileCertificateMeta {
  version: number;
  managed_by: string;
  cert_id: string;
  hostnames: string[];
  not_before: string;
  not_after: string;
  directory_url: string;
  issuer: string;
  key_type: string;
  obtained_at: string;
  cert_sha256: string;
  key_sha256: string;
}

/** Throws unless `name` is one folder name inside the store (no separators, no `.`/`..`, no leading dot). */
export function assertSafeName(name: string, what: string): void {
  if (typeof name !== 'string' || name === '' || name.length > 255 || name.startsWith('.') || /[/\\\0]/.test(name)) {
    throw new ConsulAcmeError(
      'INVALID_HOSTNAME',
      `${what} ${JSON.stringify(name)} is not a safe file name (path separators, leading dots and empty names are refused)`,
    );
  }
}

function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

function isErrno(err: unknown, ...codes: string[]): boolean {
  return typeof err === 'object' && err !== null && codes.includes(String((err as { code?: unknown }).code));
}

function unavailable(what: string, err: unknown): ConsulAcmeError {
  if (err instanceof ConsulAcmeError) return err;
  const message = err instanceof Error ? err.message : String(err);
  if (isErrno(err, 'EACCES', 'EPERM')) {
    return new ConsulAcmeError('STORE_PERMISSION_DENIED', `${what}: permission denied (${message})`, { cause: err });
  }
  return new ConsulAcmeError('STORE_UNAVAILABLE', `${what}: ${message}`, { cause: err, retryable: true });
}

async function readOptional(path: string): Promise<string | undefined> {
  try {
    return await fs.readFile(path, 'utf8');
  } catch (err) {
    if (isErrno(err, 'ENOENT', 'ENOTDIR')) return undefined;
    throw err;
  }
}

/** Writes a file under a temporary name, fsyncs it and renames it into place. */
export async function writeFileAtomic(path: string, contents: string, mode: number): Promise<void> {
  const temporary = `${path}.tmp-${randomBytes(6).toString('hex')}`;
  const handle = await fs.open(temporary, 'wx', mode);
  try {
    await handle.writeFile(contents, 'utf8');
    await handle.chmod(mode); // the umask may have narrowed the mode given to open
    await handle.sync();
  } finally {
    await handle.close();
  }
  try {
    await fs.rename(temporary, path);
  } catch (err) {
    await fs.rm(temporary, { force: true });
    throw err;
  }
}

/** fsyncs a directory so renames inside it survive a crash (best effort where unsupported). */
export async function syncDirectory(path: string): Promise<void> {
  let handle: fs.FileHandle | undefined;
  try {
    handle = await fs.open(path, 'r');
    await handle.sync();
  } catch (err) {
    if (!isErrno(err, 'EISDIR', 'EINVAL', 'EPERM', 'EBADF')) throw err;
  } finally {
    await handle?.close();
  }
}

/** Holds `<lockPath>` (a directory) while `work` runs. */
export async function withDirectoryLock<T>(lockPath: string, what: string, work: () => Promise<T>): Promise<T> {
  try {
    await fs.mkdir(dirname(lockPath), { recursive: true });
  } catch (err) {
    throw unavailable(what, err);
  }
  const deadline = Date.now() + LOCK_WAIT_MS;
  for (;;) {
    try {
      await fs.mkdir(lockPath);
      break;
    } catch (err) {
      if (!isErrno(err, 'EEXIST')) throw unavailable(what, err);
    }
    try {
      const stat = await fs.stat(lockPath);
      if (Date.now() - stat.mtimeMs > LOCK_STALE_MS) {
        // Rename before removing, so that two processes breaking the same stale lock remove it once.
        const broken = `${lockPath}.stale-${randomBytes(6).toString('hex')}`;
        await fs.rename(lockPath, broken);
        await fs.rm(broken, { recursive: true, force: true });
        continue;
      }
    } catch (err) {
      if (isErrno(err, 'ENOENT')) continue; // released meanwhile
      throw unavailable(what, err);
    }
    if (Date.now() > deadline) {
      throw new ConsulAcmeError('STORE_UNAVAILABLE', `${what}: ${lockPath} is held by another writer`, {
        retryable: true,
      });
    }
    await new Promise((resolve) => setTimeout(resolve, LOCK_POLL_MS));
  }
  try {
    return await work();
  } finally {
    await fs.rm(lockPath, { recursive: true, force: true });
  }
}

interface FolderContents {
  meta: FileCertificateMeta | undefined;
  /** meta.json exists but is not valid JSON. */
  metaProblem: string | undefined;
  cert: string | undefined;
  key: string | undefined;
}

export class FileCertificateStore implements CertificateStore {
  readonly description: string;
  private readonly directory: string;

  constructor(options: FileCertificateStoreOptions) {
    this.directory = options.directory;
    this.description = `file:${options.directory}`;
  }

  private folder(hostname: string): string {
    assertSafeName(hostname, 'hostname');
    return join(this.directory, hostname);
  }

  private lockPath(hostname: string): string {
    return join(this.directory, `.${hostname}.lock`);
  }

  private async readFolder(folder: string): Promise<FolderContents | undefined> {
    const [metaText, cert, key] = await Promise.all([
      readOptional(join(folder, META_FILE)),
      readOptional(join(folder, CERT_FILE)),
      readOptional(join(folder, KEY_FILE)),
    ]);
    if (metaText === undefined && cert === undefined && key === undefined) return undefined;
    let meta: FileCertificateMeta | undefined;
    let metaProblem: string | undefined;
    if (metaText !== undefined) {
      try {
        meta = JSON.parse(metaText) as FileCertificateMeta;
        if (typeof meta !== 'object' || meta === null) throw new Error('not an object');
      } catch (err) {
        meta = undefined;
        metaProblem = `${join(folder, META_FILE)} is not valid JSON (${err instanceof Error ? err.message : String(err)})`;
      }
    }
    return { meta, metaProblem, cert, key };
  }

  /** The folder's contents with cert.pem and key.pem matching meta.json, retrying reads that straddled a write. */
  private async readConsistent(folder: string): Promise<FolderContents | undefined> {
    let contents: FolderContents | undefined;
    for (let attempt = 1; attempt <= TORN_READ_ATTEMPTS; attempt += 1) {
      contents = await this.readFolder(folder);
      if (contents === undefined || contents.meta === undefined || contents.meta.managed_by !== MANAGED_BY)
        return contents;
      const { meta, cert, key } = contents;
      if (
        cert !== undefined &&
        key !== undefined &&
        sha256(cert) === meta.cert_sha256 &&
        sha256(key) === meta.key_sha256
      ) {
        return contents;
      }
      await new Promise((resolve) => setTimeout(resolve, attempt * 5));
    }
    return contents;
  }

  private toRecord(hostname: string, folder: string, contents: FolderContents): StoredRecord {
    const { meta, metaProblem, cert, key } = contents;
    const where = `certificate folder ${folder}`;
    if (metaProblem !== undefined) {
      return { hostname, version: 1, managed: true, certificate: undefined, problem: metaProblem };
    }
    // A folder we did not write (no meta.json, or someone else's) still exists: version 1 at least.
    const version = meta !== undefined && Number.isInteger(meta.version) && meta.version > 0 ? meta.version : 1;
    const managed = meta?.managed_by === MANAGED_BY;
    const record = storedRecordFromPem(
      hostname,
      version,
      managed,
      { cert, key, directoryUrl: meta?.directory_url || undefined, obtainedAt: meta?.obtained_at || undefined },
      where,
    );
    if (
      record.certificate !== undefined &&
      meta !== undefined &&
      (sha256(cert ?? '') !== meta.cert_sha256 || sha256(key ?? '') !== meta.key_sha256)
    ) {
      return {
        ...record,
        certificate: undefined,
        problem: `${where}: ${CERT_FILE} or ${KEY_FILE} was changed outside consul-acme (does not match ${META_FILE})`,
      };
    }
    return record;
  }

  async get(hostname: string): Promise<StoredRecord | undefined> {
    const folder = this.folder(hostname);
    let contents: FolderContents | undefined;
    try {
      contents = await this.readConsistent(folder);
    } catch (err) {
      throw unavailable(`read ${folder}`, err);
    }
    return contents === undefined ? undefined : this.toRecord(hostname, folder, contents);
  }

  async put(certificate: CertificateData, expectedVersion: number): Promise<number> {
    const { hostname } = certificate;
    const folder = this.folder(hostname);
    assertStorableCertificate(certificate, `certificate ${hostname} in ${folder}`);
    const what = `write ${folder}`;
    const version = await withDirectoryLock(this.lockPath(hostname), what, async () => {
      try {
        const current = await this.readFolder(folder);
        const currentVersion = current === undefined ? 0 : this.toRecord(hostname, folder, current).version;
        if (currentVersion !== expectedVersion) throw new StoreConflictError(what, expectedVersion);
        if (current !== undefined && current.meta?.managed_by !== MANAGED_BY && current.metaProblem === undefined) {
          throw new ConsulAcmeError(
            'STORE_CONFLICT',
            `${what}: the folder was not written by consul-acme; refusing to overwrite it`,
          );
        }
        const next = currentVersion + 1;
        const meta: FileCertificateMeta = {
          version: next,
          managed_by: MANAGED_BY,
          cert_id: hostname,
          hostnames: certificate.hostnames,
          not_before: certificate.notBefore.toISOString(),
          not_after: certificate.notAfter.toISOString(),
          directory_url: certificate.directoryUrl,
          issuer: certificate.issuer,
          key_type: certificate.keyType,
          obtained_at: certificate.obtainedAt.toISOString(),
          cert_sha256: sha256(certificate.certPem),
          key_sha256: sha256(certificate.keyPem),
        };
        await fs.mkdir(folder, { recursive: true, mode: 0o755 });
        await writeFileAtomic(join(folder, KEY_FILE), certificate.keyPem, 0o600);
        await writeFileAtomic(join(folder, CERT_FILE), certificate.certPem, 0o644);
        await writeFileAtomic(join(folder, META_FILE), `${JSON.stringify(meta, null, 2)}\n`, 0o644);
        await syncDirectory(folder);
        return next;
      } catch (err) {
        throw unavailable(what, err);
      }
    });

    const readBack = await this.get(hostname);
    if (
      readBack === undefined ||
      readBack.version !== version ||
      readBack.certificate?.certPem !== certificate.certPem ||
      readBack.certificate.keyPem !== certificate.keyPem
    ) {
      throw new ConsulAcmeError(
        'STORE_VERIFY_FAILED',
        `${what}: version ${version} read back does not match what was written`,
        { retryable: true },
      );
    }
    return version;
  }

  async delete(hostname: string, expectedVersion: number): Promise<void> {
    const folder = this.folder(hostname);
    const what = `delete ${folder}`;
    await withDirectoryLock(this.lockPath(hostname), what, async () => {
      try {
        const current = await this.readFolder(folder);
        if (current === undefined) return;
        const record = this.toRecord(hostname, folder, current);
        if (record.version !== expectedVersion) throw new StoreConflictError(what, expectedVersion);
        if (!record.managed) {
          throw new ConsulAcmeError(
            'STORE_CONFLICT',
            `${what}: the folder was not written by consul-acme; refusing to delete it`,
          );
        }
        // Rename out of sight first, so readers see the whole record or nothing.
        const doomed = join(this.directory, `.${hostname}.deleted-${randomBytes(6).toString('hex')}`);
        await fs.rename(folder, doomed);
        await syncDirectory(this.directory);
        await fs.rm(doomed, { recursive: true, force: true });
      } catch (err) {
        throw unavailable(what, err);
      }
    });
  }

  async list(): Promise<string[]> {
    let entries: Dirent[];
    try {
      entries = await fs.readdir(this.directory, { withFileTypes: true });
    } catch (err) {
      if (isErrno(err, 'ENOENT')) return [];
      throw unavailable(`list ${this.directory}`, err);
    }
    const ids: string[] = [];
    for (const entry of entries) {
      if (!entry.isDirectory() || entry.name.startsWith('.')) continue;
      const folder = join(this.directory, entry.name);
      const hasRecord = await Promise.all(
        [CERT_FILE, META_FILE].map((file) =>
          fs.access(join(folder, file)).then(
            () => true,
            () => false,
          ),
        ),
      );
      if (hasRecord.some(Boolean)) ids.push(entry.name);
    }
    return ids.sort();
  }
}
