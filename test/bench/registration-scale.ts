/**
 * How far one Consul service registration goes: registers one service carrying N challenge-route
 * tags (`urlprefix-<host>/.well-known/acme-challenge/`) with an HTTP check registered `passing`,
 * against a real Consul 1.8.7 server with a data directory (as in production: every catalog
 * change is a Raft entry written to disk), and prints:
 *
 *   - the size of the register PUT and the time the agent takes to accept it;
 *   - the time until `/v1/catalog/service/<name>` and `/v1/health/service/<name>?passing` show
 *     the registration with all N tags;
 *   - the size and latency of `/v1/catalog/services` (what every Fabio and consul-acme discovery
 *     reads on every change);
 *   - the cost of changing one tag: the PUT again, and the time until the catalog shows it;
 *   - the same with the tags sharded over registrations of at most K tags each.
 *
 * Usage: node dist/test/bench/registration-scale.js [--tags 1000,10000] [--shard 500] [--rounds 5]
 * It asserts nothing; docs/protocols.md §1.10 quotes its output.
 */
import { startConsul, type ConsulInstance } from '../support/consul.js';

interface Args {
  tagCounts: number[];
  shardSize: number;
  rounds: number;
}

function parseArgs(argv: readonly string[]): Args {
  const args: Args = { tagCounts: [1_000, 10_000], shardSize: 500, rounds: 5 };
  for (let i = 0; i < argv.length; i += 2) {
    const [flag, value] = [argv[i], argv[i + 1] ?? ''];
    if (flag === '--tags') args.tagCounts = value.split(',').map(Number);
    else if (flag === '--shard') args.shardSize = Number(value);
    else if (flag === '--rounds') args.rounds = Number(value);
    else throw new Error(`unknown argument ${flag}`);
  }
  return args;
}

const tagFor = (i: number): string =>
  `urlprefix-host-${String(i).padStart(6, '0')}.example.com/.well-known/acme-challenge/`;

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? Number.NaN;
}

function ms(value: number): string {
  return `${value.toFixed(1)} ms`;
}

function kib(bytes: number): string {
  return `${(bytes / 1024).toFixed(1)} KiB`;
}

async function timed<T>(fn: () => Promise<T>): Promise<[T, number]> {
  const started = performance.now();
  const value = await fn();
  return [value, performance.now() - started];
}

function registrationBody(id: string, name: string, tags: string[], checkUrl: string): string {
  return JSON.stringify({
    ID: id,
    Name: name,
    Port: 8402,
    Address: '127.0.0.1',
    Tags: tags,
    Check: {
      Name: `${id} ready`,
      HTTP: checkUrl,
      Interval: '10s',
      Timeout: '5s',
      Status: 'passing',
      DeregisterCriticalServiceAfter: '10m',
    },
  });
}

async function register(consul: ConsulInstance, body: string): Promise<number> {
  const [res, took] = await timed(() => fetch(`${consul.address}/v1/agent/service/register`, { method: 'PUT', body }));
  if (res.status !== 200) throw new Error(`register: ${res.status} ${await res.text()}`);
  return took;
}

/** Polls `path` until `done(body)`; the time from `since`. */
async function timeUntil(consul: ConsulInstance, path: string, since: number, done: (body: unknown) => boolean) {
  const deadline = since + 120_000;
  for (;;) {
    const res = await fetch(`${consul.address}${path}`);
    if (res.status === 200 && done(await res.json())) return performance.now() - since;
    if (performance.now() > deadline) throw new Error(`${path} did not show the change within 120 s`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

interface CatalogEntry {
  ServiceID: string;
  ServiceTags: string[] | null;
}

interface HealthEntry {
  Service: { ID: string; Tags: string[] | null };
}

function tagCount(entries: unknown, idPrefix: string, field: 'catalog' | 'health'): number {
  if (!Array.isArray(entries)) return 0;
  let count = 0;
  for (const e of entries) {
    const [id, tags] =
      field === 'catalog'
        ? [(e as CatalogEntry).ServiceID, (e as CatalogEntry).ServiceTags]
        : [(e as HealthEntry).Service.ID, (e as HealthEntry).Service.Tags];
    if (id.startsWith(idPrefix)) count += tags?.length ?? 0;
  }
  return count;
}

function hasTag(entries: unknown, tag: string): boolean {
  return Array.isArray(entries) && entries.some((e) => ((e as CatalogEntry).ServiceTags ?? []).includes(tag));
}

async function catalogServices(consul: ConsulInstance): Promise<{ bytes: number; tookMs: number }> {
  const [text, tookMs] = await timed(async () => (await fetch(`${consul.address}/v1/catalog/services`)).text());
  return { bytes: Buffer.byteLength(text), tookMs };
}

async function measure(consul: ConsulInstance, n: number, shardSize: number | undefined, rounds: number) {
  const name = `scale-${n}-${shardSize ?? 'one'}`;
  const idPrefix = `${name}-id`;
  const checkUrl = `${consul.address}/v1/status/leader`;
  const tags = Array.from({ length: n }, (_, i) => tagFor(i));
  const size = shardSize ?? n;
  const shards: string[][] = [];
  for (let i = 0; i < tags.length; i += size) shards.push(tags.slice(i, i + size));
  const bodies = shards.map((shardTags, i) => registrationBody(`${idPrefix}-${i}`, name, shardTags, checkUrl));

  const since = performance.now();
  let putMs = 0;
  for (const body of bodies) putMs += await register(consul, body);
  const catalogMs = await timeUntil(
    consul,
    `/v1/catalog/service/${name}`,
    since,
    (b) => tagCount(b, idPrefix, 'catalog') === n,
  );
  const healthMs = await timeUntil(
    consul,
    `/v1/health/service/${name}?passing`,
    since,
    (b) => tagCount(b, idPrefix, 'health') === n,
  );
  const services = await catalogServices(consul);

  // Change one tag, `rounds` times: only the shard holding it is registered again.
  const changePut: number[] = [];
  const changeVisible: number[] = [];
  for (let round = 0; round < rounds; round++) {
    const shardIndex = round % shards.length;
    const shard = [...(shards[shardIndex] ?? [])];
    const newTag = tagFor(1_000_000 + round);
    shard[0] = newTag;
    shards[shardIndex] = shard;
    const started = performance.now();
    changePut.push(await register(consul, registrationBody(`${idPrefix}-${shardIndex}`, name, shard, checkUrl)));
    changeVisible.push(await timeUntil(consul, `/v1/catalog/service/${name}`, started, (b) => hasTag(b, newTag)));
  }
  const changeBytes = Buffer.byteLength(bodies[0] ?? '');
  return {
    n,
    registrations: shards.length,
    putBytes: bodies.reduce((sum, b) => sum + Buffer.byteLength(b), 0),
    putMs,
    catalogMs,
    healthMs,
    servicesBytes: services.bytes,
    servicesMs: services.tookMs,
    changeBytes,
    changePutMs: median(changePut),
    changeVisibleMs: median(changeVisible),
  };
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const consul = await startConsul({ dataDir: true });
  const timer = setTimeout(() => {
    console.error('registration-scale: gave up after 10 minutes');
    process.exit(1);
  }, 600_000);
  try {
    const rows = [];
    for (const n of args.tagCounts) {
      for (const shardSize of args.shardSize < n ? [undefined, args.shardSize] : [undefined]) {
        rows.push(await measure(consul, n, shardSize, args.rounds));
        // Remove them again, so that each measurement starts from a catalog without the others.
        const list = (await (await fetch(`${consul.address}/v1/agent/services`)).json()) as Record<string, unknown>;
        for (const id of Object.keys(list)) {
          await fetch(`${consul.address}/v1/agent/service/deregister/${id}`, { method: 'PUT' });
        }
      }
    }
    console.log('Consul 1.8.7, one server with a data directory, on this machine');
    console.log(
      'tags | registrations | PUT size | PUT accepted | in catalog | passing in health | /v1/catalog/services | change one tag: PUT size, accepted, visible',
    );
    for (const r of rows) {
      console.log(
        [
          r.n,
          r.registrations,
          kib(r.putBytes),
          ms(r.putMs),
          ms(r.catalogMs),
          ms(r.healthMs),
          `${kib(r.servicesBytes)} in ${ms(r.servicesMs)}`,
          `${kib(r.changeBytes)}, ${ms(r.changePutMs)}, ${ms(r.changeVisibleMs)}`,
        ].join(' | '),
      );
    }
  } finally {
    clearTimeout(timer);
    await consul.stop();
  }
}

await main();
