import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import type { FastifyInstance } from 'fastify';
import { buildChallengeServer } from '../../src/http/challenge-server.js';
import { MemoryChallengeStore } from '../../src/adapters/memory/memory-challenge-store.js';
import {
  ConsulChallengeStore,
  DEFAULT_CHALLENGE_MISS_FRESHNESS_MS,
} from '../../src/adapters/consul/consul-challenge-store.js';
import { createConsulClient, type Consul } from '../../src/adapters/consul/consul-client.js';
import { startConsul, type ConsulInstance } from '../support/consul.js';
import { startRoundRobinProxy, type RoundRobinProxy } from '../support/round-robin-proxy.js';
import type { ChallengeStore } from '../../src/ports/challenge-store.js';
import { createLogger } from '../../src/logging.js';
import { waitFor } from '../support/wait.js';

const PREFIX = '/.well-known/acme-challenge/';
const TOKEN = 'evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA';
const KEY_AUTH = `${TOKEN}.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI`;
const LONGEST_TOKEN = 'A'.repeat(256);
const TOO_LONG_TOKEN = 'B'.repeat(300);
const FAILING_TOKEN = 'storeIsDown_0123456789-abcdefghijklmnopqrstu';
const MALFORMED_TOKEN = 'malformedRequest_9876543210-zyxwvutsrqponm';

interface RawResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** A request with the path sent byte for byte (fetch would normalise `..` and `%2e%2e`). */
function rawRequest(port: number, method: string, path: string, body?: string): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const headers =
      body === undefined
        ? {}
        : { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) };
    const req = httpRequest({ host: '127.0.0.1', port, method, path, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }),
      );
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** Wraps a memory store; `get` throws for one token, with the token in the message as an adapter might. */
class FlakyStore implements ChallengeStore {
  constructor(private readonly inner: ChallengeStore) {}
  put(token: string, keyAuthorization: string): Promise<void> {
    return this.inner.put(token, keyAuthorization);
  }
  async get(token: string): Promise<string | undefined> {
    if (token === FAILING_TOKEN)
      throw new Error(`consul GET /v1/kv/consul-acme/challenges/${token}: connect ECONNREFUSED`);
    return this.inner.get(token);
  }
  delete(token: string): Promise<void> {
    return this.inner.delete(token);
  }
  prune(olderThanMs: number): Promise<number> {
    return this.inner.prune(olderThanMs);
  }
  reassert(): Promise<number> {
    return this.inner.reassert();
  }
}

describe('challenge server over real HTTP', () => {
  const logLines: string[] = [];
  let app: FastifyInstance;
  let base: string;
  let port: number;

  before(async () => {
    const memory = new MemoryChallengeStore();
    await memory.put(TOKEN, KEY_AUTH);
    await memory.put(LONGEST_TOKEN, `${LONGEST_TOKEN}.thumb`);
    // Stored under names the responder must refuse, so a missing check would show as a 200.
    for (const bad of ['..', 'a.b', 'a b', TOO_LONG_TOKEN, 'x/y']) await memory.put(bad, KEY_AUTH);
    const logger = createLogger('trace', { write: (line: string) => void logLines.push(line) });
    app = buildChallengeServer({ challengeStore: new FlakyStore(memory), logger, requestTimeoutMs: 2000 });
    await app.listen({ port: 0, host: '127.0.0.1' });
    port = (app.server.address() as AddressInfo).port;
    base = `http://127.0.0.1:${port}`;
  });

  after(async () => {
    await app.close();
  });

  it('answers a known token with 200, text/plain and exactly the key authorization', async () => {
    const res = await fetch(`${base}${PREFIX}${TOKEN}`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'text/plain; charset=utf-8');
    assert.equal(await res.text(), KEY_AUTH);
  });

  it('answers HEAD for a known token with 200 and no body', async () => {
    const res = await fetch(`${base}${PREFIX}${TOKEN}`, { method: 'HEAD' });
    assert.equal(res.status, 200);
    assert.equal(await res.text(), '');
  });

  it('answers a 256-character token (the longest allowed)', async () => {
    const res = await fetch(`${base}${PREFIX}${LONGEST_TOKEN}`);
    assert.equal(res.status, 200);
    assert.equal(await res.text(), `${LONGEST_TOKEN}.thumb`);
  });

  it('answers an unknown but well-formed token with a plain-text 404', async () => {
    const res = await fetch(`${base}${PREFIX}unknownToken_abc-123`);
    assert.equal(res.status, 404);
    assert.equal(res.headers.get('content-type'), 'text/plain; charset=utf-8');
    assert.equal(await res.text(), 'not found\n');
  });

  const malformed: Array<{ name: string; path: string }> = [
    { name: 'a dot-dot segment', path: `${PREFIX}..` },
    { name: 'an encoded dot-dot', path: `${PREFIX}%2e%2e` },
    { name: 'a dot inside the token', path: `${PREFIX}a.b` },
    { name: 'an encoded space', path: `${PREFIX}a%20b` },
    { name: 'a slash inside the token', path: `${PREFIX}x/y` },
    { name: 'an encoded slash inside the token', path: `${PREFIX}x%2Fy` },
    { name: 'a 300-character token', path: `${PREFIX}${TOO_LONG_TOKEN}` },
    { name: 'an empty token', path: PREFIX },
    { name: 'no trailing slash at all', path: '/.well-known/acme-challenge' },
    { name: 'a trailing slash after a known token', path: `${PREFIX}${TOKEN}/` },
    { name: 'path traversal above the prefix', path: `${PREFIX}../../etc/passwd` },
    { name: 'a broken percent-encoding', path: `${PREFIX}${TOKEN}%E0%A4%A` },
    { name: 'an encoded NUL', path: `${PREFIX}${TOKEN}%00` },
  ];
  for (const { name, path } of malformed) {
    it(`refuses ${name} with 404 and does not echo the path`, async () => {
      const res = await rawRequest(port, 'GET', path);
      assert.equal(res.status, 404);
      assert.equal(res.body, 'not found\n');
      assert.ok(!res.body.includes(KEY_AUTH));
    });
  }

  for (const method of ['POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS']) {
    it(`answers ${method} on a known token's path with 404`, async () => {
      const res = await rawRequest(port, method, `${PREFIX}${TOKEN}`, method === 'OPTIONS' ? undefined : '{"a":1}');
      assert.equal(res.status, 404);
      assert.equal(res.body, 'not found\n');
    });
  }

  it('answers a POST with a body over the 1 KiB limit with 404, not an error echoing the request', async () => {
    const res = await rawRequest(port, 'POST', `${PREFIX}${TOKEN}`, JSON.stringify({ pad: 'x'.repeat(4096) }));
    assert.equal(res.status, 404);
    assert.equal(res.body, 'not found\n');
  });

  for (const path of ['/', '/admin', '/status', '/health/live', '/.well-known/', '/secret-looking-path-123']) {
    it(`answers ${path} with a plain 404 that does not repeat the URL`, async () => {
      const res = await fetch(`${base}${path}`);
      assert.equal(res.status, 404);
      assert.equal(res.headers.get('content-type'), 'text/plain; charset=utf-8');
      const body = await res.text();
      assert.equal(body, 'not found\n');
    });
  }

  it('answers a request HTTP cannot parse with a bare 400 and logs no part of it', async () => {
    const answer = await new Promise<string>((resolve, reject) => {
      const socket = connect(port, '127.0.0.1', () => {
        socket.write(`GET ${PREFIX}${MALFORMED_TOKEN} HTTP/1.1\r\nHost: x\r\nBroken header line\r\n\r\n`);
      });
      let data = '';
      socket.on('data', (c: Buffer) => (data += c.toString('utf8')));
      socket.on('close', () => resolve(data));
      socket.on('error', reject);
    });
    assert.match(answer, /^HTTP\/1\.1 400 Bad Request\r\n/);
    assert.ok(!answer.includes(MALFORMED_TOKEN));
    assert.ok(
      logLines.some((l) => l.includes('malformed http request')),
      'the parse error is logged',
    );
  });

  it('answers 503 when the challenge store fails, so the CA retries', async () => {
    const res = await fetch(`${base}${PREFIX}${FAILING_TOKEN}`);
    assert.equal(res.status, 503);
    assert.equal(await res.text(), 'challenge store unavailable\n');
    const failure = logLines
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .find((l) => l.msg === 'challenge store read failed');
    assert.ok(failure, 'the store failure is logged');
    assert.equal(failure.level, 50);
    assert.equal(failure.token_length, FAILING_TOKEN.length);
    assert.match(String(failure.token_sha256_prefix), /^[0-9a-f]{8}$/);
    assert.match(JSON.stringify(failure.err), /ECONNREFUSED/);
  });

  // Last: the requests above have produced the log lines this reads.
  it('never logs a token or a key authorization, at any level', () => {
    assert.ok(
      logLines.some((l) => l.includes('challenge answered')),
      'answers are logged (so this test can fail)',
    );
    const all = logLines.join('');
    for (const secret of [
      TOKEN,
      KEY_AUTH,
      LONGEST_TOKEN,
      FAILING_TOKEN,
      TOO_LONG_TOKEN,
      MALFORMED_TOKEN,
      '9jg46WB3rR_AHD',
    ]) {
      assert.ok(!all.includes(secret), `log output contains ${secret.slice(0, 12)}…`);
    }
  });
});

describe('challenge server under load, with the Consul challenge store', () => {
  const UNKNOWN_REQUESTS = 10_000;
  const KNOWN_REQUESTS = 10_000;
  /** Each unknown token waits up to 250 ms for the watch (a peer's put may be on its way): many at a time. */
  const CONCURRENCY = 250;
  let consul: ConsulInstance;
  let proxy: RoundRobinProxy;
  let client: Consul;
  let store: ConsulChallengeStore;
  let app: FastifyInstance;
  let base: string;

  /** GETs of KV keys that went to Consul so far (every one through the counting proxy). */
  const kvReads = (): number =>
    proxy.requests().filter((r) => r.method === 'GET' && r.path.startsWith('/v1/kv/')).length;

  /** Runs `count` requests, `CONCURRENCY` at a time; each gets its index. */
  async function flood(count: number, request: (i: number) => Promise<void>): Promise<number> {
    const started = performance.now();
    let next = 0;
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (next < count) await request(next++);
      }),
    );
    return performance.now() - started;
  }

  before(async () => {
    consul = await startConsul();
    proxy = await startRoundRobinProxy([{ name: 'consul', port: consul.httpPort }]);
    client = createConsulClient({ address: proxy.url });
    // Written by "another instance", straight into Consul: this store only learns it by reading.
    const res = await fetch(`${consul.address}/v1/kv/consul-acme/challenges/${TOKEN}`, {
      method: 'PUT',
      body: KEY_AUTH,
    });
    assert.equal((await res.text()).trim(), 'true');
    store = new ConsulChallengeStore({ consul: client, prefix: 'consul-acme/challenges/' });
    store.start();
    // The watch's first read has returned and its blocking query is waiting: from now on the
    // watch sends nothing until the folder changes (it waits up to 5 minutes).
    await waitFor('the watch to be waiting', () => kvReads() >= 2);
    app = buildChallengeServer({ challengeStore: store, logger: createLogger('silent') });
    await app.listen({ port: 0, host: '127.0.0.1' });
    base = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
  });

  after(async () => {
    await app?.close();
    await store?.close();
    client?.destroy();
    await proxy?.close();
    await consul?.stop();
  });

  it('stays ready through 10,000 requests for unknown tokens, and reads Consul about once a second at most', async (t) => {
    const readsBefore = kvReads();
    const answers = new Map<number, number>();
    let knownInTheMiddle: number | undefined;
    const elapsedMs = await flood(UNKNOWN_REQUESTS, async (i) => {
      if (i === UNKNOWN_REQUESTS / 2) {
        const known = await fetch(`${base}${PREFIX}${TOKEN}`);
        knownInTheMiddle = known.status;
        assert.equal(await known.text(), KEY_AUTH);
      }
      const res = await fetch(`${base}${PREFIX}unknown_${i}_${Math.random().toString(36).slice(2)}`);
      await res.arrayBuffer();
      answers.set(res.status, (answers.get(res.status) ?? 0) + 1);
    });
    const reads = kvReads() - readsBefore;
    const after = await fetch(`${base}${PREFIX}${TOKEN}`);
    assert.equal(after.status, 200);
    assert.equal(await after.text(), KEY_AUTH);
    assert.equal(knownInTheMiddle, 200, 'the known token answered in the middle of the flood');
    assert.deepEqual([...answers], [[404, UNKNOWN_REQUESTS]], 'every unknown token is a 404');
    // At most one read per missFreshnessMs of flood, plus the one in flight when it started.
    const bound = Math.ceil(elapsedMs / DEFAULT_CHALLENGE_MISS_FRESHNESS_MS) + 1;
    t.diagnostic(
      `${UNKNOWN_REQUESTS} unknown-token requests (${CONCURRENCY} at a time) in ${Math.round(elapsedMs)} ms ` +
        `(${Math.round((UNKNOWN_REQUESTS / elapsedMs) * 1000)}/s): ${reads} Consul KV reads (bound ${bound})`,
    );
    assert.ok(reads <= bound, `${reads} KV reads for ${UNKNOWN_REQUESTS} unknown tokens; at most ${bound} expected`);
  });

  it('answers 10,000 requests for one known token without reading Consul', async (t) => {
    assert.equal((await fetch(`${base}${PREFIX}${TOKEN}`)).status, 200);
    // A read the previous flood started may still be answering: let it land before counting.
    await new Promise((resolve) => setTimeout(resolve, DEFAULT_CHALLENGE_MISS_FRESHNESS_MS + 200));
    const readsBefore = kvReads();
    let ok = 0;
    const elapsedMs = await flood(KNOWN_REQUESTS, async () => {
      const res = await fetch(`${base}${PREFIX}${TOKEN}`);
      if (res.status === 200 && (await res.text()) === KEY_AUTH) ok += 1;
    });
    const reads = kvReads() - readsBefore;
    t.diagnostic(
      `${KNOWN_REQUESTS} known-token requests in ${Math.round(elapsedMs)} ms ` +
        `(${Math.round((KNOWN_REQUESTS / elapsedMs) * 1000)}/s): ${reads} Consul KV reads`,
    );
    assert.equal(ok, KNOWN_REQUESTS);
    assert.equal(reads, 0);
  });

  it('answers 503 with Retry-After for an unknown token while Consul is down, and a known one still', async () => {
    proxy.removeBackend('consul');
    // The mirror is fresh for a second after its last read; wait until a miss has to read.
    await new Promise((resolve) => setTimeout(resolve, DEFAULT_CHALLENGE_MISS_FRESHNESS_MS + 100));
    const res = await fetch(`${base}${PREFIX}unknownWhileDown`);
    assert.equal(res.status, 503);
    assert.equal(res.headers.get('retry-after'), '1');
    assert.equal((await fetch(`${base}${PREFIX}${TOKEN}`)).status, 200);
  });
});
