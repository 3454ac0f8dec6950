/**
 * Sinks end to end, against real servers: Consul 1.8.7, Pebble (30-second certificates in the
 * first part), a real HAProxy 2.6 with the configuration the README shows, Traefik's dynamic file
 * (read with a real YAML parser, since Traefik is not installable here) and a command hook.
 *
 *  1. consul-acme issues a certificate for a newly tagged name; `openssl s_client -servername`
 *     against HAProxy gets exactly the stored certificate; Traefik's file lists it; the hook ran.
 *  2. After a renewal HAProxy serves the new serial; 3. after retirement it no longer serves the
 *     name. HAProxy's PID stays the same throughout: no reload.
 *  4. HAProxy stopped during an issuance and started again: the files were written first, the
 *     push is retried, the health check shows the failing sink meanwhile, and no new order is
 *     placed. 5. A sink that lost everything while consul-acme was down is re-synced at start,
 *     again without a new order.
 */
import assert from 'node:assert/strict';
import { promises as fs, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { StatusReport } from '../../src/engine/status.js';
import { ADMIN_HEALTH_PATHS } from '../../src/naming.js';
import { registerService, startConsul, type ConsulInstance } from '../support/consul.js';
import { HAPROXY_DEFAULT_NAME, startHaproxy, type HaproxyInstance } from '../support/haproxy.js';
import { captureLogs } from '../support/logs.js';
import { freePort } from '../support/net.js';
import { normalizeSerial, pebbleActivity, waitWithPebble } from '../support/pebble-order-counter.js';
import { startPebble, type RunningPebble } from '../support/pebble.js';
import { removeOnExit } from '../support/processes.js';
import { startService, type RunningService } from '../support/service-harness.js';
import { readTraefikDynamicFile } from '../support/traefik.js';
import { waitFor } from '../support/wait.js';
import { splitPem } from '../support/x509.js';

const FIRST = 'sink-first.example.test';
const SECOND = 'sink-second.example.test';
const SHORT_VALIDITY_SECONDS = 30;

async function fetchStatus(adminUrl: string): Promise<StatusReport> {
  return (await (await fetch(`${adminUrl}/status`)).json()) as StatusReport;
}

/** The serial of the certificate consul-acme stored (the file store's `cert.pem`), or undefined. */
async function storedSerial(storeDir: string, hostname: string): Promise<string | undefined> {
  const pem = await fs.readFile(join(storeDir, hostname, 'cert.pem'), 'utf8').catch(() => undefined);
  const leaf = pem === undefined ? undefined : splitPem(pem)[0];
  return leaf === undefined ? undefined : normalizeSerial(leaf.serialNumber);
}

async function servedSerial(haproxy: HaproxyInstance, hostname: string): Promise<string> {
  return normalizeSerial((await haproxy.servedCertificate(hostname)).serialNumber);
}

async function tempDir(prefix: string): Promise<string> {
  const dir = await fs.mkdtemp(join(tmpdir(), prefix));
  removeOnExit(dir);
  return dir;
}

describe('sinks end to end: HAProxy, Traefik and a hook with real Consul, Pebble and HAProxy', () => {
  let consul: ConsulInstance;
  let shortLived: RunningPebble;
  let longLived: RunningPebble;
  let haproxy: HaproxyInstance;
  let challengePort: number;
  let traefikDir: string;
  let hookLog: string;
  const running: RunningService[] = [];

  const sinkEnv = (): Record<string, string> => ({
    CONSUL_ACME_HAPROXY_DIR: haproxy.certDir,
    CONSUL_ACME_HAPROXY_CRT_LIST: haproxy.crtListPath,
    CONSUL_ACME_HAPROXY_SOCKET: haproxy.socketPath,
    CONSUL_ACME_TRAEFIK_DIR: traefikDir,
    CONSUL_ACME_HOOK_COMMAND: `echo "$CONSUL_ACME_REASON $CONSUL_ACME_HOSTNAME $CONSUL_ACME_SERIAL" >> ${hookLog}`,
  });

  async function start(pebble: RunningPebble, env: Record<string, string>): Promise<RunningService> {
    const svc = await startService({
      consulAddress: consul.address,
      directoryUrl: pebble.directoryUrl,
      caBundlePem: pebble.caBundlePem,
      challengePort,
      logger: captureLogs().logger,
      env: { ...sinkEnv(), ...env },
    });
    running.push(svc);
    return svc;
  }

  async function stop(svc: RunningService): Promise<void> {
    await svc.stop();
    running.splice(running.indexOf(svc), 1);
  }

  function hookRuns(): string[] {
    return readFileSync(hookLog, 'utf8')
      .split('\n')
      .filter((l) => l !== '');
  }

  before(async () => {
    challengePort = await freePort();
    [consul, shortLived, longLived, haproxy] = await Promise.all([
      startConsul(),
      startPebble({ httpPort: challengePort, certificateValidityPeriodSeconds: SHORT_VALIDITY_SECONDS }),
      startPebble({ httpPort: challengePort }),
      startHaproxy(),
    ]);
    traefikDir = await tempDir('traefik-e2e-');
    hookLog = join(await tempDir('hook-e2e-'), 'runs.log');
    await fs.writeFile(hookLog, '');
  });

  after(async () => {
    await Promise.all(running.splice(0).map((s) => s.stop()));
    await Promise.all([shortLived?.stop(), longLived?.stop(), haproxy?.stop()]);
    await consul?.stop();
  });

  describe('obtained, renewed, retired: HAProxy serves each change without a reload', () => {
    let svc: RunningService;
    let storeDir: string;
    let pid: number;
    let firstSerial: string;

    before(async () => {
      pid = haproxy.pid;
      storeDir = await tempDir('store-e2e-');
      svc = await start(shortLived, {
        CONSUL_ACME_FILE_STORE_DIR: storeDir,
        CONSUL_ACME_RENEW_SCHEDULE: '*/2 * * * * *',
        CONSUL_ACME_RENEW_SPREAD: '0ms',
        CONSUL_ACME_RETIRE_GRACE: '3s',
      });
    });

    after(async () => {
      if (svc) await stop(svc);
    });

    test('a newly tagged name gets a certificate, and HAProxy serves exactly the stored one', async () => {
      assert.equal((await haproxy.servedCertificate(FIRST)).subject, `CN=${HAPROXY_DEFAULT_NAME}`, 'before');
      await registerService(consul.address, 'web', [`urlprefix-${FIRST}/`]);
      firstSerial = await waitWithPebble(
        shortLived,
        `a stored certificate for ${FIRST}`,
        () => storedSerial(storeDir, FIRST),
        {
          timeoutMs: 60_000,
        },
      );
      const served = await waitFor(
        'HAProxy to serve it',
        async () => {
          const serial = await servedSerial(haproxy, FIRST);
          return serial === (await storedSerial(storeDir, FIRST)) ? serial : undefined;
        },
        { timeoutMs: 15_000 },
      );
      firstSerial = served;
      assert.equal(haproxy.pid, pid, 'no reload, no restart');
    });

    test("Traefik's dynamic file lists it, in Traefik's documented structure, with matching files", async () => {
      const listed = await waitFor(
        'the name in the dynamic file',
        async () =>
          (await readTraefikDynamicFile(join(traefikDir, 'consul-acme.yml'))).find((l) => l.hostname === FIRST),
        { timeoutMs: 15_000 },
      );
      assert.ok(listed.certFile.startsWith(join(traefikDir, 'certs', FIRST)));
      const stored = await storedSerial(storeDir, FIRST);
      assert.equal(normalizeSerial(listed.serial), stored);
    });

    test('the hook ran for it, and /status and /metrics show the sinks healthy', async () => {
      await waitFor('the hook run', () => hookRuns().some((l) => l.startsWith(`obtained ${FIRST} `)), {
        timeoutMs: 15_000,
      });
      const status = await fetchStatus(svc.listening.adminUrl);
      assert.deepEqual(
        status.sinks.map((s) => s.name),
        ['haproxy', 'traefik', 'hook'],
      );
      for (const sink of status.sinks) {
        assert.equal(sink.failingSince, undefined, `${sink.name} is healthy`);
        assert.ok(sink.lastResyncAt, `${sink.name} was re-synced at start`);
      }
      const metrics = await (await fetch(`${svc.listening.adminUrl}/metrics`)).text();
      assert.match(metrics, /consul_acme_sink_changes_total\{sink="haproxy",outcome="applied"\} [1-9]/);
      assert.match(metrics, /consul_acme_sink_pending\{sink="haproxy"\} 0/);
      assert.match(metrics, /consul_acme_hook_runs_total\{result="succeeded"\} [1-9]/);
    });

    test('after a renewal HAProxy serves the new serial, and Traefik lists new files', async () => {
      const renewed = await waitWithPebble(
        shortLived,
        `a renewal of ${FIRST} served by HAProxy`,
        async () => {
          const serial = await servedSerial(haproxy, FIRST);
          return serial !== firstSerial && serial === (await storedSerial(storeDir, FIRST)) ? serial : undefined;
        },
        { timeoutMs: 60_000 },
      );
      assert.notEqual(renewed, firstSerial);
      assert.equal(haproxy.pid, pid, 'no reload, no restart');
      await waitFor('the renewed certificate in Traefik', async () => {
        const listed = await readTraefikDynamicFile(join(traefikDir, 'consul-acme.yml'));
        return listed.length === 1 && normalizeSerial(listed[0]!.serial) !== firstSerial;
      });
      await waitFor('the hook run for the renewal', () => hookRuns().some((l) => l.startsWith(`renewed ${FIRST} `)));
    });

    test('after retirement HAProxy no longer serves the name, Traefik no longer lists it, the hook was told', async () => {
      await registerService(consul.address, 'web', []);
      await waitFor(
        'HAProxy to stop serving the retired name',
        async () => (await haproxy.servedCertificate(FIRST)).subject === `CN=${HAPROXY_DEFAULT_NAME}`,
        { timeoutMs: 40_000 },
      );
      assert.equal(await storedSerial(storeDir, FIRST), undefined, 'retired from the store');
      assert.equal(haproxy.pid, pid, 'no reload, no restart');
      await waitFor(
        'Traefik to drop it',
        async () => (await readTraefikDynamicFile(join(traefikDir, 'consul-acme.yml'))).length === 0,
      );
      await waitFor('the hook run for the retirement', () => hookRuns().includes(`retired ${FIRST} `));
    });
  });

  describe('a sink that was down catches up, and no new order is placed', () => {
    let storeDir: string;
    let svc: RunningService;

    before(async () => {
      storeDir = await tempDir('store-e2e-down-');
    });

    after(async () => {
      if (running.includes(svc)) await stop(svc);
    });

    test('HAProxy stopped during an issuance: files first, the health check warns, the retried push succeeds', async () => {
      svc = await start(longLived, {
        CONSUL_ACME_FILE_STORE_DIR: storeDir,
        CONSUL_ACME_SINK_FAILING_WARNING: '1s',
      });
      await waitFor('the first re-sync', async () =>
        (await fetchStatus(svc.listening.adminUrl)).sinks.every((s) => s.lastResyncAt !== undefined),
      );
      await haproxy.stop();
      await registerService(consul.address, 'web', [`consul-acme.hosts=${SECOND}`]);
      const stored = await waitWithPebble(
        longLived,
        `a certificate for ${SECOND}`,
        () => storedSerial(storeDir, SECOND),
        {
          timeoutMs: 60_000,
        },
      );
      const failing = await waitFor('the HAProxy sink failing in /status', async () =>
        (await fetchStatus(svc.listening.adminUrl)).sinks.find((s) => s.name === 'haproxy' && s.failingSince),
      );
      assert.match(failing.lastError ?? '', /HAPROXY_UNREACHABLE/);
      const health = await waitFor('the certificate health check to warn', async () => {
        const res = await fetch(`${svc.listening.adminUrl}${ADMIN_HEALTH_PATHS.certificates}`);
        const body = (await res.json()) as { status: string; problems: string[] };
        return res.status === 429 ? body : undefined;
      });
      assert.equal(health.status, 'warning');
      assert.match(health.problems.join('\n'), /sink haproxy: failing since .*HAPROXY_UNREACHABLE/);
      // The other sinks are not held up.
      const listed = await readTraefikDynamicFile(join(traefikDir, 'consul-acme.yml'));
      assert.deepEqual(
        listed.map((l) => normalizeSerial(l.serial)),
        [stored],
      );

      await haproxy.start();
      // The files were written while it was down, so it serves the certificate from its first handshake.
      assert.equal(await servedSerial(haproxy, SECOND), stored);
      await waitFor(
        'the HAProxy sink healthy again after its retry',
        async () => {
          const sink = (await fetchStatus(svc.listening.adminUrl)).sinks.find((s) => s.name === 'haproxy');
          return sink?.failingSince === undefined && sink?.pending === 0 && !sink.resyncPending;
        },
        { timeoutMs: 60_000 },
      );
      const res = await fetch(`${svc.listening.adminUrl}${ADMIN_HEALTH_PATHS.certificates}`);
      assert.equal(res.status, 200, 'the health check passes again');
      assert.equal(pebbleActivity(longLived.logs()).orders.length, 1, 'one order, for the one certificate');
    });

    test('a sink that lost its files while consul-acme was down is re-synced at start, without a new order', async () => {
      const stored = await storedSerial(storeDir, SECOND);
      await stop(svc);
      await haproxy.stop();
      await fs.rm(traefikDir, { recursive: true, force: true });
      await fs.writeFile(haproxy.crtListPath, '');
      await haproxy.start();
      assert.equal((await haproxy.servedCertificate(SECOND)).subject, `CN=${HAPROXY_DEFAULT_NAME}`, 'lost');

      svc = await start(longLived, { CONSUL_ACME_FILE_STORE_DIR: storeDir });
      await waitFor('HAProxy to serve it again', async () => (await servedSerial(haproxy, SECOND)) === stored, {
        timeoutMs: 30_000,
      });
      const listed = await waitFor('Traefik to list it again', async () => {
        const l = await readTraefikDynamicFile(join(traefikDir, 'consul-acme.yml')).catch(() => []);
        return l.length === 1 ? l : undefined;
      });
      assert.equal(normalizeSerial(listed[0]!.serial), stored);
      assert.equal(pebbleActivity(longLived.logs()).orders.length, 1, 'still one order');
      assert.ok(
        hookRuns().some((l) => l.startsWith(`resync ${SECOND} `)),
        'the hook was given it at start',
      );
    });
  });
});
