/**
 * Credentials that change under a running instance, and permissions missing at deploy time,
 * against real Consul 1.8.7 with ACLs, Pebble and the Vault stand-in:
 *
 * 1. Token rotation. The instance reads both tokens from files, as the Nomad job has it. Both files
 *    are replaced (renamed over, as Nomad's templates write them) with new tokens and the old
 *    tokens are revoked (Vault) and deleted (Consul): issuance and renewals go on without a
 *    restart and without one failed attempt, the short-lived Vault tokens are renewed before they
 *    expire, and the registrations were made again with the new Consul token, so their checks
 *    still reach the catalog after the old token is gone.
 * 2. Missing permissions. A Vault policy without the pending path, or a Consul policy without
 *    session write: the instance never becomes ready, names what is missing in /status and the
 *    log, and becomes ready once the policy is fixed, without a restart.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { StatusReport } from '../../src/engine/status.js';
import { startConsul, type ConsulInstance } from '../support/consul.js';
import { captureLogs, type LogLine } from '../support/logs.js';
import { freePort } from '../support/net.js';
import { startPebble, type PebbleInstance } from '../support/pebble.js';
import { removeOnExit } from '../support/processes.js';
import { startService, type RunningService } from '../support/service-harness.js';
import { startVaultStandin, type VaultStandin } from '../support/vault-standin.js';
import { waitFor } from '../support/wait.js';

const MASTER = 'b1a0c7de-0000-4000-8000-0000000cred1';
const POLICY_RULES = readFileSync(new URL('../../../deploy/consul-policy.hcl', import.meta.url), 'utf8');
const OUR_CA = 'ca.pebble.test';
const OTHER_CA = 'ca.elsewhere.test';

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

/** A Consul policy from `rules` and a token carrying it. */
async function consulToken(
  consul: ConsulInstance,
  name: string,
  rules: string,
): Promise<{ secretId: string; accessorId: string; policyId: string }> {
  const policy = (await consulAsMaster(consul, 'PUT', '/v1/acl/policy', { Name: name, Rules: rules })) as {
    ID: string;
  };
  const token = (await consulAsMaster(consul, 'PUT', '/v1/acl/token', {
    Description: name,
    Policies: [{ ID: policy.ID }],
  })) as { SecretID: string; AccessorID: string };
  return { secretId: token.SecretID, accessorId: token.AccessorID, policyId: policy.ID };
}

/** Replaces `file` as Nomad's template renderer does: a new file renamed over the old one. */
function replaceFile(file: string, text: string): void {
  writeFileSync(`${file}.new`, text);
  renameSync(`${file}.new`, file);
}

async function vaultVersion(vault: VaultStandin, hostname: string): Promise<number> {
  return vault.readRaw('secret', `fabio/certs/${hostname}`)?.current ?? 0;
}

async function status(svc: RunningService): Promise<StatusReport> {
  return (await (await fetch(`${svc.listening.adminUrl}/status`)).json()) as StatusReport;
}

async function readyStatus(svc: RunningService): Promise<number> {
  return (await fetch(`${svc.listening.adminUrl}/health/ready`)).status;
}

function tokenDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'consul-acme-tokens-'));
  removeOnExit(dir);
  return dir;
}

describe('tokens replaced on disk and the old ones revoked, without a restart', () => {
  const NAMES = ['rotate-a.example.test', 'rotate-b.example.test'];
  const LATE_NAME = 'rotate-late.example.test';
  const REFUSED_NAME = 'rotate-refused.example.test';
  let consul: ConsulInstance;
  let pebble: PebbleInstance;
  let vault: VaultStandin;
  let svc: RunningService;
  let consulA: { secretId: string; accessorId: string };
  let consulB: { secretId: string; accessorId: string };
  let dir: string;
  const logs = captureLogs('info');
  /** Index into the log lines at the moment the old tokens were revoked. */
  let revokedAt = 0;

  before(async () => {
    const challengePort = await freePort();
    consul = await startConsul({ acl: { masterToken: MASTER } });
    pebble = await startPebble({ httpPort: challengePort, certificateValidityPeriodSeconds: 30 });
    vault = await startVaultStandin();
    // Short-lived, renewable Vault tokens: the test outlives their ttl, so they must be renewed.
    vault.addToken('vault-a', { ttlSeconds: 6 });
    consulA = await consulToken(consul, 'consul-acme-a', POLICY_RULES);
    consulB = await consulToken(consul, 'consul-acme-b', POLICY_RULES);
    dir = tokenDir();
    writeFileSync(join(dir, 'consul_token'), `${consulA.secretId}\n`);
    writeFileSync(join(dir, 'vault_token'), 'vault-a\n');
    await consulAsMaster(consul, 'PUT', '/v1/agent/service/register', {
      ID: 'web',
      Name: 'web',
      Port: 9000,
      Tags: NAMES.map((name) => `urlprefix-${name}/`),
    });
    await pebble.addCaa(REFUSED_NAME, [{ tag: 'issue', value: OTHER_CA }]);
    svc = await startService({
      consulAddress: consul.address,
      directoryUrl: pebble.directoryUrl,
      caBundlePem: pebble.caBundlePem,
      challengePort,
      dnsServer: pebble.dnsServer,
      logger: logs.logger,
      env: {
        CONSUL_HTTP_TOKEN_FILE: join(dir, 'consul_token'),
        CONSUL_ACME_STORE: 'vault',
        VAULT_ADDR: vault.address,
        VAULT_TOKEN_FILE: join(dir, 'vault_token'),
        CONSUL_ACME_CAA_IDENTITIES: OUR_CA,
        CONSUL_ACME_RENEW_SCHEDULE: '*/2 * * * * *',
        CONSUL_ACME_RENEW_SPREAD: '0ms',
        // 30-second certificates are renewed with 10 s left; only a failing name makes the check change.
        CONSUL_ACME_EXPIRY_WARNING: '1s',
      },
    });
  });

  after(async () => {
    await svc?.stop();
    await vault?.close();
    await pebble?.stop();
    await consul?.stop();
  });

  test('before the switch: both names are issued and renewed, and the Vault token is renewed before it expires', async () => {
    for (const name of NAMES)
      await waitFor(`${name} renewed once`, async () => (await vaultVersion(vault, name)) >= 2, { timeoutMs: 90_000 });
    assert.ok(vault.countRequests({ pathPrefix: 'auth/token/renew-self', token: 'vault-a' }) >= 1, 'renew-self');
    assert.equal(await readyStatus(svc), 200);
  });

  test('after the switch: new names are issued and renewals go on, with 0 failed attempts', async () => {
    // The replacement Vault token is as short-lived as the first: it is kept alive by renewals too.
    vault.addToken('vault-b', { ttlSeconds: 6 });
    replaceFile(join(dir, 'consul_token'), `${consulB.secretId}\n`);
    replaceFile(join(dir, 'vault_token'), 'vault-b\n');
    // Both registrations (challenge routes, certificate health) were sent again with the new token.
    await waitFor('the registrations made again with the new Consul token', () =>
      logs.lines.filter((l) => l.event === 'token_changed').length >= 2 ? true : undefined,
    );
    await waitFor('a request to Vault with the new token', () => vault.countRequests({ token: 'vault-b' }) > 0);
    vault.revokeToken('vault-a');
    await consulAsMaster(consul, 'DELETE', `/v1/acl/token/${consulA.accessorId}`);
    revokedAt = logs.lines.length;
    const versionsAtSwitch = await Promise.all(NAMES.map((name) => vaultVersion(vault, name)));

    await consulAsMaster(consul, 'PUT', '/v1/agent/service/register', {
      ID: 'web-late',
      Name: 'web-late',
      Port: 9001,
      Tags: [`urlprefix-${LATE_NAME}/`],
    });
    await waitFor(`${LATE_NAME} issued after the switch`, async () => (await vaultVersion(vault, LATE_NAME)) >= 1, {
      timeoutMs: 60_000,
    });
    for (const [i, name] of NAMES.entries()) {
      // Two renewals after the revocation: the second one started well after it.
      await waitFor(
        `${name} renewed twice after the switch`,
        async () => ((await vaultVersion(vault, name)) >= versionsAtSwitch[i]! + 2 ? true : undefined),
        { timeoutMs: 90_000 },
      );
    }
    const after = logs.lines.slice(revokedAt);
    const failures = after.filter(
      (l: LogLine) =>
        l.event === 'cert_failed' ||
        l.event === 'retry_scheduled' ||
        /PERMISSION_DENIED|permission denied|ACL not found/i.test(JSON.stringify(l)),
    );
    assert.deepEqual(failures, [], 'no failed attempt and no refused request after the switch');
    assert.ok(vault.countRequests({ pathPrefix: 'auth/token/renew-self', token: 'vault-b' }) >= 1, 'vault-b renewed');
    assert.equal(await readyStatus(svc), 200, 'still ready, never restarted');
    const report = await status(svc);
    for (const name of [...NAMES, LATE_NAME])
      assert.equal(report.certificates.find((c) => c.hostname === name)?.state, 'valid', name);
  });

  test('the registrations still carry their checks: a check that changes after the old token is gone reaches the catalog', async () => {
    type CatalogCheck = { ServiceID: string; ServiceName: string; Status: string; Name: string };
    const checksOf = async (service: string): Promise<CatalogCheck[]> =>
      (await consulAsMaster(consul, 'GET', `/v1/health/checks/${service}`)) as CatalogCheck[];
    const routes = await checksOf('consul-acme');
    assert.equal(routes.length, 1, 'the challenge-route registration has its ready check');
    assert.equal(routes[0]?.Status, 'passing');
    const health = await checksOf('consul-acme-certificates');
    assert.equal(health.length, 1);
    assert.equal(health[0]?.Status, 'passing');
    // A name the CA may not issue for (CAA) fails on every step of the retry schedule, which turns
    // the certificate check critical. The agent syncs that change with the check's token: the
    // deleted one, unless the registration was made again with the new token.
    await consulAsMaster(consul, 'PUT', '/v1/agent/service/register', {
      ID: 'web-refused',
      Name: 'web-refused',
      Port: 9002,
      Tags: [`urlprefix-${REFUSED_NAME}/`],
    });
    await waitFor(
      'the critical certificate check in the catalog',
      async () => ((await checksOf('consul-acme-certificates'))[0]?.Status === 'critical' ? true : undefined),
      { timeoutMs: 90_000, intervalMs: 500 },
    );
  });
});

describe('a Vault policy without the pending path', () => {
  let consul: ConsulInstance;
  let vault: VaultStandin;
  let svc: RunningService;
  const logs = captureLogs('info');
  const PENDING = 'secret/data/consul-acme/pending';
  /** Whether the operator has added the pending-order rules to the policy yet. */
  let pendingGranted = false;

  before(async () => {
    consul = await startConsul();
    vault = await startVaultStandin();
    // deploy/vault-policy.hcl without the three pending-order rules (until the test adds them).
    vault.restrictToken(
      'no-pending',
      (_method, path) => pendingGranted || !/^secret\/(data|metadata)\/consul-acme\/pending/.test(path),
    );
    svc = await startService({
      consulAddress: consul.address,
      directoryUrl: 'https://127.0.0.1:9/directory',
      caBundlePem: '',
      challengePort: await freePort(),
      logger: logs.logger,
      env: {
        CONSUL_ACME_STORE: 'vault',
        VAULT_ADDR: vault.address,
        VAULT_TOKEN: 'no-pending',
        CONSUL_ACME_RETRY_SCHEDULE: '1s,2s,5s',
      },
    });
  });

  after(async () => {
    await svc?.stop();
    await vault?.close();
    await consul?.stop();
  });

  test('the instance never becomes ready and names each missing permission; a fixed policy makes it ready without a restart', async () => {
    const first = await waitFor('a self-check result', async () => (await status(svc)).permissions?.checkedAt);
    await waitFor('a second self-check', async () =>
      (await status(svc)).permissions?.checkedAt !== first ? true : undefined,
    );
    assert.equal(await readyStatus(svc), 503, 'never ready while the policy lacks the pending path');
    const report = await status(svc);
    assert.equal(report.ready, false);
    assert.equal(report.permissions?.passed, false);
    assert.deepEqual(
      report.permissions?.missing.map((m) => m.permission),
      [
        `create, read, update on "${PENDING}/*"`,
        'list on "secret/metadata/consul-acme/pending/"',
        'delete on "secret/metadata/consul-acme/pending/*"',
      ],
    );
    assert.ok(report.permissions?.missing.every((m) => m.system === 'vault'));
    const logged = logs.lines.find((l) => l.event === 'permission_missing');
    assert.ok(logged, 'permission_missing is logged');
    assert.match(
      String(logged.err),
      /PERMISSION_MISSING: .*create, read, update on "secret\/data\/consul-acme\/pending\/\*"/,
    );
    assert.equal(vault.countRequests({ pathPrefix: 'secret/data/fabio/certs' }), 0, 'nothing under the Fabio prefix');

    pendingGranted = true;
    await waitFor('ready once the policy is fixed', async () => ((await readyStatus(svc)) === 200 ? true : undefined));
    assert.equal((await status(svc)).permissions?.passed, true);
  });
});

describe('a Consul policy without session write', () => {
  let consul: ConsulInstance;
  let svc: RunningService;
  let token: { secretId: string; policyId: string };
  const logs = captureLogs('info');
  const WITHOUT_SESSION = POLICY_RULES.replace(/session_prefix "" \{[^}]*\}/, '');

  before(async () => {
    assert.notEqual(WITHOUT_SESSION, POLICY_RULES, 'the shipped policy has a session rule to take out');
    consul = await startConsul({ acl: { masterToken: MASTER } });
    token = await consulToken(consul, 'consul-acme-no-session', WITHOUT_SESSION);
    svc = await startService({
      consulAddress: consul.address,
      directoryUrl: 'https://127.0.0.1:9/directory',
      caBundlePem: '',
      challengePort: await freePort(),
      logger: logs.logger,
      env: { CONSUL_HTTP_TOKEN: token.secretId, CONSUL_ACME_RETRY_SCHEDULE: '1s,2s,5s' },
    });
  });

  after(async () => {
    await svc?.stop();
    await consul?.stop();
  });

  test('the instance never becomes ready and names session_prefix write; the fixed policy makes it ready', async () => {
    const first = await waitFor('a self-check result', async () => (await status(svc)).permissions?.checkedAt);
    await waitFor('a second self-check', async () =>
      (await status(svc)).permissions?.checkedAt !== first ? true : undefined,
    );
    assert.equal(await readyStatus(svc), 503);
    const missing = (await status(svc)).permissions?.missing ?? [];
    assert.deepEqual(
      missing.map((m) => [m.system, m.permission]),
      [['consul', 'session_prefix "" write']],
    );
    assert.match(
      missing[0]?.detail ?? '',
      /CONSUL_PERMISSION_DENIED: session create: Consul refused the token \(Permission denied\)/,
    );
    assert.match(missing[0]?.neededFor ?? '', /locks are held with a session/);
    // The probes left nothing behind.
    const keys = (await fetch(`${consul.address}/v1/kv/consul-acme/?keys`, { headers: { 'X-Consul-Token': MASTER } }))
      .status;
    assert.equal(keys, 404, 'no probe key left under the KV prefix');

    await consulAsMaster(consul, 'PUT', `/v1/acl/policy/${token.policyId}`, {
      Name: 'consul-acme-no-session',
      Rules: POLICY_RULES,
    });
    await waitFor('ready once the policy is fixed', async () => ((await readyStatus(svc)) === 200 ? true : undefined));
  });
});
