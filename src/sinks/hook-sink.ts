/**
 * The command hook: an operator-given command (`CONSUL_ACME_HOOK_COMMAND`) runs after a
 * certificate changes, e.g. to copy it where nginx reads it and reload nginx.
 *
 * - It runs as `/bin/sh -c <command>` (the operator wrote a shell command), in its own process
 *   group, with the facts in its environment only: nothing from a certificate or a hostname is
 *   ever put into the command line.
 * - For a stored certificate it gets a private temporary copy (a 0700 folder holding `cert.pem`,
 *   leaf and chain, and `key.pem`, 0600), removed when the command ends: the hook copies what it
 *   needs, so it works whichever other sinks are configured.
 * - It is killed (SIGTERM to its process group, SIGKILL after a grace period) when it outlives
 *   `timeoutMs`. Exit status 0 is success; anything else fails with HOOK_FAILED and is retried.
 * - A re-sync runs it once per certificate whose current version it has not been given in this
 *   process (with reason `resync`), and once per name it was given that the store no longer holds
 *   (reason `retired`). So after a start it runs once for every stored certificate, and later
 *   re-syncs run it only for what it missed.
 */
import { performance } from 'node:perf_hooks';
import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { CertificateData } from '../domain/certificate.js';
import { ConsulAcmeError, describeError, throwIfAborted } from '../errors.js';
import { EVENTS, F, type Logger } from '../logging.js';
import type { CertificateSink, SinkChange, SinkSnapshot } from '../ports/certificate-sink.js';
import { certificateChainPem, leafIdentity, privateKeyPem } from './files.js';

export const DEFAULT_HOOK_KILL_GRACE_MS = 2_000;
const OUTPUT_TAIL_CHARS = 2_000;
const OUTPUT_DRAIN_MS = 200;

/** Why the hook runs: `CONSUL_ACME_REASON`. */
export type HookReason = 'obtained' | 'renewed' | 'retired' | 'resync';

/** The variables the hook gets, documented in the README. */
export const HOOK_ENV = {
  hostname: 'CONSUL_ACME_HOSTNAME',
  hostnames: 'CONSUL_ACME_HOSTNAMES',
  reason: 'CONSUL_ACME_REASON',
  certFile: 'CONSUL_ACME_CERT_FILE',
  keyFile: 'CONSUL_ACME_KEY_FILE',
  serial: 'CONSUL_ACME_SERIAL',
  notAfter: 'CONSUL_ACME_NOT_AFTER',
} as const;

export type HookResult = 'succeeded' | 'failed' | 'timed_out';

export interface HookSinkOptions {
  /** A shell command, run with /bin/sh -c. */
  command: string;
  timeoutMs: number;
  logger: Logger;
  /** The environment the command inherits; default: this process's. */
  environment?: Readonly<Record<string, string | undefined>>;
  /** Variables never passed on (consul-acme's tokens and keys). */
  withheld?: readonly string[];
  killGraceMs?: number;
  /** Where the temporary copies go; default: the system's temporary folder. */
  temporaryDirectory?: string;
  /** Told about every run (metrics). */
  onRun?: (result: HookResult) => void;
}

interface Run {
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  output: string;
  durationMs: number;
}

export class HookSink implements CertificateSink {
  readonly name = 'hook';
  private readonly log: Logger;
  /** hostname → SHA-1 of the certificate the hook was last given successfully. */
  private readonly delivered = new Map<string, string>();

  constructor(private readonly options: HookSinkOptions) {
    this.log = options.logger.child({ [F.component]: 'hook' });
  }

  async apply(change: SinkChange, signal?: AbortSignal): Promise<void> {
    if (change.kind === 'stored') await this.deliver(change.certificate, change.reason, signal);
    else await this.retire(change.hostname, signal);
  }

  async resync(snapshot: SinkSnapshot, signal?: AbortSignal): Promise<void> {
    const errors: unknown[] = [];
    const held = new Set([...snapshot.certificates.map((c) => c.hostname), ...snapshot.unreadable]);
    for (const certificate of snapshot.certificates) {
      if (this.delivered.get(certificate.hostname) === leafIdentity(certificate.certPem).sha1Fingerprint) continue;
      await this.deliver(certificate, 'resync', signal).catch((err: unknown) => errors.push(err));
    }
    for (const hostname of [...this.delivered.keys()]) {
      if (!held.has(hostname)) await this.retire(hostname, signal).catch((err: unknown) => errors.push(err));
    }
    if (errors.length === 1) throw errors[0];
    if (errors.length > 1) {
      throw new ConsulAcmeError(
        'HOOK_FAILED',
        `the hook failed ${errors.length} times; first: ${describeError(errors[0])}`,
        {
          retryable: true,
          cause: errors[0],
        },
      );
    }
  }

  private async deliver(certificate: CertificateData, reason: HookReason, signal?: AbortSignal): Promise<void> {
    throwIfAborted(signal, `hook for ${certificate.hostname}`);
    const { serial, sha1Fingerprint } = leafIdentity(certificate.certPem);
    const folder = await fs.mkdtemp(join(this.options.temporaryDirectory ?? tmpdir(), 'consul-acme-hook-'));
    try {
      const certFile = join(folder, 'cert.pem');
      const keyFile = join(folder, 'key.pem');
      await fs.writeFile(keyFile, privateKeyPem(certificate.keyPem), { mode: 0o600 });
      await fs.writeFile(certFile, certificateChainPem(certificate.certPem), { mode: 0o644 });
      await this.runFor(
        certificate.hostname,
        reason,
        {
          [HOOK_ENV.hostnames]: certificate.hostnames.join(','),
          [HOOK_ENV.certFile]: certFile,
          [HOOK_ENV.keyFile]: keyFile,
          [HOOK_ENV.serial]: serial,
          [HOOK_ENV.notAfter]: certificate.notAfter.toISOString(),
        },
        signal,
      );
      this.delivered.set(certificate.hostname, sha1Fingerprint);
    } finally {
      await fs.rm(folder, { recursive: true, force: true });
    }
  }

  private async retire(hostname: string, signal?: AbortSignal): Promise<void> {
    throwIfAborted(signal, `hook for ${hostname}`);
    await this.runFor(hostname, 'retired', {}, signal);
    this.delivered.delete(hostname);
  }

  private async runFor(
    hostname: string,
    reason: HookReason,
    facts: Record<string, string>,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    const run = await this.run({ ...facts, [HOOK_ENV.hostname]: hostname, [HOOK_ENV.reason]: reason }, signal);
    const result: HookResult = run.timedOut ? 'timed_out' : run.exitCode === 0 ? 'succeeded' : 'failed';
    this.options.onRun?.(result);
    const fields = {
      [F.event]: EVENTS.hookRan,
      [F.hostname]: hostname,
      [F.reason]: reason,
      result,
      exit_code: run.exitCode,
      signal: run.signal,
      duration_ms: run.durationMs,
    };
    if (result === 'succeeded') {
      this.log.info(fields, 'hook ran');
      return;
    }
    this.log.warn({ ...fields, output: run.output }, 'hook failed');
    if (signal?.aborted) throwIfAborted(signal, `hook for ${hostname}`);
    const lastLine = run.output.trim().split('\n').pop()?.trim();
    const what = run.timedOut
      ? `was killed after its timeout of ${this.options.timeoutMs} ms`
      : run.exitCode !== null
        ? `exited with status ${run.exitCode}`
        : `was killed by ${run.signal ?? 'a signal'}`;
    throw new ConsulAcmeError(
      'HOOK_FAILED',
      `the hook for ${hostname} (${reason}) ${what}${lastLine ? `: ${lastLine}` : ''}`,
      { retryable: true },
    );
  }

  private environment(vars: Record<string, string>): Record<string, string> {
    const withheld = new Set(this.options.withheld ?? []);
    const env: Record<string, string> = {};
    for (const [name, value] of Object.entries(this.options.environment ?? process.env)) {
      if (value !== undefined && !withheld.has(name)) env[name] = value;
    }
    return { ...env, ...vars };
  }

  private run(vars: Record<string, string>, signal: AbortSignal | undefined): Promise<Run> {
    const started = performance.now();
    return new Promise<Run>((resolve, reject) => {
      let output = '';
      let timedOut = false;
      const append = (chunk: Buffer): void => {
        output = (output + chunk.toString('utf8')).slice(-OUTPUT_TAIL_CHARS);
      };
      const child = spawn('/bin/sh', ['-c', this.options.command], {
        env: this.environment(vars),
        detached: true,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      const killGroup = (how: NodeJS.Signals): void => {
        try {
          if (child.pid !== undefined) process.kill(-child.pid, how);
        } catch {
          // The group has exited already.
        }
      };
      let killer: NodeJS.Timeout | undefined;
      const stopIt = (): void => {
        killGroup('SIGTERM');
        killer ??= setTimeout(() => killGroup('SIGKILL'), this.options.killGraceMs ?? DEFAULT_HOOK_KILL_GRACE_MS);
      };
      const timer = setTimeout(() => {
        timedOut = true;
        stopIt();
      }, this.options.timeoutMs);
      signal?.addEventListener('abort', stopIt, { once: true });
      child.stdout.on('data', append);
      child.stderr.on('data', append);
      const done = (): void => {
        clearTimeout(timer);
        clearTimeout(killer);
        signal?.removeEventListener('abort', stopIt);
        // A background process the hook started may hold the pipes open: stop reading them.
        child.stdout.destroy();
        child.stderr.destroy();
      };
      child.on('error', (err) => {
        done();
        reject(
          new ConsulAcmeError('HOOK_FAILED', `the hook could not be started: ${err.message}`, {
            retryable: true,
            cause: err,
          }),
        );
      });
      child.on('exit', (exitCode, exitSignal) => {
        // Anything a timed-out hook left running in its group goes with it.
        if (timedOut) killGroup('SIGKILL');
        let finished = false;
        const finish = (): void => {
          if (finished) return;
          finished = true;
          clearTimeout(drained);
          done();
          resolve({
            exitCode,
            signal: exitSignal,
            timedOut,
            output,
            durationMs: Math.round(performance.now() - started),
          });
        };
        // Read what is still in the pipes, unless a background process keeps them open.
        const drained = setTimeout(finish, OUTPUT_DRAIN_MS);
        child.once('close', finish);
      });
    });
  }
}
