/**
 * CAA in the pre-flight check, end to end with real Consul 1.8.7 and real Pebble 2.4.0. CAA
 * records are put in pebble-challtestsrv (Pebble's DNS server, which the pre-flight check asks
 * too) with its management API `/add-caa` and removed with `/clear-caa`. Every order is counted
 * where the CA receives it: the service talks to Pebble through a counting proxy
 * (test/support/acme-proxy.ts).
 *
 * Pebble 2.4.0 does not check CAA at all (docs/protocols.md §5): it would issue for every name
 * below. So a name with 0 orders was stopped by our check, and "the CA identity" here is one we
 * configure for Pebble (CONSUL_ACME_CAA_IDENTITIES), as an operator of any CA other than Let's
 * Encrypt must.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { deregisterService, fabioTags, registerService, startConsul, type ConsulInstance } from '../support/consul.js';
import { startPebble, type PebbleInstance } from '../support/pebble.js';
import { startAcmeProxy, type AcmeProxy } from '../support/acme-proxy.js';
import { startService, type RunningService } from '../support/service-harness.js';
import { freePort } from '../support/net.js';
import { waitFor } from '../support/wait.js';
import type { CertificateStatus, StatusReport } from '../../src/engine/status.js';

/** The identity we give Pebble's CA, and another CA's. */
const OUR_CA = 'ca.pebble.test';
const OTHER_CA = 'ca.elsewhere.test';

async function certificateStatus(svc: RunningService, hostname: string): Promise<CertificateStatus | undefined> {
  const report = (await (await fetch(`${svc.listening.adminUrl}/status`)).json()) as StatusReport;
  return report.certificates.find((c) => c.hostname === hostname);
}

async function waitForState(
  svc: RunningService,
  hostname: string,
  state: CertificateStatus['state'],
  timeoutMs = 60_000,
): Promise<CertificateStatus> {
  return waitFor(
    `${hostname} ${state}`,
    async () => {
      const s = await certificateStatus(svc, hostname);
      return s?.state === state ? s : undefined;
    },
    { timeoutMs, intervalMs: 200 },
  );
}

describe('CAA in the pre-flight check, with real Consul and Pebble', () => {
  let consul: ConsulInstance;
  let pebble: PebbleInstance;
  let proxy: AcmeProxy;
  let challengePort: number;

  before(async () => {
    challengePort = await freePort();
    consul = await startConsul();
    pebble = await startPebble({ httpPort: challengePort });
    proxy = await startAcmeProxy({ directoryUrl: pebble.directoryUrl, caBundlePem: pebble.caBundlePem });
  });

  after(async () => {
    await proxy?.close();
    await pebble?.stop();
    await consul?.stop();
  });

  test('a name whose CAA record allows another CA gets 0 orders and a status that says why, retried on the schedule; after /clear-caa it is issued', async () => {
    const refused = 'refused.caa-e2e.test';
    const allowed = 'allowed.caa-e2e.test';
    await pebble.addCaa(refused, [{ tag: 'issue', value: OTHER_CA }]);
    await pebble.addCaa(allowed, [{ tag: 'issue', value: OUR_CA }]);
    await registerService(consul.address, 'caa-web', fabioTags([refused, allowed]));
    const svc = await startService({
      consulAddress: consul.address,
      directoryUrl: proxy.directoryUrl,
      caBundlePem: proxy.caBundlePem,
      challengePort,
      dnsServer: pebble.dnsServer,
      env: { CONSUL_ACME_CAA_IDENTITIES: OUR_CA, CONSUL_ACME_RETRY_SCHEDULE: '1s,2s,4s' },
    });
    try {
      // A CAA set that names our CA is no obstacle.
      await waitForState(svc, allowed, 'valid');
      assert.equal(proxy.newOrders(allowed).length, 1);

      const expectedError =
        `PREFLIGHT_FAILED: CAA: ${refused}: the CAA records at ${refused} (0 issue "${OTHER_CA}") ` +
        `do not allow ${OUR_CA}: 0 issue "${OTHER_CA}" names another CA`;
      const first = await waitForState(svc, refused, 'failed', 30_000);
      assert.equal(first.lastError, expectedError);
      const again = await waitFor(
        `${refused} refused again on the retry schedule`,
        async () => {
          const s = await certificateStatus(svc, refused);
          return s?.state === 'failed' && s.attempts >= first.attempts + 2 ? s : undefined;
        },
        { timeoutMs: 30_000, intervalMs: 200 },
      );
      assert.equal(again.lastError, expectedError);
      assert.ok(again.nextAttemptAt, 'the status says when it is tried again');
      assert.equal(
        proxy.newOrders(refused).length + proxy.refusedNewOrders(refused).length,
        0,
        'no order for the refused name reached the CA',
      );
      console.log(`# ${refused}: ${again.attempts} attempts refused by the CAA check, 0 orders at the CA`);

      await pebble.clearCaa(refused);
      await waitForState(svc, refused, 'valid');
      assert.equal(proxy.newOrders(refused).length, 1, 'issued with one order once the record is gone');
      assert.equal(proxy.finalizations(refused).length, 1);
    } finally {
      await svc.stop();
      await deregisterService(consul.address, 'caa-web');
    }
  });

  test('with the check off, Pebble issues for a name whose CAA record allows another CA: the refusals above are ours', async () => {
    const hostname = 'unchecked.caa-e2e.test';
    await pebble.addCaa(hostname, [{ tag: 'issue', value: OTHER_CA }]);
    await registerService(consul.address, 'caa-off', fabioTags([hostname]));
    const svc = await startService({
      consulAddress: consul.address,
      directoryUrl: proxy.directoryUrl,
      caBundlePem: proxy.caBundlePem,
      challengePort,
      dnsServer: pebble.dnsServer,
      env: { CONSUL_ACME_CAA_IDENTITIES: 'off' },
    });
    try {
      await waitForState(svc, hostname, 'valid');
      assert.equal(proxy.newOrders(hostname).length, 1);
    } finally {
      await svc.stop();
      await deregisterService(consul.address, 'caa-off');
      await pebble.clearCaa(hostname);
    }
  });

  test('a CAA record on a parent of the name counts for it: the climb finds it, and the name gets 0 orders', async () => {
    const parent = 'parent-caa-e2e.test';
    const hostname = `www.shop.${parent}`;
    await pebble.addCaa(parent, [{ tag: 'issue', value: OTHER_CA }]);
    await registerService(consul.address, 'caa-parent', fabioTags([hostname]));
    const svc = await startService({
      consulAddress: consul.address,
      directoryUrl: proxy.directoryUrl,
      caBundlePem: proxy.caBundlePem,
      challengePort,
      dnsServer: pebble.dnsServer,
      env: { CONSUL_ACME_CAA_IDENTITIES: OUR_CA, CONSUL_ACME_RETRY_SCHEDULE: '1s,2s,4s' },
    });
    try {
      const failed = await waitForState(svc, hostname, 'failed', 30_000);
      assert.match(
        failed.lastError ?? '',
        new RegExp(`^PREFLIGHT_FAILED: CAA: ${hostname.replaceAll('.', '\\.')}: the CAA records at ${parent}`),
      );
      assert.equal(proxy.newOrders(hostname).length, 0);
    } finally {
      await svc.stop();
      await deregisterService(consul.address, 'caa-parent');
      await pebble.clearCaa(parent);
    }
  });
});
