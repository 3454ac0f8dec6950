/**
 * The certificate health the Consul check reports, as a pure function of the status lines:
 * critical when a certificate has expired or has failed on every step of the retry schedule,
 * warning when one expires within the warning window, passing otherwise.
 */
export type HealthStatus = 'passing' | 'warning' | 'critical';

export interface CertificateHealthInput {
  hostname: string;
  expiresAt: string | undefined;
  /** Consecutive failed attempts. */
  attempts: number;
}

export interface CertificateHealth {
  status: HealthStatus;
  /**
   * One sentence per hostname that is not passing, worst first; past MAX_HEALTH_PROBLEMS, a last
   * line says how many more there are.
   */
  problems: string[];
}

export function certificateHealth(
  now: Date,
  certificates: readonly CertificateHealthInput[],
  options: { warnBeforeMs: number; criticalAfterFailures: number },
): CertificateHealth {
  const critical: string[] = [];
  const warning: string[] = [];
  for (const c of certificates) {
    const expiresAt = c.expiresAt ? Date.parse(c.expiresAt) : undefined;
    if (expiresAt !== undefined && expiresAt <= now.getTime())
      critical.push(`${c.hostname}: expired at ${c.expiresAt}`);
    else if (c.attempts >= options.criticalAfterFailures)
      critical.push(`${c.hostname}: failed ${c.attempts} times in a row`);
    else if (expiresAt !== undefined && expiresAt - now.getTime() < options.warnBeforeMs)
      warning.push(`${c.hostname}: expires at ${c.expiresAt}`);
  }
  const status: HealthStatus = critical.length > 0 ? 'critical' : warning.length > 0 ? 'warning' : 'passing';
  const problems = [...critical, ...warning];
  if (problems.length <= MAX_HEALTH_PROBLEMS) return { status, problems };
  const more = problems.length - MAX_HEALTH_PROBLEMS;
  return {
    status,
    problems: [...problems.slice(0, MAX_HEALTH_PROBLEMS), `and ${more} more hostnames (GET /status lists them all)`],
  };
}

/**
 * Most hostname lines in the health: Consul keeps about 4 KB of a check's output
 * (docs/protocols.md §1.3), and at 10,000 failing names the whole list was 600 KB every 10 s.
 */
export const MAX_HEALTH_PROBLEMS = 50;

/** Consul HTTP checks read 2xx as passing, 429 as warning and anything else as critical. */
export const HEALTH_HTTP_STATUS: Record<HealthStatus, number> = { passing: 200, warning: 429, critical: 503 };

/**
 * Puts a failing certificate store first and makes the health critical: the certificates a reader
 * needs may not be readable, and none can be written. `storeError` undefined leaves it as it is.
 */
export function withStoreFault(health: CertificateHealth, storeError: string | undefined): CertificateHealth {
  if (storeError === undefined) return health;
  return { status: 'critical', problems: [`certificate store: ${storeError}`, ...health.problems] };
}

/** A sink as the health check sees it. */
export interface FailingSinkInput {
  name: string;
  failingSince: string | undefined;
  lastError: string | undefined;
}

/**
 * Adds the sinks that have been failing for too long (the caller picks them) to the health: at
 * least warning, since the store holds good certificates that a proxy may not be serving.
 */
export function withFailingSinks(health: CertificateHealth, sinks: readonly FailingSinkInput[]): CertificateHealth {
  if (sinks.length === 0) return health;
  const problems = sinks.map(
    (s) =>
      `sink ${s.name}: failing since ${s.failingSince ?? 'an unknown time'}: ${s.lastError ?? 'no error recorded'}`,
  );
  return {
    status: health.status === 'critical' ? 'critical' : 'warning',
    problems: [...health.problems, ...problems],
  };
}
