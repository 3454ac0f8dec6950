/**
 * Builds the sinks the configuration asks for, and reads the store snapshot a re-sync needs.
 */
import { join } from 'node:path';
import { SETTINGS, type Config, type SettingSpec } from '../config/schema.js';
import type { Logger } from '../logging.js';
import type { CertificateSink, SinkSnapshot } from '../ports/certificate-sink.js';
import type { CertificateStore } from '../ports/certificate-store.js';
import { HaproxyRuntime } from './haproxy-runtime.js';
import { HaproxySink } from './haproxy-sink.js';
import { HookSink, type HookResult } from './hook-sink.js';
import { SinkRunner, type SinkOutcome } from './sink-runner.js';
import { TraefikSink } from './traefik-sink.js';

/** Store reads in flight at once while a snapshot is taken. */
export const SNAPSHOT_READ_CONCURRENCY = 4;

/** The environment variables of secret settings: never passed on to a hook. */
export const WITHHELD_FROM_HOOK: readonly string[] = (Object.values(SETTINGS) as SettingSpec<unknown>[])
  .filter((s) => s.secret)
  .map((s) => s.env);

export interface CreateSinksOptions {
  /** Counts hook runs (metrics). */
  onHookRun?: (result: HookResult) => void;
}

/** The configured sinks, in the order they are applied: HAProxy, Traefik, then the hook. */
export function createSinks(config: Config, logger: Logger, options: CreateSinksOptions = {}): CertificateSink[] {
  const sinks: CertificateSink[] = [];
  if (config.haproxyDir !== undefined) {
    sinks.push(
      new HaproxySink({
        directory: config.haproxyDir,
        crtListPath: config.haproxyCrtList ?? join(config.haproxyDir, 'crt-list'),
        runtime:
          config.haproxySocket === undefined ? undefined : new HaproxyRuntime({ socketPath: config.haproxySocket }),
        logger,
      }),
    );
  }
  if (config.traefikDir !== undefined) sinks.push(new TraefikSink({ directory: config.traefikDir, logger }));
  if (config.hookCommand !== undefined) {
    sinks.push(
      new HookSink({
        command: config.hookCommand,
        timeoutMs: config.hookTimeoutMs,
        withheld: WITHHELD_FROM_HOOK,
        logger,
        onRun: options.onHookRun,
      }),
    );
  }
  return sinks;
}

export interface CreateSinkRunnerOptions extends CreateSinksOptions {
  store: CertificateStore;
  onApplied?: (sink: string, outcome: SinkOutcome) => void;
}

/** A runner for the configured sinks, re-syncing from `store`; undefined when no sink is configured. */
export function createSinkRunner(
  config: Config,
  logger: Logger,
  options: CreateSinkRunnerOptions,
): SinkRunner | undefined {
  const sinks = createSinks(config, logger, options);
  if (sinks.length === 0) return undefined;
  return new SinkRunner({
    sinks,
    snapshot: () => storeSnapshot(options.store),
    logger,
    resyncIntervalMs: config.sinkResyncIntervalMs,
    onApplied: options.onApplied,
  });
}

/**
 * Every certificate consul-acme wrote to `store`, read with at most `concurrency` reads at once.
 * Records that are ours but unreadable are listed as such (a sink keeps what it has for them);
 * records consul-acme did not write are left out. Any read error fails the whole snapshot, so a
 * sink is never re-synced from a partial view.
 */
export async function storeSnapshot(
  store: CertificateStore,
  concurrency = SNAPSHOT_READ_CONCURRENCY,
): Promise<SinkSnapshot> {
  const hostnames = await store.list();
  const records = new Array<Awaited<ReturnType<CertificateStore['get']>>>(hostnames.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    for (let i = next++; i < hostnames.length; i = next++) records[i] = await store.get(hostnames[i]!);
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, hostnames.length) }, worker));
  const snapshot: { certificates: SinkSnapshot['certificates'][number][]; unreadable: string[] } = {
    certificates: [],
    unreadable: [],
  };
  for (const record of records) {
    if (!record?.managed) continue;
    if (record.certificate) snapshot.certificates.push(record.certificate);
    else snapshot.unreadable.push(record.hostname);
  }
  return snapshot;
}

export { SinkRunner, type SinkOutcome, type SinkStatus } from './sink-runner.js';
