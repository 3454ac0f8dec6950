/**
 * The Consul half of the start-up self-check. Consul 1.8 cannot be asked what a token may do, so
 * each write permission the instance needs (consulRules() in src/deploy-contract.ts, the rules
 * deploy/consul-policy.hcl is checked against) is tried and undone at once:
 *
 * - `key_prefix "<prefix>" write`: a probe key `<prefix>permission-check/<instance>` is written and
 *   deleted (in the home datacenter, where the coordination state lives);
 * - `session_prefix "" write`: a session is created (as the locker creates its own) and destroyed;
 * - `service "<name>" write`: a registration `<name>-<instance>-permission-check` without tags or
 *   check is registered and deregistered in the local agent. It carries no Fabio tag, so Fabio
 *   builds no route from it, and its name is one discovery ignores.
 *
 * A 403 names the missing rule. The read rules (`service_prefix`, `node_prefix`) cannot be probed:
 * Consul filters what a token may not read instead of refusing it (docs/protocols.md §1.3, §1.9).
 * Any other failure (Consul unreachable, an unknown datacenter) rejects: the caller retries.
 */
import { consulRules, type ConsulNeeds, type ConsulRule } from '../../deploy-contract.js';
import { ConsulAcmeError, describeError } from '../../errors.js';
import type { MissingPermission, PermissionCheck } from '../../ports/permission-check.js';
import { classifyConsulError, type Consul } from './consul-client.js';
import { kvDelete, kvPut } from './consul-kv.js';
import { createLockSession } from './consul-locker.js';

export interface ConsulPermissionCheckOptions {
  /** The client for the local agent (registrations). */
  consul: Consul;
  /** The client for the home datacenter (KV, sessions); `consul` when there is one datacenter. */
  coordination: Consul;
  needs: ConsulNeeds;
  instanceName: string;
}

/** The probe folder under the KV prefix. */
export const PERMISSION_PROBE_FOLDER = 'permission-check/';

export class ConsulPermissionCheck implements PermissionCheck {
  readonly name = 'consul';

  constructor(private readonly opts: ConsulPermissionCheckOptions) {}

  async check(signal?: AbortSignal): Promise<MissingPermission[]> {
    const missing: MissingPermission[] = [];
    for (const rule of consulRules(this.opts.needs)) {
      signal?.throwIfAborted();
      const probe = this.probeFor(rule);
      if (probe === undefined) continue;
      try {
        await probe.run();
      } catch (err) {
        const classified = classifyConsulError(err, probe.what);
        if (classified.code !== 'CONSUL_PERMISSION_DENIED') throw classified;
        missing.push({
          system: 'consul',
          permission: `${rule.resource} "${rule.name}" ${rule.policy}`,
          neededFor: rule.why,
          detail: describeError(classified),
        });
      }
    }
    return missing;
  }

  /** How to try the rule, or undefined when it cannot be tried (read rules). */
  private probeFor(rule: ConsulRule): { what: string; run: () => Promise<void> } | undefined {
    const { consul, coordination, instanceName } = this.opts;
    if (rule.policy !== 'write') return undefined;
    switch (rule.resource) {
      case 'key_prefix': {
        const key = `${rule.name}${PERMISSION_PROBE_FOLDER}${instanceName}`;
        return {
          what: `kv put ${key}`,
          run: async () => {
            await kvPut(coordination, key, JSON.stringify({ probe: 'consul-acme permission check' }));
            await kvDelete(coordination, key);
          },
        };
      }
      case 'session_prefix':
        return {
          what: 'session create',
          run: async () => {
            const created = await createLockSession(coordination, {
              name: `consul-acme ${instanceName} permission check`,
              ttl: '10s',
              behavior: 'delete',
            });
            const id = created?.ID;
            if (typeof id !== 'string' || id === '')
              throw new ConsulAcmeError('CONSUL_UNAVAILABLE', 'session create: Consul returned no session ID', {
                retryable: true,
              });
            await coordination.session.destroy(id);
          },
        };
      case 'service': {
        const id = `${rule.name}-${instanceName}-permission-check`;
        return {
          what: `agent service register ${id}`,
          run: async () => {
            await consul.agent.service.register({
              id,
              name: rule.name,
              tags: [],
              meta: { consul_acme_permission_check: 'true' },
            });
            await consul.agent.service.deregister(id);
          },
        };
      }
      default:
        return undefined;
    }
  }
}
