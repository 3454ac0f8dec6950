/**
 * What this instance knows the certificate store holds, without the PEM texts: per hostname the
 * facts of the record last read or written here, and when it was read. The renewal scan plans from
 * it without touching the store; the status view and the fail-closed policy read it. It is kept
 * current by the engine's events and by the scan's store listing. Another instance's writes are
 * seen at the next read of that name (the scan re-reads every name, with bounded concurrency).
 */
import { factsOf, type StoredFacts } from '../domain/certificate.js';
import type { EngineEvent } from './events.js';

interface IndexEntry {
  /** Undefined while the name is listed in the store but not read yet. */
  facts: StoredFacts | undefined;
  readAtMs: number | undefined;
}

export class StoreIndex {
  private readonly entries = new Map<string, IndexEntry>();
  /** When a read last found nothing stored under a name, so that an older read cannot bring it back. */
  private readonly forgottenAtMs = new Map<string, number>();
  private lastListingAtMs: number | undefined;

  /** Keeps the index in step with what the engine wrote and read. */
  onEvent(event: EngineEvent): void {
    switch (event.type) {
      case 'planned':
        if (event.readStartedAtMs !== undefined) this.record(event.hostname, event.stored, event.readStartedAtMs);
        break;
      case 'stored': {
        const { certificate, version, writtenAtMs } = event;
        this.record(
          certificate.hostname,
          factsOf({ hostname: certificate.hostname, version, managed: true, certificate, problem: undefined }),
          writtenAtMs,
        );
        break;
      }
      case 'retired':
        this.entries.delete(event.hostname);
        this.forgottenAtMs.set(event.hostname, event.retiredAtMs);
        break;
      default:
        break;
    }
  }

  /**
   * Records a read (or write) of `hostname` that started at `startedAtMs`; `facts` undefined means
   * nothing is stored. A read that started before the one recorded is stale and ignored: it may
   * have missed a write that the recorded one saw.
   */
  record(hostname: string, facts: StoredFacts | undefined, startedAtMs: number): void {
    const known = this.entries.get(hostname);
    if (known?.readAtMs !== undefined && known.readAtMs > startedAtMs) return;
    if (facts === undefined) {
      this.entries.delete(hostname);
      this.forgottenAtMs.set(hostname, startedAtMs);
      return;
    }
    if ((this.forgottenAtMs.get(hostname) ?? -Infinity) > startedAtMs) return;
    this.forgottenAtMs.delete(hostname);
    this.entries.set(hostname, { facts, readAtMs: startedAtMs });
  }

  /** Whether a read that started at `startedAtMs` is older than what is known of `hostname`. */
  isStale(hostname: string, startedAtMs: number): boolean {
    const known = this.entries.get(hostname)?.readAtMs ?? this.forgottenAtMs.get(hostname);
    return known !== undefined && known > startedAtMs;
  }

  /**
   * Takes a listing of the store that started at `startedAtMs`: names not listed are gone (another
   * instance retired them) unless read or written after the listing started; listed names not known
   * yet are added, to be read.
   */
  applyListing(hostnames: readonly string[], startedAtMs: number): void {
    this.lastListingAtMs = startedAtMs;
    const listed = new Set(hostnames);
    for (const [hostname, entry] of this.entries) {
      if (listed.has(hostname) || (entry.readAtMs !== undefined && entry.readAtMs >= startedAtMs)) continue;
      this.entries.delete(hostname);
      this.forgottenAtMs.set(hostname, startedAtMs);
    }
    for (const hostname of hostnames)
      if (!this.entries.has(hostname)) this.entries.set(hostname, { facts: undefined, readAtMs: undefined });
  }

  /** The facts last read for `hostname`; undefined when nothing is stored or it was not read yet. */
  facts(hostname: string): StoredFacts | undefined {
    return this.entries.get(hostname)?.facts;
  }

  /** Whether the store was listed: from then on, a name the index does not have had no record when listed. */
  hasListing(): boolean {
    return this.lastListingAtMs !== undefined;
  }

  /** Whether a record is stored under `hostname`, read or not. */
  has(hostname: string): boolean {
    return this.entries.has(hostname);
  }

  /** Whether a readable certificate of ours is stored for `hostname`. */
  hasCertificate(hostname: string): boolean {
    const facts = this.entries.get(hostname)?.facts;
    return facts !== undefined && facts.managed && facts.certificate !== undefined;
  }

  /** When `hostname` was last read or written here (ms), or undefined. */
  readAtMs(hostname: string): number | undefined {
    return this.entries.get(hostname)?.readAtMs;
  }

  hostnames(): IterableIterator<string> {
    return this.entries.keys();
  }

  /** Calls `visit` with every hostname held (no iterator result per name, unlike `hostnames`). */
  forEachHostname(visit: (hostname: string) => void): void {
    this.entries.forEach((_, hostname) => visit(hostname));
  }

  get size(): number {
    return this.entries.size;
  }
}
