/**
 * Follows a store that other processes write, for the sink-only mode (CONSUL_ACME_MODE=sinks):
 * every `pollMs` it lists the store (one request) and tells the sinks about names that appeared
 * (read, then `stored`) or left (`removed`). What it does not see is a new version under a name it
 * already knows (a renewal): neither Vault's LIST nor a directory listing says which version a
 * record is at, and finding out costs one read per name, which is what a full re-sync does anyway.
 * So renewals reach the sinks with the SinkRunner's periodic re-sync
 * (CONSUL_ACME_SINK_RESYNC_INTERVAL), which a renewal, due with a third of the lifetime left,
 * never needs to beat; a new name, whose proxy serves nothing for it until then, does.
 *
 * A name whose record is not (yet) a readable certificate of consul-acme's (a record another tool
 * wrote, one being reissued) is read again at every listing until it is, so an adoption elsewhere
 * reaches the sinks as soon as a new name does. The first listing only learns the names: the
 * SinkRunner's re-sync at start has brought them in. Reads go through StoreHealth, so a failing
 * store shows in the status and the health check; a failed listing is retried at the next poll.
 */
import { describeError } from '../errors.js';
import { F, type Logger } from '../logging.js';
import type { CertificateStore } from '../ports/certificate-store.js';
import type { Clock, Timer } from '../ports/clock.js';
import type { SinkRunner } from '../sinks/sink-runner.js';
import type { StoreHealth } from './store-health.js';

export interface StoreFollowerDeps {
  store: CertificateStore;
  storeHealth: StoreHealth;
  sinks: Pick<SinkRunner, 'notify'>;
  clock: Clock;
  logger: Logger;
  pollMs: number;
}

export class StoreFollower {
  private readonly log: Logger;
  /** Names listed last time → whether the sinks were given a certificate for it. */
  private known: Map<string, boolean> | undefined;
  private timer: Timer | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;
  private lastListedAtMs: number | undefined;
  private lastErrorText: string | undefined;

  constructor(private readonly deps: StoreFollowerDeps) {
    this.log = deps.logger.child({ [F.component]: 'store-follower' });
  }

  /** Lists the store now, then every `pollMs`. */
  start(): void {
    this.stopped = false;
    this.running = this.poll();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.timer?.cancel();
    this.timer = undefined;
    await this.running;
  }

  /** Whether the store was listed at least once. */
  hasListed(): boolean {
    return this.lastListedAtMs !== undefined;
  }

  lastListedAt(): Date | undefined {
    return this.lastListedAtMs === undefined ? undefined : new Date(this.lastListedAtMs);
  }

  lastError(): string | undefined {
    return this.lastErrorText;
  }

  /** One listing and what follows from it; for the timer and for tests. */
  async poll(): Promise<void> {
    this.timer = undefined;
    try {
      await this.follow();
      this.lastErrorText = undefined;
    } catch (err) {
      this.lastErrorText = describeError(err);
      this.log.warn({ [F.err]: this.lastErrorText }, 'could not follow the store; trying again at the next poll');
    }
    if (!this.stopped) {
      this.timer = this.deps.clock.setTimer(() => {
        this.running = this.poll();
      }, this.deps.pollMs);
    }
  }

  private async follow(): Promise<void> {
    const { store, storeHealth, sinks } = this.deps;
    const listed = await storeHealth.observe(() => store.list());
    this.lastListedAtMs = this.deps.clock.nowMs();
    const previous = this.known;
    const next = new Map<string, boolean>();
    if (previous === undefined) {
      // The sinks' re-sync at start brings in what is there now.
      for (const hostname of listed) next.set(hostname, true);
      this.known = next;
      return;
    }
    for (const hostname of listed) {
      if (this.stopped) return;
      if (previous.get(hostname) === true) {
        next.set(hostname, true);
        continue;
      }
      const record = await storeHealth.observe(() => store.get(hostname));
      const certificate = record?.managed ? record.certificate : undefined;
      next.set(hostname, certificate !== undefined);
      if (certificate === undefined) continue;
      this.log.info({ [F.hostname]: hostname }, 'a certificate appeared in the store');
      sinks.notify({ kind: 'stored', certificate, reason: 'obtained' });
    }
    for (const [hostname, given] of previous) {
      if (next.has(hostname) || !given) continue;
      this.log.info({ [F.hostname]: hostname }, 'a certificate left the store');
      sinks.notify({ kind: 'removed', hostname });
    }
    this.known = next;
  }
}
