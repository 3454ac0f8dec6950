/**
 * The domain policy in Consul KV, end to end with real Consul 1.8.7 and real Pebble: the lists
 * `consul-acme/policy/deny`, `allow` and `always` are written with plain HTTP PUTs to Consul's KV
 * API while one service runs, and what the CA received is counted by a proxy in front of Pebble
 * (test/support/acme-proxy.ts). One story in order: each test writes all three lists itself, so
 * a list from an earlier test never decides a later one.
 *
 * The pre-flight check is off, so that a name whose challenge path reaches nothing (its A record
 * at challtestsrv points at 127.0.0.2) really is ordered, fails at validation and is retried.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { fabioTags, registerService, startConsul, type ConsulInstance } from '../support/consul.js';
import { startPebble, type PebbleInstance } from '../support/pebble.js';
import { startAcmeProxy, type AcmeProxy } from '../support/acme-proxy.js';
import { startService, type RunningService } from '../support/service-harness.js';
import { freePort } from '../support/net.js';
import { waitFor } from '../support/wait.js';
import type { CertificateStatus, StatusReport } from '../../src/engine/status.js';
import { captureLogs } from '../support/logs.js';

/** Retry after 1 s, then every 2 s: a failing name would be ordered again within any 5 s. */
const RETRY_SCHEDULE = '1s,2s';
/** Longer than two steps of the schedule: how long a stopped name is watched for new orders. */
const QUIET_WINDOW_MS = 5_000;
const NOWHERE = '127.0.0.2';

/** Writes one policy list the way an operator would: a plain PUT to Consul's KV API. */
async function putList(consulAddress: string, list: 'deny' | 'allow' | 'always', text: string): Promise<void> {
  const res = await fetch(`${consulAddress}/v1/kv/consul-acme/policy/${list}`, { method: 'PUT', body: text });
  const body = await res.text();
  assert.equal(res.status, 200, `PUT policy/${list}: ${body}`);
  assert.equal(body.trim(), 'true');
}

async function putLists(
  consulAddress: string,
  lists: { deny?: string; allow?: string; always?: string },
): Promise<void> {
  for (const list of ['deny', 'allow', 'always'] as const) await putList(consulAddress, list, lists[list] ?? '');
}

async function fetchStatus(svc: RunningService): Promise<StatusReport> {
  return (await (await fetch(`${svc.listening.adminUrl}/status`)).json()) as StatusReport;
}

async function waitForStatus(
  svc: RunningService,
  hostname: string,
  what: string,
  accept: (s: CertificateStatus) => boolean,
  timeoutMs = 60_000,
): Promise<CertificateStatus> {
  let last: CertificateStatus | undefined;
  try {
    return await waitFor(
      `${hostname} ${what}`,
      async () => {
        last = (await fetchStatus(svc)).certificates.find((c) => c.hostname === hostname);
        return last && accept(last) ? last : undefined;
      },
      { timeoutMs, intervalMs: 200 },
    );
  } catch (err) {
    throw new Error(`${err instanceof Error ? err.message : String(err)}; last status: ${JSON.stringify(last)}`, {
      cause: err,
    });
  }
}

/** Waits until the service applies lists of these sizes (the status counts the patterns in force). */
async function waitForPolicy(
  svc: RunningService,
  sizes: { deny: number; allow: number; always: number; invalid: number },
): Promise<StatusReport['policy']> {
  return waitFor(
    `policy lists of ${JSON.stringify(sizes)} in force`,
    async () => {
      const { policy } = await fetchStatus(svc);
      const { deny, allow, always } = policy;
      return deny === sizes.deny &&
        allow === sizes.allow &&
        always === sizes.always &&
        policy.invalid.length === sizes.invalid
        ? policy
        : undefined;
    },
    { timeoutMs: 30_000, intervalMs: 200 },
  );
}

describe('domain policy in Consul KV, with real Consul and Pebble', () => {
  let consul: ConsulInstance;
  let pebble: PebbleInstance;
  let proxy: AcmeProxy;
  let svc: RunningService;
  const logs = captureLogs();

  before(async () => {
    const challengePort = await freePort();
    consul = await startConsul();
    pebble = await startPebble({ httpPort: challengePort });
    proxy = await startAcmeProxy({ directoryUrl: pebble.directoryUrl, caBundlePem: pebble.caBundlePem });
    svc = await startService({
      consulAddress: consul.address,
      directoryUrl: proxy.directoryUrl,
      caBundlePem: proxy.caBundlePem,
      challengePort,
      env: { CONSUL_ACME_RETRY_SCHEDULE: RETRY_SCHEDULE, CONSUL_ACME_BUDGET_FAILED_AUTHORIZATIONS: 'off' },
      logger: logs.logger,
    });
  });

  after(async () => {
    await svc?.stop();
    await proxy?.close();
    await pebble?.stop();
    await consul?.stop();
  });

  test('a name added to the deny list while the service runs gets no further order, and its status says "denied by <pattern>"', async () => {
    const doomed = 'doomed.example.test';
    const healthy = 'healthy.example.test';
    await pebble.addA(doomed, NOWHERE);
    await registerService(consul.address, 'deny-story', fabioTags([doomed, healthy]));
    await waitForStatus(svc, healthy, 'valid', (s) => s.state === 'valid');
    // The doomed name is in retry: ordered, failed at validation, ordered again.
    await waitFor(`two orders for ${doomed}`, () => proxy.newOrders(doomed).length >= 2, { timeoutMs: 30_000 });
    await waitForStatus(svc, doomed, 'failing', (s) => s.attempts >= 1);

    await putLists(consul.address, { deny: `# ${doomed} cannot be routed\n${doomed}\n` });
    const refused = await waitForStatus(svc, doomed, 'refused', (s) => s.state === 'refused', 30_000);
    const ordersAtDeny = proxy.newOrders(doomed).length;
    const obtainingAtDeny = logs.lines.filter((l) => l.event === 'cert_obtaining' && l.hostname === doomed).length;
    assert.equal(refused.policy, `denied by ${doomed}`);
    assert.equal(refused.nextAttemptAt, undefined, 'nothing is scheduled for a refused name');

    await sleep(QUIET_WINDOW_MS);
    const ordersAfter = proxy.newOrders(doomed).length;
    console.log(
      `# ${doomed}: ${ordersAtDeny} orders before the deny took effect, ${ordersAfter - ordersAtDeny} in the ${QUIET_WINDOW_MS} ms after`,
    );
    assert.equal(ordersAfter, ordersAtDeny, 'no order for the denied name after the deny took effect');
    assert.equal(
      logs.lines.filter((l) => l.event === 'cert_obtaining' && l.hostname === doomed).length,
      obtainingAtDeny,
    );
    assert.equal((await fetchStatus(svc)).certificates.find((c) => c.hostname === doomed)?.state, 'refused');
    assert.ok(
      logs.lines.some((l) => l.event === 'hostname_denied' && l.hostname === doomed),
      'the refusal is logged',
    );
    assert.equal(
      (await fetchStatus(svc)).certificates.find((c) => c.hostname === healthy)?.state,
      'valid',
      'the other name is untouched',
    );
  });

  test('a non-empty allow list refuses a declared name not on it ("not on the allow list"), and a name on the always-issued list that no service declares gets a certificate', async () => {
    const allowed = 'allowed.example.test';
    const outsider = 'outsider.example.test';
    const always = 'always.example.test';
    await putLists(consul.address, { allow: `${allowed}\n`, always: `${always}  # issued whoever declares it\n` });
    await waitForPolicy(svc, { deny: 0, allow: 1, always: 1, invalid: 0 });
    await registerService(consul.address, 'allow-story', fabioTags([allowed, outsider]));

    const outside = await waitForStatus(svc, outsider, 'refused', (s) => s.state === 'refused');
    assert.equal(outside.policy, 'not on the allow list');
    await waitForStatus(svc, allowed, 'valid', (s) => s.state === 'valid');
    const alwaysIssued = await waitForStatus(svc, always, 'valid', (s) => s.state === 'valid');
    assert.deepEqual(alwaysIssued.services, ['(always-issued list)']);
    assert.equal(proxy.newOrders(outsider).length, 0, 'the refused name never reached the CA');
    assert.equal(proxy.newOrders(always).length, 1);
    assert.equal(proxy.finalizations(always).length, 1);
  });

  test('a malformed line is reported in the status and the log, and the rest of the list still applies', async () => {
    const listed = 'listed-after-bad-line.example.test';
    const bystander = 'not-listed.example.test';
    await putLists(consul.address, { deny: `bad*.example.test\n${listed}\n` });
    const policy = await waitForPolicy(svc, { deny: 1, allow: 0, always: 0, invalid: 1 });
    const [problem] = policy.invalid;
    assert.equal(problem?.list, 'deny');
    assert.equal(problem?.line, 1);
    assert.equal(problem?.text, 'bad*.example.test');
    assert.match(problem?.reason ?? '', /\*/);
    const logged = await waitFor('a policy_line_invalid log line', () =>
      logs.lines.find((l) => l.event === 'policy_line_invalid' && l.text === 'bad*.example.test'),
    );
    assert.equal(logged.line, 1);
    assert.equal(logged.list, 'deny');

    await registerService(consul.address, 'bad-line-story', fabioTags([listed, bystander]));
    const refused = await waitForStatus(svc, listed, 'refused', (s) => s.state === 'refused');
    assert.equal(refused.policy, `denied by ${listed}`);
    await waitForStatus(svc, bystander, 'valid', (s) => s.state === 'valid');
    assert.equal(proxy.newOrders(listed).length, 0);
  });

  test('"*.example.test" in the deny list refuses a.example.test (one label) but not a.b.example.test (two labels: `*` is exactly one label)', async () => {
    const oneLabel = 'a.example.test';
    const twoLabels = 'a.b.example.test';
    await putLists(consul.address, { deny: '*.example.test\n' });
    await waitForPolicy(svc, { deny: 1, allow: 0, always: 0, invalid: 0 });
    await registerService(consul.address, 'wildcard-story', fabioTags([oneLabel, twoLabels]));
    const refused = await waitForStatus(svc, oneLabel, 'refused', (s) => s.state === 'refused');
    assert.equal(refused.policy, 'denied by *.example.test');
    const issued = await waitForStatus(svc, twoLabels, 'valid', (s) => s.state === 'valid');
    assert.equal(issued.policy, undefined);
    assert.equal(proxy.newOrders(oneLabel).length, 0);
    assert.equal(proxy.newOrders(twoLabels).length, 1);
  });
});
