import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import type { FastifyInstance } from 'fastify';
import { buildChallengeServer } from '../../src/http/challenge-server.js';
import { MemoryChallengeStore } from '../../src/adapters/memory/memory-challenge-store.js';
import type { ChallengeStore } from '../../src/ports/challenge-store.js';
import { createLogger } from '../../src/logging.js';

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
