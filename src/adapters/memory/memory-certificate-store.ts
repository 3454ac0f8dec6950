import { generateKeyPairSync } from 'node:crypto';
import { MANAGED_BY, type CertificateData, type PendingOrder, type StoredRecord } from '../../domain/certificate.js';
import {
  adoptedCertificate,
  assertStorableCertificate,
  inspectCertificateCached,
  storedRecordFromPem,
} from '../../domain/pem.js';
import { RECORD_FORMATS, newerFormatError } from '../../domain/record-format.js';
import { ConsulAcmeError, StoreConflictError } from '../../errors.js';
import { F, type Logger } from '../../logging.js';
import type { Adopted, AdoptionMarks, CertificateStore } from '../../ports/certificate-store.js';
import { pendingFromFields, storablePendingFields } from '../pending-record.js';

interface MemoryEntry {
  version: number;
  managedBy: string | undefined;
  /** As given to put; undefined for a record seeded as not ours. */
  certificate: CertificateData | undefined;
  certPem: string;
  keyPem: string;
  /** The record's format; only `corrupt(…, 'newer-format')` sets one above what this release writes. */
  format?: number;
}

type Operation =
  'get' | 'put' | 'delete' | 'list' | 'adopt' | 'getPending' | 'putPending' | 'deletePending' | 'listPending';

export interface MemoryCertificateStoreOptions {
  /** Where an unreadable pending record is reported. */
  logger?: Logger;
}

function copyCertificate(certificate: CertificateData): CertificateData {
  return {
    ...certificate,
    hostnames: [...certificate.hostnames],
    notBefore: new Date(certificate.notBefore),
    notAfter: new Date(certificate.notAfter),
    obtainedAt: new Date(certificate.obtainedAt),
    ...(certificate.adoptedAt === undefined ? {} : { adoptedAt: new Date(certificate.adoptedAt) }),
  };
}

/**
 * CertificateStore for one process (tests, dry runs). Same contract as the Vault and file stores:
 * check-and-set versions, records not written by consul-acme are never overwritten or deleted,
 * and `get` runs inspectCertificate so corrupted data shows up as a `problem`. Pending orders are
 * kept as the stored fields the other stores write (src/adapters/pending-record.ts) and parsed on
 * `getPending`, so they round-trip as they would there. Not safe across processes. Test hooks:
 * `versions`, `corrupt`, `putUnmanaged`, `plantPending`, `failNext`.
 */
export class MemoryCertificateStore implements CertificateStore {
  readonly description = 'memory';
  private readonly entries = new Map<string, MemoryEntry>();
  /** hostname → stored pending fields (JSON-like, as Vault or a file would hold them). */
  private readonly pending = new Map<string, unknown>();
  private readonly failures: { operation: Operation; error: Error }[] = [];
  private readonly logger: Logger | undefined;

  constructor(options: MemoryCertificateStoreOptions = {}) {
    this.logger = options.logger;
  }

  private takeFailure(operation: Operation): void {
    const index = this.failures.findIndex((f) => f.operation === operation);
    if (index < 0) return;
    const [failure] = this.failures.splice(index, 1);
    if (failure !== undefined) throw failure.error;
  }

  async get(hostname: string): Promise<StoredRecord | undefined> {
    this.takeFailure('get');
    const entry = this.entries.get(hostname);
    if (entry === undefined) return undefined;
    const base = { hostname, version: entry.version };
    if (entry.managedBy !== MANAGED_BY || entry.certificate === undefined) {
      // What the stores share for a record not ours: managed false, and what its certificate says.
      return storedRecordFromPem(
        hostname,
        entry.version,
        false,
        { cert: entry.certPem, key: entry.keyPem },
        `memory record ${hostname}`,
      );
    }
    if (entry.format !== undefined && entry.format > RECORD_FORMATS.certificate) {
      return {
        ...base,
        managed: true,
        certificate: undefined,
        problem: `memory record ${hostname} was written in format ${entry.format} by a newer release; it is left alone`,
        newerFormat: entry.format,
      };
    }
    const inspected = inspectCertificateCached(entry.certPem, entry.keyPem);
    if (!inspected.ok) {
      return {
        ...base,
        managed: true,
        certificate: undefined,
        problem: `memory record ${hostname}: ${inspected.problem}`,
      };
    }
    return { ...base, managed: true, certificate: copyCertificate(entry.certificate), problem: undefined };
  }

  async put(certificate: CertificateData, expectedVersion: number): Promise<number> {
    this.takeFailure('put');
    const { hostname } = certificate;
    const what = `write memory record ${hostname}`;
    assertStorableCertificate(certificate, `certificate ${hostname} in memory`);
    const current = this.entries.get(hostname);
    if ((current?.version ?? 0) !== expectedVersion) throw new StoreConflictError(what, expectedVersion);
    if (current !== undefined && current.managedBy !== MANAGED_BY) {
      throw new ConsulAcmeError(
        'STORE_CONFLICT',
        `${what}: the record was not written by consul-acme; refusing to overwrite it`,
      );
    }
    if (current?.format !== undefined && current.format > RECORD_FORMATS.certificate)
      throw newerFormatError(what, current.format, RECORD_FORMATS.certificate);
    return this.store(certificate, expectedVersion + 1);
  }

  async adopt(hostname: string, expectedVersion: number, marks: AdoptionMarks): Promise<Adopted> {
    this.takeFailure('adopt');
    const what = `adopt memory record ${hostname}`;
    const current = this.entries.get(hostname);
    if (current === undefined || current.version !== expectedVersion)
      throw new StoreConflictError(what, expectedVersion);
    if (current.managedBy === MANAGED_BY)
      throw new ConsulAcmeError('STORE_CONFLICT', `${what}: it is consul-acme's already`);
    const certificate = adoptedCertificate(
      hostname,
      { certPem: current.certPem, keyPem: current.keyPem },
      marks,
      `memory record ${hostname}`,
    );
    return { version: this.store(certificate, expectedVersion + 1), certificate: copyCertificate(certificate) };
  }

  /** Records `certificate` as consul-acme's at `version`; returns the version. */
  private store(certificate: CertificateData, version: number): number {
    this.entries.set(certificate.hostname, {
      version,
      managedBy: MANAGED_BY,
      certificate: copyCertificate(certificate),
      certPem: certificate.certPem,
      keyPem: certificate.keyPem,
    });
    return version;
  }

  async delete(hostname: string, expectedVersion: number): Promise<void> {
    this.takeFailure('delete');
    const current = this.entries.get(hostname);
    if (current === undefined) return;
    const what = `delete memory record ${hostname}`;
    if (current.version !== expectedVersion) throw new StoreConflictError(what, expectedVersion);
    if (current.managedBy !== MANAGED_BY) {
      throw new ConsulAcmeError(
        'STORE_CONFLICT',
        `${what}: the record was not written by consul-acme; refusing to delete it`,
      );
    }
    if (current.format !== undefined && current.format > RECORD_FORMATS.certificate)
      throw newerFormatError(what, current.format, RECORD_FORMATS.certificate);
    this.entries.delete(hostname);
  }

  async list(): Promise<string[]> {
    this.takeFailure('list');
    return [...this.entries.keys()].sort();
  }

  /** Fails as `list` would (a failure injected for `list` applies). */
  async probe(): Promise<void> {
    await this.list();
  }

  async getPending(hostname: string): Promise<PendingOrder | undefined> {
    this.takeFailure('getPending');
    if (!this.pending.has(hostname)) return undefined;
    const parsed = pendingFromFields(structuredClone(this.pending.get(hostname)), hostname);
    if (parsed.ok) return parsed.pending;
    if (parsed.newerFormat !== undefined)
      throw newerFormatError(`memory pending record ${hostname}`, parsed.newerFormat, RECORD_FORMATS.pending);
    this.logger?.warn(
      { [F.hostname]: hostname, [F.reason]: `memory pending record ${hostname} ${parsed.problem}` },
      'pending order unreadable; ignored',
    );
    return undefined;
  }

  async putPending(pending: PendingOrder): Promise<void> {
    this.takeFailure('putPending');
    this.pending.set(pending.hostname, storablePendingFields(pending, `${pending.hostname} in memory`));
  }

  async deletePending(hostname: string): Promise<void> {
    this.takeFailure('deletePending');
    this.pending.delete(hostname);
  }

  async listPending(): Promise<string[]> {
    this.takeFailure('listPending');
    return [...this.pending.keys()].sort();
  }

  /** Stores `fields` as the pending record of hostname as they are, as an outside writer or an older or newer release might. */
  plantPending(hostname: string, fields: unknown): void {
    this.pending.set(hostname, structuredClone(fields));
  }

  /** The stored version of hostname; 0 when missing. */
  versions(hostname: string): number {
    return this.entries.get(hostname)?.version ?? 0;
  }

  /**
   * Damages a stored record as an outside writer would (the version goes up): `bad-pem` replaces
   * the certificate with text that is not PEM, `wrong-key` replaces the key with another valid key,
   * `newer-format` marks the record as written by a newer release (format 2).
   */
  corrupt(hostname: string, how: 'bad-pem' | 'wrong-key' | 'newer-format' = 'bad-pem'): void {
    const entry = this.entries.get(hostname);
    if (entry === undefined) throw new Error(`no memory record ${hostname} to corrupt`);
    if (how === 'newer-format') {
      entry.format = RECORD_FORMATS.certificate + 1;
    } else if (how === 'bad-pem') {
      entry.certPem = 'this is not a certificate\n';
    } else {
      entry.keyPem = generateKeyPairSync('ec', { namedCurve: 'prime256v1' })
        .privateKey.export({ type: 'pkcs8', format: 'pem' })
        .toString();
    }
    entry.version += 1;
  }

  /** Stores a record as someone other than consul-acme would; returns its version. */
  putUnmanaged(hostname: string, pems: { certPem: string; keyPem: string }): number {
    const version = (this.entries.get(hostname)?.version ?? 0) + 1;
    this.entries.set(hostname, {
      version,
      managedBy: undefined,
      certificate: undefined,
      certPem: pems.certPem,
      keyPem: pems.keyPem,
    });
    return version;
  }

  /** The next call of `operation` throws `error` (once per call of failNext). */
  failNext(operation: Operation, error: Error): void {
    this.failures.push({ operation, error });
  }
}
