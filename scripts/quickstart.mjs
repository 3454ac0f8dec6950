#!/usr/bin/env node
// The quick start's main part (scripts/quickstart.sh builds first). It starts a Consul dev agent and
// Pebble on free loopback ports, runs `consul-acme run` with the file store, registers a sample
// service tagged `urlprefix-app.example.test/`, and waits for the certificate to appear on disk.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(fileURLToPath(new URL('..', import.meta.url)));
const { startConsul } = await import(join(root, 'dist/test/support/consul.js'));
const { startPebble } = await import(join(root, 'dist/test/support/pebble.js'));
const { freePort } = await import(join(root, 'dist/test/support/net.js'));

const keepRunning = process.argv.includes('--keep-running');
const hostname = 'app.example.test';
const work = join(root, '.quickstart');
const certDir = join(work, 'certs');
mkdirSync(work, { recursive: true });

const say = (msg) => process.stdout.write(`quickstart: ${msg}\n`);
const cleanups = [];
async function cleanup() {
  for (const fn of cleanups.reverse()) await fn().catch(() => undefined);
}

try {
  const consul = await startConsul();
  cleanups.push(() => consul.stop());
  say(`Consul 1.8.7 dev agent at ${consul.address}`);

  const challengePort = await freePort();
  const adminPort = await freePort();
  const pebble = await startPebble({ httpPort: challengePort });
  cleanups.push(() => pebble.stop());
  const caFile = join(work, 'pebble-ca.pem');
  writeFileSync(caFile, pebble.caBundlePem);
  say(`Pebble ACME directory at ${pebble.directoryUrl} (it validates HTTP-01 on port ${challengePort})`);

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
  const logFile = join(work, 'consul-acme.log');
  const { openSync } = await import('node:fs');
  const out = openSync(logFile, 'w');
  const child = spawn(process.execPath, [join(root, 'dist/src/main.js'), 'run'], { env, stdio: ['ignore', out, out] });
  cleanups.push(async () => {
    child.kill('SIGTERM');
    await new Promise((r) => (child.exitCode !== null ? r() : child.once('exit', r)));
  });
  say(`consul-acme run started (pid ${child.pid}), logs in ${logFile}`);

  const reg = await fetch(`${consul.address}/v1/agent/service/register`, {
    method: 'PUT',
    body: JSON.stringify({
      ID: 'web',
      Name: 'web',
      Port: 9000,
      Address: '127.0.0.1',
      Tags: [`urlprefix-${hostname}/`],
    }),
  });
  if (!reg.ok) throw new Error(`registering the sample service failed: ${reg.status} ${await reg.text()}`);
  say(`registered service "web" with tag urlprefix-${hostname}/`);

  const certFile = join(certDir, hostname, 'cert.pem');
  const deadline = Date.now() + 90_000;
  while (!existsSync(certFile)) {
    if (child.exitCode !== null) throw new Error(`consul-acme exited with ${child.exitCode}; see ${logFile}`);
    if (Date.now() > deadline) throw new Error(`no certificate after 90 s; see ${logFile}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  const leaf = new X509Certificate(readFileSync(certFile, 'utf8'));
  say(`certificate obtained for ${hostname}`);
  say(`  certificate: ${certFile}`);
  say(`  private key: ${join(certDir, hostname, 'key.pem')}`);
  say(`  subject alt name: ${leaf.subjectAltName}`);
  say(`  issuer: ${leaf.issuer.replace(/\n/g, ', ')}`);
  say(`  valid until: ${new Date(leaf.validTo).toISOString()}`);
  const status = await fetch(`http://127.0.0.1:${adminPort}/status`).then((r) => r.json());
  say(`status: ${status.certificates.map((c) => `${c.hostname} ${c.state}`).join(', ')}`);
  if (keepRunning) {
    say(`running; admin API at http://127.0.0.1:${adminPort}/status — press Ctrl-C to stop`);
    await new Promise((r) => process.once('SIGINT', r));
  }
  await cleanup();
  say('stopped Consul, Pebble and consul-acme; the certificate stays on disk');
} catch (err) {
  process.stderr.write(`quickstart failed: ${err instanceof Error ? err.message : String(err)}\n`);
  await cleanup();
  process.exit(1);
}
