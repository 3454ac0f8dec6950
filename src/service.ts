/**
 * Wires the pieces together. `createService(deps)` takes every port as a dependency, so tests
 * run the real engine with any mix of real and in-memory adapters; `buildService(config)` makes
 * the real adapters from the configuration, for `consul-acme run`.
 */
import { readFileSync } from 'node:fs';
import { addressOf } from './http/server-address.js';
import { accountId } from './adapters/account-record.js';
import { AcmeIssuer } from './adapters/acme/acme-issuer.js';
import { ConsulBudgetLedger } from './adapters/consul/consul-budget-ledger.js';
import { ConsulCertificateStateStore } from './adapters/consul/consul-certificate-state-store.js';
import { ConsulChallengeStore } from './adapters/consul/consul-challenge-store.js';
import { openConnections } from './adapters/connections.js';
import { ConsulDiscovery } from './adapters/consul/consul-discovery.js';
import { ConsulLocker } from './adapters/consul/consul-locker.js';
import { ConsulPermissionCheck } from './adapters/consul/consul-permission-check.js';
import { ConsulPolicySource } from './adapters/consul/consul-policy-source.js';
import { ConsulRequestStore } from './adapters/consul/consul-request-store.js';
import {
  ConsulServiceRegistration,
  ROUTE_DEREGISTER_CRITICAL_AFTER,
} from './adapters/consul/consul-service-registration.js';
import { FileAccountStore } from './adapters/file/file-account-store.js';
import { FileCertificateStore } from './adapters/file/file-certificate-store.js';
import { HttpPreflight } from './adapters/net/http-preflight.js';
import { VaultAccountStore } from './adapters/vault/vault-account-store.js';
import { VaultCertificateStore } from './adapters/vault/vault-certificate-store.js';
import { VaultPermissionCheck } from './adapters/vault/vault-permission-check.js';
import type { Config } from './config/schema.js';
import type { Budget, BudgetScope } from './domain/budget.js';
import { defaultCaaIdentities } from './domain/caa.js';
import { withFailingSinks } from './domain/certificate-health.js';
import { DEFAULT_EMERGENCY_FRACTION, type PlanOptions } from './domain/plan.js';
import type { Policy } from './domain/policy.js';
import { AntiEntropy } from './engine/anti-entropy.js';
import { DesiredSet, type DesiredChange } from './engine/desired-set.js';
import { EngineEvents } from './engine/events.js';
import { Janitor } from './engine/janitor.js';
import { Limiter } from './engine/limiter.js';
import { OrderGate } from './engine/order-gate.js';
import { Planner } from './engine/planner.js';
import { IssuanceQueue } from './engine/queue.js';
import { OperatorCommands, OperatorRequests } from './engine/requests.js';
import { RenewalScheduler } from './engine/renewal-scheduler.js';
import { RouteRegistration } from './engine/route-registration.js';
import type { StatusReport } from './engine/status.js';
import { StatusView } from './engine/status-view.js';
import { StoreHealth } from './engine/store-health.js';
import { StoreIndex } from './engine/store-index.js';
import { SelfCheck } from './engine/self-check.js';
import { CertificateWorker } from './engine/worker.js';
import { describeError } from './errors.js';
import { buildAdminServer } from './http/admin-server.js';
import { buildChallengeServer } from './http/challenge-server.js';
import { EVENTS, F, type Logger } from './logging.js';
import { ServiceMetrics } from './metrics.js';
import { ADMIN_HEALTH_PATHS, certificateHealthServiceName, consulKvFolder } from './naming.js';
import type { AccountStore } from './ports/account-store.js';
import type { BudgetLedger } from './ports/budget-ledger.js';
import type { CertificateStateStore } from './ports/certificate-state-store.js';
import type { CertificateStore } from './ports/certificate-store.js';
import type { ChallengeStore } from './ports/challenge-store.js';
import { systemClock, type Clock } from './ports/clock.js';
import type { CatalogSnapshot, Discovery } from './ports/discovery.js';
import type { Issuer } from './ports/issuer.js';
import type { Locker } from './ports/locker.js';
import type { PolicySource } from './ports/policy-source.js';
import type { PermissionCheck } from './ports/permission-check.js';
import type { Preflight } from './ports/preflight.js';
import type { RequestStore } from './ports/request-store.js';
import type { ServiceRegistration } from './ports/service-registration.js';
import { createSinkRunner, type SinkRunner } from './sinks/index.js';

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
  /** Copies certificates to HAProxy, Traefik or a hook after every store change; none when no sink is configured. */
  sinks?: SinkRunner;
  /** Where operator requests (adopt, reissue, revoke) wait until carried out; none: the commands are refused. */
  requestStore?: RequestStore;
  /** The start-up self-check: ready only once none finds a missing permission; none skips it. */
  permissionChecks?: PermissionCheck[];
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
  /** The renewal scan's scheduler (tests look at who leads). */
  readonly renewal: RenewalScheduler;
}

/**
 * The composition root. It builds the pieces in the order data flows through them (desired set,
 * planning, queue, worker, store), each from pieces built before it; the worker's outcomes come back
 * as engine events, to which the store index, the status view, the metrics and the registrations
 * listen. Nothing here refers to something built after it.
 */
export function createService(deps: ServiceDeps): Service {
  const { config, logger } = deps;
  const clock = deps.clock ?? systemClock;
  const log = logger.child({ [F.component]: 'service' });
  const planOptions: PlanOptions = {
    renewWhenRemainingFraction: config.renewRemainingFraction,
    emergencyRemainingFraction: DEFAULT_EMERGENCY_FRACTION,
    retireGraceMs: config.retireGraceMs,
    adopt: config.adopt,
  };
  const metrics = deps.metrics ?? new ServiceMetrics();
  const events = new EngineEvents(logger);
  const limiter = new Limiter(config.ioConcurrency);
  const storeHealth = new StoreHealth({ store: deps.certificateStore, clock, logger });
  const index = new StoreIndex();
  const desired = new DesiredSet({
    tags: {
      tagPrefix: config.tagPrefix,
      fabioTagPrefix: config.fabioTagPrefix,
      requireEnableTag: config.requireEnableTag,
    },
    ownServiceNames: [config.serviceName, certificateHealthServiceName(config.serviceName)],
    extraHostnames: config.extraHostnames,
    directoryUrl: deps.issuer.directoryUrl,
    keyType: config.keyType,
    hasCertificate: (hostname) => index.has(hostname),
  });
  const routes = new RouteRegistration({
    routes: deps.registration,
    health: deps.healthRegistration,
    fabioTagPrefix: config.fabioTagPrefix,
    clock,
    logger,
  });
  const gate = new OrderGate({
    ledger: deps.budgetLedger,
    preflight: deps.preflight,
    budgets: budgetsFrom(config),
    clock,
    logger,
    routeAgeMs: (hostname) => routes.routeAgeMs(hostname),
    routeSettleMs: config.routeSettleMs,
  });
  // Operator requests: the worker reads and settles them; the commands (built after the queue) record them.
  const requests = deps.requestStore
    ? new OperatorRequests({
        requestStore: deps.requestStore,
        certificateStore: deps.certificateStore,
        storeHealth,
        logger,
      })
    : undefined;
  const worker = new CertificateWorker({
    store: deps.certificateStore,
    issuer: deps.issuer,
    locker: deps.locker,
    clock,
    logger,
    planOptions,
    desired,
    index,
    events,
    storeHealth,
    gate,
    requests,
  });
  const queue = new IssuanceQueue((run) => worker.process(run), {
    concurrency: config.queueConcurrency,
    retryScheduleMs: config.retryScheduleMs,
    busyRecheckMs: config.lockedRecheckMs,
    clock,
    logger,
    state: deps.stateStore,
  });
  const planner = new Planner({
    store: deps.certificateStore,
    index,
    desired,
    queue,
    events,
    limiter,
    storeHealth,
    clock,
    logger,
    planOptions,
    renewSpreadMs: config.renewSpreadMs,
    requests,
  });
  const commands =
    requests && deps.requestStore
      ? new OperatorCommands({
          requests,
          requestStore: deps.requestStore,
          limiter,
          desired,
          index,
          queue,
          clock,
          logger,
          instanceName: config.instanceName,
        })
      : undefined;
  const view = new StatusView({ desired, index, queue, storeHealth, requests });
  events.on((event) => index.onEvent(event));
  events.on((event) => view.onEvent(event));
  events.on((event) => metrics.onEngineEvent(event));
  events.on((event) => {
    if (event.type === 'retired') desired.forget(event.hostname);
  });
  // The sinks follow the store: every certificate written, every one retired.
  const sinks = deps.sinks;
  events.on((event) => {
    // An adopted certificate is new to the sinks (they hold only consul-acme's records).
    if (event.type === 'stored')
      sinks?.notify({
        kind: 'stored',
        certificate: event.certificate,
        reason: event.outcome === 'adopted' ? 'obtained' : event.outcome,
      });
    else if (event.type === 'retired') sinks?.notify({ kind: 'removed', hostname: event.hostname });
  });
  const janitor = new Janitor({
    challengeStore: deps.challengeStore,
    ledger: deps.budgetLedger,
    stateStore: deps.stateStore,
    isKnown: (hostname) => desired.isManaged(hostname) || index.has(hostname),
    clock,
    logger,
  });
  const antiEntropy = new AntiEntropy({
    steps: [
      { name: 'registrations', run: () => routes.reassert() },
      { name: 'challenge tokens', run: () => deps.challengeStore.reassert() },
    ],
    clock,
    logger,
  });
  const renewal = new RenewalScheduler({
    locker: deps.locker,
    clock,
    scan: async () => {
      await planner.scan({ submit: true });
      await janitor.maybeRun();
    },
    refresh: async () => {
      await planner.scan({ submit: false });
    },
    schedule: config.renewSchedule,
    logger,
    onTick: (outcome) => metrics.onRenewalTick(outcome),
  });

  const selfCheck = new SelfCheck({
    checks: deps.permissionChecks ?? [],
    clock,
    logger,
    retryMs: config.retryScheduleMs[0] ?? 60_000,
  });

  let lastSync: { at: Date; index: number } | undefined;
  let lastDiscoveryError: string | undefined;
  let stopping = false;
  const isReady = (): boolean => !stopping && lastSync !== undefined && selfCheck.passed();
  const status = (): StatusReport => ({
    instance: config.instanceName,
    mode: 'issuer',
    ready: isReady(),
    store: deps.certificateStore.description,
    storeHealth: storeHealth.state(),
    directoryUrl: deps.issuer.directoryUrl,
    discovery: {
      lastSyncAt: lastSync?.at.toISOString(),
      lastError: lastDiscoveryError,
      services: desired.servicesSeen(),
    },
    certificates: view.certificateStatuses(),
    rejected: desired.rejected(),
    policy: view.policyStatus(),
    sinks: sinks?.status() ?? [],
    permissions: selfCheck.status(),
  });
  metrics.bind({
    certificates: () => view.certificateStatuses(),
    queueDepth: () => queue.depth(),
    inFlight: () => queue.inFlight(),
    lastSyncAt: () => lastSync?.at,
    sinks: () => sinks?.status() ?? [],
  });
  const challengeServer = buildChallengeServer({
    challengeStore: deps.challengeStore,
    logger: logger.child({ [F.component]: 'challenge-http' }),
  });
  const adminServer = buildAdminServer({
    logger: logger.child({ [F.component]: 'admin-http' }),
    isLive: () => true,
    isReady,
    status,
    certificateHealth: () =>
      withFailingSinks(
        view.health(clock.now(), {
          warnBeforeMs: config.expiryWarningMs,
          criticalAfterFailures: config.retryScheduleMs.length,
        }),
        sinks?.failingLongerThan(config.sinkFailingWarningMs) ?? [],
      ),
    metrics: () => metrics.render(),
    adminToken: config.adminToken,
    operations:
      commands && requests
        ? {
            adopt: (selection) => commands.requestAdopt(selection),
            reissue: (selection, revokeReason) => commands.requestReissue(selection, revokeReason),
            certificate: async (hostname) => ({
              hostname,
              status:
                desired.isManaged(hostname) || index.has(hostname) || desired.refusal(hostname)
                  ? view.statusOf(hostname)
                  : undefined,
              ...(await requests.current(hostname)),
            }),
            requests: () => requests.list(),
          }
        : undefined,
  });

  /** Logs what a desired-set change refused, registers the routes, then plans the names it touched. */
  const applyChange = async (change: DesiredChange, cause: string): Promise<void> => {
    for (const r of change.newlyRejected) {
      log.warn(
        {
          [F.event]: EVENTS.hostnameRejected,
          [F.hostname]: r.value,
          [F.reason]: r.reason,
          [F.service]: r.service,
          tag: r.tag,
        },
        'hostname refused',
      );
    }
    for (const r of change.newlyRefused) {
      log.warn(
        { [F.event]: EVENTS.hostnameDenied, [F.hostname]: r.hostname, [F.reason]: r.message },
        'hostname refused by policy',
      );
    }
    if (change.added.length === 0 && change.removed.length === 0) return;
    log.info(
      {
        [F.event]: EVENTS.discoverySnapshot,
        cause,
        managed: desired.managedSet().size,
        added: change.added.length,
        removed: change.removed.length,
      },
      'managed hostnames updated',
    );
    // Work for names that left stops at once; the routes of new names reach Consul before their
    // pre-flight check runs.
    planner.cancelRemoved(change);
    await routes.sync(desired.managedSet());
    await planner.applyChange(change);
  };
  // Catalog and policy changes are applied one at a time, in arrival order.
  let applying: Promise<unknown> = Promise.resolve();
  const inOrder = (step: () => Promise<void>): Promise<void> => {
    const run = applying.then(step);
    applying = run.catch(() => undefined);
    return run;
  };

  const watchAbort = new AbortController();
  let watching: Promise<void> | undefined;
  let policyWatching: Promise<void> | undefined;
  let stopped: Promise<void> | undefined;

  const onPolicy = (policy: Policy): Promise<void> =>
    inOrder(async () => {
      for (const problem of policy.invalid) {
        log.warn(
          {
            [F.event]: EVENTS.policyLineInvalid,
            list: problem.list,
            line: problem.line,
            text: problem.text,
            [F.reason]: problem.reason,
          },
          'policy line ignored',
        );
      }
      for (const unreadable of policy.unreadable) {
        log.error(
          { [F.event]: EVENTS.policyUnreadable, list: unreadable.list, [F.reason]: unreadable.reason },
          'policy list cannot be read; no new names are issued',
        );
      }
      log.info(
        {
          [F.event]: EVENTS.policyChanged,
          deny: policy.deny.length,
          allow: policy.allow.length,
          always: policy.always.length,
          invalid: policy.invalid.length,
          unreadable: policy.unreadable.length,
        },
        'policy lists applied',
      );
      await applyChange(desired.applyPolicy(policy, clock.now()), 'policy change');
    });

  const onSnapshot = (snapshot: CatalogSnapshot): Promise<void> =>
    inOrder(async () => {
      lastDiscoveryError = undefined;
      const first = !desired.hasSnapshot();
      const change = desired.applySnapshot(snapshot.services, clock.now());
      if (first) {
        // Ready only now, and registered only now: Fabio routes to an instance whose check passes.
        await routes.sync(desired.managedSet());
        lastSync = { at: clock.now(), index: snapshot.index };
        await routes.start();
        antiEntropy.start();
        await applyChange(change, `catalog index ${snapshot.index}`);
        if (!stopping) renewal.start();
        return;
      }
      lastSync = { at: clock.now(), index: snapshot.index };
      await applyChange(change, `catalog index ${snapshot.index}`);
    });

  const shutdown = async (): Promise<void> => {
    stopping = true;
    selfCheck.stop();
    watchAbort.abort();
    await watching?.catch(() => undefined);
    await policyWatching?.catch(() => undefined);
    await applying;
    await renewal.stop();
    antiEntropy.stop();
    storeHealth.stop();
    await queue.stop(config.shutdownTimeoutMs);
    // After the queue, so the changes of the orders that finished are still copied.
    await sinks?.stop();
    await deps.locker.close();
    await routes.stop();
    await Promise.allSettled([challengeServer.close(), adminServer.close()]);
    await deps.onStopped?.();
    log.info('stopped');
  };

  return {
    renewal,
    status,
    async start() {
      await challengeServer.listen({ host: config.challengeHost, port: config.challengePort });
      await adminServer.listen({ host: config.adminHost, port: config.adminPort });
      const listening = { challengeUrl: addressOf(challengeServer), adminUrl: addressOf(adminServer) };
      log.info(listening, 'listening');
      storeHealth.start();
      // The store is the source of truth: every sink starts from a full re-sync.
      sinks?.start();
      // Which names already have a certificate, so a policy that fails closed keeps renewing them.
      const listingStartedAtMs = clock.nowMs();
      await limiter
        .run(() => storeHealth.observe(() => deps.certificateStore.list()))
        .then((names) => index.applyListing(names, listingStartedAtMs))
        .catch((err: unknown) =>
          log.warn({ [F.err]: describeError(err) }, 'could not list the store; the renewal scan retries'),
        );
      // Nothing is watched, registered or ordered before the tokens are known to have every
      // permission; deny wins over everything, so no catalog name is planned before the policy is known.
      const permitted = selfCheck.start();
      const firstPolicy = permitted.then(
        (passed) =>
          new Promise<void>((resolve) => {
            if (!passed || stopping || !deps.policySource) {
              resolve();
              return;
            }
            policyWatching = deps.policySource.watch(
              watchAbort.signal,
              async (policy) => {
                await onPolicy(policy);
                resolve();
              },
              (err) => log.warn({ [F.err]: describeError(err) }, 'policy watch failed; retrying'),
            );
          }),
      );
      watching = firstPolicy.then(() =>
        stopping
          ? undefined
          : deps.discovery.watch(watchAbort.signal, onSnapshot, (err) => {
              metrics.onWatchError();
              lastDiscoveryError = describeError(err);
              log.warn({ [F.err]: lastDiscoveryError }, 'catalog watch failed; retrying');
            }),
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
    ['exact-set', config.budgetExactSet],
  ];
  return settings.flatMap(([scope, value]) =>
    value === 'off' ? [] : [{ scope, limit: value.limit, windowMs: value.windowMs }],
  );
}

/** The CA identities the pre-flight's CAA check looks for: the setting, else the directory's default. */
function caaIdentitiesFrom(config: Config): string[] {
  if (config.caaIdentities === 'off') return [];
  return config.caaIdentities ? [...config.caaIdentities] : defaultCaaIdentities(config.directoryUrl);
}

/**
 * The catalog and policy watches: a quiet watch answers a change at once (a burst of 5 requests
 * back to back), and only a catalog that keeps changing is held to 2 requests a second. Our own
 * route registration changes the catalog's index too, so a tag change costs one extra, cheap round
 * trip whose content (our own services left out) is no change.
 */
const WATCH_REQUESTS_PER_SECOND = 2;
const WATCH_BURST = 5;

/** Builds the real adapters from the configuration. */
export function buildService(config: Config, logger: Logger): Service {
  const connections = openConnections(config, logger);
  // `consul` is the local agent (catalog, registrations); `coordination` the home datacenter.
  const { consul, coordination, vault } = connections;
  let certificateStore: CertificateStore;
  let accountStore: AccountStore;
  if (vault !== undefined) {
    certificateStore = new VaultCertificateStore({
      client: vault,
      mount: config.vaultMount,
      prefix: config.vaultPrefix,
      pendingPath: config.vaultPendingPath,
      logger,
    });
    accountStore = new VaultAccountStore({
      client: vault,
      mount: config.vaultMount,
      path: config.vaultAccountPath,
      certificatePrefix: config.vaultPrefix,
    });
  } else {
    certificateStore = new FileCertificateStore({ directory: config.fileStoreDir, logger });
    accountStore = new FileAccountStore({ directory: config.fileStoreDir });
  }
  const challengeStore = new ConsulChallengeStore({
    consul: coordination,
    prefix: consulKvFolder(config.kvPrefix, 'challenges'),
    logger,
  });
  // Keeps the store's local mirror current, so tokens other instances put are answered at once.
  challengeStore.start();
  const metrics = new ServiceMetrics();
  const sinks = createSinkRunner(config, logger, {
    store: certificateStore,
    onApplied: (sink, outcome) => metrics.onSinkChange(sink, outcome),
    onHookRun: (result) => metrics.onHookRun(result),
  });
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
        // A live instance's critical check is the alert: if Consul removes it after this long, the
        // next anti-entropy round registers it again. A dead instance's goes, and stays gone.
        deregisterCriticalAfter: `${Math.round(config.healthDeregisterAfterMs / 1000)}s`,
        logger,
      })
    : undefined;
  const service = createService({
    config,
    logger,
    discovery: new ConsulDiscovery({
      consul,
      waitSeconds: config.watchWaitSeconds,
      stale: config.consulStale,
      requestsPerSecond: WATCH_REQUESTS_PER_SECOND,
      burst: WATCH_BURST,
      ignoreServices: [config.serviceName, certificateHealthServiceName(config.serviceName)],
      logger,
    }),
    certificateStore,
    challengeStore,
    stateStore: new ConsulCertificateStateStore({
      consul: coordination,
      prefix: consulKvFolder(config.kvPrefix, 'state'),
    }),
    requestStore: new ConsulRequestStore({
      consul: coordination,
      prefix: consulKvFolder(config.kvPrefix, 'requests'),
      logger,
    }),
    issuer,
    locker: new ConsulLocker({
      consul: coordination,
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
      consul: coordination,
      prefix: config.kvPrefix,
      waitSeconds: config.watchWaitSeconds,
      requestsPerSecond: WATCH_REQUESTS_PER_SECOND,
      logger,
    }),
    // Budgets and CA pauses are per ACME directory: staging orders never spend production's.
    budgetLedger: new ConsulBudgetLedger({
      consul: coordination,
      prefix: `${consulKvFolder(config.kvPrefix, 'budgets')}${accountId(config.directoryUrl)}/`,
      logger,
    }),
    preflight: config.preflight
      ? new HttpPreflight({
          challengeStore,
          dnsServers: [...config.preflightDnsServers],
          httpPort: config.preflightHttpPort,
          timeoutMs: config.preflightTimeoutMs,
          caaIdentities: caaIdentitiesFrom(config),
          logger,
        })
      : undefined,
    sinks,
    permissionChecks: [
      ...(vault === undefined
        ? []
        : [
            new VaultPermissionCheck({
              client: vault,
              layout: {
                mount: config.vaultMount,
                prefix: config.vaultPrefix,
                accountPath: config.vaultAccountPath,
                pendingPath: config.vaultPendingPath,
              },
            }),
          ]),
      new ConsulPermissionCheck({
        consul,
        coordination,
        needs: { kvPrefix: config.kvPrefix, serviceName: config.serviceName, registerService: config.registerService },
        instanceName: config.instanceName,
      }),
    ],
    onStopped: async () => {
      connections.close();
      await challengeStore.close();
      issuer.close();
    },
  });
  // The agent syncs each registration with the token that made it: a new Consul token registers
  // them again, so the old one can be deleted (docs/protocols.md §1.10).
  connections.consulTokens.onChange(() => {
    for (const [what, target] of [
      ['challenge routes', registration],
      ['certificate health check', healthRegistration],
    ] as const) {
      target
        ?.registerAgain()
        .then((count) =>
          logger.info(
            { [F.component]: 'service', [F.event]: EVENTS.tokenChanged, registration: what, registrations: count },
            'registered again with the new Consul token',
          ),
        )
        .catch((err: unknown) =>
          logger.warn(
            { [F.component]: 'service', registration: what, [F.err]: describeError(err) },
            'could not register again with the new Consul token; anti-entropy retries',
          ),
        );
    }
  });
  connections.start();
  return service;
}
