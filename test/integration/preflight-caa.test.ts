/**
 * HttpPreflight's CAA check against a real DNS server: pebble-challtestsrv (every name resolves to
 * 127.0.0.1; CAA records, aliases and SERVFAIL set through its management API, docs/protocols.md
 * §5) asked by node:dns `Resolver.resolveCaa`, and a local node:http responder that serves the
 * challenge store as the real challenge server does.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import { type AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { MemoryChallengeStore } from '../../src/adapters/memory/memory-challenge-store.js';
import { HttpPreflight } from '../../src/adapters/net/http-preflight.js';
import { ACME_CHALLENGE_PATH } from '../../src/domain/challenge.js';
import type { PreflightResult } from '../../src/ports/preflight.js';
import { CHALLTESTSRV_BINARY } from '../support/pebble.js';
import { freePort, freeUdpAndTcpPort } from '../support/net.js';
import { waitFor } from '../support/wait.js';

const OUR_CA = 'ca.ours.test';
const OTHER_CA = 'ca.theirs.test';

interface DnsServer {
  address: string;
  post(path: string, body: unknown): Promise<void>;
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
        await post('/clear-caa', { host: 'ready.test' });
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
    post,
    stop: async () => {
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        await exited;
      }
    },
  };
}

describe('HttpPreflight: CAA (RFC 8659) with real DNS', () => {
  let dns: DnsServer;
  let responder: Server | undefined;
  let responderPort = 0;
  let probes = 0;
  const store = new MemoryChallengeStore();

  const addCaa = (host: string, ...values: string[]): Promise<void> =>
    dns.post('/add-caa', { host: `${host}.`, policies: values.map((value) => ({ tag: 'issue', value })) });
  const clearCaa = (host: string): Promise<void> => dns.post('/clear-caa', { host: `${host}.` });

  function preflight(caaIdentities: string[] = [OUR_CA]): HttpPreflight {
    return new HttpPreflight({
      challengeStore: store,
      dnsServers: [dns.address],
      httpPort: responderPort,
      timeoutMs: 3_000,
      caaIdentities,
    });
  }

  function refusal(result: PreflightResult): { reason: string; detail: string } {
    assert.ok(!result.ok, 'the check refuses');
    return result;
  }

  before(async () => {
    dns = await startDns();
    responder = createServer((req, res) => {
      probes++;
      const path = req.url ?? '/';
      const token = path.startsWith(ACME_CHALLENGE_PATH) ? path.slice(ACME_CHALLENGE_PATH.length) : '';
      void store.get(token).then((value) => {
        res.statusCode = value === undefined ? 404 : 200;
        res.end(value ?? 'no such token');
      });
    });
    await new Promise<void>((resolve) => responder!.listen(0, '127.0.0.1', resolve));
    responderPort = (responder.address() as AddressInfo).port;
  });

  after(async () => {
    responder?.closeAllConnections();
    await new Promise((resolve) => responder?.close(resolve));
    await dns?.stop();
  });

  it('passes a name with no CAA records anywhere up the tree', async () => {
    assert.deepEqual(await preflight().check('plain.caa.test'), { ok: true });
  });

  it('refuses a name whose own CAA records allow another CA, naming the records and our identity, without probing', async () => {
    await addCaa('other.caa.test', OTHER_CA);
    const probesBefore = probes;
    const result = refusal(await preflight().check('other.caa.test'));
    assert.equal(result.reason, 'CAA');
    assert.equal(
      result.detail,
      `the CAA records at other.caa.test (0 issue "${OTHER_CA}") do not allow ${OUR_CA}: 0 issue "${OTHER_CA}" names another CA`,
    );
    assert.equal(probes, probesBefore, 'no probe was sent');
    assert.deepEqual(store.tokens(), [], 'no probe token was stored');
  });

  it('passes the same name once its records are cleared', async () => {
    await clearCaa('other.caa.test');
    assert.deepEqual(await preflight().check('other.caa.test'), { ok: true });
  });

  it('refuses a name whose parent has the only CAA records, climbing the tree', async () => {
    await addCaa('parent.test', OTHER_CA);
    const result = refusal(await preflight().check('www.shop.parent.test'));
    assert.equal(result.reason, 'CAA');
    assert.match(result.detail, /^the CAA records at parent\.test \(0 issue "ca\.theirs\.test"\)/);
  });

  it('passes a name whose own records allow our CA although its parent allows only another', async () => {
    await addCaa('ours.parent.test', OUR_CA);
    assert.deepEqual(await preflight().check('ours.parent.test'), { ok: true });
  });

  it('follows an alias: a name that is a CNAME gets the CAA records of its target', async () => {
    await addCaa('target.alias.test', OTHER_CA);
    await dns.post('/set-cname', { host: 'www.alias.test.', target: 'target.alias.test.' });
    const result = refusal(await preflight().check('www.alias.test'));
    assert.equal(result.reason, 'CAA');
    assert.match(result.detail, /^the CAA records at www\.alias\.test \(0 issue "ca\.theirs\.test"\)/);
  });

  it('refuses when a lookup fails before any records are found, naming the node and the error', async () => {
    await dns.post('/set-servfail', { host: 'servfail.test.' });
    const result = refusal(await preflight().check('app.servfail.test'));
    assert.equal(result.reason, 'CAA');
    assert.match(result.detail, /^the CAA lookup of servfail\.test failed \(ESERVFAIL\)/);
  });

  it('does not look at CAA when no CA identity is configured', async () => {
    await addCaa('unchecked.caa.test', OTHER_CA);
    assert.deepEqual(await preflight([]).check('unchecked.caa.test'), { ok: true });
  });

  it('says NoDNS, not CAA, for a name that does not resolve', async () => {
    await dns.post('/set-servfail', { host: 'gone.caa.test.' });
    const result = refusal(await preflight().check('gone.caa.test'));
    assert.equal(result.reason, 'NoDNS');
  });
});
