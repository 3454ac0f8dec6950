/**
 * The retry table: how long to wait after consecutive failures. Pure and deterministic; the
 * queue owns the waiting, and jitter takes its randomness as an argument.
 */

/** 1 min, 2 min, 5 min, 10 min, 30 min, 1 h, 2 h, 6 h, 12 h, then 24 h for every later failure. */
export const DEFAULT_RETRY_SCHEDULE_MS: readonly number[] = Object.freeze([
  60_000, 120_000, 300_000, 600_000, 1_800_000, 3_600_000, 7_200_000, 21_600_000, 43_200_000, 86_400_000,
]);

/**
 * Delay before the next attempt after `consecutiveFailures` failures in a row: failure 1 waits
 * schedule[0], failures past the end wait the last entry (counts below 1 count as 1). A server's
 * Retry-After (ms) longer than the scheduled delay wins; a shorter or invalid one is ignored.
 */
export function retryDelayMs(
  consecutiveFailures: number,
  schedule: readonly number[] = DEFAULT_RETRY_SCHEDULE_MS,
  retryAfterMs?: number,
): number {
  if (schedule.length === 0) throw new RangeError('retry schedule is empty');
  const failures = Number.isFinite(consecutiveFailures) ? Math.max(1, Math.floor(consecutiveFailures)) : 1;
  const scheduledMs = schedule[Math.min(failures, schedule.length) - 1] ?? 0;
  if (retryAfterMs !== undefined && Number.isFinite(retryAfterMs) && retryAfterMs > scheduledMs) {
    return Math.ceil(retryAfterMs);
  }
  return scheduledMs;
}

/**
 * The schedule `minMs, 2·minMs, 4·minMs, …` up to `maxMs` (its last entry), for `retryDelayMs`:
 * exponential backoff is a schedule like any other, so every wait in the service goes through the
 * one function above.
 */
export function exponentialSchedule(minMs: number, maxMs: number): readonly number[] {
  if (!(minMs > 0) || !(maxMs >= minMs))
    throw new RangeError(`exponential schedule needs 0 < min <= max (got ${minMs}, ${maxMs})`);
  const schedule: number[] = [];
  for (let delay = minMs; delay < maxMs; delay *= 2) schedule.push(delay);
  schedule.push(maxMs);
  return Object.freeze(schedule);
}

/**
 * Adds up to `fraction` × delay of jitter, so instances that failed together do not retry
 * together. Only ever lengthens the delay, so a Retry-After folded into it is still honoured.
 * `random` returns a number in [0, 1) (Math.random in production, a constant in tests).
 */
export function jitterMs(delayMs: number, fraction: number, random: () => number): number {
  const r = Math.min(Math.max(random(), 0), 1);
  const spread = Math.max(0, fraction) * Math.max(0, delayMs);
  return Math.round(Math.max(0, delayMs) + spread * (Number.isFinite(r) ? r : 0));
}
