/**
 * `npm run bench`: measures consul-acme the way an operator runs it, and prints numbers. It asserts
 * nothing (timing belongs here, not in tests); docs/operations.md quotes its output.
 *
 * It starts a real Consul agent, a real Pebble (doing real HTTP-01 validation against our
 * responder) and the Vault stand-in, then spawns `node dist/src/main.js run` as a child process
 * with the Vault store, and measures, from /proc/<pid>:
 *
 *   1. start-up: spawn until /health/ready answers 200;
 *   2. idle: RSS and CPU over a quiet window with nothing to manage;
 *   3. issuance: services declaring N hostnames (`consul-acme.hosts=` tags, 10 names per service)
 *      are registered; time until the first and until all N certificates are in Vault (each
 *      order after its pre-flight check, against Pebble's DNS; the registered-domain budget is
 *      off, since N names share one registered domain),
 *      certificates per second, peak RSS (VmHWM) and CPU seconds;
 *   4. steady: RSS and CPU over a quiet window once everything is issued;
 *   5. responder: GET /.well-known/acme-challenge/<token> for a token put into Consul KV under
 *      consul-acme/challenges/, R requests from K concurrent keep-alive clients (requests/s,
 *      p50/p99), then R/4 requests for unknown tokens (each one a Consul KV read);
 *   6. shutdown: SIGTERM until the process exits.
 *
 * How the service trusts Pebble's certificate matters: with CONSUL_ACME_CA_BUNDLE (`--trust
 * setting`, the default) the ACME transport passes the system roots plus the bundle as `ca` to
 * its https.Agent, and Node builds a new TLS context from those ~150 certificates for every new
 * connection to the CA, which costs CPU and native memory per connection. `--trust
 * node-extra-ca-certs` gives the bundle to Node through NODE_EXTRA_CA_CERTS instead, so the
 * default TLS context is used: that is the path of a publicly trusted CA such as Let's Encrypt,
 * where no bundle is set.
 *
 * Usage: node dist/test/bench/run.js [--hostnames N] [--concurrency C] [--requests R]
 *          [--fetch-concurrency K] [--idle-seconds S] [--log-level warn|info|...]
 *          [--trust setting|node-extra-ca-certs]
 * N (default 50, at most 100) names; C (default 8) is CONSUL_ACME_QUEUE_CONCURRENCY. Everything
 * runs on this machine, so Consul, Pebble and the stand-in share its CPUs with the service.
 * The whole run is bounded: after 5 minutes it fails with a message and cleans up.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { Agent, request as httpRequest } from 'node:http';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { startConsul, type ConsulInstance } from '../support/consul.js';
import { freePort } from '../support/net.js';
import { startPebble, type PebbleInstance } from '../support/pebble.js';
import { startVaultStandin, type VaultStandin } from '../support/vault-standin.js';

const MAIN_JS = fileURLToPath(new URL('../../src/main.js', import.meta.url));
const OVERALL_TIMEOUT_MS = 5 * 60_000;
const READY_TIMEOUT_MS = 30_000;
const SAMPLE_INTERVAL_MS = 250;
const NAMES_PER_SERVICE = 10;
const MAX_HOSTNAMES = 100;
const KV_PREFIX = 'consul-acme/';
const VAULT_MOUNT = 'secret';
const VAULT_PREFIX = 'fabio/certs';
const MAX_OUTPUT_CHARS = 64 * 1024;

// ---------------------------------------------------------------------------------------------
// Arguments

interface Options {
  hostnames: number;
  concurrency: number;
  requests: number;
  fetchConcurrency: number;
  idleSeconds: number;
  logLevel: string;
  trust: 'setting' | 'node-extra-ca-certs';
}

function positiveInt(name: string, raw: string | undefined, fallback: number, max: number): number {
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > max)
    usage(`--${name} must be a whole number from 1 to ${max}, got "${raw}"`);
  return n;
}

function usage(problem: string): never {
  process.stderr.write(
    `bench: ${problem}\nusage: node dist/test/bench/run.js [--hostnames N] [--concurrency C] [--requests R] ` +
      `[--fetch-concurrency K] [--idle-seconds S] [--log-level LEVEL] [--trust setting|node-extra-ca-certs]\n`,
  );
  process.exit(2);
}

function trustOption(raw: string | undefined): Options['trust'] {
  if (raw === undefined || raw === 'setting') return 'setting';
  if (raw === 'node-extra-ca-certs') return raw;
  usage(`--trust must be setting or node-extra-ca-certs, got "${raw}"`);
}

function readOptions(argv: string[]): Options {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        hostnames: { type: 'string' },
        concurrency: { type: 'string' },
        requests: { type: 'string' },
        'fetch-concurrency': { type: 'string' },
        'idle-seconds': { type: 'string' },
        'log-level': { type: 'string' },
        trust: { type: 'string' },
      },
      strict: true,
    }));
  } catch (err) {
    usage(err instanceof Error ? err.message : String(err));
  }
  return {
    hostnames: positiveInt('hostnames', values.hostnames, 50, MAX_HOSTNAMES),
    concurrency: positiveInt('concurrency', values.concurrency, 8, 64),
    requests: positiveInt('requests', values.requests, 2000, 1_000_000),
    fetchConcurrency: positiveInt('fetch-concurrency', values['fetch-concurrency'], 4, 256),
    idleSeconds: positiveInt('idle-seconds', values['idle-seconds'], 10, 120),
    logLevel: values['log-level'] ?? 'warn',
    trust: trustOption(values.trust),
  };
}

// ---------------------------------------------------------------------------------------------
// /proc sampling

interface ProcSample {
  at: number;
  /** VmRSS, KiB. */
  rssKb: number;
  /** VmHWM (peak RSS since start), KiB. */
  hwmKb: number;
  /** utime + stime, seconds. */
  cpuSeconds: number;
}

const CLOCK_TICKS_PER_SECOND = ((): number => {
  const out = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' });
  const n = Number(out.stdout?.trim());
  return Number.isInteger(n) && n > 0 ? n : 100;
})();

function sampleProc(pid: number): ProcSample {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string): number => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name in parentheses start at field 3 (state); utime is 14, stime 15.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[14 - 3]) + Number(fields[15 - 3]);
  return { at: Date.now(), rssKb: kb('VmRSS'), hwmKb: kb('VmHWM'), cpuSeconds: ticks / CLOCK_TICKS_PER_SECOND };
}

/** Samples a process every SAMPLE_INTERVAL_MS until stopped; keeps the maximum RSS seen. */
class Sampler {
  private timer: NodeJS.Timeout | undefined;
  readonly first: ProcSample;
  last: ProcSample;
  maxRssKb: number;

  constructor(private readonly pid: number) {
    this.first = sampleProc(pid);
    this.last = this.first;
    this.maxRssKb = this.first.rssKb;
    this.timer = setInterval(() => this.take(), SAMPLE_INTERVAL_MS);
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
      maxRssKb: this.maxRssKb,
      endRssKb: this.last.rssKb,
      hwmKb: this.last.hwmKb,
    };
  }
}

interface PhaseUsage {
  seconds: number;
  cpuSeconds: number;
  /** Of one core. */
  cpuPercent: number;
  maxRssKb: number;
  endRssKb: number;
  hwmKb: number;
}

// ---------------------------------------------------------------------------------------------
// Cleanup and the overall deadline

const cleanups: Array<() => Promise<void> | void> = [];
let cleaningUp: Promise<void> | undefined;

function cleanup(): Promise<void> {
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

let phase = 'starting';
let childOutput = (): string => '';

class BenchFailure extends Error {}

/** Stops the run from the main flow: main() reports it and cleans up. */
function fail(message: string): never {
  throw new BenchFailure(message);
}

/** Reports a failure, cleans up and exits 1; safe from timers and signal handlers. */
function abort(message: string): void {
  if (cleaningUp) return;
  process.stderr.write(`bench: FAILED during ${phase}: ${message}\n`);
  const output = childOutput();
  if (output !== '')
    process.stderr.write(`--- consul-acme output (last ${MAX_OUTPUT_CHARS / 1024} KiB) ---\n${output}\n`);
  void cleanup().finally(() => process.exit(1));
}

// ---------------------------------------------------------------------------------------------
// The service as a child process

interface Child {
  process: ChildProcess;
  pid: number;
  adminUrl: string;
  challengePort: number;
  exited(): { code: number | null; signal: NodeJS.Signals | null } | undefined;
  waitForExit(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Parsed JSON log lines whose `event` is `name`. */
  events(name: string): number;
  output(): string;
}

function spawnService(env: Record<string, string>, challengePort: number, adminPort: number): Child {
  const base: Record<string, string> = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (value !== undefined && !/^(CONSUL_|VAULT_|PEBBLE_)/.test(key)) base[key] = value;
  }
  const child = spawn(process.execPath, [MAIN_JS, 'run'], {
    env: { ...base, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let raw = '';
  let partial = '';
  const eventCounts = new Map<string, number>();
  let exitState: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  const exitPromise = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => {
      exitState = { code, signal };
      resolve(exitState);
    });
  });
  const append = (text: string): void => {
    raw += text;
    if (raw.length > MAX_OUTPUT_CHARS) raw = raw.slice(-MAX_OUTPUT_CHARS);
  };
  child.stdout?.on('data', (chunk: Buffer) => {
    const text = chunk.toString('utf8');
    append(text);
    partial += text;
    const lines = partial.split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) {
      try {
        const event = (JSON.parse(line) as { event?: unknown }).event;
        if (typeof event === 'string') eventCounts.set(event, (eventCounts.get(event) ?? 0) + 1);
      } catch {
        // not JSON; kept in raw
      }
    }
  });
  child.stderr?.on('data', (chunk: Buffer) => append(`[stderr] ${chunk.toString('utf8')}`));
  child.on('error', (err) => append(`[spawn error] ${err.message}\n`));
  cleanups.push(async () => {
    if (exitState) return;
    child.kill('SIGKILL');
    await exitPromise;
  });
  return {
    process: child,
    pid: child.pid ?? -1,
    adminUrl: `http://127.0.0.1:${adminPort}`,
    challengePort,
    exited: () => exitState,
    waitForExit: () => exitPromise,
    events: (name) => eventCounts.get(name) ?? 0,
    output: () => raw,
  };
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

async function waitUntil<T>(
  what: string,
  child: Child,
  probe: () => Promise<T | undefined> | T | undefined,
  timeoutMs: number,
  intervalMs = 100,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const state = child.exited();
    if (state) fail(`consul-acme exited (${state.code ?? state.signal}) while waiting for ${what}`);
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch {
      // not yet
    }
    if (Date.now() > deadline) fail(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(intervalMs);
  }
}

// ---------------------------------------------------------------------------------------------
// Consul helpers

async function consulPut(consul: ConsulInstance, path: string, body: string): Promise<void> {
  const res = await fetch(`${consul.address}/v1/${path}`, { method: 'PUT', body, signal: AbortSignal.timeout(10_000) });
  if (!res.ok) fail(`PUT /v1/${path} answered ${res.status}: ${await res.text()}`);
}

// ---------------------------------------------------------------------------------------------
// Responder load

interface LoadResult {
  requests: number;
  seconds: number;
  perSecond: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  statuses: Map<number, number>;
}

function get(agent: Agent, port: number, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      { host: '127.0.0.1', port, path, agent, headers: { host: 'app.bench.example.test' }, timeout: 10_000 },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error('no answer within 10 s')));
    req.on('error', reject);
    req.end();
  });
}

async function load(port: number, paths: () => string, total: number, concurrency: number): Promise<LoadResult> {
  const agent = new Agent({ keepAlive: true, maxSockets: concurrency });
  const latencies: number[] = [];
  const statuses = new Map<number, number>();
  let issued = 0;
  const started = process.hrtime.bigint();
  const worker = async (): Promise<void> => {
    while (issued < total) {
      issued++;
      const t0 = process.hrtime.bigint();
      const status = await get(agent, port, paths());
      latencies.push(Number(process.hrtime.bigint() - t0) / 1e6);
      statuses.set(status, (statuses.get(status) ?? 0) + 1);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  agent.destroy();
  latencies.sort((a, b) => a - b);
  const pct = (p: number): number =>
    latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))] ?? NaN;
  return {
    requests: latencies.length,
    seconds,
    perSecond: latencies.length / seconds,
    p50Ms: pct(50),
    p99Ms: pct(99),
    maxMs: latencies[latencies.length - 1] ?? NaN,
    statuses,
  };
}

// ---------------------------------------------------------------------------------------------
// Node's own view of its memory, from the service's /metrics (prom-client default metrics)

interface HeapNumbers {
  heapUsedKb: number;
  heapTotalKb: number;
  externalKb: number;
}

async function heapFromMetrics(adminUrl: string): Promise<HeapNumbers | undefined> {
  try {
    const text = await (await fetch(`${adminUrl}/metrics`, { signal: AbortSignal.timeout(5_000) })).text();
    const value = (name: string): number =>
      Number(new RegExp(`^consul_acme_${name} (\\S+)`, 'm').exec(text)?.[1] ?? NaN) / 1024;
    return {
      heapUsedKb: value('nodejs_heap_size_used_bytes'),
      heapTotalKb: value('nodejs_heap_size_total_bytes'),
      externalKb: value('nodejs_external_memory_bytes'),
    };
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------
// Output

const mb = (kb: number): string => `${(kb / 1024).toFixed(1)} MiB`;
const s = (seconds: number): string => `${seconds.toFixed(2)} s`;

function table(rows: Array<[string, string]>): string {
  const width = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => (v === '' ? `\n${k}` : `  ${k.padEnd(width)}  ${v}`)).join('\n');
}

function statusText(statuses: Map<number, number>): string {
  return [...statuses.entries()]
    .sort(([a], [b]) => a - b)
    .map(([code, n]) => `${n}×${code}`)
    .join(', ');
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const opts = readOptions(process.argv.slice(2));
  const deadline = setTimeout(
    () => abort(`the benchmark did not finish within ${OVERALL_TIMEOUT_MS / 60_000} minutes`),
    OVERALL_TIMEOUT_MS,
  );
  for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => abort(`interrupted by ${signal}`));

  const dir = mkdtempSync(join(tmpdir(), 'consul-acme-bench-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const hostnames = Array.from(
    { length: opts.hostnames },
    (_, i) => `app-${String(i + 1).padStart(3, '0')}.bench.example.test`,
  );

  phase = 'starting Consul, Pebble and the Vault stand-in';
  const challengePort = await freePort();
  const adminPort = await freePort();
  const consul = await startConsul();
  cleanups.push(() => consul.stop());
  const pebble: PebbleInstance = await startPebble({ httpPort: challengePort, nonceRejectPercent: 0 });
  cleanups.push(() => pebble.stop());
  const vault: VaultStandin = await startVaultStandin();
  cleanups.push(() => vault.close());
  const caFile = join(dir, 'acme-ca.pem');
  writeFileSync(caFile, pebble.caBundlePem);

  phase = 'start-up';
  const spawnedAt = Date.now();
  const child = spawnService(
    {
      CONSUL_HTTP_ADDR: consul.address,
      CONSUL_ACME_KV_PREFIX: KV_PREFIX,
      CONSUL_ACME_DIRECTORY_URL: pebble.directoryUrl,
      ...(opts.trust === 'setting' ? { CONSUL_ACME_CA_BUNDLE: caFile } : { NODE_EXTRA_CA_CERTS: caFile }),
      CONSUL_ACME_STORE: 'vault',
      VAULT_ADDR: vault.address,
      VAULT_TOKEN: vault.token,
      CONSUL_ACME_VAULT_MOUNT: VAULT_MOUNT,
      CONSUL_ACME_VAULT_PREFIX: VAULT_PREFIX,
      CONSUL_ACME_CHALLENGE_HOST: '127.0.0.1',
      CONSUL_ACME_CHALLENGE_PORT: String(challengePort),
      CONSUL_ACME_ADMIN_HOST: '127.0.0.1',
      CONSUL_ACME_ADMIN_PORT: String(adminPort),
      CONSUL_ACME_SERVICE_ADDRESS: '127.0.0.1',
      CONSUL_ACME_INSTANCE_NAME: 'bench',
      CONSUL_ACME_ACME_POLL_MIN_MS: '20',
      CONSUL_ACME_ACME_POLL_MAX_MS: '500',
      CONSUL_ACME_QUEUE_CONCURRENCY: String(opts.concurrency),
      // A transient Pebble failure should cost seconds, not the default minute; failures are counted.
      CONSUL_ACME_RETRY_SCHEDULE: '1s,2s,5s',
      // The pre-flight check stays on (it is part of every order's cost), asking Pebble's DNS and
      // probing the port Pebble validates on, as the CA would.
      CONSUL_ACME_PREFLIGHT: 'true',
      CONSUL_ACME_PREFLIGHT_DNS_SERVERS: pebble.dnsServer,
      CONSUL_ACME_PREFLIGHT_HTTP_PORT: String(challengePort),
      // Pebble has no rate limits, and 100 new names under one registered domain would exceed the
      // 50-per-week budget by design: the budget is measured by its tests, not here.
      CONSUL_ACME_BUDGET_REGISTERED_DOMAIN: 'off',
      CONSUL_ACME_LOG_LEVEL: opts.logLevel,
    },
    challengePort,
    adminPort,
  );
  childOutput = () => child.output();
  await waitUntil(
    '/health/ready',
    child,
    async () => ((await fetch(`${child.adminUrl}/health/ready`)).status === 200 ? true : undefined),
    READY_TIMEOUT_MS,
    50,
  );
  const startupSeconds = (Date.now() - spawnedAt) / 1000;
  const afterStart = sampleProc(child.pid);

  phase = 'idle';
  let sampler = new Sampler(child.pid);
  await sleep(opts.idleSeconds * 1000);
  const idle = sampler.stop();

  phase = `issuance of ${opts.hostnames} certificates`;
  const vaultRequestsBefore = vault.requests().length;
  sampler = new Sampler(child.pid);
  const registeredAt = Date.now();
  for (let i = 0; i < hostnames.length; i += NAMES_PER_SERVICE) {
    const names = hostnames.slice(i, i + NAMES_PER_SERVICE);
    const id = `bench-app-${i / NAMES_PER_SERVICE + 1}`;
    await consulPut(
      consul,
      'agent/service/register',
      JSON.stringify({ ID: id, Name: id, Port: 9000, Tags: [`consul-acme.hosts=${names.join(',')}`] }),
    );
  }
  let firstAt: number | undefined;
  const pending = new Set(hostnames);
  await waitUntil(
    `all ${opts.hostnames} certificates in Vault`,
    child,
    () => {
      for (const h of [...pending]) {
        if (vault.readRaw(VAULT_MOUNT, `${VAULT_PREFIX}/${h}`) !== undefined) {
          pending.delete(h);
          firstAt ??= Date.now();
        }
      }
      return pending.size === 0 ? true : undefined;
    },
    OVERALL_TIMEOUT_MS,
    SAMPLE_INTERVAL_MS,
  );
  const allAt = Date.now();
  const issuance = sampler.stop();
  const vaultRequests = vault.requests().length - vaultRequestsBefore;

  phase = 'steady state after issuance';
  // Let the last status polls, tag updates and the renewal scan finish before measuring.
  await sleep(2_000);
  sampler = new Sampler(child.pid);
  await sleep(opts.idleSeconds * 1000);
  const steady = sampler.stop();
  const memory = await heapFromMetrics(child.adminUrl);

  phase = 'challenge responder load';
  const token = 'bench-token_0123456789abcdefghijklmnopqrstuv';
  await consulPut(consul, `kv/${KV_PREFIX}challenges/${token}`, `${token}.bench-key-authorization`);
  await waitUntil(
    'the challenge token to be served',
    child,
    async () =>
      (await get(new Agent(), challengePort, `/.well-known/acme-challenge/${token}`)) === 200 ? true : undefined,
    10_000,
  );
  sampler = new Sampler(child.pid);
  const hits = await load(
    challengePort,
    () => `/.well-known/acme-challenge/${token}`,
    opts.requests,
    opts.fetchConcurrency,
  );
  const hitsUsage = sampler.stop();
  let miss = 0;
  sampler = new Sampler(child.pid);
  const misses = await load(
    challengePort,
    () => `/.well-known/acme-challenge/unknown-${++miss}`,
    Math.max(1, Math.floor(opts.requests / 4)),
    opts.fetchConcurrency,
  );
  const missesUsage = sampler.stop();

  phase = 'shutdown';
  // Every failed attempt (an order or a pre-flight check) is one retry_scheduled line.
  const failures = child.events('retry_scheduled');
  const stopAt = Date.now();
  child.process.kill('SIGTERM');
  const exit = await Promise.race([child.waitForExit(), sleep(60_000).then(() => undefined)]);
  if (!exit) fail('consul-acme did not exit within 60 s of SIGTERM');
  const stopSeconds = (Date.now() - stopAt) / 1000;

  clearTimeout(deadline);
  const issueSeconds = (allAt - registeredAt) / 1000;
  const cpu = cpus();
  process.stdout.write(
    `consul-acme benchmark: ${opts.hostnames} hostnames, CONSUL_ACME_QUEUE_CONCURRENCY=${opts.concurrency}, ` +
      `log level ${opts.logLevel}, Pebble trusted through ${opts.trust === 'setting' ? 'CONSUL_ACME_CA_BUNDLE' : 'NODE_EXTRA_CA_CERTS'}\n` +
      `machine: ${cpu.length} × ${cpu[0]?.model.trim() ?? 'unknown CPU'}, Node ${process.version}; Consul, Pebble and the Vault stand-in run on the same machine\n` +
      table([
        ['start-up', ''],
        ['spawn → /health/ready', s(startupSeconds)],
        ['RSS when ready', mb(afterStart.rssKb)],
        [`idle, nothing managed (${idle.seconds.toFixed(0)} s)`, ''],
        ['RSS at end / max', `${mb(idle.endRssKb)} / ${mb(idle.maxRssKb)}`],
        ['CPU', `${idle.cpuSeconds.toFixed(2)} s (${idle.cpuPercent.toFixed(1)} % of one core)`],
        [`issuance of ${opts.hostnames} certificates (Pebble, HTTP-01, Vault KV v2)`, ''],
        ['registration → first certificate in Vault', s(((firstAt ?? allAt) - registeredAt) / 1000)],
        ['registration → all certificates in Vault', s(issueSeconds)],
        ['certificates per second', (opts.hostnames / issueSeconds).toFixed(2)],
        ['failed attempts (retry_scheduled events)', String(failures)],
        [
          'CPU',
          `${issuance.cpuSeconds.toFixed(2)} s (${issuance.cpuPercent.toFixed(1)} % of one core; ${((issuance.cpuSeconds / opts.hostnames) * 1000).toFixed(0)} ms per certificate)`,
        ],
        ['RSS max sampled / peak (VmHWM)', `${mb(issuance.maxRssKb)} / ${mb(issuance.hwmKb)}`],
        ['Vault requests', `${vaultRequests} (${(vaultRequests / opts.hostnames).toFixed(1)} per certificate)`],
        [`steady, ${opts.hostnames} certificates managed (${steady.seconds.toFixed(0)} s)`, ''],
        ['RSS at end / max', `${mb(steady.endRssKb)} / ${mb(steady.maxRssKb)}`],
        ['CPU', `${steady.cpuSeconds.toFixed(2)} s (${steady.cpuPercent.toFixed(1)} % of one core)`],
        [
          'V8 heap used / total, external (/metrics)',
          memory ? `${mb(memory.heapUsedKb)} / ${mb(memory.heapTotalKb)}, ${mb(memory.externalKb)}` : 'unavailable',
        ],
        [`challenge responder, ${opts.fetchConcurrency} concurrent keep-alive clients`, ''],
        [
          `known token × ${hits.requests}`,
          `${hits.perSecond.toFixed(0)} req/s, p50 ${hits.p50Ms.toFixed(2)} ms, p99 ${hits.p99Ms.toFixed(2)} ms, max ${hits.maxMs.toFixed(1)} ms (${statusText(hits.statuses)})`,
        ],
        [
          '  CPU',
          `${hitsUsage.cpuSeconds.toFixed(2)} s (${hitsUsage.cpuPercent.toFixed(0)} % of one core), RSS max ${mb(hitsUsage.maxRssKb)}`,
        ],
        [
          `unknown token × ${misses.requests} (Consul KV read each)`,
          `${misses.perSecond.toFixed(0)} req/s, p50 ${misses.p50Ms.toFixed(2)} ms, p99 ${misses.p99Ms.toFixed(2)} ms, max ${misses.maxMs.toFixed(1)} ms (${statusText(misses.statuses)})`,
        ],
        [
          '  CPU',
          `${missesUsage.cpuSeconds.toFixed(2)} s (${missesUsage.cpuPercent.toFixed(0)} % of one core), RSS max ${mb(missesUsage.maxRssKb)}`,
        ],
        ['shutdown', ''],
        ['SIGTERM → exit', `${s(stopSeconds)} (exit ${exit.code ?? exit.signal})`],
        ['peak RSS over the whole run (VmHWM)', mb(Math.max(issuance.hwmKb, hitsUsage.hwmKb, missesUsage.hwmKb))],
      ]) +
      '\n',
  );
  await cleanup();
}

main().then(
  () => process.exit(0),
  (err: unknown) =>
    abort(err instanceof BenchFailure ? err.message : err instanceof Error ? (err.stack ?? err.message) : String(err)),
);
