/** One complete view of the Consul catalog: service name → the union of its instances' tags. */
export interface CatalogSnapshot {
  services: Record<string, string[]>;
  /** The X-Consul-Index the snapshot was read at. */
  index: number;
}

/**
 * Watches the service catalog.
 *
 * Contract (test/contract/discovery.contract.test.ts):
 * - `watch` calls `onSnapshot` with whole snapshots, never deltas; the first call is the initial
 *   state. It calls again only when the content changed (a blocking query returning the same data
 *   is not a change).
 * - It retries errors itself with backoff, reporting each through `onError`, and never rejects
 *   for a transient error. It resolves when `signal` aborts.
 * - `onSnapshot` is awaited before the next query, so a slow consumer slows the loop rather than
 *   piling up snapshots.
 */
export interface Discovery {
  watch(
    signal: AbortSignal,
    onSnapshot: (snapshot: CatalogSnapshot) => Promise<void> | void,
    onError?: (err: unknown) => void,
  ): Promise<void>;
}
