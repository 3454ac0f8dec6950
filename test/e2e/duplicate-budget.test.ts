/**
 * The duplicate-certificate budget (orders per exact set of names), end to end with real Consul
 * 1.8.7 and real Pebble 2.4.0 issuing short-lived certificates that the scheduled scan renews.
 * Pebble has no rate limits (docs/protocols.md §5), so every order it receives would be issued:
 * the orders are counted where the CA receives them, through a counting proxy
 * (test/support/acme-proxy.ts).
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
import type { ScanOutcome } from '../../src/engine/renewal-scheduler.js';

/** Renewed when a third is left: about 13 s after each order. */
const VALIDITY_SECONDS = 20;

async function certificateStatus(svc: RunningService, hostname: string): Promise<CertificateStatus | undefined> {
  const report = (await (await fetch(`${svc.listening.adminUrl}/status`)).json()) as StatusReport;
  return report.certificates.find((c) => c.hostname === hostname);
}

/** Records the outcome of every scan tick (the cron and the first run call `tick()`). */
function recordTicks(svc: RunningService): ScanOutcome[] {
  const outcomes: ScanOutcome[] = [];
  const renewal = svc.service.renewal;
  const tick = renewal.tick.bind(renewal);
  renewal.tick = async () => {
    const outcome = await tick();
    outcomes.push(outcome);
    return outcome;
  };
  return outcomes;
}

describe('the exact-set budget, with real Consul and Pebble', () => {
  let consul: ConsulInstance;
  let pebble: PebbleInstance;
  let proxy: AcmeProxy;
  let challengePort: number;

  before(async () => {
    challengePort = await freePort();
    consul = await startConsul();
    pebble = await startPebble({ httpPort: challengePort, certificateValidityPeriodSeconds: VALIDITY_SECONDS });
    proxy = await startAcmeProxy({ directoryUrl: pebble.directoryUrl, caBundlePem: pebble.caBundlePem });
  });

  after(async () => {
    await proxy?.close();
    await pebble?.stop();
    await consul?.stop();
  });

  test('at 2 per exact set, the first order and one renewal spend the budget; the next renewal waits, says why, and reaches the CA 0 times', async () => {
    const hostname = 'dup.budget-e2e.test';
    await registerService(consul.address, 'dup-web', fabioTags([hostname]));
    const svc = await startService({
      consulAddress: consul.address,
      directoryUrl: proxy.directoryUrl,
      caBundlePem: proxy.caBundlePem,
      challengePort,
      dnsServer: pebble.dnsServer,
      env: {
        CONSUL_ACME_BUDGET_EXACT_SET: '2/7d',
        CONSUL_ACME_RENEW_SCHEDULE: '*/2 * * * * *',
        CONSUL_ACME_RENEW_SPREAD: '0ms',
      },
    });
    const ticks = recordTicks(svc);
    try {
      await waitFor('the first order and one renewal', () => proxy.newOrders(hostname).length >= 2, {
        timeoutMs: 60_000,
        intervalMs: 200,
      });
      const waiting = await waitFor(
        `${hostname} waiting on its exact-set budget`,
        async () => {
          const s = await certificateStatus(svc, hostname);
          return s?.state === 'waiting' ? s : undefined;
        },
        { timeoutMs: 60_000, intervalMs: 200 },
      );
      assert.equal(waiting.waitingFor, `budget exact-set ${hostname} spent (2/2)`);
      assert.match(waiting.reason ?? '', /^(Expiring|Expired)$/, 'what waits is a renewal');
      const firstOrderAt = proxy.newOrders(hostname)[0]!.receivedAt;
      const nextAttemptAt = Date.parse(waiting.nextAttemptAt ?? '');
      assert.ok(
        nextAttemptAt >= firstOrderAt + 7 * 86_400_000 - 60_000,
        `it waits until the first order leaves the 7-day window (${waiting.nextAttemptAt})`,
      );

      // Three more scheduled scans plan the name again, and it still reaches the CA 0 more times.
      const scanned = ticks.filter((t) => t === 'scanned').length;
      await waitFor('three more scans', () => ticks.filter((t) => t === 'scanned').length >= scanned + 3, {
        timeoutMs: 30_000,
      });
      const after = await certificateStatus(svc, hostname);
      assert.equal(after?.state, 'waiting');
      assert.equal(after?.waitingFor, `budget exact-set ${hostname} spent (2/2)`);
      assert.equal(proxy.newOrders(hostname).length, 2, 'the third order never reached the CA');
      assert.equal(proxy.finalizations(hostname).length, 2);
      console.log(
        `# ${hostname}: 2 orders, then ${ticks.filter((t) => t === 'scanned').length - scanned} more scans while waiting, 0 more orders`,
      );
    } finally {
      await svc.stop();
      await deregisterService(consul.address, 'dup-web');
    }
  });
});
