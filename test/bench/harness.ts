/**
 * What every mode of `npm run bench` shares: reading a process's CPU, memory and open files from
 * /proc, the cleanup of everything a run started (on success, failure, the overall deadline and
 * Ctrl-C), consul-acme as a child process (`node dist/src/main.js run`) whose JSON log lines are
 * counted as they arrive, and the printing of figures.
 *
 * Nothing here asserts: a benchmark prints figures (docs/operations.md "Resource sizing" quotes them).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import { formatProfileSummary, readProfile, summarizeProfile } from './cpu-profile.js';

export const MAIN_JS = fileURLToPath(new URL('../../src/main.js', import.meta.url));
const MAX_OUTPUT_CHARS = 64 * 1024;

// ---------------------------------------------------------------------------------------------
// /proc

export interface ProcSample {
  /** Epoch ms. */
  at: number;
  /** VmRSS, KiB. */
  rssKb: number;
  /** VmHWM (peak RSS since start), KiB. */
  hwmKb: number;
  /**
   * CPU seconds of every thread: the scheduler's nanosecond run times (`/proc/<pid>/task/<tid>/schedstat`)
   * when the kernel keeps them, else utime + stime in clock ticks.
   */
  cpuSeconds: number;
  /** The same for the main thread (JavaScript) alone. */
  mainCpuSeconds: number;
}

export const CLOCK_TICKS_PER_SECOND = ((): number => {
  const out = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' });
  const n = Number(out.stdout?.trim());
  return Number.isInteger(n) && n > 0 ? n : 100;
})();

/** One CPU tick in seconds: the resolution of the CPU counts in /proc/<pid>/stat (the fallback when the scheduler keeps no run times). */
export const CPU_TICK_SECONDS = 1 / CLOCK_TICKS_PER_SECOND;

export function sampleProc(pid: number): ProcSample {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string): number => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  const run = schedulerRunSeconds(pid) ?? tickRunSeconds(pid);
  return { at: Date.now(), rssKb: kb('VmRSS'), hwmKb: kb('VmHWM'), cpuSeconds: run.all, mainCpuSeconds: run.main };
}

/** utime + stime from /proc/<pid>/stat, in clock ticks, for the whole process and (the same) its main thread. */
function tickRunSeconds(pid: number): { all: number; main: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name in parentheses start at field 3 (state); utime is 14, stime 15.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const seconds = (Number(fields[14 - 3]) + Number(fields[15 - 3])) / CLOCK_TICKS_PER_SECOND;
  return { all: seconds, main: seconds };
}

/**
 * Run time of every thread and of the main thread, in seconds to the nanosecond, from the
 * scheduler's statistics; undefined when the kernel does not keep them. A /proc/<pid>/stat tick
 * is 10 ms, as long as a cheap catalog change takes, so figures per change read these instead. A
 * thread that ends takes its time out of the sum; Node's threads live as long as the process.
 */
function schedulerRunSeconds(pid: number): { all: number; main: number } | undefined {
  const runNs = (path: string): number => Number(readFileSync(path, 'utf8').split(' ')[0]);
  try {
    const main = runNs(`/proc/${pid}/schedstat`);
    if (!Number.isFinite(main)) return undefined;
    let all = 0;
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      try {
        all += runNs(`/proc/${pid}/task/${tid}/schedstat`);
      } catch {
        // the thread ended meanwhile
      }
    }
    return { all: all / 1e9, main: main / 1e9 };
  } catch {
    return undefined;
  }
}

/** Open file descriptors of a process (sockets included); 0 once it is gone. */
export function openFileCount(pid: number): number {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return 0;
  }
}

/** CPU seconds per thread (`/proc/<pid>/task/<tid>/stat`): the main thread (JavaScript), and the others by name. */
export function threadCpuSeconds(pid: number): Map<string, number> {
  const byName = new Map<string, number>();
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return byName;
  }
  for (const tid of tids) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const user = Number(fields[14 - 3]) / CLOCK_TICKS_PER_SECOND;
      const system = Number(fields[15 - 3]) / CLOCK_TICKS_PER_SECOND;
      // libuv's pool and V8's helpers keep the process's name in Node 20.
      const key = tid === String(pid) ? 'main thread' : name === 'node' ? 'other threads' : name;
      byName.set(key, (byName.get(key) ?? 0) + user + system);
      if (key === 'main thread') byName.set(MAIN_THREAD_SYSTEM, system);
    } catch {
      // the thread ended meanwhile
    }
  }
  return byName;
}

/** The key under which `threadCpuSeconds` keeps the main thread's system (kernel) time, part of its total. */
export const MAIN_THREAD_SYSTEM = 'main thread, in the kernel';

/** Per thread name, the CPU seconds spent between two `threadCpuSeconds` readings; largest first. */
export function threadCpuDelta(before: Map<string, number>, after: Map<string, number>): Array<[string, number]> {
  return [...after.entries()]
    .map(([name, cpu]): [string, number] => [name, cpu - (before.get(name) ?? 0)])
    .filter(([, cpu]) => cpu > 0)
    .sort((a, b) => b[1] - a[1]);
}

export interface PhaseUsage {
  seconds: number;
  cpuSeconds: number;
  /** Of one core. */
  cpuPercent: number;
  startRssKb: number;
  maxRssKb: number;
  endRssKb: number;
  hwmKb: number;
}

/** Samples a process every `intervalMs` until stopped; keeps the maximum RSS seen. */
export class Sampler {
  private timer: NodeJS.Timeout | undefined;
  readonly first: ProcSample;
  last: ProcSample;
  maxRssKb: number;

  constructor(
    private readonly pid: number,
    intervalMs = 250,
  ) {
    this.first = sampleProc(pid);
    this.last = this.first;
    this.maxRssKb = this.first.rssKb;
    this.timer = setInterval(() => this.take(), intervalMs);
  }

  private take(): void {
    try {
      this.last = sampleProc(this.pid);
      this.maxRssKb = Math.max(this.maxRssKb, this.last.rssKb);
    } catch {
      // the process is gone; the caller notices
    }
  }

  stop(): PhaseUsage {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.take();
    const seconds = (this.last.at - this.first.at) / 1000;
    const cpuSeconds = this.last.cpuSeconds - this.first.cpuSeconds;
    return {
      seconds,
      cpuSeconds,
      cpuPercent: seconds > 0 ? (100 * cpuSeconds) / seconds : 0,
      startRssKb: this.first.rssKb,
      maxRssKb: this.maxRssKb,
      endRssKb: this.last.rssKb,
      hwmKb: this.last.hwmKb,
    };
  }
}

/** Counts a process's open file descriptors every `intervalMs` for its whole life; keeps the peak. */
export class FdWatch {
  private readonly timer: NodeJS.Timeout;
  peak = 0;

  constructor(
    private readonly pid: number,
    intervalMs = 250,
  ) {
    this.take();
    this.timer = setInterval(() => this.take(), intervalMs);
  }

  take(): number {
    const n = openFileCount(this.pid);
    this.peak = Math.max(this.peak, n);
    return n;
  }

  stop(): void {
    clearInterval(this.timer);
  }
}

// ---------------------------------------------------------------------------------------------
// Cleanup, failures and the overall deadline

const cleanups: Array<() => Promise<void> | void> = [];
let cleaningUp: Promise<void> | undefined;
let phase = 'starting';
let childOutput = (): string => '';

/** Registers a step run (newest first) when the run ends, however it ends. */
export function onCleanup(step: () => Promise<void> | void): void {
  cleanups.push(step);
}

export function cleanup(): Promise<void> {
  cleaningUp ??= (async () => {
    for (const fn of cleanups.splice(0).reverse()) {
      try {
        await fn();
      } catch (err) {
        process.stderr.write(`bench: cleanup step failed: ${err instanceof Error ? err.message : String(err)}\n`);
      }
    }
  })();
  return cleaningUp;
}

/** Runs the steps registered since `mark()` (newest first) and forgets them: the end of one part of a run. */
export async function cleanupSince(mark: number): Promise<void> {
  for (const fn of cleanups.splice(mark).reverse()) {
    try {
      await fn();
    } catch (err) {
      process.stderr.write(`bench: cleanup step failed: ${err instanceof Error ? err.message : String(err)}\n`);
    }
  }
}

/** How many cleanup steps are registered now (for `cleanupSince`). */
export function cleanupMark(): number {
  return cleanups.length;
}

/** Names what the run is doing, for the failure message. */
export function setPhase(name: string): void {
  phase = name;
  if (process.env.BENCH_PROGRESS !== '0') process.stderr.write(`bench: ${new Date().toISOString()} ${name}\n`);
}

/** Says something about progress on stderr (stdout keeps only the figures). */
export function progress(text: string): void {
  if (process.env.BENCH_PROGRESS !== '0') process.stderr.write(`bench:   ${text}\n`);
}

/** Where the output of the consul-acme child shown after a failure comes from. */
export function setChildOutput(source: () => string): void {
  childOutput = source;
}

export class BenchFailure extends Error {}

/** Stops the run from the main flow: main() reports it and cleans up. */
export function fail(message: string): never {
  throw new BenchFailure(message);
}

/** Reports a failure, cleans up and exits 1; safe from timers and signal handlers. */
export function abort(message: string): void {
  if (cleaningUp) return;
  process.stderr.write(`bench: FAILED during ${phase}: ${message}\n`);
  const output = childOutput();
  if (output !== '')
    process.stderr.write(`--- consul-acme output (last ${MAX_OUTPUT_CHARS / 1024} KiB) ---\n${output}\n`);
  void cleanup().finally(() => process.exit(1));
}

/** Bounds the whole run and makes Ctrl-C and SIGTERM clean up. Returns a function that lifts the deadline. */
export function guardRun(timeoutMs: number): () => void {
  const deadline = setTimeout(
    () => abort(`the benchmark did not finish within ${(timeoutMs / 60_000).toFixed(0)} minutes`),
    timeoutMs,
  );
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const)
    process.once(signal, () => abort(`interrupted by ${signal}`));
  return () => clearTimeout(deadline);
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------------------------------------
// consul-acme as a child process

/** A parsed JSON log line of the child. */
export interface LogLine {
  time?: string;
  msg?: string;
  event?: string;
  hostname?: string;
  err?: string;
  [field: string]: unknown;
}

export interface ExitState {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface ServiceChild {
  process: ChildProcess;
  pid: number;
  adminUrl: string;
  challengePort: number;
  exited(): ExitState | undefined;
  waitForExit(): Promise<ExitState>;
  /** How many log lines so far had `event` = `name`. */
  events(name: string): number;
  /** How many log lines so far had `msg` = `msg`. */
  messages(msg: string): number;
  /** Calls `listener` with every parsed log line from now on; returns a function that stops it. */
  onLine(listener: (line: LogLine) => void): () => void;
  /** Every line from now on for which `keep` is true (the array grows as lines arrive). */
  collect(keep: (line: LogLine) => boolean): LogLine[];
  /** The last 64 KiB of output. */
  output(): string;
  /** Log lines and bytes written so far. */
  logVolume(): { lines: number; bytes: number };
}

export interface SpawnServiceOptions {
  env: Record<string, string>;
  challengePort: number;
  adminPort: number;
  /** Options for node itself, before the script (`--cpu-prof` is refused in NODE_OPTIONS). */
  nodeArgs?: readonly string[];
}

/** Spawns `node dist/src/main.js run` with `env` (none of the bench's own CONSUL_/VAULT_/PEBBLE_ variables). */
export function spawnService(opts: SpawnServiceOptions): ServiceChild {
  const base: Record<string, string> = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (value !== undefined && !/^(CONSUL_|VAULT_|PEBBLE_)/.test(key)) base[key] = value;
  }
  const child = spawn(process.execPath, [...(opts.nodeArgs ?? []), MAIN_JS, 'run'], {
    env: { ...base, ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let raw = '';
  let partial = '';
  let lineCount = 0;
  let byteCount = 0;
  const eventCounts = new Map<string, number>();
  const messageCounts = new Map<string, number>();
  const listeners = new Set<(line: LogLine) => void>();
  let exitState: ExitState | undefined;
  const exitPromise = new Promise<ExitState>((resolve) => {
    child.once('exit', (code, signal) => {
      exitState = { code, signal };
      resolve(exitState);
    });
  });
  const append = (text: string): void => {
    raw += text;
    if (raw.length > 2 * MAX_OUTPUT_CHARS) raw = raw.slice(-MAX_OUTPUT_CHARS);
  };
  child.stdout?.on('data', (chunk: Buffer) => {
    byteCount += chunk.length;
    const text = chunk.toString('utf8');
    append(text);
    partial += text;
    const lines = partial.split('\n');
    partial = lines.pop() ?? '';
    for (const text of lines) {
      if (text === '') continue;
      lineCount++;
      let line: LogLine;
      try {
        line = JSON.parse(text) as LogLine;
      } catch {
        continue; // not JSON; kept in raw
      }
      if (typeof line.event === 'string') eventCounts.set(line.event, (eventCounts.get(line.event) ?? 0) + 1);
      if (typeof line.msg === 'string') messageCounts.set(line.msg, (messageCounts.get(line.msg) ?? 0) + 1);
      for (const listener of listeners) listener(line);
    }
  });
  child.stderr?.on('data', (chunk: Buffer) => append(`[stderr] ${chunk.toString('utf8')}`));
  child.on('error', (err) => append(`[spawn error] ${err.message}\n`));
  onCleanup(async () => {
    if (exitState) return;
    child.kill('SIGKILL');
    await exitPromise;
  });
  // The bench's own exit (even an unexpected one) takes the child with it.
  const killAtExit = (): void => {
    if (!exitState) child.kill('SIGKILL');
  };
  process.once('exit', killAtExit);
  void exitPromise.then(() => process.off('exit', killAtExit));
  return {
    process: child,
    pid: child.pid ?? -1,
    adminUrl: `http://127.0.0.1:${opts.adminPort}`,
    challengePort: opts.challengePort,
    exited: () => exitState,
    waitForExit: () => exitPromise,
    events: (name) => eventCounts.get(name) ?? 0,
    messages: (msg) => messageCounts.get(msg) ?? 0,
    onLine(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    collect(keep) {
      const kept: LogLine[] = [];
      listeners.add((line) => {
        if (keep(line)) kept.push(line);
      });
      return kept;
    },
    output: () => raw.slice(-MAX_OUTPUT_CHARS),
    logVolume: () => ({ lines: lineCount, bytes: byteCount }),
  };
}

/** SIGTERM, then the time until the process exited (SIGKILL after `timeoutMs`). */
export async function stopChild(
  child: ServiceChild,
  timeoutMs = 60_000,
): Promise<{ seconds: number; exit: ExitState; killed: boolean }> {
  const at = Date.now();
  child.process.kill('SIGTERM');
  const exit = await Promise.race([child.waitForExit(), sleep(timeoutMs).then(() => undefined)]);
  if (exit) return { seconds: (Date.now() - at) / 1000, exit, killed: false };
  child.process.kill('SIGKILL');
  return { seconds: (Date.now() - at) / 1000, exit: await child.waitForExit(), killed: true };
}

/** Polls `probe` until it gives a value; fails when the child exits or the deadline passes. */
export async function waitUntil<T>(
  what: string,
  child: Pick<ServiceChild, 'exited'> | undefined,
  probe: () => Promise<T | undefined> | T | undefined,
  timeoutMs: number,
  intervalMs = 100,
): Promise<T> {
  const value = await waitAtMost(what, child, probe, timeoutMs, intervalMs);
  if (value === undefined) fail(`timed out after ${(timeoutMs / 1000).toFixed(0)} s waiting for ${what}`);
  return value;
}

/**
 * Polls `probe` until it gives a value, for at most `timeoutMs`: undefined when it did not (a
 * figure that took too long is reported as such; the run goes on). Fails when the child exits.
 */
export async function waitAtMost<T>(
  what: string,
  child: Pick<ServiceChild, 'exited'> | undefined,
  probe: () => Promise<T | undefined> | T | undefined,
  timeoutMs: number,
  intervalMs = 100,
): Promise<T | undefined> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const state = child?.exited();
    if (state) fail(`consul-acme exited (${state.code ?? state.signal}) while waiting for ${what}`);
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch {
      // not yet
    }
    if (Date.now() > deadline) return undefined;
    await sleep(intervalMs);
  }
}

/** Waits for /health/ready to answer 200; returns the seconds it took from `since`. */
export async function waitReady(child: ServiceChild, since: number, timeoutMs: number): Promise<number> {
  await waitUntil(
    '/health/ready',
    child,
    async () =>
      (await fetch(`${child.adminUrl}/health/ready`, { signal: AbortSignal.timeout(5_000) })).status === 200
        ? true
        : undefined,
    timeoutMs,
    50,
  );
  return (Date.now() - since) / 1000;
}

/**
 * Waits until the process has been quiet for `quietMs`: its CPU grew by no more than `allowance`
 * (one tick plus `idleCpuPercent` of a core) over the last `quietMs`. Returns the sample at the
 * start of that quiet stretch (when the work ended), or undefined when it was not quiet within
 * `timeoutMs` (then the last sample is in `last`).
 */
export async function waitQuiet(
  pid: number,
  opts: { quietMs: number; timeoutMs: number; idleCpuPercent: number; intervalMs?: number },
): Promise<{ quietFrom: ProcSample | undefined; last: ProcSample }> {
  const interval = opts.intervalMs ?? 100;
  const samples: ProcSample[] = [sampleProc(pid)];
  const deadline = samples[0]!.at + opts.timeoutMs;
  for (;;) {
    await sleep(interval);
    const now = sampleProc(pid);
    samples.push(now);
    // The latest sample at least quietMs before now: the start of the stretch to judge.
    const from = samples.findLast((sample) => sample.at <= now.at - opts.quietMs);
    if (from) {
      const allowance = CPU_TICK_SECONDS + (opts.idleCpuPercent / 100) * ((now.at - from.at) / 1000) + 1e-9;
      if (now.cpuSeconds - from.cpuSeconds <= allowance) return { quietFrom: from, last: now };
    }
    if (now.at > deadline) return { quietFrom: undefined, last: now };
  }
}

// ---------------------------------------------------------------------------------------------
// Consul

/** PUT to the Consul HTTP API; fails the run on a non-2xx answer. */
export async function consulPut(consulAddress: string, path: string, body: string): Promise<void> {
  const res = await fetch(`${consulAddress}/v1/${path}`, { method: 'PUT', body, signal: AbortSignal.timeout(30_000) });
  if (!res.ok) fail(`PUT /v1/${path} answered ${res.status}: ${await res.text()}`);
}

// ---------------------------------------------------------------------------------------------
// Figures and output

export const mb = (kb: number): string => `${(kb / 1024).toFixed(1)} MiB`;
export const s = (seconds: number): string => `${seconds.toFixed(2)} s`;
export const ms = (milliseconds: number): string =>
  milliseconds >= 10 ? `${milliseconds.toFixed(0)} ms` : `${milliseconds.toFixed(1)} ms`;

/** The p-th percentile (nearest rank) of `values`; NaN when empty. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1]!;
}

/** A row whose value is '' is a heading. */
export type Row = [string, string];

export function table(rows: Row[]): string {
  const width = Math.max(...rows.filter(([, v]) => v !== '').map(([k]) => k.length));
  return rows.map(([k, v]) => (v === '' ? `\n${k}` : `  ${k.padEnd(width)}  ${v}`)).join('\n');
}

/** `value  (target < 2 %: target met)`. */
export function versus(value: string, met: boolean | undefined, target: string): string {
  if (met === undefined) return `${value}  (target ${target}: not measured)`;
  return `${value}  (target ${target}: ${met ? 'target met' : 'target missed'})`;
}

/** The machine, Node and the load on it: the first lines of every mode's output. */
export function machineHeader(settings: string[]): string {
  const cpu = cpus();
  const [one, five] = loadavg();
  return (
    `machine: ${cpu.length} × ${cpu[0]?.model.trim() ?? 'unknown CPU'}, Node ${process.version}; ` +
    `load average at start ${one?.toFixed(2)} (1 min), ${five?.toFixed(2)} (5 min); Consul, Pebble and the ` +
    `Vault stand-in run on the same machine\n` +
    settings.map((line) => `settings: ${line}\n`).join('')
  );
}

/** The 1-minute load average now, for the figures' context. */
export function loadNow(): string {
  return (loadavg()[0] ?? NaN).toFixed(2);
}

// ---------------------------------------------------------------------------------------------
// CPU profiles of the child (`--cpu-prof DIR`)

export interface ProfiledPhase {
  name: string;
  fromMs: number;
  toMs: number;
}

/**
 * With a directory, each child runs under `node --cpu-prof` writing into `<dir>/<label>/`, the
 * phases of the run are recorded in epoch ms, and once the child has exited its profile is
 * summarized per phase (test/bench/cpu-profile.ts). Without one, it does nothing.
 */
export class ChildProfile {
  readonly phases: ProfiledPhase[] = [];
  readonly dir: string | undefined;

  constructor(baseDir: string | undefined, label: string) {
    this.dir = baseDir === undefined ? undefined : `${baseDir}/${label}`;
    if (!this.dir) return;
    mkdirSync(this.dir, { recursive: true });
    // An earlier run's profile in the same directory would be read as this run's.
    for (const f of readdirSync(this.dir)) if (f.endsWith('.cpuprofile')) rmSync(`${this.dir}/${f}`);
  }

  /** Options for node in the child (none without a directory). */
  nodeArgs(): string[] {
    return this.dir ? ['--cpu-prof', `--cpu-prof-dir=${this.dir}`] : [];
  }

  phase(name: string, fromMs: number, toMs: number): void {
    this.phases.push({ name, fromMs, toMs });
  }

  /** After the child exited at `exitAtMs`: the summary of each phase, or '' without profiling. */
  summarize(exitAtMs: number, top = 12): string {
    if (!this.dir) return '';
    const file = readdirSync(this.dir).find((f) => f.endsWith('.cpuprofile'));
    if (!file) return `  (no .cpuprofile in ${this.dir}: the child did not exit cleanly)\n`;
    const path = `${this.dir}/${file}`;
    writeFileSync(`${this.dir}/phases.json`, JSON.stringify({ exitAtMs, phases: this.phases }, null, 1));
    const profile = readProfile(path);
    const parts = [`  profile ${path} (phases in ${this.dir}/phases.json)`];
    for (const p of this.phases) {
      parts.push(`  ${p.name} (${((p.toMs - p.fromMs) / 1000).toFixed(1)} s):`);
      parts.push(formatProfileSummary(summarizeProfile(profile, { exitAtMs, fromMs: p.fromMs, toMs: p.toMs }), top));
    }
    return `${parts.join('\n')}\n`;
  }
}
