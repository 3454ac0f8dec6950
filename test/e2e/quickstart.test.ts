/**
 * The README's quick start as a newcomer runs it, in a temporary copy of the checkout: the tracked
 * files (`git ls-files`, as they are in the working tree) with `node_modules` and `.cache` linked
 * from the checkout, so nothing is downloaded again.
 *
 * - `bash scripts/quickstart.sh` twice in a row (an earlier second run found the first run's
 *   certificate, announced it, and died asking /status before consul-acme listened). Each run must
 *   print a certificate issued by its own Pebble, and the files it names must say the same.
 * - Then `node scripts/quickstart.mjs` in the same (now built) copy: --keep-running until Ctrl-C,
 *   Ctrl-C before any certificate, and a consul-acme that exits at once. Every way out must leave
 *   nothing listening.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  realpathSync,
  rmSync,
  symlinkSync,
} from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chainsToRoot, dnsNames, keyMatches, splitPem } from '../support/x509.js';
import { waitFor } from '../support/wait.js';

const CHECKOUT = fileURLToPath(new URL('../../../', import.meta.url)); // from dist/test/e2e
const HOSTNAME = 'app.example.test';
/** One run of scripts/quickstart.sh, including its tsc build of the copy. */
const QUICKSTART_SH_TIMEOUT_MS = 240_000;
/** One run of scripts/quickstart.mjs alone (the copy is built by then). */
const QUICKSTART_MJS_TIMEOUT_MS = 150_000;

function copyCheckout(): string {
  const dir = mkdtempSync(join(tmpdir(), 'consul-acme-quickstart-'));
  const tracked = execFileSync('git', ['ls-files', '-z'], { cwd: CHECKOUT, encoding: 'utf8' }).split('\0');
  for (const file of tracked.filter(Boolean)) {
    const from = join(CHECKOUT, file);
    if (!existsSync(from)) continue; // deleted in the working tree
    mkdirSync(dirname(join(dir, file)), { recursive: true });
    copyFileSync(from, join(dir, file));
  }
  symlinkSync(realpathSync(join(CHECKOUT, 'node_modules')), join(dir, 'node_modules'));
  symlinkSync(realpathSync(join(CHECKOUT, '.cache')), join(dir, '.cache'));
  return dir;
}

/** The environment without settings a developer may have exported for consul-acme or Consul. */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [name, value] of Object.entries(process.env)) {
    if (!name.startsWith('CONSUL_ACME_') && !name.startsWith('CONSUL_HTTP_')) env[name] = value;
  }
  return { ...env, ...extra };
}

interface Finished {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  seconds: number;
}

interface Started {
  pid: number;
  stdout(): string;
  /** Sends `signal` to the whole process group, as Ctrl-C in a terminal does. */
  signalGroup(signal: NodeJS.Signals): void;
  finished: Promise<Finished>;
  /** Kills whatever is left in the process group (after the test has looked for leftovers). */
  killGroup(): void;
}

/**
 * Starts a command in its own process group; after `timeoutMs` the group is killed and it fails.
 * Leftovers are not killed when it finishes, so that a test can see them; call killGroup() after.
 */
function start(command: string, args: string[], cwd: string, env: NodeJS.ProcessEnv, timeoutMs: number): Started {
  const began = Date.now();
  const child = spawn(command, args, { cwd, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  const pid = child.pid;
  if (pid === undefined) throw new Error(`could not start ${command}`);
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  const signalGroup = (signal: NodeJS.Signals): void => {
    try {
      process.kill(-pid, signal);
    } catch {
      // the group is gone
    }
  };
  const killGroup = (): void => signalGroup('SIGKILL');
  process.once('exit', killGroup);
  const finished = new Promise<Finished>((resolve, reject) => {
    const timer = setTimeout(() => {
      killGroup();
      reject(new Error(`${command} ${args.join(' ')} did not finish within ${timeoutMs} ms\n${stdout}\n${stderr}`));
    }, timeoutMs);
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, seconds: (Date.now() - began) / 1000 });
    });
  });
  return {
    pid,
    stdout: () => stdout,
    signalGroup,
    finished,
    killGroup: () => {
      killGroup();
      process.removeListener('exit', killGroup);
    },
  };
}

/** Waits until the command prints `text`; fails at once, with its output, if it finishes first. */
async function waitForOutput(run: Started, text: string, timeoutMs: number): Promise<void> {
  let finished: Finished | undefined;
  void run.finished.then(
    (result) => (finished = result),
    () => undefined,
  );
  await waitFor(`the line "${text}"`, () => finished !== undefined || run.stdout().includes(text), { timeoutMs });
  if (!run.stdout().includes(text)) {
    assert.fail(
      `it exited with ${finished?.code} before printing "${text}":\n${finished?.stdout}\n${finished?.stderr}`,
    );
  }
}

function printed(output: string, pattern: RegExp, what: string): RegExpExecArray {
  const match = pattern.exec(output);
  assert.ok(match, `the quick start prints ${what} (${pattern})\n--- its output ---\n${output}`);
  return match;
}

/** What a run printed about the servers it started, for checking that they are gone. */
interface PrintedServers {
  consulAddress: string;
  pebbleDirectoryUrl: string;
  adminUrl: string | undefined;
  consulAcmePid: number;
}

function printedServers(stdout: string): PrintedServers {
  return {
    consulAddress: printed(stdout, /^quickstart: Consul 1\.8\.7 dev agent at (\S+)$/m, "Consul's address")[1]!,
    pebbleDirectoryUrl: printed(stdout, /^quickstart: Pebble ACME directory at (\S+) /m, "Pebble's directory")[1]!,
    adminUrl: /^quickstart: consul-acme is ready; admin API at (\S+)$/m.exec(stdout)?.[1],
    consulAcmePid: Number(printed(stdout, /^quickstart: consul-acme run started \(pid (\d+)\)/m, 'the pid')[1]),
  };
}

/** Whether something accepts TCP connections at the URL's host and port. */
async function isListening(url: string): Promise<boolean> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const socket = connect({ host: hostname, port: Number(port), timeout: 2_000 });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('timeout', () => {
      socket.destroy();
      resolve(true); // something holds the port without answering
    });
    socket.once('error', () => resolve(false));
  });
}

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8')); // a zombie has stopped
  } catch {
    return true;
  }
}

async function assertAllStopped(servers: PrintedServers): Promise<void> {
  assert.equal(await isListening(servers.consulAddress), false, `Consul at ${servers.consulAddress} is stopped`);
  assert.equal(
    await isListening(servers.pebbleDirectoryUrl),
    false,
    `Pebble at ${servers.pebbleDirectoryUrl} is stopped`,
  );
  if (servers.adminUrl !== undefined) {
    assert.equal(await isListening(servers.adminUrl), false, `consul-acme's admin API ${servers.adminUrl} is closed`);
  }
  assert.equal(isRunning(servers.consulAcmePid), false, `consul-acme (pid ${servers.consulAcmePid}) has exited`);
}

interface PrintedCertificate {
  rootFingerprint: string;
  issuer: string;
  serial: string;
}

/**
 * Checks what a successful run printed about its certificate against the files it names: the
 * certificate chains to the root the run saved from its Pebble, whose fingerprint it printed twice.
 */
function checkCertificate(stdout: string): PrintedCertificate {
  const rootLine = printed(
    stdout,
    /^quickstart: {3}this run's Pebble root CA: (.+), SHA-256 fingerprint ([0-9A-F:]+), saved as (\S+)$/m,
    "this run's Pebble root",
  );
  const [rootName, rootFingerprint, rootFile] = [rootLine[1]!, rootLine[2]!, rootLine[3]!];
  const chainLine = printed(
    stdout,
    /^quickstart: {3}chains to: (.+), SHA-256 fingerprint ([0-9A-F:]+) \(this run's Pebble root\)$/m,
    'the root the certificate chains to',
  );
  assert.equal(chainLine[1], rootName, "the certificate chains to this run's Pebble root (name)");
  assert.equal(chainLine[2], rootFingerprint, "the certificate chains to this run's Pebble root (fingerprint)");
  assert.match(stdout, new RegExp(`^quickstart: certificate obtained for ${HOSTNAME.replace(/\./g, '\\.')} `, 'm'));

  const certFile = printed(stdout, /^quickstart: {3}certificate: (\S+)/m, 'the certificate file')[1]!;
  const keyFile = printed(stdout, /^quickstart: {3}private key: (\S+)$/m, 'the key file')[1]!;
  const san = printed(stdout, /^quickstart: {3}subject alt name: (.+)$/m, 'the SAN')[1]!;
  const issuer = printed(stdout, /^quickstart: {3}issuer: (.+)$/m, 'the issuer')[1]!;
  const serial = printed(stdout, /^quickstart: {3}serial: ([0-9A-F]+)$/m, 'the serial')[1]!;
  const validTo = printed(stdout, /^quickstart: {3}valid: (\S+) to (\S+)$/m, 'the validity')[2]!;
  assert.equal(san, `DNS:${HOSTNAME}`);
  assert.match(stdout, new RegExp(`^quickstart: status: ${HOSTNAME.replace(/\./g, '\\.')} valid$`, 'm'));

  const certPem = readFileSync(certFile, 'utf8');
  const rootPem = readFileSync(rootFile, 'utf8');
  const leaf = splitPem(certPem)[0]!;
  assert.ok(chainsToRoot(certPem, rootPem), `${certFile} chains to the root saved in ${rootFile}`);
  assert.equal(new X509Certificate(rootPem).fingerprint256, rootFingerprint, 'the printed fingerprint is the root');
  assert.ok(keyMatches(certPem, readFileSync(keyFile, 'utf8')), `${keyFile} is the certificate's key`);
  assert.deepEqual(dnsNames(leaf), [HOSTNAME]);
  assert.equal(leaf.issuer.replace(/\n/g, ', '), issuer);
  assert.equal(leaf.serialNumber, serial);
  assert.equal(new Date(leaf.validTo).toISOString(), validTo);
  return { rootFingerprint, issuer, serial };
}

describe('the quick start, in a temporary copy of the checkout', () => {
  let copy: string;

  before(() => {
    copy = copyCheckout();
  });

  after(() => {
    if (copy) rmSync(copy, { recursive: true, force: true }); // removes the links, not what they point to
  });

  test('bash scripts/quickstart.sh runs twice in a row, each run with a certificate from its own Pebble', async (t) => {
    const certificates: PrintedCertificate[] = [];
    for (const runNumber of [1, 2]) {
      const run = start('bash', ['scripts/quickstart.sh'], copy, cleanEnv(), QUICKSTART_SH_TIMEOUT_MS);
      t.after(() => run.killGroup());
      const result = await run.finished;
      t.diagnostic(`run ${runNumber} of scripts/quickstart.sh took ${result.seconds.toFixed(1)} s (with the build)`);
      assert.equal(result.code, 0, `run ${runNumber} exits 0\n${result.stdout}\n${result.stderr}`);
      certificates.push(checkCertificate(result.stdout));
      assert.match(result.stdout, /^quickstart: stopped consul-acme, Pebble and Consul/m);
      await assertAllStopped(printedServers(result.stdout));
    }
    const [first, second] = certificates as [PrintedCertificate, PrintedCertificate];
    assert.notEqual(second.rootFingerprint, first.rootFingerprint, "each run's certificate chains to its own Pebble");
    assert.ok(
      second.issuer !== first.issuer || second.serial !== first.serial,
      `the second run prints a new certificate, not the first one (${first.issuer} ${first.serial})`,
    );
  });

  test('--keep-running serves /status until Ctrl-C, then stops everything and exits 0', async (t) => {
    assert.ok(existsSync(join(copy, 'dist/src/main.js')), 'the copy was built by the test before');
    const run = start(
      process.execPath,
      ['scripts/quickstart.mjs', '--keep-running'],
      copy,
      cleanEnv(),
      QUICKSTART_MJS_TIMEOUT_MS,
    );
    t.after(() => run.killGroup());
    await waitForOutput(run, 'press Ctrl-C to stop', QUICKSTART_MJS_TIMEOUT_MS - 30_000);
    const servers = printedServers(run.stdout());
    const status = (await (await fetch(`${servers.adminUrl}/status`)).json()) as {
      certificates: Array<{ hostname: string; state: string }>;
    };
    assert.deepEqual(
      status.certificates.map((c) => `${c.hostname} ${c.state}`),
      [`${HOSTNAME} valid`],
    );
    run.signalGroup('SIGINT');
    const result = await run.finished;
    t.diagnostic(`scripts/quickstart.mjs --keep-running ran ${result.seconds.toFixed(1)} s until Ctrl-C`);
    assert.equal(result.code, 0, `Ctrl-C is the normal way out of --keep-running\n${result.stdout}\n${result.stderr}`);
    checkCertificate(result.stdout);
    assert.match(result.stdout, /^quickstart: stopped consul-acme, Pebble and Consul/m);
    await assertAllStopped(servers);
  });

  test('Ctrl-C before a certificate stops everything and exits 130', async (t) => {
    assert.ok(existsSync(join(copy, 'dist/src/main.js')), 'the copy was built by the test before');
    // Services without the enable tag are ignored with this setting: no certificate ever comes.
    const env = cleanEnv({ CONSUL_ACME_REQUIRE_ENABLE_TAG: 'true' });
    const run = start(process.execPath, ['scripts/quickstart.mjs'], copy, env, QUICKSTART_MJS_TIMEOUT_MS);
    t.after(() => run.killGroup());
    await waitForOutput(run, 'registered service "web"', QUICKSTART_MJS_TIMEOUT_MS - 30_000);
    run.signalGroup('SIGINT');
    const result = await run.finished;
    assert.equal(result.code, 130, `${result.stdout}\n${result.stderr}`);
    assert.doesNotMatch(result.stdout, /certificate obtained/);
    assert.match(result.stdout, /^quickstart: SIGINT: stopping consul-acme, Pebble and Consul$/m);
    await assertAllStopped(printedServers(result.stdout));
  });

  test('when consul-acme exits, it fails naming the log file and stops Consul and Pebble', async (t) => {
    assert.ok(existsSync(join(copy, 'dist/src/main.js')), 'the copy was built by the test before');
    const env = cleanEnv({ CONSUL_ACME_KEY_TYPE: 'banana' });
    const run = start(process.execPath, ['scripts/quickstart.mjs'], copy, env, QUICKSTART_MJS_TIMEOUT_MS);
    t.after(() => run.killGroup());
    const result = await run.finished;
    assert.equal(result.code, 1, `${result.stdout}\n${result.stderr}`);
    const failure = printed(
      result.stderr,
      /^quickstart failed: consul-acme exited with code 2 while the quick start waited for .+; its log: (\S+)$/m,
      'why it failed and where the log is',
    );
    const logFile = failure[1]!;
    assert.equal(logFile, join(copy, '.quickstart', 'consul-acme.log'));
    assert.match(readFileSync(logFile, 'utf8'), /CONSUL_ACME_KEY_TYPE must be one of/);
    assert.match(result.stderr, /CONSUL_ACME_KEY_TYPE must be one of/, 'the log lines that say why are shown');
    const failureFile = printed(result.stderr, /with Consul's and Pebble's output: (\S+)$/m, 'the details file')[1]!;
    assert.match(readFileSync(failureFile, 'utf8'), /===== Pebble's output =====/);
    await assertAllStopped(printedServers(result.stdout));
  });
});
