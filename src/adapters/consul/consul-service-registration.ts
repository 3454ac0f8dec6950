/**
 * This instance's own service in the local Consul agent (`/v1/agent/service/register`), carrying
 * the Fabio route tags for the challenge path of every managed hostname. With `checkHttpUrl` an
 * HTTP check is registered too: Fabio only routes to instances whose checks pass.
 */
import { describeError } from '../../errors.js';
import { F, EVENTS, silentLogger, type Logger } from '../../logging.js';
import type { ServiceRegistration } from '../../ports/service-registration.js';
import { classifyConsulError, consulErrorStatus, type Consul } from './consul-client.js';

/** Consul removes a registration whose check stayed critical this long. */
export const DEREGISTER_CRITICAL_AFTER = '10m';

export const DEFAULT_REGISTRATION_SERVICE_NAME = 'consul-acme';
export const DEFAULT_REGISTRATION_CHECK_INTERVAL_SECONDS = 10;

export interface ConsulServiceRegistrationOptions {
  consul: Consul;
  /** Unique per instance, e.g. `consul-acme-<instance name>`. */
  serviceId: string;
  serviceName?: string;
  /** Address Fabio should route to; the agent's address when unset. */
  address?: string;
  port: number;
  /** URL the agent polls; the service is only routed to while it answers 2xx. */
  checkHttpUrl?: string;
  checkIntervalSeconds?: number;
  /** Appended to the service id to name the check; default `ready`. */
  checkName?: string;
  meta?: Record<string, string>;
  logger?: Logger;
}

function sameTags(a: readonly string[] | undefined, b: readonly string[]): boolean {
  if (a === undefined || a.length !== b.length) return false;
  const sa = [...a].sort();
  const sb = [...b].sort();
  return sa.every((t, i) => t === sb[i]);
}

export class ConsulServiceRegistration implements ServiceRegistration {
  private readonly opts: ConsulServiceRegistrationOptions;
  private readonly log: Logger;
  /** Tags of the last successful registration; undefined when not registered (or unknown). */
  private registeredTags: string[] | undefined;
  /** Calls run one at a time, in order. */
  private chain: Promise<void> = Promise.resolve();

  constructor(opts: ConsulServiceRegistrationOptions) {
    this.opts = opts;
    this.log = (opts.logger ?? silentLogger()).child({ [F.component]: 'consul-registration' });
  }

  /** What the last update asked for. */
  private lastWanted: string[] | undefined;

  update(tags: string[]): Promise<void> {
    const wanted = [...new Set(tags)];
    this.lastWanted = wanted;
    return this.serialize(async () => {
      if (sameTags(this.registeredTags, wanted)) return;
      const { consul, serviceId, address, port, checkHttpUrl, meta } = this.opts;
      const intervalSeconds = this.opts.checkIntervalSeconds ?? DEFAULT_REGISTRATION_CHECK_INTERVAL_SECONDS;
      try {
        await consul.agent.service.register({
          id: serviceId,
          name: this.opts.serviceName ?? DEFAULT_REGISTRATION_SERVICE_NAME,
          tags: wanted,
          port,
          ...(address !== undefined ? { address } : {}),
          ...(meta !== undefined ? { meta } : {}),
          ...(checkHttpUrl !== undefined
            ? {
                check: {
                  name: `${serviceId} ${this.opts.checkName ?? 'ready'}`,
                  http: checkHttpUrl,
                  interval: `${intervalSeconds}s`,
                  timeout: `${Math.min(intervalSeconds, 5)}s`,
                  // An instance killed without deregistering would otherwise stay in the catalog.
                  deregistercriticalserviceafter: DEREGISTER_CRITICAL_AFTER,
                },
              }
            : {}),
        });
      } catch (err) {
        this.registeredTags = undefined;
        throw classifyConsulError(err, `agent service register ${serviceId}`);
      }
      this.registeredTags = wanted;
      this.log.info({ [F.event]: EVENTS.registrationUpdated, tags: wanted.length }, 'service registration updated');
    });
  }

  /** Re-registers when the agent no longer has the service (a minimal check; tags are compared too). */
  reassert(): Promise<boolean> {
    return this.serialize(async () => {
      const wanted = this.lastWanted;
      if (wanted === undefined) return false;
      const { consul, serviceId } = this.opts;
      let present: { Tags?: string[] } | undefined;
      try {
        const services = (await consul.agent.service.list()) as Record<string, { Tags?: string[] }>;
        present = services[serviceId];
      } catch (err) {
        throw classifyConsulError(err, `agent services ${serviceId}`);
      }
      if (present && sameTags(present.Tags ?? [], wanted)) return false;
      this.registeredTags = undefined;
      return true;
    }).then(async (lost) => {
      if (lost && this.lastWanted) await this.update(this.lastWanted);
      return lost;
    });
  }

  deregister(): Promise<void> {
    return this.serialize(async () => {
      const { consul, serviceId } = this.opts;
      try {
        await consul.agent.service.deregister(serviceId);
      } catch (err) {
        // Unknown service ID: already gone, which is what was asked.
        if (consulErrorStatus(err) !== 404) {
          const classified = classifyConsulError(err, `agent service deregister ${serviceId}`);
          this.log.warn({ [F.err]: describeError(classified) }, 'service deregistration failed');
          throw classified;
        }
      }
      this.registeredTags = undefined;
      this.lastWanted = undefined;
    });
  }

  private serialize<T>(step: () => Promise<T>): Promise<T> {
    const run = this.chain.then(step);
    this.chain = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }
}
