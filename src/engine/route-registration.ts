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
  private wanted: ReadonlySet<string> = new Set();
  /** Hostname → its route tag, made once per name (a sync passes every managed name). */
  private readonly tags = new Map<string, string>();
  private readonly log: Logger;

  constructor(private readonly deps: RouteRegistrationDeps) {
    this.log = deps.logger.child({ [F.component]: 'route-registration' });
  }

  /**
   * Registers the challenge routes of exactly `hostnames` (read at the call, so the caller may go on
   * changing its set); resolves once the agent has them (or the attempt failed and was logged).
   */
  async sync(hostnames: Iterable<string>): Promise<void> {
    const names = new Set(hostnames);
    this.wanted = names;
    const routes = this.deps.routes;
    if (!routes) return;
    const tags = Array.from(names, (hostname) => this.tagOf(hostname));
    try {
      await routes.update(tags);
    } catch (err) {
      this.log.error(
        { [F.err]: describeError(err) },
        'could not update the challenge routes; retrying at the next check',
      );
      return;
    }
    if (this.wanted !== names) return; // a newer sync is under way; it records its own names
    const now = this.deps.clock.nowMs();
    for (const hostname of this.registeredAt.keys()) if (!names.has(hostname)) this.registeredAt.delete(hostname);
    for (const hostname of this.tags.keys()) if (!names.has(hostname)) this.tags.delete(hostname);
    for (const hostname of names) if (!this.registeredAt.has(hostname)) this.registeredAt.set(hostname, now);
    this.log.debug({ [F.event]: EVENTS.registrationUpdated, tags: tags.length }, 'challenge routes registered');
  }

  private tagOf(hostname: string): string {
    let tag = this.tags.get(hostname);
    if (tag === undefined) {
      tag = challengeRouteTag(hostname, this.deps.fabioTagPrefix);
      this.tags.set(hostname, tag);
    }
    return tag;
  }

  /** When the route of `hostname` was registered (ms), if it is. */
  registeredAtMs(hostname: string): number | undefined {
    return this.registeredAt.get(hostname);
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
            for (const hostname of this.wanted) this.registeredAt.set(hostname, now);
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
