/**
 * AcmeIssuer against real Pebble 2.4.0 doing real HTTP-01 validation against a real responder.
 * Every issuance is bounded: a Pebble that stops answering fails the test with
 * "Pebble stopped answering" and its logs, rather than hanging the run.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate, createPrivateKey, generateKeyPairSync, randomBytes } from 'node:crypto';
import * as acme from 'acme-client';
import { createServer, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { AcmeIssuer, type AcmeIssuerOptions } from '../../src/adapters/acme/acme-issuer.js';
import { ACME_RETRY_MAX_ATTEMPTS, ACME_RETRY_TOTAL_MS } from '../../src/adapters/acme/acme-http.js';
import type { PendingOrder } from '../../src/domain/certificate.js';
import { MemoryChallengeStore } from '../../src/adapters/memory/memory-challenge-store.js';
import type { AccountStore, AcmeAccount } from '../../src/ports/account-store.js';
import type { ChallengeStore } from '../../src/ports/challenge-store.js';
import type { IssuedCertificate, IssueHooks } from '../../src/ports/issuer.js';
import { AbortedError, AcmeProblemError } from '../../src/errors.js';
import { createLogger, silentLogger } from '../../src/logging.js';
import { startPebble, type PebbleInstance } from '../support/pebble.js';
import { startChallengeResponder, type ChallengeResponder } from '../support/challenge-responder.js';
import { freePort } from '../support/net.js';
import { startAcmeProxy, type AcmeProxy } from '../support/acme-proxy.js';
import { waitFor } from '../support/wait.js';

const ISSUE_DEADLINE_MS = 30_000;
const TEST_TIMEOUT_MS = 90_000;
const ACME_URN = /^urn:ietf:params:acme:error:[A-Za-z]+$/;
/** For tests about something else than write-ahead: nothing to make durable. */
const NO_HOOKS: IssueHooks = { beforeFinalize: async () => {} };

/** An AccountStore that counts how often an account is created (to show one key serves every issuer). */
class TestAccountStore implements AccountStore {
  private readonly accounts = new Map<string, AcmeAccount>();
  createCalls = 0;
  async get(directoryUrl: string): Promise<AcmeAccount | undefined> {
    const account = this.accounts.get(directoryUrl);
    return account && { ...account };
  }
  async create(account: AcmeAccount): Promise<AcmeAccount> {
    this.createCalls++;
    const existing = this.accounts.get(account.directoryUrl);
    if (existing) return { ...existing };
    this.accounts.set(account.directoryUrl, { ...account });
    return { ...account };
  }
  async update(account: AcmeAccount): Promise<void> {
    this.accounts.set(account.directoryUrl, { ...account });
  }
}

/** A ChallengeStore that lets a test act when a token is written or read. */
class HookedChallengeStore implements ChallengeStore {
  onPut: ((token: string) => void) | undefined;
  onGet: ((token: string) => void) | undefined;
  dropPuts = false;
  constructor(readonly inner: MemoryChallengeStore) {}
  async put(token: string, keyAuthorization: string): Promise<void> {
    if (!this.dropPuts) await this.inner.put(token, keyAuthorization);
    this.onPut?.(token);
  }
  async get(token: string): Promise<string | undefined> {
    this.onGet?.(token);
    return this.inner.get(token);
  }
  async delete(token: string): Promise<void> {
    await this.inner.delete(token);
  }
  prune(olderThanMs: number): Promise<number> {
    return this.inner.prune(olderThanMs);
  }
  reassert(): Promise<number> {
    return this.inner.reassert();
  }
}

type Requests = { endpoint: string; status: number | 'error' }[];

function makeIssuer(
  pebble: Pick<PebbleInstance, 'directoryUrl' | 'caBundlePem'>,
  overrides: Partial<AcmeIssuerOptions> & Pick<AcmeIssuerOptions, 'accountStore' | 'challengeStore'>,
  requests?: Requests,
): AcmeIssuer {
  return new AcmeIssuer({
    directoryUrl: pebble.directoryUrl,
    caBundlePem: pebble.caBundlePem,
    pollIntervalMinMs: 50,
    pollIntervalMaxMs: 500,
    pollAttempts: 20,
    requestTimeoutMs: 10_000,
    logger: silentLogger(),
    onRequest: requests ? (endpoint, status) => requests.push({ endpoint, status }) : undefined,
    ...overrides,
  });
}

/** Bounds a promise; when the deadline passes, fails with "Pebble stopped answering" and the logs. */
async function bounded<T>(pebble: PebbleInstance, promise: Promise<T>, ms = ISSUE_DEADLINE_MS): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`Pebble stopped answering within ${ms} ms\n${pebble.logs().slice(-4000)}`)),
      ms,
    );
  });
  try {
    return await Promise.race([promise, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  assert.fail('expected a rejection');
}

function splitPem(pem: string): string[] {
  return pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
}

/** Checks leaf → intermediate(s) → Pebble root with signatures and issuer names. */
async function assertChainsToPebbleRoot(pebble: PebbleInstance, issued: IssuedCertificate): Promise<X509Certificate> {
  const chain = splitPem(issued.certPem).map((pem) => new X509Certificate(pem));
  const [root] = splitPem(await pebble.rootsPem()).map((pem) => new X509Certificate(pem));
  assert.ok(root, 'Pebble has a root');
  assert.ok(chain.length >= 2, `leaf and intermediate returned, got ${chain.length} certificates`);
  const path = [...chain, root];
  for (let i = 0; i + 1 < path.length; i++) {
    const child = path[i]!;
    const parent = path[i + 1]!;
    assert.ok(child.checkIssued(parent), `certificate ${i} names ${parent.subject} as issuer`);
    assert.ok(child.verify(parent.publicKey), `certificate ${i} is signed by ${parent.subject}`);
  }
  assert.ok(root.verify(root.publicKey), 'the root is self-signed');
  const intermediates = splitPem(await pebble.intermediatesPem()).map((pem) => new X509Certificate(pem).fingerprint256);
  assert.ok(intermediates.includes(chain[1]!.fingerprint256), 'the chain holds Pebble intermediate');
  return chain[0]!;
}

describe('AcmeIssuer against Pebble', () => {
  let pebble: PebbleInstance;
  let responder: ChallengeResponder;
  const tokens = new MemoryChallengeStore();
  const challengeStore = new HookedChallengeStore(tokens);
  const issuers: AcmeIssuer[] = [];
  const track = (issuer: AcmeIssuer): AcmeIssuer => {
    issuers.push(issuer);
    return issuer;
  };

  before(async () => {
    responder = await startChallengeResponder(challengeStore);
    pebble = await startPebble({ httpPort: responder.port });
  });

  after(async () => {
    for (const issuer of issuers) issuer.close();
    await pebble?.stop();
    await responder?.stop();
  });

  it(
    'issues an ECDSA P-256 certificate for exactly the name asked, chaining to Pebble root, with a matching key',
    { timeout: TEST_TIMEOUT_MS },
    async () => {
      const issuer = track(makeIssuer(pebble, { accountStore: new TestAccountStore(), challengeStore }));
      const issued = await bounded(
        pebble,
        issuer.issue({ hostnames: ['app.example.test'], keyType: 'ec-p256' }, NO_HOOKS),
      );

      const leaf = await assertChainsToPebbleRoot(pebble, issued);
      assert.equal(leaf.subjectAltName, 'DNS:app.example.test');
      assert.ok(leaf.checkPrivateKey(createPrivateKey(issued.keyPem)), 'the key matches the certificate');
      assert.equal(leaf.publicKey.asymmetricKeyType, 'ec');
      assert.equal(leaf.publicKey.asymmetricKeyDetails?.namedCurve, 'prime256v1');
      assert.equal(issued.directoryUrl, pebble.directoryUrl);
      assert.match(issued.issuer, /^Pebble Intermediate CA/);
      assert.equal(issued.notAfter.getTime(), new Date(leaf.validTo).getTime());
      assert.equal(issued.notBefore.getTime(), new Date(leaf.validFrom).getTime());
      assert.ok(
        responder.requests().some((r) => r.host.startsWith('app.example.test') && r.status === 200),
        'Pebble fetched the token from our responder',
      );
      assert.deepEqual(tokens.tokens(), [], 'no challenge token is left behind');
    },
  );

  it(
    'issues an RSA 2048 certificate with all names as SANs and the first as CN',
    { timeout: TEST_TIMEOUT_MS },
    async () => {
      const issuer = track(makeIssuer(pebble, { accountStore: new TestAccountStore(), challengeStore }));
      const issued = await bounded(
        pebble,
        issuer.issue({ hostnames: ['rsa.example.test', 'www.rsa.example.test'], keyType: 'rsa-2048' }, NO_HOOKS),
      );

      const leaf = await assertChainsToPebbleRoot(pebble, issued);
      assert.equal(leaf.publicKey.asymmetricKeyType, 'rsa');
      assert.equal(leaf.publicKey.asymmetricKeyDetails?.modulusLength, 2048);
      assert.ok(leaf.checkPrivateKey(createPrivateKey(issued.keyPem)));
      assert.deepEqual(leaf.subjectAltName?.split(', ').sort(), ['DNS:rsa.example.test', 'DNS:www.rsa.example.test']);
      assert.deepEqual(tokens.tokens(), []);
    },
  );

  it(
    'registers one account for concurrent first uses, and a second issuer sharing the AccountStore reuses it',
    { timeout: TEST_TIMEOUT_MS },
    async () => {
      const accountStore = new TestAccountStore();
      const firstRequests: Requests = [];
      const secondRequests: Requests = [];
      const first = track(makeIssuer(pebble, { accountStore, challengeStore }, firstRequests));
      await bounded(
        pebble,
        Promise.all([
          first.issue({ hostnames: ['one.shared.example.test'], keyType: 'ec-p256' }, NO_HOOKS),
          first.issue({ hostnames: ['two.shared.example.test'], keyType: 'ec-p256' }, NO_HOOKS),
        ]),
      );
      const account = await accountStore.get(pebble.directoryUrl);
      assert.ok(account?.accountUrl, 'the account URL is stored');
      assert.equal(accountStore.createCalls, 1, 'one account key created');
      // One lookup (onlyReturnExisting, answered 400 accountDoesNotExist), then one registration (201).
      assert.deepEqual(
        firstRequests.filter((r) => r.endpoint === 'newAccount').map((r) => r.status),
        [400, 201],
        'one lookup, then one registration',
      );

      const second = track(makeIssuer(pebble, { accountStore, challengeStore }, secondRequests));
      await bounded(pebble, second.issue({ hostnames: ['three.shared.example.test'], keyType: 'ec-p256' }, NO_HOOKS));
      assert.equal(
        secondRequests.filter((r) => r.endpoint === 'newAccount').length,
        0,
        'the second issuer does not register',
      );
      assert.equal(
        (await accountStore.get(pebble.directoryUrl))?.accountUrl,
        account.accountUrl,
        'still one account URL',
      );
      assert.equal(accountStore.createCalls, 1);
    },
  );

  const failures = [
    {
      name: 'a name that resolves where no responder listens',
      hostnames: ['nobody.example.test'],
      failing: 'nobody.example.test',
      arrange: async () => pebble.addA('nobody.example.test', '127.0.0.2'),
    },
    {
      name: 'a responder that does not have the token',
      hostnames: ['lost.example.test'],
      failing: 'lost.example.test',
      arrange: async () => {
        challengeStore.dropPuts = true;
      },
    },
    {
      name: 'one unreachable name in a two-name order',
      hostnames: ['fine.example.test', 'nobody2.example.test'],
      failing: 'nobody2.example.test',
      arrange: async () => pebble.addA('nobody2.example.test', '127.0.0.2'),
    },
  ];
  for (const failure of failures) {
    it(
      `rejects with an ACME problem naming the host for ${failure.name}, leaving no token`,
      { timeout: TEST_TIMEOUT_MS },
      async () => {
        const issuer = track(makeIssuer(pebble, { accountStore: new TestAccountStore(), challengeStore }));
        await failure.arrange();
        try {
          const err = await bounded(
            pebble,
            rejection(issuer.issue({ hostnames: failure.hostnames, keyType: 'ec-p256' }, NO_HOOKS)),
          );
          assert.ok(err instanceof AcmeProblemError, `an AcmeProblemError, got ${String(err)}`);
          assert.equal(err.code, 'ACME_PROBLEM');
          assert.match(err.problemType ?? '', ACME_URN);
          assert.ok(err.message.includes(`for ${failure.failing}`), err.message);
          assert.equal(err.retryable, true, 'the name may become reachable later');
        } finally {
          challengeStore.dropPuts = false;
        }
        assert.deepEqual(tokens.tokens(), []);
      },
    );
  }

  const aborts = [
    // Before validation the authorization is pending and must be deactivated; during validation
    // it may already be valid by the time the issuer looks, and a valid one is left alone.
    { name: 'after the token is published', hook: 'onPut' as const, deactivates: true },
    { name: 'while the CA validates', hook: 'onGet' as const, deactivates: false },
  ];
  for (const abort of aborts) {
    const also = abort.deactivates ? ' and deactivating the pending authorization' : '';
    it(
      `rejects with AbortedError when aborted ${abort.name}, leaving no token${also}`,
      { timeout: TEST_TIMEOUT_MS },
      async () => {
        const lines: string[] = [];
        const logger = createLogger('debug', { write: (line: string) => lines.push(line) });
        const issuer = track(makeIssuer(pebble, { accountStore: new TestAccountStore(), challengeStore, logger }));
        const controller = new AbortController();
        challengeStore[abort.hook] = () => controller.abort(new Error('shutdown'));
        try {
          const err = await bounded(
            pebble,
            rejection(
              issuer.issue({ hostnames: ['abort.example.test'], keyType: 'ec-p256' }, NO_HOOKS, controller.signal),
            ),
          );
          assert.ok(err instanceof AbortedError, `an AbortedError, got ${String(err)}`);
          assert.match(err.message, /abort\.example\.test/);
        } finally {
          challengeStore[abort.hook] = undefined;
        }
        assert.deepEqual(tokens.tokens(), []);
        if (!abort.deactivates) return;
        const events = lines.map((line) => JSON.parse(line) as { msg: string; identifier?: string });
        assert.ok(
          events.some((e) => e.msg === 'acme authorization deactivated' && e.identifier === 'abort.example.test'),
          `deactivated: ${events.map((e) => e.msg).join(' / ')}`,
        );
      },
    );
  }

  it('registers again when the CA no longer knows the stored account', { timeout: TEST_TIMEOUT_MS }, async () => {
    const accountStore = new TestAccountStore();
    const key = await acme.crypto.createPrivateEcdsaKey('P-256');
    const forgotten = new URL('/my-account/0000000000000000', pebble.directoryUrl).href;
    await accountStore.create({
      directoryUrl: pebble.directoryUrl,
      accountKeyPem: key.toString(),
      accountUrl: forgotten,
      email: undefined,
      createdAt: new Date(),
    });
    const issuer = track(makeIssuer(pebble, { accountStore, challengeStore }));
    const err = await bounded(
      pebble,
      rejection(issuer.issue({ hostnames: ['forgotten.example.test'], keyType: 'ec-p256' }, NO_HOOKS)),
    );
    assert.ok(err instanceof AcmeProblemError, `an AcmeProblemError, got ${String(err)}`);
    assert.equal(err.problemType, 'urn:ietf:params:acme:error:accountDoesNotExist');
    assert.equal(err.retryable, true);

    await bounded(pebble, issuer.issue({ hostnames: ['forgotten.example.test'], keyType: 'ec-p256' }, NO_HOOKS));
    const stored = await accountStore.get(pebble.directoryUrl);
    assert.ok(
      stored?.accountUrl && stored.accountUrl !== forgotten,
      `a new account URL is stored: ${stored?.accountUrl}`,
    );
    assert.equal(stored.accountKeyPem, key.toString(), 'with the same key');
  });

  it('rejects at once with AbortedError when the signal has already fired', async () => {
    const requests: Requests = [];
    const issuer = track(makeIssuer(pebble, { accountStore: new TestAccountStore(), challengeStore }, requests));
    const err = await rejection(
      issuer.issue({ hostnames: ['early.example.test'], keyType: 'ec-p256' }, NO_HOOKS, AbortSignal.abort()),
    );
    assert.ok(err instanceof AbortedError);
    assert.deepEqual(requests, [], 'no request was sent');
  });

  it('reports every request to onRequest with a directory resource name', { timeout: TEST_TIMEOUT_MS }, async () => {
    const requests: Requests = [];
    const issuer = track(makeIssuer(pebble, { accountStore: new TestAccountStore(), challengeStore }, requests));
    await bounded(pebble, issuer.issue({ hostnames: ['metrics.example.test'], keyType: 'ec-p256' }, NO_HOOKS));
    const endpoints = new Set(requests.map((r) => r.endpoint));
    for (const expected of [
      'directory',
      'newNonce',
      'newAccount',
      'newOrder',
      'authorization',
      'challenge',
      'finalize',
      'order',
      'certificate',
    ]) {
      assert.ok(endpoints.has(expected), `saw ${expected} in ${[...endpoints].join(', ')}`);
    }
    assert.ok(!endpoints.has('other'), `every request is named: ${[...endpoints].join(', ')}`);
  });

  it(
    'reuses its connections and nonces: 3 certificates one after another over fewer connections than certificates, with 1 newNonce request',
    { timeout: TEST_TIMEOUT_MS },
    async () => {
      const requests: Requests = [];
      const issuer = track(makeIssuer(pebble, { accountStore: new TestAccountStore(), challengeStore }, requests));
      for (const n of [1, 2, 3]) {
        await bounded(pebble, issuer.issue({ hostnames: [`reuse${n}.example.test`], keyType: 'ec-p256' }, NO_HOOKS));
      }
      assert.ok(requests.length >= 20, `${requests.length} requests`);
      assert.ok(
        issuer.connectionsOpened() < 3,
        `${issuer.connectionsOpened()} connections for ${requests.length} requests`,
      );
      assert.equal(
        requests.filter((r) => r.endpoint === 'newNonce').length,
        1,
        'after the first, every nonce came with an earlier answer',
      );
    },
  );

  describe('with a second Pebble that requires external account binding', () => {
    let eabPebble: PebbleInstance;
    const eab = { kid: 'kid-consul-acme', hmacKey: randomBytes(32).toString('base64url') };

    before(async () => {
      eabPebble = await startPebble({ httpPort: responder.port, eab: { [eab.kid]: eab.hmacKey } });
    });
    after(async () => {
      await eabPebble?.stop();
    });

    it('issues when the issuer has the kid and HMAC key', { timeout: TEST_TIMEOUT_MS }, async () => {
      const issuer = track(makeIssuer(eabPebble, { accountStore: new TestAccountStore(), challengeStore, eab }));
      const issued = await bounded(
        eabPebble,
        issuer.issue({ hostnames: ['eab.example.test'], keyType: 'ec-p256' }, NO_HOOKS),
      );
      await assertChainsToPebbleRoot(eabPebble, issued);
    });

    it('fails with a clear, non-retryable problem without them', { timeout: TEST_TIMEOUT_MS }, async () => {
      const issuer = track(makeIssuer(eabPebble, { accountStore: new TestAccountStore(), challengeStore }));
      const err = await bounded(
        eabPebble,
        rejection(issuer.issue({ hostnames: ['noeab.example.test'], keyType: 'ec-p256' }, NO_HOOKS)),
      );
      assert.ok(err instanceof AcmeProblemError, `an AcmeProblemError, got ${String(err)}`);
      assert.equal(err.problemType, 'urn:ietf:params:acme:error:externalAccountRequired');
      assert.equal(err.retryable, false);
      assert.match(err.message, /noeab\.example\.test/);
      assert.match(err.message, /externalAccountBinding/);
    });

    it(
      'serves two CAs with different TLS certificates from one process at once',
      { timeout: TEST_TIMEOUT_MS },
      async () => {
        const plain = track(makeIssuer(pebble, { accountStore: new TestAccountStore(), challengeStore }));
        const bound = track(makeIssuer(eabPebble, { accountStore: new TestAccountStore(), challengeStore, eab }));
        const [a, b] = await bounded(
          pebble,
          Promise.all([
            plain.issue({ hostnames: ['first-ca.example.test'], keyType: 'ec-p256' }, NO_HOOKS),
            bound.issue({ hostnames: ['second-ca.example.test'], keyType: 'ec-p256' }, NO_HOOKS),
          ]),
        );
        await assertChainsToPebbleRoot(pebble, a);
        await assertChainsToPebbleRoot(eabPebble, b);
      },
    );
  });
});

describe('AcmeIssuer with Pebble rejecting 5 % of nonces (its default)', () => {
  let pebble: PebbleInstance;
  let responder: ChallengeResponder;
  let issuer: AcmeIssuer | undefined;
  const tokens = new MemoryChallengeStore();

  before(async () => {
    responder = await startChallengeResponder(tokens);
    pebble = await startPebble({ httpPort: responder.port, nonceRejectPercent: 5 });
  });
  after(async () => {
    issuer?.close();
    await pebble?.stop();
    await responder?.stop();
  });

  it('still issues 5 certificates (badNonce is retried)', { timeout: TEST_TIMEOUT_MS }, async () => {
    issuer = makeIssuer(pebble, { accountStore: new TestAccountStore(), challengeStore: tokens });
    const names = [1, 2, 3, 4, 5].map((n) => `nonce${n}.example.test`);
    const issued = await bounded(
      pebble,
      Promise.all(names.map((name) => issuer!.issue({ hostnames: [name], keyType: 'ec-p256' }, NO_HOOKS))),
    );
    assert.deepEqual(
      issued.map((c) => new X509Certificate(c.certPem).subjectAltName),
      names.map((n) => `DNS:${n}`),
    );
    assert.deepEqual(tokens.tokens(), []);
  });
});

describe('AcmeIssuer when the CA cannot be reached', () => {
  const sockets = new Set<Socket>();
  let silent: Server;

  before(async () => {
    // Accepts connections and never answers.
    silent = createServer((socket) => {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
    });
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', () => resolve()));
  });
  after(async () => {
    for (const socket of sockets) socket.destroy();
    await new Promise<void>((resolve) => silent.close(() => resolve()));
  });

  const cases = [
    {
      name: 'nothing listens',
      url: async () => `https://127.0.0.1:${await freePort()}/dir`,
      message: /could not be reached/,
    },
    {
      name: 'the server never answers',
      url: async () => `https://127.0.0.1:${(silent.address() as AddressInfo).port}/dir`,
      message: /timed out/,
    },
  ];
  for (const c of cases) {
    it(
      `rejects with a retryable ACME_UNREACHABLE naming the host when ${c.name}, after ${ACME_RETRY_MAX_ATTEMPTS} tries`,
      { timeout: 30_000 },
      async () => {
        const requests: Requests = [];
        const issuer = new AcmeIssuer({
          directoryUrl: await c.url(),
          accountStore: new TestAccountStore(),
          challengeStore: new MemoryChallengeStore(),
          pollIntervalMinMs: 50,
          pollIntervalMaxMs: 500,
          pollAttempts: 5,
          requestTimeoutMs: 500,
          logger: silentLogger(),
          onRequest: (endpoint, status) => requests.push({ endpoint, status }),
        });
        try {
          const err = await rejection(issuer.issue({ hostnames: ['down.example.test'], keyType: 'ec-p256' }, NO_HOOKS));
          assert.ok(err instanceof AcmeProblemError, `an AcmeProblemError, got ${String(err)}`);
          assert.equal(err.code, 'ACME_UNREACHABLE');
          assert.equal(err.retryable, true);
          assert.match(err.message, /down\.example\.test/);
          assert.match(err.message, c.message);
          assert.deepEqual(
            requests,
            Array.from({ length: ACME_RETRY_MAX_ATTEMPTS }, () => ({ endpoint: 'directory', status: 'error' })),
            'the directory GET was tried a few times, then given up',
          );
        } finally {
          issuer.close();
        }
      },
    );
  }
});

describe('AcmeIssuer through a proxy that counts what Pebble receives and injects faults', () => {
  let pebble: PebbleInstance;
  let responder: ChallengeResponder;
  let proxy: AcmeProxy;
  const tokens = new MemoryChallengeStore();
  const challengeStore = new HookedChallengeStore(tokens);
  const accountStore = new TestAccountStore();
  const issuers: AcmeIssuer[] = [];
  /** Short enough that a stalled request fails well within a test, long enough for Pebble on a busy machine. */
  const REQUEST_TIMEOUT_MS = 3_000;
  const issuerFor = (requests?: Requests): AcmeIssuer => {
    const issuer = makeIssuer(proxy, { accountStore, challengeStore, requestTimeoutMs: REQUEST_TIMEOUT_MS }, requests);
    issuers.push(issuer);
    return issuer;
  };
  const statusesOf = (requests: Requests, endpoint: string): Array<number | 'error'> =>
    requests.filter((r) => r.endpoint === endpoint).map((r) => r.status);
  /** The path of the order whose fetches the proxy recorded for `hostname` (one order expected). */
  const orderPathsOf = (hostname: string): string[] => [
    ...new Set(
      proxy
        .requests()
        .filter((r) => r.endpoint === 'order' && r.identifiers.includes(hostname))
        .map((r) => r.path),
    ),
  ];
  const assertIssuedFor = (issued: IssuedCertificate, hostname: string, keyPem = issued.keyPem): void => {
    const leaf = new X509Certificate(issued.certPem);
    assert.equal(leaf.subjectAltName, `DNS:${hostname}`);
    assert.ok(leaf.checkPrivateKey(createPrivateKey(keyPem)), 'the certificate is for the key');
    assert.equal(issued.keyPem, keyPem);
    assert.equal(issued.serial, leaf.serialNumber.toLowerCase().replace(/^0+/, ''));
    assert.equal(issued.directoryUrl, proxy.directoryUrl);
  };
  const pendingFor = (overrides: Partial<PendingOrder>): PendingOrder => ({
    hostname: 'resume.example.test',
    hostnames: ['resume.example.test'],
    directoryUrl: proxy.directoryUrl,
    orderUrl: new URL('/my-order/0000000000', proxy.directoryUrl).href,
    keyPem: generateKeyPairSync('ec', { namedCurve: 'P-256' })
      .privateKey.export({ type: 'pkcs8', format: 'pem' })
      .toString(),
    keyType: 'ec-p256',
    createdAt: new Date(),
    ...overrides,
  });

  before(async () => {
    responder = await startChallengeResponder(challengeStore);
    pebble = await startPebble({ httpPort: responder.port });
    proxy = await startAcmeProxy({ directoryUrl: pebble.directoryUrl, caBundlePem: pebble.caBundlePem });
  });
  after(async () => {
    for (const issuer of issuers) issuer.close();
    await proxy?.close();
    await pebble?.stop();
    await responder?.stop();
  });

  it(
    'obtains the certificate after two 503 answers to its download, from 1 order and 1 finalize',
    { timeout: TEST_TIMEOUT_MS },
    async () => {
      const hostname = 'download503.example.test';
      const requests: Requests = [];
      const issuer = issuerFor(requests);
      proxy.failNext({ endpoint: 'certificate', status: 503, times: 2 });
      const issued = await bounded(pebble, issuer.issue({ hostnames: [hostname], keyType: 'ec-p256' }, NO_HOOKS));
      assertIssuedFor(issued, hostname);
      assert.deepEqual(proxy.pendingFaults(), [], 'both 503s were answered');
      assert.equal(proxy.newOrders(hostname).length, 1, 'Pebble saw 1 new order');
      assert.equal(proxy.finalizations(hostname).length, 1, 'Pebble saw 1 finalize');
      assert.deepEqual(statusesOf(requests, 'certificate'), [503, 503, 200], 'each send is reported, retries too');
    },
  );

  it(
    'joins the account another instance registered between its look-up and its own registration',
    { timeout: TEST_TIMEOUT_MS },
    async () => {
      // One key, two issuers (two instances sharing the account store). A looks the account up
      // (none yet), then its registration is held until B has registered the same key: the CA then
      // answers A's registration with 200 and the existing account, not 201.
      const accountStore = new TestAccountStore();
      const a = makeIssuer(proxy, { accountStore, challengeStore });
      const b = makeIssuer(proxy, { accountStore, challengeStore });
      issuers.push(a, b);
      let bRegistered!: () => void;
      const bDone = new Promise<void>((resolve) => {
        bRegistered = resolve;
      });
      const newAccountsBefore = proxy.requests().filter((r) => r.endpoint === 'newAccount').length;
      proxy.holdNext({ endpoint: 'newAccount', after: 1, until: bDone });
      const aIssued = a.issue({ hostnames: ['joiner-a.example.test'], keyType: 'ec-p256' }, NO_HOOKS);
      await waitFor(
        'A to send its registration',
        () => proxy.requests().filter((r) => r.endpoint === 'newAccount').length >= newAccountsBefore + 2,
      );
      assertIssuedFor(
        await bounded(pebble, b.issue({ hostnames: ['joiner-b.example.test'], keyType: 'ec-p256' }, NO_HOOKS)),
        'joiner-b.example.test',
      );
      bRegistered();
      assertIssuedFor(await bounded(pebble, aIssued), 'joiner-a.example.test');
      const stored = await accountStore.get(proxy.directoryUrl);
      assert.ok(stored?.accountUrl, 'one account URL is stored, shared by both');
    },
  );

  const faults = [
    { name: '503 twice on order polls', inject: () => proxy.failNext({ endpoint: 'order', times: 2 }) },
    {
      name: '503 twice on authorization polls',
      // The first authorization fetch comes right after the new order; the polls follow the challenge.
      inject: () => proxy.failNext({ endpoint: 'authorization', after: 1, times: 2 }),
    },
    { name: 'a timeout on the certificate download', inject: () => proxy.stallNext({ endpoint: 'certificate' }) },
    { name: 'a timeout on an order fetch', inject: () => proxy.stallNext({ endpoint: 'order' }) },
    { name: 'a timeout on an authorization fetch', inject: () => proxy.stallNext({ endpoint: 'authorization' }) },
    { name: 'a 503 on the directory', inject: () => proxy.failNext({ endpoint: 'directory' }) },
    // Nonces come from earlier answers when the issuer has one: a new issuer has none.
    { name: 'a 503 on newNonce', inject: () => proxy.failNext({ endpoint: 'newNonce' }) },
  ];
  faults.forEach((fault, i) => {
    it(
      `places exactly 1 order and obtains the certificate despite ${fault.name}`,
      { timeout: TEST_TIMEOUT_MS },
      async () => {
        const hostname = `fault${i}.example.test`;
        const requests: Requests = [];
        const issuer = issuerFor(requests); // a new issuer: its first requests fetch the directory and a nonce
        fault.inject();
        const issued = await bounded(pebble, issuer.issue({ hostnames: [hostname], keyType: 'ec-p256' }, NO_HOOKS));
        assertIssuedFor(issued, hostname);
        assert.deepEqual(proxy.pendingFaults(), [], 'the fault was hit');
        assert.equal(proxy.newOrders(hostname).length, 1, 'exactly 1 new order');
        assert.equal(proxy.finalizations(hostname).length, 1, 'exactly 1 finalize');
        assert.ok(
          requests.some((r) => r.status === 'error' || r.status === 503),
          `the failure was seen and reported: ${JSON.stringify(requests)}`,
        );
      },
    );
  });

  it(
    `rejects at once with ACME_UNREACHABLE carrying a Retry-After longer than the ${ACME_RETRY_TOTAL_MS / 1000} s bound, without a second order`,
    { timeout: TEST_TIMEOUT_MS },
    async () => {
      const hostname = 'retryafter.example.test';
      const requests: Requests = [];
      const issuer = issuerFor(requests);
      proxy.failNext({ endpoint: 'order', status: 503, retryAfterSeconds: 120 });
      const err = await bounded(
        pebble,
        rejection(issuer.issue({ hostnames: [hostname], keyType: 'ec-p256' }, NO_HOOKS)),
      );
      assert.ok(err instanceof AcmeProblemError, `an AcmeProblemError, got ${String(err)}`);
      assert.equal(err.code, 'ACME_UNREACHABLE');
      assert.equal(err.retryable, true);
      assert.equal(err.retryAfterSeconds, 120, 'the queue learns how long to wait');
      assert.match(err.message, /retryafter\.example\.test/);
      assert.deepEqual(statusesOf(requests, 'order'), [503], 'the order fetch was not sent again');
      assert.equal(proxy.newOrders(hostname).length, 1, 'no second order');
      assert.equal(proxy.finalizations(hostname).length, 0);
      assert.deepEqual(tokens.tokens(), []);
    },
  );

  it(
    "rejects with the hook's own error and sends no finalize when beforeFinalize rejects",
    { timeout: TEST_TIMEOUT_MS },
    async () => {
      const hostname = 'hookfails.example.test';
      const issuer = issuerFor();
      const storeDown = new Error('the certificate store is down');
      const err = await bounded(
        pebble,
        rejection(
          issuer.issue(
            { hostnames: [hostname], keyType: 'ec-p256' },
            {
              beforeFinalize: async () => {
                throw storeDown;
              },
            },
          ),
        ),
      );
      assert.equal(err, storeDown, 'the very error the hook threw');
      assert.equal(proxy.newOrders(hostname).length, 1);
      assert.equal(proxy.finalizations(hostname).length, 0, 'nothing was finalized: nothing bought');
      assert.deepEqual(tokens.tokens(), []);
    },
  );

  it(
    'gives beforeFinalize, once and before finalize, the order URL and the key of the certificate it returns',
    { timeout: TEST_TIMEOUT_MS },
    async () => {
      const hostname = 'writeahead.example.test';
      const issuer = issuerFor();
      const seen: Array<{ pending: PendingOrder; finalizations: number }> = [];
      const issued = await bounded(
        pebble,
        issuer.issue(
          { hostnames: [hostname], keyType: 'ec-p256' },
          {
            beforeFinalize: async (pending) => {
              seen.push({ pending, finalizations: proxy.finalizations(hostname).length });
            },
          },
        ),
      );
      assert.equal(seen.length, 1, 'called once');
      const [{ pending, finalizations }] = seen as [(typeof seen)[number]];
      assert.equal(finalizations, 0, 'called before finalize');
      assertIssuedFor(issued, hostname, pending.keyPem);
      assert.deepEqual(orderPathsOf(hostname), [new URL(pending.orderUrl).pathname], "the order's URL");
      assert.equal(new URL(pending.orderUrl).origin, new URL(proxy.directoryUrl).origin);
      assert.equal(proxy.newOrders(hostname)[0]?.location, pending.orderUrl, 'the URL the CA gave the new order');
      assert.deepEqual(
        { hostname: pending.hostname, hostnames: pending.hostnames, directoryUrl: pending.directoryUrl },
        { hostname, hostnames: [hostname], directoryUrl: proxy.directoryUrl },
      );
      assert.equal(pending.keyType, 'ec-p256');
    },
  );

  it(
    'rejects ABORTED when aborted right after finalize was answered; resume() on another issuer then downloads the certificate without a new order',
    { timeout: TEST_TIMEOUT_MS },
    async () => {
      const hostname = 'crash.example.test';
      const controller = new AbortController();
      const stop = proxy.onAnswered((r) => {
        if (r.endpoint === 'finalize' && r.identifiers.includes(hostname)) controller.abort(new Error('crash'));
      });
      let pending: PendingOrder | undefined;
      try {
        const err = await bounded(
          pebble,
          rejection(
            issuerFor().issue(
              { hostnames: [hostname], keyType: 'ec-p256' },
              { beforeFinalize: async (p) => void (pending = p) },
              controller.signal,
            ),
          ),
        );
        assert.ok(err instanceof AbortedError, `an AbortedError, got ${String(err)}`);
        assert.equal(err.code, 'ABORTED');
      } finally {
        stop();
      }
      assert.ok(pending, 'the pending order was handed to the hook');
      assert.equal(proxy.finalizations(hostname).length, 1, 'finalize was sent before the crash');

      // Another instance, after a restart: same account store, nothing else shared.
      const requests: Requests = [];
      const outcome = await bounded(pebble, issuerFor(requests).resume(pending));
      assert.equal(outcome.kind, 'issued', JSON.stringify(outcome));
      assertIssuedFor(outcome.certificate, hostname, pending.keyPem);
      assert.equal(proxy.newOrders(hostname).length, 1, 'still exactly 1 order');
      assert.equal(proxy.finalizations(hostname).length, 1, 'still exactly 1 finalize');
      assert.ok(!requests.some((r) => r.endpoint === 'newOrder' || r.endpoint === 'finalize'));

      // While the CA cannot be reached, resume() rejects (the caller keeps the record); then it works again.
      proxy.failNext({ endpoint: 'order', status: 503, times: ACME_RETRY_MAX_ATTEMPTS });
      const down = await bounded(pebble, rejection(issuerFor().resume(pending)));
      assert.ok(down instanceof AcmeProblemError, `an AcmeProblemError, got ${String(down)}`);
      assert.equal(down.code, 'ACME_UNREACHABLE');
      assert.equal(down.retryable, true);
      const again = await bounded(pebble, issuerFor().resume(pending));
      assert.equal(again.kind, 'issued');
      assert.equal(again.certificate.serial, outcome.certificate.serial, 'the same certificate');
      assert.equal(proxy.newOrders(hostname).length, 1);
    },
  );

  it(
    'resume() finalizes an order left ready (aborted before finalize) with the same key, without a new order',
    { timeout: TEST_TIMEOUT_MS },
    async () => {
      const hostname = 'ready.example.test';
      const controller = new AbortController();
      let pending: PendingOrder | undefined;
      const err = await bounded(
        pebble,
        rejection(
          issuerFor().issue(
            { hostnames: [hostname], keyType: 'ec-p256' },
            {
              beforeFinalize: async (p) => {
                pending = p;
                controller.abort(new Error('lost the lock'));
              },
            },
            controller.signal,
          ),
        ),
      );
      assert.ok(err instanceof AbortedError, `an AbortedError, got ${String(err)}`);
      assert.ok(pending);
      assert.equal(proxy.finalizations(hostname).length, 0, 'not finalized yet');

      const outcome = await bounded(pebble, issuerFor().resume(pending));
      assert.equal(outcome.kind, 'issued', JSON.stringify(outcome));
      assertIssuedFor(outcome.certificate, hostname, pending.keyPem);
      assert.equal(proxy.newOrders(hostname).length, 1, 'still exactly 1 order');
      assert.equal(proxy.finalizations(hostname).length, 1, 'finalized once, by resume()');
    },
  );

  it(
    'resume() says gone for an order the CA does not know, and asks nothing for a record of another directory',
    { timeout: TEST_TIMEOUT_MS },
    async () => {
      const issuer = issuerFor();
      const unknown = await bounded(pebble, issuer.resume(pendingFor({})));
      assert.equal(unknown.kind, 'gone');
      assert.match(unknown.kind === 'gone' ? unknown.why : '', /does not know the order/);

      const before = proxy.requests().length;
      const elsewhere = await issuer.resume(pendingFor({ directoryUrl: 'https://acme.other.example/directory' }));
      assert.equal(elsewhere.kind, 'gone');
      assert.match(elsewhere.kind === 'gone' ? elsewhere.why : '', /acme\.other\.example/);
      assert.equal(proxy.requests().length, before, 'no request for a record of another CA');
      assert.equal(proxy.newOrders('resume.example.test').length, 0);
    },
  );

  it('resume() says gone for an order that became invalid', { timeout: TEST_TIMEOUT_MS }, async () => {
    const hostname = 'invalid.example.test';
    const issuer = issuerFor();
    challengeStore.dropPuts = true; // the responder answers 404: validation fails, the order turns invalid
    try {
      await bounded(pebble, rejection(issuer.issue({ hostnames: [hostname], keyType: 'ec-p256' }, NO_HOOKS)));
    } finally {
      challengeStore.dropPuts = false;
    }
    const orderUrl = proxy.newOrders(hostname)[0]?.location;
    assert.ok(orderUrl, 'the proxy recorded the order URL');
    const outcome = await bounded(pebble, issuer.resume(pendingFor({ hostname, hostnames: [hostname], orderUrl })));
    assert.equal(outcome.kind, 'gone');
    assert.match(outcome.kind === 'gone' ? outcome.why : '', /invalid/);
    assert.equal(proxy.newOrders(hostname).length, 1);
    assert.equal(proxy.finalizations(hostname).length, 0);
  });
});
