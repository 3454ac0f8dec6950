/**
 * Prometheus metrics, served at GET /metrics on the admin listener. Counters are incremented by the
 * engine's events (issuance outcomes) and by hooks (ACME requests, watch errors, renewal ticks);
 * gauges are computed from the service's state at scrape time, so they can never drift from what
 * /status shows.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { EngineEvent } from './engine/events.js';
import type { CertificateStatus } from './engine/status.js';
import type { HookResult } from './sinks/hook-sink.js';
import type { SinkOutcome, SinkStatus } from './sinks/sink-runner.js';

export interface MetricsSources {
  certificates: () => CertificateStatus[];
  queueDepth: () => number;
  inFlight: () => number;
  lastSyncAt: () => Date | undefined;
  /** The configured sinks (HAProxy, Traefik, hook); none when absent. */
  sinks?: () => SinkStatus[];
}

export const METRIC_PREFIX = 'consul_acme_';

export class ServiceMetrics {
  readonly registry = new Registry();
  private sources: MetricsSources | undefined;
  private readonly outcomes: Counter<'reason' | 'outcome' | 'code'>;
  private readonly acmeRequests: Counter<'endpoint' | 'status'>;
  private readonly acmeDuration: Histogram<'endpoint'>;
  private readonly watchErrors: Counter;
  private readonly scans: Counter<'outcome'>;
  private readonly sinkChanges: Counter<'sink' | 'outcome'>;
  private readonly hookRuns: Counter<'result'>;

  constructor() {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: METRIC_PREFIX });
    const current = (): MetricsSources | undefined => this.sources;
    new Gauge({
      name: `${METRIC_PREFIX}certificate_expiry_timestamp_seconds`,
      help: 'When the stored certificate for a hostname expires (Unix seconds).',
      labelNames: ['hostname'],
      registers,
      collect() {
        this.reset();
        for (const c of current()?.certificates() ?? []) {
          if (c.expiresAt) this.set({ hostname: c.hostname }, Math.floor(Date.parse(c.expiresAt) / 1000));
        }
      },
    });
    new Gauge({
      name: `${METRIC_PREFIX}certificate_ready`,
      help: '1 when a hostname has a valid certificate that is not due for work, else 0.',
      labelNames: ['hostname', 'state'],
      registers,
      collect() {
        this.reset();
        for (const c of current()?.certificates() ?? [])
          this.set({ hostname: c.hostname, state: c.state }, c.state === 'valid' ? 1 : 0);
      },
    });
    new Gauge({
      name: `${METRIC_PREFIX}queue_depth`,
      help: "Certificate jobs waiting in this instance's queue (not running).",
      registers,
      collect() {
        this.set(current()?.queueDepth() ?? 0);
      },
    });
    new Gauge({
      name: `${METRIC_PREFIX}queue_in_flight`,
      help: 'Certificate jobs running in this instance.',
      registers,
      collect() {
        this.set(current()?.inFlight() ?? 0);
      },
    });
    new Gauge({
      name: `${METRIC_PREFIX}consul_last_sync_timestamp_seconds`,
      help: 'When the last Consul catalog snapshot was applied (Unix seconds); 0 before the first.',
      registers,
      collect() {
        const at = current()?.lastSyncAt();
        this.set(at ? Math.floor(at.getTime() / 1000) : 0);
      },
    });
    new Gauge({
      name: `${METRIC_PREFIX}sink_pending`,
      help: 'Changes a sink has not applied yet (queued or being retried), by sink.',
      labelNames: ['sink'],
      registers,
      collect() {
        this.reset();
        for (const s of current()?.sinks?.() ?? []) this.set({ sink: s.name }, s.pending + (s.resyncPending ? 1 : 0));
      },
    });
    new Gauge({
      name: `${METRIC_PREFIX}sink_failing`,
      help: '1 while a sink is failing (its changes are being retried), else 0.',
      labelNames: ['sink'],
      registers,
      collect() {
        this.reset();
        for (const s of current()?.sinks?.() ?? []) this.set({ sink: s.name }, s.failingSince === undefined ? 0 : 1);
      },
    });
    this.sinkChanges = new Counter({
      name: `${METRIC_PREFIX}sink_changes_total`,
      help: 'Sink operations by sink and outcome (applied, failed, resynced, resync_failed).',
      labelNames: ['sink', 'outcome'],
      registers,
    });
    this.hookRuns = new Counter({
      name: `${METRIC_PREFIX}hook_runs_total`,
      help: 'Runs of the hook command by result (succeeded, failed, timed_out).',
      labelNames: ['result'],
      registers,
    });
    this.outcomes = new Counter({
      name: `${METRIC_PREFIX}issuance_outcomes_total`,
      help: "Issuance attempts by the planner's reason and their outcome (obtained, renewed, adopted, failed, retired); code is the error code of a failure.",
      labelNames: ['reason', 'outcome', 'code'],
      registers,
    });
    this.acmeRequests = new Counter({
      name: `${METRIC_PREFIX}acme_requests_total`,
      help: 'Requests to the ACME server by endpoint and HTTP status (or "error" when none came back).',
      labelNames: ['endpoint', 'status'],
      registers,
    });
    this.acmeDuration = new Histogram({
      name: `${METRIC_PREFIX}acme_request_duration_seconds`,
      help: 'Duration of requests to the ACME server by endpoint.',
      labelNames: ['endpoint'],
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    });
    this.watchErrors = new Counter({
      name: `${METRIC_PREFIX}consul_watch_errors_total`,
      help: 'Failed Consul catalog watch requests.',
      registers,
    });
    this.scans = new Counter({
      name: `${METRIC_PREFIX}renewal_ticks_total`,
      help: 'Renewal scheduler ticks by outcome (scanned, not-leader, failed, busy).',
      labelNames: ['outcome'],
      registers,
    });
  }

  /** Connects the gauges to the running service. */
  bind(sources: MetricsSources): void {
    this.sources = sources;
  }

  /** Counts issuance outcomes from the engine's events. */
  onEngineEvent(event: EngineEvent): void {
    if (event.type === 'stored') this.outcomes.inc({ reason: event.reason, outcome: event.outcome, code: '' });
    else if (event.type === 'retired') this.outcomes.inc({ reason: event.reason, outcome: 'retired', code: '' });
    else if (event.type === 'failed') this.outcomes.inc({ reason: event.reason, outcome: 'failed', code: event.code });
  }

  onAcmeRequest(endpoint: string, status: number | 'error', durationMs: number): void {
    this.acmeRequests.inc({ endpoint, status: String(status) });
    this.acmeDuration.observe({ endpoint }, durationMs / 1000);
  }

  onWatchError(): void {
    this.watchErrors.inc();
  }

  onSinkChange(sink: string, outcome: SinkOutcome): void {
    this.sinkChanges.inc({ sink, outcome });
  }

  onHookRun(result: HookResult): void {
    this.hookRuns.inc({ result });
  }

  onRenewalTick(outcome: string): void {
    this.scans.inc({ outcome });
  }

  async render(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}
