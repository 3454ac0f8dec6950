/**
 * The file-system primitives every writer of files shares (the file store, the file account store,
 * the HAProxy and Traefik sinks): a file is written under a temporary name, fsynced and renamed
 * into place, so a reader sees the old file or the new one, never half of one; the folder is
 * fsynced so the rename survives a crash.
 */
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';

/** What a temporary file of writeFileAtomic looks like (left behind only by a crash). */
export const TEMPORARY_FILE = /\.tmp-[0-9a-f]{12}$/;

/** Whether `err` is a system error with one of `codes` (ENOENT, EEXIST, …). */
export function isErrno(err: unknown, ...codes: string[]): boolean {
  return typeof err === 'object' && err !== null && codes.includes(String((err as { code?: unknown }).code));
}

/** The file's text, or undefined when it (or a folder on its path) does not exist. */
export async function readOptional(path: string): Promise<string | undefined> {
  try {
    return await fs.readFile(path, 'utf8');
  } catch (err) {
    if (isErrno(err, 'ENOENT', 'ENOTDIR')) return undefined;
    throw err;
  }
}

/** Writes a new file (it must not exist) with `mode`, fsyncs it and closes it. */
export async function writeNewFile(path: string, contents: string, mode: number): Promise<void> {
  const handle = await fs.open(path, 'wx', mode);
  try {
    await handle.writeFile(contents, 'utf8');
    await handle.chmod(mode); // the umask may have narrowed the mode given to open
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Writes a file under a temporary name, fsyncs it and renames it into place. */
export async function writeFileAtomic(path: string, contents: string, mode: number): Promise<void> {
  const temporary = `${path}.tmp-${randomBytes(6).toString('hex')}`;
  await writeNewFile(temporary, contents, mode);
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
