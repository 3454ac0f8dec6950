/**
 * HttpPreflight against real DNS and HTTP: pebble-challtestsrv as the DNS server (every name
 * resolves to 127.0.0.1, no AAAA; a name is made to fail with /set-servfail) and a local
 * node:http responder on a free port that serves, or refuses to serve, the challenge store.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { type AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { MemoryChallengeStore } from '../../src/adapters/memory/memory-challenge-store.js';
import { HttpPreflight } from '../../src/adapters/net/http-preflight.js';
import { ACME_CHALLENGE_PATH as CHALLENGE_PATH } from '../../src/domain/challenge.js';
import { AbortedError } from '../../src/errors.js';
import { CHALLTESTSRV_BINARY } from '../support/pebble.js';
import { freePort, freeUdpAndTcpPort } from '../support/net.js';
import { waitFor } from '../support/wait.js';

interface DnsServer {
  address: string;
  setServfail(host: string): Promise<void>;
  stop(): Promise<void>;
}

async function startDns(): Promise<DnsServer> {
  const [dnsPort, managementPort] = [await freeUdpAndTcpPort(), await freePort()];
  const management = `http://127.0.0.1:${managementPort}`;
  let logs = '';
  const child: ChildProcess = spawn(
    CHALLTESTSRV_BINARY,
    [
      '-dns01',
      `127.0.0.1:${dnsPort}`,
      '-management',
      `127.0.0.1:${managementPort}`,
      '-http01',
      '',
      '-https01',
      '',
      '-tlsalpn01',
      '',
      '-defaultIPv4',
      '127.0.0.1',
      '-defaultIPv6',
      '',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  child.stdout?.on('data', (c: Buffer) => (logs += c.toString()));
  child.stderr?.on('data', (c: Buffer) => (logs += c.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const post = async (path: string, body: unknown): Promise<void> => {
    const res = await fetch(`${management}${path}`, {
      method: 'POST',
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(2_000),
    });
    if (res.status !== 200) throw new Error(`challtestsrv ${path} answered ${res.status}`);
  };
  try {
    await waitFor(
      'pebble-challtestsrv management API',
      async () => {
        if (child.exitCode !== null) throw new Error(`pebble-challtestsrv exited:\n${logs}`);
        await post('/clear-servfail', { host: 'ready.test' });
        return true;
      },
      { timeoutMs: 10_000 },
    );
  } catch (err) {
    child.kill('SIGKILL');
    throw new Error(`${err instanceof Error ? err.message : String(err)}\n${logs}`);
  }
  return {
    address: `127.0.0.1:${dnsPort}`,
    setServfail: (host) => post('/set-servfail', { host }),
    stop: async () => {
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        await exited;
      }
    },
  };
}

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

/** A challenge store that counts the puts and deletes made to it. */
function countingStore(): { store: MemoryChallengeStore; writes: () => number } {
  const store = new MemoryChallengeStore();
  let writes = 0;
  const put = store.put.bind(store);
  const remove = store.delete.bind(store);
  store.put = async (token, value) => {
    writes += 1;
    await put(token, value);
  };
  store.delete = async (token) => {
    writes += 1;
    await remove(token);
  };
  return { store, writes: () => writes };
}

describe('HttpPreflight', () => {
  let dns: DnsServer | undefined;
  let responder: Server | undefined;
  let responderPort = 0;
  const store = new MemoryChallengeStore();
  const hostsSeen: string[] = [];
  /** What the responder does; each case sets it. */
  let handler: Handler = (_req, res) => res.end();

  /** Serves the challenge path from `store`, as the real challenge server does. */
  const servesStore: Handler = (req, res) => {
    const path = req.url ?? '/';
    const token = path.startsWith(CHALLENGE_PATH) ? path.slice(CHALLENGE_PATH.length) : '';
    void store.get(token).then((value) => {
      res.statusCode = value === undefined ? 404 : 200;
      res.setHeader('content-type', 'text/plain');
      res.end(value ?? 'no such token');
    });
  };

  function preflight(
    opts: { httpPort?: number; timeoutMs?: number; challengeStore?: MemoryChallengeStore } = {},
  ): HttpPreflight {
    return new HttpPreflight({
      challengeStore: opts.challengeStore ?? store,
      dnsServers: [dns!.address],
      httpPort: opts.httpPort ?? responderPort,
      timeoutMs: opts.timeoutMs ?? 3_000,
    });
  }

  before(async () => {
    dns = await startDns();
    responder = createServer((req, res) => {
      hostsSeen.push(req.headers.host ?? '');
      handler(req, res);
    });
    await new Promise<void>((resolve) => responder!.listen(0, '127.0.0.1', resolve));
    responderPort = (responder.address() as AddressInfo).port;
  });

  after(async () => {
    responder?.closeAllConnections();
    await new Promise((resolve) => responder?.close(resolve));
    await dns?.stop();
  });

  it('is ok when the challenge path answers the probe value from the store, and leaves no token behind', async () => {
    handler = servesStore;
    hostsSeen.length = 0;
    assert.deepEqual(await preflight().check('app.preflight.test'), { ok: true });
    assert.deepEqual(hostsSeen, [`app.preflight.test:${responderPort}`], 'the Host header names the hostname');
    assert.deepEqual(store.tokens(), []);
  });

  it('is NotRouted when another app answers 404', async () => {
    handler = (_req, res) => {
      res.statusCode = 404;
      res.end('404 page not found');
    };
    const result = await preflight().check('other.preflight.test');
    assert.equal(result.ok, false);
    assert.ok(!result.ok);
    assert.equal(result.reason, 'NotRouted');
    assert.match(result.detail, /answered 404 with "404 page not found"/);
    assert.doesNotMatch(result.detail, /; /, 'the retry after the 404 is not reported as a second failure');
    assert.match(result.detail, /other\.preflight\.test/);
    assert.deepEqual(store.tokens(), []);
  });

  it('asks a 404 once more, so a probe that reached another instance before its token did still passes', async () => {
    let requests = 0;
    handler = (req, res) => {
      requests += 1;
      // The first request finds no token (another instance's copy of the store is behind).
      if (requests === 1) {
        res.statusCode = 404;
        res.end('not found\n');
        return;
      }
      servesStore(req, res);
    };
    const result = await preflight().check('late.preflight.test');
    assert.deepEqual(result, { ok: true });
    assert.equal(requests, 2, 'one more request after the 404, no more');
  });

  it('is NotRouted when the path answers 200 with something else, naming what came back', async () => {
    handler = (_req, res) => res.end('<html>welcome</html>');
    const result = await preflight().check('wrong.preflight.test');
    assert.ok(!result.ok);
    assert.equal(result.reason, 'NotRouted');
    assert.match(result.detail, /answered 200 with "<html>welcome<\/html>" instead of the probe value/);
    assert.deepEqual(store.tokens(), []);
  });

  it('is NotRouted when a redirect answers, naming where it points', async () => {
    handler = (_req, res) => {
      res.statusCode = 301;
      res.setHeader('location', 'https://elsewhere.example/');
      res.end();
    };
    const result = await preflight().check('moved.preflight.test');
    assert.ok(!result.ok);
    assert.equal(result.reason, 'NotRouted');
    assert.match(result.detail, /answered 301 redirecting to https:\/\/elsewhere\.example\//);
  });

  it('is NotRouted when nothing listens on the port, and writes no probe to the challenge store', async () => {
    const closedPort = await freePort();
    const counting = countingStore();
    const check = preflight({ httpPort: closedPort, challengeStore: counting.store });
    const result = await check.check('nobody.preflight.test');
    assert.ok(!result.ok);
    assert.equal(result.reason, 'NotRouted');
    assert.match(result.detail, new RegExp(`connecting to 127\\.0\\.0\\.1:${closedPort} failed \\(ECONNREFUSED\\)`));
    assert.equal(counting.writes(), 0, 'no probe token put or deleted');
  });

  it('is NotRouted when the answer does not come within the timeout', async () => {
    handler = () => undefined; // never answers
    const result = await preflight({ timeoutMs: 300 }).check('slow.preflight.test');
    assert.ok(!result.ok);
    assert.equal(result.reason, 'NotRouted');
    assert.match(result.detail, /no answer within 300 ms/);
    assert.deepEqual(store.tokens(), []);
  });

  it('is NoDNS with the DNS error code when the name does not resolve, and stores no probe', async () => {
    await dns!.setServfail('broken.preflight.test');
    const counting = countingStore();
    const check = preflight({ challengeStore: counting.store });
    const result = await check.check('broken.preflight.test');
    assert.ok(!result.ok);
    assert.equal(result.reason, 'NoDNS');
    assert.match(result.detail, /broken\.preflight\.test has no A or AAAA record \(A: ESERVFAIL, AAAA: ESERVFAIL\)/);
    assert.equal(counting.writes(), 0);
  });

  it('rejects with AbortedError when the signal has aborted', async () => {
    handler = servesStore;
    const controller = new AbortController();
    controller.abort();
    await assert.rejects(preflight().check('app.preflight.test', controller.signal), AbortedError);
    assert.deepEqual(store.tokens(), []);
  });

  it('rejects with AbortedError when aborted during the request, and deletes the probe', async () => {
    const controller = new AbortController();
    handler = () => controller.abort(); // the request arrives, then the caller gives up
    await assert.rejects(preflight().check('app.preflight.test', controller.signal), AbortedError);
    assert.deepEqual(store.tokens(), []);
  });

  it('aborting one check while its lookup waits leaves the other checks of the same preflight unharmed', async () => {
    handler = servesStore;
    // A DNS server that never answers: the aborted check's lookups are still waiting when it gives up.
    const silent = createSocket('udp4');
    await new Promise<void>((resolve) => silent.bind(0, '127.0.0.1', resolve));
    try {
      const stalled = new HttpPreflight({
        challengeStore: store,
        dnsServers: [`127.0.0.1:${silent.address().port}`],
        httpPort: responderPort,
        timeoutMs: 3_000,
      });
      const controller = new AbortController();
      const aborted = stalled.check('app.preflight.test', controller.signal);
      setTimeout(() => controller.abort(), 100);
      await assert.rejects(aborted, AbortedError);

      const shared = preflight();
      const first = new AbortController();
      const gaveUp = shared.check('app.preflight.test', first.signal);
      first.abort();
      const [given, kept] = await Promise.allSettled([gaveUp, shared.check('other.preflight.test')]);
      assert.equal(given.status, 'rejected');
      assert.deepEqual(kept, { status: 'fulfilled', value: { ok: true } }, 'the other check resolved and passed');
      assert.deepEqual(store.tokens(), []);
    } finally {
      silent.close();
    }
  });
});
