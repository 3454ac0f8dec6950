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
export function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

export function compareRejected(a: RejectedHostname, b: RejectedHostname): number {
  return (
    compareStrings(a.value, b.value) ||
    compareStrings(a.service, b.service) ||
    compareStrings(a.tag, b.tag) ||
    compareStrings(a.reason, b.reason)
  );
}

/** What one service declares: its valid hostnames (normalised, sorted, unique) and what was refused. */
export interface ServiceDeclarations {
  hostnames: string[];
  rejected: RejectedHostname[];
}

/**
 * The hostnames one service declares through its tags. Pure; malformed tags and invalid names go
 * to `rejected`, never thrown. A service without the enable tag declares nothing when
 * `requireEnableTag` is set.
 */
export function serviceDeclarations(
  service: string,
  tags: readonly string[],
  options: DesiredOptions,
): ServiceDeclarations {
  const hostnames = new Set<string>();
  const rejectedByKey = new Map<string, RejectedHostname>();
  const reject = (entry: RejectedHostname): void => {
    rejectedByKey.set(JSON.stringify([entry.value, entry.reason, entry.service, entry.tag]), entry);
  };
  if (!Array.isArray(tags)) return { hostnames: [], rejected: [] };
  if (options.requireEnableTag && !tags.some((tag) => isEnableTag(tag, options)))
    return { hostnames: [], rejected: [] };
  for (const tag of tags) {
    const parsed = hostnamesFromTag(tag, options);
    if (parsed.malformed !== undefined) reject({ value: tag, reason: parsed.malformed, service, tag });
    for (const name of parsed.names) {
      const result = normalizeHostname(name);
      if (result.ok) hostnames.add(result.hostname);
      else reject({ value: name, reason: result.reason, service, tag });
    }
  }
  return {
    hostnames: [...hostnames].sort(compareStrings),
    rejected: [...rejectedByKey.values()].sort(compareRejected),
  };
}

/**
 * Computes the desired set from a catalog snapshot (`/v1/catalog/services`: service name → tags).
 * Malformed tags and invalid names are reported in `rejected`, never thrown.
 */
export function desiredFromCatalog(services: Record<string, string[]>, options: DesiredOptions): DesiredSet {
  const servicesByHostname = new Map<string, Set<string>>();
  const rejected: RejectedHostname[] = [];
  for (const [service, tags] of Object.entries(services)) {
    const declared = serviceDeclarations(service, tags, options);
    rejected.push(...declared.rejected);
    for (const hostname of declared.hostnames) {
      const declaredBy = servicesByHostname.get(hostname) ?? new Set<string>();
      declaredBy.add(service);
      servicesByHostname.set(hostname, declaredBy);
    }
  }
  const hostnames = [...servicesByHostname.entries()]
    .map(([hostname, declaredBy]) => ({ hostname, services: [...declaredBy].sort(compareStrings) }))
    .sort((a, b) => compareStrings(a.hostname, b.hostname));
  return { hostnames, rejected: rejected.sort(compareRejected) };
}
