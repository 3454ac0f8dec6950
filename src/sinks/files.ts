/**
 * File helpers shared by the sinks that write files: every file is replaced atomically (written
 * under a temporary name, fsynced, renamed), and only when its contents change, so a re-sync that
 * finds everything in place writes nothing and wakes no file watcher.
 */
import { X509Certificate } from 'node:crypto';
import { promises as fs } from 'node:fs';
import {
  isErrno,
  readOptional,
  syncDirectory,
  TEMPORARY_FILE,
  writeFileAtomic,
} from '../adapters/file/atomic-files.js';
import { splitPemCertificates } from '../domain/pem.js';
import { ConsulAcmeError } from '../errors.js';

export { isErrno, readOptional, syncDirectory, TEMPORARY_FILE };

/** A failure to write a sink's files, as a retryable SINK_WRITE_FAILED. */
export function sinkWriteError(what: string, err: unknown): ConsulAcmeError {
  if (err instanceof ConsulAcmeError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new ConsulAcmeError('SINK_WRITE_FAILED', `${what}: ${message}`, { cause: err, retryable: true });
}

/** Replaces `path` atomically with `contents` unless it already holds exactly that; true when it wrote. */
export async function writeIfChanged(path: string, contents: string, mode: number): Promise<boolean> {
  if ((await readOptional(path)) === contents) {
    // Same bytes; still put the mode right (a key must never stay readable by others).
    const stat = await fs.stat(path);
    if ((stat.mode & 0o777) !== mode) await fs.chmod(path, mode);
    return false;
  }
  await writeFileAtomic(path, contents, mode);
  return true;
}

/** Removes a file; a missing one is not an error. */
export async function removeFile(path: string): Promise<boolean> {
  try {
    await fs.unlink(path);
    return true;
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return false;
    throw err;
  }
}

const PEM_PRIVATE_KEY = /-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z0-9 ]*PRIVATE KEY-----/g;

/** The leaf and chain as PEM blocks, one after the other with no empty line, ending in a newline. */
export function certificateChainPem(certPem: string): string {
  return `${splitPemCertificates(certPem.replace(/\r\n/g, '\n')).join('\n')}\n`;
}

/** The private key block(s) of `keyPem`, ending in a newline. */
export function privateKeyPem(keyPem: string): string {
  return `${(keyPem.replace(/\r\n/g, '\n').match(PEM_PRIVATE_KEY) ?? []).join('\n')}\n`;
}

/** The leaf certificate (the first block) of a PEM chain. */
export function leafOf(certPem: string): X509Certificate {
  const first = splitPemCertificates(certPem)[0];
  if (first === undefined) throw new ConsulAcmeError('INTERNAL', 'the certificate has no PEM block');
  return new X509Certificate(first);
}

/** The leaf's serial (upper-case hex, as HAProxy and openssl print it) and SHA-1 fingerprint (hex, no colons). */
export function leafIdentity(certPem: string): { serial: string; sha1Fingerprint: string } {
  const leaf = leafOf(certPem);
  return { serial: leaf.serialNumber.toUpperCase(), sha1Fingerprint: leaf.fingerprint.replace(/:/g, '').toUpperCase() };
}
