/**
 * High availability: several consul-acme processes against one real Consul 1.8.7 and
 * one real Pebble 2.4.0, writing to the Vault stand-in. Pebble's HTTP-01 port is a round-robin
 * proxy in front of the instances' challenge ports (Fabio's role), so a validation can reach any
 * instance, whichever placed the order.
 *
 * What each instance did comes from its JSON log; what Pebble received from Pebble's log
 * (pebble-order-counter.ts); locks and sessions from Consul's KV and session APIs; versions from
 * the Vault stand-in. Each scenario has its own Consul, Pebble, proxy and Vault, so counts do not
 * mix.
 *
 * Mid-issuance is made deterministic by parking requests in a proxy (round-robin-proxy.ts hold()):
 * - kill -9: Pebble's validation requests are parked, so every order placed stays pending (a slow
 *   HTTP-01 validation) while the test finds the victim's locks in Consul and kills it.
 * - session destroyed, SIGTERM: the target reaches Consul through its own proxy, which parks its
 *   key-authorization writes: its orders are placed at Pebble but not yet submitted for
 *   validation when the test acts. (The issuer no longer deactivates an authorization whose
 *   challenge it has submitted: doing so mid-validation wedges Pebble 2.4.0, whose
 *   prepAuthorizationForDisplay leaks a lock, after which every new-order request hangs.)
 *
 * The pre-flight check is off here (CONSUL_ACME_PREFLIGHT=false): it has its own tests.
 *
 * Timing: the locker's session TTL and lock-delay are configurable
 * (CONSUL_ACME_SESSION_TTL_SECONDS, CONSUL_ACME_LOCK_DELAY_SECONDS); these tests use 10 s (Consul's
 * minimum) and 5 s. An instance that found a certificate locked looks again after
 * CONSUL_ACME_LOCKED_RECHECK (default 30 s; 5 s here), which is part of every recovery time
 * measured here.
 */
import { after, before, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as acme from 'acme-client';
import { Agent as HttpsAgent } from 'node:https';
import { createConsulClient } from '../../src/adapters/consul/consul-client.js';
import { ConsulLocker } from '../../src/adapters/consul/consul-locker.js';
import { VaultAccountStore } from '../../src/adapters/vault/vault-account-store.js';
import { createVaultClient } from '../../src/adapters/vault/vault-client.js';
import { VaultCertificateStore } from '../../src/adapters/vault/vault-certificate-store.js';
import { DEFAULT_PLAN_OPTIONS, type DesiredCertificate } from '../../src/domain/plan.js';
import type { StatusReport } from '../../src/engine/status.js';
import { EngineEvents } from '../../src/engine/events.js';
import type { JobRun } from '../../src/engine/queue.js';
import { StoreHealth } from '../../src/engine/store-health.js';
import { CertificateWorker, certificateLockKey } from '../../src/engine/worker.js';
import { ConsulAcmeError } from '../../src/errors.js';
import { silentLogger } from '../../src/logging.js';
import type { IssuedCertificate, Issuer, IssueRequest, ResumeOutcome } from '../../src/ports/issuer.js';
import { systemClock } from '../../src/ports/clock.js';
import { makeTestCertificate, TEST_CA_NAME, TEST_DIRECTORY_URL } from '../support/certs.js';
import { startConsul, type ConsulInstance } from '../support/consul.js';
import { spawnInstance, type InstanceProcess } from '../support/instance-process.js';
import { freePort } from '../support/net.js';
import {
  normalizeSerial,
  pebbleActivity,
  waitWithPebble,
  type PebbleActivity,
} from '../support/pebble-order-counter.js';
import { startPebble, type PebbleInstance } from '../support/pebble.js';
import { startRoundRobinProxy, type RoundRobinProxy } from '../support/round-robin-proxy.js';
import { startVaultStandin, type VaultStandin } from '../support/vault-standin.js';
import { waitFor } from '../support/wait.js';
import { chainsToRoot, dnsNames, keyMatches, splitPem } from '../support/x509.js';

const SESSION_TTL_SECONDS = 10; // Consul's minimum
const LOCK_DELAY_SECONDS = 5;
const SHUTDOWN_TIMEOUT_MS = 2_000;
const KV_PREFIX = 'consul-acme/';
const VAULT_MOUNT = 'secret';
const VAULT_PREFIX = 'fabio/certs';
/** How soon an instance looks again at a certificate another instance had locked (CONSUL_ACME_LOCKED_RECHECK). */
const LOCKED_RECHECK_MS = 5_000;

/** Margin for the work itself (orders against Pebble, Consul and Vault round trips) on 2 busy cores. */
const SLACK_MS = 20_000;
/** Consul may take up to 2×TTL to reap a session that stopped renewing, then lock-delay applies. */
const LOCK_FREED_AFTER_CRASH_MS = (2 * SESSION_TTL_SECONDS + LOCK_DELAY_SECONDS) * 1000;

// ----------------------------------------------------------------------------------------------
// A cluster: Consul, Vault stand-in, Pebble, the round-robin proxy and N instance processes.

interface Cluster {
  label: string;
  consul: ConsulInstance;
  vault: VaultStandin;
  pebble: PebbleInstance;
  proxy: RoundRobinProxy;
  /** Per instance that reaches Consul through a proxy (see stallChallengeWritesOf), that proxy. */
  consulProxies: Map<string, RoundRobinProxy>;
  instances: InstanceProcess[];
  hostnames: string[];
  stop(): Promise<void>;
}

function hostnamesFor(label: string, count: number): string[] {
  return Array.from({ length: count }, (_, i) => `h${String(i + 1).padStart(2, '0')}.${label}.ha.test`);
}

async function registerService(consulAddress: string, id: string, tags: string[]): Promise<void> {
  const res = await fetch(`${consulAddress}/v1/agent/service/register`, {
    method: 'PUT',
    body: JSON.stringify({ ID: id, Name: id, Port: 9000, Address: '127.0.0.1', Tags: tags }),
  });
  assert.equal(res.status, 200, `registering ${id}: ${await res.text()}`);
}

/**
 * A write of an ACME HTTP-01 key authorization to the shared challenge store. The pre-flight
 * check writes probe tokens there too; a key authorization is `<token>.<account thumbprint>`
 * (RFC 8555 §8.1), a probe value is plain base64url.
 */
function isChallengeWrite(request: { method: string; path: string; body?: string }): boolean {
  // The consul client percent-encodes the key's slashes.
  const path = decodeURIComponent(request.path);
  return (
    request.method === 'PUT' && path.startsWith(`/v1/kv/${KV_PREFIX}challenges/`) && (request.body ?? '').includes('.')
  );
}

/** A request from Pebble's validation authority (not the instances' own pre-flight probes). */
function isPebbleValidation(request: { userAgent: string }): boolean {
  return request.userAgent.includes('Pebble-VA');
}

interface ClusterOptions {
  label: string;
  hostnameCount: number;
  instanceCount: number;
  /** Keep Pebble's validation requests parked in the round-robin proxy until the test releases them. */
  holdValidations: boolean;
  /**
   * Instances (by index) that reach Consul through their own proxy, which parks their challenge
   * token writes from the start: their orders then stop after the order is placed and before
   * Pebble is asked to validate. They start first, and the others once each of them has a token
   * write parked.
   */
  stallChallengeWritesOf?: number[];
  /** Runs once Consul, Vault and Pebble are up, before any instance starts. */
  prepare?: (parts: { consul: ConsulInstance; vault: VaultStandin; pebble: PebbleInstance }) => Promise<void>;
}

async function startCluster(opts: ClusterOptions): Promise<Cluster> {
  const dir = mkdtempSync(join(tmpdir(), `consul-acme-ha-${opts.label}-`));
  const names = Array.from({ length: opts.instanceCount }, (_, i) => `${opts.label}-${i + 1}`);
  const ports = await Promise.all(names.map(async () => ({ challenge: await freePort(), admin: await freePort() })));
  const started: Partial<Cluster> & { instances: InstanceProcess[]; consulProxies: Map<string, RoundRobinProxy> } = {
    instances: [],
    consulProxies: new Map(),
  };
  const stop = async (): Promise<void> => {
    // HA_TEST_LOG_DIR=<dir> keeps every process's output there, for a failure's post-mortem.
    const logDir = process.env.HA_TEST_LOG_DIR;
    if (logDir) {
      mkdirSync(logDir, { recursive: true });
      for (const i of started.instances) writeFileSync(join(logDir, `${i.name}.log`), i.logs());
      if (started.pebble) writeFileSync(join(logDir, `${opts.label}-pebble.log`), started.pebble.logs());
      if (started.proxy)
        writeFileSync(join(logDir, `${opts.label}-proxy.json`), JSON.stringify(started.proxy.requests(), null, 1));
      for (const [name, p] of started.consulProxies)
        writeFileSync(join(logDir, `${name}-consul-proxy.json`), JSON.stringify(p.requests(), null, 1));
    }
    await Promise.all(
      started.instances.map(async (i) => {
        i.sigterm();
        await i.waitForExit(SHUTDOWN_TIMEOUT_MS + 15_000).catch(() => i.kill9());
      }),
    );
    await started.proxy?.close();
    await Promise.all([...started.consulProxies.values()].map((p) => p.close()));
    await started.pebble?.stop();
    await started.consul?.stop();
    await started.vault?.close();
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    started.consul = await startConsul();
    started.vault = await startVaultStandin();
    started.proxy = await startRoundRobinProxy(names.map((name, i) => ({ name, port: ports[i]!.challenge })));
    // Held until every instance listens: neither a validation nor a pre-flight probe may reach a
    // port nobody listens on yet.
    started.proxy.hold();
    started.pebble = await startPebble({ httpPort: started.proxy.port });
    const caFile = join(dir, 'pebble-ca.pem');
    writeFileSync(caFile, started.pebble.caBundlePem);

    // Declared before the instances start, so every instance's first snapshot holds them all.
    const hostnames = hostnamesFor(opts.label, opts.hostnameCount);
    for (let s = 0; s * 10 < hostnames.length; s++) {
      await registerService(
        started.consul.address,
        `web-${s + 1}`,
        hostnames.slice(s * 10, s * 10 + 10).map((h) => `urlprefix-${h}/`),
      );
    }

    const env: Record<string, string> = {
      CONSUL_HTTP_ADDR: started.consul.address,
      CONSUL_ACME_DIRECTORY_URL: started.pebble.directoryUrl,
      CONSUL_ACME_CA_BUNDLE: caFile,
      CONSUL_ACME_STORE: 'vault',
      VAULT_ADDR: started.vault.address,
      VAULT_TOKEN: started.vault.token,
      CONSUL_ACME_KV_PREFIX: KV_PREFIX,
      CONSUL_ACME_ACME_POLL_MIN_MS: '50',
      CONSUL_ACME_ACME_POLL_MAX_MS: '500',
      CONSUL_ACME_RETRY_SCHEDULE: '1s,2s,5s',
      CONSUL_ACME_WATCH_WAIT_SECONDS: '5',
      CONSUL_ACME_SESSION_TTL_SECONDS: String(SESSION_TTL_SECONDS),
      CONSUL_ACME_LOCK_DELAY_SECONDS: String(LOCK_DELAY_SECONDS),
      CONSUL_ACME_SHUTDOWN_TIMEOUT_MS: String(SHUTDOWN_TIMEOUT_MS),
      // The pre-flight check is covered by its own tests; here every name resolves only in Pebble's DNS.
      CONSUL_ACME_PREFLIGHT: 'false',
      CONSUL_ACME_LOCKED_RECHECK: `${LOCKED_RECHECK_MS}ms`,
      CONSUL_ACME_LOG_LEVEL: 'info',
    };
    const consul = started.consul;
    await opts.prepare?.({ consul, vault: started.vault, pebble: started.pebble });
    const spawnOne = async (name: string, i: number): Promise<InstanceProcess> => {
      let consulAddress = consul.address;
      if (opts.stallChallengeWritesOf?.includes(i)) {
        const consulProxy = await startRoundRobinProxy([{ name: 'consul', port: consul.httpPort }]);
        consulProxy.hold(isChallengeWrite);
        started.consulProxies.set(name, consulProxy);
        consulAddress = consulProxy.url;
      }
      const instanceEnv = { ...env, CONSUL_HTTP_ADDR: consulAddress };
      const instance = await spawnInstance({
        name,
        challengePort: ports[i]!.challenge,
        adminPort: ports[i]!.admin,
        env: instanceEnv,
      });
      started.instances.push(instance);
      return instance;
    };
    // The stalling instances start first and the others only once each has an order stalled:
    // otherwise the others, up a moment sooner, can take every name and leave them nothing to stall.
    const stalling = names.map((name, i) => ({ name, i })).filter(({ i }) => opts.stallChallengeWritesOf?.includes(i));
    const spawned = await Promise.allSettled(stalling.map(({ name, i }) => spawnOne(name, i)));
    if (!spawned.some((r) => r.status === 'rejected')) {
      for (const { name } of stalling) {
        await waitFor(
          `${name} to stall its first challenge token write`,
          () => started.consulProxies.get(name)!.held().length > 0,
          { timeoutMs: 30_000, intervalMs: 50 },
        );
      }
      const rest = names.map((name, i) => ({ name, i })).filter(({ i }) => !opts.stallChallengeWritesOf?.includes(i));
      spawned.push(...(await Promise.allSettled(rest.map(({ name, i }) => spawnOne(name, i)))));
    }
    const failed = spawned.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason instanceof Error ? failed.reason : new Error(String(failed.reason));
    // Keep the order of `names` (instances[i] is `<label>-<i+1>`).
    started.instances.sort((a, b) => names.indexOf(a.name) - names.indexOf(b.name));
    // Validations parked while the instances started stay parked when they are to be held.
    if (opts.holdValidations) started.proxy.hold(isPebbleValidation);
    else started.proxy.release();
    return { ...(started as Required<typeof started>), label: opts.label, hostnames, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

// ----------------------------------------------------------------------------------------------
// Looking at Consul, Vault, the instances and Pebble.

interface KvEntry {
  Key: string;
  Value: string | null;
  Session?: string;
}

async function kvEntries(consul: ConsulInstance, prefix: string): Promise<KvEntry[]> {
  const res = await fetch(`${consul.address}/v1/kv/${prefix}?recurse`);
  if (res.status === 404) return [];
  assert.equal(res.status, 200, `GET kv ${prefix}`);
  return (await res.json()) as KvEntry[];
}

/** Sessions Consul knows for this instance (its locker names them `consul-acme <instance>`). */
async function sessionIdsOf(consul: ConsulInstance, instance: InstanceProcess): Promise<string[]> {
  const res = await fetch(`${consul.address}/v1/session/list`);
  const sessions = (await res.json()) as Array<{ ID: string; Name: string }>;
  return sessions.filter((s) => s.Name === instance.sessionName).map((s) => s.ID);
}

/** Lock entries under `<prefix>locks/` held by one of `sessionIds`, as hostnames (or the raw key for non-certificate locks). */
async function locksHeldBy(consul: ConsulInstance, sessionIds: string[]): Promise<string[]> {
  const certPrefix = `${KV_PREFIX}locks/certs/`;
  return (await kvEntries(consul, `${KV_PREFIX}locks/`))
    .filter((e) => e.Session !== undefined && sessionIds.includes(e.Session))
    .map((e) => (e.Key.startsWith(certPrefix) ? e.Key.slice(certPrefix.length) : e.Key))
    .sort();
}

function vaultVersion(vault: VaultStandin, hostname: string): number {
  return vault.readRaw(VAULT_MOUNT, `${VAULT_PREFIX}/${hostname}`)?.current ?? 0;
}

function storedCount(cluster: Cluster): number {
  return cluster.hostnames.filter((h) => vaultVersion(cluster.vault, h) > 0).length;
}

/** PUT/POST requests that wrote the secret of `hostname` (each is one KV v2 write). */
function vaultWrites(vault: VaultStandin, hostname: string): number {
  const path = `/v1/${VAULT_MOUNT}/data/${VAULT_PREFIX}/${hostname}`;
  return vault.requests().filter((r) => /^(PUT|POST) /.test(r) && r.split(' ')[1]?.split('?')[0] === path).length;
}

async function fetchStatus(instance: InstanceProcess): Promise<StatusReport> {
  const res = await fetch(`${instance.adminUrl}/status`, { signal: AbortSignal.timeout(5_000) });
  return (await res.json()) as StatusReport;
}

/** Every running instance reports every hostname valid: no job waiting, running or retrying. */
async function waitUntilSettled(cluster: Cluster, timeoutMs: number): Promise<void> {
  try {
    await waitUntilSettledOnce(cluster, timeoutMs);
  } catch (err) {
    const lines: string[] = [];
    for (const instance of cluster.instances.filter((i) => !i.exited())) {
      const status = await fetchStatus(instance).catch(() => undefined);
      for (const c of status?.certificates.filter((c) => c.state !== 'valid') ?? []) {
        lines.push(
          `  ${instance.name} ${c.hostname}: ${c.state} reason=${c.reason ?? '-'} attempts=${c.attempts} next=${c.nextAttemptAt ?? '-'} ${c.lastError ?? ''}`,
        );
      }
    }
    throw new Error(`${err instanceof Error ? err.message : String(err)}\nnot valid yet:\n${lines.join('\n')}`, {
      cause: err,
    });
  }
}

async function waitUntilSettledOnce(cluster: Cluster, timeoutMs: number): Promise<void> {
  await waitWithPebble(
    cluster.pebble,
    `every running instance to report all ${cluster.hostnames.length} certificates valid with an empty queue`,
    async () => {
      for (const instance of cluster.instances.filter((i) => !i.exited())) {
        const status = await fetchStatus(instance);
        const valid = status.certificates.filter((c) => c.state === 'valid').length;
        if (valid !== cluster.hostnames.length) return undefined;
      }
      return true;
    },
    { timeoutMs, intervalMs: 500 },
  );
}

/** No running instance has an order in flight (so Pebble's counts are final for what was stored). */
async function waitUntilNoneIssuing(cluster: Cluster): Promise<void> {
  await waitWithPebble(
    cluster.pebble,
    'no instance with an order in flight',
    async () => {
      for (const instance of cluster.instances.filter((i) => !i.exited())) {
        if ((await fetchStatus(instance)).certificates.some((c) => c.state === 'issuing')) return undefined;
      }
      return true;
    },
    { timeoutMs: 15_000, intervalMs: 200 },
  );
}

async function waitUntilAllStored(cluster: Cluster, timeoutMs: number, onProbe?: () => Promise<void>): Promise<void> {
  try {
    await waitWithPebble(
      cluster.pebble,
      `all ${cluster.hostnames.length} certificates in Vault`,
      async () => {
        await onProbe?.();
        return storedCount(cluster) === cluster.hostnames.length;
      },
      { timeoutMs, intervalMs: 200 },
    );
  } catch (err) {
    throw new Error(`${err instanceof Error ? err.message : String(err)}\n${await describeMissing(cluster)}`, {
      cause: err,
    });
  }
}

/** For failure messages: what each running instance says about the names not yet in Vault. */
async function describeMissing(cluster: Cluster): Promise<string> {
  const missing = cluster.hostnames.filter((h) => vaultVersion(cluster.vault, h) === 0);
  const lines = [`missing in Vault: ${missing.join(', ')}`];
  for (const instance of cluster.instances.filter((i) => !i.exited())) {
    try {
      const status = await fetchStatus(instance);
      for (const c of status.certificates.filter((c) => missing.includes(c.hostname))) {
        lines.push(
          `  ${instance.name} ${c.hostname}: ${c.state} attempts=${c.attempts} next=${c.nextAttemptAt ?? '-'} ${c.lastError ?? ''}`,
        );
      }
    } catch (err) {
      lines.push(`  ${instance.name}: no status (${err instanceof Error ? err.message : String(err)})`);
    }
  }
  return lines.join('\n');
}

/**
 * Every hostname has a certificate in Vault at version 1, written once, for that name, chaining to
 * Pebble's root, with its key; returns hostname → normalized serial.
 */
async function assertEachStoredOnce(cluster: Cluster): Promise<Map<string, string>> {
  const roots = await cluster.pebble.rootsPem();
  const serials = new Map<string, string>();
  for (const hostname of cluster.hostnames) {
    const raw = cluster.vault.readRaw(VAULT_MOUNT, `${VAULT_PREFIX}/${hostname}`);
    assert.ok(raw, `${hostname}: a secret in Vault`);
    assert.equal(raw.current, 1, `${hostname}: the secret is at KV version 1`);
    assert.deepEqual(Object.keys(raw.versions), ['1'], `${hostname}: exactly one version`);
    assert.equal(vaultWrites(cluster.vault, hostname), 1, `${hostname}: written once`);
    const data = raw.versions[1]!.data as { cert: string; key: string };
    const leaf = splitPem(data.cert)[0]!;
    assert.deepEqual(dnsNames(leaf), [hostname], `${hostname}: SAN`);
    assert.ok(chainsToRoot(data.cert, roots), `${hostname}: chains to Pebble's root`);
    assert.ok(keyMatches(data.cert, data.key), `${hostname}: key matches`);
    serials.set(hostname, normalizeSerial(leaf.serialNumber));
  }
  return serials;
}

/** Each stored certificate is one Pebble issued, for an order Pebble created and finalized; returns the activity. */
function assertPebbleIssuedStored(cluster: Cluster, serials: Map<string, string>): PebbleActivity {
  const activity = pebbleActivity(cluster.pebble.logs());
  const orders = new Set(activity.orders);
  const finalized = new Set(activity.finalized);
  const ordersOfStored = new Set<string>();
  for (const [hostname, serial] of serials) {
    const order = activity.issued.get(serial);
    assert.ok(order, `${hostname}: Pebble logged issuing serial ${serial}`);
    assert.ok(
      orders.has(order) && finalized.has(order),
      `${hostname}: its order ${order} was created and finalized at Pebble`,
    );
    ordersOfStored.add(order);
  }
  assert.equal(ordersOfStored.size, serials.size, 'every stored certificate comes from a different order');
  assert.equal(activity.finalized.length, new Set(activity.finalized).size, 'no order finalized twice');
  return activity;
}

/** hostname → instance that logged cert_obtained for it (asserting there is exactly one). */
function issuingInstances(cluster: Cluster): Map<string, string> {
  const byHost = new Map<string, string[]>();
  for (const instance of cluster.instances) {
    for (const e of instance.events('cert_obtained'))
      byHost.set(e.hostname!, [...(byHost.get(e.hostname!) ?? []), instance.name]);
  }
  const result = new Map<string, string>();
  for (const hostname of cluster.hostnames) {
    const names = byHost.get(hostname) ?? [];
    assert.equal(names.length, 1, `${hostname}: obtained by exactly one instance (got ${names.join(', ') || 'none'})`);
    result.set(hostname, names[0]!);
  }
  return result;
}

interface MidIssuance {
  sessionIds: string[];
  /** Hostnames whose lock the instance holds, whose order it has placed (cert_obtaining) and that Pebble is validating (held in the proxy). */
  inFlight: string[];
}

/** Waits until `instance` holds certificate locks for orders Pebble is validating right now. */
async function waitUntilMidIssuance(cluster: Cluster, instance: InstanceProcess): Promise<MidIssuance> {
  return waitWithPebble(
    cluster.pebble,
    `${instance.name} to hold certificate locks for orders Pebble is validating`,
    async () => {
      const sessionIds = await sessionIdsOf(cluster.consul, instance);
      if (sessionIds.length === 0) return undefined;
      const locked = await locksHeldBy(cluster.consul, sessionIds);
      const obtaining = new Set(instance.events('cert_obtaining').map((e) => e.hostname));
      const validating = new Set(cluster.proxy.held().map((r) => r.host));
      const inFlight = locked.filter((c) => obtaining.has(c) && validating.has(c));
      return inFlight.length > 0 ? { sessionIds, inFlight } : undefined;
    },
    { timeoutMs: 30_000, intervalMs: 50 },
  );
}

interface Stalled extends MidIssuance {
  /** The parked token writes (paths under /v1/kv/<prefix>challenges/), one per order in flight. */
  tokenPaths: string[];
}

/**
 * Waits until every certificate `instance` holds a lock for has its order placed at Pebble and its
 * token write parked in the instance's Consul proxy: orders in flight, none validated yet.
 */
async function waitUntilStalled(cluster: Cluster, instance: InstanceProcess): Promise<Stalled> {
  const consulProxy = cluster.consulProxies.get(instance.name)!;
  return waitWithPebble(
    cluster.pebble,
    `${instance.name} to hold certificate locks for placed orders whose token writes are parked`,
    async () => {
      const sessionIds = await sessionIdsOf(cluster.consul, instance);
      if (sessionIds.length === 0) return undefined;
      const locked = (await locksHeldBy(cluster.consul, sessionIds)).filter((k) => cluster.hostnames.includes(k));
      const obtaining = new Set(instance.events('cert_obtaining').map((e) => e.hostname));
      const inFlight = locked.filter((c) => obtaining.has(c));
      const tokenPaths = consulProxy.held().map((r) => r.path.split('?')[0]!);
      return inFlight.length > 0 && tokenPaths.length === inFlight.length
        ? { sessionIds, inFlight, tokenPaths }
        : undefined;
    },
    { timeoutMs: 30_000, intervalMs: 50 },
  );
}

/** Every parked token write was later followed by a DELETE of the same key from that instance. */
function assertTokensRemoved(cluster: Cluster, instance: InstanceProcess, tokenPaths: string[]): void {
  const requests = cluster.consulProxies.get(instance.name)!.requests();
  for (const path of tokenPaths) {
    const written = requests.find((r) => r.method === 'PUT' && r.path.split('?')[0] === path);
    assert.equal(written?.status, 200, `${instance.name} wrote its token ${path}`);
    const removed = requests.find((r) => r.method === 'DELETE' && r.path.split('?')[0] === path && r.seq > written.seq);
    assert.equal(removed?.status, 200, `${instance.name} removed its token ${path} after abandoning the order`);
  }
}

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`;
}

// ----------------------------------------------------------------------------------------------

describe('high availability: three consul-acme processes, one Consul, one Pebble', () => {
  describe('thirty hostnames, three instances, validations spread by a round-robin proxy', () => {
    let cluster: Cluster;

    before(async () => {
      cluster = await startCluster({ label: 'spread', hostnameCount: 30, instanceCount: 3, holdValidations: false });
    });
    after(async () => {
      await cluster?.stop();
    });

    test(
      'each hostname is ordered and finalized once at Pebble, and each secret ends at version 1',
      { timeout: 180_000 },
      async (t: TestContext) => {
        const startedAt = Date.now();
        await waitUntilAllStored(cluster, 60_000);
        const storedAfterMs = Date.now() - startedAt;
        // Instances that found a name locked look again after the busy recheck: wait for that too,
        // so that a second order, if one were coming, would be counted. Two instances rechecking
        // together means one of them waits a second recheck.
        await waitUntilSettled(cluster, 2 * LOCKED_RECHECK_MS + SLACK_MS);

        const serials = await assertEachStoredOnce(cluster);
        const activity = assertPebbleIssuedStored(cluster, serials);
        assert.equal(activity.orders.length, 30, 'Pebble received 30 new orders');
        assert.equal(activity.finalized.length, 30, 'Pebble finalized 30 orders');
        assert.equal(activity.issued.size, 30, 'Pebble issued 30 certificates');
        for (const hostname of cluster.hostnames) {
          assert.equal(activity.validationsByName.get(hostname), 1, `${hostname}: one challenge submitted to Pebble`);
        }

        const issuers = issuingInstances(cluster);
        const perInstance = cluster.instances.map(
          (i) => `${i.name}=${[...issuers.values()].filter((n) => n === i.name).length}`,
        );
        const failedAttempts = cluster.instances.flatMap((i) => i.events('cert_failed')).length;
        t.diagnostic(
          `all 30 stored after ${seconds(storedAfterMs)}; Pebble: ${activity.orders.length} orders, ${activity.finalized.length} finalizations; ` +
            `issued by ${perInstance.join(' ')}; failed attempts (none reached Pebble as an order): ${failedAttempts}`,
        );
      },
    );

    test('validations reach every instance, and an instance answers tokens for orders another placed', async (t: TestContext) => {
      const issuers = issuingInstances(cluster);
      const validations = cluster.proxy.requests().filter(isPebbleValidation);
      assert.ok(
        validations.length >= 30,
        `at least one validation per hostname went through the proxy (saw ${validations.length})`,
      );
      for (const r of validations)
        assert.equal(r.status, 200, `${r.backend} answered ${r.host}${r.path} with ${r.status} ${r.error ?? ''}`);
      for (const instance of cluster.instances) {
        assert.ok(
          validations.some((r) => r.backend === instance.name),
          `${instance.name} answered at least one validation`,
        );
      }
      const byOther = validations.filter((r) => issuers.get(r.host) !== undefined && r.backend !== issuers.get(r.host));
      assert.ok(
        byOther.length > 0,
        'at least one validation was answered by an instance other than the one that placed the order',
      );
      const example = byOther[0]!;
      t.diagnostic(
        `${validations.length} validation requests; ${byOther.length} answered by a non-issuing instance, covering ` +
          `${new Set(byOther.map((r) => r.host)).size}/30 hostnames (e.g. ${example.host}: ordered by ${issuers.get(example.host)}, answered by ${example.backend})`,
      );
    });
  });

  describe('an instance joining the ACME account another instance registered first', () => {
    let cluster: Cluster;

    before(async () => {
      cluster = await startCluster({
        label: 'join',
        hostnameCount: 1,
        instanceCount: 1,
        holdValidations: false,
        // The shared account key is in the store and registered at the CA, but its URL is not
        // stored yet: what the instances that lose the race to create the account see while the
        // winner registers it, and what every instance sees for good if the winner dies between
        // registering and storing the URL.
        prepare: async ({ vault, pebble }) => {
          const accountKey = await acme.crypto.createPrivateEcdsaKey('P-256');
          const previousAgent: unknown = acme.axios.defaults.httpsAgent;
          acme.axios.defaults.httpsAgent = new HttpsAgent({ ca: pebble.caBundlePem });
          try {
            await new acme.Client({ directoryUrl: pebble.directoryUrl, accountKey }).createAccount({
              termsOfServiceAgreed: true,
            });
          } finally {
            acme.axios.defaults.httpsAgent = previousAgent;
          }
          const accounts = new VaultAccountStore({
            client: createVaultClient({ address: vault.address, token: vault.token }),
          });
          await accounts.create({
            directoryUrl: pebble.directoryUrl,
            accountKeyPem: accountKey.toString('utf8'),
            accountUrl: undefined,
            email: undefined,
            createdAt: new Date(),
          });
        },
      });
    });
    after(async () => {
      await cluster?.stop();
    });

    // The issuer looks the key up at the CA first (onlyReturnExisting) and stores the URL it gets,
    // instead of registering again: acme-client would follow a second registration of a known key
    // with an empty update, which Pebble refuses as malformed, and no attempt could ever succeed.
    test('its first order succeeds', { timeout: 60_000 }, async () => {
      const [instance] = cluster.instances;
      const outcome = await waitWithPebble(
        cluster.pebble,
        'the certificate in Vault or a failed attempt',
        () => {
          const failed = instance!.events('cert_failed');
          if (failed.length > 0) return failed.map((e) => `${e.hostname}: ${e.err}`);
          return storedCount(cluster) === 1 ? [] : undefined;
        },
        { timeoutMs: 30_000, intervalMs: 100 },
      );
      assert.deepEqual(outcome, [], 'no attempt failed');
    });
  });

  describe('kill -9 of an instance mid-issuance while it holds locks', () => {
    let cluster: Cluster;

    before(async () => {
      cluster = await startCluster({ label: 'crash', hostnameCount: 30, instanceCount: 3, holdValidations: true });
    });
    after(async () => {
      await cluster?.stop();
    });

    test(
      'the other instances complete every certificate once the dead session is reaped; nothing lost, nothing doubled',
      { timeout: 180_000 },
      async (t: TestContext) => {
        const victim = cluster.instances[1]!;
        const survivors = cluster.instances.filter((i) => i !== victim);
        const mid = await waitUntilMidIssuance(cluster, victim);

        victim.kill9();
        const exit = await victim.waitForExit(10_000);
        const killedAt = Date.now();
        assert.equal(exit.signal, 'SIGKILL');
        const lockedAtKill = (await locksHeldBy(cluster.consul, mid.sessionIds)).filter((k) =>
          cluster.hostnames.includes(k),
        );
        assert.ok(lockedAtKill.length > 0, 'the dead instance still holds certificate locks in Consul');
        const obtainedByVictim = new Set(victim.events('cert_obtained').map((e) => e.hostname));
        for (const hostname of lockedAtKill)
          assert.ok(!obtainedByVictim.has(hostname), `${hostname}: killed before it was obtained`);
        assert.ok(storedCount(cluster) === 0, 'nothing was stored while every validation was held');

        // Fabio would stop routing to the dead instance once its health check fails.
        cluster.proxy.removeBackend(victim.name);
        cluster.proxy.release();

        let reapedAfterMs: number | undefined;
        const watchReaping = async (): Promise<void> => {
          if (reapedAfterMs === undefined && (await locksHeldBy(cluster.consul, mid.sessionIds)).length === 0)
            reapedAfterMs = Date.now() - killedAt;
        };
        const boundMs = LOCK_FREED_AFTER_CRASH_MS + LOCKED_RECHECK_MS + SLACK_MS;
        await waitUntilAllStored(cluster, boundMs, watchReaping);
        const completedAfterMs = Date.now() - killedAt;
        await watchReaping();
        // Two instances that found a name locked may recheck together: one then waits a second recheck.
        await waitUntilSettled(cluster, 2 * LOCKED_RECHECK_MS + SLACK_MS);

        const serials = await assertEachStoredOnce(cluster);
        const activity = assertPebbleIssuedStored(cluster, serials);
        assert.equal(
          activity.finalized.length,
          30,
          'Pebble finalized exactly 30 orders (the dead instance finalized none)',
        );
        assert.equal(activity.issued.size, 30, 'Pebble issued exactly 30 certificates');
        const extraOrders = activity.orders.length - 30;
        assert.ok(
          extraOrders >= 0 && extraOrders <= lockedAtKill.length,
          `orders beyond one per name (${extraOrders}) are at most the dead instance's orders in flight (${lockedAtKill.length})`,
        );

        const issuers = issuingInstances(cluster);
        for (const hostname of lockedAtKill) {
          assert.ok(
            survivors.some((s) => s.name === issuers.get(hostname)),
            `${hostname}: obtained by a surviving instance`,
          );
        }
        const orphanTokens = (await kvEntries(cluster.consul, `${KV_PREFIX}challenges/`)).length;
        t.diagnostic(
          `killed ${victim.name} holding ${lockedAtKill.length} certificate locks (${lockedAtKill.join(', ')}); its session's locks were freed ` +
            `${reapedAfterMs === undefined ? 'at an unobserved time' : `after ${seconds(reapedAfterMs)}`}; every certificate stored ${seconds(completedAfterMs)} after the kill ` +
            `(bound ${seconds(boundMs)} = 2×TTL ${2 * SESSION_TTL_SECONDS} s + lock-delay ${LOCK_DELAY_SECONDS} s + busy recheck ${LOCKED_RECHECK_MS / 1000} s + ${SLACK_MS / 1000} s); ` +
            `Pebble: ${activity.orders.length} orders, ${activity.finalized.length} finalizations; challenge tokens the dead instance left in Consul KV: ${orphanTokens}`,
        );
      },
    );
  });

  describe('a session destroyed through the Consul API', () => {
    let cluster: Cluster;

    before(async () => {
      cluster = await startCluster({
        label: 'desession',
        hostnameCount: 12,
        instanceCount: 3,
        holdValidations: false,
        stallChallengeWritesOf: [0],
      });
    });
    after(async () => {
      await cluster?.stop();
    });

    test(
      "aborts that instance's orders in flight; every certificate is still written exactly once",
      { timeout: 150_000 },
      async (t: TestContext) => {
        const target = cluster.instances[0]!;
        const stalled = await waitUntilStalled(cluster, target);
        assert.equal(stalled.sessionIds.length, 1, 'one session per instance');
        const sessionId = stalled.sessionIds[0]!;

        const res = await fetch(`${cluster.consul.address}/v1/session/destroy/${sessionId}`, { method: 'PUT' });
        assert.equal((await res.text()).trim(), 'true');
        const destroyedAt = Date.now();
        assert.deepEqual(
          await locksHeldBy(cluster.consul, [sessionId]),
          [],
          'Consul released the locks at once (Behavior=release)',
        );

        // The locker learns it at its next renewal (every TTL/2) and aborts every lock's signal.
        await waitFor(
          `${target.name}'s locker to notice`,
          () => target.lines().some((l) => l.msg === 'session lost; abandoning its locks'),
          {
            timeoutMs: (SESSION_TTL_SECONDS / 2) * 1000 + 5_000,
            intervalMs: 50,
          },
        );
        const noticedAfterMs = Date.now() - destroyedAt;
        // Let the parked token writes through: each order then meets its aborted signal.
        cluster.consulProxies.get(target.name)!.release();
        const failed = await waitWithPebble(
          cluster.pebble,
          `${target.name} to abandon its ${stalled.inFlight.length} orders in flight`,
          () => {
            const failures = target.events('cert_failed').filter((e) => stalled.inFlight.includes(e.hostname!));
            return failures.length === stalled.inFlight.length ? failures : undefined;
          },
          { timeoutMs: 10_000, intervalMs: 50 },
        );
        for (const f of failed)
          assert.match(String(f.err), /ABORTED|LOCK_LOST/, `${f.hostname}: abandoned because its lock was lost`);
        for (const hostname of stalled.inFlight) {
          assert.equal(
            pebbleActivity(cluster.pebble.logs()).validationsByName.get(hostname) ?? 0,
            0,
            `${hostname}: Pebble was never asked to validate the abandoned order`,
          );
        }
        assertTokensRemoved(cluster, target, stalled.tokenPaths);

        await waitUntilAllStored(cluster, LOCK_DELAY_SECONDS * 1000 + LOCKED_RECHECK_MS + SLACK_MS);
        // Exactly-once after the queues drain is shown by the first two scenarios; here it is
        // checked once nothing is in flight (a full drain costs another busy recheck).
        await waitUntilNoneIssuing(cluster);

        const serials = await assertEachStoredOnce(cluster);
        const activity = assertPebbleIssuedStored(cluster, serials);
        assert.equal(
          activity.finalized.length,
          12,
          'Pebble finalized exactly one order per name: the abandoned orders never were',
        );
        assert.ok(activity.orders.length >= 12 + stalled.inFlight.length, 'the abandoned orders were placed again');
        assert.deepEqual(
          await kvEntries(cluster.consul, `${KV_PREFIX}challenges/`),
          [],
          'no challenge token left behind',
        );
        t.diagnostic(
          `destroyed ${target.name}'s session with ${stalled.inFlight.length} orders in flight; its locker noticed ${seconds(noticedAfterMs)} later ` +
            `(renewal every ${SESSION_TTL_SECONDS / 2} s) and abandoned them; Pebble: ${activity.orders.length} orders, ${activity.finalized.length} finalizations`,
        );
      },
    );

    test(
      'a worker whose session was destroyed cannot overwrite what another instance wrote meanwhile (check-and-set)',
      { timeout: 60_000 },
      async (t: TestContext) => {
        // Two workers as two instances would run them, with real ConsulLockers on this Consul and
        // the real Vault store. A's issuer ignores the abort once started, like acme-client's
        // last requests, which cannot be aborted: the only thing between it and a late write is
        // the check-and-set.
        const consul = createConsulClient({ address: cluster.consul.address });
        const store = new VaultCertificateStore({
          client: createVaultClient({ address: cluster.vault.address, token: cluster.vault.token }),
          mount: VAULT_MOUNT,
          prefix: 'late-write/certs',
        });
        const lockPrefix = 'late-write/locks/';
        const lockerA = new ConsulLocker({
          consul,
          prefix: lockPrefix,
          sessionName: 'late-write A',
          sessionTtlSeconds: SESSION_TTL_SECONDS,
          lockDelaySeconds: LOCK_DELAY_SECONDS,
        });
        const lockerB = new ConsulLocker({
          consul,
          prefix: lockPrefix,
          sessionName: 'late-write B',
          sessionTtlSeconds: SESSION_TTL_SECONDS,
          lockDelaySeconds: LOCK_DELAY_SECONDS,
        });
        const hostname = 'late.ha.test';
        const desired: DesiredCertificate = {
          hostname,
          hostnames: [hostname],
          directoryUrl: TEST_DIRECTORY_URL,
          keyType: 'ec-p256',
        };

        const issueFor = async (request: IssueRequest): Promise<IssuedCertificate> => {
          const { certPem, keyPem } = await makeTestCertificate({ hostnames: request.hostnames });
          const leaf = splitPem(certPem)[0]!;
          return {
            certPem,
            keyPem,
            notBefore: new Date(leaf.validFrom),
            notAfter: new Date(leaf.validTo),
            issuer: TEST_CA_NAME,
            directoryUrl: TEST_DIRECTORY_URL,
            serial: leaf.serialNumber.toLowerCase().replace(/^0+/, ''),
          };
        };
        const noPendingOrders = async (): Promise<ResumeOutcome> => ({
          kind: 'gone',
          why: 'this test issuer keeps none',
        });
        const revokeNothing = async (): Promise<never> => {
          throw new Error('this test issuer revokes nothing');
        };
        let signalSeenByA: AbortSignal | undefined;
        let letAFinish: () => void = () => undefined;
        const aMayFinish = new Promise<void>((resolve) => (letAFinish = resolve));
        const slowIssuer: Issuer = {
          directoryUrl: TEST_DIRECTORY_URL,
          async issue(request, _hooks, signal) {
            signalSeenByA = signal;
            await aMayFinish;
            return issueFor(request);
          },
          resume: noPendingOrders,
          revoke: revokeNothing,
        };
        const bCertificates: string[] = [];
        const fastIssuer: Issuer = {
          directoryUrl: TEST_DIRECTORY_URL,
          async issue(request) {
            const issued = await issueFor(request);
            bCertificates.push(issued.certPem);
            return issued;
          },
          resume: noPendingOrders,
          revoke: revokeNothing,
        };
        const worker = (issuer: Issuer, locker: ConsulLocker): CertificateWorker =>
          new CertificateWorker({
            store,
            issuer,
            locker,
            clock: systemClock,
            logger: silentLogger(),
            planOptions: DEFAULT_PLAN_OPTIONS,
            desired: { desiredFor: (id) => (id === hostname ? desired : undefined), undeclaredSince: () => undefined },
            index: { facts: () => undefined, has: () => false },
            events: new EngineEvents(silentLogger()),
            storeHealth: new StoreHealth({ store, clock: systemClock, logger: silentLogger() }),
          });
        const run = (): JobRun => ({ hostname, reason: 'Missing', attempt: 1, signal: new AbortController().signal });

        try {
          const aRun = worker(slowIssuer, lockerA).process(run());
          const aOutcome = aRun.then(
            () => undefined,
            (err: unknown) => err,
          );
          await waitFor('A to be issuing under its lock', () => signalSeenByA !== undefined, {
            timeoutMs: 10_000,
            intervalMs: 20,
          });
          const [entry] = await kvEntries(cluster.consul, `${lockPrefix}${certificateLockKey(hostname)}`);
          assert.ok(entry?.Session, 'A holds the lock with a session');
          assert.equal(entry.Session, lockerA.sessionId);

          const res = await fetch(`${cluster.consul.address}/v1/session/destroy/${entry.Session}`, { method: 'PUT' });
          assert.equal((await res.text()).trim(), 'true');
          const destroyedAt = Date.now();
          await waitFor("A's lock signal to fire", () => signalSeenByA?.aborted === true, {
            timeoutMs: (SESSION_TTL_SECONDS / 2) * 1000 + 5_000,
            intervalMs: 50,
          });
          const abortedAfterMs = Date.now() - destroyedAt;

          // B takes the lock once the lock-delay is over, issues and writes version 1.
          const workerB = worker(fastIssuer, lockerB);
          await waitFor(
            'B to obtain the certificate',
            async () => {
              const outcome = await workerB.process(run());
              return outcome.kind === 'done' && (await store.get(hostname))?.version === 1;
            },
            { timeoutMs: LOCK_DELAY_SECONDS * 1000 + 10_000, intervalMs: 500 },
          );
          const writesBefore = cluster.vault.requests().length;

          // A's issuer now returns: the worker tries to store with cas = 0, the version it read.
          letAFinish();
          const err = await aOutcome;
          assert.ok(err instanceof ConsulAcmeError, `A's work fails (got ${String(err)})`);
          assert.equal(err.code, 'LOCK_LOST');
          const cause = err.cause;
          assert.ok(
            cause instanceof ConsulAcmeError && cause.code === 'STORE_CONFLICT',
            `the late write was refused by check-and-set (cause: ${String(cause)})`,
          );

          const raw = cluster.vault.readRaw(VAULT_MOUNT, `late-write/certs/${hostname}`);
          assert.equal(raw?.current, 1, 'still version 1');
          assert.equal(
            (raw.versions[1]!.data as { cert: string }).cert,
            bCertificates[0],
            "B's certificate is the one stored",
          );
          const lateWrites = cluster.vault
            .requests()
            .slice(writesBefore)
            .filter((r) => /^(PUT|POST) \/v1\/secret\/data\/late-write\//.test(r));
          assert.deepEqual(lateWrites, [], 'A sent no write to Vault');
          t.diagnostic(
            `A's lock signal fired ${seconds(abortedAfterMs)} after the destroy; its late put(cas=0) failed with STORE_CONFLICT, Vault unchanged at version 1`,
          );
        } finally {
          letAFinish();
          await Promise.all([lockerA.close(), lockerB.close()]);
        }
      },
    );
  });

  describe('SIGTERM during issuance', () => {
    let cluster: Cluster;

    before(async () => {
      cluster = await startCluster({
        label: 'sigterm',
        hostnameCount: 12,
        instanceCount: 3,
        holdValidations: false,
        stallChallengeWritesOf: [2],
      });
    });
    after(async () => {
      await cluster?.stop();
    });

    test(
      'leaves no lock held and, once the others are done, no challenge token behind',
      { timeout: 150_000 },
      async (t: TestContext) => {
        const target = cluster.instances[2]!;
        const stalled = await waitUntilStalled(cluster, target);

        // Fabio stops routing to an instance that deregisters; take it out first so that no
        // validation races its listener closing.
        cluster.proxy.removeBackend(target.name);
        const termAt = Date.now();
        target.sigterm();
        await waitFor(
          `${target.name} to give up waiting for its orders`,
          () => target.lines().some((l) => l.msg === 'shutdown timeout reached, abandoning orders in flight'),
          {
            timeoutMs: SHUTDOWN_TIMEOUT_MS + 5_000,
            intervalMs: 50,
          },
        );
        // Let the parked token writes through: the tokens land in Consul, then the aborted orders remove them.
        cluster.consulProxies.get(target.name)!.release();
        const exit = await target.waitForExit(20_000);
        const exitedAfterMs = Date.now() - termAt;
        assert.equal(exit.code, 0, `exit status 0 (got ${exit.code ?? exit.signal})\n${target.logs().slice(-4000)}`);

        assert.deepEqual(
          await locksHeldBy(cluster.consul, stalled.sessionIds),
          [],
          'no lock entry carries its session',
        );
        assert.deepEqual(await sessionIdsOf(cluster.consul, target), [], 'its session is destroyed');
        const abandoned = target.events('cert_failed').filter((e) => stalled.inFlight.includes(e.hostname!));
        assert.equal(abandoned.length, stalled.inFlight.length, 'each order in flight was abandoned (and logged)');
        for (const f of abandoned) assert.match(String(f.err), /ABORTED/, `${f.hostname}: aborted by the shutdown`);
        assertTokensRemoved(cluster, target, stalled.tokenPaths);

        await waitUntilAllStored(cluster, LOCKED_RECHECK_MS + SLACK_MS);
        await waitUntilNoneIssuing(cluster);
        const tokensAfter = await kvEntries(cluster.consul, `${KV_PREFIX}challenges/`);
        assert.deepEqual(
          tokensAfter.map((e) => e.Key),
          [],
          'no challenge token left in Consul KV',
        );

        const serials = await assertEachStoredOnce(cluster);
        const activity = assertPebbleIssuedStored(cluster, serials);
        assert.equal(activity.finalized.length, 12, 'Pebble finalized exactly one order per name');
        t.diagnostic(
          `SIGTERM with ${stalled.inFlight.length} orders in flight: exited 0 after ${seconds(exitedAfterMs)} (shutdown timeout ${SHUTDOWN_TIMEOUT_MS} ms), ` +
            `locks released, session destroyed, ${stalled.tokenPaths.length} tokens written and removed; Pebble: ${activity.orders.length} orders, ${activity.finalized.length} finalizations`,
        );
      },
    );
  });
});
