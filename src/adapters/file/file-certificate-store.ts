/**
 * CertificateStore in a directory. Layout:
 *
 *   <dir>/<hostname>                       relative symlink to .versions/<hostname>/<version>
 *   <dir>/.versions/<hostname>/<version>/  cert.pem (0644), key.pem (0600), meta.json (0644)
 *   <dir>/.pending/<hostname>.json         a pending order (0600, in a 0700 folder)
 *   <dir>/.<hostname>.lock                 the writers' lock, while one writes
 *
 * meta.json holds the version, managed_by, the facts, and the sha256 of both PEM files.
 *
 * How a reader gets a consistent pair: resolve `<dir>/<hostname>` once (realpath, or open the
 * folder through the link once) and read cert.pem and key.pem from the resolved folder. A version
 * folder never changes once the link points at it, and a write keeps the previous version folder,
 * so a reader that resolved the link just before a swap still finds whole files; one that finds a
 * file missing there was held up for more than one renewal, and resolves the link again. Reading
 * `<dir>/<hostname>/cert.pem` and then `<dir>/<hostname>/key.pem` by path can straddle a swap.
 *
 * - Writers (put, delete) hold a per-hostname mutex, the directory `<dir>/.<hostname>.lock` (mkdir is
 *   atomic); a lock older than LOCK_STALE_MS is taken to be left by a crashed process and broken.
 *   A writer that cannot get the lock within LOCK_WAIT_MS fails with a retryable STORE_UNAVAILABLE.
 * - A put writes the new version folder completely (each file fsynced, then the folder), makes a
 *   symlink to it under a temporary name and renames it over `<dir>/<hostname>` (one atomic
 *   rename), fsyncs `<dir>`, then removes the version folders older than the previous one. It reads
 *   the record back through the link and compares the raw strings (no second parse).
 * - The old layout, a real folder `<dir>/<hostname>/` with the three files, is read as it is and
 *   migrated by the next put: the folder is renamed into `.versions/<hostname>/<its version>` (it
 *   becomes the previous version) and the link renamed into its place, so the name is missing only
 *   between those two renames; `get` meanwhile reads the newest version folder, and so does it
 *   after a crash between them (the next put then puts the link back).
 * - Torn reads: meta.json carries the hashes of cert.pem and key.pem, so a read that straddled a
 *   write of the old layout, or that lost its version folder to pruning, is noticed and repeated.
 * - `delete` moves `.versions/<hostname>` out of sight, removes the link, then the versions.
 * - `list` sees the links (and old-layout folders) holding a record, and hostnames whose link is
 *   missing but whose versions are there; it checks at most LIST_CONCURRENCY entries at once.
 * - A folder another tool wrote (cert.pem and key.pem, no meta.json) is a record not written by
 *   consul-acme, version 1. `adopt` takes it over in place: under the writers' lock it writes
 *   meta.json into that same folder (atomically: a temporary file renamed), next to the files,
 *   which are not touched; the folder now reads as consul-acme's record in the old layout, and the
 *   first renewal migrates it as above. After writing it reads the folder again and, should
 *   cert.pem or key.pem have changed meanwhile (the other tool has no lock), removes its meta.json
 *   and fails with STORE_CONFLICT.
 * - Safe across processes on one machine (not on network file systems without atomic mkdir/rename).
 */
import { createHash, randomBytes } from 'node:crypto';
import { constants as fsConstants, promises as fs, type Dirent } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { MANAGED_BY, type CertificateData, type PendingOrder, type StoredRecord } from '../../domain/certificate.js';
import { adoptedCertificate, assertStorableCertificate, storedRecordFromPem } from '../../domain/pem.js';
import { RECORD_FORMATS, newerFormatError, readFormat } from '../../domain/record-format.js';
import { ConsulAcmeError, StoreConflictError } from '../../errors.js';
import { isErrno, readOptional, syncDirectory, writeFileAtomic, writeNewFile } from './atomic-files.js';
import { F, type Logger } from '../../logging.js';
import type { Adopted, AdoptionMarks, CertificateStore } from '../../ports/certificate-store.js';
import { pendingFromFields, storablePendingFields } from '../pending-record.js';

export const LOCK_STALE_MS = 30_000;
export const LOCK_WAIT_MS = 2_000;
const LOCK_POLL_MS = 20;
const TORN_READ_ATTEMPTS = 5;
/** How many entries `list` checks at once. */
export const LIST_CONCURRENCY = 8;

export const CERT_FILE = 'cert.pem';
export const KEY_FILE = 'key.pem';
export const META_FILE = 'meta.json';
/** `<dir>/.versions/<hostname>/<version>/`: the folders the hostname links point at. */
export const VERSIONS_FOLDER = '.versions';
/** `<dir>/.pending/<hostname>.json`: pending orders. */
export const PENDING_FOLDER = '.pending';

export interface FileCertificateStoreOptions {
  directory: string;
  /** Where an unreadable pending record is reported. */
  logger?: Logger;
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
  /** Only on an adopted certificate, until its first renewal. */
  adopted_at?: string;
  /** The record's format (domain/record-format.ts); absent in records written before format numbers. */
  format?: number;
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

function unavailable(what: string, err: unknown): ConsulAcmeError {
  if (err instanceof ConsulAcmeError) return err;
  const message = err instanceof Error ? err.message : String(err);
  if (isErrno(err, 'EACCES', 'EPERM')) {
    return new ConsulAcmeError('STORE_PERMISSION_DENIED', `${what}: permission denied (${message})`, { cause: err });
  }
  return new ConsulAcmeError('STORE_UNAVAILABLE', `${what}: ${message}`, { cause: err, retryable: true });
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

/** The path with symlinks resolved, or undefined when it (or the target of its link) does not exist. */
async function realpathOptional(path: string): Promise<string | undefined> {
  try {
    return await fs.realpath(path);
  } catch (err) {
    if (isErrno(err, 'ENOENT', 'ENOTDIR')) return undefined;
    throw err;
  }
}

async function lstatOptional(path: string): Promise<import('node:fs').Stats | undefined> {
  try {
    return await fs.lstat(path);
  } catch (err) {
    if (isErrno(err, 'ENOENT', 'ENOTDIR')) return undefined;
    throw err;
  }
}

async function readdirOptional(path: string): Promise<string[]> {
  try {
    return await fs.readdir(path);
  } catch (err) {
    if (isErrno(err, 'ENOENT', 'ENOTDIR')) return [];
    throw err;
  }
}

/** Runs `work` over `items` with at most `limit` at once; results in the order of `items`. */
async function mapLimit<T, R>(items: readonly T[], limit: number, work: (item: T) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const runners = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const index = next;
      next += 1;
      results[index] = await work(items[index] as T);
    }
  });
  await Promise.all(runners);
  return results;
}

function pause(attempt: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, attempt * 5));
}

interface FolderContents {
  meta: FileCertificateMeta | undefined;
  /** meta.json exists but is not valid JSON. */
  metaProblem: string | undefined;
  cert: string | undefined;
  key: string | undefined;
}

/** The record as read: the folder it came from and whether cert.pem and key.pem match meta.json. */
interface CurrentRecord {
  folder: string;
  contents: FolderContents;
  /** Written by consul-acme and whole: both PEM files have the hashes meta.json names. */
  whole: boolean;
}

function isManaged(contents: FolderContents): boolean {
  return contents.meta?.managed_by === MANAGED_BY;
}

function isWhole(contents: FolderContents): boolean {
  const { meta, cert, key } = contents;
  return (
    meta !== undefined &&
    isManaged(contents) &&
    cert !== undefined &&
    key !== undefined &&
    sha256(cert) === meta.cert_sha256 &&
    sha256(key) === meta.key_sha256
  );
}

/** The version a folder's contents stand for; a folder we did not write still exists: version 1 at least. */
function versionOf(contents: FolderContents): number {
  const version = contents.meta?.version;
  return contents.metaProblem === undefined && Number.isInteger(version) && (version as number) > 0
    ? (version as number)
    : 1;
}

/** meta.json for `certificate` as version `version`. */
function metaTextOf(certificate: CertificateData, version: number): string {
  const meta: FileCertificateMeta = {
    version,
    managed_by: MANAGED_BY,
    cert_id: certificate.hostname,
    hostnames: certificate.hostnames,
    not_before: certificate.notBefore.toISOString(),
    not_after: certificate.notAfter.toISOString(),
    directory_url: certificate.directoryUrl,
    issuer: certificate.issuer,
    key_type: certificate.keyType,
    obtained_at: certificate.obtainedAt.toISOString(),
    cert_sha256: sha256(certificate.certPem),
    key_sha256: sha256(certificate.keyPem),
    format: RECORD_FORMATS.certificate,
    ...(certificate.adoptedAt === undefined ? {} : { adopted_at: certificate.adoptedAt.toISOString() }),
  };
  return `${JSON.stringify(meta, null, 2)}\n`;
}

export class FileCertificateStore implements CertificateStore {
  readonly description: string;
  private readonly directory: string;
  private readonly logger: Logger | undefined;

  constructor(options: FileCertificateStoreOptions) {
    this.directory = options.directory;
    this.logger = options.logger;
    this.description = `file:${options.directory}`;
  }

  /** `<dir>/<hostname>`: the link (or, in the old layout, the folder). */
  private namePath(hostname: string): string {
    assertSafeName(hostname, 'hostname');
    return join(this.directory, hostname);
  }

  private versionsPath(hostname: string): string {
    return join(this.directory, VERSIONS_FOLDER, hostname);
  }

  private lockPath(hostname: string): string {
    return join(this.directory, `.${hostname}.lock`);
  }

  private pendingFolder(): string {
    return join(this.directory, PENDING_FOLDER);
  }

  private pendingFile(hostname: string): string {
    assertSafeName(hostname, 'hostname');
    return join(this.pendingFolder(), `${hostname}.json`);
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

  /**
   * The newest version folder holding a meta.json, for a name that does not resolve: the moment
   * between the two renames of a migration, or after a crash there.
   */
  private async newestVersionFolder(hostname: string): Promise<string | undefined> {
    const versions = (await readdirOptional(this.versionsPath(hostname)))
      .filter((name) => /^[1-9]\d*$/.test(name))
      .map(Number)
      .sort((a, b) => b - a);
    for (const version of versions) {
      const folder = join(this.versionsPath(hostname), String(version));
      if ((await readOptional(join(folder, META_FILE))) !== undefined) return folder;
    }
    return undefined;
  }

  /** The folder `<dir>/<hostname>` stands for right now, resolved; undefined when there is none. */
  private async resolve(hostname: string): Promise<string | undefined> {
    return (await realpathOptional(this.namePath(hostname))) ?? (await this.newestVersionFolder(hostname));
  }

  /** The current record, read from one resolved folder, retrying reads that straddled a write. */
  private async readCurrent(hostname: string): Promise<CurrentRecord | undefined> {
    let last: CurrentRecord | undefined;
    for (let attempt = 1; attempt <= TORN_READ_ATTEMPTS; attempt += 1) {
      const folder = await this.resolve(hostname);
      if (folder === undefined) return undefined;
      const contents = await this.readFolder(folder);
      if (contents !== undefined) {
        last = { folder, contents, whole: isWhole(contents) };
        // Whole, or not ours (nothing to check it against): done.
        if (last.whole || !isManaged(contents)) return last;
      } else if ((await this.resolve(hostname)) === folder) {
        return undefined; // an empty folder: nothing stored
      }
      // The version folder was pruned after we resolved it, or an old-layout write is under way.
      if (attempt < TORN_READ_ATTEMPTS) await pause(attempt);
    }
    return last;
  }

  private toRecord(hostname: string, current: CurrentRecord): StoredRecord {
    const { contents, whole } = current;
    const { meta, metaProblem, cert, key } = contents;
    const where = `certificate folder ${join(this.directory, hostname)}`;
    if (metaProblem !== undefined) {
      return { hostname, version: 1, managed: true, certificate: undefined, problem: metaProblem };
    }
    const record = storedRecordFromPem(
      hostname,
      versionOf(contents),
      isManaged(contents),
      {
        cert,
        key,
        directoryUrl: meta?.directory_url || undefined,
        obtainedAt: meta?.obtained_at || undefined,
        adoptedAt: meta?.adopted_at || undefined,
        format: meta?.format,
      },
      where,
    );
    if (record.certificate !== undefined && !whole) {
      return {
        ...record,
        certificate: undefined,
        problem: `${where}: ${CERT_FILE} or ${KEY_FILE} was changed outside consul-acme (does not match ${META_FILE})`,
      };
    }
    return record;
  }

  async get(hostname: string): Promise<StoredRecord | undefined> {
    const name = this.namePath(hostname);
    let current: CurrentRecord | undefined;
    try {
      current = await this.readCurrent(hostname);
    } catch (err) {
      throw unavailable(`read ${name}`, err);
    }
    return current === undefined ? undefined : this.toRecord(hostname, current);
  }

  async put(certificate: CertificateData, expectedVersion: number): Promise<number> {
    const { hostname } = certificate;
    const name = this.namePath(hostname);
    assertStorableCertificate(certificate, `certificate ${hostname} in ${name}`);
    const what = `write ${name}`;
    return withDirectoryLock(this.lockPath(hostname), what, async () => {
      try {
        const existing = await lstatOptional(name);
        if (existing !== undefined && !existing.isSymbolicLink() && !existing.isDirectory()) {
          throw new ConsulAcmeError(
            'STORE_CONFLICT',
            `${what}: ${name} is a file not written by consul-acme; refusing to replace it`,
          );
        }
        const current = await this.readCurrent(hostname);
        const currentVersion = current === undefined ? 0 : versionOf(current.contents);
        if (currentVersion !== expectedVersion) throw new StoreConflictError(what, expectedVersion);
        if (current !== undefined && !isManaged(current.contents) && current.contents.metaProblem === undefined) {
          throw new ConsulAcmeError(
            'STORE_CONFLICT',
            `${what}: the folder was not written by consul-acme; refusing to overwrite it`,
          );
        }
        const format = readFormat(current?.contents.meta?.format, RECORD_FORMATS.certificate);
        if (format.kind === 'newer') throw newerFormatError(what, format.format, RECORD_FORMATS.certificate);
        const next = currentVersion + 1;
        const metaText = metaTextOf(certificate, next);

        // 1. The new version folder, complete and durable before anything points at it.
        const versions = this.versionsPath(hostname);
        const createdVersions = await fs.mkdir(versions, { recursive: true, mode: 0o755 });
        const folder = join(versions, String(next));
        await fs.rm(folder, { recursive: true, force: true }); // left by a writer that crashed
        try {
          await fs.mkdir(folder, { mode: 0o755 });
          await writeNewFile(join(folder, KEY_FILE), certificate.keyPem, 0o600);
          await writeNewFile(join(folder, CERT_FILE), certificate.certPem, 0o644);
          await writeNewFile(join(folder, META_FILE), metaText, 0o644);
          await syncDirectory(folder);
          await syncDirectory(versions);
          if (createdVersions !== undefined) await syncDirectory(dirname(versions));
        } catch (err) {
          await fs.rm(folder, { recursive: true, force: true }); // nothing points at it yet
          throw err;
        }

        // 2. Swap the link. The old layout's folder first moves aside as the previous version.
        let previous: string | undefined;
        if (existing?.isSymbolicLink()) {
          const target = await fs.readlink(name);
          if (dirname(join(this.directory, target)) === versions) previous = basename(target);
        } else if (existing?.isDirectory()) {
          previous = String(currentVersion);
          const moved = join(versions, previous);
          await fs.rm(moved, { recursive: true, force: true });
          await fs.rename(name, moved); // from here until the next rename the name is missing
        } else if (current !== undefined) {
          previous = basename(current.folder); // the newest version folder, found without a link
        }
        const temporaryLink = join(this.directory, `.${hostname}.link-${randomBytes(6).toString('hex')}`);
        await fs.symlink(join(VERSIONS_FOLDER, hostname, String(next)), temporaryLink);
        try {
          await fs.rename(temporaryLink, name);
        } catch (err) {
          await fs.rm(temporaryLink, { force: true });
          throw err;
        }
        await syncDirectory(this.directory);

        // 3. Keep the previous version for readers that resolved the old link; drop the older ones.
        for (const entry of await readdirOptional(versions)) {
          if (entry !== String(next) && entry !== previous) {
            await fs.rm(join(versions, entry), { recursive: true, force: true });
          }
        }

        // 4. Read back through the link, comparing the strings written (no second parse).
        const resolved = await realpathOptional(name);
        const readBack = resolved === undefined ? undefined : await this.readFolder(resolved);
        if (
          resolved !== (await fs.realpath(folder)) ||
          readBack === undefined ||
          readBack.cert !== certificate.certPem ||
          readBack.key !== certificate.keyPem ||
          readBack.meta?.version !== next
        ) {
          throw new ConsulAcmeError(
            'STORE_VERIFY_FAILED',
            `${what}: version ${next} read back does not match what was written`,
            { retryable: true },
          );
        }
        return next;
      } catch (err) {
        throw unavailable(what, err);
      }
    });
  }

  async adopt(hostname: string, expectedVersion: number, marks: AdoptionMarks): Promise<Adopted> {
    const name = this.namePath(hostname);
    const what = `adopt ${name}`;
    return withDirectoryLock(this.lockPath(hostname), what, async () => {
      try {
        const current = await this.readCurrent(hostname);
        if (current === undefined || versionOf(current.contents) !== expectedVersion) {
          throw new StoreConflictError(what, expectedVersion);
        }
        const { contents, folder } = current;
        if (isManaged(contents) || contents.metaProblem !== undefined) {
          throw new ConsulAcmeError('STORE_CONFLICT', `${what}: the folder is consul-acme's already`);
        }
        const certificate = adoptedCertificate(
          hostname,
          { certPem: contents.cert, keyPem: contents.key },
          marks,
          `certificate folder ${name}`,
        );
        const next = expectedVersion + 1;
        // In place, beside the files another tool wrote: cert.pem and key.pem are never touched.
        const metaPath = join(folder, META_FILE);
        await writeFileAtomic(metaPath, metaTextOf(certificate, next), 0o644);
        await syncDirectory(folder);
        const readBack = await this.readFolder(folder);
        if (
          readBack === undefined ||
          !isWhole(readBack) ||
          readBack.cert !== certificate.certPem ||
          readBack.key !== certificate.keyPem
        ) {
          await fs.rm(metaPath, { force: true });
          throw new ConsulAcmeError(
            'STORE_CONFLICT',
            `${what}: ${CERT_FILE} or ${KEY_FILE} changed while it was adopted`,
          );
        }
        return { version: next, certificate };
      } catch (err) {
        throw unavailable(what, err);
      }
    });
  }

  async delete(hostname: string, expectedVersion: number): Promise<void> {
    const name = this.namePath(hostname);
    const what = `delete ${name}`;
    await withDirectoryLock(this.lockPath(hostname), what, async () => {
      try {
        const current = await this.readCurrent(hostname);
        if (current === undefined) return;
        const record = this.toRecord(hostname, current);
        if (record.version !== expectedVersion) throw new StoreConflictError(what, expectedVersion);
        if (!record.managed) {
          throw new ConsulAcmeError(
            'STORE_CONFLICT',
            `${what}: the folder was not written by consul-acme; refusing to delete it`,
          );
        }
        if (record.newerFormat !== undefined)
          throw newerFormatError(what, record.newerFormat, RECORD_FORMATS.certificate);
        // Versions out of sight first, then the name: a reader sees the whole record or nothing.
        const doomed: string[] = [];
        const versions = this.versionsPath(hostname);
        if ((await lstatOptional(versions)) !== undefined) {
          const moved = join(this.directory, `.${hostname}.deleted-${randomBytes(6).toString('hex')}`);
          await fs.rename(versions, moved);
          doomed.push(moved);
        }
        const existing = await lstatOptional(name);
        if (existing?.isDirectory()) {
          const moved = join(this.directory, `.${hostname}.deleted-${randomBytes(6).toString('hex')}`);
          await fs.rename(name, moved);
          doomed.push(moved);
        } else if (existing !== undefined) {
          await fs.unlink(name);
        }
        await syncDirectory(this.directory);
        for (const path of doomed) await fs.rm(path, { recursive: true, force: true });
      } catch (err) {
        throw unavailable(what, err);
      }
    });
  }

  /** The directory can be read, searched and written (a directory not made yet is an empty store). */
  async probe(): Promise<void> {
    try {
      await fs.access(this.directory, fsConstants.R_OK | fsConstants.W_OK | fsConstants.X_OK);
    } catch (err) {
      if (isErrno(err, 'ENOENT')) return;
      throw unavailable(`probe ${this.directory}`, err);
    }
  }

  async list(): Promise<string[]> {
    let entries: Dirent[];
    try {
      entries = await fs.readdir(this.directory, { withFileTypes: true });
    } catch (err) {
      if (isErrno(err, 'ENOENT')) return [];
      throw unavailable(`list ${this.directory}`, err);
    }
    // A link is not isDirectory() in a Dirent (and some file systems report no type at all), so
    // every entry but a plain file is checked; dot-entries are the store's own (versions, pending, locks).
    const candidates = entries.filter((entry) => !entry.name.startsWith('.') && !entry.isFile());
    const hasRecord = await mapLimit(candidates, LIST_CONCURRENCY, async (entry) => {
      const folder = join(this.directory, entry.name);
      for (const file of [CERT_FILE, META_FILE]) {
        try {
          await fs.access(join(folder, file));
          return true;
        } catch {
          // not this one
        }
      }
      return false;
    });
    const names = candidates.filter((_, index) => hasRecord[index]).map((entry) => entry.name);
    // A hostname whose link is missing (the moment between the two renames of a migration, or a
    // crash there) or leads nowhere, but whose versions are there, is stored too: `get` reads its
    // newest version.
    const listed = new Set(names);
    let orphans: string[];
    try {
      orphans = (await readdirOptional(join(this.directory, VERSIONS_FOLDER))).filter(
        (name) => !name.startsWith('.') && !listed.has(name),
      );
    } catch (err) {
      throw unavailable(`list ${join(this.directory, VERSIONS_FOLDER)}`, err);
    }
    const orphanHasRecord = await mapLimit(
      orphans,
      LIST_CONCURRENCY,
      async (name) => (await this.newestVersionFolder(name).catch(() => undefined)) !== undefined,
    );
    names.push(...orphans.filter((_, index) => orphanHasRecord[index]));
    return names.sort();
  }

  async getPending(hostname: string): Promise<PendingOrder | undefined> {
    const file = this.pendingFile(hostname);
    let text: string | undefined;
    try {
      text = await readOptional(file);
    } catch (err) {
      throw unavailable(`read ${file}`, err);
    }
    if (text === undefined) return undefined;
    let problem = 'is empty';
    let fields: unknown;
    try {
      fields = JSON.parse(text);
    } catch (err) {
      fields = undefined;
      problem = `is not valid JSON (${err instanceof Error ? err.message : String(err)})`;
    }
    if (fields !== undefined) {
      const parsed = pendingFromFields(fields, hostname);
      if (parsed.ok) return parsed.pending;
      if (parsed.newerFormat !== undefined)
        throw newerFormatError(`the pending order ${file}`, parsed.newerFormat, RECORD_FORMATS.pending);
      problem = parsed.problem;
    }
    this.logger?.warn(
      { [F.hostname]: hostname, [F.reason]: `${file} ${problem}` },
      'pending order unreadable; ignored',
    );
    return undefined;
  }

  async putPending(pending: PendingOrder): Promise<void> {
    const file = this.pendingFile(pending.hostname);
    const fields = storablePendingFields(pending, `in ${file}`);
    const folder = this.pendingFolder();
    try {
      const created = await fs.mkdir(folder, { recursive: true, mode: 0o700 });
      await fs.chmod(folder, 0o700); // also when it existed, or the umask narrowed it further
      if (created !== undefined) await syncDirectory(this.directory);
      await writeFileAtomic(file, `${JSON.stringify(fields, null, 2)}\n`, 0o600);
      await syncDirectory(folder);
    } catch (err) {
      throw unavailable(`write ${file}`, err);
    }
  }

  async deletePending(hostname: string): Promise<void> {
    const file = this.pendingFile(hostname);
    const folder = this.pendingFolder();
    try {
      // The record, and any temporary copy a crashed write left: each holds the private key.
      const names = (await readdirOptional(folder)).filter(
        (entry) => entry === `${hostname}.json` || entry.startsWith(`${hostname}.json.tmp-`),
      );
      for (const entry of names) await fs.rm(join(folder, entry), { force: true });
      if (names.length > 0) await syncDirectory(folder);
    } catch (err) {
      throw unavailable(`delete ${file}`, err);
    }
  }

  async listPending(): Promise<string[]> {
    const folder = this.pendingFolder();
    try {
      return (await readdirOptional(folder))
        .filter((entry) => entry.endsWith('.json') && !entry.startsWith('.'))
        .map((entry) => entry.slice(0, -'.json'.length))
        .sort();
    } catch (err) {
      throw unavailable(`list ${folder}`, err);
    }
  }
}
