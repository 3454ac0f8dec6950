/**
 * The signals an operator watches, end to end with real Consul and Pebble: the /metrics scrape
 * and the certificate health check in Consul going warning, then critical, when short-lived
 * certificates are not renewed.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startConsul, type ConsulInstance } from '../support/consul.js';
import { startPebble, type PebbleInstance } from '../support/pebble.js';
import { startService, type RunningService } from '../support/service-harness.js';
import { freePort } from '../support/net.js';
import { waitFor } from '../support/wait.js';

const HOSTS = ['metrics-a.example.test', 'metrics-b.example.test'];

async function checkStatus(consulAddress: string, serviceName: string): Promise<string | undefined> {
  const res = await fetch(`${consulAddress}/v1/health/checks/${serviceName}`);
  const checks = (await res.json()) as Array<{ Status: string }>;
  return checks[0]?.Status;
}

describe('operator signals with real Consul and Pebble', () => {
  let consul: ConsulInstance;
  let pebble: PebbleInstance;
  let svc: RunningService;

  before(async () => {
    const challengePort = await freePort();
    consul = await startConsul();
    // Certificates live 30 s; the warning window is 20 s, so a fresh one is passing for ~10 s.
    pebble = await startPebble({ httpPort: challengePort, certificateValidityPeriodSeconds: 30 });
    const reg = await fetch(`${consul.address}/v1/agent/service/register`, {
      method: 'PUT',
      body: JSON.stringify({ ID: 'shop', Name: 'shop', Port: 9000, Tags: HOSTS.map((h) => `urlprefix-${h}/`) }),
    });
    assert.equal(reg.status, 200);
    svc = await startService({
      consulAddress: consul.address,
      directoryUrl: pebble.directoryUrl,
      caBundlePem: pebble.caBundlePem,
      challengePort,
      env: {
        CONSUL_ACME_EXPIRY_WARNING: '20s',
        // Renewals stopped: the scan runs once at start and then only once a year.
        CONSUL_ACME_RENEW_SCHEDULE: '0 0 1 1 *',
      },
    });
  });

  after(async () => {
    await svc?.stop();
    await pebble?.stop();
    await consul?.stop();
  });

  test('a /metrics scrape shows the expiry of every issued hostname and the outcome counters', async () => {
    const body = await waitFor(
      'expiry gauges for both hostnames',
      async () => {
        const text = await (await fetch(`${svc.listening.adminUrl}/metrics`)).text();
        return HOSTS.every((h) => text.includes(`consul_acme_certificate_expiry_timestamp_seconds{hostname="${h}"}`))
          ? text
          : undefined;
      },
      { timeoutMs: 60_000 },
    );
    for (const h of HOSTS) {
      const match = new RegExp(
        `consul_acme_certificate_expiry_timestamp_seconds\\{hostname="${h.replace(/\./g, '\\.')}"\\} (\\d+)`,
      ).exec(body);
      const expiresAt = Number(match?.[1]) * 1000;
      assert.ok(expiresAt > Date.now() && expiresAt < Date.now() + 60_000, `${h} expires within the short lifetime`);
    }
    assert.match(body, /consul_acme_issuance_outcomes_total\{reason="Missing",outcome="obtained",code=""\} 2/);
    assert.match(body, /consul_acme_acme_requests_total\{endpoint="newOrder",status="201"\} 2/);
    assert.match(body, /consul_acme_queue_depth 0/);
    assert.match(body, /consul_acme_consul_last_sync_timestamp_seconds [1-9]\d+/);
  });

  test('the certificate health check in Consul turns warning before expiry, then critical once expired', async () => {
    await waitFor(
      'health check warning',
      async () => (await checkStatus(consul.address, 'consul-acme-certificates')) === 'warning',
      { timeoutMs: 60_000, intervalMs: 500 },
    );
    const health = (await (await fetch(`${svc.listening.adminUrl}/health/certificates`)).json()) as {
      status: string;
      problems: string[];
    };
    assert.ok(['warning', 'critical'].includes(health.status));
    for (const h of HOSTS)
      assert.ok(
        health.problems.some((p) => p.startsWith(h)),
        `${h} is named`,
      );
    await waitFor(
      'health check critical',
      async () => (await checkStatus(consul.address, 'consul-acme-certificates')) === 'critical',
      { timeoutMs: 60_000, intervalMs: 500 },
    );
    assert.equal(await checkStatus(consul.address, 'consul-acme'), 'passing', 'the challenge route stays routable');
  });
});
