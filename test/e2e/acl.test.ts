/**
 * consul-acme under Consul ACLs in deny-by-default mode, with a token made from the shipped
 * policy (deploy/consul-policy.hcl): discovery, the policy lists, the challenge store, locks and
 * both service registrations work, and nothing asks Consul for more than the policy grants.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { startConsul, type ConsulInstance } from '../support/consul.js';
import { startPebble, type PebbleInstance } from '../support/pebble.js';
import { startService, type RunningService } from '../support/service-harness.js';
import { startVaultStandin, type VaultStandin } from '../support/vault-standin.js';
import { freePort } from '../support/net.js';
import { waitFor } from '../support/wait.js';
import { captureLogs } from '../support/logs.js';
import type { StatusReport } from '../../src/engine/status.js';

const MASTER = 'b1a0c7de-0000-4000-8000-00000000acl1';
const ALLOWED = 'acl-app.example.test';
const DENIED = 'acl-denied.example.test';
const POLICY_RULES = readFileSync(new URL('../../../deploy/consul-policy.hcl', import.meta.url), 'utf8');

async function consulAsMaster(consul: ConsulInstance, method: string, path: string, body?: unknown): Promise<unknown> {
  const res = await fetch(`${consul.address}${path}`, {
    method,
    headers: { 'X-Consul-Token': MASTER },
    ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
  });
  const text = await res.text();
  assert.equal(res.status, 200, `${method} ${path}: ${res.status} ${text}`);
  return text === '' ? undefined : JSON.parse(text);
}

describe('under Consul ACLs with the shipped least-privilege policy', () => {
  let consul: ConsulInstance;
  let pebble: PebbleInstance;
  let vault: VaultStandin;
  let svc: RunningService;
  let token: string;
  const logs = captureLogs('debug');

  before(async () => {
    const challengePort = await freePort();
    consul = await startConsul({ acl: { masterToken: MASTER } });
    pebble = await startPebble({ httpPort: challengePort });
    vault = await startVaultStandin();
    const policy = (await consulAsMaster(consul, 'PUT', '/v1/acl/policy', {
      Name: 'consul-acme',
      Rules: POLICY_RULES,
    })) as { ID: string };
    const created = (await consulAsMaster(consul, 'PUT', '/v1/acl/token', {
      Description: 'consul-acme',
      Policies: [{ ID: policy.ID }],
    })) as { SecretID: string };
    token = created.SecretID;
    await consulAsMaster(consul, 'PUT', '/v1/agent/service/register', {
      ID: 'web',
      Name: 'web',
      Port: 9000,
      Tags: [`urlprefix-${ALLOWED}/`, `urlprefix-${DENIED}/`],
    });
    await consulAsMaster(consul, 'PUT', '/v1/kv/consul-acme/policy/deny', `# refused on purpose\n${DENIED}\n`);
    svc = await startService({
      consulAddress: consul.address,
      directoryUrl: pebble.directoryUrl,
      caBundlePem: pebble.caBundlePem,
      challengePort,
      dnsServer: pebble.dnsServer,
      logger: logs.logger,
      env: {
        CONSUL_HTTP_TOKEN: token,
        CONSUL_ACME_STORE: 'vault',
        VAULT_ADDR: vault.address,
        VAULT_TOKEN: vault.token,
      },
    });
  });

  after(async () => {
    await svc?.stop();
    await vault?.close();
    await pebble?.stop();
    await consul?.stop();
  });

  test('the catalog watch, the challenge store and the per-certificate lock let a certificate be issued', async () => {
    await waitFor(
      `certificate for ${ALLOWED} in Vault`,
      async () => {
        const res = await fetch(`${vault.address}/v1/secret/data/fabio/certs/${ALLOWED}`, {
          headers: { 'X-Vault-Token': vault.token },
        });
        return res.status === 200;
      },
      { timeoutMs: 60_000 },
    );
  });

  test('the deny list is read from Consul KV with the same token', async () => {
    const status = (await (await fetch(`${svc.listening.adminUrl}/status`)).json()) as StatusReport;
    const denied = status.certificates.find((c) => c.hostname === DENIED);
    assert.equal(denied?.state, 'refused');
    assert.equal(denied?.policy, `denied by ${DENIED}`);
  });

  test('the renewal leader lock is held through a session the token may create', async () => {
    const entries = (await consulAsMaster(consul, 'GET', '/v1/kv/consul-acme/locks/?recurse')) as Array<{
      Key: string;
      Session?: string;
    }>;
    const leader = entries.find((e) => e.Key === 'consul-acme/locks/leader/renewal-scan');
    assert.ok(leader?.Session, 'the leader lock has a session');
  });

  test('both registrations are in the catalog: the challenge routes and the certificate health check', async () => {
    const services = (await consulAsMaster(consul, 'GET', '/v1/agent/services')) as Record<
      string,
      { Service: string; Tags: string[] }
    >;
    const own = Object.values(services).find((s) => s.Service === 'consul-acme');
    assert.deepEqual(own?.Tags, [`urlprefix-${ALLOWED}/.well-known/acme-challenge/`]);
    assert.ok(Object.values(services).some((s) => s.Service === 'consul-acme-certificates'));
  });

  test('nothing asked Consul for more than the policy grants', () => {
    const denials = logs.lines
      .map((l) => JSON.stringify(l))
      .filter((l) => /CONSUL_PERMISSION_DENIED|Permission denied|ACL not found/.test(l));
    assert.deepEqual(denials, []);
  });
});
