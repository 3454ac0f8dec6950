/**
 * Never burning the CA's rate limits, end to end with real Consul 1.8.7 and real Pebble. Every
 * count is taken from what the CA's front received: the service talks to Pebble through a
 * counting HTTPS proxy (test/support/acme-proxy.ts), which can also answer newOrder with a
 * `rateLimited` problem as Let's Encrypt does.
 *
 * Each scenario runs its own service instance with its own KV prefix (its own budgets, pauses and
 * persisted backoff) and its own hostnames, and deregisters its services when it ends.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { deregisterService, fabioTags, registerService, startConsul, type ConsulInstance } from '../support/consul.js';
import { startPebble, type PebbleInstance } from '../support/pebble.js';
import { startAcmeProxy, type AcmeProxy } from '../support/acme-proxy.js';
import { startService, type RunningService } from '../support/service-harness.js';
import { startVaultStandin, type VaultStandin } from '../support/vault-standin.js';
import { freePort } from '../support/net.js';
import { waitFor } from '../support/wait.js';
import type { CertificateStatus, StatusReport } from '../../src/engine/status.js';

/** Loopback, but nothing listens there: the responder is bound to 127.0.0.1 only. */
const NOWHERE = '127.0.0.2';

async function fetchStatus(svc: RunningService): Promise<StatusReport> {
  return (await (await fetch(`${svc.listening.adminUrl}/status`)).json()) as StatusReport;
}

async function certificateStatus(svc: RunningService, hostname: string): Promise<CertificateStatus | undefined> {
  return (await fetchStatus(svc)).certificates.find((c) => c.hostname === hostname);
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

/**
 * The most orders a name can receive within `runMs` of its first one when each failure waits the
 * schedule's next step (the last step repeats): 1 + the number of steps whose running sum fits.
 */
function maxOrdersWithin(runMs: number, scheduleMs: readonly number[]): number {
  let orders = 1;
  let elapsed = 0;
  for (let i = 0; ; i++) {
    elapsed += scheduleMs[Math.min(i, scheduleMs.length - 1)]!;
    if (elapsed > runMs) return orders;
    orders++;
  }
}

describe('rate limits, with real Consul and Pebble behind a counting proxy', () => {
  let consul: ConsulInstance;
  let pebble: PebbleInstance;
  let proxy: AcmeProxy;
  let challengePort: number;
  let scenario = 0;

  /** A service for one scenario: its own KV prefix; the pre-flight check on when `preflight`. */
  const serviceFor = async (opts: {
    preflight: boolean;
    env?: Record<string, string>;
    prefix?: string;
  }): Promise<RunningService> =>
    startService({
      consulAddress: consul.address,
      directoryUrl: proxy.directoryUrl,
      caBundlePem: proxy.caBundlePem,
      challengePort,
      ...(opts.preflight ? { dnsServer: pebble.dnsServer } : {}),
      env: { CONSUL_ACME_KV_PREFIX: opts.prefix ?? `rate-limits-${++scenario}/`, ...opts.env },
    });

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

  describe('a name whose challenge path reaches nothing (its A record points at 127.0.0.2)', () => {
    test('with the pre-flight check on, the unrouted name never reaches the CA and keeps failing with NotRouted, while a healthy name in the same run is issued', async () => {
      const unrouted = 'unrouted-checked.example.test';
      const healthy = 'healthy-checked.example.test';
      await pebble.addA(unrouted, NOWHERE);
      await registerService(consul.address, 'preflight-on', fabioTags([unrouted, healthy]));
      const svc = await serviceFor({
        preflight: true,
        env: { CONSUL_ACME_RETRY_SCHEDULE: '1s,2s,4s', CONSUL_ACME_ROUTE_SETTLE: '4s' },
      });
      try {
        await waitForState(svc, healthy, 'valid');
        // Right after its route was registered, a failed probe means "not live yet": the name waits, it does not fail.
        // (Between two probes, that is: during one its state is `issuing`.)
        const settling = await waitFor(
          `${unrouted} between two probes`,
          async () => {
            const s = await certificateStatus(svc, unrouted);
            return s?.state === 'issuing' ? undefined : s;
          },
          { timeoutMs: 5_000, intervalMs: 20 },
        );
        assert.ok(settling?.state === 'waiting' || settling?.state === 'failed', `state ${settling?.state}`);
        if (settling?.state === 'waiting')
          assert.match(settling.waitingFor ?? '', /^waiting for the route: NotRouted: /);
        const firstFailure = await waitForState(svc, unrouted, 'failed', 30_000);
        const failing = await waitFor(
          `${unrouted} failing again (after ${firstFailure.attempts} attempts), at least 3 times`,
          async () => {
            const s = await certificateStatus(svc, unrouted);
            return s?.state === 'failed' && s.attempts > firstFailure.attempts && s.attempts >= 3 ? s : undefined;
          },
          { timeoutMs: 30_000, intervalMs: 200 },
        );
        console.log(
          `# ${unrouted}: attempts ${firstFailure.attempts} → ${failing.attempts}, newOrders at the CA: ${proxy.newOrders(unrouted).length}`,
        );
        for (const s of [firstFailure, failing]) {
          assert.match(s.lastError ?? '', /PREFLIGHT_FAILED: (NotRouted|NoDNS): unrouted-checked\.example\.test/);
          assert.match(s.lastError ?? '', /127\.0\.0\.2/, 'the failure names where the probe went');
        }
        assert.equal(
          proxy.newOrders(unrouted).length + proxy.refusedNewOrders(unrouted).length,
          0,
          'no order for the unrouted name reached the CA',
        );
        assert.equal(proxy.newOrders(healthy).length, 1, 'the healthy name took one order');
        assert.equal(proxy.finalizations(healthy).length, 1);
      } finally {
        await svc.stop();
        await deregisterService(consul.address, 'preflight-on');
      }
    });

    test('with the pre-flight check off, the orders the CA receives for the unrouted name follow the backoff schedule (1s,2s,4s,8s: at most 5 in 16 s, each gap longer than the last), never a storm', async () => {
      const unrouted = 'unrouted-unchecked.example.test';
      const scheduleMs = [1_000, 2_000, 4_000, 8_000];
      const runMs = 16_000;
      await pebble.addA(unrouted, NOWHERE);
      await registerService(consul.address, 'preflight-off', fabioTags([unrouted]));
      // The failed-authorization budget (5/1h) would also stop the orders; switched off, only the schedule paces them.
      const svc = await serviceFor({
        preflight: false,
        env: { CONSUL_ACME_RETRY_SCHEDULE: '1s,2s,4s,8s', CONSUL_ACME_BUDGET_FAILED_AUTHORIZATIONS: 'off' },
      });
      try {
        const first = await waitFor(`a first order for ${unrouted}`, () => proxy.newOrders(unrouted)[0], {
          timeoutMs: 30_000,
        });
        // Observe the run: this is the window orders are counted in, not a timing assertion.
        await sleep(first.receivedAt + runMs + 250 - Date.now());
        const orders = proxy.newOrders(unrouted).filter((r) => r.receivedAt <= first.receivedAt + runMs);
        const at = orders.map((r) => r.receivedAt);
        const gaps = at.slice(1).map((t, i) => t - at[i]!);
        const bound = maxOrdersWithin(runMs, scheduleMs);
        console.log(
          `# ${unrouted}: ${orders.length} orders in ${runMs} ms (bound ${bound}); gaps ${gaps.join(', ')} ms`,
        );
        assert.ok(
          orders.length <= bound,
          `${orders.length} orders in ${runMs} ms; the schedule allows at most ${bound}`,
        );
        assert.ok(orders.length >= 3, `the name is retried (${orders.length} orders)`);
        gaps.forEach((gap, i) => {
          assert.ok(
            gap >= scheduleMs[Math.min(i, scheduleMs.length - 1)]! - 50,
            `gap ${i + 1} (${gap} ms) waits at least step ${i + 1} of the schedule`,
          );
          if (i > 0)
            assert.ok(gap > gaps[i - 1]!, `gap ${i + 1} (${gap} ms) is longer than gap ${i} (${gaps[i - 1]} ms)`);
        });
        assert.equal(proxy.finalizations(unrouted).length, 0, 'no order got as far as finalization');
        const status = await certificateStatus(svc, unrouted);
        assert.ok(
          status && status.attempts >= orders.length - 1,
          `the status counts the failures (${status?.attempts})`,
        );
        assert.match(status.lastError ?? '', /connection|127\.0\.0\.2/i);
      } finally {
        await svc.stop();
        await deregisterService(consul.address, 'preflight-off');
      }
    });
  });

  describe('a rateLimited answer from the CA', () => {
    test('a limit naming one name ("too many failed authorizations (5) for <name>") pauses that name only: a name added meanwhile is issued at once, and the limited one gets its certificate after Retry-After', async () => {
      const limited = 'limited-name.example.test';
      const bystander = 'bystander-name.example.test';
      const latecomer = 'latecomer-name.example.test';
      proxy.rateLimitNewOrders({
        identifier: limited,
        detail: `too many failed authorizations (5) for "${limited}" in the last 1h0m0s, retry after 2030-01-01 00:00:00 UTC`,
        retryAfterSeconds: 8,
      });
      await registerService(consul.address, 'name-limit', fabioTags([limited, bystander]));
      const svc = await serviceFor({ preflight: false, env: { CONSUL_ACME_RETRY_SCHEDULE: '1s,2s' } });
      try {
        await waitFor(`a refused order for ${limited}`, () => proxy.refusedNewOrders(limited)[0], {
          timeoutMs: 30_000,
        });
        const failed = await waitForState(svc, limited, 'failed', 10_000);
        assert.match(failed.lastError ?? '', /ACME_RATE_LIMITED/);
        await registerService(consul.address, 'name-limit-late', fabioTags([latecomer]));
        await waitForState(svc, bystander, 'valid');
        await waitForState(svc, latecomer, 'valid');
        const [window] = proxy.rateLimitWindows();
        assert.ok(window);
        const latecomerOrder = proxy.newOrders(latecomer)[0]!;
        assert.ok(latecomerOrder.receivedAt < window.to, 'the latecomer was ordered while the limited name was paused');
        console.log(
          `# ${limited}: refused at +0 ms, pause ${window.to - window.from} ms; ${latecomer} ordered at +${latecomerOrder.receivedAt - window.from} ms`,
        );

        await waitForState(svc, limited, 'valid', 30_000);
        assert.equal(
          proxy.refusedNewOrders(limited).length,
          1,
          'the paused name was not asked for again during the pause',
        );
        const orders = proxy.newOrders(limited);
        assert.equal(orders.length, 1);
        assert.ok(orders[0]!.receivedAt >= window.to, 'the limited name was ordered again only after Retry-After');
        console.log(
          `# ${limited}: ordered again at +${orders[0]!.receivedAt - window.from} ms; refused ${proxy.refusedNewOrders(limited).length}, forwarded ${orders.length}`,
        );
        assert.deepEqual(
          [bystander, latecomer].map((h) => proxy.newOrders(h).length),
          [1, 1],
        );
      } finally {
        proxy.clearRateLimits();
        await svc.stop();
        await deregisterService(consul.address, 'name-limit');
        await deregisterService(consul.address, 'name-limit-late');
      }
    });

    test('a limit on the account ("too many new orders (300) from this account") pauses every order until Retry-After: a name added meanwhile waits without reaching the CA, then both get certificates', async () => {
      const first = 'first-account.example.test';
      const second = 'second-account.example.test';
      const before = proxy.requests().length;
      proxy.rateLimitNewOrders({
        detail: 'too many new orders (300) from this account in the last 3h0m0s, retry after 2030-01-01 00:00:00 UTC',
        retryAfterSeconds: 6,
      });
      await registerService(consul.address, 'account-limit', fabioTags([first]));
      const svc = await serviceFor({ preflight: false, env: { CONSUL_ACME_RETRY_SCHEDULE: '1s,2s' } });
      try {
        await waitFor(`a refused order for ${first}`, () => proxy.refusedNewOrders(first)[0], { timeoutMs: 30_000 });
        await registerService(consul.address, 'account-limit-late', fabioTags([second]));
        const waiting = await waitForState(svc, second, 'waiting', 10_000);
        assert.match(waiting.waitingFor ?? '', /rate limited by the CA for account/);
        assert.ok(waiting.nextAttemptAt);
        assert.equal(
          proxy
            .requests()
            .slice(before)
            .filter((r) => r.identifiers.includes(second)).length,
          0,
          `${second} was not sent to the CA during the pause`,
        );

        await waitForState(svc, first, 'valid', 30_000);
        await waitForState(svc, second, 'valid', 30_000);
        const [window] = proxy.rateLimitWindows().slice(-1);
        assert.ok(window);
        const newOrders = proxy
          .requests()
          .slice(before)
          .filter((r) => r.endpoint === 'newOrder' && r.method === 'POST');
        const duringPause = newOrders.filter((r) => r.receivedAt > window.from && r.receivedAt < window.to);
        assert.deepEqual(
          duringPause.map((r) => r.identifiers),
          [],
          'no order reached the CA during the pause',
        );
        console.log(
          `# account pause ${window.to - window.from} ms: newOrders during it ${duringPause.length}; after it ${newOrders.filter((r) => r.receivedAt >= window.to).length}`,
        );
        assert.equal(proxy.refusedNewOrders(first).length, 1);
        assert.equal(proxy.refusedNewOrders(second).length, 0);
        assert.deepEqual(
          [first, second].map((h) => proxy.newOrders(h).length),
          [1, 1],
        );
      } finally {
        proxy.clearRateLimits();
        await svc.stop();
        await deregisterService(consul.address, 'account-limit');
        await deregisterService(consul.address, 'account-limit-late');
      }
    });
  });

  describe('client-side budgets', () => {
    let vault: VaultStandin;

    before(async () => {
      vault = await startVaultStandin();
    });

    after(async () => {
      await vault?.close();
    });

    test('with a budget of 2 new orders per hour, two of three new names are issued and the third waits about an hour for the budget, and still waits, without an order, after the service restarts against the same Consul', async () => {
      const names = ['budget-one.example.test', 'budget-two.example.test', 'budget-three.example.test'];
      const prefix = 'rate-limits-budget/';
      const env = {
        CONSUL_ACME_STORE: 'vault',
        VAULT_ADDR: vault.address,
        VAULT_TOKEN: vault.token,
        CONSUL_ACME_BUDGET_NEW_ORDERS: '2/1h',
      };
      const ordersOfNames = (): number =>
        names.reduce((n, h) => n + proxy.newOrders(h).length + proxy.refusedNewOrders(h).length, 0);
      let lastSeen: CertificateStatus[] = [];
      const settled = async (svc: RunningService): Promise<{ valid: string[]; waiting: CertificateStatus[] }> =>
        waitFor(
          'two valid certificates and one waiting name',
          async () => {
            const statuses = (await fetchStatus(svc)).certificates.filter((c) => names.includes(c.hostname));
            lastSeen = statuses;
            const valid = statuses.filter((c) => c.state === 'valid').map((c) => c.hostname);
            const waiting = statuses.filter((c) => c.state === 'waiting');
            return valid.length + waiting.length === names.length && waiting.length >= 1
              ? { valid, waiting }
              : undefined;
          },
          { timeoutMs: 60_000, intervalMs: 200 },
        ).catch((err: unknown) => {
          throw new Error(
            `${err instanceof Error ? err.message : String(err)}; last status: ${JSON.stringify(lastSeen)}`,
          );
        });
      const assertWaitsAnHour = (status: CertificateStatus, label: string): void => {
        assert.match(
          status.waitingFor ?? '',
          /budget account default spent \(2\/2\)/,
          `${label}: waitingFor names the budget`,
        );
        const next = Date.parse(status.nextAttemptAt ?? '');
        assert.ok(
          next > Date.now() + 55 * 60_000 && next <= Date.now() + 60 * 60_000,
          `${label}: next attempt about an hour away (${status.nextAttemptAt})`,
        );
      };

      await registerService(consul.address, 'budgeted', fabioTags(names));
      let svc = await serviceFor({ preflight: false, prefix, env });
      let waitingName: string;
      try {
        const { valid, waiting } = await settled(svc);
        assert.equal(
          valid.length,
          2,
          `two names issued (${valid.join(', ')}); waiting: ${waiting.map((w) => w.hostname).join(', ')}`,
        );
        assert.equal(waiting.length, 1);
        waitingName = waiting[0]!.hostname;
        assertWaitsAnHour(waiting[0]!, 'first run');
        assert.equal(ordersOfNames(), 2, 'the CA received two new orders');
        assert.equal(proxy.newOrders(waitingName).length, 0);
      } finally {
        await svc.stop();
      }

      const ordersBefore = ordersOfNames();
      svc = await serviceFor({ preflight: false, prefix, env });
      try {
        const { valid, waiting } = await settled(svc);
        assert.deepEqual(
          waiting.map((w) => w.hostname),
          [waitingName],
          'the same name still waits',
        );
        assert.equal(valid.length, 2);
        assertWaitsAnHour(waiting[0]!, 'after the restart');
        assert.equal(ordersOfNames(), ordersBefore, 'no new order after the restart');
        console.log(
          `# budget 2/1h: ${ordersBefore} orders for 3 names; ${waitingName} waits until ${waiting[0]!.nextAttemptAt} (${waiting[0]!.waitingFor}); after restart still ${ordersOfNames()}`,
        );
      } finally {
        await svc.stop();
        await deregisterService(consul.address, 'budgeted');
      }
    });
  });
});
