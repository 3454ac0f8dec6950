/**
 * The fault catalogue: what consul-acme does when the things around it fail, against
 * real Consul 1.8.7, real Pebble 2.4.0 (behind the ACME proxy, test/support/acme-proxy.ts, which
 * injects the CA's faults and counts what the CA received) and the Vault stand-in (its fault
 * switches). Each case has its own Consul, Pebble and Vault, so counts do not mix, and the cases
 * run side by side (most of their time is spent waiting out a fault). Each prints its figures with
 * `t.diagnostic`; docs/operations.md "Failure modes" quotes them.
 *
 *  1. Vault refuses writes under Fabio's prefix for 90 s right after the CA issued.
 *  2. kill -9 of an instance holding an issued certificate: once while the store refuses its
 *     write (between two attempts), once while the write hangs (its lock held); another instance
 *     completes the same order.
 *  3. 503s and timeouts on the certificate download, the order poll and the authorization poll.
 *  4. Our registrations deregistered through the agent API; the Consul agent restarted.
 *  5. An allow list with only invalid lines; a policy key the Consul token may not read.
 *  6. The Vault token revoked, then accepted again.
 *  7. 10,000 requests for unknown challenge tokens.
 *  8. A reader of the file store during 20 renewals.
 *
 * What the CA did is counted at the proxy (new orders per identifier) and in Pebble's own log
 * (test/support/pebble-order-counter.ts: orders, finalizations, serials issued).
 */
import { describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, realpathSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { Agent as HttpAgent, request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { CertificateStatus, StatusReport } from '../../src/engine/status.js';
import { startAcmeProxy, type AcmeProxy } from '../support/acme-proxy.js';
import { makeTestCertificate } from '../support/certs.js';
import { registerService, startConsul, type ConsulInstance, type StartConsulOptions } from '../support/consul.js';
import { startCountingProxy } from '../support/counting-proxy.js';
import { spawnInstance, type InstanceProcess } from '../support/instance-process.js';
import { captureLogs, type LogLine } from '../support/logs.js';
import { freePort } from '../support/net.js';
import { normalizeSerial, pebbleActivity, waitWithPebble } from '../support/pebble-order-counter.js';
import { startPebble, type PebbleInstance } from '../support/pebble.js';
import { removeOnExit } from '../support/processes.js';
import { startService, type RunningService } from '../support/service-harness.js';
import { startVaultStandin, type VaultStandin } from '../support/vault-standin.js';
import { waitFor } from '../support/wait.js';
import { chainsToRoot, keyMatches, splitPem } from '../support/x509.js';

const KV_PREFIX = 'consul-acme/';
const VAULT_MOUNT = 'secret';
const VAULT_PREFIX = 'fabio/certs';
/** What `refuseWrites` matches: the final certificate writes only (pending records live elsewhere). */
const FABIO_WRITES = `${VAULT_MOUNT}/data/${VAULT_PREFIX}/`;
const VAULT_PENDING_PREFIX = 'consul-acme/pending';
const CASE_TIMEOUT_MS = 230_000;

// ----------------------------------------------------------------------------------------------
// Servers per case, torn down when the case ends (also when it fails).

type Cleanup = () => unknown;

/** Registers clean-ups that run, last first, when the test ends. */
function cleanups(t: TestContext): (fn: Cleanup) => void {
  const fns: Cleanup[] = [];
  t.after(async () => {
    for (const fn of fns.reverse()) {
      try {
        await fn();
      } catch {
        // keep cleaning up
      }
    }
  });
  return (fn) => fns.push(fn);
}

interface Stack {
  consul: ConsulInstance;
  pebble: PebbleInstance;
  proxy: AcmeProxy;
  challengePort: number;
}

/** Consul, Pebble validating on a fresh challenge port, and the ACME proxy in front of Pebble. */
async function startStack(
  defer: (fn: Cleanup) => void,
  opts: { consul?: StartConsulOptions; validitySeconds?: number } = {},
): Promise<Stack> {
  const challengePort = await freePort();
  const [consul, pebble] = await Promise.all([
    startConsul(opts.consul),
    startPebble({
      httpPort: challengePort,
      ...(opts.validitySeconds === undefined ? {} : { certificateValidityPeriodSeconds: opts.validitySeconds }),
    }),
  ]);
  defer(() => consul.stop());
  defer(() => pebble.stop());
  const proxy = await startAcmeProxy({ directoryUrl: pebble.directoryUrl, caBundlePem: pebble.caBundlePem });
  defer(() => proxy.close());
  return { consul, pebble, proxy, challengePort };
}

async function startVault(defer: (fn: Cleanup) => void): Promise<VaultStandin> {
  const vault = await startVaultStandin();
  defer(() => vault.close());
  return vault;
}

function vaultEnv(vault: VaultStandin): Record<string, string> {
  return { CONSUL_ACME_STORE: 'vault', VAULT_ADDR: vault.address, VAULT_TOKEN: vault.token };
}

/** consul-acme in this process, talking to the CA through the proxy. */
async function startInProcess(
  defer: (fn: Cleanup) => void,
  stack: Stack,
  opts: { logs: ReturnType<typeof captureLogs>; env?: Record<string, string>; consulAddress?: string },
): Promise<RunningService> {
  const svc = await startService({
    consulAddress: opts.consulAddress ?? stack.consul.address,
    directoryUrl: stack.proxy.directoryUrl,
    caBundlePem: stack.proxy.caBundlePem,
    challengePort: stack.challengePort,
    logger: opts.logs.logger,
    env: opts.env,
  });
  defer(() => svc.stop());
  return svc;
}

// ----------------------------------------------------------------------------------------------
// Looking at what a user sees.

async function statusOf(adminUrl: string): Promise<StatusReport> {
  const res = await fetch(`${adminUrl}/status`, { signal: AbortSignal.timeout(5_000) });
  assert.equal(res.status, 200, `GET /status answered ${res.status}`);
  return (await res.json()) as StatusReport;
}

async function certificateStatus(adminUrl: string, hostname: string): Promise<CertificateStatus | undefined> {
  return (await statusOf(adminUrl)).certificates.find((c) => c.hostname === hostname);
}

/** The HTTP status of /health/certificates: 200 passing, 429 warning, 503 critical. */
async function certificateHealth(adminUrl: string): Promise<number> {
  const res = await fetch(`${adminUrl}/health/certificates`, { signal: AbortSignal.timeout(5_000) });
  await res.body?.cancel();
  return res.status;
}

interface StoredSecret {
  cert: string;
  key: string;
  version: number;
}

/** The latest version of a certificate secret, read without a token (works while the token is revoked). */
function storedSecret(vault: VaultStandin, hostname: string): StoredSecret | undefined {
  const raw = vault.readRaw(VAULT_MOUNT, `${VAULT_PREFIX}/${hostname}`);
  const data = raw?.versions[raw.current]?.data;
  if (!raw || !data || typeof data.cert !== 'string' || typeof data.key !== 'string') return undefined;
  return { cert: data.cert, key: data.key, version: raw.current };
}

function pendingRecord(vault: VaultStandin, hostname: string): Record<string, unknown> | undefined {
  const raw = vault.readRaw(VAULT_MOUNT, `${VAULT_PENDING_PREFIX}/${hostname}`);
  return raw?.versions[raw.current]?.data ?? undefined;
}

/** The session holding consul-acme's lock on `hostname`, if one does. */
async function lockSession(consul: ConsulInstance, hostname: string): Promise<string | undefined> {
  const res = await fetch(`${consul.address}/v1/kv/${KV_PREFIX}locks/certs/${hostname}`);
  if (res.status !== 200) {
    await res.body?.cancel();
    return undefined;
  }
  return ((await res.json()) as Array<{ Session?: string }>)[0]?.Session;
}

function serialOf(certPem: string): string {
  return normalizeSerial(splitPem(certPem)[0]!.serialNumber);
}

function seconds(ms: number): string {
  return (ms / 1000).toFixed(1);
}

/** What the instance logged about `hostname`, for failure messages. */
function eventsOf(lines: readonly LogLine[], hostname: string): string {
  return JSON.stringify(
    lines
      .filter((l) => l.hostname === hostname)
      .map((l) => ({ msg: l.msg, event: l.event, err: l.err }))
      .slice(-20),
  );
}

function isStoreFaultRetry(line: LogLine, hostname: string, code: string): boolean {
  return line.event === 'retry_scheduled' && line.hostname === hostname && String(line.err ?? '').startsWith(code);
}

interface AgentService {
  ID: string;
  Service: string;
  Tags: string[];
}

async function agentServices(consulAddress: string, token?: string): Promise<Record<string, AgentService>> {
  const res = await fetch(`${consulAddress}/v1/agent/services`, {
    headers: token ? { 'X-Consul-Token': token } : {},
    signal: AbortSignal.timeout(5_000),
  });
  assert.equal(res.status, 200, `GET /v1/agent/services answered ${res.status}`);
  return (await res.json()) as Record<string, AgentService>;
}

async function agentChecks(consulAddress: string): Promise<Array<{ ServiceID: string; Status: string }>> {
  const res = await fetch(`${consulAddress}/v1/agent/checks`, { signal: AbortSignal.timeout(5_000) });
  assert.equal(res.status, 200, `GET /v1/agent/checks answered ${res.status}`);
  return Object.values((await res.json()) as Record<string, { ServiceID: string; Status: string }>);
}

async function consulRequest(
  consul: ConsulInstance,
  method: string,
  path: string,
  body?: unknown,
  token?: string,
): Promise<unknown> {
  const res = await fetch(`${consul.address}${path}`, {
    method,
    headers: token ? { 'X-Consul-Token': token } : {},
    ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
  });
  const text = await res.text();
  assert.equal(res.status, 200, `${method} ${path}: ${res.status} ${text}`);
  return text === '' ? undefined : (JSON.parse(text) as unknown);
}

/** Environment for a separate consul-acme process (spawnInstance), with the CA bundle in a file. */
function processEnv(stack: Stack, vault: VaultStandin, extra: Record<string, string> = {}): Record<string, string> {
  const dir = mkdtempSync(join(tmpdir(), 'consul-acme-faults-'));
  removeOnExit(dir);
  const caFile = join(dir, 'acme-ca.pem');
  writeFileSync(caFile, stack.proxy.caBundlePem);
  return {
    CONSUL_HTTP_ADDR: stack.consul.address,
    CONSUL_ACME_DIRECTORY_URL: stack.proxy.directoryUrl,
    CONSUL_ACME_CA_BUNDLE: caFile,
    ...vaultEnv(vault),
    CONSUL_ACME_KV_PREFIX: KV_PREFIX,
    CONSUL_ACME_WATCH_WAIT_SECONDS: '5',
    CONSUL_ACME_ACME_POLL_MIN_MS: '50',
    CONSUL_ACME_ACME_POLL_MAX_MS: '500',
    CONSUL_ACME_RETRY_SCHEDULE: '1s,2s,5s',
    CONSUL_ACME_PREFLIGHT: 'false',
    CONSUL_ACME_LOG_LEVEL: 'info',
    ...extra,
  };
}

async function stopProcess(instance: InstanceProcess): Promise<void> {
  if (instance.exited()) return;
  instance.sigterm();
  await instance.waitForExit(20_000).catch(() => instance.kill9());
}

// ----------------------------------------------------------------------------------------------

describe('fault catalogue: real Consul, real Pebble, the Vault stand-in', { concurrency: 4 }, () => {
  test(
    '1. Vault refuses writes for 90 s after issuance: 1 certificate bought, status waiting, health critical, stored within 60 s of Vault returning',
    { timeout: CASE_TIMEOUT_MS },
    async (t) => {
      const REFUSAL_MS = 90_000;
      const HOST = 'vault-blip.faults.test';
      const defer = cleanups(t);
      const stack = await startStack(defer);
      const vault = await startVault(defer);
      const logs = captureLogs('info');
      const svc = await startInProcess(defer, stack, { logs, env: vaultEnv(vault) });
      const adminUrl = svc.listening.adminUrl;

      // Vault stops taking certificate writes the moment the CA has handed the certificate over.
      let refusedAt: number | undefined;
      stack.proxy.onAnswered((r) => {
        if (refusedAt === undefined && r.endpoint === 'certificate' && r.status === 200) {
          vault.refuseWrites({ pathPrefix: FABIO_WRITES });
          refusedAt = Date.now();
        }
      });
      await registerService(stack.consul.address, 'web', [`urlprefix-${HOST}/`]);
      const startedAt = await waitWithPebble(stack.pebble, 'the certificate download', () => refusedAt, {
        timeoutMs: 60_000,
      });

      // While Vault refuses: what the status and the health check say, once the store has failed.
      const states = new Map<string, number>();
      const healthSeen = new Map<number, number>();
      let waitingFor = '';
      let firstFaultAt: number | undefined;
      while (Date.now() < startedAt + REFUSAL_MS) {
        if (firstFaultAt === undefined && logs.lines.some((l) => isStoreFaultRetry(l, HOST, 'STORE_UNAVAILABLE')))
          firstFaultAt = Date.now();
        if (firstFaultAt !== undefined) {
          const [status, health] = await Promise.all([certificateStatus(adminUrl, HOST), certificateHealth(adminUrl)]);
          const state = status?.state ?? 'missing';
          states.set(state, (states.get(state) ?? 0) + 1);
          healthSeen.set(health, (healthSeen.get(health) ?? 0) + 1);
          if (state === 'waiting') waitingFor = status?.waitingFor ?? '';
        }
        await sleep(1_000);
      }
      assert.equal(storedSecret(vault, HOST), undefined, 'nothing reached the Fabio prefix while Vault refused');
      assert.ok(pendingRecord(vault, HOST), 'the pending record (key, order URL) was written outside the prefix');

      vault.allowWrites({ pathPrefix: FABIO_WRITES });
      const returnedAt = Date.now();
      const stored = await waitFor(
        `the certificate for ${HOST} in Vault after Vault returned`,
        () => storedSecret(vault, HOST),
        {
          timeoutMs: 60_000,
          intervalMs: 250,
        },
      ).catch((err: unknown) => {
        throw new Error(`${String(err)}\n${eventsOf(logs.lines, HOST)}`);
      });
      const storedAfterMs = Date.now() - returnedAt;

      const activity = pebbleActivity(stack.pebble.logs());
      const stateSummary = [...states].map(([s, n]) => `${s} ×${n}`).join(', ');
      const healthSummary = [...healthSeen].map(([s, n]) => `${s} ×${n}`).join(', ');
      t.diagnostic(
        `orders placed: ${stack.proxy.newOrders(HOST).length}; finalizations: ${activity.finalized.length}; ` +
          `certificates issued: ${activity.issued.size}; certificate downloads: ${stack.proxy.requests().filter((r) => r.endpoint === 'certificate').length}`,
      );
      t.diagnostic(`status while Vault refused (1 s samples): ${stateSummary}; waitingFor: ${waitingFor}`);
      t.diagnostic(`/health/certificates while Vault refused: ${healthSummary}`);
      t.diagnostic(`stored ${seconds(storedAfterMs)} s after Vault took writes again`);

      assert.equal(stack.proxy.newOrders(HOST).length, 1, 'one order');
      assert.equal(activity.finalized.length, 1, 'one finalization');
      assert.equal(activity.issued.size, 1, 'the CA issued exactly one certificate');
      assert.ok(activity.issued.has(serialOf(stored.cert)), 'the stored certificate is the one the CA issued');
      assert.ok(keyMatches(stored.cert, stored.key));
      // Removed right after the final write.
      await waitFor('the pending record removed once stored', () => pendingRecord(vault, HOST) === undefined);
      assert.ok(firstFaultAt !== undefined, 'the store refusal was seen as STORE_UNAVAILABLE');
      assert.ok(!states.has('failed'), `never "failed" while Vault refused (${stateSummary})`);
      assert.ok(states.has('waiting'), `"waiting" while Vault refused (${stateSummary})`);
      assert.match(waitingFor, /STORE_UNAVAILABLE/);
      assert.deepEqual([...healthSeen.keys()], [503], `health critical throughout (${healthSummary})`);
    },
  );

  test(
    '2. kill -9 between finalize and store (the write refused, then the write hanging): another instance stores the same certificate without a new order',
    { timeout: CASE_TIMEOUT_MS },
    async (t) => {
      const HOST = 'kill9.faults.test';
      const defer = cleanups(t);
      const stack = await startStack(defer);
      const vault = await startVault(defer);
      const env = processEnv(stack, vault, {
        CONSUL_ACME_SESSION_TTL_SECONDS: '10',
        CONSUL_ACME_LOCK_DELAY_SECONDS: '0',
        CONSUL_ACME_LOCKED_RECHECK: '2s',
      });
      // The final write is refused from the start; the pending record (outside the prefix) is not.
      vault.refuseWrites({ pathPrefix: FABIO_WRITES });
      await registerService(stack.consul.address, 'web', [`urlprefix-${HOST}/`]);

      const first = await spawnInstance({
        name: 'faults-kill-1',
        challengePort: stack.challengePort,
        adminPort: await freePort(),
        env: { ...env, CONSUL_ACME_LOG_LEVEL: 'debug' },
      });
      defer(() => stopProcess(first));
      await waitWithPebble(
        stack.pebble,
        'the first instance holding an issued certificate the store refuses',
        () => first.lines().some((l) => isStoreFaultRetry(l, HOST, 'STORE_UNAVAILABLE')),
        { timeoutMs: 60_000 },
      );
      const issued = [...pebbleActivity(stack.pebble.logs()).issued.keys()];
      assert.equal(issued.length, 1, 'the CA issued one certificate before the kill');
      const downloaded = first.lines().find((l) => l.msg === 'acme certificate downloaded');
      const loggedSerial = typeof downloaded?.serial === 'string' ? normalizeSerial(downloaded.serial) : undefined;
      assert.ok(pendingRecord(vault, HOST), 'the pending record is in Vault before the kill');

      const lockHeld = (await lockSession(stack.consul, HOST)) !== undefined;
      first.kill9();
      await first.waitForExit();
      const killedAt = Date.now();
      vault.allowWrites({ pathPrefix: FABIO_WRITES });

      const second = await spawnInstance({
        name: 'faults-kill-2',
        challengePort: stack.challengePort,
        adminPort: await freePort(),
        env,
      });
      defer(() => stopProcess(second));
      // The dead instance's lock goes with its session: up to 2×TTL after the kill.
      const stored = await waitWithPebble(
        stack.pebble,
        `${HOST} stored by the second instance`,
        () => storedSecret(vault, HOST),
        { timeoutMs: 90_000, intervalMs: 250 },
      ).catch((err: unknown) => {
        throw new Error(`${String(err)}\n${second.logs().slice(-6000)}`);
      });
      const storedAfterMs = Date.now() - killedAt;
      const resumed = await waitFor('cert_resumed in the second instance', () =>
        second.events('cert_resumed').find((l) => l.hostname === HOST),
      );

      const activity = pebbleActivity(stack.pebble.logs());
      t.diagnostic(
        `orders placed: ${stack.proxy.newOrders(HOST).length}; certificates issued: ${activity.issued.size}; ` +
          `serial issued ${issued[0]}, logged by the killed instance ${loggedSerial ?? '(not logged)'}, stored ${serialOf(stored.cert)}`,
      );
      t.diagnostic(
        `stored by the second instance ${seconds(storedAfterMs)} s after the kill ` +
          `(the lock was ${lockHeld ? 'held at the kill: freed when the session expired, TTL 10 s' : 'free at the kill: it is held only during an attempt'})`,
      );

      assert.equal(stack.proxy.newOrders(HOST).length, 1, 'no new order after the kill');
      assert.equal(activity.orders.length, 1, "one order in Pebble's log");
      assert.equal(activity.issued.size, 1, 'one certificate issued');
      assert.equal(serialOf(stored.cert), issued[0], 'the stored certificate has the serial the CA issued');
      if (loggedSerial !== undefined) assert.equal(serialOf(stored.cert), loggedSerial);
      assert.equal(normalizeSerial(String(resumed.serial)), issued[0], 'cert_resumed names the same serial');
      // Removed right after the final write.
      await waitFor('the pending record removed once stored', () => pendingRecord(vault, HOST) === undefined);

      // b) Killed while its final write hangs in Vault: the lock is held at the kill, and is freed
      //    only when Consul lets the dead instance's session expire.
      const HUNG = 'kill9-hung.faults.test';
      const hungPath = `${FABIO_WRITES}${HUNG}`;
      let hung: { at: number; requests: number } | undefined;
      stack.proxy.onAnswered((r) => {
        if (hung === undefined && r.endpoint === 'certificate' && r.status === 200) {
          vault.delayRequests(600_000, { pathPrefix: hungPath });
          hung = { at: Date.now(), requests: vault.countRequests({ pathPrefix: hungPath }) };
        }
      });
      await registerService(stack.consul.address, 'web', [`urlprefix-${HOST}/`, `urlprefix-${HUNG}/`]);
      await waitWithPebble(
        stack.pebble,
        'the final write of the second name hanging in Vault',
        () => hung !== undefined && vault.countRequests({ pathPrefix: hungPath }) > hung.requests,
        { timeoutMs: 60_000 },
      );
      const hungLock = await lockSession(stack.consul, HUNG);
      second.kill9();
      await second.waitForExit();
      const hungKilledAt = Date.now();
      // The held request is the final write itself (the store writes on the version it last saw,
      // without a read first): it is lost, not applied late, so the next instance must resume.
      vault.clearDelays({ drop: true });
      const third = await spawnInstance({
        name: 'faults-kill-3',
        challengePort: stack.challengePort,
        adminPort: await freePort(),
        env,
      });
      defer(() => stopProcess(third));
      const storedHung = await waitWithPebble(
        stack.pebble,
        `${HUNG} stored by the third instance`,
        () => storedSecret(vault, HUNG),
        { timeoutMs: 90_000, intervalMs: 250 },
      ).catch((err: unknown) => {
        throw new Error(`${String(err)}\n${third.logs().slice(-6000)}`);
      });
      const hungStoredAfterMs = Date.now() - hungKilledAt;
      const resumedHung = await waitFor('cert_resumed in the third instance', () =>
        third.events('cert_resumed').find((l) => l.hostname === HUNG),
      );
      const hungOrders = stack.proxy.newOrders(HUNG);
      const hungOrderId = new URL(hungOrders[0]?.location ?? 'https://x/').pathname.split('/').pop();
      const finalActivity = pebbleActivity(stack.pebble.logs());
      const hungIssued = [...finalActivity.issued]
        .filter(([, order]) => order === hungOrderId)
        .map(([serial]) => serial);
      t.diagnostic(
        `killed during a hanging final write: orders placed ${hungOrders.length}; certificates issued for it ${hungIssued.length}; ` +
          `lock ${hungLock ? 'held' : 'free'} at the kill; stored by the third instance ${seconds(hungStoredAfterMs)} s after the kill ` +
          `(session TTL 10 s: Consul expires it within 2×TTL), serial ${serialOf(storedHung.cert)}`,
      );
      assert.ok(hungLock, 'the lock was held at the kill');
      assert.equal(hungOrders.length, 1, 'no new order after the kill');
      assert.deepEqual(hungIssued, [serialOf(storedHung.cert)], 'the stored certificate is the one the CA issued');
      assert.equal(normalizeSerial(String(resumedHung.serial)), hungIssued[0]);
      assert.equal(finalActivity.orders.length, 2);
      assert.equal(finalActivity.issued.size, 2);
      // What the killed instances left registered in the agent (for the operations guide).
      const killed = ['faults-kill-1', 'faults-kill-2'];
      const leftovers = (await agentChecks(stack.consul.address))
        .filter((c) => killed.some((name) => c.ServiceID.endsWith(`-${name}`)))
        .map((c) => `${c.ServiceID} ${c.Status}`);
      t.diagnostic(`left in the agent by the killed instances: ${leftovers.join(', ') || 'nothing'}`);
    },
  );

  test(
    '3. 503 and timeouts on the certificate download, the order poll and the authorization poll: exactly 1 order per name',
    { timeout: CASE_TIMEOUT_MS },
    async (t) => {
      const REQUEST_TIMEOUT_MS = 5_000;
      const defer = cleanups(t);
      const stack = await startStack(defer);
      const logs = captureLogs('info');
      const svc = await startInProcess(defer, stack, {
        logs,
        env: { CONSUL_ACME_ACME_REQUEST_TIMEOUT_MS: String(REQUEST_TIMEOUT_MS) },
      });
      const certsDir = join(svc.dir, 'certs');
      const { proxy } = stack;
      const faults: Array<{ label: string; endpoint: string; arm: () => void }> = [
        {
          label: '503 ×2 on the certificate download',
          endpoint: 'certificate',
          arm: () => proxy.failNext({ endpoint: 'certificate', times: 2 }),
        },
        {
          label: '503 ×2 on the order poll',
          endpoint: 'order',
          arm: () => proxy.failNext({ endpoint: 'order', times: 2 }),
        },
        // `after: 1` spares the authorization's first fetch, so the poll after the challenge gets it.
        {
          label: '503 ×2 on the authorization poll',
          endpoint: 'authorization',
          arm: () => proxy.failNext({ endpoint: 'authorization', after: 1, times: 2 }),
        },
        {
          label: 'timeout on the certificate download',
          endpoint: 'certificate',
          arm: () => proxy.stallNext({ endpoint: 'certificate' }),
        },
        { label: 'timeout on the order poll', endpoint: 'order', arm: () => proxy.stallNext({ endpoint: 'order' }) },
        {
          label: 'timeout on the authorization poll',
          endpoint: 'authorization',
          arm: () => proxy.stallNext({ endpoint: 'authorization', after: 1 }),
        },
        // More 503s than the transport sends (4): the attempt fails, and the next one completes
        // the same order from its pending record.
        {
          label: '503 ×6 on the certificate download',
          endpoint: 'certificate',
          arm: () => proxy.failNext({ endpoint: 'certificate', times: 6 }),
        },
      ];
      const failures: string[] = [];
      for (const [i, fault] of faults.entries()) {
        const host = `f${i + 1}-${fault.endpoint}.faults.test`;
        const injectedBefore = proxy.requests().filter((r) => r.injected).length;
        fault.arm();
        const startedAt = Date.now();
        await registerService(stack.consul.address, `web-${i + 1}`, [`urlprefix-${host}/`]);
        const cert = await waitWithPebble(
          stack.pebble,
          `${host} stored (${fault.label})`,
          () => {
            try {
              return readFileSync(join(certsDir, host, 'cert.pem'), 'utf8');
            } catch {
              return undefined;
            }
          },
          { timeoutMs: 60_000, intervalMs: 100 },
        ).catch((err: unknown) => {
          throw new Error(`${String(err)}\n${eventsOf(logs.lines, host)}`);
        });
        const orders = proxy.newOrders(host).length;
        const injected = proxy.requests().filter((r) => r.injected).length - injectedBefore;
        const attempts = logs.lines.filter((l) => l.event === 'retry_scheduled' && l.hostname === host).length + 1;
        const resumed = logs.lines.some((l) => l.event === 'cert_resumed' && l.hostname === host);
        t.diagnostic(
          `${fault.label}: orders ${orders}, requests faulted ${injected}, attempts ${attempts}` +
            `${resumed ? ' (the second completed the order from its pending record)' : ''}, ` +
            `stored after ${seconds(Date.now() - startedAt)} s`,
        );
        assert.ok(cert.includes('BEGIN CERTIFICATE'));
        if (orders !== 1) failures.push(`${fault.label}: ${orders} orders`);
        if (injected === 0) failures.push(`${fault.label}: the fault was never hit`);
        assert.deepEqual(proxy.pendingFaults(), [], `${fault.label}: every armed fault was used`);
      }
      const activity = pebbleActivity(stack.pebble.logs());
      t.diagnostic(
        `in all: ${activity.orders.length} orders, ${activity.issued.size} certificates issued for ${faults.length} names`,
      );
      assert.deepEqual(failures, []);
      assert.equal(activity.orders.length, faults.length);
      assert.equal(activity.issued.size, faults.length);
    },
  );

  test(
    '4. registrations deregistered through the agent API, then the Consul agent restarted: routes and health check back within 60 s, the watch resumes',
    { timeout: CASE_TIMEOUT_MS },
    async (t) => {
      const FIRST = 'routes-first.faults.test';
      const LATER = 'routes-later.faults.test';
      const INSTANCE = 'faults-routes';
      const ROUTES_ID = `consul-acme-${INSTANCE}`;
      const HEALTH_ID = `consul-acme-certificates-${INSTANCE}`;
      const defer = cleanups(t);
      const stack = await startStack(defer, { consul: { dataDir: true } });
      const logs = captureLogs('info');
      const svc = await startInProcess(defer, stack, { logs, env: { CONSUL_ACME_INSTANCE_NAME: INSTANCE } });
      const certsDir = join(svc.dir, 'certs');
      const consulAddress = stack.consul.address;
      const certificateOf = (host: string): string | undefined => {
        try {
          return readFileSync(join(certsDir, host, 'cert.pem'), 'utf8');
        } catch {
          return undefined;
        }
      };
      const routeTag = (host: string): string => `urlprefix-${host}/.well-known/acme-challenge/`;
      /** Both registrations in the agent, the routes carrying every host's tag, and the health check. */
      const registered = async (hosts: string[]): Promise<boolean> => {
        const services = await agentServices(consulAddress);
        const checks = await agentChecks(consulAddress);
        return (
          hosts.every((h) => services[ROUTES_ID]?.Tags.includes(routeTag(h))) &&
          services[HEALTH_ID] !== undefined &&
          checks.some((c) => c.ServiceID === HEALTH_ID) &&
          checks.some((c) => c.ServiceID === ROUTES_ID)
        );
      };

      await registerService(consulAddress, 'web', [`urlprefix-${FIRST}/`]);
      await waitWithPebble(stack.pebble, `${FIRST} issued`, () => certificateOf(FIRST), { timeoutMs: 60_000 });
      await waitFor('both registrations', () => registered([FIRST]), { timeoutMs: 30_000 });

      // a) Someone deregisters both through the agent API.
      for (const id of [ROUTES_ID, HEALTH_ID]) {
        await consulRequest(stack.consul, 'PUT', `/v1/agent/service/deregister/${id}`);
      }
      const deregisteredAt = Date.now();
      assert.equal(await registered([FIRST]), false, 'the deregistration took effect');
      await waitFor('the registrations restored after the deregistration', () => registered([FIRST]), {
        timeoutMs: 60_000,
        intervalMs: 250,
      });
      const restoredMs = Date.now() - deregisteredAt;

      // b) The agent restarts (a crash: SIGKILL) with its data directory.
      await stack.consul.restart({ kill: true });
      const restartedAt = Date.now();
      await waitFor('the registrations after the agent restarted', () => registered([FIRST]), {
        timeoutMs: 60_000,
        intervalMs: 250,
      });
      const backAfterRestartMs = Date.now() - restartedAt;
      // The watch resumes: a name tagged after the restart is issued and gets its route.
      await registerService(consulAddress, 'web', [`urlprefix-${FIRST}/`, `urlprefix-${LATER}/`]);
      await waitWithPebble(stack.pebble, `${LATER} issued after the restart`, () => certificateOf(LATER), {
        timeoutMs: 60_000,
        intervalMs: 250,
      }).catch((err: unknown) => {
        throw new Error(`${String(err)}\n${eventsOf(logs.lines, LATER)}`);
      });
      const issuedAfterRestartMs = Date.now() - restartedAt;
      await waitFor('the route of the name tagged after the restart', () => registered([FIRST, LATER]), {
        timeoutMs: 30_000,
      });
      const routedAfterRestartMs = Date.now() - restartedAt;
      const restoredLines = logs.lines.filter((l) => l.event === 'registration_restored').length;

      t.diagnostic(
        `deregistered through the agent API: both registrations back after ${seconds(restoredMs)} s (anti-entropy every 30 s)`,
      );
      t.diagnostic(
        `agent killed and restarted with its data directory: registrations present ${seconds(backAfterRestartMs)} s after it was ready; ` +
          `a name tagged then was issued after ${seconds(issuedAfterRestartMs)} s and routed after ${seconds(routedAfterRestartMs)} s`,
      );
      t.diagnostic(
        `registration_restored log lines: ${restoredLines}; orders placed: ${stack.proxy.newOrders().length}`,
      );
      assert.ok(restoredLines >= 1, 'the restoration was logged');
      assert.equal(stack.proxy.newOrders(FIRST).length, 1);
      assert.equal(stack.proxy.newOrders(LATER).length, 1);
    },
  );

  test(
    '5. an allow list with only invalid lines: 0 orders; a policy key the token may not read: 0 new orders, renewals go on',
    { timeout: CASE_TIMEOUT_MS },
    async (t) => {
      const MASTER = 'b1a0c7de-0000-4000-8000-0000faults05';
      const REFUSED = 'not-allowed.faults.test';
      const CONTROL = 'always.faults.test';
      const RENEWED = 'renewed.faults.test';
      const NEW = 'new-name.faults.test';
      const defer = cleanups(t);
      const stack = await startStack(defer, { consul: { acl: { masterToken: MASTER } } });
      const vault = await startVault(defer);
      const { consul, proxy } = stack;
      const shippedRules = readFileSync(new URL('../../../deploy/consul-policy.hcl', import.meta.url), 'utf8');
      const tokenFor = async (name: string, rules: string): Promise<string> => {
        const policy = (await consulRequest(consul, 'PUT', '/v1/acl/policy', { Name: name, Rules: rules }, MASTER)) as {
          ID: string;
        };
        const token = (await consulRequest(
          consul,
          'PUT',
          '/v1/acl/token',
          { Description: name, Policies: [{ ID: policy.ID }] },
          MASTER,
        )) as { SecretID: string };
        return token.SecretID;
      };
      const register = (tags: string[]): Promise<unknown> =>
        consulRequest(
          consul,
          'PUT',
          '/v1/agent/service/register',
          { ID: 'web', Name: 'web', Port: 9000, Tags: tags },
          MASTER,
        );

      // a) The allow list has content, but no line is a valid pattern; the always list names a control.
      const INVALID_ALLOW = '*bad.faults.test\nnot a hostname\n10.0.0.1\n';
      await consulRequest(consul, 'PUT', `/v1/kv/${KV_PREFIX}policy/allow`, INVALID_ALLOW, MASTER);
      await consulRequest(consul, 'PUT', `/v1/kv/${KV_PREFIX}policy/always`, `${CONTROL}\n`, MASTER);
      await register([`urlprefix-${REFUSED}/`]);
      const logsA = captureLogs('info');
      const svcA = await startInProcess(defer, stack, {
        logs: logsA,
        env: { ...vaultEnv(vault), CONSUL_HTTP_TOKEN: await tokenFor('faults-shipped', shippedRules) },
      });
      await waitWithPebble(stack.pebble, `the always-issued ${CONTROL} stored`, () => storedSecret(vault, CONTROL), {
        timeoutMs: 60_000,
      }).catch((err: unknown) => {
        throw new Error(`${String(err)}\n${JSON.stringify(logsA.lines.slice(-30))}`);
      });
      const statusA = await statusOf(svcA.listening.adminUrl);
      const refused = statusA.certificates.find((c) => c.hostname === REFUSED);
      t.diagnostic(
        `allow list of ${INVALID_ALLOW.trim().split('\n').length} invalid lines: orders for ${REFUSED}: ${proxy.newOrders(REFUSED).length}; ` +
          `status: ${refused?.state} "${refused?.policy}"`,
      );
      assert.equal(proxy.newOrders(REFUSED).length, 0, 'no order for a name the broken allow list covers');
      assert.equal(refused?.state, 'refused');
      assert.match(refused?.policy ?? '', /allow list has no valid pattern \(3 invalid lines\)/);
      assert.equal(statusA.policy.invalid.length, 3);
      await svcA.stop();
      await consulRequest(consul, 'DELETE', `/v1/kv/${KV_PREFIX}policy/?recurse`, undefined, MASTER);

      // b) The token may read everything it needs but the deny list. A stored certificate is
      // close to expiry; a new name is declared beside it.
      const unreadableRules = `${shippedRules}\nkey "${KV_PREFIX}policy/deny" {\n  policy = "deny"\n}\n`;
      const now = Date.now();
      const old = await makeTestCertificate({
        hostnames: [RENEWED],
        notBefore: new Date(now - 89 * 86_400_000),
        notAfter: new Date(now + 86_400_000),
      });
      vault.writeRaw(VAULT_MOUNT, `${VAULT_PREFIX}/${RENEWED}`, {
        cert: old.certPem,
        key: old.keyPem,
        hostnames: RENEWED,
        directory_url: proxy.directoryUrl,
        key_type: 'ec-p256',
        obtained_at: new Date(now - 89 * 86_400_000).toISOString(),
        managed_by: 'consul-acme',
      });
      await register([`urlprefix-${RENEWED}/`, `urlprefix-${NEW}/`]);
      const ordersBefore = proxy.newOrders().length;
      const logsB = captureLogs('info');
      const svcB = await startInProcess(defer, stack, {
        logs: logsB,
        env: { ...vaultEnv(vault), CONSUL_HTTP_TOKEN: await tokenFor('faults-deny-unreadable', unreadableRules) },
      });
      const renewed = await waitWithPebble(
        stack.pebble,
        `${RENEWED} renewed while the deny list is unreadable`,
        () => {
          const secret = storedSecret(vault, RENEWED);
          return secret && secret.version >= 2 ? secret : undefined;
        },
        { timeoutMs: 60_000 },
      ).catch((err: unknown) => {
        throw new Error(`${String(err)}\n${eventsOf(logsB.lines, RENEWED)}`);
      });
      const statusB = await statusOf(svcB.listening.adminUrl);
      const fresh = statusB.certificates.find((c) => c.hostname === NEW);
      t.diagnostic(
        `deny list unreadable: orders for the new name ${proxy.newOrders(NEW).length}, for the stored name ${proxy.newOrders(RENEWED).length} ` +
          `(renewed, version ${renewed.version}); status: ${fresh?.state} "${fresh?.policy}"`,
      );
      assert.equal(proxy.newOrders(NEW).length, 0, 'no order for a new name while the policy cannot be read');
      assert.equal(proxy.newOrders(RENEWED).length, 1, 'the stored name was renewed');
      assert.equal(proxy.newOrders().length - ordersBefore, 1);
      assert.ok(chainsToRoot(renewed.cert, await stack.pebble.rootsPem()), 'the renewal came from the CA');
      assert.equal(fresh?.state, 'refused');
      assert.match(fresh?.policy ?? '', /cannot be read/);
      assert.deepEqual(
        statusB.policy.unreadable.map((u) => u.list),
        ['deny'],
      );
      assert.match(statusB.policy.failsClosed ?? '', /no new names are issued/);
      assert.ok(logsB.lines.some((l) => l.event === 'policy_unreadable'));
    },
  );

  test(
    '6. Vault token revoked, then accepted again: health critical within 1 min, a name tagged meanwhile stored within 1 min of the fix',
    { timeout: CASE_TIMEOUT_MS },
    async (t) => {
      const FIRST = 'token-first.faults.test';
      const LATER = 'token-later.faults.test';
      const defer = cleanups(t);
      const stack = await startStack(defer);
      const vault = await startVault(defer);
      const logs = captureLogs('info');
      const svc = await startInProcess(defer, stack, { logs, env: vaultEnv(vault) });
      const adminUrl = svc.listening.adminUrl;

      await registerService(stack.consul.address, 'web', [`urlprefix-${FIRST}/`]);
      await waitWithPebble(stack.pebble, `${FIRST} stored`, () => storedSecret(vault, FIRST), { timeoutMs: 60_000 });
      await waitFor('health passing', async () => (await certificateHealth(adminUrl)) === 200);

      vault.revokeToken(vault.token);
      const revokedAt = Date.now();
      await waitFor(
        'health critical after the token was revoked',
        async () => (await certificateHealth(adminUrl)) === 503,
        {
          timeoutMs: 60_000,
          intervalMs: 250,
        },
      );
      const criticalMs = Date.now() - revokedAt;
      const storeError = (await statusOf(adminUrl)).storeHealth.error ?? '';

      // A name tagged while the token is refused waits (short retries, nothing persisted).
      await registerService(stack.consul.address, 'web', [`urlprefix-${FIRST}/`, `urlprefix-${LATER}/`]);
      const taggedAt = Date.now();
      const waiting = await waitFor(`${LATER} waiting on the store`, async () => {
        const s = await certificateStatus(adminUrl, LATER);
        return s?.state === 'waiting' ? s : undefined;
      });
      // The token stays refused until the retries have reached the longest step of their short
      // schedule (30 s), and is accepted again right after an attempt: the slowest recovery.
      const states = new Set<string>();
      const retriedAfter30s = (): boolean =>
        logs.lines.some(
          (l) => isStoreFaultRetry(l, LATER, 'STORE_PERMISSION_DENIED') && Number(l.retry_in_ms) >= 30_000,
        );
      await waitFor(
        `${LATER} retried on the 30 s step`,
        async () => {
          states.add((await certificateStatus(adminUrl, LATER))?.state ?? 'missing');
          return retriedAfter30s();
        },
        { timeoutMs: 90_000, intervalMs: 1_000 },
      );
      const attemptsWhileRevoked = logs.lines.filter((l) =>
        isStoreFaultRetry(l, LATER, 'STORE_PERMISSION_DENIED'),
      ).length;
      const persisted = await fetch(`${stack.consul.address}/v1/kv/${KV_PREFIX}state/${LATER}`);
      await persisted.body?.cancel();

      vault.restoreToken(vault.token);
      const restoredAt = Date.now();
      await waitWithPebble(
        stack.pebble,
        `${LATER} stored after the token was accepted again`,
        () => storedSecret(vault, LATER),
        {
          timeoutMs: 60_000,
          intervalMs: 250,
        },
      ).catch((err: unknown) => {
        throw new Error(`${String(err)}\n${eventsOf(logs.lines, LATER)}`);
      });
      const recoveredMs = Date.now() - restoredAt;
      await waitFor('health passing again', async () => (await certificateHealth(adminUrl)) === 200, {
        timeoutMs: 60_000,
      });
      const passingMs = Date.now() - restoredAt;

      t.diagnostic(`token revoked: /health/certificates critical after ${seconds(criticalMs)} s (${storeError})`);
      t.diagnostic(
        `name tagged while revoked: ${attemptsWhileRevoked} attempts in ${seconds(restoredAt - taggedAt)} s (1, 2, 5, 10, 30 s apart), ` +
          `states seen ${[...states].join(', ')}; waitingFor: ${waiting.waitingFor}`,
      );
      t.diagnostic(
        `token accepted again: name stored after ${seconds(recoveredMs)} s, health passing after ${seconds(passingMs)} s; ` +
          `orders for it: ${stack.proxy.newOrders(LATER).length}`,
      );
      assert.match(storeError, /STORE_PERMISSION_DENIED/);
      assert.match(waiting.waitingFor ?? '', /STORE_PERMISSION_DENIED/);
      assert.ok(!states.has('failed'), `never "failed" while the token was refused (${[...states].join(', ')})`);
      assert.equal(persisted.status, 404, 'no backoff persisted in Consul KV for a store fault');
      assert.ok(storedSecret(vault, FIRST), 'the certificate stored before is still there');
      assert.ok(stack.proxy.newOrders(LATER).length <= 1, 'at most one order for the name tagged meanwhile');
    },
  );

  test(
    '7. 10,000 unknown challenge tokens: the responder stays ready and Consul KV reads stay at about one a second',
    { timeout: CASE_TIMEOUT_MS },
    async (t) => {
      const REQUESTS = 10_000;
      const CONCURRENCY = 50;
      const defer = cleanups(t);
      const consul = await startConsul();
      defer(() => consul.stop());
      const counter = await startCountingProxy(consul.httpPort);
      defer(() => counter.close());
      const dir = mkdtempSync(join(tmpdir(), 'consul-acme-faults-flood-'));
      removeOnExit(dir);
      const challengePort = await freePort();
      const instance = await spawnInstance({
        name: 'faults-flood',
        challengePort,
        adminPort: await freePort(),
        env: {
          CONSUL_HTTP_ADDR: counter.url,
          // Nothing is issued here; the responder only answers from the challenge store.
          CONSUL_ACME_DIRECTORY_URL: 'https://127.0.0.1:9/dir',
          CONSUL_ACME_FILE_STORE_DIR: join(dir, 'certs'),
          CONSUL_ACME_WATCH_WAIT_SECONDS: '5',
          CONSUL_ACME_PREFLIGHT: 'false',
          CONSUL_ACME_LOG_LEVEL: 'info',
        },
      });
      defer(() => stopProcess(instance));
      await waitFor(
        'the instance ready',
        async () => (await fetch(`${instance.adminUrl}/health/ready`)).status === 200,
      );

      // A validation in flight, put by "another instance" straight into Consul.
      const known = randomBytes(32).toString('base64url');
      const knownValue = `${known}.${randomBytes(32).toString('base64url')}`;
      await consulRequest(consul, 'PUT', `/v1/kv/${KV_PREFIX}challenges/${known}`, knownValue);
      const agent = new HttpAgent({ keepAlive: true, maxSockets: CONCURRENCY + 2 });
      defer(() => agent.destroy());
      const get = (port: number, path: string): Promise<{ status: number; body: string }> =>
        new Promise((resolve, reject) => {
          const req = httpRequest({ host: '127.0.0.1', port, path, agent, timeout: 10_000 }, (res) => {
            const chunks: Buffer[] = [];
            res.on('data', (c: Buffer) => chunks.push(c));
            res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
            res.on('error', reject);
          });
          req.on('timeout', () => req.destroy(new Error(`no answer within 10 s for ${path}`)));
          req.on('error', reject);
          req.end();
        });
      const adminPort = Number(new URL(instance.adminUrl).port);
      await waitFor(
        'the known token answered',
        async () => (await get(challengePort, `/.well-known/acme-challenge/${known}`)).status === 200,
      );

      const isChallengeRead = (r: { method: string; path: string }): boolean =>
        r.method === 'GET' && r.path.startsWith(`/v1/kv/${KV_PREFIX}challenges/`);
      const readsBefore = counter.requests().filter(isChallengeRead).length;
      const answers = new Map<number, number>();
      const probeProblems: string[] = [];
      let probes = 0;
      let flooding = true;
      const probing = (async () => {
        while (flooding) {
          const [ready, token] = await Promise.all([
            get(adminPort, '/health/ready'),
            get(challengePort, `/.well-known/acme-challenge/${known}`),
          ]);
          probes += 1;
          if (ready.status !== 200) probeProblems.push(`/health/ready ${ready.status}`);
          if (token.status !== 200 || token.body !== knownValue) probeProblems.push(`known token ${token.status}`);
          await sleep(200);
        }
      })();
      const floodStartedAt = Date.now();
      let sent = 0;
      await Promise.all(
        Array.from({ length: CONCURRENCY }, async () => {
          while (sent < REQUESTS) {
            sent += 1;
            const { status } = await get(
              challengePort,
              `/.well-known/acme-challenge/${randomBytes(32).toString('base64url')}`,
            );
            answers.set(status, (answers.get(status) ?? 0) + 1);
          }
        }),
      );
      const floodMs = Date.now() - floodStartedAt;
      flooding = false;
      await probing;
      const reads = counter.requests().filter(isChallengeRead).length - readsBefore;
      const after = await get(challengePort, `/.well-known/acme-challenge/${known}`);
      const readyAfter = await get(adminPort, '/health/ready');
      // The stated bound: one read per started second of flood (misses refresh the mirror at most
      // once a second, single-flight), plus 5 for the watch's own returns.
      const bound = Math.ceil(floodMs / 1000) + 5;

      t.diagnostic(
        `${REQUESTS} unknown tokens, ${CONCURRENCY} at a time, in ${seconds(floodMs)} s (${Math.round(REQUESTS / (floodMs / 1000))} requests/s); ` +
          `answers: ${[...answers].map(([s, n]) => `${s} ×${n}`).join(', ')}`,
      );
      t.diagnostic(
        `Consul KV reads of the challenge folder during the flood: ${reads} (${(reads / (floodMs / 1000)).toFixed(2)}/s; bound stated: ${bound})`,
      );
      t.diagnostic(`readiness and known-token probes during the flood: ${probes}, problems: ${probeProblems.length}`);
      assert.deepEqual([...answers.keys()], [404], 'every unknown token is a plain 404');
      assert.equal(sent, REQUESTS);
      assert.deepEqual(probeProblems, [], 'ready and the known token answered throughout');
      assert.ok(probes > 0);
      assert.equal(after.status, 200);
      assert.equal(after.body, knownValue);
      assert.equal(readyAfter.status, 200);
      assert.ok(reads <= bound, `${reads} KV reads of the challenge folder in ${seconds(floodMs)} s; bound ${bound}`);
    },
  );

  test(
    '8. file store: a reader polling the pair during 20 renewals never sees a key that does not match its certificate',
    { timeout: CASE_TIMEOUT_MS },
    async (t) => {
      const RENEWALS = 20;
      const HOST = 'pair.faults.test';
      const defer = cleanups(t);
      const stack = await startStack(defer, { validitySeconds: 20 });
      const logs = captureLogs('info');
      const svc = await startInProcess(defer, stack, {
        logs,
        env: {
          // Renew when less than 95 % of 20 s is left (after 1 s), scanning every second.
          CONSUL_ACME_RENEW_REMAINING_FRACTION: '0.95',
          CONSUL_ACME_RENEW_SCHEDULE: '* * * * * *',
          CONSUL_ACME_RENEW_SPREAD: '0ms',
          // Twenty renewals of one exact set: more than the default 5 a week allows.
          CONSUL_ACME_BUDGET_EXACT_SET: 'off',
        },
      });
      const link = join(svc.dir, 'certs', HOST);
      await registerService(stack.consul.address, 'web', [`urlprefix-${HOST}/`]);
      await waitWithPebble(
        stack.pebble,
        `${HOST} issued`,
        () => {
          try {
            return realpathSync(link);
          } catch {
            return undefined;
          }
        },
        { timeoutMs: 60_000 },
      );

      // The reader of docs: resolve the link once, read both files from the resolved folder.
      const renewals = (): number => logs.lines.filter((l) => l.event === 'cert_renewed' && l.hostname === HOST).length;
      let reads = 0;
      let resolvedAgain = 0;
      const mismatches: string[] = [];
      const serials = new Set<string>();
      const startedAt = Date.now();
      let reading = true;
      const reader = (async () => {
        while (reading) {
          let folder: string;
          try {
            folder = realpathSync(link);
          } catch {
            resolvedAgain += 1; // the link is being replaced: resolve again
            continue;
          }
          let cert: string;
          let key: string;
          try {
            cert = await readFile(join(folder, 'cert.pem'), 'utf8');
            key = await readFile(join(folder, 'key.pem'), 'utf8');
          } catch {
            resolvedAgain += 1; // the folder was pruned after two renewals: resolve again
            continue;
          }
          reads += 1;
          serials.add(serialOf(cert));
          if (!keyMatches(cert, key)) mismatches.push(`${folder} (serial ${serialOf(cert)})`);
          await sleep(5);
        }
      })();
      await waitWithPebble(stack.pebble, `${RENEWALS} renewals of ${HOST}`, () => renewals() >= RENEWALS, {
        timeoutMs: 150_000,
        intervalMs: 250,
      }).finally(() => {
        reading = false;
      });
      await reader;
      const tookMs = Date.now() - startedAt;

      t.diagnostic(
        `${renewals()} renewals in ${seconds(tookMs)} s; pair reads ${reads} (${serials.size} certificates seen), ` +
          `link resolved again ${resolvedAgain} times, mismatched pairs ${mismatches.length}`,
      );
      assert.deepEqual(mismatches, [], 'every pair read through the resolved link matches');
      assert.ok(serials.size >= RENEWALS, `the reader saw the renewed certificates (${serials.size})`);
    },
  );
});
