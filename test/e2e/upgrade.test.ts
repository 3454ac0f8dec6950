/**
 * A rolling upgrade: the previous release and this build run side by side against the same Consul,
 * Vault stand-in and Pebble, with Pebble's validations spread over both instances (a round-robin
 * proxy stands in for Fabio), for 30 names declared before either starts.
 *
 * - Each name is issued exactly once: one order and one validation at Pebble per name, and each
 *   secret written once (version 1), whichever release wrote it.
 * - When the old instance stops, the new one takes the renewal lead and scans every name, and
 *   nothing is ordered again.
 *
 * And the other way round: records and KV values a newer release wrote (format 2) are left alone,
 * reported, and their names are not ordered for.
 *
 * The previous release is built from this repository's history (test/support/previous-release.ts):
 * PREVIOUS_RELEASE below, the commit this work started from, or CONSUL_ACME_PREVIOUS_RELEASE.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { StatusReport } from '../../src/engine/status.js';
import { startConsul, type ConsulInstance } from '../support/consul.js';
import { spawnInstance, type InstanceProcess } from '../support/instance-process.js';
import { freePort } from '../support/net.js';
import { pebbleActivity } from '../support/pebble-order-counter.js';
import { startPebble, type PebbleInstance } from '../support/pebble.js';
import { buildPreviousRelease, type PreviousRelease } from '../support/previous-release.js';
import { removeOnExit } from '../support/processes.js';
import { startRoundRobinProxy, type RoundRobinProxy } from '../support/round-robin-proxy.js';
import { startService, type RunningService } from '../support/service-harness.js';
import { captureLogs } from '../support/logs.js';
import { startVaultStandin, type VaultStandin } from '../support/vault-standin.js';
import { waitFor } from '../support/wait.js';

/** The last commit of main before format numbers, token files and the self-check. */
const PREVIOUS_RELEASE = 'f90f062';
const NAME_COUNT = 30;
const SHUTDOWN_TIMEOUT_MS = 5_000;

const HOSTNAMES = Array.from({ length: NAME_COUNT }, (_, i) => `u${String(i + 1).padStart(2, '0')}.upgrade.test`);

async function registerService(consul: ConsulInstance, id: string, hostnames: string[]): Promise<void> {
  const res = await fetch(`${consul.address}/v1/agent/service/register`, {
    method: 'PUT',
    body: JSON.stringify({ ID: id, Name: id, Port: 9000, Tags: hostnames.map((h) => `urlprefix-${h}/`) }),
  });
  assert.equal(res.status, 200, `registering ${id}: ${await res.text()}`);
}

async function status(instance: InstanceProcess): Promise<StatusReport> {
  return (await (await fetch(`${instance.adminUrl}/status`)).json()) as StatusReport;
}

describe('the previous release and this one side by side, then the old one stopped', () => {
  let release: PreviousRelease;
  let consul: ConsulInstance;
  let vault: VaultStandin;
  let pebble: PebbleInstance;
  let proxy: RoundRobinProxy;
  let oldInstance: InstanceProcess;
  let newInstance: InstanceProcess;

  before(async () => {
    release = buildPreviousRelease(process.env.CONSUL_ACME_PREVIOUS_RELEASE ?? PREVIOUS_RELEASE);
    const dir = mkdtempSync(join(tmpdir(), 'consul-acme-upgrade-'));
    removeOnExit(dir);
    const ports = {
      old: await freePort(),
      new: await freePort(),
      oldAdmin: await freePort(),
      newAdmin: await freePort(),
    };
    consul = await startConsul();
    vault = await startVaultStandin();
    proxy = await startRoundRobinProxy([
      { name: 'old', port: ports.old },
      { name: 'new', port: ports.new },
    ]);
    proxy.hold(); // until both listen
    pebble = await startPebble({ httpPort: proxy.port });
    const caFile = join(dir, 'pebble-ca.pem');
    writeFileSync(caFile, pebble.caBundlePem);
    for (let s = 0; s * 10 < HOSTNAMES.length; s++)
      await registerService(consul, `web-${s + 1}`, HOSTNAMES.slice(s * 10, s * 10 + 10));
    // Settings both releases read.
    const env: Record<string, string> = {
      CONSUL_HTTP_ADDR: consul.address,
      CONSUL_ACME_DIRECTORY_URL: pebble.directoryUrl,
      CONSUL_ACME_CA_BUNDLE: caFile,
      CONSUL_ACME_STORE: 'vault',
      VAULT_ADDR: vault.address,
      VAULT_TOKEN: vault.token,
      CONSUL_ACME_ACME_POLL_MIN_MS: '50',
      CONSUL_ACME_ACME_POLL_MAX_MS: '500',
      CONSUL_ACME_RETRY_SCHEDULE: '1s,2s,5s',
      CONSUL_ACME_WATCH_WAIT_SECONDS: '5',
      CONSUL_ACME_SESSION_TTL_SECONDS: '10',
      CONSUL_ACME_LOCK_DELAY_SECONDS: '5',
      CONSUL_ACME_LOCKED_RECHECK: '5000ms',
      CONSUL_ACME_SHUTDOWN_TIMEOUT_MS: String(SHUTDOWN_TIMEOUT_MS),
      CONSUL_ACME_PREFLIGHT: 'false',
      CONSUL_ACME_RENEW_SCHEDULE: '*/2 * * * * *',
      CONSUL_ACME_LOG_LEVEL: 'info',
    };
    [oldInstance, newInstance] = await Promise.all([
      spawnInstance({
        name: 'old',
        challengePort: ports.old,
        adminPort: ports.oldAdmin,
        env,
        mainJs: release.mainJs,
      }),
      spawnInstance({ name: 'new', challengePort: ports.new, adminPort: ports.newAdmin, env }),
    ]);
    proxy.release();
  });

  after(async () => {
    for (const instance of [oldInstance, newInstance]) {
      if (!instance) continue;
      instance.sigterm();
      await instance.waitForExit(SHUTDOWN_TIMEOUT_MS + 15_000).catch(() => instance.kill9());
    }
    await proxy?.close();
    await pebble?.stop();
    await vault?.close();
    await consul?.stop();
  });

  test('each of the 30 names is issued exactly once, by one release or the other', async (t) => {
    await waitFor(
      'every name stored in Vault',
      () => HOSTNAMES.every((h) => (vault.readRaw('secret', `fabio/certs/${h}`)?.current ?? 0) >= 1) || undefined,
      { timeoutMs: 180_000, intervalMs: 500 },
    );
    const versions = HOSTNAMES.map((h) => vault.readRaw('secret', `fabio/certs/${h}`)?.current);
    assert.deepEqual(
      versions,
      HOSTNAMES.map(() => 1),
      'every secret written once',
    );
    const activity = pebbleActivity(pebble.logs());
    assert.equal(activity.orders.length, NAME_COUNT, 'one order per name at Pebble');
    for (const hostname of HOSTNAMES) assert.equal(activity.validationsByName.get(hostname), 1, hostname);
    const byOld = oldInstance.events('cert_obtained').length;
    const byNew = newInstance.events('cert_obtained').length;
    assert.equal(byOld + byNew, NAME_COUNT);
    t.diagnostic(`previous release ${release.commit.slice(0, 12)} obtained ${byOld}, this build ${byNew}`);
  });

  test('when the old instance stops, the new one scans every name as the renewal leader and orders nothing again', async () => {
    const ordersBefore = pebbleActivity(pebble.logs()).orders.length;
    oldInstance.sigterm();
    const exit = await oldInstance.waitForExit(SHUTDOWN_TIMEOUT_MS + 15_000);
    assert.equal(exit.code, 0, 'the old instance stopped cleanly');
    const stoppedAt = Date.now();
    const scansAfter = (): number =>
      newInstance.lines().filter((l) => l.msg === 'renewal scan done' && Date.parse(l.time) > stoppedAt).length;
    await waitFor(
      'two renewal scans by the new instance after the old one stopped',
      () => scansAfter() >= 2 || undefined,
      {
        timeoutMs: 60_000,
      },
    );
    // Names the old instance held locked when the new one first looked are re-checked (locked recheck).
    await waitFor(
      'every name valid at the new instance',
      async () => {
        const report = await status(newInstance);
        return (
          HOSTNAMES.every((h) => report.certificates.find((c) => c.hostname === h)?.state === 'valid') || undefined
        );
      },
      { timeoutMs: 60_000 },
    );
    assert.equal(pebbleActivity(pebble.logs()).orders.length, ordersBefore, 'no order after the old instance stopped');
    assert.deepEqual(
      newInstance.events('cert_obtaining').filter((l) => Date.parse(l.time) > stoppedAt),
      [],
      'nothing ordered again',
    );
    assert.deepEqual(
      HOSTNAMES.map((h) => vault.readRaw('secret', `fabio/certs/${h}`)?.current),
      HOSTNAMES.map(() => 1),
      'no secret written again',
    );
  });
});

describe('records a newer release wrote, found by this one (a rollback, or an upgrade under way)', () => {
  const CERTIFICATE = 'newer-certificate.upgrade.test';
  const PENDING = 'newer-pending.upgrade.test';
  const STATE = 'newer-state.upgrade.test';
  const PLAIN = 'plain.upgrade.test';
  let consul: ConsulInstance;
  let vault: VaultStandin;
  let pebble: PebbleInstance;
  let svc: RunningService;
  const logs = captureLogs('info');

  before(async () => {
    const challengePort = await freePort();
    consul = await startConsul();
    vault = await startVaultStandin();
    pebble = await startPebble({ httpPort: challengePort });
    // What a release writing format 2 left: a certificate, a pending order, a backoff state.
    vault.writeRaw('secret', `fabio/certs/${CERTIFICATE}`, {
      cert: 'format 2 keeps its certificate elsewhere',
      managed_by: 'consul-acme',
      format: '2',
    });
    vault.writeRaw('secret', `consul-acme/pending/${PENDING}`, { format: 2, hostname: PENDING });
    const put = await fetch(`${consul.address}/v1/kv/consul-acme/state/${STATE}?flags=2`, {
      method: 'PUT',
      body: JSON.stringify({ format_2_backoff: true }),
    });
    assert.equal(await put.text(), 'true\n');
    await registerService(consul, 'web', [CERTIFICATE, PENDING, STATE, PLAIN]);
    svc = await startService({
      consulAddress: consul.address,
      directoryUrl: pebble.directoryUrl,
      caBundlePem: pebble.caBundlePem,
      challengePort,
      dnsServer: pebble.dnsServer,
      logger: logs.logger,
      env: { CONSUL_ACME_STORE: 'vault', VAULT_ADDR: vault.address, VAULT_TOKEN: vault.token },
    });
  });

  after(async () => {
    await svc?.stop();
    await pebble?.stop();
    await vault?.close();
    await consul?.stop();
  });

  test('they are left alone and reported, and nothing is ordered for their names', async () => {
    await waitFor(
      'the plain name issued',
      () => (vault.readRaw('secret', `fabio/certs/${PLAIN}`)?.current ?? 0) >= 1 || undefined,
      {
        timeoutMs: 60_000,
      },
    );
    const report = await waitFor('the three names reported', async () => {
      const current = (await (await fetch(`${svc.listening.adminUrl}/status`)).json()) as StatusReport;
      const byName = new Map(current.certificates.map((c) => [c.hostname, c]));
      const pending = byName.get(PENDING);
      const state = byName.get(STATE);
      return byName.get(CERTIFICATE)?.state === 'newer-format' &&
        /FORMAT_NEWER/.test(pending?.lastError ?? '') &&
        /FORMAT_NEWER/.test(state?.lastError ?? '')
        ? byName
        : undefined;
    });
    assert.equal(report.get(CERTIFICATE)?.reason, 'NewerFormat');
    assert.match(report.get(CERTIFICATE)?.lastError ?? '', /format 2 by a newer release/);
    assert.match(
      report.get(PENDING)?.lastError ?? '',
      /the pending order at .* was written in format 2 by a newer release/,
    );
    assert.match(
      report.get(STATE)?.lastError ?? '',
      /the backoff state consul-acme\/state\/newer-state\.upgrade\.test was written in format 2/,
    );
    assert.ok(logs.lines.some((l) => l.event === 'record_newer_format' && l.hostname === CERTIFICATE));
    const activity = pebbleActivity(pebble.logs());
    for (const hostname of [CERTIFICATE, PENDING, STATE])
      assert.equal(activity.validationsByName.get(hostname), undefined, `nothing ordered for ${hostname}`);
    assert.equal(activity.orders.length, 1, 'only the plain name was ordered');
    assert.equal(vault.readRaw('secret', `fabio/certs/${CERTIFICATE}`)?.current, 1, 'the certificate is untouched');
    assert.equal(
      vault.readRaw('secret', `consul-acme/pending/${PENDING}`)?.current,
      1,
      'the pending order is untouched',
    );
    const state = (await (await fetch(`${consul.address}/v1/kv/consul-acme/state/${STATE}`)).json()) as Array<{
      Flags: number;
      Value: string;
    }>;
    assert.equal(state[0]?.Flags, 2, 'the backoff state is untouched');
    assert.equal(Buffer.from(state[0].Value, 'base64').toString(), JSON.stringify({ format_2_backoff: true }));
  });
});
