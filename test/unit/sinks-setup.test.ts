import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { MemoryCertificateStore } from '../../src/adapters/memory/memory-certificate-store.js';
import { loadConfig } from '../../src/config/load.js';
import { certificateHealth, withFailingSinks } from '../../src/domain/certificate-health.js';
import { ConfigError, ConsulAcmeError } from '../../src/errors.js';
import { silentLogger } from '../../src/logging.js';
import { HaproxySink } from '../../src/sinks/haproxy-sink.js';
import { HookSink } from '../../src/sinks/hook-sink.js';
import { createSinkRunner, createSinks, storeSnapshot, WITHHELD_FROM_HOOK } from '../../src/sinks/index.js';
import { TraefikSink } from '../../src/sinks/traefik-sink.js';
import { makeCertificateData, makeTestCertificate } from '../support/certs.js';

const noFiles = {
  readFile: (p: string): string => {
    throw new Error(`ENOENT: ${p}`);
  },
  isReadable: () => true,
};

function problemsOf(env: Record<string, string>): string[] {
  try {
    loadConfig({ env, ...noFiles });
  } catch (err) {
    assert.ok(err instanceof ConfigError);
    return [...err.problems];
  }
  return [];
}

describe('sink settings', () => {
  test('no sink setting: no sink and no runner', () => {
    const config = loadConfig({ env: {}, ...noFiles });
    assert.deepEqual(createSinks(config, silentLogger()), []);
    assert.equal(createSinkRunner(config, silentLogger(), { store: new MemoryCertificateStore() }), undefined);
    assert.equal(config.hookTimeoutMs, 30_000);
    assert.equal(config.sinkResyncIntervalMs, 600_000);
    assert.equal(config.sinkFailingWarningMs, 600_000);
  });

  test('each sink is built from its setting, in the order HAProxy, Traefik, hook; the crt-list defaults into the folder', () => {
    const config = loadConfig({
      env: {
        CONSUL_ACME_HAPROXY_DIR: '/srv/haproxy/certs',
        CONSUL_ACME_HAPROXY_SOCKET: '/run/haproxy/admin.sock',
        CONSUL_ACME_TRAEFIK_DIR: '/srv/traefik/dynamic',
        CONSUL_ACME_HOOK_COMMAND: 'systemctl reload nginx',
        CONSUL_ACME_HOOK_TIMEOUT: '5s',
      },
      ...noFiles,
    });
    const sinks = createSinks(config, silentLogger());
    assert.deepEqual(
      sinks.map((s) => s.name),
      ['haproxy', 'traefik', 'hook'],
    );
    assert.ok(sinks[0] instanceof HaproxySink && sinks[1] instanceof TraefikSink && sinks[2] instanceof HookSink);
    assert.equal(sinks[0].crtListPath, '/srv/haproxy/certs/crt-list');
    assert.equal(config.hookTimeoutMs, 5_000);
  });

  test('every secret setting is withheld from the hook', () => {
    assert.deepEqual([...WITHHELD_FROM_HOOK].sort(), [
      'CONSUL_ACME_ADMIN_TOKEN',
      'CONSUL_ACME_EAB_HMAC_KEY',
      'CONSUL_HTTP_TOKEN',
      'VAULT_TOKEN',
    ]);
  });

  test('HAProxy settings without the folder, overlapping folders and unusable paths are each reported', () => {
    assert.deepEqual(problemsOf({ CONSUL_ACME_HAPROXY_SOCKET: '/run/haproxy.sock' }), [
      'CONSUL_ACME_HAPROXY_SOCKET needs CONSUL_ACME_HAPROXY_DIR (the folder of the HAProxy sink)',
    ]);
    assert.deepEqual(problemsOf({ CONSUL_ACME_HAPROXY_CRT_LIST: '/etc/haproxy/list' }), [
      'CONSUL_ACME_HAPROXY_CRT_LIST needs CONSUL_ACME_HAPROXY_DIR (the folder of the HAProxy sink)',
    ]);
    assert.deepEqual(problemsOf({ CONSUL_ACME_FILE_STORE_DIR: '/data', CONSUL_ACME_HAPROXY_DIR: '/data/haproxy' }), [
      'CONSUL_ACME_FILE_STORE_DIR and CONSUL_ACME_HAPROXY_DIR must be separate folders (both are under /data)',
    ]);
    assert.deepEqual(problemsOf({ CONSUL_ACME_HAPROXY_DIR: '/srv/x', CONSUL_ACME_TRAEFIK_DIR: '/srv/x' }), [
      'CONSUL_ACME_HAPROXY_DIR and CONSUL_ACME_TRAEFIK_DIR must be separate folders (both are under /srv/x)',
    ]);
    assert.deepEqual(problemsOf({ CONSUL_ACME_HAPROXY_DIR: '/srv/my certs' }), [
      `CONSUL_ACME_HAPROXY_DIR "/srv/my certs" cannot be named in HAProxy's runtime API (no spaces, quotes, backslashes, "#" or ";")`,
    ]);
    assert.deepEqual(problemsOf({ CONSUL_ACME_HOOK_TIMEOUT: '0s' }), [
      'CONSUL_ACME_HOOK_TIMEOUT must be longer than 0',
    ]);
    assert.deepEqual(problemsOf({ CONSUL_ACME_HOOK_TIMEOUT: 'soon' }), [
      'CONSUL_ACME_HOOK_TIMEOUT must be a duration such as 30s, 5m, 2h or 7d, got "soon"',
    ]);
  });

  test('with the Vault store the sinks may use any folder', () => {
    assert.deepEqual(
      problemsOf({
        CONSUL_ACME_STORE: 'vault',
        VAULT_TOKEN: 't',
        CONSUL_ACME_FILE_STORE_DIR: '/data',
        CONSUL_ACME_HAPROXY_DIR: '/data/haproxy',
      }),
      [],
    );
  });
});

describe('store snapshot for a re-sync', () => {
  test('holds the readable certificates, lists ours that are unreadable, and leaves out records not ours', async () => {
    const store = new MemoryCertificateStore();
    const good = await makeCertificateData({ hostname: 'good.example.test' });
    const broken = await makeCertificateData({ hostname: 'broken.example.test' });
    await store.put(good, 0);
    await store.put(broken, 0);
    store.corrupt('broken.example.test');
    store.putUnmanaged('manual.example.test', await makeTestCertificate({ hostnames: ['manual.example.test'] }));
    const snapshot = await storeSnapshot(store, 2);
    assert.deepEqual(
      snapshot.certificates.map((c) => c.hostname),
      ['good.example.test'],
    );
    assert.deepEqual(snapshot.unreadable, ['broken.example.test']);
  });

  test('a read that fails fails the whole snapshot, so no sink is re-synced from half the store', async () => {
    const store = new MemoryCertificateStore();
    await store.put(await makeCertificateData({ hostname: 'a.example.test' }), 0);
    await store.put(await makeCertificateData({ hostname: 'b.example.test' }), 0);
    store.failNext('get', new ConsulAcmeError('STORE_UNAVAILABLE', 'vault sealed', { retryable: true }));
    await assert.rejects(storeSnapshot(store), /vault sealed/);
  });
});

describe('certificate health with failing sinks', () => {
  const now = new Date('2026-01-01T00:00:00Z');
  const options = { warnBeforeMs: 86_400_000, criticalAfterFailures: 3 };
  const passing = certificateHealth(now, [{ hostname: 'a', expiresAt: '2026-03-01T00:00:00Z', attempts: 0 }], options);
  const sink = { name: 'haproxy', failingSince: '2025-12-31T23:00:00.000Z', lastError: 'HAPROXY_UNREACHABLE: gone' };

  test('no failing sink leaves the health as it is', () => {
    assert.deepEqual(withFailingSinks(passing, []), passing);
  });

  test('a sink failing too long turns passing into warning, and says which and why', () => {
    assert.deepEqual(withFailingSinks(passing, [sink]), {
      status: 'warning',
      problems: ['sink haproxy: failing since 2025-12-31T23:00:00.000Z: HAPROXY_UNREACHABLE: gone'],
    });
  });

  test('critical stays critical', () => {
    const critical = certificateHealth(
      now,
      [{ hostname: 'a', expiresAt: '2025-01-01T00:00:00Z', attempts: 0 }],
      options,
    );
    assert.equal(withFailingSinks(critical, [sink]).status, 'critical');
    assert.equal(withFailingSinks(critical, [sink]).problems.length, 2);
  });
});
