/**
 * The whole path against real servers: a service registered in real Consul 1.8.7 declares
 * hostnames in three kinds of tag; consul-acme obtains certificates from real Pebble, which
 * validates HTTP-01 against our responder, and writes them to the Vault stand-in in Fabio's
 * layout (first run) or to the file store (second run).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { registerService, startConsul, type ConsulInstance as RunningConsul } from '../support/consul.js';
import { startPebble, type RunningPebble } from '../support/pebble.js';
import { startVaultStandin, type VaultStandin } from '../support/vault-standin.js';
import { startService, type RunningService } from '../support/service-harness.js';
import { freePort } from '../support/net.js';
import { waitFor } from '../support/wait.js';
import { chainsToRoot, dnsNames, keyMatches, splitPem } from '../support/x509.js';
import type { StatusReport } from '../../src/engine/status.js';

const FABIO_HOST = 'fabio.example.test';
const TRAEFIK_HOST = 'traefik.example.test';
const EXPLICIT_HOST = 'explicit.example.test';
const LATER_HOST = 'later.example.test';

async function vaultSecret(
  vault: VaultStandin,
  hostname: string,
): Promise<{ data: Record<string, string>; version: number } | undefined> {
  const res = await fetch(`${vault.address}/v1/secret/data/fabio/certs/${hostname}`, {
    headers: { 'X-Vault-Token': vault.token },
  });
  if (res.status === 404) return undefined;
  const body = (await res.json()) as { data: { data: Record<string, string>; metadata: { version: number } } };
  return { data: body.data.data, version: body.data.metadata.version };
}

async function fetchStatus(adminUrl: string): Promise<StatusReport> {
  const res = await fetch(`${adminUrl}/status`);
  return (await res.json()) as StatusReport;
}

async function registeredTags(consulAddress: string): Promise<string[]> {
  const res = await fetch(`${consulAddress}/v1/agent/services`);
  const services = (await res.json()) as Record<string, { Service: string; Tags: string[] }>;
  return Object.values(services)
    .filter((s) => s.Service === 'consul-acme')
    .flatMap((s) => s.Tags)
    .sort();
}

const THREE_KINDS_OF_TAG = [
  `urlprefix-${FABIO_HOST}/`,
  `traefik.http.routers.web.rule=Host(\`${TRAEFIK_HOST}\`)`,
  `consul-acme.hosts=${EXPLICIT_HOST}`,
];

describe('issuance end to end with real Consul and Pebble', () => {
  let consul: RunningConsul;
  let pebble: RunningPebble;
  let challengePort: number;

  before(async () => {
    challengePort = await freePort();
    consul = await startConsul();
    pebble = await startPebble({ httpPort: challengePort });
  });

  after(async () => {
    await pebble?.stop();
    await consul?.stop();
  });

  describe('with the Vault store', () => {
    let vault: VaultStandin;
    let svc: RunningService;

    before(async () => {
      vault = await startVaultStandin();
      await registerService(consul.address, 'web', [
        ...THREE_KINDS_OF_TAG,
        'urlprefix-bad_name.example.test/',
        'traefik.http.routers.x.rule=Host(`',
        'urlprefix-10.0.0.1/',
      ]);
      svc = await startService({
        consulAddress: consul.address,
        directoryUrl: pebble.directoryUrl,
        caBundlePem: pebble.caBundlePem,
        challengePort,
        // The pre-flight check (on by default) resolves through Pebble's DNS and probes our responder.
        dnsServer: pebble.dnsServer,
        env: { CONSUL_ACME_STORE: 'vault', VAULT_ADDR: vault.address, VAULT_TOKEN: vault.token },
      });
    });

    after(async () => {
      await svc?.stop();
      await vault?.close();
    });

    test('each hostname from the three kinds of tag gets a certificate in Vault, in the fields Fabio reads', async () => {
      const roots = await pebble.rootsPem();
      for (const hostname of [FABIO_HOST, TRAEFIK_HOST, EXPLICIT_HOST]) {
        const secret = await waitFor(`certificate for ${hostname} in Vault`, () => vaultSecret(vault, hostname), {
          timeoutMs: 60_000,
        });
        const { cert, key } = secret.data;
        assert.ok(cert && key, `${hostname}: secret has cert and key fields`);
        assert.deepEqual(dnsNames(splitPem(cert)[0]!), [hostname], `${hostname}: SAN is the hostname`);
        assert.ok(chainsToRoot(cert, roots), `${hostname}: chains to Pebble's root`);
        assert.ok(keyMatches(cert, key), `${hostname}: key matches the certificate`);
        assert.equal(secret.data.managed_by, 'consul-acme');
      }
    });

    test('a garbage tag and names the CA would refuse leave the others alone, and the status says why', async () => {
      const status = await waitFor('status with refused names and three valid certificates', async () => {
        const s = await fetchStatus(svc.listening.adminUrl);
        return s.rejected.length >= 3 && s.certificates.filter((c) => c.state === 'valid').length === 3 ? s : undefined;
      });
      const byValue = new Map(status.rejected.map((r) => [r.value, r]));
      assert.match(byValue.get('bad_name.example.test')?.reason ?? '', /bad_name/);
      assert.match(byValue.get('10.0.0.1')?.reason ?? '', /IP/);
      const malformed = status.rejected.find((r) => r.tag.startsWith('traefik.http.routers.x.rule'));
      assert.ok(malformed, 'the broken Traefik rule is reported');
      assert.equal(malformed.service, 'web');
      const valid = status.certificates.filter((c) => c.state === 'valid').map((c) => c.hostname);
      assert.deepEqual(valid, [EXPLICIT_HOST, FABIO_HOST, TRAEFIK_HOST]);
    });

    test('the service registration carries one challenge route per managed hostname', async () => {
      const tags = await waitFor('three challenge routes', async () => {
        const t = await registeredTags(consul.address);
        return t.length === 3 ? t : undefined;
      });
      assert.deepEqual(
        tags,
        [EXPLICIT_HOST, FABIO_HOST, TRAEFIK_HOST].map((h) => `urlprefix-${h}/.well-known/acme-challenge/`),
      );
    });

    test('adding a tag to the running service produces a new certificate without a restart', async () => {
      await registerService(consul.address, 'web', [...THREE_KINDS_OF_TAG, `urlprefix-${LATER_HOST}/api`]);
      const secret = await waitFor(`certificate for ${LATER_HOST}`, () => vaultSecret(vault, LATER_HOST), {
        timeoutMs: 60_000,
      });
      assert.deepEqual(dnsNames(splitPem(secret.data.cert!)[0]!), [LATER_HOST]);
      assert.ok(chainsToRoot(secret.data.cert!, await pebble.rootsPem()));
      await waitFor('the new challenge route', async () =>
        (await registeredTags(consul.address)).includes(`urlprefix-${LATER_HOST}/.well-known/acme-challenge/`),
      );
    });
  });

  describe('with the file store', () => {
    let svc: RunningService;

    before(async () => {
      await registerService(consul.address, 'web', THREE_KINDS_OF_TAG);
      svc = await startService({
        consulAddress: consul.address,
        directoryUrl: pebble.directoryUrl,
        caBundlePem: pebble.caBundlePem,
        challengePort,
      });
    });

    after(async () => {
      await svc?.stop();
    });

    test('each hostname gets a certificate and a private key on disk, the key readable only by its owner', async () => {
      const roots = await pebble.rootsPem();
      for (const hostname of [FABIO_HOST, TRAEFIK_HOST, EXPLICIT_HOST]) {
        const folder = join(svc.dir, 'certs', hostname);
        const cert = await waitFor(
          `${hostname}/cert.pem`,
          () => {
            try {
              return readFileSync(join(folder, 'cert.pem'), 'utf8');
            } catch {
              return undefined;
            }
          },
          { timeoutMs: 60_000 },
        );
        const key = readFileSync(join(folder, 'key.pem'), 'utf8');
        assert.deepEqual(dnsNames(splitPem(cert)[0]!), [hostname]);
        assert.ok(chainsToRoot(cert, roots));
        assert.ok(keyMatches(cert, key));
        assert.equal(statSync(join(folder, 'key.pem')).mode & 0o777, 0o600);
      }
    });

    test('the service deregisters itself on shutdown', async () => {
      await svc.stop();
      assert.deepEqual(await registeredTags(consul.address), []);
    });
  });
});
