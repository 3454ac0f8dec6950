/**
 * Wires the pieces together. `createService(deps)` takes every port as a dependency, so tests
 * run the real engine with any mix of real and in-memory adapters; `buildService(config)` makes
 * the real adapters from the configuration, for `consul-acme run`.
 */
import { readFileSync } from 'node:fs';
import type { FastifyInstance } from 'fastify';
import { accountId } from './adapters/account-record.js';
import { AcmeIssuer } from './adapters/acme/acme-issuer.js';
import { ConsulBudgetLedger } from './adapters/consul/consul-budget-ledger.js';
import { ConsulCertificateStateStore } from './adapters/consul/consul-certificate-state-store.js';
import { ConsulChallengeStore } from './adapters/consul/consul-challenge-store.js';
import { createConsulClient } from './adapters/consul/consul-client.js';
import { ConsulDiscovery } from './adapters/consul/consul-discovery.js';
import { ConsulLocker } from './adapters/consul/consul-locker.js';
import { ConsulPolicySource } from './adapters/consul/consul-policy-source.js';
import {
  ConsulServiceRegistration,
  ROUTE_DEREGISTER_CRITICAL_AFTER,
} from './adapters/consul/consul-service-registration.js';
import { FileAccountStore } from './adapters/file/file-account-store.js';
import { FileCertificateStore } from './adapters/file/file-certificate-store.js';
import { HttpPreflight } from './adapters/net/http-preflight.js';
import { VaultAccountStore } from './adapters/vault/vault-account-store.js';
import { VaultCertificateStore } from './adapters/vault/vault-certificate-store.js';
import { createVaultClient } from './adapters/vault/vault-client.js';
import type { Config } from './config/schema.js';
import type { Budget, BudgetScope } from './domain/budget.js';
import { certificateHealth } from './domain/certificate-health.js';
import { DEFAULT_EMERGENCY_FRACTION, type PlanOptions } from './domain/plan.js';
import { OrderGate } from './engine/order-gate.js';
import { IssuanceQueue, type JobOutcome } from './engine/queue.js';
import { Reconciler } from './engine/reconciler.js';
import { RenewalScheduler } from './engine/renewal-scheduler.js';
import type { StatusReport } from './engine/status.js';
import { CertificateWorker } from './engine/worker.js';
import { describeError } from './errors.js';
import { buildAdminServer } from './http/admin-server.js';
import { buildChallengeServer } from './http/challenge-server.js';
import { F, type Logger } from './logging.js';
import { ServiceMetrics } from './metrics.js';
import { ADMIN_HEALTH_PATHS, certificateHealthServiceName, consulKvFolder } from './naming.js';
import type { AccountStore } from './ports/account-store.js';
import type { BudgetLedger } from './ports/budget-ledger.js';
import type { CertificateStateStore } from './ports/certificate-state-store.js';
import type { CertificateStore } from './ports/certificate-store.js';
import type { ChallengeStore } from './ports/challenge-store.js';
import { systemClock, type Clock } from './ports/clock.js';
import type { Discovery } from './ports/discovery.js';
import type { Issuer } from './ports/issuer.js';
import type { Locker } from './ports/locker.js';
import type { PolicySource } from './ports/policy-source.js';
import type { Preflight } from './ports/preflight.js';
import type { ServiceRegistration } from './ports/service-registration.js';

export interface ServiceDeps {
  config: Config;
  logger: Logger;
  clock?: Clock;
  discovery: Discovery;
  certificateStore: CertificateStore;
  challengeStore: ChallengeStore;
  issuer: Issuer;
  locker: Locker;
  /** Persisted backoff per certificate; in memory when omitted. */
  stateStore?: CertificateStateStore;
  /** Undefined when registration is switched off. */
  registration: ServiceRegistration | undefined;
  /**
   * A sibling registration (`<serviceName>-certificates`) whose HTTP check reports certificate
   * health. It is separate from `registration` so that a warning about certificates can never
   * take this instance out of Fabio's routing (with `registry.consul.checksRequired = all`,
   * Fabio drops an instance whose checks are not all passing), which would stop the renewals
   * that would fix it.
   */
  healthRegistration?: ServiceRegistration | undefined;
  metrics?: ServiceMetrics;
  /** The deny, allow and always-issued lists; none means no policy. */
  policySource?: PolicySource;
  /** Shared budgets and CA pauses; none means no client-side budgets. */
  budgetLedger?: BudgetLedger;
  /** Checked before every order; none switches the pre-flight check off. */
  preflight?: Preflight;
  /** Called by `stop()` after everything else, to close clients the service opened. */
  onStopped?: () => Promise<void>;
}

export interface Listening {
  challengeUrl: string;
  adminUrl: string;
}

export interface Service {
  start(): Promise<Listening>;
  stop(): Promise<void>;
  status(): StatusReport;
  /** For tests: the engine pieces, to wait on and inspect. */
  readonly reconciler: Reconciler;
  readonly queue: IssuanceQueue;
  readonly renewal: RenewalScheduler;
}

function addressOf(app: FastifyInstance): string {
  const address = app.server.address();
  if (address === null || typeof address === 'string') return String(address);
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return `http://${host}:${address.port}`;
}

export function createService(deps: ServiceDeps): Service {
  const { config, logger } = deps;
  const clock = deps.clock ?? systemClock;
  const log = logger.child({ [F.component]: 'service' });
  const planOptions: PlanOptions = {
    renewWhenRemainingFraction: config.renewRemainingFraction,
    emergencyRemainingFraction: DEFAULT_EMERGENCY_FRACTION,
    retireGraceMs: config.retireGraceMs,
  };

  // The queue calls the worker, the worker asks the reconciler what is desired, and the
  // reconciler feeds the queue: the closures below are only called after all three exist.
  const queue: IssuanceQueue = new IssuanceQueue(
    (hostname, signal, attempt): Promise<JobOutcome> => worker.process(hostname, signal, attempt),
    {
      concurrency: config.queueConcurrency,
      retryScheduleMs: config.retryScheduleMs,
      busyRecheckMs: config.lockedRecheckMs,
      clock,
      logger,
      state: deps.stateStore,
    },
  );
  const reconciler: Reconciler = new Reconciler(
    { store: deps.certificateStore, queue, registration: deps.registration, clock, logger },
    {
      desired: {
        tagPrefix: config.tagPrefix,
        fabioTagPrefix: config.fabioTagPrefix,
        requireEnableTag: config.requireEnableTag,
      },
      ownServiceName: config.serviceName,
      extraHostnames: config.extraHostnames,
      directoryUrl: deps.issuer.directoryUrl,
      keyType: config.keyType,
      plan: planOptions,
      renewSpreadMs: config.renewSpreadMs,
    },
  );
  const worker: CertificateWorker = new CertificateWorker({
    store: deps.certificateStore,
    issuer: deps.issuer,
    locker: deps.locker,
    clock,
    logger,
    planOptions,
    desiredFor: (hostname) => reconciler.desiredFor(hostname),
    undeclaredSince: (hostname) => reconciler.undeclaredSince(hostname),
    onPlanned: (hostname, plan, stored) => reconciler.recordPlan(hostname, plan, stored),
    onOutcome: (event) => metrics.onOutcome(event),
    gate: new OrderGate({
      ledger: deps.budgetLedger,
      preflight: deps.preflight,
      budgets: budgetsFrom(config),
      clock,
      logger,
    }),
  });
  const metrics = deps.metrics ?? new ServiceMetrics();
  const renewal = new RenewalScheduler({
    locker: deps.locker,
    scan: () => reconciler.reconcileAll({ submit: true }),
    refresh: () => reconciler.reconcileAll({ submit: false }),
    schedule: config.renewSchedule,
    logger,
    onTick: (outcome) => metrics.onRenewalTick(outcome),
  });

  const challengeServer = buildChallengeServer({
    challengeStore: deps.challengeStore,
    logger: logger.child({ [F.component]: 'challenge-http' }),
  });
  let lastDiscoveryError: string | undefined;
  let stopping = false;
  const status = (): StatusReport => {
    const sync = reconciler.syncInfo();
    return {
      instance: config.instanceName,
      ready: isReady(),
      store: deps.certificateStore.description,
      directoryUrl: deps.issuer.directoryUrl,
      discovery: { lastSyncAt: sync.lastSyncAt?.toISOString(), lastError: lastDiscoveryError, services: sync.services },
      certificates: reconciler.certificateStatuses(),
      rejected: reconciler.rejected(),
      policy: reconciler.policyStatus(),
    };
  };
  const isReady = (): boolean => !stopping && reconciler.hasSynced();
  metrics.bind({
    certificates: () => reconciler.certificateStatuses(),
    queueDepth: () => queue.depth(),
    inFlight: () => queue.inFlight(),
    lastSyncAt: () => reconciler.syncInfo().lastSyncAt,
  });
  const health = () =>
    certificateHealth(clock.now(), reconciler.certificateStatuses(), {
      warnBeforeMs: config.expiryWarningMs,
      criticalAfterFailures: config.retryScheduleMs.length,
    });
  const adminServer = buildAdminServer({
    logger: logger.child({ [F.component]: 'admin-http' }),
    isLive: () => true,
    isReady,
    status,
    certificateHealth: health,
    metrics: () => metrics.render(),
  });

  const watchAbort = new AbortController();
  let watching: Promise<void> | undefined;
  let policyWatching: Promise<void> | undefined;
  let stopped: Promise<void> | undefined;

  const shutdown = async (): Promise<void> => {
    stopping = true;
    watchAbort.abort();
    await watching?.catch(() => undefined);
    await policyWatching?.catch(() => undefined);
    await renewal.stop();
    await queue.stop(config.shutdownTimeoutMs);
    await deps.locker.close();
    if (deps.registration) {
      await deps.registration
        .deregister()
        .catch((err: unknown) => log.warn({ [F.err]: describeError(err) }, 'deregistration failed'));
    }
    await deps.healthRegistration
      ?.deregister()
      .catch((err: unknown) => log.warn({ [F.err]: describeError(err) }, 'deregistration of the health check failed'));
    await Promise.allSettled([challengeServer.close(), adminServer.close()]);
    await deps.onStopped?.();
    log.info('stopped');
  };

  return {
    reconciler,
    queue,
    renewal,
    status,
    async start() {
      await challengeServer.listen({ host: config.challengeHost, port: config.challengePort });
      await adminServer.listen({ host: config.adminHost, port: config.adminPort });
      const listening = { challengeUrl: addressOf(challengeServer), adminUrl: addressOf(adminServer) };
      log.info(listening, 'listening');
      await deps.healthRegistration
        ?.update([])
        .catch((err: unknown) =>
          log.warn({ [F.err]: describeError(err) }, 'could not register the certificate health check'),
        );
      // Deny wins over everything, so no catalog name is planned before the policy is known.
      const firstPolicy = new Promise<void>((resolve) => {
        if (!deps.policySource) {
          resolve();
          return;
        }
        policyWatching = deps.policySource.watch(
          watchAbort.signal,
          async (policy) => {
            await reconciler.applyPolicy(policy);
            resolve();
          },
          (err) => log.warn({ [F.err]: describeError(err) }, 'policy watch failed; retrying'),
        );
      });
      watching = firstPolicy.then(() =>
        stopping
          ? undefined
          : deps.discovery.watch(
              watchAbort.signal,
              async (snapshot) => {
                lastDiscoveryError = undefined;
                const first = !reconciler.hasSynced();
                await reconciler.applySnapshot(snapshot);
                // The scan plans stored names against the declared set, so it waits for the first snapshot.
                if (first && !stopping) renewal.start();
              },
              (err) => {
                metrics.onWatchError();
                lastDiscoveryError = describeError(err);
                log.warn({ [F.err]: lastDiscoveryError }, 'catalog watch failed; retrying');
              },
            ),
      );
      return listening;
    },
    /** Stops taking work, finishes or abandons orders in flight, releases locks, deregisters. Idempotent. */
    stop() {
      stopped ??= shutdown();
      return stopped;
    },
  };
}

/** The budgets the configuration keeps (a budget set to `off` is left out). */
function budgetsFrom(config: Config): Budget[] {
  const settings: Array<[BudgetScope, Config['budgetNewOrders']]> = [
    ['account', config.budgetNewOrders],
    ['registered-domain', config.budgetRegisteredDomain],
    ['failed-authorizations', config.budgetFailedAuthorizations],
  ];
  return settings.flatMap(([scope, value]) =>
    value === 'off' ? [] : [{ scope, limit: value.limit, windowMs: value.windowMs }],
  );
}

/**
 * At most one catalog query every 2 s once the burst is spent. A quiet catalog keeps a blocking
 * query open for the whole wait; a churning one (deploys, our own tag updates) degrades to polling.
 */
const DISCOVERY_REQUESTS_PER_SECOND = 0.5;

/** Builds the real adapters from the configuration. */
export function buildService(config: Config, logger: Logger): Service {
  const consul = createConsulClient({
    address: config.consulAddress,
    token: config.consulToken,
    caCertPath: config.consulCaCert,
  });
  let certificateStore: CertificateStore;
  let accountStore: AccountStore;
  if (config.store === 'vault') {
    const vault = createVaultClient({
      address: config.vaultAddress,
      token: config.vaultToken ?? '',
      caCertPath: config.vaultCaCert,
    });
    certificateStore = new VaultCertificateStore({
      client: vault,
      mount: config.vaultMount,
      prefix: config.vaultPrefix,
      logger,
    });
    accountStore = new VaultAccountStore({
      client: vault,
      mount: config.vaultMount,
      path: config.vaultAccountPath,
      certificatePrefix: config.vaultPrefix,
    });
  } else {
    certificateStore = new FileCertificateStore({ directory: config.fileStoreDir });
    accountStore = new FileAccountStore({ directory: config.fileStoreDir });
  }
  const challengeStore = new ConsulChallengeStore({
    consul,
    prefix: consulKvFolder(config.kvPrefix, 'challenges'),
    logger,
  });
  // Keeps the store's local mirror current, so tokens other instances put are answered at once.
  challengeStore.start();
  const metrics = new ServiceMetrics();
  const issuer = new AcmeIssuer({
    directoryUrl: config.directoryUrl,
    caBundlePem: config.caBundle ? readFileSync(config.caBundle, 'utf8') : undefined,
    email: config.email,
    eab: config.eabKid && config.eabHmacKey ? { kid: config.eabKid, hmacKey: config.eabHmacKey } : undefined,
    accountStore,
    challengeStore,
    pollIntervalMinMs: config.acmePollMinMs,
    pollIntervalMaxMs: config.acmePollMaxMs,
    pollAttempts: config.acmePollAttempts,
    requestTimeoutMs: config.acmeRequestTimeoutMs,
    logger: logger.child({ [F.component]: 'acme' }),
    onRequest: (endpoint, status, durationMs) => metrics.onAcmeRequest(endpoint, status, durationMs),
  });
  const adminBase = `http://${config.serviceAddress ?? '127.0.0.1'}:${config.adminPort}`;
  const registration = config.registerService
    ? new ConsulServiceRegistration({
        consul,
        serviceId: `${config.serviceName}-${config.instanceName}`,
        serviceName: config.serviceName,
        address: config.serviceAddress,
        port: config.challengePort,
        checkHttpUrl: `${adminBase}${ADMIN_HEALTH_PATHS.ready}`,
        // Routable at once; an instance killed without deregistering leaves the catalog.
        initialCheckStatus: 'passing',
        deregisterCriticalAfter: ROUTE_DEREGISTER_CRITICAL_AFTER,
        logger,
      })
    : undefined;
  const healthRegistration = config.registerService
    ? new ConsulServiceRegistration({
        consul,
        serviceId: `${certificateHealthServiceName(config.serviceName)}-${config.instanceName}`,
        serviceName: certificateHealthServiceName(config.serviceName),
        address: config.serviceAddress,
        port: config.adminPort,
        checkHttpUrl: `${adminBase}${ADMIN_HEALTH_PATHS.certificates}`,
        checkName: 'certificates',
        // No deregisterCriticalAfter: a critical certificate check is the alert, it must stay.
        logger,
      })
    : undefined;
  return createService({
    config,
    logger,
    discovery: new ConsulDiscovery({
      consul,
      waitSeconds: config.watchWaitSeconds,
      stale: config.consulStale,
      requestsPerSecond: DISCOVERY_REQUESTS_PER_SECOND,
      logger,
    }),
    certificateStore,
    challengeStore,
    stateStore: new ConsulCertificateStateStore({ consul, prefix: consulKvFolder(config.kvPrefix, 'state') }),
    issuer,
    locker: new ConsulLocker({
      consul,
      prefix: consulKvFolder(config.kvPrefix, 'locks'),
      sessionName: `consul-acme ${config.instanceName}`,
      sessionTtlSeconds: config.sessionTtlSeconds,
      lockDelaySeconds: config.lockDelaySeconds,
      logger,
    }),
    registration,
    healthRegistration,
    metrics,
    policySource: new ConsulPolicySource({
      consul,
      prefix: config.kvPrefix,
      waitSeconds: config.watchWaitSeconds,
      requestsPerSecond: DISCOVERY_REQUESTS_PER_SECOND,
      logger,
    }),
    // Budgets and CA pauses are per ACME directory: staging orders never spend production's.
    budgetLedger: new ConsulBudgetLedger({
      consul,
      prefix: `${consulKvFolder(config.kvPrefix, 'budgets')}${accountId(config.directoryUrl)}/`,
      logger,
    }),
    preflight: config.preflight
      ? new HttpPreflight({
          challengeStore,
          dnsServers: [...config.preflightDnsServers],
          httpPort: config.preflightHttpPort,
          timeoutMs: config.preflightTimeoutMs,
          logger,
        })
      : undefined,
    onStopped: async () => {
      await challengeStore.close();
      issuer.close();
    },
  });
}
