/**
 * AcmeIssuer.revoke against real Pebble 2.4.0: a certificate this account obtained is revoked with
 * the reason's RFC 5280 code and Pebble's management API reports it revoked; a second revocation
 * answers `alreadyRevoked`; a certificate another account obtained (another ACME client, as for an
 * adopted record) is refused to this account and revoked with the certificate's own key.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { Agent } from 'node:https';
import * as acme from 'acme-client';
import { AcmeIssuer } from '../../src/adapters/acme/acme-issuer.js';
import { MemoryAccountStore } from '../../src/adapters/memory/memory-account-store.js';
import { MemoryChallengeStore } from '../../src/adapters/memory/memory-challenge-store.js';
import { AcmeProblemError } from '../../src/errors.js';
import { silentLogger } from '../../src/logging.js';
import { startChallengeResponder, type ChallengeResponder } from '../support/challenge-responder.js';
import { pebbleCertStatus } from '../support/pebble-management.js';
import { startPebble, type PebbleInstance } from '../support/pebble.js';

const TEST_TIMEOUT_MS = 90_000;

function serialOf(certPem: string): string {
  return new X509Certificate(certPem).serialNumber.toLowerCase().replace(/^0+(?=.)/, '');
}

describe('AcmeIssuer.revoke against Pebble', () => {
  let pebble: PebbleInstance;
  let responder: ChallengeResponder;
  let issuer: AcmeIssuer;
  const challenges = new MemoryChallengeStore();

  before(async () => {
    responder = await startChallengeResponder(challenges);
    pebble = await startPebble({ httpPort: responder.port });
    issuer = new AcmeIssuer({
      directoryUrl: pebble.directoryUrl,
      caBundlePem: pebble.caBundlePem,
      accountStore: new MemoryAccountStore(),
      challengeStore: challenges,
      pollIntervalMinMs: 50,
      pollIntervalMaxMs: 500,
      pollAttempts: 20,
      requestTimeoutMs: 10_000,
      logger: silentLogger(),
    });
  });

  after(async () => {
    issuer?.close();
    await pebble?.stop();
    await responder?.stop();
  });

  it(
    'revokes a certificate this account obtained, with its reason; a second time answers alreadyRevoked',
    { timeout: TEST_TIMEOUT_MS },
    async () => {
      const issued = await issuer.issue(
        { hostnames: ['revoke.example.test'], keyType: 'ec-p256' },
        { beforeFinalize: async () => undefined },
      );
      assert.equal((await pebbleCertStatus(pebble, issued.serial))?.status, 'Valid');
      const first = await issuer.revoke({ certPem: issued.certPem, reason: 'keyCompromise' });
      assert.deepEqual(first, { alreadyRevoked: false, signedWith: 'account' });
      const status = await pebbleCertStatus(pebble, issued.serial);
      assert.equal(status?.status, 'Revoked');
      assert.equal(status?.reason, 1, 'keyCompromise is RFC 5280 code 1');
      assert.deepEqual(await issuer.revoke({ certPem: issued.certPem, reason: 'keyCompromise' }), {
        alreadyRevoked: true,
        signedWith: 'account',
      });
    },
  );

  it(
    'a certificate another account obtained is refused to this account, and revoked with its own key',
    { timeout: TEST_TIMEOUT_MS },
    async () => {
      // Another ACME client with its own account (as lego or certbot would), on the same Pebble.
      const accountKey = await acme.crypto.createPrivateEcdsaKey();
      const previousAgent: unknown = acme.axios.defaults.httpsAgent;
      acme.axios.defaults.httpsAgent = new Agent({ ca: pebble.caBundlePem });
      let certPem: string;
      let keyPem: string;
      try {
        const other = new acme.Client({
          directoryUrl: pebble.directoryUrl,
          accountKey,
          backoffMin: 50,
          backoffMax: 500,
        });
        const [key, csr] = await acme.crypto.createCsr({ commonName: 'theirs.example.test' });
        keyPem = key.toString();
        certPem = await other.auto({
          csr,
          termsOfServiceAgreed: true,
          skipChallengeVerification: true,
          challengePriority: ['http-01'],
          challengeCreateFn: async (_authz, challenge, keyAuthorization) =>
            challenges.put(challenge.token, keyAuthorization),
          challengeRemoveFn: async (_authz, challenge) => challenges.delete(challenge.token),
        });
      } finally {
        acme.axios.defaults.httpsAgent = previousAgent as Agent;
      }
      const serial = serialOf(certPem);

      const refused = await issuer.revoke({ certPem, reason: 'superseded' }).then(
        () => assert.fail('revoked without the key'),
        (err: unknown) => err,
      );
      assert.ok(refused instanceof AcmeProblemError, String(refused));
      assert.equal(refused.problemType, 'urn:ietf:params:acme:error:unauthorized');
      assert.equal((await pebbleCertStatus(pebble, serial))?.status, 'Valid');

      assert.deepEqual(await issuer.revoke({ certPem, keyPem, reason: 'superseded' }), {
        alreadyRevoked: false,
        signedWith: 'certificate-key',
      });
      const status = await pebbleCertStatus(pebble, serial);
      assert.equal(status?.status, 'Revoked');
      assert.equal(status?.reason, 4, 'superseded is RFC 5280 code 4');
    },
  );
});
