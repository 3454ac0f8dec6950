/**
 * Starts a real HAProxy (Debian's /usr/sbin/haproxy 2.6, installed by scripts/setup-deps.sh) in
 * the foreground (`-db`) on a free loopback port, with the configuration the README shows: a TLS
 * bind with a default certificate and a crt-list, and an admin-level stats socket. The default
 * certificate is made here (self-signed, `haproxy-default.test`); the crt-list starts empty unless
 * it exists. Every HAProxy started here is killed when the test process exits.
 *
 * `servedCertificate(name)` asks with `openssl s_client -servername <name>`, as a person would.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeTestCertificate } from './certs.js';
import { freePort } from './net.js';
import { killOnExit, removeOnExit } from './processes.js';

export const HAPROXY_BINARY = process.env.HAPROXY_BINARY ?? '/usr/sbin/haproxy';
const STARTUP_TIMEOUT_MS = 15_000;
const STOP_TIMEOUT_MS = 5_000;
const MAX_LOG_CHARS = 128 * 1024;
export const HAPROXY_DEFAULT_NAME = 'haproxy-default.test';

export interface StartHaproxyOptions {
  /** Where the configuration, default certificate and socket go; a new temporary folder by default. */
  dir?: string;
  /** The crt-list HAProxy reads; default `<dir>/certs/crt-list` (made empty when missing). */
  crtListPath?: string;
}

export interface HaproxyInstance {
  /** The running process's id; changes only with restart(). */
  readonly pid: number;
  port: number;
  socketPath: string;
  crtListPath: string;
  /** The folder the crt-list is in, for CONSUL_ACME_HAPROXY_DIR. */
  certDir: string;
  configPath: string;
  /** The configuration file's text (the README shows the same lines). */
  configText: string;
  /** The leaf HAProxy serves for a name, via `openssl s_client -servername <name>`. */
  servedCertificate(servername: string): Promise<X509Certificate>;
  /** Whether the process is running. */
  running(): boolean;
  stop(): Promise<void>;
  /** Starts it again (after stop()) with the same configuration and port: it reads the crt-list anew. */
  start(): Promise<void>;
  restart(): Promise<void>;
  logs(): string;
}

/**
 * The lines of HAProxy's configuration that consul-acme relies on, as the README shows them: an
 * admin-level stats socket, and a TLS bind with a default certificate and consul-acme's crt-list.
 */
export function haproxySinkLines(options: {
  bind: string;
  socketPath: string;
  defaultPem: string;
  crtListPath: string;
}): { global: string; bind: string } {
  return {
    global: `stats socket ${options.socketPath} level admin`,
    bind: `bind ${options.bind} ssl crt ${options.defaultPem} crt-list ${options.crtListPath}`,
  };
}

/** The whole test configuration: those lines, plus a frontend that answers every request itself. */
export function haproxyConfig(options: {
  port: number;
  socketPath: string;
  defaultPem: string;
  crtListPath: string;
}): string {
  const lines = haproxySinkLines({ ...options, bind: `127.0.0.1:${options.port}` });
  return [
    'global',
    `  ${lines.global}`,
    '',
    'defaults',
    '  mode http',
    '  timeout connect 5s',
    '  timeout client 10s',
    '  timeout server 10s',
    '',
    'frontend https',
    `  ${lines.bind}`,
    '  http-request return status 200 content-type text/plain string "served by haproxy"',
    '',
  ].join('\n');
}

/** One runtime API command on the socket; resolves the answer (for tests that look inside HAProxy). */
export function haproxyCommand(socketPath: string, command: string, timeoutMs = 5_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const socket = connect(socketPath);
    const timer = setTimeout(
      () => socket.destroy(new Error(`no answer to "${command}" within ${timeoutMs} ms`)),
      timeoutMs,
    );
    socket.on('connect', () => socket.write(`${command}\n`));
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('end', () => {
      clearTimeout(timer);
      resolve(Buffer.concat(chunks).toString('utf8'));
    });
    socket.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

/** The leaf certificate `openssl s_client` receives for `servername` from 127.0.0.1:`port`. */
export function sClientCertificate(port: number, servername: string): Promise<X509Certificate> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      'openssl',
      ['s_client', '-connect', `127.0.0.1:${port}`, '-servername', servername],
      { timeout: 10_000 },
      (err, stdout) => {
        const pem = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(stdout)?.[0];
        if (pem === undefined) {
          reject(new Error(`openssl s_client got no certificate for ${servername}${err ? `: ${err.message}` : ''}`));
          return;
        }
        resolve(new X509Certificate(pem));
      },
    );
    child.stdin?.end();
  });
}

export async function startHaproxy(options: StartHaproxyOptions = {}): Promise<HaproxyInstance> {
  const dir = options.dir ?? mkdtempSync(join(tmpdir(), 'haproxy-'));
  if (!options.dir) removeOnExit(dir);
  const certDir = join(dir, 'certs');
  const crtListPath = options.crtListPath ?? join(certDir, 'crt-list');
  const socketPath = join(dir, 'admin.sock');
  const defaultPem = join(dir, 'default.pem');
  const configPath = join(dir, 'haproxy.cfg');
  const { certPem, keyPem } = await makeTestCertificate({ hostnames: [HAPROXY_DEFAULT_NAME], issuer: null });
  writeFileSync(defaultPem, `${certPem}${keyPem}`, { mode: 0o600 });
  mkdirSync(certDir, { recursive: true });
  // HAProxy refuses to start without the crt-list file; an empty one is fine.
  if (!existsSync(crtListPath)) writeFileSync(crtListPath, '');

  let log = '';
  const append = (chunk: Buffer | string): void => {
    log = (log + chunk.toString()).slice(-MAX_LOG_CHARS);
  };
  let port = 0;
  let configText = '';
  let child: ChildProcess | undefined;

  const running = (): boolean => child !== undefined && child.exitCode === null && child.signalCode === null;

  const launch = async (): Promise<void> => {
    const started = spawn(HAPROXY_BINARY, ['-f', configPath, '-db'], { stdio: ['ignore', 'pipe', 'pipe'] });
    killOnExit(started);
    started.stdout?.on('data', append);
    started.stderr?.on('data', append);
    started.on('error', (err) => append(`spawn error: ${err.message}\n`));
    started.on('exit', (code, signal) =>
      append(`[haproxy exited code=${code ?? 'null'} signal=${signal ?? 'null'}]\n`),
    );
    child = started;
    const deadline = Date.now() + STARTUP_TIMEOUT_MS;
    for (;;) {
      if (started.exitCode !== null || started.signalCode !== null)
        throw new Error(`haproxy exited during startup:\n${log}`);
      try {
        if ((await haproxyCommand(socketPath, 'show ssl crt-list', 1_000)).includes(crtListPath)) return;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline)
        throw new Error(`haproxy did not answer on ${socketPath} within ${STARTUP_TIMEOUT_MS} ms:\n${log}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };

  const stop = async (): Promise<void> => {
    const current = child;
    if (!current || !running()) return;
    const exited = new Promise<void>((resolve) => current.once('exit', () => resolve()));
    current.kill('SIGTERM');
    const timer = setTimeout(() => current.kill('SIGKILL'), STOP_TIMEOUT_MS);
    await exited;
    clearTimeout(timer);
  };

  for (let attempt = 1; ; attempt++) {
    port = await freePort();
    configText = haproxyConfig({ port, socketPath, defaultPem, crtListPath });
    writeFileSync(configPath, configText);
    try {
      await launch();
      break;
    } catch (err) {
      await stop();
      if (attempt >= 3 || !/cannot bind|Address already in use/i.test(String(err))) throw err;
    }
  }

  return {
    get pid() {
      return child?.pid ?? -1;
    },
    port,
    socketPath,
    crtListPath,
    certDir,
    configPath,
    configText,
    servedCertificate: (servername) => sClientCertificate(port, servername),
    running,
    stop,
    start: async () => {
      if (!running()) await launch();
    },
    restart: async () => {
      await stop();
      await launch();
    },
    logs: () => log,
  };
}
