/**
 * Adoption: taking over a certificate record consul-acme did not write (no `managed_by`), such as
 * one a certbot script, a tags-to-Vault exporter or lego put in Fabio's layout. Pure.
 *
 * Adoption is opt-in, per name: by the setting CONSUL_ACME_ADOPT (`all`, or a list of names and
 * `*.` patterns, matched like the policy lists: src/domain/policy.ts) or by the operator's
 * `consul-acme adopt` command. A record is adopted only when its certificate and key load and
 * match, the certificate has not expired, and it is valid for the record's name, which must be
 * declared now; anything else is left alone, with the refusal shown in the status.
 */
import type { CertificateFacts } from './certificate.js';
import { matchPattern, parsePattern } from './policy.js';

/** Why a record consul-acme did not write is not adopted. */
export const ADOPTION_REFUSALS = ['NotDeclared', 'Unreadable', 'Expired', 'NameNotCovered'] as const;
export type AdoptionRefusal = (typeof ADOPTION_REFUSALS)[number];

/** What each refusal means, for the status and the command's answer. */
export const ADOPTION_REFUSAL_TEXT: Readonly<Record<AdoptionRefusal, string>> = Object.freeze({
  NotDeclared: 'the name is not declared by any service (or is refused by the policy lists)',
  Unreadable: 'its certificate or key cannot be loaded, does not match, or has a key type consul-acme does not issue',
  Expired: 'its certificate has expired',
  NameNotCovered: "the record's name is not among the certificate's DNS names",
});

/** Which names CONSUL_ACME_ADOPT lets consul-acme take over: none, every declared one, or those matching a pattern. */
export type AdoptionSetting = 'off' | 'all' | readonly string[];

/**
 * Parses CONSUL_ACME_ADOPT: `off`, `all`, or a comma-separated list of hostnames and `*.` patterns
 * (`*` is exactly one label). Every bad entry is reported.
 */
export function parseAdoptionSetting(
  raw: string | readonly string[],
): { ok: true; value: AdoptionSetting } | { ok: false; problem: string } {
  const items = (typeof raw === 'string' ? raw.split(',') : [...raw]).map((item) => item.trim().toLowerCase());
  const entries = items.filter((item) => item !== '');
  if (entries.length === 0 || (entries.length === 1 && entries[0] === 'off')) return { ok: true, value: 'off' };
  if (entries.length === 1 && entries[0] === 'all') return { ok: true, value: 'all' };
  const patterns: string[] = [];
  const problems: string[] = [];
  for (const entry of entries) {
    if (entry === 'off' || entry === 'all') {
      problems.push(`"${entry}" must stand alone`);
      continue;
    }
    const parsed = parsePattern(entry);
    if (parsed.ok) patterns.push(parsed.pattern);
    else problems.push(`"${entry}": ${parsed.reason}`);
  }
  if (problems.length > 0)
    return { ok: false, problem: `must be off, all, or hostnames and *. patterns: ${problems.join('; ')}` };
  return { ok: true, value: Object.freeze([...new Set(patterns)]) };
}

/** Whether the setting lets consul-acme adopt a record under `hostname`. */
export function adoptionAllowed(setting: AdoptionSetting | undefined, hostname: string): boolean {
  if (setting === undefined || setting === 'off') return false;
  if (setting === 'all') return true;
  return setting.some((pattern) => matchPattern(hostname, pattern));
}

/**
 * Why the record under `hostname` cannot be adopted at `now`, or undefined when it can.
 * `foreign` is what the record's certificate says (StoredFacts.foreign): undefined when the
 * certificate or key cannot be loaded, do not match, or the key type is not one consul-acme issues.
 */
export function adoptionRefusal(
  now: Date,
  hostname: string,
  foreign: CertificateFacts | undefined,
): AdoptionRefusal | undefined {
  if (foreign === undefined) return 'Unreadable';
  if (now.getTime() >= foreign.notAfter.getTime()) return 'Expired';
  if (!foreign.hostnames.includes(hostname)) return 'NameNotCovered';
  return undefined;
}
