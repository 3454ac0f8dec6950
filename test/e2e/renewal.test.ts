/**
 * Renewal and reconciliation against real servers (real Consul 1.8.7, two real Pebbles with
 * different roots, the Vault stand-in), one story in order:
 *  1. Pebble A issues 30-second certificates; the scheduled scan renews each one before it
 *     expires, without a restart.
 *  2. The service is restarted on Pebble B: every certificate is reissued from B (IssuerChanged).
 *  3. A corrupted secret is found by the next scan, reported, and reissued.
 *  4. A hostname removed from Consul is retired after the grace period and not before; a secret
 *     consul-acme did not write is never touched; a name removed while the service was down is
 *     retired a grace period after the next start.
 *  5. Two instances against one Consul: only the leader scans; when it stops the other takes over.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { registerService, startConsul, type ConsulInstance } from '../support/consul.js';
import { startPebble, type RunningPebble } from '../support/pebble.js';
import { startVaultStandin, type VaultStandin } from '../support/vault-standin.js';
import { startService, type RunningService } from '../support/service-harness.js';
import { freePort } from '../support/net.js';
import { waitFor } from '../support/wait.js';
import { chainsToRoot, dnsNames, keyMatches, splitPem } from '../support/x509.js';
import type { StatusReport, CertificateStatus } from '../../src/engine/status.js';
import type { RenewalScheduler, ScanOutcome } from '../../src/engine/renewal-scheduler.js';
import { createLogger } from '../../src/logging.js';
import { captureLogs, type LogLine } from '../support/logs.js';

const FIRST_HOST = 'renew-first.example.test';
const SECOND_HOST = 'renew-second.example.test';
const HOSTS = [FIRST_HOST, SECOND_HOST];
/** A secret under Fabio's prefix that consul-acme did not write (no managed_by). */
const FOREIGN_HOST = 'foreign.example.test';
const FOREIGN_DATA = { cert: 'a certificate someone else put here', key: 'their key' };

const MOUNT = 'secret';
const PREFIX = 'fabio/certs';
const SHORT_VALIDITY_SECONDS = 30;
const RETIRE_GRACE_SECONDS = 8;

/** Settings shared by every instance in this file: a scan every 2 s, the default 1/3 fraction, no spread. */
const RENEWAL_ENV = {
  CONSUL_ACME_RENEW_SCHEDULE: '*/2 * * * * *',
  CONSUL_ACME_RENEW_SPREAD: '0ms',
  CONSUL_ACME_RETIRE_GRACE: `${RETIRE_GRACE_SECONDS}s`,
};

/** The latest version of a certificate secret, read over HTTP as Fabio reads it. */
async function vaultSecret(
  vault: VaultStandin,
  hostname: string,
): Promise<{ data: Record<string, string>; version: number } | undefined> {
  const res = await fetch(`${vault.address}/v1/${MOUNT}/data/${PREFIX}/${hostname}`, {
    headers: { 'X-Vault-Token': vault.token },
  });
  if (res.status === 404) return undefined;
  assert.equal(res.status, 200, `reading ${hostname}: ${res.status}`);
  const body = (await res.json()) as { data: { data: Record<string, string>; metadata: { version: number } } };
  return { data: body.data.data, version: body.data.metadata.version };
}

async function fetchStatus(adminUrl: string): Promise<StatusReport> {
  const res = await fetch(`${adminUrl}/status`);
  return (await res.json()) as StatusReport;
}

async function certificateStatus(adminUrl: string, hostname: string): Promise<CertificateStatus | undefined> {
  return (await fetchStatus(adminUrl)).certificates.find((c) => c.hostname === hostname);
}

/** Fabio's fields are intact: a chain to `rootsPem` for exactly `hostname`, and the key that goes with it. */
function assertServable(data: Record<string, unknown>, hostname: string, rootsPem: string): void {
  const { cert, key } = data;
  assert.ok(typeof cert === 'string' && typeof key === 'string', `${hostname}: secret has cert and key fields`);
  assert.deepEqual(dnsNames(splitPem(cert)[0]!), [hostname], `${hostname}: SAN is the hostname`);
  assert.ok(chainsToRoot(cert, rootsPem), `${hostname}: chains to the expected root`);
  assert.ok(keyMatches(cert, key), `${hostname}: key matches the certificate`);
  assert.equal(data.managed_by, 'consul-acme');
}

/**
 * Records the outcome of every tick the scheduler runs: its cron and its first run call
 * `this.tick()`, so a wrapper on the instance sees them all (behaviour unchanged).
 */
function recordTicks(renewal: RenewalScheduler): ScanOutcome[] {
  const outcomes: ScanOutcome[] = [];
  const tick = renewal.tick.bind(renewal);
  renewal.tick = async () => {
    const outcome = await tick();
    outcomes.push(outcome);
    return outcome;
  };
  return outcomes;
}

/** The lifecycle events logged for one certificate, for failure messages. */
function eventsOf(lines: LogLine[], hostname: string): string {
  return JSON.stringify(
    lines
      .filter((l) => l.hostname === hostname)
      .map((l) => ({ msg: l.msg, event: l.event, reason: l.reason, err: l.err })),
  );
}

function scansDone(lines: LogLine[]): number {
  return lines.filter((l) => l.component === 'renewal' && l.msg === 'renewal scan done').length;
}

describe('renewal and reconciliation end to end with real Consul and two Pebbles', () => {
  let consul: ConsulInstance;
  let pebbleA: RunningPebble;
  let pebbleB: RunningPebble;
  let vault: VaultStandin;
  let challengePort: number;
  const running: RunningService[] = [];

  async function start(
    pebble: RunningPebble,
    logger: ReturnType<typeof createLogger>,
    env: Record<string, string> = {},
    port = challengePort,
  ): Promise<RunningService> {
    const svc = await startService({
      consulAddress: consul.address,
      directoryUrl: pebble.directoryUrl,
      caBundlePem: pebble.caBundlePem,
      challengePort: port,
      logger,
      env: { CONSUL_ACME_STORE: 'vault', VAULT_ADDR: vault.address, VAULT_TOKEN: vault.token, ...RENEWAL_ENV, ...env },
    });
    running.push(svc);
    return svc;
  }

  async function stop(svc: RunningService): Promise<void> {
    await svc.stop();
    running.splice(running.indexOf(svc), 1);
  }

  before(async () => {
    challengePort = await freePort();
    [consul, pebbleA, pebbleB, vault] = await Promise.all([
      startConsul(),
      startPebble({ httpPort: challengePort, certificateValidityPeriodSeconds: SHORT_VALIDITY_SECONDS }),
      startPebble({ httpPort: challengePort }),
      startVaultStandin(),
    ]);
    vault.writeRaw(MOUNT, `${PREFIX}/${FOREIGN_HOST}`, FOREIGN_DATA);
    await registerService(
      consul.address,
      'web',
      HOSTS.map((h) => `urlprefix-${h}/`),
    );
  });

  after(async () => {
    await Promise.all(running.splice(0).map((s) => s.stop()));
    await Promise.all([pebbleA?.stop(), pebbleB?.stop(), vault?.close()]);
    await consul?.stop();
  });

  /**
   * `hostname` is no longer declared: it stays in the store while its grace period runs (checked
   * right after a scheduled scan, inside the period), then it is retired and the status drops it.
   */
  async function assertRetiredAfterGraceNotBefore(
    svc: RunningService,
    logs: LogLine[],
    hostname: string,
  ): Promise<void> {
    const adminUrl = svc.listening.adminUrl;
    // Only a scan plans a name nobody declares: GracePeriod in the status means one has run since the removal.
    const graced = await waitFor(
      'the removed name in its grace period',
      async () => {
        const s = await certificateStatus(adminUrl, hostname);
        return s?.reason === 'GracePeriod' ? s : undefined;
      },
      { timeoutMs: 20_000 },
    );
    assert.ok(graced.retiresAt, 'the status says when it will be retired');
    const retireAt = new Date(graced.retiresAt);
    const scansSoFar = scansDone(logs);
    await waitFor('one more scan', () => scansDone(logs) > scansSoFar, { timeoutMs: 10_000 });
    const stillGraced = await certificateStatus(adminUrl, hostname);
    const stillThere = await vaultSecret(vault, hostname);
    assert.ok(new Date() < retireAt, 'this check runs inside the grace period');
    assert.equal(stillGraced?.reason, 'GracePeriod');
    assert.ok(stillThere, 'the secret is still there inside the grace period');

    await waitFor('the removed name to be retired', async () => (await vaultSecret(vault, hostname)) === undefined, {
      timeoutMs: RETIRE_GRACE_SECONDS * 1000 + 15_000,
    });
    assert.equal(vault.readRaw(MOUNT, `${PREFIX}/${hostname}`), undefined, 'every version is gone');
    const retired = await waitFor(
      'the retirement in the log',
      () => logs.find((l) => l.event === 'cert_retired' && l.hostname === hostname),
      { timeoutMs: 5_000 },
    );
    assert.equal(retired.reason, 'NoLongerDeclared');
    await waitFor(
      'the status to drop the retired name',
      async () => (await certificateStatus(adminUrl, hostname)) === undefined,
      { timeoutMs: 10_000 },
    );
  }

  let current: RunningService;
  let currentLogs: LogLine[];

  test('the scheduled scan renews each short-lived certificate while the old one is still valid, without a restart', async () => {
    const { logger, lines } = captureLogs();
    current = await start(pebbleA, logger);
    currentLogs = lines;
    const rootsA = await pebbleA.rootsPem();

    for (const hostname of HOSTS) {
      const raw = await waitFor(
        `a renewal of ${hostname} (version 2)`,
        () => {
          const r = vault.readRaw(MOUNT, `${PREFIX}/${hostname}`);
          return r !== undefined && r.current >= 2 ? r : undefined;
        },
        { timeoutMs: 75_000 },
      );
      const first = raw.versions[1]!;
      const second = raw.versions[2]!;
      const firstData = first.data as Record<string, string>;
      const secondData = second.data as Record<string, string>;
      const firstNotAfter = new Date(firstData.not_after!);
      assert.ok(new Date(secondData.not_after!) > firstNotAfter, `${hostname}: the renewed certificate expires later`);
      assert.ok(
        new Date(second.created_time) < firstNotAfter,
        `${hostname}: renewed at ${second.created_time}, before the old one expired at ${firstData.not_after}`,
      );
      assert.notEqual(secondData.cert, firstData.cert);
      assertServable(firstData, hostname, rootsA);
      assertServable(secondData, hostname, rootsA);
      assert.equal(secondData.directory_url, pebbleA.directoryUrl);
      // What Fabio reads now (maybe a later renewal still) is whole too.
      const latest = await vaultSecret(vault, hostname);
      assert.ok(latest && latest.version >= 2);
      assertServable(latest.data, hostname, rootsA);
    }

    for (const hostname of HOSTS) {
      // The event is logged just after the write.
      const renewed = await waitFor(
        `${hostname}: a cert_renewed event`,
        () => lines.find((l) => l.event === 'cert_renewed' && l.hostname === hostname),
        { timeoutMs: 5_000 },
      );
      assert.equal(
        renewed.reason,
        'Expiring',
        `${hostname}: renewed because it was expiring: ${eventsOf(lines, hostname)}`,
      );
    }
    assert.ok(scansDone(lines) >= 2, 'the renewals came from the scheduled scans');
    assert.equal(lines.filter((l) => l.msg === 'listening').length, 1, 'one start, no restart');
  });

  test('switching the directory to another CA reissues every certificate from the new CA', async () => {
    await stop(current);
    const { logger, lines } = captureLogs();
    current = await start(pebbleB, logger);
    currentLogs = lines;
    const [rootsA, rootsB] = await Promise.all([pebbleA.rootsPem(), pebbleB.rootsPem()]);

    for (const hostname of HOSTS) {
      const secret = await waitFor(
        `${hostname} from Pebble B`,
        async () => {
          const s = await vaultSecret(vault, hostname);
          return s?.data.directory_url === pebbleB.directoryUrl ? s : undefined;
        },
        { timeoutMs: 60_000 },
      );
      assertServable(secret.data, hostname, rootsB);
      assert.equal(chainsToRoot(secret.data.cert!, rootsA), false, `${hostname}: no longer chains to Pebble A's root`);
      assert.ok(secret.version >= 3);
      const renewed = await waitFor(
        `${hostname}: a cert_renewed event`,
        () => lines.find((l) => l.event === 'cert_renewed' && l.hostname === hostname),
        { timeoutMs: 5_000 },
      );
      assert.equal(
        renewed.reason,
        'IssuerChanged',
        `${hostname}: the log says why it was reissued: ${eventsOf(lines, hostname)}`,
      );
    }

    const status = await waitFor('both certificates valid in the status', async () => {
      const s = await fetchStatus(current.listening.adminUrl);
      return HOSTS.every((h) => s.certificates.find((c) => c.hostname === h)?.state === 'valid') ? s : undefined;
    });
    assert.equal(status.directoryUrl, pebbleB.directoryUrl);
    for (const hostname of HOSTS)
      assert.equal(status.certificates.find((c) => c.hostname === hostname)?.reason, 'NotYetDue');
  });

  test('a corrupted secret is found by the next scan, reported, and replaced by a valid certificate', async () => {
    const path = `${PREFIX}/${FIRST_HOST}`;
    const before = vault.readRaw(MOUNT, path);
    assert.ok(before);
    const good = before.versions[before.current]!.data as Record<string, string>;
    // Another Vault client breaks the cert field but leaves our marker.
    const corrupted = vault.writeRaw(MOUNT, path, { ...good, cert: 'garbage, not PEM' });

    const secret = await waitFor(
      'a valid certificate above the corrupted version',
      async () => {
        const s = await vaultSecret(vault, FIRST_HOST);
        return s !== undefined && s.version > corrupted ? s : undefined;
      },
      { timeoutMs: 30_000 },
    );
    assertServable(secret.data, FIRST_HOST, await pebbleB.rootsPem());
    assert.equal(secret.data.directory_url, pebbleB.directoryUrl);

    const logs = currentLogs;
    const reissued = await waitFor(
      'the reissue in the log',
      () => logs.find((l) => l.hostname === FIRST_HOST && l.event === 'cert_obtained'),
      { timeoutMs: 5_000 },
    );
    assert.equal(
      reissued.reason,
      'Unparseable',
      `the reissue is logged with reason Unparseable: ${eventsOf(logs, FIRST_HOST)}`,
    );
    const problem = logs.find(
      (l) => l.hostname === FIRST_HOST && l.msg === 'stored certificate is unreadable; reissuing',
    );
    assert.ok(problem, `the problem itself is reported: ${eventsOf(logs, FIRST_HOST)}`);
    assert.equal(problem.reason, 'Unparseable');
    assert.match(String(problem.err), /cert field is not a PEM certificate/);
    await waitFor(
      'the status to show it valid again',
      async () => (await certificateStatus(current.listening.adminUrl, FIRST_HOST))?.state === 'valid',
    );
  });

  test('a hostname removed from Consul is retired after the grace period and not before; a secret not ours is never touched', async () => {
    await registerService(consul.address, 'web', [`urlprefix-${FIRST_HOST}/`]);
    await assertRetiredAfterGraceNotBefore(current, currentLogs, SECOND_HOST);

    assert.ok(await vaultSecret(vault, FIRST_HOST), 'the name still declared keeps its certificate');
    const foreign = vault.readRaw(MOUNT, `${PREFIX}/${FOREIGN_HOST}`);
    assert.equal(foreign?.current, 1, 'the foreign secret was never rewritten');
    assert.deepEqual(foreign.versions[1]?.data, FOREIGN_DATA);
    assert.equal(foreign.versions[1]?.deletion_time, '');
    assert.equal((await certificateStatus(current.listening.adminUrl, FOREIGN_HOST))?.state, 'unmanaged');
  });

  test('a certificate whose hostname was removed while the service was down is retired once a grace period has passed after the start', async () => {
    await stop(current);
    await registerService(consul.address, 'web', []);
    const { logger, lines } = captureLogs();
    current = await start(pebbleB, logger);
    currentLogs = lines;
    await assertRetiredAfterGraceNotBefore(current, lines, FIRST_HOST);
    assert.deepEqual(vault.readRaw(MOUNT, `${PREFIX}/${FOREIGN_HOST}`)?.versions[1]?.data, FOREIGN_DATA);
  });

  test('of two instances against one Consul only the leader scans, and when it stops the other takes over', async () => {
    await stop(current);
    const one = await start(pebbleB, captureLogs().logger, { CONSUL_ACME_INSTANCE_NAME: 'one' });
    const two = await start(pebbleB, captureLogs().logger, { CONSUL_ACME_INSTANCE_NAME: 'two' }, await freePort());
    const ticks = new Map([
      [one, recordTicks(one.service.renewal)],
      [two, recordTicks(two.service.renewal)],
    ]);
    await waitFor('four ticks on each instance', () => [...ticks.values()].every((t) => t.length >= 4), {
      timeoutMs: 30_000,
    });

    const [leader, follower] = one.service.renewal.isLeader() ? [one, two] : [two, one];
    const leaderTicks = ticks.get(leader)!;
    const followerTicks = ticks.get(follower)!;
    // 'busy' (an instance's own previous tick still running) says nothing about leadership.
    const decisive = (outcomes: ScanOutcome[]): Set<ScanOutcome> => new Set(outcomes.filter((o) => o !== 'busy'));
    assert.deepEqual(
      decisive(leaderTicks),
      new Set(['scanned']),
      `the leader scanned on every tick: ${leaderTicks.join(',')}`,
    );
    assert.deepEqual(
      decisive(followerTicks),
      new Set(['not-leader']),
      `the other never scanned: ${followerTicks.join(',')}`,
    );
    assert.equal(follower.service.renewal.isLeader(), false);

    await stop(leader);
    const followerTicksAtStop = followerTicks.length;
    // A clean stop releases the leader key, so this is well inside the 15 s lock-delay of a crash.
    await waitFor('the other instance to scan', () => followerTicks.slice(followerTicksAtStop).includes('scanned'), {
      timeoutMs: 10_000,
    });
    assert.equal(follower.service.renewal.isLeader(), true);
    assert.deepEqual(vault.readRaw(MOUNT, `${PREFIX}/${FOREIGN_HOST}`)?.versions[1]?.data, FOREIGN_DATA);
  });
});
