/**
 * `npm run bench`: measures consul-acme the way an operator runs it, and prints figures. It asserts
 * nothing (timing belongs here, not in tests); docs/operations.md "Resource sizing" quotes its
 * output. Every mode starts its own Consul 1.8.7, Pebble and (where used) the Vault stand-in on
 * this machine, spawns `node dist/src/main.js run` as a child process, reads the child's
 * /proc/<pid>, is bounded in time, and removes everything it started on success, failure and
 * Ctrl-C. Progress goes to stderr, figures to stdout.
 *
 * Modes (one per run):
 *
 *   (default)          test/bench/throughput.ts: start-up, idle, issuance of N certificates, steady
 *                      state, the challenge responder, shutdown, then the bare acme-client loop
 *                      for N names at the same concurrency against the same Pebble, and the ratio.
 *                      N = 50, C = 8 unless given.
 *   --throughput       the throughput comparison: N = 100 names, concurrency 16
 *                      (polling 20–500 ms in both, always).
 *   --scale N          test/bench/scale.ts: N names (a multiple of 5) in three steady states (all
 *                      valid, all waiting on a budget, all failing pre-flight): idle CPU, RSS, CPU per
 *                      catalog change, detection p50/p99, open files, renewal-scan time, soak.
 *   --routing          test/bench/routing.ts: tag → certificate through the Fabio-rules router for
 *                      20 new names with two instances, p50 and p99.
 *
 * Options:
 *   --hostnames N --concurrency C --requests R --fetch-concurrency K --idle-seconds S
 *   --log-level LEVEL --trust setting|node-extra-ca-certs --no-bare       (default and --throughput)
 *   --states valid,budget,preflight --soak-minutes M --idle-seconds S --detections K
 *   --detection-gap-seconds G
 *   --log-level LEVEL                                                    (--scale; soak default 10)
 *   --names K                                                            (--routing; default 20)
 *   --cpu-prof DIR   run each consul-acme child under `node --cpu-prof`, keep the profiles in DIR
 *                    and print the top self-time functions of each measured phase
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { abort, BenchFailure, cleanup, guardRun, machineHeader, onCleanup } from './harness.js';
import { routingTimeoutMs, runRouting } from './routing.js';
import { runScale, SCALE_STATES, scaleTimeoutMs, type ScaleState } from './scale.js';
import { runThroughput, throughputTimeoutMs } from './throughput.js';

const USAGE =
  'usage: node dist/test/bench/run.js [--throughput] [--hostnames N] [--concurrency C] [--requests R] ' +
  '[--fetch-concurrency K] [--idle-seconds S] [--log-level LEVEL] [--trust setting|node-extra-ca-certs] [--no-bare]\n' +
  '       node dist/test/bench/run.js --scale N [--states valid,budget,preflight] [--soak-minutes M] ' +
  '[--idle-seconds S] [--detections K] [--detection-gap-seconds G] [--log-level LEVEL]\n' +
  '       node dist/test/bench/run.js --routing [--names K]\n' +
  '       every mode: [--cpu-prof DIR]';

function usage(problem: string): never {
  process.stderr.write(`bench: ${problem}\n${USAGE}\n`);
  process.exit(2);
}

function wholeNumber(name: string, raw: string | undefined, fallback: number, min: number, max: number): number {
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min || n > max)
    usage(`--${name} must be a whole number from ${min} to ${max}, got "${raw}"`);
  return n;
}

function readArgs(argv: string[]) {
  try {
    return parseArgs({
      args: argv,
      options: {
        throughput: { type: 'boolean' },
        scale: { type: 'string' },
        routing: { type: 'boolean' },
        hostnames: { type: 'string' },
        concurrency: { type: 'string' },
        requests: { type: 'string' },
        'fetch-concurrency': { type: 'string' },
        'idle-seconds': { type: 'string' },
        'log-level': { type: 'string' },
        trust: { type: 'string' },
        'no-bare': { type: 'boolean' },
        states: { type: 'string' },
        'soak-minutes': { type: 'string' },
        detections: { type: 'string' },
        'detection-gap-seconds': { type: 'string' },
        names: { type: 'string' },
        'cpu-prof': { type: 'string' },
      },
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (err) {
    usage(err instanceof Error ? err.message : String(err));
  }
}

function trustOption(raw: string | undefined): 'setting' | 'node-extra-ca-certs' {
  if (raw === undefined || raw === 'setting') return 'setting';
  if (raw === 'node-extra-ca-certs') return raw;
  usage(`--trust must be setting or node-extra-ca-certs, got "${raw}"`);
}

function scaleStates(raw: string | undefined): ScaleState[] {
  if (raw === undefined) return [...SCALE_STATES];
  const states = raw.split(',').map((x) => x.trim());
  for (const state of states)
    if (!(SCALE_STATES as readonly string[]).includes(state))
      usage(`--states takes ${SCALE_STATES.join(', ')} (comma-separated), got "${state}"`);
  return [...new Set(states)] as ScaleState[];
}

/** A scratch directory on tmpfs when there is one (seeding thousands of certificates with fsyncs is not the point). */
function scratchDirectory(): string {
  const dir = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'consul-acme-bench-'));
  onCleanup(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function main(): Promise<void> {
  const args = readArgs(process.argv.slice(2));
  const modes = [args.scale !== undefined, args.routing === true, args.throughput === true].filter(Boolean).length;
  if (modes > 1) usage('--scale, --routing and --throughput are separate modes: give one');
  const cpuProfDir = args['cpu-prof'] === undefined ? undefined : resolve(args['cpu-prof']);
  if (cpuProfDir) mkdirSync(cpuProfDir, { recursive: true });
  const logLevel = args['log-level'];

  if (args.scale !== undefined) {
    const names = wholeNumber('scale', args.scale, 0, 5, 100_000);
    if (names % 5 !== 0) usage(`--scale must be a multiple of 5 (5 names per service), got ${names}`);
    const opts = {
      names,
      states: scaleStates(args.states),
      soakMinutes: wholeNumber('soak-minutes', args['soak-minutes'], 10, 0, 600),
      idleSeconds: wholeNumber('idle-seconds', args['idle-seconds'], 60, 5, 3600),
      detections: wholeNumber('detections', args.detections, 20, 1, 1000),
      detectionGapSeconds: wholeNumber('detection-gap-seconds', args['detection-gap-seconds'], 5, 0, 600),
      logLevel: logLevel ?? 'info',
      cpuProfDir,
      dir: scratchDirectory(),
    };
    const lift = guardRun(scaleTimeoutMs(opts));
    process.stdout.write(
      `consul-acme benchmark, scale mode: ${names} names, ${names / 5} services × 5 names (urlprefix-<name>/ tags)\n` +
        machineHeader([
          `states ${opts.states.join(', ')}; quiet window ${opts.idleSeconds} s; ${opts.detections} detections ${opts.detectionGapSeconds} s apart; ` +
            `soak ${opts.soakMinutes} min (valid state); log level ${opts.logLevel}; file store on ${opts.dir.startsWith('/dev/shm') ? '/dev/shm (tmpfs)' : 'the temporary directory'}; ` +
            `every other setting at its default${cpuProfDir ? `; CPU profiles in ${cpuProfDir}` : ''}`,
        ]) +
        '\n',
    );
    await runScale(opts);
    lift();
  } else if (args.routing) {
    const opts = { names: wholeNumber('names', args.names, 20, 1, 99), cpuProfDir, dir: scratchDirectory() };
    const lift = guardRun(routingTimeoutMs(opts));
    process.stdout.write(
      `consul-acme benchmark, routing mode: tag → certificate through the Fabio-rules router\n` +
        machineHeader([
          `${opts.names} names; 2 instances; Vault stand-in store; pre-flight through the router; every other setting at its default`,
        ]) +
        '\n',
    );
    await runRouting(opts);
    lift();
  } else {
    const preset = args.throughput === true;
    const trust = trustOption(args.trust);
    const opts = {
      hostnames: wholeNumber('hostnames', args.hostnames, preset ? 100 : 50, 1, 100),
      concurrency: wholeNumber('concurrency', args.concurrency, preset ? 16 : 8, 1, 64),
      requests: wholeNumber('requests', args.requests, 2000, 1, 1_000_000),
      fetchConcurrency: wholeNumber('fetch-concurrency', args['fetch-concurrency'], 4, 1, 256),
      idleSeconds: wholeNumber('idle-seconds', args['idle-seconds'], 10, 1, 120),
      logLevel: logLevel ?? 'warn',
      trust,
      bare: args['no-bare'] !== true,
      cpuProfDir,
      dir: scratchDirectory(),
    };
    const lift = guardRun(throughputTimeoutMs());
    await runThroughput(opts);
    lift();
  }
  await cleanup();
}

main().then(
  () => process.exit(0),
  (err: unknown) =>
    abort(err instanceof BenchFailure ? err.message : err instanceof Error ? (err.stack ?? err.message) : String(err)),
);
