/**
 * How far V8 lets the heap grow past what is live before it collects the old generation.
 *
 * V8 picks that factor itself, between 1.1 and 4 on a machine with a gigabyte or more: 4 when the
 * process allocates fast, 1.1 when it has been quiet. Both ends hurt a long-running instance that
 * holds thousands of names (docs/operations.md, "Resource sizing"): a start-up burst lets a heap
 * of 35 MB live grow to some 150 MB before the next full collection, and after a quiet spell the
 * next catalog change, with a limit a few MB above the live heap, pays for a full collection
 * itself. `run` fixes the factor at HEAP_GROWTH_FACTOR instead, with V8's `--heap-growing-percent`
 * flag, which V8 reads at each collection; set on the node command line, that flag wins.
 *
 * V8 starts marking while the heap is still a young generation's size (up to 16 MB) short of the
 * limit, so at 1.5 a heap of 35 MB live began a full collection after 5–9 MB had been promoted:
 * every third or fourth catalog change at 10,000 names, each such change paying 50–100 ms of
 * marking on V8's helper threads. At 2 it is rarer (three changes in 20), and the heap's peaks stay
 * within the same bounds (docs/operations.md).
 */
import v8 from 'node:v8';

/** The heap may grow to this many times its live size before a full collection. */
export const HEAP_GROWTH_FACTOR = 2;

const FLAG = '--heap-growing-percent';

/**
 * Fixes V8's heap growing factor at HEAP_GROWTH_FACTOR, unless `execArgv` (node's own options)
 * sets it. Returns the flag applied, or undefined when node's options set it.
 */
export function fixHeapGrowth(execArgv: readonly string[]): string | undefined {
  if (execArgv.some((arg) => arg === FLAG || arg.startsWith(`${FLAG}=`) || arg.startsWith('--heap_growing_percent')))
    return undefined;
  const flag = `${FLAG}=${Math.round((HEAP_GROWTH_FACTOR - 1) * 100)}`;
  v8.setFlagsFromString(flag);
  return flag;
}
