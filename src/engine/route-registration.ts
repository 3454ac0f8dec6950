/**
 * This instance's own registrations in the local Consul agent, kept true:
 *
 * - the challenge routes: one `urlprefix-<host>/.well-known/acme-challenge/` tag per managed
 *   hostname (domain/challenge.ts), so that Fabio sends the CA's requests for every managed name to
 *   an instance, ahead of the application's own routes;
 * - the certificate-health sibling, whose check reports certificate trouble to Consul.
 *
 * `sync` brings the routes in step with the managed set and records when each name's route was
 * registered, so the order gate can tell "the route is not live yet" from "the route is broken".
 * `reassert` (run by anti-entropy.ts) checks both registrations against the agent and registers
 * them again when the agent lost them. A failed registration is logged and retried at the next
 * check; it never stops the engine.
 */
import { challengeRouteTag } from '../domain/challenge.js';
import { describeError } from '../errors.js';
import { EVENTS, F, type Logger } from '../logging.js';
import type { Clock } from '../ports/clock.js';
import type { ServiceRegistration } from '../ports/service-registration.js';

export interface RouteRegistrationDeps {
  /** The challenge-route registration; undefined when registration is switched off. */
  routes: ServiceRegistration | undefined;
  /** The certificate-health sibling; undefined when registration is switched off. */
  health: ServiceRegistration | undefined;
  fabioTagPrefix: string;
  clock: Clock;
  logger: Logger;
}

export class RouteRegistration {
  /** Hostname → when the registration carrying its route was accepted by the agent (ms). */
  private readonly registeredAt = new Map<string, number>();
  /** Hostname → its route tag, for every name the routes were last asked to carry. */
  private readonly tags = new Map<string, string>();
  /**
   * Names asked for whose route no registration has confirmed yet (one failed, or is under way),
   * each with the number of the sync that asked for it and when (ms).
   */
  private readonly unconfirmed = new Map<string, { call: number; askedAtMs: number }>();
  private syncs = 0;
  private readonly log: Logger;

  constructor(private readonly deps: RouteRegistrationDeps) {
    this.log = deps.logger.child({ [F.component]: 'route-registration' });
  }

  /**
   * Registers the challenge routes of exactly `hostnames` (read at the call, so the caller may go on
   * changing its set); resolves once the agent has them (or the attempt failed and was logged).
   * Only the names that joined or left since the last call are handed to the registration, so a
   * change costs work for them, plus one look-up per name (and one per held name when some left).
   */
  async sync(hostnames: ReadonlySet<string>): Promise<void> {
    const call = ++this.syncs;
    const asked = { call, askedAtMs: this.deps.clock.nowMs() };
    const added: string[] = [];
    const removed: string[] = [];
    // forEach rather than for-of: no iterator result per name, at 10,000 names and every change.
    hostnames.forEach((hostname) => {
      if (this.tags.has(hostname)) return;
      const tag = challengeRouteTag(hostname, this.deps.fabioTagPrefix);
      this.tags.set(hostname, tag);
      this.unconfirmed.set(hostname, asked);
      added.push(tag);
    });
    // Every name of `hostnames` now has a tag: more tags than names means some names left.
    if (this.tags.size > hostnames.size) {
      for (const hostname of this.tags.keys()) {
        if (hostnames.has(hostname)) continue;
        removed.push(this.tags.get(hostname)!);
        this.tags.delete(hostname);
        this.registeredAt.delete(hostname);
        this.unconfirmed.delete(hostname);
      }
    }
    const routes = this.deps.routes;
    if (!routes) return;
    // Nothing moved and nothing waits for a confirmation: the registration holds these routes.
    if (added.length === 0 && removed.length === 0 && this.unconfirmed.size === 0) return;
    try {
      await routes.change(added, removed);
    } catch (err) {
      this.log.error(
        { [F.err]: describeError(err) },
        'could not update the challenge routes; retrying at the next check',
      );
      return;
    }
    this.confirm(call);
    this.log.debug(
      { [F.event]: EVENTS.registrationUpdated, added: added.length, removed: removed.length, tags: this.tags.size },
      'challenge routes registered',
    );
  }

  /**
   * The registration that took sync `call` succeeded: the routes asked for by it and by every
   * earlier sync are in place (a failed one's tags went with it), later ones may not be yet.
   */
  private confirm(call: number): void {
    const now = this.deps.clock.nowMs();
    for (const [hostname, asked] of this.unconfirmed) {
      if (asked.call > call) continue;
      this.registeredAt.set(hostname, now);
      this.unconfirmed.delete(hostname);
    }
  }

  /** When the route of `hostname` was registered (ms), if it is. */
  registeredAtMs(hostname: string): number | undefined {
    return this.registeredAt.get(hostname);
  }

  /**
   * How old the route of `hostname` is (ms since it was registered, or since it was asked for while
   * its registration is under way or failed); undefined when the routes do not carry the name.
   */
  routeAgeMs(hostname: string): number | undefined {
    if (!this.deps.routes) return undefined;
    const since = this.registeredAtMs(hostname) ?? this.unconfirmed.get(hostname)?.askedAtMs;
    return since === undefined ? undefined : this.deps.clock.nowMs() - since;
  }

  /** Registers the health sibling (its check passes or fails on its own). */
  async start(): Promise<void> {
    await this.deps.health
      ?.update([])
      .catch((err: unknown) =>
        this.log.warn({ [F.err]: describeError(err) }, 'could not register the certificate health check; retrying'),
      );
  }

  /** Removes both registrations. */
  async stop(): Promise<void> {
    for (const [what, registration] of [
      ['challenge routes', this.deps.routes],
      ['certificate health check', this.deps.health],
    ] as const) {
      await registration
        ?.deregister()
        .catch((err: unknown) =>
          this.log.warn({ [F.err]: describeError(err) }, `deregistration of the ${what} failed`),
        );
    }
  }

  /** Compares both registrations with the agent's copy now and restores what is missing. */
  async reassert(): Promise<void> {
    for (const [what, registration] of [
      ['challenge routes', this.deps.routes],
      ['certificate health check', this.deps.health],
    ] as const) {
      if (!registration) continue;
      try {
        if (await registration.reassert()) {
          this.log.warn(
            { [F.event]: EVENTS.registrationRestored, registration: what },
            'registration was missing in the agent; restored',
          );
          if (registration === this.deps.routes) {
            // The routes just came back: give every name the settle time of a new route.
            const now = this.deps.clock.nowMs();
            for (const hostname of this.tags.keys()) this.registeredAt.set(hostname, now);
            this.unconfirmed.clear();
          }
        }
      } catch (err) {
        this.log.warn(
          { [F.err]: describeError(err), registration: what },
          'could not check the registration; retrying',
        );
      }
    }
  }
}
