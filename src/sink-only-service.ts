/**
 * The sink-only mode (CONSUL_ACME_MODE=sinks, `consul-acme run --sinks-only`): on the node where
 * HAProxy's socket and files, Traefik's dynamic folder or a hook's target are, it keeps the sinks in
 * step with the store that the issuing instances write, and does nothing else: no issuance, no
 * challenge responder, no locks, no catalog or policy watch, no registration, no Consul at all.
 *
 *   store ──► SinkRunner (re-sync at start and every CONSUL_ACME_SINK_RESYNC_INTERVAL)
 *         └─► StoreFollower (lists every CONSUL_ACME_SINK_POLL_INTERVAL: names that appear or leave)
 *
 * Its admin API serves the health paths (ready once the store was listed; the certificate check
 * turns critical while the store fails and warning while a sink fails) and GET /status with the
 * sinks' state; the command paths answer 409.
 */
import { addressOf } from './http/server-address.js';
import { FileCertificateStore } from './adapters/file/file-certificate-store.js';
import { VaultCertificateStore } from './adapters/vault/vault-certificate-store.js';
import { openVaultConnection, type VaultConnection } from './adapters/connections.js';
import type { Config } from './config/schema.js';
import { withFailingSinks, withStoreFault, type CertificateHealth } from './domain/certificate-health.js';
import type { StatusReport } from './engine/status.js';
import { StoreFollower } from './engine/store-follower.js';
import { StoreHealth } from './engine/store-health.js';
import { buildAdminServer } from './http/admin-server.js';
import { F, type Logger } from './logging.js';
import { ServiceMetrics } from './metrics.js';
import type { CertificateStore } from './ports/certificate-store.js';
import { systemClock, type Clock } from './ports/clock.js';
import { createSinkRunner, type SinkRunner } from './sinks/index.js';

export interface SinkOnlyDeps {
  config: Config;
  logger: Logger;
  clock?: Clock;
  certificateStore: CertificateStore;
  sinks: SinkRunner;
  metrics?: ServiceMetrics;
  /** The Vault connection behind a Vault store: its token file is followed and its token renewed while the service runs. */
  vault?: VaultConnection;
}

export interface SinkOnlyService {
  start(): Promise<{ adminUrl: string }>;
  stop(): Promise<void>;
  status(): StatusReport;
}

export function createSinkOnlyService(deps: SinkOnlyDeps): SinkOnlyService {
  const { config, logger, sinks } = deps;
  const clock = deps.clock ?? systemClock;
  const log = logger.child({ [F.component]: 'service' });
  const metrics = deps.metrics ?? new ServiceMetrics();
  const storeHealth = new StoreHealth({ store: deps.certificateStore, clock, logger });
  const follower = new StoreFollower({
    store: deps.certificateStore,
    storeHealth,
    sinks,
    clock,
    logger,
    pollMs: config.sinkPollIntervalMs,
  });
  let stopping = false;
  const isReady = (): boolean => !stopping && follower.hasListed();
  const status = (): StatusReport => ({
    instance: config.instanceName,
    mode: 'sinks',
    ready: isReady(),
    store: deps.certificateStore.description,
    storeHealth: storeHealth.state(),
    directoryUrl: '',
    discovery: { lastSyncAt: follower.lastListedAt()?.toISOString(), lastError: follower.lastError(), services: 0 },
    certificates: [],
    rejected: [],
    policy: { deny: 0, allow: 0, always: 0, invalid: [], unreadable: [], failsClosed: undefined },
    sinks: sinks.status(),
  });
  metrics.bind({
    certificates: () => [],
    queueDepth: () => 0,
    inFlight: () => 0,
    lastSyncAt: () => follower.lastListedAt(),
    sinks: () => sinks.status(),
  });
  const health = (): CertificateHealth =>
    withFailingSinks(
      withStoreFault({ status: 'passing', problems: [] }, storeHealth.state().error),
      sinks.failingLongerThan(config.sinkFailingWarningMs),
    );
  const adminServer = buildAdminServer({
    logger: logger.child({ [F.component]: 'admin-http' }),
    isLive: () => true,
    isReady,
    status,
    certificateHealth: health,
    metrics: () => metrics.render(),
    adminToken: config.adminToken,
    operations: undefined,
  });
  let stopped: Promise<void> | undefined;
  return {
    status,
    async start() {
      await adminServer.listen({ host: config.adminHost, port: config.adminPort });
      const adminUrl = addressOf(adminServer);
      log.info({ adminUrl, mode: 'sinks' }, 'listening');
      deps.vault?.start();
      storeHealth.start();
      sinks.start();
      follower.start();
      return { adminUrl };
    },
    stop() {
      stopped ??= (async () => {
        stopping = true;
        await follower.stop();
        storeHealth.stop();
        await sinks.stop();
        await adminServer.close();
        deps.vault?.close();
        log.info('stopped');
      })();
      return stopped;
    },
  };
}

/** Builds the store and the sinks from the configuration, for `consul-acme run` in sinks mode. */
export function buildSinkOnlyService(config: Config, logger: Logger): SinkOnlyService {
  const vault = config.store === 'vault' ? openVaultConnection(config, logger) : undefined;
  const certificateStore: CertificateStore =
    vault !== undefined
      ? new VaultCertificateStore({
          client: vault.client,
          mount: config.vaultMount,
          prefix: config.vaultPrefix,
          pendingPath: config.vaultPendingPath,
          logger,
        })
      : new FileCertificateStore({ directory: config.fileStoreDir, logger });
  const metrics = new ServiceMetrics();
  const sinks = createSinkRunner(config, logger, {
    store: certificateStore,
    onApplied: (sink, outcome) => metrics.onSinkChange(sink, outcome),
    onHookRun: (result) => metrics.onHookRun(result),
  });
  // loadConfig refuses CONSUL_ACME_MODE=sinks without a sink; a caller that skipped it learns here.
  if (sinks === undefined) throw new Error('sink-only mode needs at least one sink configured');
  return createSinkOnlyService({ config, logger, certificateStore, sinks, metrics, ...(vault ? { vault } : {}) });
}
