/**
 * `run` fixes V8's heap growing factor (src/heap-growth.ts): after a burst of allocation over a
 * live heap, the process holds a smaller heap than with V8's own choice. Each case runs a fresh
 * node process with the same burst; a full collection after the live heap is built (`gc()`) sets
 * the limit the burst grows from, so the figures do not depend on when V8 first collected.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { fixHeapGrowth } from '../../src/heap-growth.js';

const MODULE = fileURLToPath(new URL('../../src/heap-growth.js', import.meta.url));

/** 30 MB live, then a burst that keeps some 60,000 short-lived objects alive at a time. */
const BURST = `
const live = [];
for (let i = 0; i < 300000; i++) live.push({ a: i, b: 'x' + i, c: [i] });
gc();
let young = [];
let peak = 0;
for (let round = 0; round < 300; round++) {
  for (let i = 0; i < 20000; i++) young.push({ i, s: 'y' + i });
  if (young.length > 60000) young = young.slice(-20000);
  peak = Math.max(peak, process.memoryUsage().heapTotal);
  await new Promise((resolve) => setImmediate(resolve));
}
process.stdout.write(JSON.stringify({ applied: globalThis.applied ?? null, peakMb: peak / 1e6, live: live.length }));
`;

function burst(opts: { fix: boolean; nodeArgs?: string[] }): { applied: string | null; peakMb: number } {
  const fix = opts.fix
    ? `const { fixHeapGrowth } = await import(${JSON.stringify(MODULE)}); globalThis.applied = fixHeapGrowth(process.execArgv) ?? null;`
    : '';
  const args = [...(opts.nodeArgs ?? []), '--expose-gc', '--input-type=module', '-e', fix + BURST];
  const out = spawnSync(process.execPath, args, {
    encoding: 'utf8',
  });
  assert.equal(out.status, 0, out.stderr);
  return JSON.parse(out.stdout) as { applied: string | null; peakMb: number };
}

describe('heap growth', () => {
  test('the same burst holds a smaller heap with the factor fixed than with V8 choosing it', () => {
    const chosen = burst({ fix: false });
    const fixed = burst({ fix: true });
    assert.equal(fixed.applied, '--heap-growing-percent=100');
    assert.ok(
      fixed.peakMb < chosen.peakMb * 0.85,
      `peak heap ${fixed.peakMb.toFixed(1)} MB fixed, ${chosen.peakMb.toFixed(1)} MB as V8 chose`,
    );
  });

  test('a factor set on the node command line is left as it is', () => {
    const run = burst({ fix: true, nodeArgs: ['--heap-growing-percent=300'] });
    assert.equal(run.applied, null);
    assert.equal(fixHeapGrowth(['--heap-growing-percent=300']), undefined);
  });
});
