/**
 * The Vault half of the start-up self-check: one `POST sys/capabilities-self` (docs/protocols.md
 * §3.2) asks what the token may do on every path the stores and the token renewal use, exactly the
 * rules serviceVaultRules() in src/deploy-contract.ts computes (the same rules
 * deploy/vault-policy.hcl is checked against). A wildcard rule (`…/certs/*`) is asked for one
 * concrete name under it; a list rule is asked with its trailing slash, as Vault checks a LIST.
 * Nothing is written: the certificate prefix Fabio reads never sees a probe.
 */
import { ConsulAcmeError } from '../../errors.js';
import type { MissingPermission, PermissionCheck } from '../../ports/permission-check.js';
import { serviceVaultRules, type VaultLayout, type VaultRule } from '../../deploy-contract.js';
import { classifyVaultError, type VaultClient } from './vault-client.js';

/** The name asked for under a wildcard rule; never written. */
export const PERMISSION_PROBE_NAME = 'consul-acme-permission-check';

/** The concrete path Vault is asked about for `rule`. */
export function probePathOf(rule: VaultRule): string {
  return rule.path.endsWith('/*') ? `${rule.path.slice(0, -1)}${PERMISSION_PROBE_NAME}` : rule.path;
}

/** The capabilities `rule` needs that `granted` lacks (`root` grants everything, `deny` nothing). */
export function missingCapabilities(rule: VaultRule, granted: readonly string[]): string[] {
  if (granted.includes('root')) return [];
  if (granted.includes('deny')) return [...rule.capabilities];
  return rule.capabilities.filter((capability) => !granted.includes(capability));
}

function capabilityList(value: unknown): string[] | undefined {
  return Array.isArray(value) && value.every((v) => typeof v === 'string') ? value : undefined;
}

export class VaultPermissionCheck implements PermissionCheck {
  readonly name = 'vault';
  private readonly rules: VaultRule[];

  constructor(private readonly opts: { client: VaultClient; layout: VaultLayout }) {
    this.rules = serviceVaultRules(opts.layout);
  }

  async check(signal?: AbortSignal): Promise<MissingPermission[]> {
    signal?.throwIfAborted();
    const paths = this.rules.map(probePathOf);
    let response: Record<string, unknown>;
    try {
      response = ((await this.opts.client.write('sys/capabilities-self', { paths })) ?? {}) as Record<string, unknown>;
    } catch (err) {
      throw classifyVaultError(err, 'write sys/capabilities-self');
    }
    const data = (typeof response.data === 'object' && response.data !== null ? response.data : {}) as Record<
      string,
      unknown
    >;
    const missing: MissingPermission[] = [];
    for (const [i, rule] of this.rules.entries()) {
      const path = paths[i]!;
      // Vault answers in `data` and, for older clients, at the top level too.
      const granted = capabilityList(data[path]) ?? capabilityList(response[path]);
      if (granted === undefined) {
        throw new ConsulAcmeError(
          'STORE_UNAVAILABLE',
          `write sys/capabilities-self: Vault's answer has no entry for ${path}`,
          {
            retryable: true,
          },
        );
      }
      const lacking = missingCapabilities(rule, granted);
      if (lacking.length === 0) continue;
      missing.push({
        system: 'vault',
        permission: `${lacking.join(', ')} on "${rule.path}"`,
        neededFor: rule.why,
        detail: `the token has [${granted.join(', ')}] on ${path}`,
      });
    }
    return missing;
  }
}
