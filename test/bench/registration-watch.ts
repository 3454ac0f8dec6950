/**
 * Watches consul-acme's own registration in the Consul catalog, as a router reading the catalog
 * sees it: a blocking query on `/v1/catalog/service/<name>` (docs/protocols.md §1.1), one answer
 * per change, so a 600 KB registration is not fetched again and again while nothing changes. For
 * every tag it records when it was first seen, which gives "tag registered → the name's challenge
 * route registered" without polling.
 */
import { sleep } from './harness.js';

const WAIT = '60s';
const REQUEST_TIMEOUT_MS = 90_000;
const ERROR_DELAY_MS = 500;

export interface RegistrationWatch {
  /** Epoch ms when `tag` was first seen on any instance of the service; undefined if never. */
  firstSeen(tag: string): number | undefined;
  /** Resolves with the epoch ms by which every one of `tags` had been seen; undefined when they were not within `timeoutMs`. */
  waitForTags(tags: readonly string[], timeoutMs: number): Promise<number | undefined>;
  /** Tags and registrations (instances: consul-acme's shards) at the last answer. */
  size(): { tags: number; registrations: number };
  /** Bytes of the last answer (every instance of the service). */
  lastAnswerBytes(): number;
  /** Answers received so far. */
  answers(): number;
  stop(): void;
}

interface CatalogEntry {
  ServiceID: string;
  ServiceTags: string[] | null;
}

export function watchRegistration(consulAddress: string, serviceName: string): RegistrationWatch {
  const seen = new Map<string, number>();
  const tagsByInstance = new Map<string, number>();
  const waiters = new Set<() => void>();
  const abort = new AbortController();
  let index = '1';
  let answerCount = 0;
  let bytes = 0;

  const loop = async (): Promise<void> => {
    while (!abort.signal.aborted) {
      try {
        const res = await fetch(
          `${consulAddress}/v1/catalog/service/${encodeURIComponent(serviceName)}?index=${index}&wait=${WAIT}`,
          { signal: AbortSignal.any([abort.signal, AbortSignal.timeout(REQUEST_TIMEOUT_MS)]) },
        );
        const body = await res.text();
        const at = Date.now();
        if (!res.ok) throw new Error(`catalog answered ${res.status}`);
        const next = res.headers.get('x-consul-index') ?? '1';
        // An index that went backwards starts over (docs/protocols.md §1.1); never below 1.
        index = Number(next) >= 1 && Number(next) >= Number(index) ? next : '1';
        answerCount++;
        bytes = Buffer.byteLength(body);
        tagsByInstance.clear();
        for (const entry of JSON.parse(body) as CatalogEntry[]) {
          const tags = entry.ServiceTags ?? [];
          tagsByInstance.set(entry.ServiceID, tags.length);
          for (const tag of tags) if (!seen.has(tag)) seen.set(tag, at);
        }
        for (const wake of [...waiters]) wake();
      } catch {
        if (abort.signal.aborted) return;
        await sleep(ERROR_DELAY_MS);
      }
    }
  };
  void loop();

  return {
    firstSeen: (tag) => seen.get(tag),
    async waitForTags(tags, timeoutMs) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const times = tags.map((tag) => seen.get(tag));
        if (times.every((t) => t !== undefined)) return Math.max(...times);
        const left = deadline - Date.now();
        if (left <= 0) return undefined;
        await new Promise<void>((resolve) => {
          const timer = setTimeout(done, Math.min(left, 1_000));
          function done(): void {
            clearTimeout(timer);
            waiters.delete(done);
            resolve();
          }
          waiters.add(done);
        });
      }
    },
    size: () => ({
      tags: [...tagsByInstance.values()].reduce((a, b) => a + b, 0),
      registrations: tagsByInstance.size,
    }),
    lastAnswerBytes: () => bytes,
    answers: () => answerCount,
    stop: () => abort.abort(),
  };
}
