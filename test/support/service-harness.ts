/**
 * Starts consul-acme the way `consul-acme run` does (loadConfig → buildService → start) against
 * real Consul and Pebble, with the store the test asks for. Shared by the end-to-end tests and
 * the quick start.
 */
import { writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../../src/config/load.js';
import { buildService, type Listening, type Service } from '../../src/service.js';
import { createLogger, type Logger } from '../../src/logging.js';
import { freePort } from './net.js';

export interface HarnessOptions {
  consulAddress: string;
  directoryUrl: string;
  caBundlePem: string;
  challengePort: number;
  /** Pebble's DNS server, so the pre-flight check resolves names as Pebble does; without it the check is off. */
  dnsServer?: string;
  /** Extra settings as environment variables. */
  env?: Record<string, string>;
  logger?: Logger;
}

export interface RunningService {
  service: Service;
  listening: Listening;
  dir: string;
  stop(): Promise<void>;
}

export async function startService(opts: HarnessOptions): Promise<RunningService> {
  const dir = mkdtempSync(join(tmpdir(), 'consul-acme-svc-'));
  const caFile = join(dir, 'acme-ca.pem');
  writeFileSync(caFile, opts.caBundlePem);
  const adminPort = await freePort();
  const config = loadConfig({
    env: {
      CONSUL_HTTP_ADDR: opts.consulAddress,
      CONSUL_ACME_DIRECTORY_URL: opts.directoryUrl,
      CONSUL_ACME_CA_BUNDLE: caFile,
      CONSUL_ACME_CHALLENGE_HOST: '127.0.0.1',
      CONSUL_ACME_CHALLENGE_PORT: String(opts.challengePort),
      CONSUL_ACME_ADMIN_HOST: '127.0.0.1',
      CONSUL_ACME_ADMIN_PORT: String(adminPort),
      CONSUL_ACME_SERVICE_ADDRESS: '127.0.0.1',
      CONSUL_ACME_FILE_STORE_DIR: join(dir, 'certs'),
      CONSUL_ACME_WATCH_WAIT_SECONDS: '5',
      CONSUL_ACME_ACME_POLL_MIN_MS: '50',
      CONSUL_ACME_ACME_POLL_MAX_MS: '500',
      CONSUL_ACME_RETRY_SCHEDULE: '1s,2s,5s',
      CONSUL_ACME_LOG_LEVEL: 'warn',
      ...(opts.dnsServer
        ? {
            CONSUL_ACME_PREFLIGHT_DNS_SERVERS: opts.dnsServer,
            CONSUL_ACME_PREFLIGHT_HTTP_PORT: String(opts.challengePort),
          }
        : { CONSUL_ACME_PREFLIGHT: 'false' }),
      ...opts.env,
    },
  });
  const service = buildService(config, opts.logger ?? createLogger(config.logLevel));
  const listening = await service.start();
  return { service, listening, dir, stop: () => service.stop() };
}
