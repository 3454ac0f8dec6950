/**
 * HAProxy: one PEM file per certificate (`<directory>/<hostname>.pem`: leaf, chain, key) and a
 * crt-list that HAProxy's `bind ... crt-list <crtListPath>` reads, both replaced atomically; then,
 * when a stats socket is configured, the same state pushed live through the runtime API, so no
 * reload is needed (docs/protocols.md §8):
 *
 * - a new name:     new ssl cert, set ssl cert, commit ssl cert, add ssl crt-list
 * - a renewal:      set ssl cert, commit ssl cert
 * - a retired name: del ssl crt-list, del ssl cert
 *
 * Files first: the crt-list only ever names PEM files that exist, and a restarted HAProxy finds
 * what the runtime API was told. Every step checks what HAProxy holds first (`show ssl cert`,
 * `show ssl crt-list`), so repeating a change or a re-sync pushes nothing twice. When the socket
 * is absent or refuses, the files are written and the call fails (HAPROXY_UNREACHABLE), so the
 * runner retries the push.
 *
 * The crt-list file belongs to consul-acme: a re-sync rewrites it to exactly the stored
 * certificates, and removes the PEM files of the lines it drops (never any other file).
 */
import { promises as fs } from 'node:fs';
import { join, resolve } from 'node:path';
import { assertSafeName } from '../adapters/file/file-certificate-store.js';
import type { CertificateData } from '../domain/certificate.js';
import { ConsulAcmeError, throwIfAborted } from '../errors.js';
import { EVENTS, F, type Logger } from '../logging.js';
import type { CertificateSink, SinkChange, SinkSnapshot } from '../ports/certificate-sink.js';
import {
  certificateChainPem,
  leafIdentity,
  privateKeyPem,
  readOptional,
  removeFile,
  sinkWriteError,
  syncDirectory,
  writeIfChanged,
} from './files.js';
import { assertRuntimeArgument, type CrtListEntry, type HaproxyRuntime } from './haproxy-runtime.js';

export interface HaproxySinkOptions {
  /** Where the PEM files go; made absolute, since HAProxy knows each certificate by its path. */
  directory: string;
  /** The crt-list file, exactly as HAProxy's bind line names it (the runtime API looks it up by that path). */
  crtListPath: string;
  /** The runtime API client; undefined writes the files only. */
  runtime: HaproxyRuntime | undefined;
  logger: Logger;
}

/** A PEM file holds the private key: readable by its owner only. */
export const HAPROXY_PEM_MODE = 0o600;
const CRT_LIST_HEADER = '# Written by consul-acme: one line per certificate, replaced whole on every change.\n';

/**
 * The combined PEM HAProxy loads: leaf, chain, then the private key, no empty line (it would end a
 * runtime payload).
 */
export function haproxyPem(certificate: CertificateData): string {
  return `${certificateChainPem(certificate.certPem)}${privateKeyPem(certificate.keyPem)}`;
}

/** The certificate paths of a crt-list file (first word of each line; comments and empty lines skipped). */
export function crtListPaths(text: string): string[] {
  return text
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('#'))
    .map((line) => line.split(/\s+/)[0]!);
}

export class HaproxySink implements CertificateSink {
  readonly name = 'haproxy';
  readonly directory: string;
  readonly crtListPath: string;
  private readonly runtime: HaproxyRuntime | undefined;
  private readonly log: Logger;

  constructor(options: HaproxySinkOptions) {
    this.directory = resolve(options.directory);
    this.crtListPath = options.crtListPath;
    this.runtime = options.runtime;
    this.log = options.logger.child({ [F.component]: 'haproxy-sink' });
    assertRuntimeArgument(this.directory, 'the HAProxy certificate directory');
    assertRuntimeArgument(this.crtListPath, 'the HAProxy crt-list path');
  }

  /** Where the PEM file of `hostname` goes. */
  pemPath(hostname: string): string {
    assertSafeName(hostname, 'hostname');
    return join(this.directory, `${hostname}.pem`);
  }

  async apply(change: SinkChange, signal?: AbortSignal): Promise<void> {
    if (change.kind === 'stored') {
      const path = this.pemPath(change.certificate.hostname);
      const pem = haproxyPem(change.certificate);
      await this.writeFiles(async (paths) => {
        await writeIfChanged(path, pem, HAPROXY_PEM_MODE);
        return paths.includes(path) ? paths : [...paths, path];
      });
      throwIfAborted(signal, `haproxy: ${change.certificate.hostname}`);
      await this.pushStored(change.certificate.hostname, path, pem, undefined, signal);
    } else {
      const path = this.pemPath(change.hostname);
      await this.writeFiles(async (paths) => paths.filter((p) => p !== path));
      await this.removePem(path);
      throwIfAborted(signal, `haproxy: ${change.hostname}`);
      await this.pushRemoved(change.hostname, path, undefined, signal);
    }
  }

  async resync(snapshot: SinkSnapshot, signal?: AbortSignal): Promise<void> {
    const wanted = new Map(snapshot.certificates.map((c) => [this.pemPath(c.hostname), c]));
    const keep = new Set(snapshot.unreadable.map((h) => this.pemPath(h)));
    const pems = new Map([...wanted].map(([path, c]) => [path, haproxyPem(c)]));
    let dropped: string[] = [];
    await this.writeFiles(async (paths) => {
      for (const [path, pem] of pems) await writeIfChanged(path, pem, HAPROXY_PEM_MODE);
      dropped = paths.filter((p) => !wanted.has(p) && !keep.has(p));
      return [...wanted.keys(), ...paths.filter((p) => keep.has(p))];
    });
    // Only files our own crt-list named, and only inside our directory, are ever removed.
    for (const path of dropped) if (path.startsWith(`${this.directory}/`)) await this.removePem(path);
    if (!this.runtime) return;
    throwIfAborted(signal, 'haproxy re-sync');
    const entries = await this.runtime.crtListEntries(this.crtListPath, signal);
    for (const [path, certificate] of wanted) {
      await this.pushStored(certificate.hostname, path, pems.get(path)!, entries, signal);
    }
    const unwanted = new Set(entries.map((e) => e.path).filter((p) => !wanted.has(p) && !keep.has(p)));
    for (const path of unwanted) await this.pushRemoved(undefined, path, entries, signal);
    // Certificates in our folder that nothing uses any more (a crash between `new` and `add`, say);
    // one that something uses (a `crt` on a bind line) is not ours to remove.
    const { paths } = await this.runtime.listCertificates(signal);
    for (const path of paths) {
      if (!path.startsWith(`${this.directory}/`) || wanted.has(path) || keep.has(path) || unwanted.has(path)) continue;
      if ((await this.runtime.showCertificate(path, signal))?.status === 'Unused')
        await this.pushRemoved(undefined, path, [], signal);
    }
  }

  /** Rewrites the crt-list file with the paths `update` returns from the current ones (sorted, atomically). */
  private async writeFiles(update: (paths: string[]) => Promise<string[]>): Promise<void> {
    try {
      await fs.mkdir(this.directory, { recursive: true, mode: 0o755 });
      const current = crtListPaths((await readOptional(this.crtListPath)) ?? '');
      const next = [...new Set(await update(current))].sort();
      await writeIfChanged(this.crtListPath, `${CRT_LIST_HEADER}${next.map((p) => `${p}\n`).join('')}`, 0o644);
      await syncDirectory(this.directory);
    } catch (err) {
      throw sinkWriteError(`haproxy: writing ${this.crtListPath}`, err);
    }
  }

  private async removePem(path: string): Promise<void> {
    try {
      await removeFile(path);
    } catch (err) {
      throw sinkWriteError(`haproxy: removing ${path}`, err);
    }
  }

  /** Makes HAProxy serve `pem` under `path`, listed once in the crt-list; does nothing it already does. */
  private async pushStored(
    hostname: string,
    path: string,
    pem: string,
    knownEntries: CrtListEntry[] | undefined,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    const runtime = this.runtime;
    if (!runtime) return;
    const { serial, sha1Fingerprint } = leafIdentity(pem);
    const held = await runtime.showCertificate(path, signal);
    let action: 'new' | 'renewed' | undefined;
    if (held === undefined || held.sha1Fingerprint !== sha1Fingerprint) {
      await this.closeForeignTransaction(path, signal);
      if (held === undefined) await runtime.newCertificate(path, signal);
      await runtime.setCertificate(path, pem, signal);
      await runtime.commitCertificate(path, signal);
      action = held === undefined ? 'new' : 'renewed';
    }
    const entries = knownEntries ?? (await runtime.crtListEntries(this.crtListPath, signal));
    const mine = entries.filter((e) => e.path === path);
    if (mine.length === 0) await runtime.addToCrtList(this.crtListPath, path, signal);
    // A path listed twice (HAProxy adds a duplicate line when asked twice): keep the first line.
    for (const extra of mine.slice(1).sort((a, b) => b.line - a.line))
      await runtime.deleteFromCrtList(this.crtListPath, path, extra.line, signal);
    if (action !== undefined || mine.length !== 1) {
      this.log.info(
        {
          [F.event]: EVENTS.haproxyPushed,
          [F.hostname]: hostname,
          action: action ?? 'listed',
          serial,
          path,
        },
        'haproxy serves the certificate',
      );
    }
  }

  /** Makes HAProxy forget `path`: its crt-list lines, then the certificate. */
  private async pushRemoved(
    hostname: string | undefined,
    path: string,
    knownEntries: CrtListEntry[] | undefined,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    const runtime = this.runtime;
    if (!runtime) return;
    const entries = knownEntries ?? (await runtime.crtListEntries(this.crtListPath, signal));
    const mine = entries.filter((e) => e.path === path).sort((a, b) => b.line - a.line);
    for (const entry of mine)
      await runtime.deleteFromCrtList(this.crtListPath, path, mine.length > 1 ? entry.line : undefined, signal);
    const { transaction } = await runtime.listCertificates(signal);
    if (transaction === path) await runtime.abortCertificate(path, signal);
    const deleted = await runtime.deleteCertificate(path, signal);
    if (mine.length > 0 || deleted === 'deleted') {
      this.log.info(
        { [F.event]: EVENTS.haproxyPushed, [F.hostname]: hostname, action: 'removed', path },
        'haproxy no longer serves the certificate',
      );
    }
  }

  /**
   * HAProxy has one certificate transaction at a time, and puts a `set ssl cert` payload into
   * whichever is open (docs/protocols.md §8). One of ours left open by a crash is aborted; one
   * that is not ours is left alone, and the push fails until its owner commits or aborts it.
   */
  private async closeForeignTransaction(path: string, signal: AbortSignal | undefined): Promise<void> {
    const runtime = this.runtime!;
    const { transaction } = await runtime.listCertificates(signal);
    if (transaction === undefined || transaction === path) return;
    if (transaction.startsWith(`${this.directory}/`)) {
      this.log.warn({ path: transaction }, 'aborting a certificate transaction consul-acme left open in haproxy');
      await runtime.abortCertificate(transaction, signal);
      return;
    }
    throw new ConsulAcmeError(
      'HAPROXY_REFUSED',
      `HAProxy has an open certificate transaction for ${transaction}, which consul-acme did not start: commit or abort it ("abort ssl cert ${transaction}")`,
      { retryable: true },
    );
  }
}
