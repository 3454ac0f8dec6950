/**
 * What one certificate costs through AcmeIssuer, next to a bare acme-client loop doing the same job
 * against the same CA in the same process. It asserts nothing (timing belongs in benchmarks) and
 * prints figures: wall time, certificates per second and CPU milliseconds per certificate
 * (`process.cpuUsage()`, user + system, of this process only: Pebble runs in its own process).
 *
 * - `runBareAcmeClient`: acme-client 5.4.0 as its README shows it, `client.auto()` with
 *   `skipChallengeVerification`, one shared account, acme-client's own axios with a keep-alive
 *   https.Agent that trusts the CA bundle.
 * - `runAcmeIssuer`: our AcmeIssuer with a MemoryAccountStore and the given challenge store.
 *
 * Both issue one ECDSA P-256 certificate per hostname, `concurrency` at a time, with the same
 * polling (first wait `pollIntervalMinMs`, doubling up to `pollIntervalMaxMs`). Each first issues
 * `warmupCertificates` certificates for other names, unmeasured, so that account registration and
 * the JIT's first compilations are not counted against either.
 *
 * AcmeIssuer's write-ahead hook does nothing here: the record's write is the store's cost.
 *
 * Run directly it starts Pebble (test/support/pebble.ts: PEBBLE_VA_NOSLEEP=1, no nonce rejection)
 * and an HTTP-01 responder in this process, runs both for 100 names at concurrency 16 and prints
 * them side by side:
 *
 *   node dist/test/bench/acme-baseline.js [--hostnames N] [--concurrency C]
 *     [--order bare-first|issuer-first] [--only bare|issuer]
 *
 * The machine's other load shows in the figures: compare the two rows of one run, and run it more
 * than once.
 */
import { Agent, type AgentOptions } from 'node:https';
import type { Duplex } from 'node:stream';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { cpus } from 'node:os';
import * as acme from 'acme-client';
import { AcmeIssuer } from '../../src/adapters/acme/acme-issuer.js';
import { MemoryAccountStore } from '../../src/adapters/memory/memory-account-store.js';
import { MemoryChallengeStore } from '../../src/adapters/memory/memory-challenge-store.js';
import type { ChallengeStore } from '../../src/ports/challenge-store.js';
import type { IssueHooks } from '../../src/ports/issuer.js';
import { silentLogger } from '../../src/logging.js';
import { startChallengeResponder } from '../support/challenge-responder.js';
import { startPebble } from '../support/pebble.js';

export const DEFAULT_BENCH_HOSTNAMES = 100;
export const DEFAULT_BENCH_CONCURRENCY = 16;
const DEFAULT_POLL_MIN_MS = 20;
const DEFAULT_POLL_MAX_MS = 500;
const DEFAULT_POLL_ATTEMPTS = 40;
const DEFAULT_WARMUP_CERTIFICATES = 4;
const REQUEST_TIMEOUT_MS = 30_000;
/** The write-ahead record is the store's cost, not the issuer's: nothing is written here. */
const NO_HOOKS: IssueHooks = { beforeFinalize: async () => {} };

export interface AcmeBenchOptions {
  directoryUrl: string;
  /** Extra CA certificates (PEM) to trust for the directory. */
  caBundlePem?: string;
  /** One certificate per hostname. */
  hostnames: readonly string[];
  concurrency: number;
  /** Where key authorizations go; a responder the CA reaches must answer from it. */
  challengeStore: ChallengeStore;
  pollIntervalMinMs?: number;
  pollIntervalMaxMs?: number;
  /** Certificates issued first, unmeasured, for `warmup-<n>.<first hostname's parent>` names. */
  warmupCertificates?: number;
}

export interface AcmeBenchResult {
  certificates: number;
  seconds: number;
  certificatesPerSecond: number;
  cpuMsPerCertificate: number;
  /** TLS connections opened to the CA during the measured part. */
  connectionsOpened: number;
}

/** Runs `job` for every item, `concurrency` at a time; rejects with the first failure. */
async function eachLimited<T>(
  items: readonly T[],
  concurrency: number,
  job: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const item = items[next++] as T;
      await job(item);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, items.length)) }, worker));
}

function warmupNames(opts: AcmeBenchOptions): string[] {
  const first = opts.hostnames[0] ?? 'bench.test';
  const parent = first.includes('.') ? first.slice(first.indexOf('.') + 1) : first;
  const tag = Math.random().toString(36).slice(2, 8);
  return Array.from({ length: opts.warmupCertificates ?? DEFAULT_WARMUP_CERTIFICATES }, (_, i) => {
    return `warmup-${tag}-${i}.${parent}`;
  });
}

/** Measures `issueAll(hostnames)`: wall time and this process's CPU. */
async function measure(
  hostnames: readonly string[],
  connections: () => number,
  issueAll: () => Promise<void>,
): Promise<AcmeBenchResult> {
  const connectionsBefore = connections();
  const cpuBefore = process.cpuUsage();
  const started = process.hrtime.bigint();
  await issueAll();
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const cpu = process.cpuUsage(cpuBefore);
  const cpuMs = (cpu.user + cpu.system) / 1000;
  return {
    certificates: hostnames.length,
    seconds,
    certificatesPerSecond: hostnames.length / seconds,
    cpuMsPerCertificate: cpuMs / hostnames.length,
    connectionsOpened: connections() - connectionsBefore,
  };
}

/** A keep-alive https.Agent that counts the connections it opens. */
function countingAgent(options: AgentOptions): { agent: Agent; opened: () => number } {
  const agent = new Agent(options);
  let opened = 0;
  const create = agent.createConnection.bind(agent) as (...args: unknown[]) => Duplex;
  (agent as unknown as { createConnection: (...args: unknown[]) => Duplex }).createConnection = (...args) => {
    opened++;
    return create(...args);
  };
  return { agent, opened: () => opened };
}

/** acme-client's own `auto()` loop, one shared account, `concurrency` orders at a time. */
export async function runBareAcmeClient(opts: AcmeBenchOptions): Promise<AcmeBenchResult> {
  const { agent, opened } = countingAgent({ keepAlive: true, ...(opts.caBundlePem ? { ca: opts.caBundlePem } : {}) });
  const defaults = acme.axios.defaults as { httpsAgent?: unknown; acmeSettings?: { retryMaxAttempts: number } };
  const previousAgent = defaults.httpsAgent;
  defaults.httpsAgent = agent;
  try {
    const client = new acme.Client({
      directoryUrl: opts.directoryUrl,
      accountKey: await acme.crypto.createPrivateEcdsaKey('P-256'),
      backoffMin: opts.pollIntervalMinMs ?? DEFAULT_POLL_MIN_MS,
      backoffMax: opts.pollIntervalMaxMs ?? DEFAULT_POLL_MAX_MS,
      backoffAttempts: DEFAULT_POLL_ATTEMPTS,
    });
    await client.createAccount({ termsOfServiceAgreed: true });
    const issueOne = async (hostname: string): Promise<void> => {
      const key = await acme.crypto.createPrivateEcdsaKey('P-256');
      const [, csr] = await acme.crypto.createCsr({ commonName: hostname, altNames: [hostname] }, key);
      const certPem = await client.auto({
        csr,
        termsOfServiceAgreed: true,
        skipChallengeVerification: true,
        challengePriority: ['http-01'],
        challengeCreateFn: async (_authz, challenge, keyAuthorization) => {
          await opts.challengeStore.put(challenge.token, keyAuthorization);
        },
        challengeRemoveFn: async (_authz, challenge) => {
          await opts.challengeStore.delete(challenge.token);
        },
      });
      const info = acme.crypto.readCertificateInfo(certPem);
      if (!info.domains.altNames.includes(hostname)) throw new Error(`the certificate for ${hostname} lacks its name`);
    };
    await eachLimited(warmupNames(opts), opts.concurrency, issueOne);
    return await measure(opts.hostnames, opened, () => eachLimited(opts.hostnames, opts.concurrency, issueOne));
  } finally {
    defaults.httpsAgent = previousAgent;
    agent.destroy();
  }
}

/** Our AcmeIssuer, with a MemoryAccountStore, `concurrency` issuances at a time. */
export async function runAcmeIssuer(opts: AcmeBenchOptions): Promise<AcmeBenchResult> {
  const issuer = new AcmeIssuer({
    directoryUrl: opts.directoryUrl,
    ...(opts.caBundlePem ? { caBundlePem: opts.caBundlePem } : {}),
    accountStore: new MemoryAccountStore(),
    challengeStore: opts.challengeStore,
    pollIntervalMinMs: opts.pollIntervalMinMs ?? DEFAULT_POLL_MIN_MS,
    pollIntervalMaxMs: opts.pollIntervalMaxMs ?? DEFAULT_POLL_MAX_MS,
    pollAttempts: DEFAULT_POLL_ATTEMPTS,
    requestTimeoutMs: REQUEST_TIMEOUT_MS,
    logger: silentLogger(),
  });
  try {
    const issueOne = async (hostname: string): Promise<void> => {
      const issued = await issuer.issue({ hostnames: [hostname], keyType: 'ec-p256' }, NO_HOOKS);
      if (issued.certPem.length === 0) throw new Error(`no certificate for ${hostname}`);
    };
    await eachLimited(warmupNames(opts), opts.concurrency, issueOne);
    return await measure(
      opts.hostnames,
      () => issuer.connectionsOpened(),
      () => eachLimited(opts.hostnames, opts.concurrency, issueOne),
    );
  } finally {
    issuer.close();
  }
}

const COLUMNS: Array<[string, number]> = [
  ['client', 18],
  ['seconds', 9],
  ['certificates/s', 16],
  ['CPU ms/certificate', 20],
  ['connections', 13],
];

function row(cells: string[]): string {
  return cells.map((cell, i) => (i === 0 ? cell.padEnd(COLUMNS[i]![1]) : cell.padStart(COLUMNS[i]![1]))).join('');
}

function resultRow(name: string, r: AcmeBenchResult): string {
  return row([
    name,
    r.seconds.toFixed(2),
    r.certificatesPerSecond.toFixed(2),
    r.cpuMsPerCertificate.toFixed(1),
    String(r.connectionsOpened),
  ]);
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      hostnames: { type: 'string' },
      concurrency: { type: 'string' },
      order: { type: 'string' },
      only: { type: 'string' },
    },
  });
  const count = Number(values.hostnames ?? DEFAULT_BENCH_HOSTNAMES);
  const concurrency = Number(values.concurrency ?? DEFAULT_BENCH_CONCURRENCY);
  if (!Number.isInteger(count) || count < 1) throw new Error(`--hostnames must be a positive whole number`);
  if (!Number.isInteger(concurrency) || concurrency < 1)
    throw new Error(`--concurrency must be a positive whole number`);
  if (values.order !== undefined && values.order !== 'bare-first' && values.order !== 'issuer-first')
    throw new Error(`--order must be bare-first or issuer-first, got "${values.order}"`);
  if (values.only !== undefined && values.only !== 'bare' && values.only !== 'issuer')
    throw new Error(`--only must be bare or issuer, got "${values.only}"`);

  const challengeStore = new MemoryChallengeStore();
  const responder = await startChallengeResponder(challengeStore);
  const pebble = await startPebble({
    httpPort: responder.port,
    nonceRejectPercent: 0,
    env: { PEBBLE_VA_NOSLEEP: '1' },
  });
  try {
    const common = { directoryUrl: pebble.directoryUrl, caBundlePem: pebble.caBundlePem, concurrency, challengeStore };
    const names = (prefix: string): string[] =>
      Array.from({ length: count }, (_, i) => `${prefix}-${i}.bench.example.test`);
    const ourFirst = values.order === 'issuer-first';
    const results: Array<[string, AcmeBenchResult]> = [];
    const order = ourFirst ? ['issuer', 'bare'] : ['bare', 'issuer'];
    for (const which of order.filter((w) => values.only === undefined || w === values.only)) {
      if (which === 'bare') {
        results.push(['bare acme-client', await runBareAcmeClient({ ...common, hostnames: names('bare') })]);
      } else {
        results.push(['AcmeIssuer', await runAcmeIssuer({ ...common, hostnames: names('issuer') })]);
      }
    }
    const cpu = cpus();
    process.stdout.write(
      `ACME issuance: ${count} certificates (ECDSA P-256), concurrency ${concurrency}, Pebble 2.4.0 with ` +
        `PEBBLE_VA_NOSLEEP=1 on this machine (${cpu.length} × ${cpu[0]?.model.trim() ?? 'unknown CPU'}, Node ${process.version})\n\n` +
        `${row(COLUMNS.map(([title]) => title))}\n` +
        results.map(([name, r]) => resultRow(name, r)).join('\n') +
        '\n',
    );
    const bare = results.find(([name]) => name.startsWith('bare'))?.[1];
    const ours = results.find(([name]) => name === 'AcmeIssuer')?.[1];
    if (bare && ours) {
      process.stdout.write(
        `\nAcmeIssuer / bare: throughput ${(ours.certificatesPerSecond / bare.certificatesPerSecond).toFixed(2)}×, ` +
          `CPU per certificate ${(ours.cpuMsPerCertificate / bare.cpuMsPerCertificate).toFixed(2)}×\n`,
      );
    }
  } finally {
    await pebble.stop();
    await responder.stop();
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  main().catch((err: unknown) => {
    process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 1;
  });
}
