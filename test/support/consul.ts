/**
 * Starts a real Consul agent (`consul agent -dev`, Consul 1.8.7 from scripts/setup-deps.sh) on free
 * ports, so that several can run at once; with `dataDir`, a single server keeping its state in a
 * data directory, which `restart()` brings back on the same ports. DNS, gRPC, HTTPS and serf WAN are disabled. Resolves once
 * a leader is elected and the agent's node is in the catalog with a passing serfHealth check (a
 * session cannot be created before that). Every wait is bounded; failures carry the agent's logs.
 *
 * Binary: $CONSUL_BIN, else <repo>/.cache/consul/usr/bin/consul, else `consul` on PATH.
 * Every agent started here is killed when the test process exits.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from './net.js';
import { killOnExit, removeOnExit } from './processes.js';

const STARTUP_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 10_000;
const MAX_LOG_CHARS = 256 * 1024;
const START_ATTEMPTS = 3;

export interface StartConsulOptions {
  /** Enables ACLs with default_policy "deny" and this master (bootstrap) token. */
  acl?: { masterToken: string };
  /**
   * Also serves the HTTP API over TLS with this certificate and key (PEM files). With
   * `verifyIncoming`, the agent runs with `verify_incoming` and `ca_file`: an HTTPS client must
   * present a certificate that CA signed (the plain HTTP port stays open for the test's own calls).
   */
  tls?: { certFile: string; keyFile: string; verifyIncoming?: { caFile: string } };
  /**
   * Runs a single server with a data directory (`-server -bootstrap-expect=1 -data-dir <dir>`)
   * instead of `-dev`, so that `restart()` keeps the KV store, sessions and the services
   * registered through the agent's API. A fresh server takes a few seconds to elect itself.
   */
  dataDir?: boolean;
  /** The agent's datacenter (`-datacenter`); Consul's default `dc1` when unset. */
  datacenter?: string;
  /** Opens the serf WAN port, so that another datacenter's agent can join this one (`joinWan`). */
  wan?: boolean;
}

export interface ConsulInstance {
  /** http://127.0.0.1:PORT (no /v1). */
  address: string;
  httpPort: number;
  /** https://127.0.0.1:PORT when started with `tls`. */
  httpsAddress: string | undefined;
  /** The agent's node name (unique per instance). */
  nodeName: string;
  /** The agent's datacenter. */
  datacenter: string;
  /** Joins `other`'s datacenter over the WAN (both started with `wan`); resolves once each lists the other. */
  joinWan(other: ConsulInstance): Promise<void>;
  /** The serf WAN port when started with `wan`. */
  serfWanPort: number | undefined;
  /** The data directory when started with `dataDir`; undefined for a `-dev` agent. */
  dataDir: string | undefined;
  /** Stops the agent (SIGTERM, then SIGKILL after 10 s) and removes its config directory. */
  stop(): Promise<void>;
  /**
   * Stops the agent (SIGTERM; `{ kill: true }`: SIGKILL, as a crash would) and starts it again
   * on the same ports, resolving when it is ready again. With `dataDir` it keeps its state; a
   * `-dev` agent comes back empty, as an agent that lost its data directory would.
   */
  restart(opts?: { kill?: boolean }): Promise<void>;
  /** Kills the agent at once, as a crash would. */
  kill9(): void;
  /** The agent's output so far, over every run (for failure messages). */
  logs(): string;
}

/** Finds the consul binary; throws naming `npm run setup` when there is none. */
export function consulBinary(): string {
  const fromEnv = process.env.CONSUL_BIN;
  if (fromEnv) {
    if (!existsSync(fromEnv)) throw new Error(`CONSUL_BIN=${fromEnv} does not exist`);
    return fromEnv;
  }
  const repoRoot = findRepoRoot();
  const cached = join(repoRoot, '.cache', 'consul', 'usr', 'bin', 'consul');
  if (existsSync(cached)) return cached;
  const onPath = spawnSync('consul', ['version'], { stdio: 'ignore' });
  if (!onPath.error && onPath.status === 0) return 'consul';
  throw new Error(`no consul binary: set CONSUL_BIN, or run \`npm run setup\` to unpack Consul 1.8.7 into ${cached}`);
}

/** The directory holding package.json, walking up from this file (src or dist layout). */
function findRepoRoot(): string {
  let dir = fileURLToPath(new URL('.', import.meta.url));
  for (let i = 0; i < 6; i++) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    dir = join(dir, '..');
  }
  return process.cwd();
}

class LogBuffer {
  private text = '';
  append(chunk: Buffer | string): void {
    this.text += chunk.toString();
    if (this.text.length > MAX_LOG_CHARS) this.text = this.text.slice(-MAX_LOG_CHARS);
  }
  toString(): string {
    return this.text;
  }
}

export async function startConsul(opts: StartConsulOptions = {}): Promise<ConsulInstance> {
  const binary = consulBinary();
  let lastError: unknown;
  for (let attempt = 1; attempt <= START_ATTEMPTS; attempt++) {
    try {
      return await startOnce(binary, opts);
    } catch (err) {
      lastError = err;
      // A port picked as free can be taken by a parallel test before Consul binds it: try new ports.
      if (!(err instanceof PortInUseError)) throw err;
    }
  }
  throw lastError instanceof Error ? lastError : new Error(String(lastError));
}

class PortInUseError extends Error {}

/** One run of the agent process. */
interface AgentProcess {
  child: ChildProcess;
  exited: () => { code: number | null; signal: NodeJS.Signals | null } | undefined;
  exitPromise: Promise<void>;
}

async function startOnce(binary: string, opts: StartConsulOptions): Promise<ConsulInstance> {
  const [httpPort, serfLanPort, serverPort] = [await freePort(), await freePort(), await freePort()];
  const httpsPort = opts.tls ? await freePort() : -1;
  const serfWanPort = opts.wan ? await freePort() : -1;
  const datacenter = opts.datacenter ?? 'dc1';
  const nodeName = `consul-acme-test-${httpPort}`;
  const dir = await mkdtemp(join(tmpdir(), 'consul-acme-consul-'));
  removeOnExit(dir);
  const dataDir = opts.dataDir ? join(dir, 'data') : undefined;
  const acl = opts.acl
    ? `acl {\n  enabled = true\n  default_policy = "deny"\n  tokens {\n    master = ${JSON.stringify(opts.acl.masterToken)}\n  }\n}\n`
    : '';
  const verify = opts.tls?.verifyIncoming
    ? `ca_file = ${JSON.stringify(opts.tls.verifyIncoming.caFile)}\nverify_incoming = true\n`
    : '';
  const tls = opts.tls
    ? `cert_file = ${JSON.stringify(opts.tls.certFile)}\nkey_file = ${JSON.stringify(opts.tls.keyFile)}\n${verify}`
    : '';
  // A server with a data directory: elect itself quickly (raft_multiplier 1, as -dev does) and
  // never call home.
  const server = dataDir ? 'performance {\n  raft_multiplier = 1\n}\ndisable_update_check = true\n' : '';
  const config =
    `ports {\n  http = ${httpPort}\n  https = ${httpsPort}\n  dns = -1\n  grpc = -1\n` +
    `  serf_lan = ${serfLanPort}\n  serf_wan = ${serfWanPort}\n  server = ${serverPort}\n}\n${acl}${tls}${server}`;
  const configFile = join(dir, 'consul.hcl');
  await writeFile(configFile, config);
  const mode = dataDir ? ['-server', '-bootstrap-expect=1', '-data-dir', dataDir] : ['-dev'];
  const args = [
    'agent',
    ...mode,
    '-bind',
    '127.0.0.1',
    '-client',
    '127.0.0.1',
    '-node',
    nodeName,
    '-datacenter',
    datacenter,
    '-config-file',
    configFile,
  ];

  const logs = new LogBuffer();
  const address = `http://127.0.0.1:${httpPort}`;
  const headers: Record<string, string> = opts.acl ? { 'X-Consul-Token': opts.acl.masterToken } : {};

  /** Spawns the agent and waits until it is ready; kills it and throws when it is not. */
  const run = async (): Promise<AgentProcess> => {
    const child = spawn(binary, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    killOnExit(child);
    let exited: { code: number | null; signal: NodeJS.Signals | null } | undefined;
    const exitPromise = new Promise<void>((resolve) => {
      child.once('exit', (code, signal) => {
        exited = { code, signal };
        resolve();
      });
    });
    child.once('error', (err) => logs.append(`[spawn error] ${err.message}\n`));
    child.stdout?.on('data', (c: Buffer) => logs.append(c));
    child.stderr?.on('data', (c: Buffer) => logs.append(c));
    // Neither the agent nor its pipes keep the test process alive; the exit hook kills the agent.
    child.unref();
    for (const stream of [child.stdout, child.stderr]) (stream as unknown as { unref?: () => void } | null)?.unref?.();

    const deadline = Date.now() + STARTUP_TIMEOUT_MS;
    let stage = 'a leader';
    try {
      for (;;) {
        if (exited) {
          const text = logs.toString();
          if (/address already in use/i.test(text))
            throw new PortInUseError(`consul could not bind its ports:\n${text}`);
          throw new Error(`consul exited (${exited.code ?? exited.signal}) before it was ready:\n${text}`);
        }
        if (Date.now() > deadline) {
          throw new Error(`consul did not get ${stage} within ${STARTUP_TIMEOUT_MS} ms:\n${logs.toString()}`);
        }
        if (await isReady(address, nodeName, headers, (s) => (stage = s))) break;
        await new Promise((r) => setTimeout(r, 100));
      }
    } catch (err) {
      if (!exited) {
        child.kill('SIGKILL');
        await exitPromise;
      }
      throw err;
    }
    return { child, exited: () => exited, exitPromise };
  };

  /** Ends the current run: SIGTERM (SIGKILL after 10 s), or SIGKILL at once. */
  const end = async (agent: AgentProcess, kill: boolean): Promise<void> => {
    if (agent.exited()) return;
    agent.child.kill(kill ? 'SIGKILL' : 'SIGTERM');
    const timer = setTimeout(() => agent.child.kill('SIGKILL'), STOP_TIMEOUT_MS);
    await agent.exitPromise;
    clearTimeout(timer);
  };

  let current: AgentProcess;
  try {
    current = await run();
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }

  const instance: ConsulInstance = {
    address,
    httpPort,
    datacenter,
    serfWanPort: opts.wan ? serfWanPort : undefined,
    joinWan: async (other) => {
      if (other.serfWanPort === undefined || !opts.wan) throw new Error('both agents need `wan` to join');
      const res = await fetch(`${address}/v1/agent/join/127.0.0.1:${other.serfWanPort}?wan=1`, {
        method: 'PUT',
        headers,
      });
      if (res.status !== 200) throw new Error(`WAN join: ${res.status} ${await res.text()}`);
      const deadline = Date.now() + STARTUP_TIMEOUT_MS;
      for (const [from, wanted] of [
        [address, other.datacenter],
        [other.address, datacenter],
      ] as const) {
        for (;;) {
          const list = (await (await fetch(`${from}/v1/catalog/datacenters`)).json()) as string[];
          if (list.includes(wanted)) break;
          if (Date.now() > deadline) throw new Error(`datacenter ${wanted} not known at ${from} after the WAN join`);
          await new Promise((r) => setTimeout(r, 100));
        }
      }
    },
    httpsAddress: opts.tls ? `https://127.0.0.1:${httpsPort}` : undefined,
    nodeName,
    dataDir,
    logs: () => logs.toString(),
    kill9: () => {
      if (!current.exited()) current.child.kill('SIGKILL');
    },
    restart: async ({ kill = false } = {}) => {
      await end(current, kill);
      if (!dataDir) logs.append('[restart] -dev agent restarted without its state\n');
      else logs.append('[restart] restarting with the same data directory\n');
      current = await run();
    },
    stop: async () => {
      await end(current, false);
      await rm(dir, { recursive: true, force: true });
    },
  };
  return instance;
}

/** Leader elected, then the node registered with serfHealth passing (sessions need it). */
async function isReady(
  address: string,
  nodeName: string,
  headers: Record<string, string>,
  setStage: (stage: string) => void,
): Promise<boolean> {
  try {
    setStage('a leader');
    const leader = await fetch(`${address}/v1/status/leader`, { signal: AbortSignal.timeout(2_000) });
    if (!leader.ok) return false;
    const leaderAddress: unknown = await leader.json();
    if (typeof leaderAddress !== 'string' || leaderAddress === '') return false;
    setStage(`node ${nodeName} with a passing serfHealth check`);
    const health = await fetch(`${address}/v1/health/node/${nodeName}`, {
      headers,
      signal: AbortSignal.timeout(2_000),
    });
    if (!health.ok) return false;
    const checks: unknown = await health.json();
    return (
      Array.isArray(checks) &&
      checks.some((c: { CheckID?: unknown; Status?: unknown }) => c.CheckID === 'serfHealth' && c.Status === 'passing')
    );
  } catch {
    return false; // not listening yet
  }
}

/** Registers (or re-registers, replacing its tags) a service in the agent, as an application would. */
export async function registerService(consulAddress: string, id: string, tags: string[]): Promise<void> {
  const res = await fetch(`${consulAddress}/v1/agent/service/register`, {
    method: 'PUT',
    body: JSON.stringify({ ID: id, Name: id, Port: 9000, Address: '127.0.0.1', Tags: tags }),
  });
  if (res.status !== 200) throw new Error(`registering ${id}: ${res.status} ${await res.text()}`);
}

/** Removes a service registered with `registerService`. */
export async function deregisterService(consulAddress: string, id: string): Promise<void> {
  const res = await fetch(`${consulAddress}/v1/agent/service/deregister/${encodeURIComponent(id)}`, { method: 'PUT' });
  if (res.status !== 200) throw new Error(`deregistering ${id}: ${res.status} ${await res.text()}`);
}

/** Fabio route tags (`urlprefix-<host>/`) for some hostnames. */
export function fabioTags(hostnames: readonly string[]): string[] {
  return hostnames.map((h) => `urlprefix-${h}/`);
}
