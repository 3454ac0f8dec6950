/**
 * Consul 1.8.7 with `verify_incoming` on and a certificate authority made in the test: the service
 * reaches it over https with CONSUL_CACERT, CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY (and
 * CONSUL_TLS_SERVER_NAME when the address is not a name the certificate carries), becomes ready and
 * registers itself; without the client settings it stays not ready and says which settings it lacks.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import type { StatusReport } from '../../src/engine/status.js';
import { startConsul, type ConsulInstance } from '../support/consul.js';
import { freePort } from '../support/net.js';
import { startService, type RunningService } from '../support/service-harness.js';
import { makeTestPki, type TestPki } from '../support/tls.js';
import { waitFor } from '../support/wait.js';

async function status(svc: RunningService): Promise<StatusReport> {
  return (await (await fetch(`${svc.listening.adminUrl}/status`)).json()) as StatusReport;
}

describe('Consul with verify_incoming', () => {
  let consul: ConsulInstance;
  let pki: TestPki;
  const running: RunningService[] = [];

  const start = async (env: Record<string, string>, instanceName: string): Promise<RunningService> => {
    const svc = await startService({
      consulAddress: consul.httpsAddress!,
      directoryUrl: 'https://127.0.0.1:9/directory',
      caBundlePem: readFileSync(pki.caFile, 'utf8'),
      challengePort: await freePort(),
      env: {
        CONSUL_CACERT: pki.caFile,
        CONSUL_ACME_INSTANCE_NAME: instanceName,
        CONSUL_ACME_RETRY_SCHEDULE: '1s',
        ...env,
      },
    });
    running.push(svc);
    return svc;
  };

  before(async () => {
    pki = makeTestPki();
    consul = await startConsul({
      tls: { certFile: pki.certFile, keyFile: pki.keyFile, verifyIncoming: { caFile: pki.caFile } },
    });
  });

  after(async () => {
    for (const svc of running) await svc.stop();
    await consul?.stop();
  });

  test('with the client certificate the service connects, becomes ready and registers itself', async () => {
    const svc = await start(
      { CONSUL_CLIENT_CERT: pki.clientCertFile, CONSUL_CLIENT_KEY: pki.clientKeyFile },
      'with-client-certificate',
    );
    await waitFor('ready', async () =>
      (await fetch(`${svc.listening.adminUrl}/health/ready`)).status === 200 ? true : undefined,
    );
    assert.equal((await status(svc)).permissions?.passed, true);
    // Over the agent's plain HTTP port, which the test keeps for itself.
    await waitFor('the certificate health registration in the agent', async () => {
      const services = (await (await fetch(`${consul.address}/v1/agent/services`)).json()) as Record<string, unknown>;
      return services['consul-acme-certificates-with-client-certificate'] !== undefined ? true : undefined;
    });
  });

  test('CONSUL_TLS_SERVER_NAME checks the certificate against that name when the address is an IP', async () => {
    const named = await start(
      {
        CONSUL_CLIENT_CERT: pki.clientCertFile,
        CONSUL_CLIENT_KEY: pki.clientKeyFile,
        CONSUL_TLS_SERVER_NAME: 'localhost',
      },
      'server-name-localhost',
    );
    await waitFor('ready', async () =>
      (await fetch(`${named.listening.adminUrl}/health/ready`)).status === 200 ? true : undefined,
    );
    const wrong = await start(
      {
        CONSUL_CLIENT_CERT: pki.clientCertFile,
        CONSUL_CLIENT_KEY: pki.clientKeyFile,
        CONSUL_TLS_SERVER_NAME: 'consul.elsewhere.test',
      },
      'server-name-wrong',
    );
    const error = await waitFor('the self-check error', async () => (await status(wrong)).permissions?.error);
    assert.match(error, /certificate does not carry the name we connected to .*CONSUL_TLS_SERVER_NAME/);
  });

  test('without the client certificate it stays not ready, and the error names the settings to set', async () => {
    const svc = await start({}, 'without-client-certificate');
    const error = await waitFor('the self-check error', async () => (await status(svc)).permissions?.error);
    assert.match(
      error,
      /CONSUL_UNAVAILABLE: .*Consul refused the TLS handshake \(ERR_SSL_.*\): it verifies clients .*set CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY/,
    );
    assert.equal((await fetch(`${svc.listening.adminUrl}/health/ready`)).status, 503);
    const report = await status(svc);
    assert.equal(report.ready, false);
    assert.equal(report.permissions?.passed, false);
  });
});
