/**
 * A big steady state under a small open-file limit: a file store seeded with 2,000 valid
 * certificates (written through FileCertificateStore), the same 2,000 names declared by 400
 * services in a real Consul, and consul-acme started under `ulimit -n 256`, then restarted.
 * Every pass over the names is bounded (CONSUL_ACME_IO_CONCURRENCY), so every name must be
 * `valid` without ever being `failed`, without an EMFILE, and without a single order.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileCertificateStore } from '../../src/adapters/file/file-certificate-store.js';
import type { StatusReport } from '../../src/engine/status.js';
import { Limiter } from '../../src/engine/limiter.js';
import { makeCertificateData } from '../support/certs.js';
import { registerService, startConsul, type ConsulInstance } from '../support/consul.js';
import { spawnInstance, type InstanceProcess } from '../support/instance-process.js';
import { freePort } from '../support/net.js';
import { pebbleActivity } from '../support/pebble-order-counter.js';
import { startPebble, type PebbleInstance } from '../support/pebble.js';
import { waitFor } from '../support/wait.js';

const NAMES = 2_000;
const NAMES_PER_SERVICE = 5;
const OPEN_FILE_LIMIT = 256;
/** The stated bound for every name to be valid after a start, on this 2-core machine. */
const ALL_VALID_WITHIN_MS = 120_000;

const hostname = (i: number): string => `n${String(i).padStart(4, '0')}.fd.example.test`;

interface StartFigures {
  secondsToAllValid: number;
  everFailed: string[];
  peakOpenFiles: number;
}

/** Open file descriptors of a process (Linux). */
function openFiles(pid: number): number {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return 0;
  }
}

describe('2,000 stored certificates, 2,000 declared names, an open-file limit of 256', () => {
  let consul: ConsulInstance;
  let pebble: PebbleInstance;
  let dir: string;
  let caFile: string;
  const instances: InstanceProcess[] = [];

  before(async () => {
    consul = await startConsul();
    pebble = await startPebble({ httpPort: await freePort() });
    // tmpfs where there is one: seeding 2,000 certificates with fsyncs on a slow disk is not the point.
    dir = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'consul-acme-fd-'));
    caFile = join(dir, 'pebble-ca.pem');
    writeFileSync(caFile, pebble.caBundlePem);
    const store = new FileCertificateStore({ directory: join(dir, 'certs') });
    const limiter = new Limiter(16);
    const notBefore = new Date(Math.floor(Date.now() / 1000) * 1000 - 86_400_000);
    const seeded = await limiter.map(
      Array.from({ length: NAMES }, (_, i) => hostname(i)),
      async (name) =>
        store.put(
          await makeCertificateData({ hostname: name, notBefore, directoryUrl: pebble.directoryUrl, sharedKey: true }),
          0,
        ),
    );
    const failedSeeds = seeded.filter((r) => r.status === 'rejected');
    assert.equal(failedSeeds.length, 0, `seeding failed: ${String((failedSeeds[0] as PromiseRejectedResult)?.reason)}`);
    await limiter.map(
      Array.from({ length: NAMES / NAMES_PER_SERVICE }, (_, s) => s),
      (s) =>
        registerService(
          consul.address,
          `fd-app-${s}`,
          Array.from({ length: NAMES_PER_SERVICE }, (_, k) => `urlprefix-${hostname(s * NAMES_PER_SERVICE + k)}/`),
        ),
    );
  });

  after(async () => {
    for (const instance of instances) {
      instance.sigterm();
      await instance.waitForExit(30_000).catch(() => instance.kill9());
    }
    await pebble?.stop();
    await consul?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** Starts one instance under the limit and watches it until every name is valid. */
  async function startAndSettle(name: string): Promise<StartFigures> {
    const [challengePort, adminPort] = [await freePort(), await freePort()];
    const started = Date.now();
    const instance = await spawnInstance({
      name,
      challengePort,
      adminPort,
      openFileLimit: OPEN_FILE_LIMIT,
      env: {
        CONSUL_HTTP_ADDR: consul.address,
        CONSUL_ACME_DIRECTORY_URL: pebble.directoryUrl,
        CONSUL_ACME_CA_BUNDLE: caFile,
        CONSUL_ACME_STORE: 'file',
        CONSUL_ACME_FILE_STORE_DIR: join(dir, 'certs'),
        CONSUL_ACME_PREFLIGHT: 'false',
        CONSUL_ACME_WATCH_WAIT_SECONDS: '5',
        CONSUL_ACME_LOG_LEVEL: 'info',
      },
    });
    instances.push(instance);
    const everFailed = new Set<string>();
    let peakOpenFiles = 0;
    await waitFor(
      `all ${NAMES} names valid in ${name}`,
      async () => {
        peakOpenFiles = Math.max(peakOpenFiles, openFiles(instance.pid));
        if (instance.exited()) throw new Error(`${name} exited: ${instance.logs().slice(-4000)}`);
        const res = await fetch(`${instance.adminUrl}/status`).catch(() => undefined);
        if (!res?.ok) return undefined;
        const report = (await res.json()) as StatusReport;
        for (const c of report.certificates) if (c.state === 'failed') everFailed.add(`${c.hostname}: ${c.lastError}`);
        return report.certificates.filter((c) => c.state === 'valid').length === NAMES ? report : undefined;
      },
      { timeoutMs: ALL_VALID_WITHIN_MS, intervalMs: 250 },
    );
    return { secondsToAllValid: (Date.now() - started) / 1000, everFailed: [...everFailed], peakOpenFiles };
  }

  function assertNothingFailed(instance: InstanceProcess, figures: StartFigures): void {
    assert.deepEqual(figures.everFailed, [], 'no name was ever failed');
    const failures = instance.lines().filter((l) => l.event === 'cert_failed' || l.event === 'retry_scheduled');
    assert.deepEqual(
      failures.map((l) => `${l.hostname}: ${l.err}`),
      [],
      'no attempt failed and no retry was scheduled',
    );
    assert.doesNotMatch(instance.logs(), /EMFILE|ENFILE/, 'the process never ran out of file descriptors');
  }

  test('every name is valid after a start and after a restart; none failed, no order was placed', async (t) => {
    const first = await startAndSettle('fd-1');
    t.diagnostic(
      `first start: all ${NAMES} valid after ${first.secondsToAllValid.toFixed(1)} s; peak open files ${first.peakOpenFiles} (limit ${OPEN_FILE_LIMIT})`,
    );
    assertNothingFailed(instances[0]!, first);

    instances[0]!.sigterm();
    await instances[0]!.waitForExit(60_000);
    const second = await startAndSettle('fd-2');
    t.diagnostic(
      `after the restart: all ${NAMES} valid after ${second.secondsToAllValid.toFixed(1)} s; peak open files ${second.peakOpenFiles}`,
    );
    assertNothingFailed(instances[1]!, second);

    assert.equal(pebbleActivity(pebble.logs()).orders.length, 0, 'no order was placed');
    assert.ok(second.peakOpenFiles < OPEN_FILE_LIMIT);
  });
});
