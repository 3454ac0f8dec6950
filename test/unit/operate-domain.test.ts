/**
 * The pure decisions behind adopt, reissue and revoke (src/domain/adopt.ts, request.ts,
 * revocation.ts), the settings that switch them on (CONSUL_ACME_ADOPT, CONSUL_ACME_MODE), and the
 * sink-only mode's store follower with a memory store and a clock the test moves.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { MemoryCertificateStore } from '../../src/adapters/memory/memory-certificate-store.js';
import { loadConfig } from '../../src/config/load.js';
import { adoptionAllowed, adoptionRefusal, parseAdoptionSetting } from '../../src/domain/adopt.js';
import type { CertificateFacts, StoredFacts } from '../../src/domain/certificate.js';
import {
  isBlockedBy,
  isRequestDone,
  isRequestOpen,
  mergeRequests,
  needsRevocation,
  type OperatorRequest,
} from '../../src/domain/request.js';
import { parseRevocationReason, revocationCode, revokesBeforeAdmission } from '../../src/domain/revocation.js';
import { ConfigError } from '../../src/errors.js';
import { StoreFollower } from '../../src/engine/store-follower.js';
import { StoreHealth } from '../../src/engine/store-health.js';
import { silentLogger } from '../../src/logging.js';
import type { SinkChange } from '../../src/ports/certificate-sink.js';
import { ManualClock } from '../../src/ports/clock.js';
import { makeCertificateData, makeTestCertificate } from '../support/certs.js';

const DAY = 86_400_000;
const NOW = new Date('2026-03-01T00:00:00Z');

function facts(overrides: Partial<CertificateFacts> = {}): CertificateFacts {
  return {
    hostname: 'a.example.com',
    hostnames: ['a.example.com'],
    notBefore: new Date(NOW.getTime() - DAY),
    notAfter: new Date(NOW.getTime() + 89 * DAY),
    directoryUrl: 'https://acme.test/directory',
    issuer: 'R3',
    keyType: 'ec-p256',
    obtainedAt: new Date(NOW.getTime() - DAY),
    ...overrides,
  };
}

function stored(certificate: CertificateFacts | undefined, managed = true): StoredFacts {
  return { hostname: 'a.example.com', version: 2, managed, certificate, problem: undefined };
}

function request(kind: OperatorRequest['kind'], overrides: Partial<OperatorRequest> = {}): OperatorRequest {
  const replaced = facts();
  return {
    hostname: 'a.example.com',
    kind,
    requestedAt: NOW,
    requestedBy: 'instance-a',
    replaces:
      kind === 'adopt'
        ? undefined
        : { obtainedAt: replaced.obtainedAt, notAfter: replaced.notAfter, serial: 'aa', certPem: 'PEM' },
    revokeReason: kind === 'revoke' ? 'superseded' : undefined,
    revokedAt: undefined,
    ...overrides,
  };
}

describe('revocation reasons', () => {
  test('the subscriber reasons are accepted in any case and sent as their RFC 5280 codes', () => {
    assert.deepEqual(parseRevocationReason('keycompromise'), { ok: true, reason: 'keyCompromise' });
    assert.equal(revocationCode('unspecified'), 0);
    assert.equal(revocationCode('keyCompromise'), 1);
    assert.equal(revocationCode('superseded'), 4);
    assert.equal(revocationCode('cessationOfOperation'), 5);
  });

  test('the other RFC 5280 reasons and an unknown word are refused, naming the reasons a subscriber may give', () => {
    const caOnly = parseRevocationReason('certificateHold');
    assert.equal(caOnly.ok, false);
    assert.match(
      caOnly.ok ? '' : caOnly.problem,
      /certificateHold is not a reason the CA accepts from a subscriber; give one of unspecified, keyCompromise, superseded, cessationOfOperation/,
    );
    const unknown = parseRevocationReason('stolen');
    assert.match(unknown.ok ? '' : unknown.problem, /"stolen" is not a revocation reason/);
  });

  test('only a compromised key is revoked before the budgets admit the replacement', () => {
    assert.equal(revokesBeforeAdmission('keyCompromise'), true);
    for (const reason of ['unspecified', 'superseded', 'cessationOfOperation'] as const)
      assert.equal(revokesBeforeAdmission(reason), false, reason);
  });
});

describe('operator requests', () => {
  test('a reissue or revocation is open while the certificate it names is the stored one of ours', () => {
    assert.equal(isRequestOpen(request('reissue'), stored(facts())), true);
    assert.equal(isRequestOpen(request('reissue'), stored(facts({ obtainedAt: NOW }))), false, 'replaced since');
    assert.equal(isRequestOpen(request('reissue'), undefined), false, 'nothing stored');
    assert.equal(isRequestOpen(request('revoke'), stored(facts(), false)), false, 'not ours');
  });

  test('an adoption is open while the record is not ours', () => {
    assert.equal(isRequestOpen(request('adopt'), stored(undefined, false)), true);
    assert.equal(isRequestOpen(request('adopt'), stored(facts())), false);
  });

  test('a revocation is needed until confirmed, and not for an expired certificate', () => {
    assert.equal(needsRevocation(request('revoke'), NOW), true);
    assert.equal(needsRevocation(request('revoke', { revokedAt: NOW }), NOW), false);
    assert.equal(needsRevocation(request('revoke'), new Date(NOW.getTime() + 90 * DAY)), false);
    assert.equal(needsRevocation(request('reissue'), NOW), false);
    assert.equal(
      isRequestDone(request('revoke'), stored(facts({ obtainedAt: NOW })), NOW),
      false,
      'replaced, not revoked',
    );
    assert.equal(isRequestDone(request('revoke', { revokedAt: NOW }), stored(facts({ obtainedAt: NOW })), NOW), true);
  });

  test('merging: a revocation is never weakened into a reissue, keyCompromise raises a pending reason, the first request is kept', () => {
    const reissue = request('reissue');
    const revoke = request('revoke');
    assert.equal(mergeRequests(undefined, reissue), reissue);
    assert.equal(mergeRequests(revoke, reissue), revoke);
    assert.equal(mergeRequests(reissue, revoke), revoke);
    const compromised = request('revoke', { revokeReason: 'keyCompromise' });
    assert.equal(mergeRequests(revoke, compromised), compromised);
    assert.equal(mergeRequests(request('revoke', { revokedAt: NOW }), compromised).revokedAt, NOW, 'revoked already');
    assert.equal(mergeRequests(reissue, request('reissue', { requestedBy: 'instance-b' })), reissue);
    const forNewer = request('reissue', {
      replaces: { obtainedAt: NOW, notAfter: new Date(NOW.getTime() + DAY), serial: 'bb' },
    });
    assert.equal(mergeRequests(reissue, forNewer), forNewer, 'a request about another certificate replaces it');
  });

  test('a revocation not yet confirmed blocks a request about another certificate, and nothing else', () => {
    const forNewer = request('reissue', {
      replaces: { obtainedAt: NOW, notAfter: new Date(NOW.getTime() + DAY), serial: 'bb' },
    });
    assert.equal(isBlockedBy(request('revoke'), forNewer), true);
    assert.equal(isBlockedBy(request('revoke'), request('adopt')), true);
    assert.equal(isBlockedBy(request('revoke', { revokedAt: NOW }), forNewer), false);
    assert.equal(isBlockedBy(request('revoke'), request('reissue')), false, 'the same certificate: merged');
    assert.equal(isBlockedBy(request('reissue'), forNewer), false);
    assert.equal(isBlockedBy(undefined, forNewer), false);
  });
});

describe('adoption', () => {
  test('CONSUL_ACME_ADOPT is off, all, or names and *. patterns matched like the policy lists', () => {
    assert.deepEqual(parseAdoptionSetting(''), { ok: true, value: 'off' });
    assert.deepEqual(parseAdoptionSetting('ALL'), { ok: true, value: 'all' });
    const parsed = parseAdoptionSetting('*.example.com, api.example.org');
    assert.ok(parsed.ok);
    assert.equal(adoptionAllowed(parsed.value, 'a.example.com'), true);
    assert.equal(adoptionAllowed(parsed.value, 'a.b.example.com'), false, '* is one label');
    assert.equal(adoptionAllowed(parsed.value, 'api.example.org'), true);
    assert.equal(adoptionAllowed('off', 'api.example.org'), false);
    assert.equal(adoptionAllowed(undefined, 'api.example.org'), false);
    const bad = parseAdoptionSetting('all, *foo.com');
    assert.equal(bad.ok, false);
    assert.match(bad.ok ? '' : bad.problem, /"all" must stand alone; "\*foo\.com": /);
  });

  test('a record is adopted only when it loads, has not expired, and covers its name', () => {
    assert.equal(adoptionRefusal(NOW, 'a.example.com', facts()), undefined);
    assert.equal(adoptionRefusal(NOW, 'a.example.com', undefined), 'Unreadable');
    assert.equal(adoptionRefusal(NOW, 'a.example.com', facts({ notAfter: NOW })), 'Expired');
    assert.equal(adoptionRefusal(NOW, 'a.example.com', facts({ hostnames: ['b.example.com'] })), 'NameNotCovered');
  });

  test('the settings: a bad adoption pattern and a sink-only mode without a sink are refused with the setting named', () => {
    assert.throws(
      () => loadConfig({ env: { CONSUL_ACME_ADOPT: 'a b.example.com' } }),
      (err: unknown) =>
        err instanceof ConfigError && /CONSUL_ACME_ADOPT must be off, all, or hostnames/.test(err.message),
    );
    assert.throws(
      () => loadConfig({ env: { CONSUL_ACME_MODE: 'sinks' } }),
      (err: unknown) =>
        err instanceof ConfigError &&
        /CONSUL_ACME_MODE=sinks runs only the sinks, but none is configured: set CONSUL_ACME_HAPROXY_DIR/.test(
          err.message,
        ),
    );
    const config = loadConfig({ env: { CONSUL_ACME_MODE: 'sinks', CONSUL_ACME_HOOK_COMMAND: 'true' } });
    assert.equal(config.mode, 'sinks');
    assert.equal(config.sinkPollIntervalMs, 30_000);
    assert.equal(config.adopt, 'off');
  });
});

describe('the sink-only store follower', () => {
  test('names that appear are read and handed to the sinks, names that leave are removed, an adoption arrives once it is ours', async () => {
    const clock = new ManualClock('2026-03-01T00:00:00Z');
    const store = new MemoryCertificateStore();
    const changes: SinkChange[] = [];
    const follower = new StoreFollower({
      store,
      storeHealth: new StoreHealth({ store, clock, logger: silentLogger() }),
      sinks: { notify: (change) => changes.push(change) },
      clock,
      logger: silentLogger(),
      pollMs: 1_000,
    });
    await store.put(await makeCertificateData({ hostname: 'old.example.com' }), 0);
    await follower.poll();
    assert.equal(follower.hasListed(), true);
    assert.equal(changes.length, 0, 'the first listing only learns the names (the re-sync at start brings them in)');

    await store.put(await makeCertificateData({ hostname: 'new.example.com' }), 0);
    const theirs = await makeTestCertificate({ hostnames: ['theirs.example.com'] });
    store.putUnmanaged('theirs.example.com', theirs);
    await follower.poll();
    assert.deepEqual(
      changes.map((c) =>
        c.kind === 'stored' ? ['stored', c.certificate.hostname, c.reason] : ['removed', c.hostname],
      ),
      [['stored', 'new.example.com', 'obtained']],
      'a record not ours is not given to the sinks',
    );

    const old = await store.get('old.example.com');
    await store.delete('old.example.com', old!.version);
    await store.adopt('theirs.example.com', 1, { directoryUrl: 'https://acme.test/directory', adoptedAt: clock.now() });
    changes.length = 0;
    await follower.poll();
    assert.deepEqual(
      changes.map((c) => (c.kind === 'stored' ? ['stored', c.certificate.hostname] : ['removed', c.hostname])),
      [
        ['stored', 'theirs.example.com'],
        ['removed', 'old.example.com'],
      ],
    );
    await follower.stop();
  });
});
