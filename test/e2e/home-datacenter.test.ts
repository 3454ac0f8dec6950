/**
 * One Consul datacenter owns the coordination state (CONSUL_ACME_HOME_DATACENTER). Two real
 * Consul 1.8.7 agents, each its own datacenter (dc1, dc2), joined over the WAN; one instance in
 * each, both declaring the same name, sharing one certificate store and ACME account, with dc1 as
 * the home datacenter:
 * - the name is ordered exactly once: the lock, the challenge token (answered by the other
 *   datacenter's instance), the budgets and the backoff state are all in dc1;
 * - the dc2 instance sends `?dc=dc1` on every KV and session request and none on its agent and
 *   catalog requests, and its session lives in dc1 (on a server node, TTL only);
 * - a home datacenter Consul does not know keeps the instance not ready with Consul's own error.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { StatusReport } from '../../src/engine/status.js';
import { startConsul, type ConsulInstance } from '../support/consul.js';
import { freePort } from '../support/net.js';
import { pebbleActivity } from '../support/pebble-order-counter.js';
import { startPebble, type PebbleInstance } from '../support/pebble.js';
import { removeOnExit } from '../support/processes.js';
import { startRoundRobinProxy, type RoundRobinProxy } from '../support/round-robin-proxy.js';
import { startService, type RunningService } from '../support/service-harness.js';
import { waitFor } from '../support/wait.js';

const SHARED = 'both-datacenters.example.test';

async function status(svc: RunningService): Promise<StatusReport> {
  return (await (await fetch(`${svc.listening.adminUrl}/status`)).json()) as StatusReport;
}

async function register(consul: ConsulInstance, id: string, hostnames: string[]): Promise<void> {
  const res = await fetch(`${consul.address}/v1/agent/service/register`, {
    method: 'PUT',
    body: JSON.stringify({ ID: id, Name: id, Port: 9000, Tags: hostnames.map((h) => `urlprefix-${h}/`) }),
  });
  assert.equal(res.status, 200);
}

describe('two datacenters, one home datacenter for the coordination state', () => {
  let dc1: ConsulInstance;
  let dc2: ConsulInstance;
  let pebble: PebbleInstance;
  let proxy: RoundRobinProxy;
  let inDc1: RunningService;
  let inDc2: RunningService;
  let storeDir: string;

  before(async () => {
    dc1 = await startConsul({ datacenter: 'dc1', wan: true });
    dc2 = await startConsul({ datacenter: 'dc2', wan: true });
    await dc2.joinWan(dc1);
    const challengePort = await freePort();
    pebble = await startPebble({ httpPort: challengePort });
    // Records what the dc2 instance asks its agent.
    proxy = await startRoundRobinProxy([{ name: 'dc2-agent', port: dc2.httpPort }]);
    storeDir = mkdtempSync(join(tmpdir(), 'consul-acme-shared-store-'));
    removeOnExit(storeDir);
    await register(dc1, 'web-dc1', [SHARED]);
    await register(dc2, 'web-dc2', [SHARED]);
    const common = {
      directoryUrl: pebble.directoryUrl,
      caBundlePem: pebble.caBundlePem,
      dnsServer: pebble.dnsServer,
    };
    // The dc1 instance listens where Pebble validates; it answers the tokens either instance puts.
    inDc1 = await startService({
      ...common,
      consulAddress: dc1.address,
      challengePort,
      env: {
        CONSUL_ACME_HOME_DATACENTER: 'dc1',
        CONSUL_ACME_FILE_STORE_DIR: storeDir,
        CONSUL_ACME_INSTANCE_NAME: 'in-dc1',
        CONSUL_ACME_PREFLIGHT: 'false',
      },
    });
    inDc2 = await startService({
      ...common,
      consulAddress: proxy.url,
      challengePort: await freePort(),
      env: {
        CONSUL_ACME_HOME_DATACENTER: 'dc1',
        CONSUL_ACME_FILE_STORE_DIR: storeDir,
        CONSUL_ACME_INSTANCE_NAME: 'in-dc2',
        CONSUL_ACME_PREFLIGHT: 'false',
      },
    });
  });

  after(async () => {
    await inDc2?.stop();
    await inDc1?.stop();
    await proxy?.close();
    await pebble?.stop();
    await dc2?.stop();
    await dc1?.stop();
  });

  test('the name both datacenters declare is ordered exactly once', async () => {
    for (const svc of [inDc1, inDc2]) {
      await waitFor(
        `${SHARED} valid at ${svc.listening.adminUrl}`,
        async () =>
          (await status(svc)).certificates.find((c) => c.hostname === SHARED)?.state === 'valid' ? true : undefined,
        { timeoutMs: 60_000 },
      );
    }
    const activity = pebbleActivity(pebble.logs());
    assert.equal(activity.orders.length, 1, 'one order at the CA');
    assert.equal(activity.validationsByName.get(SHARED), 1, 'one validation');
  });

  test('the dc2 instance sends ?dc=dc1 on every KV and session request, and none on its agent requests and catalog watch', () => {
    const requests = proxy.requests().map((r) => r.path);
    // The server node a session in dc1 is made on is looked up in dc1 too.
    const coordination = requests.filter((p) => /^\/v1\/(kv|session)\/|^\/v1\/catalog\/service\/consul\?/.test(p));
    const local = requests.filter((p) => /^\/v1\/agent\/|^\/v1\/catalog\/services/.test(p));
    assert.ok(coordination.length > 0 && local.length > 0, `requests seen: ${requests.length}`);
    assert.deepEqual(
      coordination.filter((p) => !/[?&]dc=dc1(&|$)/.test(p)),
      [],
      'every KV and session request names the home datacenter',
    );
    assert.deepEqual(
      local.filter((p) => /[?&]dc=/.test(p)),
      [],
      'the catalog watch and the registrations stay local',
    );
  });

  test("the dc2 instance's session lives in dc1, on a server node, with no node checks", async () => {
    const sessions = (await (await fetch(`${dc1.address}/v1/session/list`)).json()) as Array<{
      Name: string;
      Node: string;
      NodeChecks: string[] | null;
    }>;
    const ours = sessions.find((s) => s.Name === 'consul-acme in-dc2');
    assert.ok(ours, `sessions in dc1: ${sessions.map((s) => s.Name).join(', ')}`);
    assert.equal(ours.Node, dc1.nodeName);
    assert.deepEqual(ours.NodeChecks ?? [], []);
    const inDc2Sessions = (await (await fetch(`${dc2.address}/v1/session/list`)).json()) as unknown[];
    assert.deepEqual(inDc2Sessions, [], 'nothing of ours in dc2');
    const dc2Keys = await fetch(`${dc2.address}/v1/kv/consul-acme/?keys`);
    assert.equal(dc2Keys.status, 404, 'no coordination state in dc2');
  });
});

describe('a home datacenter Consul does not know', () => {
  let consul: ConsulInstance;
  let svc: RunningService;

  before(async () => {
    consul = await startConsul();
    svc = await startService({
      consulAddress: consul.address,
      directoryUrl: 'https://127.0.0.1:9/directory',
      caBundlePem: '',
      challengePort: await freePort(),
      env: { CONSUL_ACME_HOME_DATACENTER: 'nowhere', CONSUL_ACME_RETRY_SCHEDULE: '1s' },
    });
  });

  after(async () => {
    await svc?.stop();
    await consul?.stop();
  });

  test("keeps the instance not ready, with Consul's own error", async () => {
    const error = await waitFor('the self-check error', async () => (await status(svc)).permissions?.error);
    assert.match(error, /consul: CONSUL_UNAVAILABLE: kv put consul-acme\/permission-check\/.*No path to datacenter/);
    assert.equal((await fetch(`${svc.listening.adminUrl}/health/ready`)).status, 503);
  });
});
