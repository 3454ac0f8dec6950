/**
 * The default run of `npm run bench` (and `--throughput`): consul-acme issuing N certificates, next
 * to a bare acme-client loop doing the same against the same Pebble in the same run.
 *
 * It starts a real Consul agent, a real Pebble (doing real HTTP-01 validation against our
 * responder) and the Vault stand-in, then spawns `node dist/src/main.js run` as a child process
 * with the Vault store, and measures, from /proc/<pid>:
 *
 *   1. start-up: spawn until /health/ready answers 200;
 *   2. idle: RSS and CPU over a quiet window with nothing to manage;
 *   3. issuance: services declaring N hostnames (`consul-acme.hosts=` tags, 10 names per service)
 *      are registered; time until their challenge routes are in consul-acme's registration, until
 *      the first and until all N certificates are in Vault (each order after its pre-flight check,
 *      against Pebble's DNS; the registered-domain budget is off, since N names share one
 *      registered domain), certificates per second, peak RSS (VmHWM) and CPU seconds;
 *   4. steady: RSS and CPU over a quiet window once everything is issued;
 *   5. responder: GET /.well-known/acme-challenge/<token> for a token put into Consul KV under
 *      consul-acme/challenges/, R requests from K concurrent keep-alive clients (requests/s,
 *      p50/p99), then R/4 requests for unknown tokens (a miss waits up to 250 ms for the challenge watch, src/adapters/consul/consul-challenge-store.ts);
 *   6. shutdown: SIGTERM until the process exits;
 *   7. the bare loop: `runBareAcmeClient` (test/bench/acme-baseline.ts) for N other names at the
 *      same concurrency and polling, answering Pebble from an in-process responder on the port
 *      consul-acme listened on, and consul-acme ÷ bare, next to the throughput targets (≤ 30 ms of
 *      CPU per certificate, ≥ 0.8× the bare loop's throughput).
 *
 * How the service trusts Pebble's certificate matters: with CONSUL_ACME_CA_BUNDLE (`--trust
 * setting`, the default) the transport builds one TLS context from Node's roots plus the bundle;
 * `--trust node-extra-ca-certs` gives the bundle to Node through NODE_EXTRA_CA_CERTS instead, so the
 * default TLS context is used: that is the path of a publicly trusted CA such as Let's Encrypt,
 * where no bundle is set.
 */
import { writeFileSync } from 'node:fs';
import { Agent, request as httpRequest } from 'node:http';
import { join } from 'node:path';
import { MemoryChallengeStore } from '../../src/adapters/memory/memory-challenge-store.js';
import { challengeRouteTags } from '../../src/domain/challenge.js';
import { startChallengeResponder } from '../support/challenge-responder.js';
import { startConsul } from '../support/consul.js';
import { freePort } from '../support/net.js';
import { startPebble } from '../support/pebble.js';
import { startVaultStandin } from '../support/vault-standin.js';
import { runBareAcmeClient, type AcmeBenchResult } from './acme-baseline.js';
import {
  ChildProfile,
  consulPut,
  fail,
  loadNow,
  machineHeader,
  mb,
  onCleanup,
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
  waitReady,
  waitUntil,
  type Row,
} from './harness.js';
import { watchRegistration } from './registration-watch.js';

export interface ThroughputOptions {
  hostnames: number;
  concurrency: number;
  requests: number;
  fetchConcurrency: number;
  idleSeconds: number;
  logLevel: string;
  trust: 'setting' | 'node-extra-ca-certs';
  /** Run the bare acme-client loop too (default true). */
  bare: boolean;
  cpuProfDir: string | undefined;
  /** A scratch directory, removed at the end. */
  dir: string;
}

/** The budget of the whole mode. */
export function throughputTimeoutMs(): number {
  return 10 * 60_000;
}

const READY_TIMEOUT_MS = 30_000;
const ISSUANCE_TIMEOUT_MS = 5 * 60_000;
const NAMES_PER_SERVICE = 10;
const KV_PREFIX = 'consul-acme/';
const VAULT_MOUNT = 'secret';
const VAULT_PREFIX = 'fabio/certs';
const SERVICE_NAME = 'consul-acme';
const INSTANCE_NAME = 'bench';
const POLL_MIN_MS = 20;
const POLL_MAX_MS = 500;
/** The throughput targets: CPU per certificate, and throughput beside the bare loop. */
const TARGET_CPU_MS_PER_CERTIFICATE = 30;
const TARGET_RATIO_TO_BARE = 0.8;

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

function threadText(threads: Array<[string, number]>): string {
  if (threads.length === 0) return 'no CPU tick';
  const kernel = threads.find(([name]) => name === MAIN_THREAD_SYSTEM)?.[1];
  return threads
    .filter(([name]) => name !== MAIN_THREAD_SYSTEM)
    .map(([name, cpu]) =>
      name === 'main thread' && kernel !== undefined
        ? `${name} ${cpu.toFixed(2)} s (${kernel.toFixed(2)} s in the kernel)`
        : `${name} ${cpu.toFixed(2)} s`,
    )
    .join(', ');
}

function statusText(statuses: Map<number, number>): string {
  return [...statuses.entries()]
    .sort(([a], [b]) => a - b)
    .map(([code, n]) => `${n}×${code}`)
    .join(', ');
}

// ---------------------------------------------------------------------------------------------

export async function runThroughput(opts: ThroughputOptions): Promise<void> {
  const { dir } = opts;
  const hostnames = Array.from(
    { length: opts.hostnames },
    (_, i) => `app-${String(i + 1).padStart(3, '0')}.bench.example.test`,
  );

  setPhase('starting Consul, Pebble and the Vault stand-in');
  const challengePort = await freePort();
  const adminPort = await freePort();
  const consul = await startConsul();
  onCleanup(() => consul.stop());
  const pebble = await startPebble({ httpPort: challengePort, nonceRejectPercent: 0 });
  onCleanup(() => pebble.stop());
  const vault = await startVaultStandin();
  onCleanup(() => vault.close());
  const caFile = join(dir, 'acme-ca.pem');
  writeFileSync(caFile, pebble.caBundlePem);
  const registration = watchRegistration(consul.address, SERVICE_NAME);
  onCleanup(() => registration.stop());
  const profile = new ChildProfile(opts.cpuProfDir, 'throughput');
  const loadAtStart = loadNow();

  setPhase('start-up');
  const spawnedAt = Date.now();
  const child = spawnService({
    challengePort,
    adminPort,
    nodeArgs: profile.nodeArgs(),
    env: {
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
      CONSUL_ACME_SERVICE_NAME: SERVICE_NAME,
      CONSUL_ACME_INSTANCE_NAME: INSTANCE_NAME,
      CONSUL_ACME_ACME_POLL_MIN_MS: String(POLL_MIN_MS),
      CONSUL_ACME_ACME_POLL_MAX_MS: String(POLL_MAX_MS),
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
  });
  setChildOutput(() => child.output());
  const startupSeconds = await waitReady(child, spawnedAt, READY_TIMEOUT_MS);
  const afterStart = sampleProc(child.pid);

  setPhase('idle');
  let threadsBefore = threadCpuSeconds(child.pid);
  let sampler = new Sampler(child.pid);
  await sleep(opts.idleSeconds * 1000);
  const idle = sampler.stop();
  const idleThreads = threadCpuDelta(threadsBefore, threadCpuSeconds(child.pid));
  profile.phase('idle, nothing managed', idle.seconds > 0 ? sampler.first.at : Date.now(), sampler.last.at);

  setPhase(`issuance of ${opts.hostnames} certificates`);
  const vaultRequestsBefore = vault.requests().length;
  threadsBefore = threadCpuSeconds(child.pid);
  sampler = new Sampler(child.pid);
  const registeredAt = Date.now();
  for (let i = 0; i < hostnames.length; i += NAMES_PER_SERVICE) {
    const names = hostnames.slice(i, i + NAMES_PER_SERVICE);
    const id = `bench-app-${i / NAMES_PER_SERVICE + 1}`;
    await consulPut(
      consul.address,
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
    ISSUANCE_TIMEOUT_MS,
    100,
  );
  const allAt = Date.now();
  const issuance = sampler.stop();
  const issuanceThreads = threadCpuDelta(threadsBefore, threadCpuSeconds(child.pid));
  profile.phase(`issuance of ${opts.hostnames} certificates`, registeredAt, allAt);
  const vaultRequests = vault.requests().length - vaultRequestsBefore;
  const routeTimes = challengeRouteTags(hostnames).map((tag) => registration.firstSeen(tag));
  const routesAt = routeTimes.every((t) => t !== undefined) ? Math.max(...routeTimes) : undefined;

  setPhase('steady state after issuance');
  // Let the last status polls, tag updates and the renewal scan finish before measuring.
  await sleep(2_000);
  sampler = new Sampler(child.pid);
  await sleep(opts.idleSeconds * 1000);
  const steady = sampler.stop();
  profile.phase(`steady, ${opts.hostnames} managed`, sampler.first.at, sampler.last.at);
  const memory = await heapFromMetrics(child.adminUrl);

  setPhase('challenge responder load');
  const token = 'bench-token_0123456789abcdefghijklmnopqrstuv';
  await consulPut(consul.address, `kv/${KV_PREFIX}challenges/${token}`, `${token}.bench-key-authorization`);
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

  setPhase('shutdown');
  // Every failed attempt (an order or a pre-flight check) is one retry_scheduled line.
  const failures = child.events('retry_scheduled');
  const stop = await stopChild(child);
  if (stop.killed) fail('consul-acme did not exit within 60 s of SIGTERM');
  const exitAtMs = Date.now();
  setChildOutput(() => '');
  registration.stop();

  let bare: AcmeBenchResult | undefined;
  if (opts.bare) {
    setPhase(`the bare acme-client loop: ${opts.hostnames} certificates, concurrency ${opts.concurrency}`);
    // Pebble validates on the port consul-acme answered on; it is free again.
    const challengeStore = new MemoryChallengeStore();
    const responder = await startChallengeResponder(challengeStore, { port: challengePort });
    try {
      bare = await runBareAcmeClient({
        directoryUrl: pebble.directoryUrl,
        caBundlePem: pebble.caBundlePem,
        hostnames: hostnames.map((h) => `bare-${h}`),
        concurrency: opts.concurrency,
        challengeStore,
        pollIntervalMinMs: POLL_MIN_MS,
        pollIntervalMaxMs: POLL_MAX_MS,
      });
    } finally {
      await responder.stop();
    }
  }

  const issueSeconds = (allAt - registeredAt) / 1000;
  const ourRate = opts.hostnames / issueSeconds;
  const ourCpuMs = (issuance.cpuSeconds / opts.hostnames) * 1000;
  const bareRows: Row[] = bare
    ? [
        [
          `the bare acme-client loop, same Pebble, same run (${opts.hostnames} other names, concurrency ${opts.concurrency}, polling ${POLL_MIN_MS}–${POLL_MAX_MS} ms)`,
          '',
        ],
        ['first order → all certificates', s(bare.seconds)],
        ['certificates per second', bare.certificatesPerSecond.toFixed(2)],
        ['CPU per certificate (the bench process)', `${bare.cpuMsPerCertificate.toFixed(1)} ms`],
        ['TLS connections to the CA', String(bare.connectionsOpened)],
        ['consul-acme next to the bare loop', ''],
        [
          'throughput, consul-acme ÷ bare (registration → all)',
          versus(
            `${(ourRate / bare.certificatesPerSecond).toFixed(2)}×`,
            ourRate / bare.certificatesPerSecond >= TARGET_RATIO_TO_BARE,
            `≥ ${TARGET_RATIO_TO_BARE}×`,
          ),
        ],
        ...(routesAt !== undefined
          ? ([
              [
                'throughput, consul-acme ÷ bare (routes registered → all)',
                `${(opts.hostnames / ((allAt - routesAt) / 1000) / bare.certificatesPerSecond).toFixed(2)}×`,
              ],
            ] as Row[])
          : []),
        ['CPU per certificate, consul-acme ÷ bare', `${(ourCpuMs / bare.cpuMsPerCertificate).toFixed(2)}×`],
      ]
    : [];
  process.stdout.write(
    `consul-acme benchmark: ${opts.hostnames} hostnames, CONSUL_ACME_QUEUE_CONCURRENCY=${opts.concurrency}, ` +
      `polling ${POLL_MIN_MS}–${POLL_MAX_MS} ms, log level ${opts.logLevel}, Pebble trusted through ` +
      `${opts.trust === 'setting' ? 'CONSUL_ACME_CA_BUNDLE' : 'NODE_EXTRA_CA_CERTS'}\n` +
      machineHeader([]) +
      table([
        ['start-up', ''],
        ['spawn → /health/ready', s(startupSeconds)],
        ['RSS when ready', mb(afterStart.rssKb)],
        [`idle, nothing managed (${idle.seconds.toFixed(0)} s)`, ''],
        ['RSS at end / max', `${mb(idle.endRssKb)} / ${mb(idle.maxRssKb)}`],
        ['CPU', `${idle.cpuSeconds.toFixed(2)} s (${idle.cpuPercent.toFixed(1)} % of one core)`],
        ['  by thread', threadText(idleThreads)],
        [`issuance of ${opts.hostnames} certificates (Pebble, HTTP-01, Vault KV v2)`, ''],
        [
          'registration → challenge routes in our registration',
          routesAt !== undefined ? s((routesAt - registeredAt) / 1000) : 'not seen',
        ],
        ['registration → first certificate in Vault', s(((firstAt ?? allAt) - registeredAt) / 1000)],
        ['registration → all certificates in Vault', s(issueSeconds)],
        ['certificates per second', ourRate.toFixed(2)],
        ['failed attempts (retry_scheduled events)', String(failures)],
        ['CPU', `${issuance.cpuSeconds.toFixed(2)} s (${issuance.cpuPercent.toFixed(1)} % of one core)`],
        ['  by thread', threadText(issuanceThreads)],
        [
          'CPU per certificate',
          versus(
            `${ourCpuMs.toFixed(0)} ms`,
            ourCpuMs <= TARGET_CPU_MS_PER_CERTIFICATE,
            `≤ ${TARGET_CPU_MS_PER_CERTIFICATE} ms`,
          ),
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
          `unknown token × ${misses.requests} (each waits for the challenge watch, up to 250 ms)`,
          `${misses.perSecond.toFixed(0)} req/s, p50 ${misses.p50Ms.toFixed(2)} ms, p99 ${misses.p99Ms.toFixed(2)} ms, max ${misses.maxMs.toFixed(1)} ms (${statusText(misses.statuses)})`,
        ],
        [
          '  CPU',
          `${missesUsage.cpuSeconds.toFixed(2)} s (${missesUsage.cpuPercent.toFixed(0)} % of one core), RSS max ${mb(missesUsage.maxRssKb)}`,
        ],
        ['shutdown', ''],
        ['SIGTERM → exit', `${s(stop.seconds)} (exit ${stop.exit.code ?? stop.exit.signal})`],
        ['peak RSS over the whole run (VmHWM)', mb(Math.max(issuance.hwmKb, hitsUsage.hwmKb, missesUsage.hwmKb))],
        ...bareRows,
        ['load average (1 min) at the start / at the end', `${loadAtStart} / ${loadNow()}`],
      ]) +
      '\n',
  );
  const summary = profile.summarize(exitAtMs);
  if (summary !== '') process.stdout.write(`\nCPU profile of consul-acme:\n${summary}`);
}
