/**
 * The desired set: which hostnames the Consul catalog asks certificates for. Pure and
 * deterministic: the same catalog gives the same output, in the same order, every time.
 */
import { normalizeHostname } from './hostname.js';
import type { DeclaredHostname, RejectedHostname } from './hostnames-types.js';
import { hostnamesFromTag, isEnableTag, type TagParseOptions } from './tags.js';

export interface DesiredOptions extends TagParseOptions {
  /** When true, only services carrying `<tagPrefix>.enable` are read. */
  requireEnableTag: boolean;
}

export interface DesiredSet {
  /** Valid, normalised hostnames, sorted by hostname, each with the sorted services that declared it. */
  hostnames: DeclaredHostname[];
  /** Names and tags we refused, sorted by value, service, tag, reason; no duplicates. */
  rejected: RejectedHostname[];
}

/** Code-unit order: the same on every machine, unlike localeCompare. */
function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function compareRejected(a: RejectedHostname, b: RejectedHostname): number {
  return (
    compareStrings(a.value, b.value) ||
    compareStrings(a.service, b.service) ||
    compareStrings(a.tag, b.tag) ||
    compareStrings(a.reason, b.reason)
  );
}

/**
 * Computes the desired set from a catalog snapshot (`/v1/catalog/services`: service name → tags).
 * Malformed tags and invalid names are reported in `rejected`, never thrown.
 */
export function desiredFromCatalog(services: Record<string, string[]>, options: DesiredOptions): DesiredSet {
  const servicesByHostname = new Map<string, Set<string>>();
  const rejectedByKey = new Map<string, RejectedHostname>();
  const reject = (entry: RejectedHostname): void => {
    rejectedByKey.set(JSON.stringify([entry.value, entry.reason, entry.service, entry.tag]), entry);
  };

  for (const [service, tags] of Object.entries(services)) {
    if (!Array.isArray(tags)) continue;
    if (options.requireEnableTag && !tags.some((tag) => isEnableTag(tag, options))) continue;
    for (const tag of tags) {
      const parsed = hostnamesFromTag(tag, options);
      if (parsed.malformed !== undefined) reject({ value: tag, reason: parsed.malformed, service, tag });
      for (const name of parsed.names) {
        const result = normalizeHostname(name);
        if (!result.ok) {
          reject({ value: name, reason: result.reason, service, tag });
          continue;
        }
        const declaredBy = servicesByHostname.get(result.hostname) ?? new Set<string>();
        declaredBy.add(service);
        servicesByHostname.set(result.hostname, declaredBy);
      }
    }
  }

  const hostnames = [...servicesByHostname.entries()]
    .map(([hostname, declaredBy]) => ({ hostname, services: [...declaredBy].sort(compareStrings) }))
    .sort((a, b) => compareStrings(a.hostname, b.hostname));
  const rejected = [...rejectedByKey.values()].sort(compareRejected);
  return { hostnames, rejected };
}
