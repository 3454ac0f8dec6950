#!/usr/bin/env node
// The quick start's main part (scripts/quickstart.sh installs and builds first). It starts a Consul
// dev agent and Pebble on free loopback ports, runs `consul-acme run` with the file store, waits for
// its admin API to be ready, registers a sample service tagged `urlprefix-app.example.test/`, and
// waits for a certificate issued by this run's Pebble.
//
// Every run starts from a clean state: it removes the `.quickstart/` folder an earlier run left
// (its certificate came from an earlier Pebble, which is gone) and writes everything anew there.
// A certificate counts only once it chains to this run's Pebble root (`pebble.rootsPem()`) and
// matches its key. Whatever happens (success, failure, Ctrl-C), it stops what it started:
// consul-acme, Pebble and Consul. Exit status: 0 done, 1 failed, 128+n stopped by signal n before
// the certificate was there; with --keep-running, Ctrl-C is the normal way out and exits 0.
import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(fileURLToPath(new URL('..', import.meta.url)));
const { startConsul } = await import(join(root, 'dist/test/support/consul.js'));
const { startPebble } = await import(join(root, 'dist/test/support/pebble.js'));
const { freePort } = await import(join(root, 'dist/test/support/net.js'));
const { splitPem, chainsToRoot, keyMatches } = await import(join(root, 'dist/test/support/x509.js'));

const HOSTNAME = 'app.example.test';
const READY_TIMEOUT_MS = 30_000;
const CERTIFICATE_TIMEOUT_MS = 90_000;
const STATUS_TIMEOUT_MS = 10_000;
const REQUEST_TIMEOUT_MS = 2_000;
const STOP_TIMEOUT_MS = 10_000;
const POLL_INTERVAL_MS = 200;
const SIGNAL_NUMBERS = { SIGHUP: 1, SIGINT: 2, SIGTERM: 15 };

const work = join(root, '.quickstart');
const pidFile = join(work, 'quickstart.pid');
const certDir = join(work, 'certs');
const certFile = join(certDir, HOSTNAME, 'cert.pem');
const keyFile = join(certDir, HOSTNAME, 'key.pem');
const rootFile = join(work, 'pebble-root.pem');
const logFile = join(work, 'consul-acme.log');
const failureFile = join(work, 'failure.log');

const say = (msg) => process.stdout.write(`quickstart: ${msg}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const messageOf = (err) => (err instanceof Error ? err.message : String(err));

const unknown = process.argv.slice(2).filter((a) => a !== '--keep-running');
if (unknown.length > 0) {
  process.stderr.write(`quickstart: unknown argument ${unknown[0]}; the only option is --keep-running\n`);
  process.exit(2);
}
const keepRunning = process.argv.includes('--keep-running');

// Ctrl-C (SIGINT), SIGTERM and SIGHUP stop the run; a second one stops at once. These handlers are
// installed before any server starts, so they run first; test/support/processes.ts then kills the
// Consul and Pebble processes it tracks, and the cleanup below waits for them and for consul-acme.
let stoppedBy;
let phase = 'starting';
let signalled;
const stopRequested = new Promise((r) => (signalled = r));
for (const signal of Object.keys(SIGNAL_NUMBERS)) {
  process.on(signal, () => {
    if (stoppedBy !== undefined) process.exit(128 + SIGNAL_NUMBERS[signal]);
    stoppedBy = signal;
    signalled(signal);
  });
}

function throwIfStopped() {
  if (stoppedBy !== undefined) throw new Error(`stopped by ${stoppedBy}`);
}

/** What was started, newest last; stopAll() stops it newest first. */
const cleanups = [];
async function stopAll() {
  while (cleanups.length > 0) {
    const stop = cleanups.pop();
    await stop().catch(() => undefined);
  }
}

/** Output to save in failure.log when the run fails. */
const failureLogs = [];

/** Refuses to clear `.quickstart/` under a quick start still running in this checkout. */
function claimWorkFolder() {
  let other;
  try {
    other = Number(readFileSync(pidFile, 'utf8').trim());
  } catch {
    other = undefined;
  }
  if (other && other !== process.pid && isQuickstart(other)) {
    throw new Error(`another quick start (pid ${other}) is running in this checkout and uses ${work}; stop it first`);
  }
  rmSync(work, { recursive: true, force: true });
  mkdirSync(work, { recursive: true });
  writeFileSync(pidFile, `${process.pid}\n`);
  claimed = true;
}

function isQuickstart(pid) {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('quickstart.mjs');
  } catch {
    return true; // no /proc: a live process with that pid may be one
  }
}

/** A CA certificate as the output shows it: its name and the SHA-256 fingerprint that tells runs apart. */
const describeCa = (cert) => `${cert.subject.replace(/\n/g, ', ')}, SHA-256 fingerprint ${cert.fingerprint256}`;

/** GET with a deadline; a failure names what was asked and why. */
async function get(url, what) {
  let res;
  try {
    res = await fetch(url, { signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
  } catch (err) {
    const reason = err?.cause?.code ?? err?.cause?.message ?? messageOf(err);
    throw new Error(`${what} (${url}) did not answer: ${reason}`, { cause: err });
  }
  const body = await res.text();
  return { status: res.status, body };
}

/**
 * Polls `probe` until it returns something other than undefined. Fails when consul-acme exits, when
 * the deadline passes (naming what was awaited, the last thing seen and the log), or on a signal.
 */
async function waitFor(what, timeoutMs, child, probe) {
  const deadline = Date.now() + timeoutMs;
  let last = 'nothing yet';
  for (;;) {
    throwIfStopped();
    if (child.exitCode !== null || child.signalCode !== null) {
      const how = child.exitCode !== null ? `with code ${child.exitCode}` : `by ${child.signalCode}`;
      throw new Error(`consul-acme exited ${how} while the quick start waited for ${what}; its log: ${logFile}`);
    }
    try {
      const result = await probe((seen) => (last = seen));
      if (result !== undefined) return result;
    } catch (err) {
      last = messageOf(err);
    }
    if (Date.now() > deadline) {
      throw new Error(
        `gave up after ${timeoutMs / 1000} s waiting for ${what} (last seen: ${last}); consul-acme's log: ${logFile}`,
      );
    }
    await sleep(POLL_INTERVAL_MS);
  }
}

/** The certificate on disk, if it is complete, matches its key and chains to this run's root. */
function certificateFromThisRun(rootPem, intermediatePem, note) {
  if (!existsSync(certFile) || !existsSync(keyFile)) return undefined;
  const certPem = readFileSync(certFile, 'utf8');
  const keyPem = readFileSync(keyFile, 'utf8');
  const chain = splitPem(certPem);
  if (chain.length === 0 || !keyMatches(certPem, keyPem)) {
    note(`${certFile} is being written`);
    return undefined;
  }
  // Pebble sends the leaf with its intermediate; accept a leaf alone if this run's intermediate signed it.
  if (!chainsToRoot(certPem, rootPem) && !chainsToRoot(certPem + intermediatePem, rootPem)) {
    note(`${certFile} (issuer ${chain[0].issuer}) does not chain to this run's Pebble root`);
    return undefined;
  }
  return chain[0];
}

async function quickstart() {
  claimWorkFolder();

  const consul = await startConsul();
  cleanups.push(() => consul.stop());
  throwIfStopped();
  failureLogs.push(['Consul', () => consul.logs()]);
  say(`Consul 1.8.7 dev agent at ${consul.address}`);

  const challengePort = await freePort();
  const adminPort = await freePort();
  const pebble = await startPebble({ httpPort: challengePort });
  cleanups.push(() => pebble.stop());
  throwIfStopped();
  failureLogs.push(['Pebble', () => pebble.logs()]);
  const caFile = join(work, 'pebble-ca.pem');
  writeFileSync(caFile, pebble.caBundlePem);
  const rootPem = await pebble.rootsPem();
  const intermediatePem = await pebble.intermediatesPem();
  writeFileSync(rootFile, rootPem);
  const [pebbleRoot] = splitPem(rootPem);
  if (pebbleRoot === undefined) throw new Error(`Pebble's management API gave no root certificate: ${rootPem}`);
  say(`Pebble ACME directory at ${pebble.directoryUrl} (it validates HTTP-01 on port ${challengePort})`);
  say(`  this run's Pebble root CA: ${describeCa(pebbleRoot)}, saved as ${rootFile}`);

  const env = {
    ...process.env,
    CONSUL_HTTP_ADDR: consul.address,
    CONSUL_ACME_DIRECTORY_URL: pebble.directoryUrl,
    CONSUL_ACME_CA_BUNDLE: caFile,
    CONSUL_ACME_STORE: 'file',
    CONSUL_ACME_FILE_STORE_DIR: certDir,
    CONSUL_ACME_CHALLENGE_PORT: String(challengePort),
    CONSUL_ACME_ADMIN_PORT: String(adminPort),
    CONSUL_ACME_SERVICE_ADDRESS: '127.0.0.1',
    CONSUL_ACME_ACME_POLL_MIN_MS: '100',
    // The pre-flight check resolves names as Pebble does and probes the responder on its port.
    CONSUL_ACME_PREFLIGHT_DNS_SERVERS: pebble.dnsServer,
    CONSUL_ACME_PREFLIGHT_HTTP_PORT: String(challengePort),
    CONSUL_ACME_LOG_LEVEL: 'info',
  };
  const out = openSync(logFile, 'w');
  const child = spawn(process.execPath, [join(root, 'dist/src/main.js'), 'run'], { env, stdio: ['ignore', out, out] });
  closeSync(out); // the child holds its own copy
  const exited = new Promise((r) => child.once('exit', r));
  child.once('error', (err) => writeFileSync(logFile, `could not start consul-acme: ${err.message}\n`, { flag: 'a' }));
  const killNow = () => child.exitCode === null && child.signalCode === null && child.kill('SIGKILL');
  process.once('exit', killNow); // a last resort if this process ends before stopAll() ran
  cleanups.push(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const timer = setTimeout(killNow, STOP_TIMEOUT_MS);
      await exited;
      clearTimeout(timer);
    }
  });
  say(`consul-acme run started (pid ${child.pid}), logs in ${logFile}`);

  const adminUrl = `http://127.0.0.1:${adminPort}`;
  await waitFor("consul-acme's admin API to answer 200 on /health/ready", READY_TIMEOUT_MS, child, async (note) => {
    const { status } = await get(`${adminUrl}/health/ready`, "consul-acme's admin API");
    note(`/health/ready answered ${status}`);
    return status === 200 ? true : undefined;
  });
  say(`consul-acme is ready; admin API at ${adminUrl}`);

  const reg = await fetch(`${consul.address}/v1/agent/service/register`, {
    method: 'PUT',
    body: JSON.stringify({
      ID: 'web',
      Name: 'web',
      Port: 9000,
      Address: '127.0.0.1',
      Tags: [`urlprefix-${HOSTNAME}/`],
    }),
    signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
  });
  if (!reg.ok) throw new Error(`registering the sample service failed: ${reg.status} ${await reg.text()}`);
  say(`registered service "web" with tag urlprefix-${HOSTNAME}/`);

  const leaf = await waitFor(
    `a certificate for ${HOSTNAME} from this run's Pebble`,
    CERTIFICATE_TIMEOUT_MS,
    child,
    async (note) => certificateFromThisRun(rootPem, intermediatePem, note),
  );
  say(`certificate obtained for ${HOSTNAME} from this run's Pebble`);
  say(`  certificate: ${certFile} (with the intermediate)`);
  say(`  private key: ${keyFile}`);
  say(`  subject alt name: ${leaf.subjectAltName}`);
  say(`  issuer: ${leaf.issuer.replace(/\n/g, ', ')}`);
  say(`  chains to: ${describeCa(pebbleRoot)} (this run's Pebble root)`);
  say(`  serial: ${leaf.serialNumber}`);
  say(`  valid: ${new Date(leaf.validFrom).toISOString()} to ${new Date(leaf.validTo).toISOString()}`);

  // The file is written before the state is recorded: give /status a moment to say `valid`.
  const statusWanted = `consul-acme's /status to show ${HOSTNAME} valid`;
  const certificates = await waitFor(statusWanted, STATUS_TIMEOUT_MS, child, async (note) => {
    const { status, body } = await get(`${adminUrl}/status`, "consul-acme's /status");
    if (status !== 200) {
      note(`/status answered ${status}: ${body}`);
      return undefined;
    }
    const list = JSON.parse(body).certificates;
    note(`/status: ${list.map((c) => `${c.hostname} ${c.state}`).join(', ') || 'no certificates'}`);
    return list.some((c) => c.hostname === HOSTNAME && c.state === 'valid') ? list : undefined;
  });
  say(`status: ${certificates.map((c) => `${c.hostname} ${c.state}`).join(', ')}`);

  if (keepRunning) {
    phase = 'running';
    say(`running: consul-acme's admin API at ${adminUrl}, Consul at ${consul.address}`);
    say(`  its status: node dist/src/main.js status --admin-addr ${adminUrl}`);
    say('press Ctrl-C to stop');
    await stopRequested;
  }
}

let claimed = false;
const run = quickstart().then(
  () => ({ ok: true }),
  (err) => ({ ok: false, err }),
);
// A signal while starting or waiting stops the run; after the "running" line (--keep-running) the
// signal ends quickstart() itself, which then resolves normally.
const signalOutcome = stopRequested.then((signal) => (phase === 'running' ? new Promise(() => {}) : { signal }));
const outcome = await Promise.race([run, signalOutcome]);

if (outcome.signal !== undefined) say(`${outcome.signal}: stopping consul-acme, Pebble and Consul`);
// Read the log before stopping: its last lines then say what went wrong, not that it was stopped.
const failureReport = outcome.err === undefined ? undefined : failureReportFor(outcome.err);
await stopAll();
if (claimed) rmSync(pidFile, { force: true });

if (outcome.ok) {
  say('stopped consul-acme, Pebble and Consul; the certificate and key stay in .quickstart/ until the next run');
  process.exit(0);
}
if (outcome.signal !== undefined) {
  say('stopped');
  process.exit(128 + SIGNAL_NUMBERS[outcome.signal]);
}
process.stderr.write(failureReport);
process.exit(1);

/** Saves the details to failure.log; returns a short account naming the log files. */
function failureReportFor(err) {
  const lines = [`quickstart failed: ${messageOf(err).split('\n')[0]}`];
  if (claimed) {
    const details = [err instanceof Error ? (err.stack ?? err.message) : String(err)];
    for (const [name, logs] of failureLogs) details.push(`\n===== ${name}'s output =====\n${logs()}`);
    writeFileSync(failureFile, details.join('\n'));
    if (existsSync(logFile)) {
      const tail = readFileSync(logFile, 'utf8').trimEnd().split('\n').filter(Boolean).slice(-5);
      lines.push(tail.length > 0 ? `last lines of ${logFile}:` : `${logFile} is empty`);
      lines.push(...tail.map((l) => `  ${l.length > 300 ? `${l.slice(0, 300)}…` : l}`));
    }
    lines.push(`the whole error, with Consul's and Pebble's output: ${failureFile}`);
  }
  return lines.map((l) => `${l}\n`).join('');
}
