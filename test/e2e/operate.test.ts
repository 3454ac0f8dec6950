/**
 * Operating consul-acme by command, and its sinks beside the proxy, end to end against real
 * servers: Consul 1.8.7, Pebble 2.4.0, the Vault stand-in, lego (Debian's package, another ACME
 * client), a real HAProxy 2.6, and the `consul-acme` command line run as a separate process.
 *
 *  1. Adopt: lego obtains a short-lived certificate from Pebble and an exporter writes it into
 *     Vault in Fabio's layout, without managed_by. `consul-acme adopt` takes it over (same
 *     certificate and key, now consul-acme's), and the scheduled scan renews it before it expires.
 *     A reader polling the secret every 100 ms, as Fabio does every 3 s, never sees it missing or
 *     invalid.
 *  2. Reissue: `consul-acme reissue` stores a new serial and says so. Revoke: `consul-acme revoke
 *     --reason keyCompromise` makes Pebble's management API report the old serial revoked (code 1),
 *     and a new certificate is stored.
 *  3. Sink-only mode: an instance with CONSUL_ACME_MODE=sinks beside a real HAProxy keeps it in
 *     step with the store while another instance issues: a new name appears in HAProxy, and so does
 *     a renewal's new serial.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { loadConfig } from '../../src/config/load.js';
import type { StatusReport } from '../../src/engine/status.js';
import { buildSinkOnlyService, type SinkOnlyService } from '../../src/sink-only-service.js';
import { registerService, startConsul, type ConsulInstance } from '../support/consul.js';
import { startHaproxy, type HaproxyInstance } from '../support/haproxy.js';
import { MAIN_JS } from '../support/instance-process.js';
import { captureLogs, type LogLine } from '../support/logs.js';
import { freePort } from '../support/net.js';
import { normalizeSerial, pebbleActivity } from '../support/pebble-order-counter.js';
import { pebbleCertStatus } from '../support/pebble-management.js';
import { startPebble, type RunningPebble } from '../support/pebble.js';
import { killOnExit, removeOnExit } from '../support/processes.js';
import { startService, type RunningService } from '../support/service-harness.js';
import { startVaultStandin, type VaultStandin } from '../support/vault-standin.js';
import { waitFor } from '../support/wait.js';
import { chainsToRoot, dnsNames, keyMatches, splitPem } from '../support/x509.js';

const LEGO_BINARY = process.env.LEGO_BINARY ?? '/usr/bin/lego';
const ADMIN_TOKEN = 'e2e-operator-token-0123456789';
const MOUNT = 'secret';
const PREFIX = 'fabio/certs';
/** Short enough that a renewal comes within the test, long enough for lego and an adoption first. */
const SHORT_VALIDITY_SECONDS = 60;
const CLI_TIMEOUT_MS = 120_000;

interface Secret {
  data: Record<string, string>;
  version: number;
}

/** The latest version of a certificate secret, read over HTTP as Fabio reads it; undefined when missing. */
async function readSecret(vault: VaultStandin, hostname: string): Promise<Secret | undefined> {
  const res = await fetch(`${vault.address}/v1/${MOUNT}/data/${PREFIX}/${hostname}`, {
    headers: { 'X-Vault-Token': vault.token },
  });
  if (res.status === 404) return undefined;
  if (res.status !== 200) throw new Error(`reading ${hostname}: HTTP ${res.status}`);
  const body = (await res.json()) as { data: { data: Record<string, string>; metadata: { version: number } } };
  return { data: body.data.data, version: body.data.metadata.version };
}

function serialOf(certPem: string): string {
  return normalizeSerial(splitPem(certPem)[0]!.serialNumber);
}

/** Why `secret` could not be served for `hostname` right now, or undefined when it can. */
function unservable(secret: Secret | undefined, hostname: string): string | undefined {
  if (secret === undefined) return 'missing';
  const { cert, key } = secret.data;
  if (typeof cert !== 'string' || typeof key !== 'string') return `version ${secret.version} lacks cert or key`;
  try {
    const leaf = splitPem(cert)[0];
    if (leaf === undefined) return `version ${secret.version}: no certificate`;
    if (!keyMatches(cert, key)) return `version ${secret.version}: key does not match`;
    if (!dnsNames(leaf).includes(hostname)) return `version ${secret.version}: not for ${hostname}`;
    if (new Date(leaf.validTo).getTime() <= Date.now()) return `version ${secret.version}: expired`;
  } catch (err) {
    return `version ${secret.version}: ${err instanceof Error ? err.message : String(err)}`;
  }
  return undefined;
}

/** Reads the secret every 100 ms until stopped, and remembers every read that could not be served. */
function startReader(
  vault: VaultStandin,
  hostname: string,
): { stop(): Promise<{ reads: number; problems: string[] }> } {
  let stopped = false;
  let reads = 0;
  const problems: string[] = [];
  const loop = (async () => {
    while (!stopped) {
      const started = Date.now();
      try {
        const problem = unservable(await readSecret(vault, hostname), hostname);
        if (problem !== undefined) problems.push(`${new Date().toISOString()}: ${problem}`);
      } catch (err) {
        problems.push(`${new Date().toISOString()}: ${err instanceof Error ? err.message : String(err)}`);
      }
      reads++;
      await new Promise((resolve) => setTimeout(resolve, Math.max(0, 100 - (Date.now() - started))));
    }
  })();
  return {
    async stop() {
      stopped = true;
      await loop;
      return { reads, problems };
    },
  };
}

/** Runs `consul-acme <args>` as a separate process, as an operator would. */
async function cli(args: string[], adminUrl: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [MAIN_JS, ...args], {
      env: { PATH: process.env.PATH ?? '', CONSUL_ACME_ADMIN_URL: adminUrl, CONSUL_ACME_ADMIN_TOKEN: ADMIN_TOKEN },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    killOnExit(child);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`consul-acme ${args.join(' ')} ran longer than ${CLI_TIMEOUT_MS} ms:\n${stdout}${stderr}`));
    }, CLI_TIMEOUT_MS);
    child.on('error', reject);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** Obtains a certificate with lego (HTTP-01 on `port`); resolves its cert (leaf + issuer) and key PEM. */
async function legoCertificate(
  pebble: RunningPebble,
  hostname: string,
  port: number,
): Promise<{ certPem: string; keyPem: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'lego-e2e-'));
  removeOnExit(dir);
  writeFileSync(join(dir, 'pebble-ca.pem'), pebble.caBundlePem);
  const args = [
    '--accept-tos',
    '--email',
    'ops@example.test',
    '--server',
    pebble.directoryUrl,
    '--domains',
    hostname,
    '--key-type',
    'ec256',
    '--http',
    '--http.port',
    `127.0.0.1:${port}`,
    '--path',
    dir,
    'run',
  ];
  await new Promise<void>((resolve, reject) => {
    execFile(
      LEGO_BINARY,
      args,
      { env: { PATH: process.env.PATH ?? '', LEGO_CA_CERTIFICATES: join(dir, 'pebble-ca.pem') }, timeout: 60_000 },
      (err, stdout, stderr) => (err ? reject(new Error(`lego failed: ${err.message}\n${stdout}${stderr}`)) : resolve()),
    );
  });
  return {
    certPem: readFileSync(join(dir, 'certificates', `${hostname}.crt`), 'utf8'),
    keyPem: readFileSync(join(dir, 'certificates', `${hostname}.key`), 'utf8'),
  };
}

async function status(adminUrl: string): Promise<StatusReport> {
  const res = await fetch(`${adminUrl}/status`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
  return (await res.json()) as StatusReport;
}

function eventsOf(lines: LogLine[], event: string, hostname: string): LogLine[] {
  return lines.filter((l) => l.event === event && l.hostname === hostname);
}

describe('operating by command, and sinks beside the proxy, with real Consul, Pebble, lego and HAProxy', () => {
  const running: RunningService[] = [];
  after(async () => {
    await Promise.all(running.splice(0).map((s) => s.stop()));
  });

  async function startIssuer(opts: {
    consul: ConsulInstance;
    pebble: RunningPebble;
    vault: VaultStandin;
    challengePort: number;
    logger: ReturnType<typeof captureLogs>['logger'];
  }): Promise<RunningService> {
    const svc = await startService({
      consulAddress: opts.consul.address,
      directoryUrl: opts.pebble.directoryUrl,
      caBundlePem: opts.pebble.caBundlePem,
      challengePort: opts.challengePort,
      logger: opts.logger,
      env: {
        CONSUL_ACME_STORE: 'vault',
        VAULT_ADDR: opts.vault.address,
        VAULT_TOKEN: opts.vault.token,
        CONSUL_ACME_ADMIN_TOKEN: ADMIN_TOKEN,
        CONSUL_ACME_RENEW_SCHEDULE: '*/2 * * * * *',
        CONSUL_ACME_RENEW_SPREAD: '0ms',
        CONSUL_ACME_LOG_LEVEL: 'info',
      },
    });
    running.push(svc);
    return svc;
  }

  describe('adopt: a certificate lego wrote is taken over without a gap and renewed on schedule', () => {
    const HOSTNAME = 'adopt.example.test';
    let consul: ConsulInstance;
    let pebble: RunningPebble;
    let vault: VaultStandin;
    let challengePort: number;

    before(async () => {
      assert.ok(existsSync(LEGO_BINARY), `${LEGO_BINARY} is missing: run scripts/setup-deps.sh (apt-get install lego)`);
      challengePort = await freePort();
      [consul, pebble, vault] = await Promise.all([
        startConsul(),
        startPebble({ httpPort: challengePort, certificateValidityPeriodSeconds: SHORT_VALIDITY_SECONDS }),
        startVaultStandin(),
      ]);
    });

    after(async () => {
      await Promise.all(running.splice(0).map((s) => s.stop()));
      await Promise.all([pebble?.stop(), vault?.close()]);
      await consul?.stop();
    });

    test('lego’s certificate is adopted as it is, renewed before it expires, and never missing or invalid meanwhile', async () => {
      // Another ACME client obtains the certificate; an exporter writes it in Fabio's layout.
      const theirs = await legoCertificate(pebble, HOSTNAME, challengePort);
      const written = await fetch(`${vault.address}/v1/${MOUNT}/data/${PREFIX}/${HOSTNAME}`, {
        method: 'POST',
        headers: { 'X-Vault-Token': vault.token, 'content-type': 'application/json' },
        body: JSON.stringify({ data: { cert: theirs.certPem, key: theirs.keyPem } }),
      });
      assert.equal(written.status, 200);
      const legoSerial = serialOf(theirs.certPem);
      const reader = startReader(vault, HOSTNAME);
      let readerStopped = false;
      try {
        await registerService(consul.address, 'web', [`urlprefix-${HOSTNAME}/`]);
        const { logger, lines } = captureLogs('info');
        const svc = await startIssuer({ consul, pebble, vault, challengePort, logger });
        const before = await waitFor('the record shown as not consul-acme’s', async () =>
          (await status(svc.listening.adminUrl)).certificates.find(
            (c) => c.hostname === HOSTNAME && c.state === 'unmanaged',
          ),
        );
        assert.equal(before.reason, 'NotManaged');

        const adopted = await cli(['adopt', HOSTNAME], svc.listening.adminUrl);
        assert.equal(adopted.code, 0, adopted.stdout + adopted.stderr);
        assert.match(adopted.stdout, new RegExp(`^${HOSTNAME}: adoption requested$`, 'm'));
        assert.match(adopted.stdout, new RegExp(`^${HOSTNAME}: adopted, serial ${legoSerial}, expires `, 'm'));

        const secret = await readSecret(vault, HOSTNAME);
        assert.equal(secret?.data.managed_by, 'consul-acme');
        assert.equal(secret?.data.cert, theirs.certPem, 'the same certificate');
        assert.equal(secret?.data.key, theirs.keyPem, 'the same key');
        assert.ok(secret?.data.adopted_at, 'marked as adopted');
        assert.equal(secret?.version, 2, 'a new version of the same secret');
        const shown = (await status(svc.listening.adminUrl)).certificates.find((c) => c.hostname === HOSTNAME);
        assert.equal(shown?.state, 'valid');
        assert.equal(shown?.adoptedAt, secret?.data.adopted_at);
        assert.equal(eventsOf(lines, 'cert_adopted', HOSTNAME).length, 1);

        // The scheduled scan renews it with a third of its 60 s left.
        const renewed = await waitFor(
          'a renewal of the adopted certificate',
          async () => {
            const now = await readSecret(vault, HOSTNAME);
            return now !== undefined && serialOf(now.data.cert!) !== legoSerial ? now : undefined;
          },
          { timeoutMs: 90_000, intervalMs: 250 },
        );
        assert.ok(chainsToRoot(renewed.data.cert!, await pebble.rootsPem()), 'chains to Pebble’s root');
        assert.equal(renewed.data.managed_by, 'consul-acme');
        assert.equal(renewed.data.adopted_at, undefined, 'consul-acme’s own certificate now');
        assert.equal(eventsOf(lines, 'cert_renewed', HOSTNAME)[0]?.reason, 'Expiring');
        assert.equal(pebbleActivity(pebble.logs()).orders.length, 2, 'lego’s order and one renewal');

        const read = await reader.stop();
        readerStopped = true;
        assert.deepEqual(read.problems, [], 'the secret was never missing or invalid');
        assert.ok(read.reads > 100, `the reader read ${read.reads} times`);
      } finally {
        if (!readerStopped) await reader.stop();
      }
    });
  });

  describe('reissue and revoke by command', () => {
    const HOSTNAME = 'operate.example.test';
    let consul: ConsulInstance;
    let pebble: RunningPebble;
    let vault: VaultStandin;
    let svc: RunningService;
    let lines: LogLine[];

    before(async () => {
      const challengePort = await freePort();
      [consul, pebble, vault] = await Promise.all([
        startConsul(),
        startPebble({ httpPort: challengePort }),
        startVaultStandin(),
      ]);
      const logs = captureLogs('info');
      lines = logs.lines;
      svc = await startIssuer({ consul, pebble, vault, challengePort, logger: logs.logger });
      await registerService(consul.address, 'web', [`urlprefix-${HOSTNAME}/`]);
      await waitFor('the first certificate', async () => (await readSecret(vault, HOSTNAME)) !== undefined, {
        timeoutMs: 60_000,
      });
    });

    after(async () => {
      await Promise.all(running.splice(0).map((s) => s.stop()));
      await Promise.all([pebble?.stop(), vault?.close()]);
      await consul?.stop();
    });

    test('reissue: a new serial is stored, and the command prints the old and the new one', async () => {
      const old = serialOf((await readSecret(vault, HOSTNAME))!.data.cert!);
      const result = await cli(['reissue', HOSTNAME], svc.listening.adminUrl);
      assert.equal(result.code, 0, result.stdout + result.stderr);
      const now = serialOf((await readSecret(vault, HOSTNAME))!.data.cert!);
      assert.notEqual(now, old);
      assert.match(result.stdout, new RegExp(`^${HOSTNAME}: reissue requested, replacing serial ${old}$`, 'm'));
      assert.match(result.stdout, new RegExp(`^${HOSTNAME}: new serial ${now} \\(was ${old}\\)$`, 'm'));
      assert.equal(eventsOf(lines, 'reissue_requested', HOSTNAME).length, 1);
      assert.equal(eventsOf(lines, 'cert_renewed', HOSTNAME).at(-1)?.reason, 'Requested');
      assert.equal((await pebbleCertStatus(pebble, old))?.status, 'Valid', 'a reissue revokes nothing');
    });

    test('revoke: Pebble reports the old serial revoked for keyCompromise, and a new certificate is stored', async () => {
      const old = serialOf((await readSecret(vault, HOSTNAME))!.data.cert!);
      const result = await cli(['revoke', HOSTNAME, '--reason', 'keyCompromise'], svc.listening.adminUrl);
      assert.equal(result.code, 0, result.stdout + result.stderr);
      const revoked = await pebbleCertStatus(pebble, old);
      assert.equal(revoked?.status, 'Revoked');
      assert.equal(revoked?.reason, 1);
      const secret = await readSecret(vault, HOSTNAME);
      const now = serialOf(secret!.data.cert!);
      assert.notEqual(now, old);
      assert.equal((await pebbleCertStatus(pebble, now))?.status, 'Valid');
      assert.equal(unservable(secret, HOSTNAME), undefined);
      assert.match(result.stdout, new RegExp(`^${HOSTNAME}: serial ${old} revoked; new serial ${now}$`, 'm'));
      assert.equal(eventsOf(lines, 'cert_revoked', HOSTNAME).at(-1)?.serial, old);
      assert.equal(eventsOf(lines, 'request_completed', HOSTNAME).at(-1)?.outcome, 'done');
      const requests = await fetch(`${svc.listening.adminUrl}/requests`, {
        headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
      });
      assert.deepEqual(await requests.json(), { requests: [] }, 'nothing left in Consul KV');
    });
  });

  describe('sink-only mode beside a real HAProxy, while another instance issues', () => {
    const FIRST = 'edge.example.test';
    const SINKS_TOKEN = 'sinks-token-1';
    const ROTATED_TOKEN = 'sinks-token-2';
    const tokenDir = mkdtempSync(join(tmpdir(), 'consul-acme-sinks-token-'));
    removeOnExit(tokenDir);
    const tokenFile = join(tokenDir, 'vault_token');
    let consul: ConsulInstance;
    let pebble: RunningPebble;
    let vault: VaultStandin;
    let haproxy: HaproxyInstance;
    let sinkOnly: SinkOnlyService | undefined;

    before(async () => {
      const challengePort = await freePort();
      [consul, pebble, vault, haproxy] = await Promise.all([
        startConsul(),
        startPebble({ httpPort: challengePort, certificateValidityPeriodSeconds: SHORT_VALIDITY_SECONDS }),
        startVaultStandin(),
        startHaproxy(),
      ]);
      const { logger } = captureLogs('warn');
      await startIssuer({ consul, pebble, vault, challengePort, logger });
      vault.addToken(SINKS_TOKEN);
      writeFileSync(tokenFile, `${SINKS_TOKEN}\n`);
      const config = loadConfig({
        env: {
          CONSUL_ACME_MODE: 'sinks',
          CONSUL_ACME_STORE: 'vault',
          VAULT_ADDR: vault.address,
          // A token file, as the sink-only job has Nomad write it; the test replaces the token.
          VAULT_TOKEN_FILE: tokenFile,
          CONSUL_ACME_ADMIN_HOST: '127.0.0.1',
          CONSUL_ACME_ADMIN_PORT: String(await freePort()),
          CONSUL_ACME_HAPROXY_DIR: haproxy.certDir,
          CONSUL_ACME_HAPROXY_CRT_LIST: haproxy.crtListPath,
          CONSUL_ACME_HAPROXY_SOCKET: haproxy.socketPath,
          CONSUL_ACME_SINK_POLL_INTERVAL: '1s',
          CONSUL_ACME_SINK_RESYNC_INTERVAL: '3s',
          CONSUL_ACME_LOG_LEVEL: 'warn',
        },
      });
      sinkOnly = buildSinkOnlyService(config, captureLogs('warn').logger);
    });

    after(async () => {
      await sinkOnly?.stop();
      await Promise.all(running.splice(0).map((s) => s.stop()));
      await Promise.all([pebble?.stop(), vault?.close(), haproxy?.stop()]);
      await consul?.stop();
    });

    test('a new name appears in HAProxy, then, with its Vault token replaced, its renewal’s new serial; the instance reports only its sinks', async () => {
      const { adminUrl } = await sinkOnly!.start();
      await waitFor(
        'the sink-only instance ready',
        async () => (await fetch(`${adminUrl}/health/ready`)).status === 200,
      );
      await registerService(consul.address, 'web', [`urlprefix-${FIRST}/`]);
      const first = await waitFor(
        'HAProxy to serve the certificate the other instance stored',
        async () => {
          const secret = await readSecret(vault, FIRST);
          if (secret === undefined) return undefined;
          const served = normalizeSerial((await haproxy.servedCertificate(FIRST)).serialNumber);
          return served === serialOf(secret.data.cert!) ? served : undefined;
        },
        { timeoutMs: 60_000, intervalMs: 250 },
      );
      // The token is replaced in the file and the old one revoked, as Nomad does with a new token.
      vault.addToken(ROTATED_TOKEN);
      writeFileSync(tokenFile, `${ROTATED_TOKEN}\n`);
      vault.revokeToken(SINKS_TOKEN);
      const renewed = await waitFor(
        'HAProxy to serve the renewal',
        async () => {
          const secret = await readSecret(vault, FIRST);
          const served = normalizeSerial((await haproxy.servedCertificate(FIRST)).serialNumber);
          return served !== first && served === serialOf(secret!.data.cert!) ? served : undefined;
        },
        { timeoutMs: 90_000, intervalMs: 250 },
      );
      assert.notEqual(renewed, first);
      const report = (await (
        await fetch(`${adminUrl}/status`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })
      ).json()) as StatusReport;
      assert.equal(report.mode, 'sinks');
      assert.equal(report.storeHealth.error, undefined, 'the store reads on with the new token');
      assert.ok(vault.countRequests({ token: ROTATED_TOKEN }) > 0, 'the sink-only instance uses the new token');
      assert.deepEqual(
        report.sinks.map((s) => [s.name, s.failingSince]),
        [['haproxy', undefined]],
      );
      const command = await fetch(`${adminUrl}/reissue`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ all: true }),
      });
      assert.equal(command.status, 409, 'a sink-only instance takes no commands');
      assert.equal(new X509Certificate((await readSecret(vault, FIRST))!.data.cert!).subject, `CN=${FIRST}`);
    });
  });
});
