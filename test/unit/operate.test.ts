/**
 * Operator commands through the real composition root (createService) with memory adapters, a fake
 * issuer and a clock the test moves: adopt, reissue and revoke sent to the admin API as the CLI
 * sends them, the requests kept in a request store that outlives an instance, and what the store,
 * the CA (the fake's orders and revocations) and the status show afterwards. The end-to-end test
 * (test/e2e/operate.test.ts) runs the same against Consul, Pebble and the Vault stand-in.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { MemoryBudgetLedger } from '../../src/adapters/memory/memory-budget-ledger.js';
import { MemoryCertificateStateStore } from '../../src/adapters/memory/memory-certificate-state-store.js';
import { MemoryCertificateStore } from '../../src/adapters/memory/memory-certificate-store.js';
import { MemoryChallengeStore } from '../../src/adapters/memory/memory-challenge-store.js';
import { MemoryDiscovery } from '../../src/adapters/memory/memory-discovery.js';
import { MemoryLocker } from '../../src/adapters/memory/memory-locker.js';
import { MemoryRequestStore } from '../../src/adapters/memory/memory-request-store.js';
import { MemoryServiceRegistration } from '../../src/adapters/memory/memory-service-registration.js';
import { requestToText } from '../../src/adapters/request-record.js';
import { parseCli, type CliCommand } from '../../src/cli/args.js';
import { runOperation, type OperateIo } from '../../src/cli/operate-command.js';
import { loadConfig } from '../../src/config/load.js';
import type { CertificateData } from '../../src/domain/certificate.js';
import type { CertificateStatus } from '../../src/engine/status.js';
import type { CertificateDetail, CommandAnswer } from '../../src/http/admin-server.js';
import { AcmeProblemError } from '../../src/errors.js';
import { silentLogger } from '../../src/logging.js';
import { ManualClock } from '../../src/ports/clock.js';
import { createService, type Service } from '../../src/service.js';
import { makeCertificateData } from '../support/certs.js';
import { FakeIssuer } from '../support/fake-issuer.js';
import { waitFor } from '../support/wait.js';

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;
const TOKEN = 'operator-token-0123456789';
const START = '2026-03-01T00:00:00Z';
const tag = (hostname: string): string => `urlprefix-${hostname}/`;

interface Engine {
  service: Service;
  adminUrl: string;
  clock: ManualClock;
  issuer: FakeIssuer;
  store: MemoryCertificateStore;
  requests: MemoryRequestStore;
  status(hostname: string): CertificateStatus | undefined;
  stop(): Promise<void>;
}

interface EngineOptions {
  env?: Record<string, string>;
  clock?: ManualClock;
  store?: MemoryCertificateStore;
  requests?: MemoryRequestStore;
  issuer?: FakeIssuer;
}

async function startEngine(services: Record<string, string[]>, options: EngineOptions = {}): Promise<Engine> {
  const clock = options.clock ?? new ManualClock(START);
  const config = loadConfig({
    env: {
      CONSUL_ACME_CHALLENGE_HOST: '127.0.0.1',
      CONSUL_ACME_CHALLENGE_PORT: '0',
      CONSUL_ACME_ADMIN_HOST: '127.0.0.1',
      CONSUL_ACME_ADMIN_PORT: '0',
      CONSUL_ACME_ADMIN_TOKEN: TOKEN,
      CONSUL_ACME_RETRY_SCHEDULE: '1m,5m',
      CONSUL_ACME_LOCKED_RECHECK: '10s',
      CONSUL_ACME_RENEW_SPREAD: '0s',
      ...options.env,
    },
  });
  const store = options.store ?? new MemoryCertificateStore();
  const requests = options.requests ?? new MemoryRequestStore();
  const issuer = options.issuer ?? new FakeIssuer(clock);
  const service = createService({
    config,
    logger: silentLogger(),
    clock,
    discovery: new MemoryDiscovery(services),
    certificateStore: store,
    challengeStore: new MemoryChallengeStore(),
    issuer,
    locker: new MemoryLocker(),
    stateStore: new MemoryCertificateStateStore(),
    registration: new MemoryServiceRegistration(),
    healthRegistration: new MemoryServiceRegistration(),
    budgetLedger: new MemoryBudgetLedger({ clock }),
    requestStore: requests,
  });
  const listening = await service.start();
  await waitFor('the first catalog snapshot', () => service.status().ready, { timeoutMs: 5_000, intervalMs: 5 });
  return {
    service,
    adminUrl: listening.adminUrl,
    clock,
    issuer,
    store,
    requests,
    status: (hostname) => service.status().certificates.find((c) => c.hostname === hostname),
    stop: () => service.stop(),
  };
}

/** POSTs a command, with the admin token unless `token` says otherwise (null: none). */
async function post(engine: Engine, path: string, body: unknown, token: string | null = TOKEN): Promise<Response> {
  return fetch(`${engine.adminUrl}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token !== null ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify(body),
  });
}

async function command(engine: Engine, path: string, body: unknown): Promise<CommandAnswer> {
  const res = await post(engine, path, body);
  assert.equal(res.status, 202, `${path} answered ${res.status}: ${await res.clone().text()}`);
  return (await res.json()) as CommandAnswer;
}

async function detail(engine: Engine, hostname: string): Promise<CertificateDetail> {
  const res = await fetch(`${engine.adminUrl}/certificates/${hostname}`, {
    headers: { authorization: `Bearer ${TOKEN}` },
  });
  assert.equal(res.status, 200);
  return (await res.json()) as CertificateDetail;
}

function serialOf(certPem: string): string {
  return new X509Certificate(certPem).serialNumber.toLowerCase().replace(/^0+(?=.)/, '');
}

async function storedSerial(engine: Engine, hostname: string): Promise<string | undefined> {
  const record = await engine.store.get(hostname);
  return record?.certificate === undefined ? undefined : serialOf(record.certificate.certPem);
}

/** Waits (real time, the clock standing still) until the stored serial differs from `old` and the request is gone. */
async function replaced(engine: Engine, hostname: string, old: string): Promise<string> {
  return waitFor(
    `a new certificate for ${hostname} and its request gone (status ${JSON.stringify(engine.status(hostname))})`,
    async () => {
      const serial = await storedSerial(engine, hostname);
      return serial !== undefined && serial !== old && (await engine.requests.get(hostname)) === undefined
        ? serial
        : undefined;
    },
    { timeoutMs: 5_000, intervalMs: 5 },
  );
}

async function until(engine: Engine, hostname: string, state: CertificateStatus['state']): Promise<CertificateStatus> {
  return waitFor(
    `${hostname} ${state} (now ${JSON.stringify(engine.status(hostname))})`,
    () => (engine.status(hostname)?.state === state ? engine.status(hostname) : undefined),
    { timeoutMs: 5_000, intervalMs: 5 },
  );
}

async function settle(): Promise<void> {
  for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
}

/** A certificate another tool put under the prefix (no managed_by), valid from `notBefore` for `days`. */
async function theirs(hostname: string, notBefore: Date, days = 90): Promise<CertificateData> {
  return makeCertificateData({
    hostname,
    notBefore,
    notAfter: new Date(notBefore.getTime() + days * DAY),
    issuer: 'R3',
  });
}

/** A store holding a record another tool wrote under `hostname`. */
async function storeWith(hostname: string): Promise<MemoryCertificateStore> {
  const store = new MemoryCertificateStore();
  store.putUnmanaged(hostname, await theirs(hostname, new Date(new Date(START).getTime() - DAY)));
  return store;
}

describe('reissue and revoke by command', () => {
  test('reissue: the instance answers with the serial to replace, then a new serial is stored and the request is gone', async () => {
    const engine = await startEngine({ web: [tag('a.example.com')] });
    try {
      await until(engine, 'a.example.com', 'valid');
      const old = (await storedSerial(engine, 'a.example.com'))!;
      engine.clock.advance(MINUTE);
      const answer = await command(engine, '/reissue', { hostnames: ['a.example.com'] });
      assert.deepEqual(
        answer.results.map((r) => (r.accepted ? [r.hostname, r.kind, r.serial] : [r.hostname, r.why])),
        [['a.example.com', 'reissue', old]],
      );
      const fresh = await replaced(engine, 'a.example.com', old);
      assert.notEqual(fresh, old);
      assert.deepEqual(engine.issuer.orders, ['a.example.com', 'a.example.com'], 'one order for the reissue');
      const after = await detail(engine, 'a.example.com');
      assert.equal(after.stored?.serial, fresh);
      assert.equal(after.request, undefined);
      await until(engine, 'a.example.com', 'valid');
      assert.equal(engine.status('a.example.com')?.reason, 'NotYetDue');
    } finally {
      await engine.stop();
    }
  });

  test('revoke keyCompromise: the old serial is revoked at the CA and a new certificate replaces it', async () => {
    const engine = await startEngine({ web: [tag('a.example.com')] });
    try {
      await until(engine, 'a.example.com', 'valid');
      const old = (await storedSerial(engine, 'a.example.com'))!;
      engine.clock.advance(MINUTE);
      const answer = await command(engine, '/revoke', { hostname: 'a.example.com', reason: 'keyCompromise' });
      assert.equal(answer.results[0]?.accepted, true);
      const fresh = await replaced(engine, 'a.example.com', old);
      assert.deepEqual(engine.issuer.revocations, [{ serial: old, reason: 'keyCompromise' }]);
      assert.notEqual(fresh, old);
      assert.equal(engine.issuer.orders.length, 2);
    } finally {
      await engine.stop();
    }
  });

  test('a revocation waits with its reissue for a spent budget, except keyCompromise, which is revoked at once', async () => {
    const engine = await startEngine(
      { web: [tag('a.example.com')] },
      { env: { CONSUL_ACME_BUDGET_FAILED_AUTHORIZATIONS: '1/1h' } },
    );
    try {
      await until(engine, 'a.example.com', 'valid');
      const old = (await storedSerial(engine, 'a.example.com'))!;
      // A reissue whose validation fails spends the name's one failed authorization for the hour.
      engine.issuer.failWith(
        new AcmeProblemError('ACME_PROBLEM', 'validation failed', {
          problemType: 'urn:ietf:params:acme:error:unauthorized',
        }),
      );
      engine.clock.advance(MINUTE);
      await command(engine, '/reissue', { hostnames: ['a.example.com'] });
      await until(engine, 'a.example.com', 'failed');

      await command(engine, '/revoke', { hostname: 'a.example.com', reason: 'superseded' });
      const waiting = await until(engine, 'a.example.com', 'waiting');
      assert.match(waiting.waitingFor ?? '', /budget failed-authorizations/);
      assert.equal(waiting.request?.kind, 'revoke');
      assert.deepEqual(engine.issuer.revocations, [], 'superseded: not revoked while the new order must wait');

      await command(engine, '/revoke', { hostname: 'a.example.com', reason: 'keyCompromise' });
      await waitFor('the revocation', () => engine.issuer.revocations.length === 1, {
        timeoutMs: 5_000,
        intervalMs: 5,
      });
      assert.deepEqual(engine.issuer.revocations, [{ serial: old, reason: 'keyCompromise' }]);
      assert.equal(await storedSerial(engine, 'a.example.com'), old, 'the certificate waits for the budget');
      assert.ok((await detail(engine, 'a.example.com')).request?.revokedAt, 'the request records the revocation');

      engine.clock.advance(HOUR);
      await replaced(engine, 'a.example.com', old);
      assert.equal(engine.issuer.revocations.length, 1, 'revoked once');
    } finally {
      await engine.stop();
    }
  });

  test('a reissue accepted while a renewal is in flight is settled by it; without one the store is read once', async () => {
    const requestStore = new MemoryRequestStore();
    const get = requestStore.get.bind(requestStore);
    let reads = 0;
    requestStore.get = async (hostname) => {
      reads++;
      return get(hostname);
    };
    const engine = await startEngine({ web: [tag('a.example.com')] }, { requests: requestStore });
    try {
      await until(engine, 'a.example.com', 'valid');
      assert.equal(reads, 1, 'a name nobody asked about: one read of the request store, under the lock');
      const old = (await storedSerial(engine, 'a.example.com'))!;
      let answer: CommandAnswer | undefined;
      engine.issuer.onIssue = async () => {
        engine.issuer.onIssue = undefined;
        answer = await command(engine, '/reissue', { hostnames: ['a.example.com'] });
      };
      // 90-day certificate: due with 30 days left.
      engine.clock.advance(60 * DAY);
      await engine.service.renewal.tick();
      const fresh = await replaced(engine, 'a.example.com', old);
      assert.equal(answer?.results[0]?.accepted, true);
      assert.equal(answer?.results[0]?.accepted && answer.results[0].serial, old, 'the reissue named the old serial');
      assert.notEqual(fresh, old);
      assert.deepEqual(
        engine.issuer.orders,
        ['a.example.com', 'a.example.com'],
        'the renewal replaced the serial the reissue named: no third order',
      );
      assert.equal((await detail(engine, 'a.example.com')).request, undefined);
    } finally {
      await engine.stop();
    }
  });

  test('a request recorded by an instance that died is carried out by the next instance', async () => {
    const clock = new ManualClock(START);
    const store = new MemoryCertificateStore();
    const requests = new MemoryRequestStore();
    const current = await makeCertificateData({
      hostname: 'a.example.com',
      notBefore: new Date(clock.nowMs() - DAY),
      obtainedAt: new Date(clock.nowMs() - DAY),
    });
    await store.put(current, 0);
    // What the dead instance wrote to Consul KV: a revocation of the stored certificate.
    requests.plant(
      'a.example.com',
      requestToText({
        hostname: 'a.example.com',
        kind: 'revoke',
        requestedAt: new Date(clock.nowMs() - MINUTE),
        requestedBy: 'instance-that-died',
        replaces: {
          obtainedAt: current.obtainedAt,
          notAfter: current.notAfter,
          serial: serialOf(current.certPem),
          certPem: current.certPem,
        },
        revokeReason: 'cessationOfOperation',
        revokedAt: undefined,
      }),
    );
    const engine = await startEngine({ web: [tag('a.example.com')] }, { clock, store, requests });
    try {
      await replaced(engine, 'a.example.com', serialOf(current.certPem));
      assert.deepEqual(engine.issuer.revocations, [
        { serial: serialOf(current.certPem), reason: 'cessationOfOperation' },
      ]);
      assert.equal(engine.issuer.orders.length, 1);
    } finally {
      await engine.stop();
    }
  });

  test('a revocation of a certificate another instance already replaced revokes the old serial and orders nothing', async () => {
    const clock = new ManualClock(START);
    const store = new MemoryCertificateStore();
    const requests = new MemoryRequestStore();
    const older = await makeCertificateData({
      hostname: 'a.example.com',
      notBefore: new Date(clock.nowMs() - 2 * DAY),
    });
    const newer = await makeCertificateData({
      hostname: 'a.example.com',
      notBefore: new Date(clock.nowMs() - DAY),
      obtainedAt: new Date(clock.nowMs() - DAY),
    });
    await store.put(newer, 0);
    requests.plant(
      'a.example.com',
      requestToText({
        hostname: 'a.example.com',
        kind: 'revoke',
        requestedAt: new Date(clock.nowMs() - 2 * DAY),
        requestedBy: 'instance-a',
        replaces: {
          obtainedAt: new Date(clock.nowMs() - 2 * DAY),
          notAfter: older.notAfter,
          serial: serialOf(older.certPem),
          certPem: older.certPem,
        },
        revokeReason: 'superseded',
        revokedAt: undefined,
      }),
    );
    const engine = await startEngine({ web: [tag('a.example.com')] }, { clock, store, requests });
    try {
      await waitFor('the request carried out', async () => (await requests.get('a.example.com')) === undefined, {
        timeoutMs: 5_000,
        intervalMs: 5,
      });
      assert.deepEqual(engine.issuer.revocations, [{ serial: serialOf(older.certPem), reason: 'superseded' }]);
      assert.deepEqual(engine.issuer.orders, [], 'the stored certificate is already a new one');
      assert.equal(await storedSerial(engine, 'a.example.com'), serialOf(newer.certPem));
    } finally {
      await engine.stop();
    }
  });

  test('commands need the admin token, and names that cannot be done are refused one by one', async () => {
    const engine = await startEngine(
      { web: [tag('a.example.com'), tag('c.example.com')] },
      { store: await storeWith('c.example.com') },
    );
    try {
      await until(engine, 'a.example.com', 'valid');
      assert.equal((await post(engine, '/reissue', { all: true }, null)).status, 401);
      assert.equal((await post(engine, '/reissue', { all: true }, 'a-wrong-token-0123456789')).status, 401);
      const bad = await post(engine, '/revoke', { hostname: 'a.example.com', reason: 'cACompromise' });
      assert.equal(bad.status, 400);
      assert.match(((await bad.json()) as { error: string }).error, /not a reason the CA accepts from a subscriber/);
      const answer = await command(engine, '/reissue', { hostnames: ['nobody.example.com', 'c.example.com'] });
      assert.deepEqual(
        answer.results.map((r) => [r.hostname, r.accepted]),
        [
          ['c.example.com', false],
          ['nobody.example.com', false],
        ],
      );
      assert.match(JSON.stringify(answer.results), /adopt it first \(consul-acme adopt c\.example\.com\)/);
      assert.match(JSON.stringify(answer.results), /not declared/);
    } finally {
      await engine.stop();
    }

    const open = await startEngine({ web: [tag('a.example.com')] }, { env: { CONSUL_ACME_ADMIN_TOKEN: '' } });
    try {
      const res = await post(open, '/reissue', { all: true }, null);
      assert.equal(res.status, 403, 'no admin token set: the commands that change certificates are refused');
    } finally {
      await open.stop();
    }
  });
});

describe('adopt', () => {
  test("by command: the same certificate and key become consul-acme's, then renew on schedule, counted as a renewal", async () => {
    const clock = new ManualClock(START);
    const store = new MemoryCertificateStore();
    const mine = await theirs('adopt.example.com', new Date(clock.nowMs() - DAY), 30);
    store.putUnmanaged('adopt.example.com', mine);
    // One new order per 3 h: the other name spends it, so only a renewal can go.
    const engine = await startEngine(
      { web: [tag('adopt.example.com'), tag('other.example.com')] },
      { clock, store, env: { CONSUL_ACME_BUDGET_NEW_ORDERS: '1/3h' } },
    );
    try {
      await until(engine, 'other.example.com', 'valid');
      assert.equal(engine.status('adopt.example.com')?.state, 'unmanaged');
      const answer = await command(engine, '/adopt', { hostnames: ['adopt.example.com'] });
      assert.equal(answer.results[0]?.accepted, true);
      const adopted = await until(engine, 'adopt.example.com', 'valid');
      assert.ok(adopted.adoptedAt, 'the status shows the adoption');
      const record = await store.get('adopt.example.com');
      assert.equal(record?.managed, true);
      assert.equal(record?.certificate?.certPem, mine.certPem, 'the same certificate');
      assert.equal(record?.certificate?.keyPem, mine.keyPem, 'the same key');
      assert.deepEqual(engine.issuer.orders, ['other.example.com'], 'adoption orders nothing');

      // 30-day certificate: due with 10 days left.
      engine.clock.advance(20 * DAY);
      await engine.service.renewal.tick();
      await replaced(engine, 'adopt.example.com', serialOf(mine.certPem));
      assert.deepEqual(engine.issuer.orders, ['other.example.com', 'adopt.example.com']);
      assert.equal(engine.status('adopt.example.com')?.adoptedAt, undefined, 'a renewed certificate is ours');
    } finally {
      await engine.stop();
    }
  });

  test('by setting: a declared record is adopted without a command; an expired one is not, and the status says why', async () => {
    const clock = new ManualClock(START);
    const store = new MemoryCertificateStore();
    const good = await theirs('good.example.com', new Date(clock.nowMs() - DAY));
    const expired = await theirs('old.example.com', new Date(clock.nowMs() - 100 * DAY));
    store.putUnmanaged('good.example.com', good);
    store.putUnmanaged('old.example.com', expired);
    store.putUnmanaged('stray.example.com', await theirs('stray.example.com', new Date(clock.nowMs() - DAY)));
    const engine = await startEngine(
      { web: [tag('good.example.com'), tag('old.example.com')] },
      { clock, store, env: { CONSUL_ACME_ADOPT: '*.example.com' } },
    );
    try {
      const adopted = await until(engine, 'good.example.com', 'valid');
      assert.ok(adopted.adoptedAt);
      assert.equal((await store.get('good.example.com'))?.certificate?.certPem, good.certPem);
      const refused = await until(engine, 'old.example.com', 'unmanaged');
      assert.match(refused.adoption ?? '', /not adopted: Expired/);
      assert.equal((await store.get('stray.example.com'))?.managed, false, 'a name nobody declares is left alone');
      assert.deepEqual(engine.issuer.orders, []);
    } finally {
      await engine.stop();
    }
  });

  test('a refused adoption command names the reason per record', async () => {
    const clock = new ManualClock(START);
    const store = new MemoryCertificateStore();
    store.putUnmanaged('old.example.com', await theirs('old.example.com', new Date(clock.nowMs() - 100 * DAY)));
    const engine = await startEngine({ web: [tag('old.example.com'), tag('a.example.com')] }, { clock, store });
    try {
      await until(engine, 'a.example.com', 'valid');
      const answer = await command(engine, '/adopt', { hostnames: ['old.example.com', 'a.example.com'] });
      assert.deepEqual(
        answer.results.map((r) => [r.hostname, r.accepted ? 'accepted' : r.why]),
        [
          ['a.example.com', "the record is consul-acme's already"],
          ['old.example.com', 'Expired: its certificate has expired'],
        ],
      );
      await settle();
      assert.equal((await store.get('old.example.com'))?.managed, false);
    } finally {
      await engine.stop();
    }
  });
});

describe('the command line against an instance', () => {
  function io(lines: string[]): OperateIo {
    return {
      out: (line) => lines.push(line),
      now: () => Date.now(),
      sleep: (ms) => new Promise((resolve) => setTimeout(resolve, Math.min(ms, 20))),
    };
  }

  function parsed(engine: Engine, argv: string[]): Extract<CliCommand, { kind: 'operate' }> {
    const command = parseCli(argv, { CONSUL_ACME_ADMIN_URL: engine.adminUrl, CONSUL_ACME_ADMIN_TOKEN: TOKEN });
    assert.equal(command.kind, 'operate', JSON.stringify(command));
    return command;
  }

  test('reissue prints the serial it replaces, then the new one, and exits 0', async () => {
    const engine = await startEngine({ web: [tag('a.example.com')] });
    try {
      await until(engine, 'a.example.com', 'valid');
      const old = (await storedSerial(engine, 'a.example.com'))!;
      engine.clock.advance(MINUTE);
      const lines: string[] = [];
      assert.equal(await runOperation(parsed(engine, ['reissue', 'a.example.com']), io(lines)), 0);
      const now = (await storedSerial(engine, 'a.example.com'))!;
      assert.deepEqual(lines, [
        `a.example.com: reissue requested, replacing serial ${old}`,
        `a.example.com: new serial ${now} (was ${old})`,
      ]);
    } finally {
      await engine.stop();
    }
  });

  test('a name still waiting when the wait ends is reported with why; the command exits 1 and the request is kept', async () => {
    const engine = await startEngine(
      { web: [tag('a.example.com')] },
      { env: { CONSUL_ACME_BUDGET_FAILED_AUTHORIZATIONS: '1/1h' } },
    );
    try {
      await until(engine, 'a.example.com', 'valid');
      engine.issuer.failWith(
        new AcmeProblemError('ACME_PROBLEM', 'validation failed', {
          problemType: 'urn:ietf:params:acme:error:unauthorized',
        }),
      );
      engine.clock.advance(MINUTE);
      await command(engine, '/reissue', { hostnames: ['a.example.com'] });
      await until(engine, 'a.example.com', 'failed');
      const lines: string[] = [];
      const code = await runOperation(
        parsed(engine, ['revoke', 'a.example.com', '--reason', 'superseded', '--wait', '1s']),
        io(lines),
      );
      assert.equal(code, 1);
      assert.match(lines.join('\n'), /^a\.example\.com: waiting: waiting: budget failed-authorizations .* spent/m);
      assert.match(lines.at(-1) ?? '', /^a\.example\.com: still waiting after 1s: .*The request is kept/);
      assert.equal((await engine.requests.get('a.example.com'))?.kind, 'revoke');
    } finally {
      await engine.stop();
    }
  });

  test('a refused name makes the command exit 1, with the reason', async () => {
    const engine = await startEngine({ web: [tag('a.example.com')] });
    try {
      const lines: string[] = [];
      assert.equal(await runOperation(parsed(engine, ['adopt', 'nothing.example.com', '--no-wait']), io(lines)), 1);
      assert.deepEqual(lines, ['nothing.example.com: refused: nothing is stored under that name']);
    } finally {
      await engine.stop();
    }
  });
});
