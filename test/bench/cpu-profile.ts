/**
 * Summarizes a V8 CPU profile (`node --cpu-prof` writes one `.cpuprofile` when the process exits):
 * the functions with the most self time, and the same time by file or package, over the whole
 * profile or over a window of wall-clock time (a benchmark phase).
 *
 * A profile's times are microseconds on a monotonic clock; `exitAtMs` (epoch ms when the process
 * was seen to exit) ties the profile's end to the wall clock, so that a phase the benchmark timed
 * in epoch ms can be cut out of it (to within the few milliseconds between the profile's end and
 * the exit).
 *
 *   node dist/test/bench/cpu-profile.js <file.cpuprofile> [--top N]
 *     [--exit-at EPOCH_MS --from EPOCH_MS --to EPOCH_MS]
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber: number;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
}

export interface CpuProfile {
  nodes: ProfileNode[];
  /** Microseconds. */
  startTime: number;
  endTime: number;
  samples: number[];
  /** Microseconds between consecutive samples (the first from startTime). */
  timeDeltas: number[];
}

export interface ProfileWindow {
  /** Epoch ms the profiled process exited (the profile's endTime). */
  exitAtMs: number;
  fromMs: number;
  toMs: number;
}

export interface SelfTime {
  name: string;
  where: string;
  ms: number;
}

export interface ProfileSummary {
  /** Wall-clock ms covered. */
  coveredMs: number;
  /** Ms in samples that were not `(idle)`: JavaScript, GC, native and `(program)`. */
  busyMs: number;
  functions: SelfTime[];
  /** Self time by file (our code) or package (node_modules), and Node's internals together. */
  files: SelfTime[];
}

/** `dist/src/engine/queue.js` → `src/engine/queue.js`; node_modules → the package. */
export function whereOf(url: string): string {
  if (url === '') return '(native)';
  if (url.startsWith('node:')) return 'node:internal';
  const modules = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (modules) return modules[1]!;
  const ours = /\/dist\/((?:src|test)\/.*)$/.exec(url);
  return ours ? ours[1]! : url.replace(/^file:\/\//, '');
}

export function summarizeProfile(profile: CpuProfile, window?: ProfileWindow): ProfileSummary {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const perFunction = new Map<string, SelfTime>();
  const perFile = new Map<string, SelfTime>();
  // Each sample lasts until the next one.
  let t = profile.startTime;
  let coveredUs = 0;
  let busyUs = 0;
  const toEpochMs = (us: number): number => (window ? window.exitAtMs - (profile.endTime - us) / 1000 : 0);
  for (let i = 0; i < profile.samples.length; i++) {
    t += profile.timeDeltas[i] ?? 0;
    const durationUs = profile.timeDeltas[i + 1] ?? 0;
    if (window) {
      const at = toEpochMs(t);
      if (at < window.fromMs || at >= window.toMs) continue;
    }
    coveredUs += durationUs;
    const node = byId.get(profile.samples[i]!);
    if (!node) continue;
    const frame = node.callFrame;
    if (frame.functionName === '(idle)') continue;
    busyUs += durationUs;
    const name = frame.functionName || '(anonymous)';
    const file = name.startsWith('(') ? name : whereOf(frame.url);
    const where = name.startsWith('(') ? '' : `${file}:${frame.lineNumber + 1}`;
    const key = `${name} ${where}`;
    const fn = perFunction.get(key) ?? { name, where, ms: 0 };
    fn.ms += durationUs / 1000;
    perFunction.set(key, fn);
    const f = perFile.get(file) ?? { name: file, where: '', ms: 0 };
    f.ms += durationUs / 1000;
    perFile.set(file, f);
  }
  const sorted = (m: Map<string, SelfTime>): SelfTime[] => [...m.values()].sort((a, b) => b.ms - a.ms);
  return {
    coveredMs: coveredUs / 1000,
    busyMs: busyUs / 1000,
    functions: sorted(perFunction),
    files: sorted(perFile),
  };
}

/** The summary as text: the busy time, then the top `top` functions and files by self time. */
export function formatProfileSummary(summary: ProfileSummary, top = 15): string {
  const pct = (x: number): string => `${((100 * x) / Math.max(summary.busyMs, 1e-9)).toFixed(1)} %`;
  const lines = [
    `    ${summary.busyMs.toFixed(0)} ms busy in ${(summary.coveredMs / 1000).toFixed(1)} s profiled ` +
      `(${((100 * summary.busyMs) / Math.max(summary.coveredMs, 1e-9)).toFixed(1)} % of a core)`,
    `    top self time, by function:`,
    ...summary.functions
      .slice(0, top)
      .map((f) => `      ${f.ms.toFixed(0).padStart(7)} ms ${pct(f.ms).padStart(7)}  ${f.name}  ${f.where}`),
    `    by file or package:`,
    ...summary.files
      .slice(0, Math.min(top, 10))
      .map((f) => `      ${f.ms.toFixed(0).padStart(7)} ms ${pct(f.ms).padStart(7)}  ${f.name}`),
  ];
  return lines.join('\n');
}

export function readProfile(path: string): CpuProfile {
  return JSON.parse(readFileSync(path, 'utf8')) as CpuProfile;
}

function main(): void {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      top: { type: 'string' },
      'exit-at': { type: 'string' },
      from: { type: 'string' },
      to: { type: 'string' },
    },
  });
  const file = positionals[0];
  if (!file) throw new Error('usage: cpu-profile.js <file.cpuprofile> [--top N] [--exit-at MS --from MS --to MS]');
  const window =
    values['exit-at'] !== undefined
      ? {
          exitAtMs: Number(values['exit-at']),
          fromMs: Number(values.from ?? 0),
          toMs: Number(values.to ?? Number.MAX_SAFE_INTEGER),
        }
      : undefined;
  process.stdout.write(
    `${formatProfileSummary(summarizeProfile(readProfile(file), window), Number(values.top ?? 15))}\n`,
  );
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  try {
    main();
  } catch (err) {
    process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  }
}
