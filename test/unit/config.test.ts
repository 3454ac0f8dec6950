import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { describeConfig, loadConfig } from '../../src/config/load.js';
import { LETS_ENCRYPT_STAGING, parseDurationMs } from '../../src/config/schema.js';
import { ConfigError } from '../../src/errors.js';

const noFiles = {
  readFile: (p: string): string => {
    throw new Error(`ENOENT: ${p}`);
  },
  isReadable: () => true,
};

function problemsOf(env: Record<string, string>, extra: Partial<Parameters<typeof loadConfig>[0]> = {}): string[] {
  try {
    loadConfig({ env, ...noFiles, ...extra });
  } catch (err) {
    assert.ok(err instanceof ConfigError);
    return [...err.problems];
  }
  return [];
}

describe('configuration', () => {
  test("with no settings at all, the defaults apply and Let's Encrypt staging is the directory", () => {
    const config = loadConfig({ env: {}, ...noFiles });
    assert.equal(config.directoryUrl, LETS_ENCRYPT_STAGING);
    assert.equal(config.store, 'file');
    assert.equal(config.consulAddress, 'http://127.0.0.1:8500');
    assert.equal(config.keyType, 'ec-p256');
    assert.equal(config.vaultMount, 'secret');
    assert.equal(config.vaultPrefix, 'fabio/certs');
    assert.ok(Object.isFrozen(config));
  });

  test('letsencrypt-production is one word for the production directory', () => {
    const config = loadConfig({ env: { CONSUL_ACME_DIRECTORY_URL: 'letsencrypt-production' }, ...noFiles });
    assert.equal(config.directoryUrl, 'https://acme-v02.api.letsencrypt.org/directory');
  });

  test('a Consul address without a scheme is taken as http, as the consul CLI does', () => {
    assert.equal(
      loadConfig({ env: { CONSUL_HTTP_ADDR: '10.1.2.3:8500' }, ...noFiles }).consulAddress,
      'http://10.1.2.3:8500',
    );
  });

  test('every problem is reported at once, each naming its variable', () => {
    const problems = problemsOf({
      CONSUL_ACME_QUEUE_CONCURRENCY: 'many',
      CONSUL_ACME_KEY_TYPE: 'dsa',
      CONSUL_ACME_DIRECTORY_URL: 'http://insecure.example/dir',
      CONSUL_ACME_STORE: 'vault',
      CONSUL_ACME_RETRY_SCHEDULE: '1m,soon',
      CONSUL_ACME_EAB_KID: 'kid-only',
    });
    assert.equal(problems.length, 6, problems.join('\n'));
    for (const name of [
      'CONSUL_ACME_QUEUE_CONCURRENCY',
      'CONSUL_ACME_KEY_TYPE',
      'CONSUL_ACME_DIRECTORY_URL',
      'VAULT_TOKEN',
      'CONSUL_ACME_RETRY_SCHEDULE',
      'CONSUL_ACME_EAB_KID',
    ]) {
      assert.ok(
        problems.some((p) => p.includes(name)),
        `a problem names ${name}`,
      );
    }
  });

  test('the Vault store takes its token from VAULT_TOKEN_FILE as well as VAULT_TOKEN', () => {
    assert.deepEqual(problemsOf({ CONSUL_ACME_STORE: 'vault', VAULT_TOKEN_FILE: '/secrets/vault_token' }), []);
    assert.deepEqual(problemsOf({ CONSUL_ACME_STORE: 'vault' }), [
      'VAULT_TOKEN or VAULT_TOKEN_FILE is required when CONSUL_ACME_STORE=vault',
    ]);
  });

  test('a client certificate needs its key, and every TLS and token file must be readable', () => {
    assert.deepEqual(problemsOf({ CONSUL_CLIENT_CERT: '/tls/client.pem', VAULT_CLIENT_KEY: '/tls/vault.key' }), [
      'CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY must be set together',
      'VAULT_CLIENT_CERT and VAULT_CLIENT_KEY must be set together',
    ]);
    const unreadable = problemsOf(
      {
        CONSUL_CLIENT_CERT: '/tls/client.pem',
        CONSUL_CLIENT_KEY: '/tls/client.key',
        CONSUL_HTTP_TOKEN_FILE: '/secrets/consul_token',
      },
      { isReadable: () => false },
    );
    assert.deepEqual(unreadable, [
      'CONSUL_CLIENT_CERT /tls/client.pem is not a readable file',
      'CONSUL_CLIENT_KEY /tls/client.key is not a readable file',
      'CONSUL_HTTP_TOKEN_FILE /secrets/consul_token is not a readable file',
    ]);
  });

  test('the home datacenter and the TLS server names are names, not anything', () => {
    const problems = problemsOf({
      CONSUL_ACME_HOME_DATACENTER: 'dc 1',
      CONSUL_TLS_SERVER_NAME: 'https://consul',
      VAULT_TLS_SERVER_NAME: 'vault.service.consul',
    });
    assert.equal(problems.length, 2, problems.join('\n'));
    assert.ok(problems.some((p) => p.startsWith('CONSUL_ACME_HOME_DATACENTER')));
    assert.ok(problems.some((p) => p.startsWith('CONSUL_TLS_SERVER_NAME')));
  });

  test('the environment wins over the config file, and the file wins over defaults', () => {
    const file = JSON.stringify({ queueConcurrency: 8, keyType: 'rsa-2048' });
    const config = loadConfig({
      env: { CONSUL_ACME_KEY_TYPE: 'ec-p384' },
      configFile: '/etc/consul-acme.json',
      readFile: () => file,
      isReadable: () => true,
    });
    assert.equal(config.queueConcurrency, 8);
    assert.equal(config.keyType, 'ec-p384');
    assert.equal(config.configFile, '/etc/consul-acme.json');
  });

  test('an unknown key or a bad value in the config file is reported with the file name', () => {
    const file = JSON.stringify({ queueConcurency: 8, renewRemainingFraction: 2 });
    const problems = problemsOf({ CONSUL_ACME_CONFIG_FILE: '/c.json' }, { readFile: () => file });
    assert.equal(problems.length, 2, problems.join('\n'));
    assert.match(problems[0]!, /\/c\.json.*queueConcurency/);
    assert.match(problems[1]!, /\/c\.json: renewRemainingFraction/);
  });

  test('a config file that is not JSON is one clear problem', () => {
    assert.match(problemsOf({}, { configFile: '/c.json', readFile: () => '{ nope' })[0]!, /\/c\.json: not valid JSON/);
  });

  test('a CA bundle that cannot be read is reported', () => {
    const problems = problemsOf({ CONSUL_ACME_CA_BUNDLE: '/missing.pem' }, { isReadable: () => false });
    assert.match(problems[0]!, /CONSUL_ACME_CA_BUNDLE \/missing\.pem is not a readable file/);
  });

  test('the account path may not sit under the Fabio certificate prefix', () => {
    const problems = problemsOf({ CONSUL_ACME_VAULT_ACCOUNT_PATH: 'fabio/certs/account' });
    assert.match(problems[0]!, /must not be under/);
  });

  test('the pending-order path defaults outside the Fabio prefix and may not sit under it', () => {
    assert.equal(loadConfig({ env: {}, ...noFiles }).vaultPendingPath, 'consul-acme/pending');
    for (const path of ['fabio/certs/pending', 'fabio/certs']) {
      const problems = problemsOf({ CONSUL_ACME_VAULT_PENDING_PATH: path });
      assert.equal(problems.length, 1, problems.join('\n'));
      assert.match(problems[0]!, /CONSUL_ACME_VAULT_PENDING_PATH must not be under CONSUL_ACME_VAULT_PREFIX/);
    }
    assert.deepEqual(problemsOf({ CONSUL_ACME_VAULT_PENDING_PATH: 'fabio/certs-pending' }), []);
    assert.match(problemsOf({ CONSUL_ACME_VAULT_PENDING_PATH: '/lead/slash' })[0]!, /a path without leading/);
  });

  test('check-config masks secrets and shows every setting', () => {
    const config = loadConfig({ env: { CONSUL_HTTP_TOKEN: 's3cr3t-token', VAULT_TOKEN: 'hvs.abc' }, ...noFiles });
    const text = describeConfig(config);
    assert.ok(!text.includes('s3cr3t-token') && !text.includes('hvs.abc'));
    assert.match(text, /CONSUL_HTTP_TOKEN\s+\(set, hidden\)/);
    assert.match(text, /CONSUL_ACME_DIRECTORY_URL\s+https:\/\/acme-staging-v02/);
  });

  for (const [input, expected] of [
    ['500ms', 500],
    ['90s', 90_000],
    ['5m', 300_000],
    ['2h', 7_200_000],
    ['7d', 604_800_000],
    ['5', undefined],
    ['1.5h', undefined],
    ['-1m', undefined],
  ] as const) {
    test(`the duration "${input}" reads as ${expected ?? 'invalid'}`, () => {
      assert.equal(parseDurationMs(input), expected);
    });
  }
});
