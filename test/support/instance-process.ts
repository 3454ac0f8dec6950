/**
 * Runs consul-acme as a separate process, exactly as an operator would (`node dist/src/main.js run`
 * with settings in the environment), and reads its JSON log lines from stdout. Used by the
 * high-availability tests, where instances must die independently (`kill -9`, SIGTERM).
 *
 * `events(name)` returns the parsed lines whose `event` field is `name` (cert_obtaining,
 * cert_obtained, cert_failed...); `lines()` returns every parsed line; `logs()` the raw output,
 * for failure messages. Every process spawned here is SIGKILLed when the test process exits.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { waitFor } from './wait.js';
import { killOnExit } from './processes.js';

/** The compiled entry point, next to this file in dist/ (dist/test/support → dist/src/main.js). */
export const MAIN_JS = fileURLToPath(new URL('../../src/main.js', import.meta.url));

const STARTUP_TIMEOUT_MS = 20_000;
const MAX_RAW_CHARS = 512 * 1024;

export interface LogLine {
  level: number;
  time: string;
  msg: string;
  event?: string;
  component?: string;
  hostname?: string;
  err?: string;
  [field: string]: unknown;
}

export interface InstanceOptions {
  /** CONSUL_ACME_INSTANCE_NAME; also the session name `consul-acme <name>` in Consul. */
  name: string;
  challengePort: number;
  adminPort: number;
  /** Every other setting. CONSUL_ACME_INSTANCE_NAME and the listener settings are added here. */
  env: Record<string, string>;
  /** Runs the instance under `ulimit -n <openFileLimit>` (the soft and hard open-file limit). */
  openFileLimit?: number;
  /** The entry point to run; MAIN_JS (this build) by default, another release's for upgrade tests. */
  mainJs?: string;
}

export interface InstanceProcess {
  name: string;
  pid: number;
  challengePort: number;
  adminUrl: string;
  /** The Consul session name this instance's locker uses. */
  sessionName: string;
  lines(): LogLine[];
  events(name: string): LogLine[];
  logs(): string;
  exited(): { code: number | null; signal: NodeJS.Signals | null } | undefined;
  sigterm(): void;
  kill9(): void;
  /** Resolves with how the process ended; rejects after `timeoutMs`. */
  waitForExit(timeoutMs?: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Settings from the test's own environment must not leak into the instance. */
function baseEnvironment(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (value === undefined) continue;
    if (/^(CONSUL_|VAULT_|PEBBLE_)/.test(key)) continue;
    env[key] = value;
  }
  return env;
}

/** Spawns one instance and resolves once its listeners are up (its `listening` log line). */
export async function spawnInstance(opts: InstanceOptions): Promise<InstanceProcess> {
  const env = {
    ...baseEnvironment(),
    CONSUL_ACME_CHALLENGE_HOST: '127.0.0.1',
    CONSUL_ACME_ADMIN_HOST: '127.0.0.1',
    CONSUL_ACME_SERVICE_ADDRESS: '127.0.0.1',
    ...opts.env,
    CONSUL_ACME_INSTANCE_NAME: opts.name,
    CONSUL_ACME_CHALLENGE_PORT: String(opts.challengePort),
    CONSUL_ACME_ADMIN_PORT: String(opts.adminPort),
  };
  // With a file limit, a shell sets it and then becomes node (exec), so the pid is node's.
  const mainJs = opts.mainJs ?? MAIN_JS;
  const child =
    opts.openFileLimit === undefined
      ? spawn(process.execPath, [mainJs, 'run'], { env, stdio: ['ignore', 'pipe', 'pipe'] })
      : spawn('/bin/sh', ['-c', `ulimit -n ${opts.openFileLimit} && exec "$0" "$@"`, process.execPath, mainJs, 'run'], {
          env,
          stdio: ['ignore', 'pipe', 'pipe'],
        });
  killOnExit(child);

  let raw = '';
  let partial = '';
  const parsed: LogLine[] = [];
  let exitState: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  const exitPromise = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => {
      exitState = { code, signal };
      resolve(exitState);
    });
  });
  const appendRaw = (text: string): void => {
    raw += text;
    if (raw.length > MAX_RAW_CHARS) raw = raw.slice(-MAX_RAW_CHARS);
  };
  child.stdout?.on('data', (chunk: Buffer) => {
    const text = chunk.toString('utf8');
    appendRaw(text);
    partial += text;
    const lines = partial.split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) {
      if (line.trim() === '') continue;
      try {
        parsed.push(JSON.parse(line) as LogLine);
      } catch {
        // not a log line (never expected on stdout); kept in raw
      }
    }
  });
  child.stderr?.on('data', (chunk: Buffer) => appendRaw(`[stderr] ${chunk.toString('utf8')}`));
  child.on('error', (err) => appendRaw(`[spawn error] ${err.message}\n`));

  const instance: InstanceProcess = {
    name: opts.name,
    pid: child.pid ?? -1,
    challengePort: opts.challengePort,
    adminUrl: `http://127.0.0.1:${opts.adminPort}`,
    sessionName: `consul-acme ${opts.name}`,
    lines: () => [...parsed],
    events: (name) => parsed.filter((l) => l.event === name),
    logs: () => raw,
    exited: () => exitState,
    sigterm: () => {
      if (!exitState) child.kill('SIGTERM');
    },
    kill9: () => {
      if (!exitState) child.kill('SIGKILL');
    },
    async waitForExit(timeoutMs = 30_000) {
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`instance ${opts.name} did not exit within ${timeoutMs} ms\n${raw.slice(-8000)}`)),
          timeoutMs,
        );
      });
      try {
        return await Promise.race([exitPromise, timeout]);
      } finally {
        clearTimeout(timer);
      }
    },
  };

  try {
    const state = await waitFor(
      `instance ${opts.name} to listen`,
      () => (exitState ? 'exited' : parsed.some((l) => l.msg === 'listening') ? 'up' : undefined),
      { timeoutMs: STARTUP_TIMEOUT_MS, intervalMs: 50 },
    );
    if (state === 'exited')
      throw new Error(`instance ${opts.name} exited (${exitState?.code ?? exitState?.signal}) during startup`);
  } catch (err) {
    instance.kill9();
    const reason = err instanceof Error ? err.message : String(err);
    throw new Error(`${reason}\n${raw.slice(-8000)}`, { cause: err });
  }
  return instance;
}
