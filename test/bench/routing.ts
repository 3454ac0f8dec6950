/**
 * `npm run bench -- --routing`: time from a new `urlprefix-<name>/` tag to the name's certificate in
 * Vault, through the Fabio-rules router (test/support/fabio-router.ts), for 20 new names.
 *
 * The set-up is the end-to-end test's (test/e2e/fabio-routing.test.ts): a real Consul 1.8.7, the
 * Vault stand-in, the router in front of everything (Pebble validates HTTP-01 on the router's port,
 * and the pre-flight probe goes through it too), an app backend, and two consul-acme processes
 * registering their challenge routes and ready checks; every other setting at its default (the
 * retry schedule's 1-minute first step, the 10 s check interval). Once both instances are ready,
 * each name gets its own app service (a passing TTL check, one route tag), one at a time: the
 * next is tagged once the previous one is stored. For each it records the tag → stored time
 * (the first version's `created_time` in Vault), when the challenge route went live in the
 * router, and the pre-flight attempts that did not pass, and prints p50 and p99.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startConsul } from '../support/consul.js';
import {
  ACME_CHALLENGE_PATH,
  registerRoutedService,
  routeTag,
  startAppBackend,
  startFabioRouter,
} from '../support/fabio-router.js';
import { freePort } from '../support/net.js';
import { startPebble } from '../support/pebble.js';
import { startVaultStandin } from '../support/vault-standin.js';
import {
  ChildProfile,
  fail,
  loadNow,
  ms,
  onCleanup,
  percentile,
  progress,
  setChildOutput,
  setPhase,
  sleep,
  spawnService,
  stopChild,
  table,
  waitReady,
  type LogLine,
  type Row,
  type ServiceChild,
} from './harness.js';

export interface RoutingOptions {
  names: number;
  cpuProfDir: string | undefined;
  dir: string;
}

const VAULT_MOUNT = 'secret';
const VAULT_PREFIX = 'fabio/certs';
const SERVICE_NAME = 'consul-acme';
const INSTANCES = ['route-1', 'route-2'];
/** A name not stored within this is reported as such (the retry schedule's first step is 1 minute). */
const PER_NAME_TIMEOUT_MS = 150_000;
const SHUTDOWN_TIMEOUT_MS = 5_000;

export function routingTimeoutMs(opts: Pick<RoutingOptions, 'names'>): number {
  return 5 * 60_000 + opts.names * (PER_NAME_TIMEOUT_MS + 5_000);
}

interface Instance {
  name: string;
  child: ServiceChild;
  /** Its log lines about a hostname. */
  lines: LogLine[];
}

interface NameFigures {
  hostname: string;
  tagToStoredMs: number;
  routeLiveMs: number | undefined;
  /** Pre-flight probes that did not pass: deferrals "waiting for the route" and failures. */
  routeWaits: number;
  preflightFailures: number;
  issuedBy: string;
}

export async function runRouting(opts: RoutingOptions): Promise<void> {
  setPhase('starting Consul, the Vault stand-in, the Fabio-rules router, Pebble and an app');
  const consul = await startConsul();
  onCleanup(() => consul.stop());
  const vault = await startVaultStandin();
  onCleanup(() => vault.close());
  const router = await startFabioRouter({ consulAddress: consul.address });
  onCleanup(() => router.close());
  const pebble = await startPebble({ httpPort: router.port });
  onCleanup(() => pebble.stop());
  const app = await startAppBackend('app');
  onCleanup(() => app.close());
  const caFile = join(opts.dir, 'pebble-ca.pem');
  writeFileSync(caFile, pebble.caBundlePem);

  setPhase('spawning two consul-acme instances');
  const profiles = INSTANCES.map((name) => new ChildProfile(opts.cpuProfDir, `routing-${name}`));
  const spawnedAt = Date.now();
  const instances: Instance[] = [];
  for (const [k, name] of INSTANCES.entries()) {
    const challengePort = await freePort();
    const adminPort = await freePort();
    const child = spawnService({
      challengePort,
      adminPort,
      nodeArgs: profiles[k]!.nodeArgs(),
      env: {
        CONSUL_HTTP_ADDR: consul.address,
        CONSUL_ACME_DIRECTORY_URL: pebble.directoryUrl,
        CONSUL_ACME_CA_BUNDLE: caFile,
        CONSUL_ACME_STORE: 'vault',
        VAULT_ADDR: vault.address,
        VAULT_TOKEN: vault.token,
        CONSUL_ACME_CHALLENGE_HOST: '127.0.0.1',
        CONSUL_ACME_CHALLENGE_PORT: String(challengePort),
        CONSUL_ACME_ADMIN_HOST: '127.0.0.1',
        CONSUL_ACME_ADMIN_PORT: String(adminPort),
        CONSUL_ACME_SERVICE_ADDRESS: '127.0.0.1',
        CONSUL_ACME_INSTANCE_NAME: name,
        CONSUL_ACME_PREFLIGHT: 'true',
        CONSUL_ACME_PREFLIGHT_DNS_SERVERS: pebble.dnsServer,
        CONSUL_ACME_PREFLIGHT_HTTP_PORT: String(router.port),
        CONSUL_ACME_REGISTER_SERVICE: 'true',
        CONSUL_ACME_SERVICE_NAME: SERVICE_NAME,
        CONSUL_ACME_SHUTDOWN_TIMEOUT_MS: String(SHUTDOWN_TIMEOUT_MS),
        // Debug: a name deferred again for the same reason (each route wait after the first) is
        // logged at debug, and every one is counted.
        CONSUL_ACME_LOG_LEVEL: 'debug',
      },
    });
    instances.push({ name, child, lines: child.collect((line) => typeof line.hostname === 'string') });
  }
  setChildOutput(() => instances.map((i) => `[${i.name}]\n${i.child.output().slice(-16_000)}`).join('\n'));
  // Started together, as in the end-to-end test, so that both have just registered when the names are tagged.
  for (const instance of instances) await waitReady(instance.child, spawnedAt, 30_000);
  const readyAt = Date.now();

  setPhase(`${opts.names} new names, one at a time`);
  const figures: NameFigures[] = [];
  for (let i = 1; i <= opts.names; i++) {
    const hostname = `r${String(i).padStart(2, '0')}.route.example.test`;
    const taggedAt = Date.now();
    await registerRoutedService(consul.address, { id: `route-app-${i}`, port: app.port, tags: [routeTag(hostname)] });
    const deadline = taggedAt + PER_NAME_TIMEOUT_MS;
    let storedAt: number | undefined;
    for (;;) {
      const first = vault.readRaw(VAULT_MOUNT, `${VAULT_PREFIX}/${hostname}`)?.versions[1];
      if (first) {
        storedAt = Date.parse(first.created_time);
        break;
      }
      if (Date.now() > deadline) fail(`${hostname} was not stored within ${PER_NAME_TIMEOUT_MS / 1000} s of its tag`);
      if (instances.some((x) => x.child.exited())) fail('a consul-acme instance exited');
      await sleep(50);
    }
    const lines = instances.flatMap((x) => x.lines.filter((l) => l.hostname === hostname).map((l) => ({ x, l })));
    const live = router.routeLiveAt(hostname, ACME_CHALLENGE_PATH, SERVICE_NAME, taggedAt);
    const f: NameFigures = {
      hostname,
      tagToStoredMs: storedAt - taggedAt,
      routeLiveMs: live === undefined ? undefined : live - taggedAt,
      routeWaits: lines.filter(({ l }) => l.event === 'cert_deferred' && /waiting for the route/.test(String(l.reason)))
        .length,
      preflightFailures: lines.filter(({ l }) => l.event === 'retry_scheduled' && /PREFLIGHT_FAILED/.test(l.err ?? ''))
        .length,
      issuedBy: lines.find(({ l }) => l.event === 'cert_obtained')?.x.name ?? '?',
    };
    figures.push(f);
    progress(
      `${hostname}: ${f.tagToStoredMs} ms (route live after ${f.routeLiveMs ?? '?'} ms, ${f.routeWaits} route waits, ` +
        `${f.preflightFailures} pre-flight failures, by ${f.issuedBy})`,
    );
  }
  const doneAt = Date.now();
  for (const p of profiles) p.phase(`${opts.names} names`, readyAt, doneAt);

  setPhase('stopping');
  await Promise.all(instances.map((instance) => stopChild(instance.child, SHUTDOWN_TIMEOUT_MS + 15_000)));
  const exitAtMs = Date.now();
  setChildOutput(() => '');

  const times = figures.map((f) => f.tagToStoredMs);
  const lives = figures.flatMap((f) => (f.routeLiveMs === undefined ? [] : [f.routeLiveMs]));
  const byInstance = new Map<string, number>();
  for (const f of figures) byInstance.set(f.issuedBy, (byInstance.get(f.issuedBy) ?? 0) + 1);
  const rows: Row[] = [
    [
      `tag → certificate in Vault through the Fabio-rules router, ${opts.names} new names one at a time, 2 instances`,
      '',
    ],
    ['p50', ms(percentile(times, 50))],
    ['p99', ms(percentile(times, 99))],
    ['min / max', `${ms(Math.min(...times))} / ${ms(Math.max(...times))}`],
    ['tag → challenge route live in the router, p50 / max', `${ms(percentile(lives, 50))} / ${ms(Math.max(...lives))}`],
    [
      'pre-flight probes that waited for the route / failed',
      `${figures.reduce((a, f) => a + f.routeWaits, 0)} / ${figures.reduce((a, f) => a + f.preflightFailures, 0)}`,
    ],
    ['issued by', [...byInstance].map(([name, count]) => `${name} ${count}`).join(', ')],
    ['per name (ms)', times.map((t) => t.toFixed(0)).join(' ')],
    ['load average (1 min) at the end', loadNow()],
  ];
  process.stdout.write(`${table(rows)}\n`);
  for (const [k, instance] of instances.entries()) {
    const summary = profiles[k]!.summarize(exitAtMs);
    if (summary !== '') process.stdout.write(`\nCPU profile of ${instance.name}:\n${summary}`);
  }
}
