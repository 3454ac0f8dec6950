/**
 * Traefik's file provider: each certificate as two files, `<directory>/certs/<hostname>/<serial>.crt`
 * (leaf and chain) and `.key`, and one dynamic-configuration file, `<directory>/consul-acme.yml`,
 * listing them under `tls.certificates` (`certFile`, `keyFile`) as Traefik documents.
 *
 * Traefik watches the dynamic file, not the certificate files (docs/protocols.md §9), so a renewed
 * certificate gets new file paths (its serial) and the dynamic file is rewritten; every file is
 * replaced atomically, so Traefik's watcher never reads half a file. Order: the new certificate
 * files, then the dynamic file, then the files nothing lists any more (superseded or retired).
 *
 * The `certs` folder and the dynamic file belong to consul-acme: what the dynamic file does not
 * list is removed from `certs`.
 */
import { promises as fs } from 'node:fs';
import { join, relative, resolve, sep } from 'node:path';
import { parse, stringify } from 'yaml';
import { assertSafeName } from '../adapters/file/file-certificate-store.js';
import type { CertificateData } from '../domain/certificate.js';
import { throwIfAborted } from '../errors.js';
import { F, type Logger } from '../logging.js';
import type { CertificateSink, SinkChange, SinkSnapshot } from '../ports/certificate-sink.js';
import {
  certificateChainPem,
  isErrno,
  leafIdentity,
  privateKeyPem,
  readOptional,
  sinkWriteError,
  syncDirectory,
  writeIfChanged,
} from './files.js';

export interface TraefikSinkOptions {
  /**
   * Where the dynamic file and the `certs` folder go; made absolute (Traefik resolves paths from its
   * own directory).
   */
  directory: string;
  logger: Logger;
}

export const TRAEFIK_DYNAMIC_FILE = 'consul-acme.yml';
export const TRAEFIK_CERTS_FOLDER = 'certs';
const HEADER = 'Written by consul-acme: replaced whole on every change; do not edit.';

/** One entry of `tls.certificates`, as Traefik's file provider reads it. */
export interface TraefikCertificateEntry {
  certFile: string;
  keyFile: string;
}

/** The dynamic configuration consul-acme writes. */
export interface TraefikDynamicConfiguration {
  tls: { certificates: TraefikCertificateEntry[] };
}

export class TraefikSink implements CertificateSink {
  readonly name = 'traefik';
  readonly directory: string;
  readonly dynamicFile: string;
  readonly certsDirectory: string;
  private readonly log: Logger;
  /** hostname → files, as the dynamic file lists them; read from it on first use. */
  private entries: Map<string, TraefikCertificateEntry> | undefined;

  constructor(options: TraefikSinkOptions) {
    this.directory = resolve(options.directory);
    this.dynamicFile = join(this.directory, TRAEFIK_DYNAMIC_FILE);
    this.certsDirectory = join(this.directory, TRAEFIK_CERTS_FOLDER);
    this.log = options.logger.child({ [F.component]: 'traefik-sink' });
  }

  /** The files of `certificate`: new paths for every new certificate, so Traefik notices the change. */
  filesFor(certificate: CertificateData): TraefikCertificateEntry {
    assertSafeName(certificate.hostname, 'hostname');
    const folder = join(this.certsDirectory, certificate.hostname);
    const { serial } = leafIdentity(certificate.certPem);
    return { certFile: join(folder, `${serial}.crt`), keyFile: join(folder, `${serial}.key`) };
  }

  async apply(change: SinkChange, signal?: AbortSignal): Promise<void> {
    await this.guard(async () => {
      const entries = new Map(await this.current());
      if (change.kind === 'stored') {
        entries.set(change.certificate.hostname, await this.writeCertificate(change.certificate));
      } else {
        assertSafeName(change.hostname, 'hostname');
        entries.delete(change.hostname);
      }
      throwIfAborted(signal, 'traefik');
      await this.commit(entries);
    });
  }

  async resync(snapshot: SinkSnapshot, signal?: AbortSignal): Promise<void> {
    await this.guard(async () => {
      const current = await this.current();
      const entries = new Map<string, TraefikCertificateEntry>();
      for (const certificate of snapshot.certificates) {
        throwIfAborted(signal, 'traefik re-sync');
        entries.set(certificate.hostname, await this.writeCertificate(certificate));
      }
      for (const hostname of snapshot.unreadable) {
        const kept = current.get(hostname);
        if (kept) entries.set(hostname, kept);
      }
      await this.commit(entries);
    });
  }

  private async guard(work: () => Promise<void>): Promise<void> {
    try {
      await work();
    } catch (err) {
      throw sinkWriteError(`traefik: writing ${this.directory}`, err);
    }
  }

  /** What the dynamic file lists now: entries in our `certs` folder, by hostname; anything else is dropped. */
  private async current(): Promise<Map<string, TraefikCertificateEntry>> {
    if (this.entries) return this.entries;
    const entries = new Map<string, TraefikCertificateEntry>();
    const text = await readOptional(this.dynamicFile);
    let parsed: unknown;
    try {
      parsed = text === undefined ? undefined : parse(text);
    } catch (err) {
      this.log.warn({ [F.err]: String(err) }, `${this.dynamicFile} is not valid YAML; it will be replaced`);
    }
    const listed = (parsed as Partial<TraefikDynamicConfiguration> | undefined)?.tls?.certificates;
    for (const entry of Array.isArray(listed) ? listed : []) {
      const hostname = this.hostnameOf(entry);
      if (hostname !== undefined) entries.set(hostname, { certFile: entry.certFile, keyFile: entry.keyFile });
    }
    this.entries = entries;
    return entries;
  }

  /** The hostname of an entry whose files are `certs/<hostname>/<name>.crt|.key`; undefined for anything else. */
  private hostnameOf(entry: unknown): string | undefined {
    if (typeof entry !== 'object' || entry === null) return undefined;
    const { certFile, keyFile } = entry as Record<string, unknown>;
    if (typeof certFile !== 'string' || typeof keyFile !== 'string') return undefined;
    const parts = relative(this.certsDirectory, certFile).split(sep);
    const keyParts = relative(this.certsDirectory, keyFile).split(sep);
    if (parts.length !== 2 || keyParts.length !== 2 || parts[0] !== keyParts[0]) return undefined;
    const hostname = parts[0]!;
    return hostname === '' || hostname.startsWith('.') ? undefined : hostname;
  }

  private async writeCertificate(certificate: CertificateData): Promise<TraefikCertificateEntry> {
    const files = this.filesFor(certificate);
    await fs.mkdir(join(this.certsDirectory, certificate.hostname), { recursive: true, mode: 0o755 });
    await writeIfChanged(files.keyFile, privateKeyPem(certificate.keyPem), 0o600);
    await writeIfChanged(files.certFile, certificateChainPem(certificate.certPem), 0o644);
    return files;
  }

  /** Writes the dynamic file for `entries` (sorted by hostname), then removes the files it no longer lists. */
  private async commit(entries: Map<string, TraefikCertificateEntry>): Promise<void> {
    await fs.mkdir(this.certsDirectory, { recursive: true, mode: 0o755 });
    for (const hostname of entries.keys()) await syncDirectory(join(this.certsDirectory, hostname));
    const sorted = [...entries.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    const configuration: TraefikDynamicConfiguration = {
      tls: { certificates: sorted.map(([, e]) => ({ certFile: e.certFile, keyFile: e.keyFile })) },
    };
    const text = `# ${HEADER}\n${stringify(configuration)}`;
    await writeIfChanged(this.dynamicFile, text, 0o644);
    await syncDirectory(this.directory);
    this.entries = entries;
    await this.removeUnlisted(entries);
  }

  private async removeUnlisted(entries: Map<string, TraefikCertificateEntry>): Promise<void> {
    // Temporary copies of the dynamic file left by a crash.
    for (const name of await fs.readdir(this.directory)) {
      if (name.startsWith(`${TRAEFIK_DYNAMIC_FILE}.tmp-`)) await fs.rm(join(this.directory, name), { force: true });
    }
    const listed = new Set([...entries.values()].flatMap((e) => [e.certFile, e.keyFile]));
    let folders: string[];
    try {
      folders = await fs.readdir(this.certsDirectory);
    } catch (err) {
      if (isErrno(err, 'ENOENT')) return;
      throw err;
    }
    for (const name of folders) {
      const folder = join(this.certsDirectory, name);
      if (!entries.has(name)) {
        await fs.rm(folder, { recursive: true, force: true });
        continue;
      }
      for (const file of await fs.readdir(folder)) {
        const path = join(folder, file);
        if (!listed.has(path)) await fs.rm(path, { recursive: true, force: true });
      }
    }
  }
}
