/**
 * Through Fabio, a newly tagged name must not wait for the retry schedule's
 * first step (1 minute) because the pre-flight check ran before the name's challenge route was live.
 *
 * The set-up a new user would have, on one machine:
 * - a real Consul 1.8.7, the Vault stand-in as the certificate store, a real Pebble 2.4.0;
 * - the Fabio-rules router (test/support/fabio-router.ts) in front of everything: Pebble validates
 *   HTTP-01 on the router's port, and the pre-flight probe goes through it too
 *   (CONSUL_ACME_PREFLIGHT_HTTP_PORT, CONSUL_ACME_PREFLIGHT_DNS_SERVERS = Pebble's DNS server);
 * - two consul-acme processes with their own challenge ports, registering themselves in Consul
 *   (one `urlprefix-<name>/.well-known/acme-challenge/` tag per name, and their ready check);
 * - two apps with their own backends answering `app <name>` on every path, registered with passing
 *   checks: `app` claims `app.example.test/` and `app.example.test/.well-known/` (so it would take
 *   the challenge path if consul-acme's longer route were missing), `other` claims
 *   `other.example.test/`;
 * - every other setting at its default, the retry schedule (1 min first) included.
 *
 * What must hold:
 * 1. names tagged as soon as both instances are ready (their first catalog read done) are stored
 *    within 10 s of their tag. The instances registered themselves a moment before; Consul runs a
 *    new check first after a random part of its interval (docs/protocols.md §1.3), so their ready
 *    checks have usually not run yet;
 * 2. so is a name tagged after one of the two instances stopped (SIGTERM), on the instance left,
 *    which has been running for a while;
 * 3. every validation request from the CA reached a consul-acme instance and was answered 200 with
 *    the key authorization of its token. The CA's requests are the URLs Pebble's log says it
 *    fetched (real challenge tokens), checked against their User-Agent; every other request on the
 *    challenge path must be a pre-flight probe (User-Agent `consul-acme-preflight`);
 * 4. the apps' own requests (`/` and `/.well-known/other`) still reach the apps.
 *
 * A name that takes longer than 10 s is still watched for up to OBSERVE_MS, so that a failure says
 * how long it took and why (the pre-flight results and what the router did with each probe). The
 * tag-to-certificate seconds are printed with t.diagnostic either way. FABIO_TEST_LOG_DIR=<dir>
 * keeps every process's output and the router's request log there.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import { startConsul, type ConsulInstance } from '../support/consul.js';
import {
  ACME_CHALLENGE_PATH,
  answeredKeyAuthorization,
  challengeRequestOrigin,
  registerRoutedService,
  routeTag,
  startAppBackend,
  startFabioRouter,
  type AppBackend,
  type FabioRouter,
  type RoutedRequest,
} from '../support/fabio-router.js';
import { spawnInstance, type InstanceProcess, type LogLine } from '../support/instance-process.js';
import { freePort } from '../support/net.js';
import { waitWithPebble } from '../support/pebble-order-counter.js';
import { startPebble, type PebbleInstance } from '../support/pebble.js';
import { startVaultStandin, type VaultStandin } from '../support/vault-standin.js';
import { waitFor } from '../support/wait.js';

/** What the issue promises: tag to certificate in the store. */
const TAG_TO_CERTIFICATE_MS = 10_000;
/** How long a late name is still watched, to say how late it was (the default first retry is 1 min). */
const OBSERVE_MS = 100_000;
const VAULT_MOUNT = 'secret';
const VAULT_PREFIX = 'fabio/certs';
const SERVICE_NAME = 'consul-acme';
const SHUTDOWN_TIMEOUT_MS = 2_000;

const APP_HOST = 'app.example.test';
const OTHER_HOST = 'other.example.test';
const LATER_HOST = 'later.example.test';
/** User-Agent of the test's own requests to the apps. */
const APP_CLIENT = 'app-client';

interface World {
  dir: string;
  consul: ConsulInstance;
  vault: VaultStandin;
  router: FabioRouter;
  pebble: PebbleInstance;
  apps: { app: AppBackend; other: AppBackend };
  instances: InstanceProcess[];
  /** Epoch ms each name was tagged. */
  taggedAt: Map<string, number>;
}

let world: Partial<World> & { instances: InstanceProcess[]; taggedAt: Map<string, number> } = {
  instances: [],
  taggedAt: new Map(),
};

function w(): World {
  return world as World;
}

/** Epoch ms the first version of `hostname`'s certificate was written to Vault; undefined if none yet. */
function storedAt(hostname: string): number | undefined {
  const secret = w().vault.readRaw(VAULT_MOUNT, `${VAULT_PREFIX}/${hostname}`);
  const first = secret?.versions[1];
  return first ? Date.parse(first.created_time) : undefined;
}

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`;
}

function instanceOf(request: RoutedRequest): string {
  if (!request.backend) return 'no route';
  return `${request.backend.service}/${request.backend.instanceId}`;
}

/** Registers an app instance (id = name) on its backend, with one passing TTL check, carrying `tags`. */
async function registerApp(name: 'app' | 'other', tags: string[]): Promise<void> {
  await registerRoutedService(w().consul.address, { id: name, port: w().apps[name].port, tags });
}

/**
 * How a name went, from its tag on: when its challenge route to consul-acme became live in the
 * router, what each pre-flight probe and CA validation reached, and what the instances logged
 * about it (pre-flight failures and retries).
 */
function story(hostname: string): string[] {
  const tagged = w().taggedAt.get(hostname) ?? 0;
  const events: Array<[number, string]> = [];
  const routeChanges = w()
    .router.routeChanges()
    .filter((c) => c.host === hostname && c.path === ACME_CHALLENGE_PATH && c.service === SERVICE_NAME);
  for (const c of routeChanges) events.push([c.at, `challenge route ${c.change}: ${c.instanceId}`]);
  for (const r of w().router.requests()) {
    if (r.host !== hostname) continue;
    const origin = challengeRequestOrigin(r);
    if (origin === 'other') continue;
    events.push([
      r.receivedAt,
      `${origin === 'ca' ? 'CA validation' : 'pre-flight probe'} → ${instanceOf(r)}` +
        ` (route ${r.route ? `${r.route.host}${r.route.path}` : 'none'}) answered ${r.status ?? 'nothing'}`,
    ]);
  }
  for (const instance of w().instances) {
    for (const line of instance.lines()) {
      if (line.hostname !== hostname) continue;
      if (line.err === undefined && line.event !== 'cert_obtained') continue;
      const retry = typeof line.retry_in_ms === 'number' ? ` retry in ${seconds(line.retry_in_ms)}` : '';
      events.push([Date.parse(line.time), `${instance.name}: ${line.event ?? line.msg}${retry} ${line.err ?? ''}`]);
    }
  }
  const stored = storedAt(hostname);
  if (stored !== undefined) events.push([stored, 'stored in Vault']);
  const notes = [
    ...(routeChanges.length === 0 ? ['(the router never had a challenge route to consul-acme for it)'] : []),
    ...(stored === undefined ? ['(not stored)'] : []),
  ];
  return [...events.sort((a, b) => a[0] - b[0]).map(([ms, text]) => `+${seconds(ms - tagged)} ${text}`), ...notes];
}

/** Waits (up to OBSERVE_MS from the tag) for each name's certificate; prints and returns tag-to-certificate ms. */
async function tagToCertificate(t: TestContext, hostnames: string[]): Promise<Map<string, number>> {
  const elapsed = new Map<string, number>();
  await Promise.all(
    hostnames.map(async (hostname) => {
      const tagged = w().taggedAt.get(hostname)!;
      try {
        const stored = await waitWithPebble(
          w().pebble,
          `the certificate of ${hostname} in Vault`,
          () => storedAt(hostname),
          { timeoutMs: Math.max(0, tagged + OBSERVE_MS - Date.now()), intervalMs: 100 },
        );
        elapsed.set(hostname, stored - tagged);
      } catch (err) {
        const message = err instanceof Error ? err.message : String(err);
        throw new Error(`${message}\n${hostname} since its tag:\n  ${story(hostname).join('\n  ')}`, { cause: err });
      }
    }),
  );
  for (const hostname of hostnames) {
    const tagged = w().taggedAt.get(hostname)!;
    const live = w().router.routeLiveAt(hostname, ACME_CHALLENGE_PATH, SERVICE_NAME, tagged);
    const failures = preflightFailures(hostname).length;
    t.diagnostic(
      `${hostname}: tag to certificate ${seconds(elapsed.get(hostname)!)}; challenge route live in the router ` +
        `${live !== undefined ? `${seconds(live - tagged)} after the tag` : 'never'}; ${failures} pre-flight failure(s)`,
    );
  }
  return elapsed;
}

function assertWithinPromise(elapsed: Map<string, number>): void {
  const late = [...elapsed].filter(([, ms]) => ms > TAG_TO_CERTIFICATE_MS);
  assert.deepEqual(
    late.map(([hostname, ms]) => `${hostname} ${seconds(ms)}`),
    [],
    late
      .map(
        ([hostname, ms]) =>
          `${hostname} was stored ${seconds(ms)} after its tag (promise: ${seconds(TAG_TO_CERTIFICATE_MS)}):\n  ` +
          story(hostname).join('\n  '),
      )
      .join('\n'),
  );
}

/** Each HTTP-01 request Pebble's log says it made: `Attempting to validate w/ HTTP: <url>`. */
function pebbleHttpAttempts(logs: string): Array<{ host: string; path: string }> {
  return [...logs.matchAll(/Attempting to validate w\/ HTTP: (http:\/\/\S+)/g)].map((m) => {
    const url = new URL(m[1]!);
    return { host: url.hostname, path: `${url.pathname}${url.search}` };
  });
}

function preflightFailures(hostname: string): LogLine[] {
  return w().instances.flatMap((i) =>
    i
      .lines()
      .filter((l) => l.hostname === hostname && l.event === 'retry_scheduled' && /PREFLIGHT_FAILED/.test(l.err ?? '')),
  );
}

describe('through a Fabio-rules router, with two instances and two apps', () => {
  before(async () => {
    world.dir = mkdtempSync(join(tmpdir(), 'consul-acme-fabio-'));
    world.consul = await startConsul();
    world.vault = await startVaultStandin();
    world.router = await startFabioRouter({ consulAddress: world.consul.address });
    world.pebble = await startPebble({ httpPort: world.router.port });
    world.apps = { app: await startAppBackend('app'), other: await startAppBackend('other') };
    const caFile = join(world.dir, 'pebble-ca.pem');
    writeFileSync(caFile, world.pebble.caBundlePem);

    const env: Record<string, string> = {
      CONSUL_HTTP_ADDR: world.consul.address,
      CONSUL_ACME_DIRECTORY_URL: world.pebble.directoryUrl,
      CONSUL_ACME_CA_BUNDLE: caFile,
      CONSUL_ACME_STORE: 'vault',
      VAULT_ADDR: world.vault.address,
      VAULT_TOKEN: world.vault.token,
      CONSUL_ACME_PREFLIGHT: 'true',
      CONSUL_ACME_PREFLIGHT_DNS_SERVERS: world.pebble.dnsServer,
      CONSUL_ACME_PREFLIGHT_HTTP_PORT: String(world.router.port),
      CONSUL_ACME_REGISTER_SERVICE: 'true',
      CONSUL_ACME_SERVICE_NAME: SERVICE_NAME,
      CONSUL_ACME_SHUTDOWN_TIMEOUT_MS: String(SHUTDOWN_TIMEOUT_MS),
      CONSUL_ACME_LOG_LEVEL: 'info',
    };
    // Started together, so that both have just registered when the names are tagged.
    const spawned = await Promise.allSettled(
      ['fabio-1', 'fabio-2'].map(async (name) =>
        spawnInstance({ name, challengePort: await freePort(), adminPort: await freePort(), env }),
      ),
    );
    for (const r of spawned) if (r.status === 'fulfilled') world.instances.push(r.value);
    const failed = spawned.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason instanceof Error ? failed.reason : new Error(String(failed.reason));
    // Running: each instance has read the catalog once (its ready endpoint says so).
    for (const instance of world.instances) {
      await waitFor(
        `${instance.name} ready`,
        async () => (await fetch(`${instance.adminUrl}/health/ready`)).status === 200,
        { timeoutMs: 20_000 },
      );
    }
  });

  after(async () => {
    const logDir = process.env.FABIO_TEST_LOG_DIR;
    if (logDir) {
      mkdirSync(logDir, { recursive: true });
      for (const i of world.instances) writeFileSync(join(logDir, `${i.name}.log`), i.logs());
      if (world.pebble) writeFileSync(join(logDir, 'pebble.log'), world.pebble.logs());
      if (world.router) {
        // Bodies may be key authorizations: the request log keeps only what identifies a request.
        const requests = world.router.requests().map(({ body: _body, ...rest }) => rest);
        writeFileSync(join(logDir, 'router-requests.json'), JSON.stringify(requests, null, 1));
        writeFileSync(join(logDir, 'router-changes.json'), JSON.stringify(world.router.routeChanges(), null, 1));
      }
    }
    await Promise.all(
      world.instances.map(async (i) => {
        i.sigterm();
        await i.waitForExit(SHUTDOWN_TIMEOUT_MS + 15_000).catch(() => i.kill9());
      }),
    );
    await world.router?.close();
    await world.pebble?.stop();
    await Promise.all([world.apps?.app.close(), world.apps?.other.close()]);
    await world.consul?.stop();
    await world.vault?.close();
    if (world.dir) rmSync(world.dir, { recursive: true, force: true });
    world = { instances: [], taggedAt: new Map() };
  });

  it('stores newly tagged names within 10 s of their tag, one of them on an app that claims /.well-known/', async (t) => {
    const taggedAt = Date.now();
    w().taggedAt.set(APP_HOST, taggedAt);
    w().taggedAt.set(OTHER_HOST, taggedAt);
    await registerApp('app', [routeTag(APP_HOST), routeTag(APP_HOST, '/.well-known/')]);
    await registerApp('other', [routeTag(OTHER_HOST)]);

    const elapsed = await tagToCertificate(t, [APP_HOST, OTHER_HOST]);
    for (const hostname of [APP_HOST, OTHER_HOST]) {
      const first = preflightFailures(hostname)[0];
      if (first) t.diagnostic(`${hostname}: first pre-flight failure: ${first.err}`);
    }
    assertWithinPromise(elapsed);
  });

  it('stores a name tagged after one of the two instances stopped within 10 s of its tag', async (t) => {
    const [stopped, remaining] = w().instances as [InstanceProcess, InstanceProcess];
    stopped.sigterm();
    const exit = await stopped.waitForExit(SHUTDOWN_TIMEOUT_MS + 15_000);
    assert.equal(exit.code, 0, `${stopped.name} exited ${exit.code ?? exit.signal}`);
    const stoppedId = `${SERVICE_NAME}-${stopped.name}`;
    // It deregistered: the router no longer sends anything to it.
    await waitFor(
      `the router to drop ${stoppedId}\n${w().router.describe()}`,
      () =>
        !w()
          .router.table()
          .some((r) => r.targets.some((target) => target.instanceId === stoppedId)),
      { timeoutMs: 10_000, intervalMs: 50 },
    );
    t.diagnostic(`${stopped.name} stopped; ${remaining.name} is left`);

    const taggedAt = Date.now();
    w().taggedAt.set(LATER_HOST, taggedAt);
    await registerApp('other', [routeTag(OTHER_HOST), routeTag(LATER_HOST)]);

    const elapsed = await tagToCertificate(t, [LATER_HOST]);
    const first = preflightFailures(LATER_HOST)[0];
    if (first) t.diagnostic(`${LATER_HOST}: first pre-flight failure: ${first.err}`);
    assertWithinPromise(elapsed);
    // Only the remaining instance can have answered the CA for it.
    const validations = w()
      .router.requests()
      .filter((r) => r.host === LATER_HOST && challengeRequestOrigin(r) === 'ca');
    assert.ok(validations.length > 0, `no CA validation of ${LATER_HOST} went through the router`);
    assert.deepEqual([...new Set(validations.map(instanceOf))], [`${SERVICE_NAME}/${SERVICE_NAME}-${remaining.name}`]);
  });

  it('sent every validation request of the CA to a consul-acme instance, which answered 200 with its key authorization', (t) => {
    const hostnames = [APP_HOST, OTHER_HOST, LATER_HOST];
    // The real challenges: the URLs Pebble's log says it fetched (docs/protocols.md §5).
    const attempts = pebbleHttpAttempts(w().pebble.logs()).filter((a) => hostnames.includes(a.host));
    const attemptCounts = new Map<string, number>();
    for (const a of attempts)
      attemptCounts.set(`${a.host}${a.path}`, (attemptCounts.get(`${a.host}${a.path}`) ?? 0) + 1);
    const challengeRequests = w()
      .router.requests()
      .filter((r) => hostnames.includes(r.host) && r.path.startsWith(ACME_CHALLENGE_PATH));
    const validations = challengeRequests.filter((r) => attemptCounts.has(`${r.host}${r.path}`));
    const others = challengeRequests.filter((r) => !attemptCounts.has(`${r.host}${r.path}`));
    t.diagnostic(
      `${validations.length} CA validation request(s) and ${others.length} other challenge-path request(s) through the router; ` +
        `the others reached: ${[...new Set(others.map((p) => `${instanceOf(p)} ${p.status}`))].join(', ')}`,
    );

    for (const hostname of hostnames) {
      assert.ok(
        attempts.some((a) => a.host === hostname),
        `Pebble's log shows no validation of ${hostname}`,
      );
    }
    // Each request Pebble made went through the router, and was told apart by its User-Agent.
    for (const [url, count] of attemptCounts) {
      assert.equal(
        validations.filter((r) => `${r.host}${r.path}` === url).length,
        count,
        `requests for one challenge of ${url.split('/')[0]}: seen by the router vs made by Pebble`,
      );
    }
    assert.deepEqual(
      validations.filter((r) => challengeRequestOrigin(r) !== 'ca').map((r) => `${r.host} ${r.userAgent}`),
      [],
      "CA validations without Pebble's User-Agent",
    );
    // Everything else on the challenge path was consul-acme's pre-flight probe, never answered with a key authorization.
    assert.deepEqual(
      others
        .filter((r) => challengeRequestOrigin(r) !== 'preflight' || answeredKeyAuthorization(r))
        .map((r) => `${r.host} ${r.userAgent} → ${instanceOf(r)} ${r.status ?? 'nothing'}`),
      [],
      'challenge-path requests that were neither a CA validation nor a pre-flight probe',
    );

    const wrong = validations
      .filter((r) => r.backend?.service !== SERVICE_NAME || !answeredKeyAuthorization(r))
      .map((r) => `${r.host} → ${instanceOf(r)} answered ${r.status ?? 'nothing'} ${r.error ?? ''}`);
    assert.deepEqual(wrong, [], 'CA validations that did not get their key authorization from consul-acme');
  });

  it("still sends the apps' own requests to the apps", async () => {
    const expected: Array<[string, string, string]> = [
      [APP_HOST, '/', 'app'],
      [APP_HOST, '/.well-known/other', 'app'],
      [OTHER_HOST, '/', 'other'],
      [OTHER_HOST, '/.well-known/other', 'other'],
      [LATER_HOST, '/', 'other'],
      [LATER_HOST, '/.well-known/other', 'other'],
    ];
    for (const [host, path, app] of expected) {
      const res = await w().router.get(host, path, { userAgent: APP_CLIENT });
      assert.deepEqual(res, { status: 200, body: `app ${app}` }, `GET ${host}${path}`);
      const record = w()
        .router.requests()
        .findLast((r) => r.userAgent === APP_CLIENT && r.host === host && r.path === path)!;
      assert.equal(`${record.host}${record.path} ${instanceOf(record)}`, `${host}${path} ${app}/${app}`);
    }
    // The app backends saw them with their own Host header.
    assert.ok(
      w()
        .apps.app.requests()
        .some((r) => r.host === `${APP_HOST}:${w().router.port}` && r.path === '/'),
    );
  });
});
