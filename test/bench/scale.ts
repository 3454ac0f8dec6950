/**
 * `npm run bench -- --scale N`: one consul-acme process managing N names, in the three steady
 * steady states, each against its own real Consul 1.8.7 and Pebble on this machine:
 *
 * - `valid`: the file store (on /dev/shm when there is one) is seeded with N valid certificates
 *   through FileCertificateStore.put, from this run's Pebble directory, so nothing is due and no
 *   order may be placed (Pebble's own log is counted: test/support/pebble-order-counter.ts);
 * - `budget`: nothing stored, CONSUL_ACME_BUDGET_NEW_ORDERS=1/3h: one name is issued, every other
 *   one waits for the budget;
 * - `preflight`: nothing stored, the pre-flight probe goes to a port where nothing listens, so every
 *   name fails its pre-flight check (first "waiting for the route" for CONSUL_ACME_ROUTE_SETTLE,
 *   then on the retry schedule) and none is ordered. The retry schedule is `24h`: the default
 *   schedule's last step, where names that keep failing spend every day after their first.
 *
 * The names are declared by N/5 services, 5 names each (`urlprefix-<name>/` tags), registered in the
 * catalog on 200 other nodes (registerAppService), before
 * consul-acme (`node dist/src/main.js run`, file store, every other setting at its default, log
 * level info) is spawned. Once the state is reached and the process is quiet, each state prints:
 *
 * - idle CPU: % of one core over a quiet window (`--idle-seconds`, default 60), and what the
 *   process logged meanwhile;
 * - RSS when the work stopped and at the end of the quiet window (V8 gives back the heap the
 *   start-up grew some 30–40 s after allocation stops; the target applies to the latter), and the
 *   peak (VmHWM) over the process's life;
 * - CPU per catalog change: one new service with 5 names is registered; the CPU seconds the process
 *   spends from then until its work is done (the names' challenge routes registered; in `budget`
 *   and `preflight` also each name's first deferral or pre-flight failure logged) and it has been
 *   quiet for 1 s (within its idle rate), less its idle rate over that time. In `valid` those names
 *   have certificates in the store (seeded, undeclared until then). /proc counts CPU in 10 ms ticks,
 *   so the median and mean over the detection registrations below are printed too;
 * - detection: 20 services (`--detections`) registered one at a time, each with 5 new names and
 *   `--detection-gap-seconds` (default 5) after the previous one's work: registration → all 5
 *   challenge routes in consul-acme's registration, as read from the catalog with a blocking query
 *   (test/bench/registration-watch.ts); p50 and p99;
 * - the peak number of open file descriptors (/proc/<pid>/fd, counted every 250 ms);
 * - the renewal scans (`renewal scan done` log lines, `duration_ms`): the one at start, and those
 *   on the default schedule (every 10 minutes) during the run. Quiet windows and measurements are
 *   timed to avoid a scheduled scan: a window that would cross a multiple of 10 minutes waits
 *   until that scan is done;
 * - `valid` only: a soak of `--soak-minutes` (default 10) sampling RSS every 10 s.
 *
 * The scale targets at 10,000 names (TARGETS) are printed beside each figure ("target met"/"target missed");
 * nothing is asserted. `--cpu-prof DIR` runs each child under `node --cpu-prof` and prints the top
 * self-time functions of each phase.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FileCertificateStore } from '../../src/adapters/file/file-certificate-store.js';
import { challengeRouteTags } from '../../src/domain/challenge.js';
import { Limiter } from '../../src/engine/limiter.js';
import type { StatusReport } from '../../src/engine/status.js';
import { makeCertificateData } from '../support/certs.js';
import { startConsul } from '../support/consul.js';
import { freePort } from '../support/net.js';
import { pebbleActivity } from '../support/pebble-order-counter.js';
import { startPebble } from '../support/pebble.js';
import {
  ChildProfile,
  cleanupMark,
  cleanupSince,
  FdWatch,
  fail,
  loadNow,
  mb,
  ms,
  onCleanup,
  percentile,
  progress,
  s,
  Sampler,
  sampleProc,
  setChildOutput,
  setPhase,
  sleep,
  spawnService,
  stopChild,
  table,
  MAIN_THREAD_SYSTEM,
  threadCpuDelta,
  threadCpuSeconds,
  versus,
  waitAtMost,
  waitQuiet,
  waitReady,
  waitUntil,
  type LogLine,
  type ProcSample,
  type Row,
  type ServiceChild,
} from './harness.js';
import { watchRegistration, type RegistrationWatch } from './registration-watch.js';

export const SCALE_STATES = ['valid', 'budget', 'preflight'] as const;
export type ScaleState = (typeof SCALE_STATES)[number];

export interface ScaleOptions {
  names: number;
  states: readonly ScaleState[];
  /** RSS sampled every 10 s for this long in the `valid` state; 0 for no soak. */
  soakMinutes: number;
  /** The quiet window's length. */
  idleSeconds: number;
  /** Single-service registrations timed for detection. */
  detections: number;
  /** Pause before each of them. */
  detectionGapSeconds: number;
  logLevel: string;
  cpuProfDir: string | undefined;
  /** A scratch directory (on /dev/shm when there is one), removed at the end. */
  dir: string;
}

const NAMES_PER_SERVICE = 5;
const SERVICE_NAME = 'consul-acme';
const SEED_CONCURRENCY = 16;
const REGISTER_CONCURRENCY = 16;
const STATUS_POLL_MS = 5_000;
const CONSUL_ALONE_REPEATS = 5;
/** A route not registered within this counts as this long (and is reported). */
const DETECTION_BOUND_MS = 60_000;
const SOAK_SAMPLE_MS = 10_000;
/** The default CONSUL_ACME_RENEW_SCHEDULE, `*\/10 * * * *`. */
const RENEW_EVERY_MINUTES = 10;

/** The scale targets at 10,000 names: what one instance should cost when nothing is due. */
const TARGETS = {
  idleCpuPercent: 2,
  rssAfterSettlingMb: 200,
  peakRssMb: 250,
  cpuPerChangeMs: 50,
  detectionP50Ms: 250,
  detectionP99Ms: 1_000,
} as const;

const STATE_TITLES: Record<ScaleState, string> = {
  valid: 'all valid (every name has a certificate in the store)',
  budget: 'all waiting on a budget (CONSUL_ACME_BUDGET_NEW_ORDERS=1/3h, nothing stored)',
  preflight:
    'all failing pre-flight (the probe port has no listener, nothing stored; CONSUL_ACME_RETRY_SCHEDULE=24h, the default schedule after its first day)',
};

/** The whole mode's time bound. */
export function scaleTimeoutMs(
  opts: Pick<ScaleOptions, 'names' | 'states' | 'soakMinutes' | 'idleSeconds' | 'detections' | 'detectionGapSeconds'>,
): number {
  const perState =
    25 * 60_000 +
    (opts.names / 1000) * 90_000 +
    opts.idleSeconds * 1000 +
    opts.detections * (90_000 + opts.detectionGapSeconds * 1000);
  return opts.states.length * perState + opts.soakMinutes * 60_000 + 5 * 60_000;
}

function hostname(i: number): string {
  return `n${String(i).padStart(5, '0')}.scale.example.test`;
}

/** Nodes the applications run on, as in a cluster where each node's agent holds its own services. */
const APP_NODES = 200;

/**
 * Registers an application's service in the catalog on one of APP_NODES nodes
 * (`/v1/catalog/register`), not through the agent consul-acme talks to. In a cluster the apps'
 * services live on their own nodes' agents. Measured on this machine with 16 route registrations of
 * 625 tags: adding 5 routes took ~100 ms with the 2,000 apps on other nodes and ~300 ms with them on
 * consul-acme's own agent, which is not what a deployment sees. The catalog, and so the watch, is
 * the same either way.
 */
async function registerAppService(consulAddress: string, id: string, tags: string[]): Promise<void> {
  const node = `app-node-${[...id].reduce((h, c) => (h * 31 + c.charCodeAt(0)) >>> 0, 7) % APP_NODES}`;
  const res = await fetch(`${consulAddress}/v1/catalog/register`, {
    method: 'PUT',
    body: JSON.stringify({
      Node: node,
      Address: '127.0.0.1',
      Service: { ID: id, Service: id, Port: 9000, Address: '127.0.0.1', Tags: tags },
    }),
  });
  if (res.status !== 200) throw new Error(`registering ${id} on ${node}: ${res.status} ${await res.text()}`);
}

/** The names of the services registered after settling: one for the catalog change, then the detections. */
function laterServices(names: number, detections: number): Array<{ id: string; names: string[] }> {
  return Array.from({ length: 1 + detections }, (_, k) => ({
    id: k === 0 ? 'scale-change' : `scale-detect-${k}`,
    names: Array.from({ length: NAMES_PER_SERVICE }, (_, j) => hostname(names + k * NAMES_PER_SERVICE + j)),
  }));
}

const MB = 1_000_000;
const mbOf = (kb: number): number => (kb * 1024) / MB;
const mem = (kb: number): string => `${mb(kb)} (${mbOf(kb).toFixed(0)} MB)`;

/** Ms until the next scheduled renewal scan (a multiple of 10 minutes, local time, as node-cron counts). */
function msUntilScheduledScan(now = new Date()): number {
  const next = new Date(now);
  next.setSeconds(0, 0);
  next.setMinutes(Math.floor(now.getMinutes() / RENEW_EVERY_MINUTES) * RENEW_EVERY_MINUTES + RENEW_EVERY_MINUTES);
  return next.getTime() - now.getTime();
}

interface Figures {
  state: ScaleState;
  servicesSeconds: number;
  consulAlone: { putMs: number[]; catalogMs: number[]; answerBytes: number };
  seedSeconds: number | undefined;
  readySeconds: number;
  settledSeconds: number;
  settledQuietly: boolean;
  /** Why the state was not reached, if it was not. */
  settleNote: string;
  /** When the work that reached the state stopped (quiet for 5 s). */
  afterSettling: ProcSample;
  /** At the end of the quiet window, once V8 has had the time to give back the start-up's heap. */
  afterQuiet: ProcSample;
  idle: {
    seconds: number;
    cpuSeconds: number;
    cpuPercent: number;
    logLines: number;
    events: Map<string, number>;
    /** CPU seconds per thread name over the window. */
    threads: Array<[string, number]>;
  };
  change: Change;
  detections: Change[];
  peakFds: number;
  hwmKb: number;
  scans: Array<{ durationMs: number; at: string }>;
  orders: number;
  /** consul-acme's registrations of the challenge routes (its shards) and their tags, at the end. */
  registrationSize: { tags: number; registrations: number };
  registrationBytes: number;
  soak: { samples: ProcSample[]; cpuPercent: number } | undefined;
  stopSeconds: number;
  profileSummary: string;
}

export async function runScale(opts: ScaleOptions): Promise<void> {
  for (const state of opts.states) {
    const figures = await runState(state, opts);
    process.stdout.write(`${report(figures, opts)}\n`);
  }
}

async function runState(state: ScaleState, opts: ScaleOptions): Promise<Figures> {
  const mark = cleanupMark();
  const tag = `[${state}]`;
  const n = opts.names;
  const later = laterServices(n, opts.detections);
  const stateDir = join(opts.dir, state);
  mkdirSync(stateDir, { recursive: true });

  setPhase(`${tag} starting Consul and Pebble`);
  const challengePort = await freePort();
  const adminPort = await freePort();
  const deadPort = await freePort();
  const consul = await startConsul();
  onCleanup(() => consul.stop());
  const pebble = await startPebble({ httpPort: challengePort, nonceRejectPercent: 0 });
  onCleanup(() => pebble.stop());
  const caFile = join(stateDir, 'pebble-ca.pem');
  writeFileSync(caFile, pebble.caBundlePem);

  setPhase(`${tag} registering ${n / NAMES_PER_SERVICE} services with ${NAMES_PER_SERVICE} names each`);
  let started = Date.now();
  const registerLimiter = new Limiter(REGISTER_CONCURRENCY);
  const registered = await registerLimiter.map(
    Array.from({ length: Math.ceil(n / NAMES_PER_SERVICE) }, (_, k) => k),
    (k) =>
      registerAppService(
        consul.address,
        `scale-app-${k}`,
        Array.from(
          { length: Math.min(NAMES_PER_SERVICE, n - k * NAMES_PER_SERVICE) },
          (_, j) => `urlprefix-${hostname(k * NAMES_PER_SERVICE + j)}/`,
        ),
      ),
  );
  const refused = registered.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (refused) fail(`registering the services: ${String(refused.reason)}`);
  const servicesSeconds = (Date.now() - started) / 1000;

  const storeDir = join(stateDir, 'certs');
  let seedSeconds: number | undefined;
  if (state === 'valid') {
    const seeded = [...Array.from({ length: n }, (_, i) => hostname(i)), ...later.flatMap((svc) => svc.names)];
    setPhase(`${tag} seeding the file store with ${seeded.length} certificates`);
    started = Date.now();
    const store = new FileCertificateStore({ directory: storeDir });
    const notBefore = new Date(Math.floor(Date.now() / 1000) * 1000 - 86_400_000);
    const results = await new Limiter(SEED_CONCURRENCY).map(seeded, async (name) =>
      store.put(
        await makeCertificateData({ hostname: name, notBefore, directoryUrl: pebble.directoryUrl, sharedKey: true }),
        0,
      ),
    );
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) fail(`seeding the store: ${String(failed.reason)}`);
    seedSeconds = (Date.now() - started) / 1000;
  }

  setPhase(`${tag} Consul alone: re-registering one service with ${n + later.length * NAMES_PER_SERVICE} tags`);
  const consulAlone = await consulAloneRegistration(
    consul.address,
    n + later.length * NAMES_PER_SERVICE,
    CONSUL_ALONE_REPEATS,
  );

  const registration = watchRegistration(consul.address, SERVICE_NAME);
  onCleanup(() => registration.stop());
  const instanceName = `scale-${state}`;
  const profile = new ChildProfile(opts.cpuProfDir, `scale-${n}-${state}`);

  setPhase(`${tag} spawning consul-acme`);
  const spawnedAt = Date.now();
  const child = spawnService({
    challengePort,
    adminPort,
    nodeArgs: profile.nodeArgs(),
    env: {
      CONSUL_HTTP_ADDR: consul.address,
      CONSUL_ACME_DIRECTORY_URL: pebble.directoryUrl,
      CONSUL_ACME_CA_BUNDLE: caFile,
      CONSUL_ACME_STORE: 'file',
      CONSUL_ACME_FILE_STORE_DIR: storeDir,
      CONSUL_ACME_CHALLENGE_HOST: '127.0.0.1',
      CONSUL_ACME_CHALLENGE_PORT: String(challengePort),
      CONSUL_ACME_ADMIN_HOST: '127.0.0.1',
      CONSUL_ACME_ADMIN_PORT: String(adminPort),
      CONSUL_ACME_SERVICE_ADDRESS: '127.0.0.1',
      CONSUL_ACME_SERVICE_NAME: SERVICE_NAME,
      CONSUL_ACME_INSTANCE_NAME: instanceName,
      CONSUL_ACME_PREFLIGHT: 'true',
      CONSUL_ACME_PREFLIGHT_DNS_SERVERS: pebble.dnsServer,
      CONSUL_ACME_PREFLIGHT_HTTP_PORT: String(state === 'preflight' ? deadPort : challengePort),
      ...(state === 'budget' ? { CONSUL_ACME_BUDGET_NEW_ORDERS: '1/3h' } : {}),
      // The steady state of names that keep failing: the default schedule's last step (24 h) repeats.
      // The first day's retries (1, 2, 5, 10, 30 min, ...) are a transient, not what this state measures.
      ...(state === 'preflight' ? { CONSUL_ACME_RETRY_SCHEDULE: '24h' } : {}),
      CONSUL_ACME_LOG_LEVEL: opts.logLevel,
    },
  });
  setChildOutput(() => child.output());
  const fds = new FdWatch(child.pid);
  onCleanup(() => fds.stop());
  const scans = child.collect((line) => line.msg === 'renewal scan done');
  const deferred = new Set<string>();
  const preflightFailed = new Set<string>();
  child.onLine((line) => {
    if (typeof line.hostname !== 'string') return;
    if (line.event === 'cert_deferred') deferred.add(line.hostname);
    if (line.event === 'retry_scheduled' && /PREFLIGHT_FAILED/.test(line.err ?? '')) preflightFailed.add(line.hostname);
  });
  const readySeconds = await waitReady(child, spawnedAt, 10 * 60_000);

  setPhase(`${tag} waiting for the steady state`);
  const settleBoundMs = 10 * 60_000 + n * 60;
  let settleProgress = '';
  let reached: true | undefined;
  if (state === 'valid') {
    const declared = new Set(Array.from({ length: n }, (_, i) => hostname(i)));
    reached = await waitAtMost(
      `all ${n} names valid in /status`,
      child,
      async () => {
        const res = await fetch(`${child.adminUrl}/status`, { signal: AbortSignal.timeout(30_000) });
        const report = (await res.json()) as StatusReport;
        const valid = report.certificates.filter((c) => declared.has(c.hostname) && c.state === 'valid').length;
        settleProgress = `${valid} of ${n} valid`;
        progress(settleProgress);
        return valid === n ? true : undefined;
      },
      settleBoundMs,
      STATUS_POLL_MS,
    );
  } else if (state === 'budget') {
    reached = await waitAtMost(
      `one certificate and ${n - 1} names deferred by the budget`,
      child,
      () => {
        settleProgress = `${child.events('cert_obtained')} obtained, ${deferred.size} deferred`;
        progress(settleProgress);
        return child.events('cert_obtained') >= 1 && deferred.size >= n - 1 ? true : undefined;
      },
      settleBoundMs,
      STATUS_POLL_MS,
    );
  } else {
    reached = await waitAtMost(
      `all ${n} names failed their pre-flight check`,
      child,
      () => {
        settleProgress = `${preflightFailed.size} of ${n} failed pre-flight`;
        progress(settleProgress);
        return preflightFailed.size >= n ? true : undefined;
      },
      settleBoundMs,
      STATUS_POLL_MS,
    );
  }
  const settleNote =
    reached === undefined
      ? `state not reached within ${(settleBoundMs / 60_000).toFixed(0)} min: ${settleProgress}`
      : '';
  // Let the work that reached the state finish (a failing state may never be quiet: bounded).
  const settleQuiet = await waitQuiet(child.pid, {
    quietMs: 5_000,
    idleCpuPercent: 5,
    timeoutMs: state === 'preflight' ? 30_000 : 5 * 60_000,
  });
  const settledSeconds = (Date.now() - spawnedAt) / 1000;
  const afterSettling = sampleProc(child.pid);

  const beforeScan = async (needMs: number): Promise<void> => {
    const left = msUntilScheduledScan();
    if (left > needMs + 2_000) return;
    const seen = scans.length;
    progress(`waiting for the scheduled renewal scan in ${(left / 1000).toFixed(0)} s to pass`);
    await waitUntil(
      'the scheduled renewal scan to finish',
      child,
      () => (scans.length > seen ? true : undefined),
      left + 10 * 60_000,
      500,
    );
    await sleep(2_000);
  };

  setPhase(`${tag} idle window (${opts.idleSeconds} s)`);
  await beforeScan(opts.idleSeconds * 1000);
  const windowEvents = new Map<string, number>();
  const stopCounting = child.onLine((line) => {
    const key = line.event ?? line.msg ?? '?';
    windowEvents.set(key, (windowEvents.get(key) ?? 0) + 1);
  });
  const linesBefore = child.logVolume().lines;
  const threadsBefore = threadCpuSeconds(child.pid);
  const idleSampler = new Sampler(child.pid, 1_000);
  await sleep(opts.idleSeconds * 1000);
  const idleUsage = idleSampler.stop();
  const threads = threadCpuDelta(threadsBefore, threadCpuSeconds(child.pid));
  stopCounting();
  profile.phase('idle window', idleSampler.first.at, idleSampler.last.at);
  const idle = {
    seconds: idleUsage.seconds,
    cpuSeconds: idleUsage.cpuSeconds,
    cpuPercent: idleUsage.cpuPercent,
    logLines: child.logVolume().lines - linesBefore,
    events: windowEvents,
    threads,
    afterQuiet: idleSampler.last,
  };

  const timing = {
    child,
    consulAddress: consul.address,
    registration,
    deferred,
    preflightFailed,
    idleCpuPercent: idle.cpuPercent,
    cpuPerAttemptSeconds: idleAttempts(idle) > 0 ? idle.cpuSeconds / idleAttempts(idle) : undefined,
  };
  setPhase(`${tag} one catalog change (a service with ${NAMES_PER_SERVICE} names)`);
  await beforeScan(120_000);
  const change = await timeChange(timing, later[0]!, { untilDone: state, quietTimeoutMs: 30_000 });
  profile.phase('one catalog change', change.fromMs, change.toMs);

  setPhase(
    `${tag} detection: ${opts.detections} services registered one at a time, ${opts.detectionGapSeconds} s apart`,
  );
  const detections: Change[] = [];
  const detectFrom = Date.now();
  for (const svc of later.slice(1)) {
    await sleep(opts.detectionGapSeconds * 1000);
    await beforeScan(20_000);
    // Only the routes are waited for: a failing name goes on probing for CONSUL_ACME_ROUTE_SETTLE.
    const d = await timeChange(timing, svc, { untilDone: undefined, quietTimeoutMs: 10_000 });
    detections.push(d);
    progress(
      `${svc.id}: routes after ${d.detectionMs ?? '(none within the bound)'} ms, ${d.cpuMs.toFixed(0)} ms CPU ` +
        `(${d.rawCpuMs.toFixed(0)} ms over ${((d.toMs - d.fromMs) / 1000).toFixed(2)} s, main thread ` +
        `${d.mainCpuMs.toFixed(0)} ms, less ${d.baselineMs.toFixed(0)} ms)`,
    );
  }
  profile.phase(`${opts.detections} detections`, detectFrom, Date.now());
  if (detections.length > 1) {
    const byCpu = [...detections].sort((a, b) => a.cpuMs - b.cpuMs);
    profile.phase('the cheapest detection', byCpu[0]!.fromMs, byCpu[0]!.toMs);
    profile.phase('the costliest detection', byCpu.at(-1)!.fromMs, byCpu.at(-1)!.toMs);
  }

  let soak: Figures['soak'];
  if (state === 'valid' && opts.soakMinutes > 0) {
    setPhase(`${tag} soak: RSS every ${SOAK_SAMPLE_MS / 1000} s for ${opts.soakMinutes} min`);
    const samples: ProcSample[] = [sampleProc(child.pid)];
    const end = Date.now() + opts.soakMinutes * 60_000;
    while (Date.now() < end) {
      await sleep(Math.min(SOAK_SAMPLE_MS, end - Date.now()));
      if (child.exited()) fail('consul-acme exited during the soak');
      samples.push(sampleProc(child.pid));
    }
    const first = samples[0]!;
    const last = samples[samples.length - 1]!;
    soak = { samples, cpuPercent: (100 * (last.cpuSeconds - first.cpuSeconds)) / ((last.at - first.at) / 1000) };
    profile.phase(`soak (${opts.soakMinutes} min)`, first.at, last.at);
  }

  profile.phase('start-up until settled', spawnedAt, spawnedAt + settledSeconds * 1000);
  for (const scan of scans.slice(1)) {
    const at = Date.parse(String(scan.time));
    profile.phase('a scheduled renewal scan', at - Number(scan.duration_ms), at);
  }
  setPhase(`${tag} stopping`);
  const hwmKb = sampleProc(child.pid).hwmKb;
  const registrationSize = registration.size();
  const registrationBytes = registration.lastAnswerBytes();
  fds.take();
  const stop = await stopChild(child);
  const exitAtMs = Date.now();
  fds.stop();
  setChildOutput(() => '');
  const orders = pebbleActivity(pebble.logs()).orders.length;
  const profileSummary = profile.summarize(exitAtMs);
  await cleanupSince(mark);

  return {
    state,
    servicesSeconds,
    consulAlone,
    seedSeconds,
    readySeconds,
    settledSeconds,
    settledQuietly: settleQuiet.quietFrom !== undefined,
    settleNote,
    afterSettling,
    afterQuiet: idle.afterQuiet,
    idle,
    change,
    detections,
    peakFds: fds.peak,
    hwmKb,
    scans: scans.map((line: LogLine) => ({ durationMs: Number(line.duration_ms), at: String(line.time ?? '') })),
    orders,
    registrationSize,
    registrationBytes,
    soak,
    stopSeconds: stop.seconds,
    profileSummary,
  };
}

interface Change {
  /** Registration → all of the service's challenge routes in our registration; undefined when not within DETECTION_BOUND_MS. */
  detectionMs: number | undefined;
  /** Registration → consul-acme logged the catalog change (`managed hostnames updated`). */
  snapshotMs: number | undefined;
  /** Registration → consul-acme logged its registration updated in the agent (`registration_updated`) after that. */
  registeredMs: number | undefined;
  /** Whether the names' work was seen done (their first deferral or failure) within the bound. */
  done: boolean;
  /** CPU from the registration until quiet again, less the baseline. */
  cpuMs: number;
  /** The same before the baseline was taken off. */
  rawCpuMs: number;
  /** Of rawCpuMs, the main thread's (JavaScript); the rest is V8's and libuv's helper threads. */
  mainCpuMs: number;
  baselineMs: number;
  untilQuietSeconds: number;
  quiet: boolean;
  /** Attempts for other names meanwhile (their retries and deferrals): work that is not this change's. */
  otherAttempts: number;
  /** What was taken off as not this change's: the idle rate over the time, or the other names' attempts. */
  baseline: string;
  fromMs: number;
  toMs: number;
}

interface ChangeTiming {
  child: ServiceChild;
  consulAddress: string;
  registration: RegistrationWatch;
  deferred: Set<string>;
  preflightFailed: Set<string>;
  idleCpuPercent: number;
  /** CPU per attempt of other names in the idle window, when it had any. */
  cpuPerAttemptSeconds: number | undefined;
}

/**
 * Registers one service with 5 names and measures what the process does about it: when the names'
 * challenge routes are in its registration, and the CPU it spends from the registration until its
 * work is done (the routes, and with `untilDone` `budget` or `preflight` the names' first deferral
 * or pre-flight failure logged) and it has been quiet for 1 s (within its idle rate), less the idle
 * rate over that time.
 */
async function timeChange(
  ctx: ChangeTiming,
  svc: { id: string; names: string[] },
  opts: { untilDone: ScaleState | undefined; quietTimeoutMs: number },
): Promise<Change> {
  const { child } = ctx;
  const names = new Set(svc.names);
  let otherAttempts = 0;
  const stopCounting = child.onLine((line) => {
    if (typeof line.hostname !== 'string' || names.has(line.hostname)) return;
    if (line.event === 'retry_scheduled' || line.event === 'cert_deferred') otherAttempts++;
  });
  const before = sampleProc(child.pid);
  // When consul-acme saw the catalog change (its own log line).
  let snapshotAt: number | undefined;
  let registeredAt: number | undefined;
  const stopWatching = child.onLine((line) => {
    const at = typeof line.time === 'string' ? Date.parse(line.time) : NaN;
    if (at >= before.at && line.event === 'discovery_snapshot') snapshotAt ??= at;
    if (snapshotAt !== undefined && at >= snapshotAt && line.event === 'registration_updated') registeredAt ??= at;
  });
  await registerAppService(
    ctx.consulAddress,
    svc.id,
    svc.names.map((name) => `urlprefix-${name}/`),
  );
  const seenAt = await ctx.registration.waitForTags(challengeRouteTags(svc.names), DETECTION_BOUND_MS);
  let done: true | undefined = true;
  if (opts.untilDone === 'budget') {
    done = await waitAtMost(
      'the new names deferred',
      child,
      () => (svc.names.every((h) => ctx.deferred.has(h)) ? true : undefined),
      120_000,
      50,
    );
  } else if (opts.untilDone === 'preflight') {
    done = await waitAtMost(
      'the new names failed pre-flight',
      child,
      () => (svc.names.every((h) => ctx.preflightFailed.has(h)) ? true : undefined),
      120_000,
      50,
    );
  }
  const quiet = await waitQuiet(child.pid, {
    quietMs: 1_000,
    idleCpuPercent: Math.max(ctx.idleCpuPercent, 1),
    timeoutMs: opts.quietTimeoutMs,
  });
  stopCounting();
  stopWatching();
  // To the end of the quiet second: what it spent in it is counted, and so is its idle share.
  const end = quiet.last;
  const seconds = (end.at - before.at) / 1000;
  // Other names' retries are not this change's work: when the idle window had such attempts, their
  // cost per attempt there stands for them; otherwise the idle rate is the baseline.
  const baselineSeconds =
    ctx.cpuPerAttemptSeconds !== undefined
      ? otherAttempts * ctx.cpuPerAttemptSeconds
      : (Math.max(ctx.idleCpuPercent, 0) / 100) * seconds;
  const baseline =
    ctx.cpuPerAttemptSeconds !== undefined
      ? `${otherAttempts} other names' attempts at ${ms(ctx.cpuPerAttemptSeconds * 1000)} each`
      : `idle rate ${ctx.idleCpuPercent.toFixed(2)} %`;
  const rawCpuSeconds = end.cpuSeconds - before.cpuSeconds;
  const cpuSeconds = rawCpuSeconds - baselineSeconds;
  return {
    detectionMs: seenAt === undefined ? undefined : seenAt - before.at,
    snapshotMs: snapshotAt === undefined ? undefined : snapshotAt - before.at,
    registeredMs: registeredAt === undefined ? undefined : registeredAt - before.at,
    done: done === true,
    cpuMs: cpuSeconds * 1000,
    untilQuietSeconds: ((quiet.quietFrom ?? quiet.last).at - before.at) / 1000,
    quiet: quiet.quietFrom !== undefined,
    otherAttempts,
    baseline,
    rawCpuMs: rawCpuSeconds * 1000,
    mainCpuMs: (end.mainCpuSeconds - before.mainCpuSeconds) * 1000,
    baselineMs: baselineSeconds * 1000,
    fromMs: before.at,
    toMs: end.at,
  };
}

/** Whether the change's own work is at least half of what was measured (else the baseline's error swamps it). */
function measurable(change: Change): boolean {
  return change.baselineMs <= change.rawCpuMs / 2;
}

/** `main thread 1.20 % (0.40 % in the kernel), other threads 0.10 %`. */
function threadsText(threads: Array<[string, number]>, seconds: number): string {
  const pct = (cpu: number): string => `${((100 * cpu) / seconds).toFixed(2)} %`;
  const kernel = threads.find(([name]) => name === MAIN_THREAD_SYSTEM)?.[1];
  return threads
    .filter(([name]) => name !== MAIN_THREAD_SYSTEM)
    .map(([name, cpu]) =>
      name === 'main thread' && kernel !== undefined
        ? `${name} ${pct(cpu)} (${pct(kernel)} in the kernel)`
        : `${name} ${pct(cpu)}`,
    )
    .join(', ');
}

/**
 * What Consul itself takes for a registration the size of consul-acme's own (one challenge route
 * per name, and a check): a service `bench-tags-probe` registered with `tags` tags, then registered
 * again `repeats` times with one tag changed; each time, how long the agent took to answer the PUT
 * and how long until the catalog's blocking query showed the new tag. Removed afterwards.
 */
async function consulAloneRegistration(
  consulAddress: string,
  tags: number,
  repeats: number,
): Promise<{ putMs: number[]; catalogMs: number[]; answerBytes: number }> {
  const name = 'bench-tags-probe';
  const watch = watchRegistration(consulAddress, name);
  const register = async (round: number): Promise<number> => {
    const started = Date.now();
    const res = await fetch(`${consulAddress}/v1/agent/service/register`, {
      method: 'PUT',
      body: JSON.stringify({
        ID: name,
        Name: name,
        Port: 9,
        Address: '127.0.0.1',
        Tags: Array.from({ length: tags }, (_, i) =>
          i === 0
            ? `urlprefix-round-${round}.probe.example.test/.well-known/acme-challenge/`
            : `urlprefix-${hostname(i)}/.well-known/acme-challenge/`,
        ),
        Check: { CheckID: `${name}:ttl`, Name: `${name} ttl`, TTL: '1h', Status: 'passing' },
      }),
      signal: AbortSignal.timeout(60_000),
    });
    if (!res.ok) fail(`registering ${name}: ${res.status} ${await res.text()}`);
    return started;
  };
  const putMs: number[] = [];
  const catalogMs: number[] = [];
  try {
    await register(0);
    await watch.waitForTags([`urlprefix-round-0.probe.example.test/.well-known/acme-challenge/`], 60_000);
    for (let round = 1; round <= repeats; round++) {
      await sleep(1_000);
      const started = Date.now();
      await register(round);
      putMs.push(Date.now() - started);
      const seen = await watch.waitForTags(
        [`urlprefix-round-${round}.probe.example.test/.well-known/acme-challenge/`],
        60_000,
      );
      catalogMs.push(seen === undefined ? 60_000 : seen - started);
    }
    return { putMs, catalogMs, answerBytes: watch.lastAnswerBytes() };
  } finally {
    watch.stop();
    await fetch(`${consulAddress}/v1/agent/service/deregister/${name}`, { method: 'PUT' }).catch(() => undefined);
  }
}

/** Attempts (retries and deferrals) logged in the idle window. */
function idleAttempts(idle: Pick<Figures['idle'], 'events'>): number {
  return (idle.events.get('retry_scheduled') ?? 0) + (idle.events.get('cert_deferred') ?? 0);
}

function report(f: Figures, opts: ScaleOptions): string {
  const n = opts.names;
  const atTarget = n === 10_000 ? '' : ' (the targets are for 10,000 names)';
  const detectionMs = f.detections.map((d) => d.detectionMs ?? DETECTION_BOUND_MS);
  const missedDetections = f.detections.filter((d) => d.detectionMs === undefined).length;
  const p50 = percentile(detectionMs, 50);
  const p99 = percentile(detectionMs, 99);
  const changeCpu = f.detections.filter(measurable).map((d) => d.cpuMs);
  const detectionMedian = (figure: (d: Change) => number): number => percentile(f.detections.map(figure), 50);
  const stepP50 = (pick: (d: Change) => number | undefined): string => {
    const values = f.detections.map(pick).filter((v): v is number => v !== undefined);
    return values.length === 0 ? 'not logged' : ms(percentile(values, 50));
  };
  const attempts = idleAttempts(f.idle);
  const eventsText = [...f.idle.events.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, 6)
    .map(([k, v]) => `${v}× ${k}`)
    .join(', ');
  const firstScan = f.scans[0];
  const laterScans = f.scans.slice(1);
  const rows: Row[] = [
    [`scale ${n}: ${STATE_TITLES[f.state]}${atTarget}`, ''],
    [
      'set-up',
      `${n / NAMES_PER_SERVICE} services registered in ${s(f.servicesSeconds)}` +
        (f.seedSeconds !== undefined ? `; store seeded through FileCertificateStore.put in ${s(f.seedSeconds)}` : ''),
    ],
    [
      'spawn → ready / → settled',
      `${s(f.readySeconds)} / ${s(f.settledSeconds)}${f.settledQuietly ? '' : ' (not quiet within the bound)'}` +
        (f.settleNote ? `; ${f.settleNote}` : ''),
    ],
    [
      `idle CPU (${f.idle.seconds.toFixed(0)} s window)`,
      versus(
        `${f.idle.cpuPercent.toFixed(2)} % of a core`,
        f.idle.cpuPercent < TARGETS.idleCpuPercent,
        `< ${TARGETS.idleCpuPercent} %`,
      ),
    ],
    [
      '  by thread',
      f.idle.threads.length === 0 ? 'no CPU tick in any thread' : threadsText(f.idle.threads, f.idle.seconds),
    ],
    ['  logged during the window', `${f.idle.logLines} lines${eventsText ? `: ${eventsText}` : ''}`],
    ...(attempts > 0
      ? ([
          [
            '  CPU per attempt in the window',
            `${ms((f.idle.cpuSeconds * 1000) / attempts)} (${attempts} attempts: retries and deferrals)`,
          ],
        ] as Row[])
      : []),
    ['RSS when the work stopped (quiet 5 s)', mem(f.afterSettling.rssKb)],
    [
      'RSS after settling (end of the quiet window)',
      versus(
        mem(f.afterQuiet.rssKb),
        mbOf(f.afterQuiet.rssKb) < TARGETS.rssAfterSettlingMb,
        `< ${TARGETS.rssAfterSettlingMb} MB`,
      ),
    ],
    ['peak RSS (VmHWM)', versus(mem(f.hwmKb), mbOf(f.hwmKb) < TARGETS.peakRssMb, `< ${TARGETS.peakRssMb} MB`)],
    [
      'CPU per catalog change (1 service, 5 names)',
      versus(
        (measurable(f.change)
          ? `${ms(f.change.cpuMs)} until quiet ${s(f.change.untilQuietSeconds)} later`
          : `not measurable: other names' work dominates`) +
          (f.change.quiet ? '' : ' (not quiet within 30 s)') +
          (f.change.done ? '' : ' (its names were not deferred or failed within 120 s)') +
          `; ${ms(f.change.rawCpuMs)} (main thread ${ms(f.change.mainCpuMs)}) less ${f.change.baseline} (${ms(f.change.baselineMs)})` +
          (f.change.otherAttempts > 0 && !f.change.baseline.includes('attempts')
            ? `; ${f.change.otherAttempts} other names' attempts meanwhile`
            : '') +
          (f.state === 'preflight' ? '; the new names are probed until CONSUL_ACME_ROUTE_SETTLE ends, then fail' : ''),
        measurable(f.change) ? f.change.cpuMs < TARGETS.cpuPerChangeMs : undefined,
        `< ${TARGETS.cpuPerChangeMs} ms`,
      ),
    ],
    [
      `  the ${f.detections.length} detection registrations: median / mean`,
      (changeCpu.length === 0
        ? `not measurable: other names' work dominates`
        : `${ms(percentile(changeCpu, 50))} / ${ms(changeCpu.reduce((a, b) => a + b, 0) / changeCpu.length)}` +
          (changeCpu.length < f.detections.length ? ` (${changeCpu.length} measurable)` : '')) +
        (f.state === 'preflight'
          ? ' (each to its first quiet second, at most 10 s: the probes of the new names that come after it are not counted)'
          : '') +
        (f.detections[0] ? `, less ${f.detections[0].baseline.replace(/^\d+ /, '')}` : ''),
    ],
    [
      `    before the baseline: median CPU, of it the main thread's; median window`,
      f.detections.length === 0
        ? 'none'
        : `${ms(detectionMedian((d) => d.rawCpuMs))}, ${ms(detectionMedian((d) => d.mainCpuMs))}; ` +
          s(detectionMedian((d) => (d.toMs - d.fromMs) / 1000)),
    ],
    [
      `detection, ${f.detections.length} services one at a time (${opts.detectionGapSeconds} s apart): p50`,
      versus(ms(p50), p50 < TARGETS.detectionP50Ms, `< ${TARGETS.detectionP50Ms} ms`),
    ],
    ['  p99', versus(ms(p99), p99 < TARGETS.detectionP99Ms, `< ${TARGETS.detectionP99Ms} ms`)],
    [
      '  p50 of: change seen (its log) / registration updated in the agent (its log) / routes in the catalog',
      `${stepP50((d) => d.snapshotMs)} / ${stepP50((d) => d.registeredMs)} / ${ms(p50)}`,
    ],
    [
      '  min / max',
      `${ms(Math.min(...detectionMs))} / ${ms(Math.max(...detectionMs))}` +
        (missedDetections > 0
          ? ` (${missedDetections} not within ${DETECTION_BOUND_MS / 1000} s, counted as that)`
          : ''),
    ],
    ['peak open file descriptors', String(f.peakFds)],
    [
      'renewal scan at start',
      firstScan
        ? `${firstScan.durationMs} ms over ${n + (f.state === 'valid' ? (1 + opts.detections) * 5 : 0)} names`
        : 'not seen',
    ],
    [
      'scheduled renewal scans',
      laterScans.length > 0 ? laterScans.map((x) => `${x.durationMs} ms`).join(', ') : 'none during the run',
    ],
    [
      'orders placed (Pebble log)',
      `${f.orders}${f.state === 'valid' ? ' (must be 0)' : f.state === 'budget' ? ' (the budget allows 1)' : ' (must be 0)'}`,
    ],
    [
      'own registration in the catalog',
      `${f.registrationSize.tags} tags in ${f.registrationSize.registrations} registrations, ${(f.registrationBytes / 1024).toFixed(0)} KiB answer`,
    ],
    [
      `  Consul alone, the same size re-registered ${f.consulAlone.putMs.length}×: PUT / in the catalog, p50`,
      `${ms(percentile(f.consulAlone.putMs, 50))} / ${ms(percentile(f.consulAlone.catalogMs, 50))} ` +
        `(max ${ms(Math.max(...f.consulAlone.catalogMs))}; ${(f.consulAlone.answerBytes / 1024).toFixed(0)} KiB answer)`,
    ],
    ['SIGTERM → exit', s(f.stopSeconds)],
  ];
  if (f.soak) {
    const rss = f.soak.samples.map((x) => x.rssKb);
    rows.push(
      [`soak, ${opts.soakMinutes} min, RSS every ${SOAK_SAMPLE_MS / 1000} s`, ''],
      ['RSS first / last / max', `${mb(rss[0]!)} / ${mb(rss[rss.length - 1]!)} / ${mb(Math.max(...rss))}`],
      ['CPU over the soak (scheduled scans included)', `${f.soak.cpuPercent.toFixed(2)} % of a core`],
    );
  }
  rows.push(['load average (1 min) at the end', loadNow()]);
  return `${table(rows)}\n${f.profileSummary ? `\nCPU profile (${f.state}):\n${f.profileSummary}` : ''}`;
}
