/**
 * The deploy files (nomad/, deploy/, .dockerignore) agree with the code. Each checker takes parsed
 * files and the facts from src/deploy-contract.ts and returns a list of problems, each a sentence
 * naming the file, the line of thought and the fix; the real files must give none, and mutated
 * copies must give the specific problem.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, existsSync } from 'node:fs';
import { posix } from 'node:path';
import { createRequire } from 'node:module';
import type { FastifyInstance } from 'fastify';
import { parseDurationMs, SETTINGS, type SettingSpec } from '../../src/config/schema.js';
import {
  consulRules,
  defaultConsulNeeds,
  defaultVaultLayout,
  fabioCertSourcePath,
  fabioVaultRules,
  LISTENERS,
  REGISTRATION_CHECK_PATH,
  serviceEnvNames,
  serviceVaultRules,
  sinkOnlyVaultRules,
  storeVaultRules,
  tokenVaultRules,
  type ConsulNeeds,
  type ConsulRule,
  type VaultLayout,
  type VaultRule,
} from '../../src/deploy-contract.js';
import { buildAdminServer } from '../../src/http/admin-server.js';
import { ADMIN_HEALTH_PATHS } from '../../src/naming.js';
import { silentLogger } from '../../src/logging.js';
import { DEFAULT_SINK_STOP_TIMEOUT_MS } from '../../src/sinks/sink-runner.js';

// @cdktf/hcl2json's typings carry `/// <reference lib="dom" />`, which would pull the DOM library
// into the whole program and break Node-typed code elsewhere; load it untyped and type it here.
const hcl2json = createRequire(import.meta.url)('@cdktf/hcl2json') as {
  parse(filename: string, contents: string): Promise<unknown>;
};

const ROOT = new URL('../../../', import.meta.url);
const readRepoFile = (path: string): string => readFileSync(new URL(path, ROOT), 'utf8');
const repoFileExists = (path: string): boolean => existsSync(new URL(path, ROOT));

const FILES = {
  job: 'nomad/consul-acme.nomad.hcl',
  sinksJob: 'nomad/consul-acme-sinks.nomad.hcl',
  consulPolicy: 'deploy/consul-policy.hcl',
  vaultPolicy: 'deploy/vault-policy.hcl',
  fabioVaultPolicy: 'deploy/fabio-vault-policy.hcl',
  fabioProperties: 'deploy/fabio.properties',
  dockerfile: 'deploy/Dockerfile',
  dockerignore: '.dockerignore',
} as const;

// ---------------------------------------------------------------------------------------------
// Reading the HCL JSON form

type Obj = Record<string, unknown>;

function isObj(value: unknown): value is Obj {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** An unlabeled block (`network { }`): hcl2json gives an array of bodies. */
function bodies(value: unknown): Obj[] {
  return Array.isArray(value) ? value.filter(isObj) : [];
}

/** A labeled block (`task "x" { }`): hcl2json gives `{ label: [body, ...] }`. */
function labeled(value: unknown): Array<[string, Obj]> {
  if (!isObj(value)) return [];
  return Object.entries(value).flatMap(([label, list]) => bodies(list).map((body): [string, Obj] => [label, body]));
}

/** A scalar as text (HCL numbers and bools included); anything else as JSON. */
function text(value: unknown): string {
  if (value === undefined || value === null) return '';
  return typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean'
    ? String(value)
    : JSON.stringify(value);
}

function strings(value: unknown): string[] {
  return Array.isArray(value) ? value.filter((v): v is string => typeof v === 'string') : [];
}

async function parseHcl(name: string, text: string): Promise<Obj> {
  const parsed = await hcl2json.parse(name, text);
  assert.ok(isObj(parsed), `${name} parses to an object`);
  return parsed;
}

// ---------------------------------------------------------------------------------------------
// The Nomad job, normalised

interface TaskModel {
  name: string;
  raw: Obj;
  /** `env {}` with `${var.x}` replaced by the variable's default. */
  env: Map<string, string>;
  /** Names set by `template { env = true }` blocks (`KEY=value` lines). */
  templateEnv: string[];
  /** Every template block: where it renders and what a change does. */
  templates: Array<{ destination: string; changeMode: string; env: boolean }>;
  services: Obj[];
  dockerConfig: Obj | undefined;
  /** `volume_mount` blocks, with `${var.x}` resolved. */
  volumeMounts: Array<{ volume: string; destination: string }>;
}

interface GroupModel {
  name: string;
  raw: Obj;
  network: Obj | undefined;
  services: Obj[];
  tasks: TaskModel[];
  /** `volume "<label>"` blocks of the group. */
  volumes: Map<string, Obj>;
}

interface JobModel {
  name: string;
  raw: Obj;
  groups: GroupModel[];
}

/** Replaces `${var.name}` with the variable's default; other interpolations (NOMAD_*, attr.*) stay. */
function resolveVars(value: unknown, defaults: Map<string, unknown>): string | undefined {
  if (value === undefined || value === null) return undefined;
  const text = typeof value === 'string' ? value : JSON.stringify(value);
  return text.replace(/\$\{var\.([A-Za-z0-9_-]+)\}/g, (whole, name: string) => {
    const found = defaults.get(name);
    if (found === undefined) return whole;
    return typeof found === 'string' ? found : JSON.stringify(found);
  });
}

/** `KEY=value` lines of a template, with the `{{ ... }}` actions taken out. */
function templateEnvNames(data: string): string[] {
  const text = data.replace(/\{\{[\s\S]*?\}\}/g, '');
  return text
    .split('\n')
    .map((line) => /^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=/.exec(line)?.[1])
    .filter((name): name is string => name !== undefined);
}

function readJob(parsed: Obj): JobModel {
  const defaults = new Map<string, unknown>(labeled(parsed.variable).map(([name, body]) => [name, body.default]));
  const jobs = labeled(parsed.job);
  assert.equal(jobs.length, 1, 'the job file declares one job');
  const [name, raw] = jobs[0]!;
  const groups = labeled(raw.group).map(([groupName, group]): GroupModel => ({
    name: groupName,
    raw: group,
    network: bodies(group.network)[0],
    services: bodies(group.service),
    volumes: new Map(labeled(group.volume)),
    tasks: labeled(group.task).map(([taskName, task]): TaskModel => {
      const env = new Map<string, string>();
      for (const body of bodies(task.env)) {
        for (const [key, value] of Object.entries(body)) env.set(key, resolveVars(value, defaults) ?? '');
      }
      const templateEnv = bodies(task.template)
        .filter((t) => t.env === true)
        .flatMap((t) => templateEnvNames(typeof t.data === 'string' ? t.data : ''));
      const templates = bodies(task.template).map((t) => ({
        destination: text(t.destination),
        changeMode: t.change_mode === undefined ? 'restart' : text(t.change_mode),
        env: t.env === true,
      }));
      return {
        name: taskName,
        raw: task,
        env,
        templateEnv,
        templates,
        services: bodies(task.service),
        dockerConfig: bodies(task.config)[0],
        volumeMounts: bodies(task.volume_mount).map((m) => ({
          volume: text(m.volume),
          destination: resolveVars(m.destination, defaults) ?? '',
        })),
      };
    }),
  }));
  return { name, raw, groups };
}

/** The value a setting takes in a task: the env value when it is a literal, else the schema default. */
function settingIn<T>(task: TaskModel, spec: SettingSpec<T>): T | undefined {
  const raw = task.env.get(spec.env);
  if (raw === undefined || raw === '' || raw.includes('${')) return spec.default;
  const parsed = spec.parse(raw);
  return parsed.ok ? parsed.value : spec.default;
}

function allTasks(job: JobModel): TaskModel[] {
  return job.groups.flatMap((g) => g.tasks);
}

/** The Vault layout the job configures (the first task's; the job has one). */
function jobVaultLayout(job: JobModel): VaultLayout {
  const task = allTasks(job)[0];
  if (!task) return defaultVaultLayout();
  const fallback = defaultVaultLayout();
  return {
    mount: settingIn(task, SETTINGS.vaultMount) ?? fallback.mount,
    prefix: settingIn(task, SETTINGS.vaultPrefix) ?? fallback.prefix,
    accountPath: settingIn(task, SETTINGS.vaultAccountPath) ?? fallback.accountPath,
    pendingPath: settingIn(task, SETTINGS.vaultPendingPath) ?? fallback.pendingPath,
  };
}

function jobConsulNeeds(job: JobModel): ConsulNeeds {
  const task = allTasks(job)[0];
  const fallback = defaultConsulNeeds();
  if (!task) return fallback;
  return {
    kvPrefix: settingIn(task, SETTINGS.kvPrefix) ?? fallback.kvPrefix,
    serviceName: settingIn(task, SETTINGS.serviceName) ?? fallback.serviceName,
    registerService: settingIn(task, SETTINGS.registerService) ?? fallback.registerService,
  };
}

function jobFabioTagPrefix(job: JobModel): string {
  const task = allTasks(job)[0];
  return (task && settingIn(task, SETTINGS.fabioTagPrefix)) ?? SETTINGS.fabioTagPrefix.default;
}

// ---------------------------------------------------------------------------------------------
// Checkers: each returns the problems it finds, as sentences

/** Variables set by the platform or the runtime rather than consul-acme, allowed in the job and the image. */
const PLATFORM_ENV_NAMES = new Set(['NODE_ENV', 'NODE_OPTIONS', 'TZ']);
const PLATFORM_ENV_PREFIXES = ['NOMAD_'];

function isPlatformEnv(name: string): boolean {
  return PLATFORM_ENV_NAMES.has(name) || PLATFORM_ENV_PREFIXES.some((prefix) => name.startsWith(prefix));
}

/** Every variable the job sets is one the service reads (or a platform one listed above). */
function checkJobEnv(job: JobModel, known: ReadonlySet<string>): string[] {
  const problems: string[] = [];
  for (const task of allTasks(job)) {
    const set = [
      ...[...task.env.keys()].map((name) => ({ name, where: 'env {}' })),
      ...task.templateEnv.map((name) => ({ name, where: 'a template with env = true' })),
    ];
    for (const { name, where } of set) {
      if (!known.has(name) && !isPlatformEnv(name)) {
        problems.push(
          `task "${task.name}": ${where} sets ${name}, which consul-acme does not read (no setting in src/config/schema.ts has that env name)`,
        );
      }
    }
  }
  return problems;
}

/** Both listeners get a dynamic host port, wired to the env var that sets it, and published by docker. */
function checkJobPorts(job: JobModel): string[] {
  const problems: string[] = [];
  for (const group of job.groups) {
    const network = group.network;
    if (!network) {
      problems.push(`group "${group.name}" has no network block; it needs port "challenge" and port "admin"`);
      continue;
    }
    if (network.mode !== undefined && network.mode !== 'host') {
      problems.push(
        `group "${group.name}": network mode "${text(network.mode)}" makes NOMAD_PORT_* the container-side port, but the process registers the port it listens on; use mode "host"`,
      );
    }
    const ports = new Map(labeled(network.port));
    for (const listener of LISTENERS) {
      const port = ports.get(listener.name);
      if (!port)
        problems.push(`group "${group.name}": network has no port "${listener.name}" (for ${listener.portEnv})`);
      else if (port.static !== undefined)
        problems.push(
          `group "${group.name}": port "${listener.name}" is static (${text(port.static)}); use a dynamic port so instances can share a node`,
        );
    }
    for (const task of group.tasks) {
      for (const listener of LISTENERS) {
        const wanted = `\${NOMAD_PORT_${listener.name}}`;
        const actual = task.env.get(listener.portEnv);
        if (actual !== wanted) {
          problems.push(
            `task "${task.name}": ${listener.portEnv} is ${actual === undefined ? 'not set' : `"${actual}"`} but must be "${wanted}", the port Nomad allocated for "${listener.name}"`,
          );
        }
        if (!strings(task.dockerConfig?.ports).includes(listener.name)) {
          problems.push(`task "${task.name}": docker config ports does not publish "${listener.name}"`);
        }
      }
      const address = task.env.get(SETTINGS.serviceAddress.env);
      if (address !== '${NOMAD_IP_challenge}') {
        problems.push(
          `task "${task.name}": ${SETTINGS.serviceAddress.env} is ${address === undefined ? 'not set' : `"${address}"`} but must be "\${NOMAD_IP_challenge}", the address Fabio proxies challenges to`,
        );
      }
      for (const service of [...group.services, ...task.services]) {
        if (typeof service.port === 'string' && !ports.has(service.port)) {
          problems.push(`service "${text(service.name)}": port "${service.port}" is not a port of the group's network`);
        }
      }
    }
  }
  return problems;
}

/**
 * Exactly one registration per instance carries the Fabio routes: the process's own. Nomad's
 * services must not share its name or carry route tags, and their HTTP checks hit admin paths.
 */
function checkJobServices(job: JobModel, hasAdminRoute: (path: string) => boolean): string[] {
  const problems: string[] = [];
  const needs = jobConsulNeeds(job);
  const fabioTagPrefix = jobFabioTagPrefix(job);
  if (!needs.registerService) {
    problems.push(
      `${SETTINGS.registerService.env} is false: no registration carries the challenge routes, so Fabio cannot route HTTP-01 requests to consul-acme`,
    );
  }
  let checks = 0;
  for (const group of job.groups) {
    for (const service of [...group.services, ...group.tasks.flatMap((t) => t.services)]) {
      const name = text(service.name);
      if (name === needs.serviceName) {
        problems.push(
          `Nomad service "${name}" has the name the process registers itself under (${SETTINGS.serviceName.env}): each instance would be registered twice, once without the challenge routes`,
        );
      }
      for (const tag of strings(service.tags)) {
        if (tag.startsWith(fabioTagPrefix))
          problems.push(
            `Nomad service "${name}" carries the Fabio route tag "${tag}"; only the process's own registration may carry routes`,
          );
      }
      for (const check of bodies(service.check)) {
        checks += 1;
        if (check.type !== 'http') continue;
        const path = text(check.path);
        if (!hasAdminRoute(path))
          problems.push(
            `Nomad service "${name}": check "${text(check.name)}" requests ${path}, which the admin server does not serve (it serves ${Object.values(ADMIN_HEALTH_PATHS).join(', ')})`,
          );
        const port = check.port ?? service.port;
        if (port !== 'admin')
          problems.push(
            `Nomad service "${name}": check "${text(check.name)}" uses port "${text(port)}", but the health paths are on the admin port`,
          );
      }
    }
  }
  const update = bodies(job.raw.update)[0];
  if (update?.health_check === 'checks' && checks === 0)
    problems.push('update uses health_check = "checks" but no Nomad service has a check');
  return problems;
}

/** Nomad waits longer than the service's own shutdown timeout before killing it. */
function checkJobShutdown(job: JobModel): string[] {
  const problems: string[] = [];
  for (const task of allTasks(job)) {
    const shutdownMs = settingIn(task, SETTINGS.shutdownTimeoutMs) ?? SETTINGS.shutdownTimeoutMs.default;
    const raw = task.raw.kill_timeout;
    const killMs = typeof raw === 'string' ? parseDurationMs(raw) : undefined;
    if (killMs === undefined || killMs <= shutdownMs) {
      problems.push(
        `task "${task.name}": kill_timeout ${typeof raw === 'string' ? `"${raw}"` : 'is unset (Nomad default 5s)'} must exceed ${SETTINGS.shutdownTimeoutMs.env} (${shutdownMs} ms), or Nomad kills the process before it releases locks and deregisters`,
      );
    }
  }
  return problems;
}

/** Secrets come from Vault or Nomad variables, never from the job file; the Vault store has its token and address. */
function checkJobSecrets(job: JobModel): string[] {
  const problems: string[] = [];
  const secretEnvs = Object.values(SETTINGS)
    .filter((spec) => 'secret' in spec && spec.secret === true)
    .map((spec) => spec.env);
  for (const task of allTasks(job)) {
    for (const env of secretEnvs) {
      if (task.env.has(env))
        problems.push(
          `task "${task.name}": ${env} is a secret but is written in env {}; render it from Vault or a Nomad variable in a template`,
        );
    }
    // The Consul token comes as a file a template renders (re-read when it changes), or, in the
    // older form, as an environment variable a template sets.
    const consulTokenFile = task.env.get(SETTINGS.consulTokenFile.env);
    if (consulTokenFile !== undefined) {
      const rendered = task.templates.find((t) => secretsPath(t.destination) === secretsPath(consulTokenFile));
      if (rendered === undefined)
        problems.push(
          `task "${task.name}": ${SETTINGS.consulTokenFile.env} is "${consulTokenFile}", but no template renders that file`,
        );
      else if (rendered.changeMode !== 'noop')
        problems.push(
          `task "${task.name}": the template that renders ${SETTINGS.consulTokenFile.env} has change_mode "${rendered.changeMode}"; use "noop": the process re-reads the file, and a restart aborts orders in flight`,
        );
    } else if (!task.templateEnv.includes(SETTINGS.consulToken.env)) {
      problems.push(
        `task "${task.name}": neither ${SETTINGS.consulTokenFile.env} (a template's file) nor a template setting ${SETTINGS.consulToken.env}; with Consul ACLs the service cannot read the catalog or write its KV prefix`,
      );
    }
    if (settingIn(task, SETTINGS.store) === 'vault') {
      problems.push(...vaultTokenProblems(task));
      if (!task.env.has(SETTINGS.vaultAddress.env))
        problems.push(
          `task "${task.name}": ${SETTINGS.store.env}=vault but ${SETTINGS.vaultAddress.env} is not set (Nomad injects the token, not the address)`,
        );
    }
  }
  return problems;
}

/** A path in the task's secrets folder, without it (`${NOMAD_SECRETS_DIR}/x` and `secrets/x` → `x`); else the path. */
/** How the task gets its Vault token: a file Nomad's vault block writes (followed, change_mode "noop"), or the environment. */
function vaultTokenProblems(task: TaskModel): string[] {
  const problems: string[] = [];
  const vault = bodies(task.raw.vault)[0];
  const vaultTokenFile = task.env.get(SETTINGS.vaultTokenFile.env);
  if (vaultTokenFile !== undefined) {
    if (vault === undefined || vault.disable_file === true || vault.file === false)
      problems.push(
        `task "${task.name}": ${SETTINGS.vaultTokenFile.env} is set, but no vault block writes secrets/vault_token (a vault block without disable_file)`,
      );
    else if (secretsPath(vaultTokenFile) !== 'vault_token')
      problems.push(
        `task "${task.name}": ${SETTINGS.vaultTokenFile.env} is "${vaultTokenFile}", but Nomad writes the Vault token to \${NOMAD_SECRETS_DIR}/vault_token`,
      );
    else if ((vault.change_mode ?? 'restart') !== 'noop')
      problems.push(
        `task "${task.name}": the vault block has change_mode "${text(vault.change_mode ?? 'restart')}"; use "noop": the process re-reads ${SETTINGS.vaultTokenFile.env}, and a restart aborts orders in flight`,
      );
  } else {
    const tokenFromVaultBlock = vault !== undefined && vault.env !== false;
    if (!tokenFromVaultBlock && !task.templateEnv.includes(SETTINGS.vaultToken.env)) {
      problems.push(
        `task "${task.name}": ${SETTINGS.store.env}=vault needs ${SETTINGS.vaultTokenFile.env} or ${SETTINGS.vaultToken.env}, but the task has neither a vault block that provides one nor a template that renders it`,
      );
    }
  }
  return problems;
}

function secretsPath(path: string): string {
  return path.replace(/^\$\{NOMAD_SECRETS_DIR\}\//, '').replace(/^(?:\.\/)?secrets\//, '');
}

function checkJob(job: JobModel, hasAdminRoute: (path: string) => boolean): string[] {
  return [
    ...checkJobEnv(job, serviceEnvNames()),
    ...checkJobPorts(job),
    ...checkJobServices(job, hasAdminRoute),
    ...checkJobShutdown(job),
    ...checkJobSecrets(job),
  ];
}

/**
 * The sink-only job (nomad/consul-acme-sinks.nomad.hcl): a system job in CONSUL_ACME_MODE=sinks on
 * the proxy's nodes, with an admin port and no challenge port, at least one sink whose folders are
 * host volumes mounted at the same path, health checks on admin paths, no secret in the file, a
 * Vault token for the Vault store, and time to finish a push when stopped.
 */
function checkSinksJob(job: JobModel, hasAdminRoute: (path: string) => boolean): string[] {
  const problems: string[] = [...checkJobEnv(job, serviceEnvNames())];
  const who = `sink-only job "${job.name}"`;
  if (job.raw.type !== 'system')
    problems.push(
      `${who}: type is "${text(job.raw.type) || 'service'}" but must be "system", one instance on every proxy node`,
    );
  const adminListener = LISTENERS.find((l) => l.name === 'admin')!;
  for (const group of job.groups) {
    const ports = new Map(labeled(group.network?.port));
    if (ports.has('challenge'))
      problems.push(
        `group "${group.name}": port "challenge" is not needed: a sink-only instance answers no challenges`,
      );
    const admin = ports.get('admin');
    if (!admin) problems.push(`group "${group.name}": network has no port "admin" (for ${adminListener.portEnv})`);
    else if (admin.static !== undefined)
      problems.push(`group "${group.name}": port "admin" is static (${text(admin.static)}); use a dynamic port`);
    for (const task of group.tasks) {
      if (settingIn(task, SETTINGS.mode) !== 'sinks')
        problems.push(
          `task "${task.name}": ${SETTINGS.mode.env} must be "sinks", or the task would issue certificates`,
        );
      if (task.env.get(adminListener.portEnv) !== '${NOMAD_PORT_admin}')
        problems.push(`task "${task.name}": ${adminListener.portEnv} must be "\${NOMAD_PORT_admin}"`);
      if (!strings(task.dockerConfig?.ports).includes('admin'))
        problems.push(`task "${task.name}": docker config ports does not publish "admin"`);
      const sinkPaths: Array<[string, string | undefined]> = [
        [SETTINGS.haproxyDir.env, settingIn(task, SETTINGS.haproxyDir)],
        [
          SETTINGS.haproxyCrtList.env,
          (() => {
            const list = settingIn(task, SETTINGS.haproxyCrtList);
            return list === undefined ? undefined : posix.dirname(list);
          })(),
        ],
        [
          SETTINGS.haproxySocket.env,
          (() => {
            const socket = settingIn(task, SETTINGS.haproxySocket);
            return socket === undefined ? undefined : posix.dirname(socket);
          })(),
        ],
        [SETTINGS.traefikDir.env, settingIn(task, SETTINGS.traefikDir)],
      ];
      if (sinkPaths.every(([, path]) => path === undefined) && settingIn(task, SETTINGS.hookCommand) === undefined)
        problems.push(
          `task "${task.name}": no sink is configured (${SETTINGS.haproxyDir.env}, ${SETTINGS.traefikDir.env} or ${SETTINGS.hookCommand.env})`,
        );
      for (const [env, path] of sinkPaths) {
        if (path === undefined) continue;
        const mount = task.volumeMounts.find((m) => path === m.destination || path.startsWith(`${m.destination}/`));
        if (!mount)
          problems.push(
            `task "${task.name}": ${env} is under ${path}, which no volume_mount brings in from the node, so the proxy would never see it`,
          );
        else if (!group.volumes.has(mount.volume))
          problems.push(`task "${task.name}": volume_mount "${mount.volume}" names no volume of group "${group.name}"`);
      }
      const secretEnvs = (Object.values(SETTINGS) as SettingSpec<unknown>[])
        .filter((spec) => spec.secret)
        .map((spec) => spec.env);
      for (const env of secretEnvs)
        if (task.env.has(env)) problems.push(`task "${task.name}": ${env} is a secret but is written in env {}`);
      if (settingIn(task, SETTINGS.store) === 'vault') {
        problems.push(...vaultTokenProblems(task));
        if (!task.env.has(SETTINGS.vaultAddress.env))
          problems.push(`task "${task.name}": ${SETTINGS.store.env}=vault but ${SETTINGS.vaultAddress.env} is not set`);
      }
      const raw = task.raw.kill_timeout;
      const killMs = typeof raw === 'string' ? parseDurationMs(raw) : undefined;
      if (killMs === undefined || killMs <= DEFAULT_SINK_STOP_TIMEOUT_MS)
        problems.push(
          `task "${task.name}": kill_timeout ${typeof raw === 'string' ? `"${raw}"` : 'is unset'} must exceed the sinks' stop timeout (${DEFAULT_SINK_STOP_TIMEOUT_MS} ms)`,
        );
      for (const service of [...group.services, ...task.services]) {
        const name = text(service.name);
        if (name === SETTINGS.serviceName.default)
          problems.push(`Nomad service "${name}" has the name the issuing instances register under`);
        for (const tag of strings(service.tags))
          if (tag.startsWith(SETTINGS.fabioTagPrefix.default))
            problems.push(
              `Nomad service "${name}" carries the Fabio route tag "${tag}"; nothing routes to a sink-only instance`,
            );
        for (const check of bodies(service.check)) {
          if (check.type !== 'http') continue;
          if (!hasAdminRoute(text(check.path)))
            problems.push(
              `Nomad service "${name}": check "${text(check.name)}" requests ${text(check.path)}, which the admin server does not serve`,
            );
          if ((check.port ?? service.port) !== 'admin')
            problems.push(`Nomad service "${name}": check "${text(check.name)}" is not on the admin port`);
        }
      }
    }
  }
  return problems;
}

/** The policy grants exactly the expected paths and capabilities: nothing missing, nothing wider, no sudo. */
function checkVaultPolicy(policy: Obj, expected: readonly VaultRule[], who: string): string[] {
  const problems: string[] = [];
  for (const key of Object.keys(policy))
    if (key !== 'path') problems.push(`${who}: unexpected top-level "${key}" (only path rules are expected)`);
  const granted = new Map<string, Set<string>>();
  for (const [path, body] of labeled(policy.path)) {
    const caps = granted.get(path) ?? new Set<string>();
    for (const cap of strings(body.capabilities)) caps.add(cap);
    granted.set(path, caps);
  }
  for (const rule of expected) {
    const caps = granted.get(rule.path);
    if (!caps) {
      problems.push(
        `${who}: no rule for path "${rule.path}"; it needs [${rule.capabilities.join(', ')}] because ${rule.why}`,
      );
      continue;
    }
    for (const cap of rule.capabilities)
      if (!caps.has(cap)) problems.push(`${who}: path "${rule.path}" lacks "${cap}", needed because ${rule.why}`);
    for (const cap of caps) {
      if (!(rule.capabilities as readonly string[]).includes(cap))
        problems.push(
          `${who}: path "${rule.path}" grants "${cap}", which is not needed (needed: ${rule.capabilities.join(', ')})`,
        );
    }
  }
  const expectedPaths = new Set(expected.map((r) => r.path));
  for (const [path, caps] of granted) {
    if (caps.has('sudo') && !expectedPaths.has(path))
      problems.push(`${who}: path "${path}" grants "sudo"; nothing needs sudo`);
    if (expectedPaths.has(path) || (caps.size === 1 && caps.has('deny'))) continue;
    const wildcard = path.includes('*') || path.includes('+');
    problems.push(
      wildcard
        ? `${who}: path "${path}" grants [${[...caps].join(', ')}] through a wildcard wider than the paths that are needed (${[...expectedPaths].join(', ')})`
        : `${who}: path "${path}" grants [${[...caps].join(', ')}] but is not a path that is needed`,
    );
  }
  return problems;
}

const CONSUL_POLICY_RANK: Record<string, number> = { deny: 0, list: 1, read: 1, write: 2 };

/** The Consul policy grants the rules consulRules() computes, at the right level, and nothing else. */
function checkConsulPolicy(policy: Obj, expected: readonly ConsulRule[]): string[] {
  const problems: string[] = [];
  const granted = new Map<string, string>();
  for (const [resource, value] of Object.entries(policy)) {
    if (typeof value === 'string')
      granted.set(`${resource} ""`, value); // acl = "write", operator = "read", ...
    else for (const [name, body] of labeled(value)) granted.set(`${resource} "${name}"`, text(body.policy));
  }
  const wanted = new Set<string>();
  for (const rule of expected) {
    const key = `${rule.resource} "${rule.name}"`;
    wanted.add(key);
    const policyGranted = granted.get(key);
    if (policyGranted === undefined) {
      problems.push(`consul policy: no ${key} { policy = "${rule.policy}" } rule; it is needed because ${rule.why}`);
    } else if ((CONSUL_POLICY_RANK[policyGranted] ?? -1) < CONSUL_POLICY_RANK[rule.policy]!) {
      problems.push(`consul policy: ${key} is "${policyGranted}" but "${rule.policy}" is needed because ${rule.why}`);
    } else if ((CONSUL_POLICY_RANK[policyGranted] ?? 99) > CONSUL_POLICY_RANK[rule.policy]!) {
      problems.push(`consul policy: ${key} is "${policyGranted}" where "${rule.policy}" is enough`);
    }
  }
  for (const [key, level] of granted) {
    if (!wanted.has(key) && level !== 'deny')
      problems.push(`consul policy: ${key} grants "${level}", which consul-acme does not need`);
  }
  return problems;
}

/** `key = value` lines of a Java-style properties file (no continuation lines in ours). */
function readProperties(text: string): Map<string, string> {
  const props = new Map<string, string>();
  for (const line of text.split('\n')) {
    const trimmed = line.trim();
    if (trimmed === '' || trimmed.startsWith('#') || trimmed.startsWith('!')) continue;
    const match = /^([^=:\s]+)\s*[=:]\s*(.*)$/.exec(trimmed);
    if (match) props.set(match[1]!, match[2]!.trim());
  }
  return props;
}

/** `a=b;c=d` options of one Fabio listener or source. */
function fabioOptions(spec: string): Map<string, string> {
  return new Map(
    spec
      .split(';')
      .map((part) => part.trim())
      .filter((part) => part.includes('='))
      .map((part): [string, string] => [part.slice(0, part.indexOf('=')), part.slice(part.indexOf('=') + 1)]),
  );
}

/** Fabio reads the certificates where the store writes them, serves them strictly on :443, routes :80 plainly, and shares the tag prefix. */
function checkFabioProperties(text: string, expected: { certSource: string; fabioTagPrefix: string }): string[] {
  const problems: string[] = [];
  const props = readProperties(text);
  const sources = (props.get('proxy.cs') ?? '').split(',').map(fabioOptions);
  const source = sources.find((s) => s.get('type') === 'vault' && s.get('cert') === expected.certSource);
  if (!source) {
    problems.push(
      `fabio.properties: proxy.cs has no vault source with cert=${expected.certSource} (where consul-acme writes; found "${props.get('proxy.cs') ?? ''}")`,
    );
  }
  const listeners = (props.get('proxy.addr') ?? '')
    .split(',')
    .map((spec) => ({ address: spec.split(';')[0]!.trim(), options: fabioOptions(spec) }));
  const https = listeners.find((l) => l.options.get('proto') === 'https');
  if (!https) problems.push('fabio.properties: proxy.addr has no https listener');
  else {
    const csName = source?.get('cs');
    if (csName === undefined || https.options.get('cs') !== csName)
      problems.push(
        `fabio.properties: the https listener ${https.address} does not use the vault certificate source (cs=${csName ?? '?'})`,
      );
    if (https.options.get('strictmatch') !== 'true')
      problems.push(
        `fabio.properties: the https listener ${https.address} lacks strictmatch=true, so an unknown name gets the alphabetically first certificate`,
      );
  }
  const http = listeners.find((l) => /(^|:)80$/.test(l.address) && (l.options.get('proto') ?? 'http') === 'http');
  if (!http)
    problems.push(
      'fabio.properties: proxy.addr has no plain http listener on :80, where the CA sends HTTP-01 requests',
    );
  const tagPrefix = props.get('registry.consul.tagprefix') ?? 'urlprefix-';
  if (tagPrefix !== expected.fabioTagPrefix) {
    problems.push(
      `fabio.properties: registry.consul.tagprefix is "${tagPrefix}" but ${SETTINGS.fabioTagPrefix.env} is "${expected.fabioTagPrefix}"; the challenge routes would be ignored`,
    );
  }
  const status = props.get('registry.consul.service.status');
  if (
    status !== undefined &&
    !status
      .split(',')
      .map((s) => s.trim())
      .includes('passing')
  ) {
    problems.push(`fabio.properties: registry.consul.service.status "${status}" does not include passing`);
  }
  return problems;
}

interface DockerInstruction {
  op: string;
  args: string;
}

/** Dockerfile instructions, continuation lines joined, comments dropped. */
function readDockerfile(text: string): DockerInstruction[] {
  const lines = text.split('\n').filter((line) => !/^\s*#/.test(line));
  const joined = lines.join('\n').replace(/\\\n/g, ' ');
  return joined
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '')
    .map((line) => {
      const space = line.search(/\s/);
      return space < 0
        ? { op: line.toUpperCase(), args: '' }
        : { op: line.slice(0, space).toUpperCase(), args: line.slice(space).trim() };
    });
}

/** Multi-stage, non-root, production dependencies only, an entry point the build produces, the right ports and env names. */
function checkDockerfile(
  text: string,
  ctx: { fileExists: (path: string) => boolean; hasAdminRoute: (path: string) => boolean; known: ReadonlySet<string> },
): string[] {
  const problems: string[] = [];
  const instructions = readDockerfile(text);
  const froms = instructions.filter((i) => i.op === 'FROM');
  if (froms.length < 2)
    problems.push(
      `Dockerfile: ${froms.length} FROM; build in one stage and copy the result into a clean runtime stage`,
    );
  const lastFrom = instructions.map((i) => i.op).lastIndexOf('FROM');
  const runtime = instructions.slice(lastFrom + 1);

  const user = runtime
    .filter((i) => i.op === 'USER')
    .at(-1)
    ?.args.split(':')[0];
  if (user === undefined || user === 'root' || user === '0')
    problems.push('Dockerfile: the runtime stage runs as root; add USER node');

  const omitsDev = instructions.some((i) => i.op === 'RUN' && /npm (prune|ci)\b[^&|;]*--omit=dev/.test(i.args));
  if (!omitsDev)
    problems.push(
      'Dockerfile: no `npm prune --omit=dev` (or `npm ci --omit=dev`); dev dependencies would ship in the image',
    );

  const entry = runtime.filter((i) => i.op === 'ENTRYPOINT').at(-1);
  let entryArgs: unknown;
  try {
    entryArgs = entry ? JSON.parse(entry.args) : undefined;
  } catch {
    entryArgs = undefined;
  }
  const script = strings(entryArgs).find((arg) => arg.endsWith('.js'));
  if (!script)
    problems.push(
      'Dockerfile: no exec-form ENTRYPOINT running a .js file (use ["node","dist/src/main.js"] so signals reach node)',
    );
  else if (!ctx.fileExists(script))
    problems.push(`Dockerfile: ENTRYPOINT runs ${script}, which npm run build does not produce`);

  const copies = runtime.filter((i) => i.op === 'COPY').map((i) => i.args);
  for (const needed of ['dist/src', 'node_modules', 'package.json']) {
    if (
      !copies.some(
        (args) => args.includes('--from=') && args.split(/\s+/).some((word) => word.replace(/^\/app\//, '') === needed),
      )
    ) {
      problems.push(`Dockerfile: the runtime stage does not copy ${needed} from the build stage`);
    }
  }

  const exposed = new Set(
    runtime.filter((i) => i.op === 'EXPOSE').flatMap((i) => i.args.split(/\s+/).map((p) => Number(p.split('/')[0]))),
  );
  for (const listener of LISTENERS) {
    if (!exposed.has(listener.defaultPort))
      problems.push(`Dockerfile: EXPOSE lacks ${listener.defaultPort}, the default ${listener.portEnv}`);
  }
  for (const port of exposed) {
    if (!LISTENERS.some((l) => l.defaultPort === port))
      problems.push(`Dockerfile: EXPOSE ${port} is not a port the service listens on by default`);
  }

  for (const env of runtime.filter((i) => i.op === 'ENV')) {
    const name = /^([A-Za-z_][A-Za-z0-9_]*)/.exec(env.args)?.[1] ?? '';
    if (!ctx.known.has(name) && !isPlatformEnv(name))
      problems.push(`Dockerfile: ENV ${name} is not a variable consul-acme reads`);
  }

  const healthcheck = runtime.find((i) => i.op === 'HEALTHCHECK');
  if (healthcheck) {
    const path = /(\/health\/[A-Za-z]+)/.exec(healthcheck.args)?.[1];
    if (path === undefined || !ctx.hasAdminRoute(path))
      problems.push(
        `Dockerfile: HEALTHCHECK requests ${path ?? 'no /health path'}, which the admin server does not serve`,
      );
  }
  return problems;
}

/** What the Dockerfile copies from the context is not ignored; host build output is. */
function checkDockerignore(ignoreText: string, dockerfileText: string): string[] {
  const problems: string[] = [];
  const patterns = ignoreText
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'))
    .map((l) => l.replace(/^\/+|\/+$/g, ''));
  const ignored = (path: string): boolean =>
    patterns.some((pattern) => {
      if (pattern.startsWith('!')) return false;
      const regex = new RegExp(
        `^${pattern
          .replace(/[.+^${}()|[\]\\]/g, '\\$&')
          .replace(/\*/g, '[^/]*')
          .replace(/\?/g, '[^/]')}(/.*)?$`,
      );
      return regex.test(path);
    });
  for (const copy of readDockerfile(dockerfileText).filter((i) => i.op === 'COPY' && !i.args.includes('--from='))) {
    const words = copy.args.split(/\s+/).filter((w) => !w.startsWith('--'));
    for (const source of words.slice(0, -1)) {
      const path = source.replace(/^\.\//, '').replace(/\/+$/, '');
      if (ignored(path)) problems.push(`.dockerignore excludes ${path}, which the Dockerfile copies from the context`);
    }
  }
  for (const mustIgnore of ['node_modules', 'dist']) {
    if (!ignored(mustIgnore))
      problems.push(`.dockerignore does not exclude ${mustIgnore}; the host's copy would enter the build context`);
  }
  return problems;
}

// ---------------------------------------------------------------------------------------------
// Fixtures

let adminServer: FastifyInstance;
const hasAdminRoute = (path: string): boolean => adminServer.hasRoute({ method: 'GET', url: path });

before(async () => {
  adminServer = buildAdminServer({
    logger: silentLogger(),
    isLive: () => true,
    isReady: () => true,
    status: () => {
      throw new Error('not used');
    },
    certificateHealth: () => ({ status: 'passing', problems: [] }),
    metrics: async () => ({ contentType: 'text/plain', body: '' }),
  });
  await adminServer.ready();
});

after(async () => {
  await adminServer.close();
});

const original = (name: keyof typeof FILES): string => readRepoFile(FILES[name]);

/** Replaces `from` by `to`, failing if `from` is not there: a mutation that changes nothing proves nothing. */
function mutate(text: string, from: string | RegExp, to: string): string {
  const changed = text.replace(from, to);
  assert.notEqual(changed, text, `the mutation ${String(from)} applies`);
  return changed;
}

async function jobProblems(text: string): Promise<string[]> {
  return checkJob(readJob(await parseHcl(FILES.job, text)), hasAdminRoute);
}

async function sinksJobProblems(text: string): Promise<string[]> {
  return checkSinksJob(readJob(await parseHcl(FILES.sinksJob, text)), hasAdminRoute);
}

async function storePolicyProblems(policyText: string, jobText = original('job')): Promise<string[]> {
  const job = readJob(await parseHcl(FILES.job, jobText));
  return checkVaultPolicy(
    await parseHcl(FILES.vaultPolicy, policyText),
    serviceVaultRules(jobVaultLayout(job)),
    'vault-policy.hcl',
  );
}

async function fabioPolicyProblems(policyText: string): Promise<string[]> {
  const job = readJob(await parseHcl(FILES.job, original('job')));
  return checkVaultPolicy(
    await parseHcl(FILES.fabioVaultPolicy, policyText),
    fabioVaultRules(jobVaultLayout(job)),
    'fabio-vault-policy.hcl',
  );
}

async function consulPolicyProblems(policyText: string, jobText = original('job')): Promise<string[]> {
  const job = readJob(await parseHcl(FILES.job, jobText));
  return checkConsulPolicy(await parseHcl(FILES.consulPolicy, policyText), consulRules(jobConsulNeeds(job)));
}

async function fabioPropertiesProblems(text: string): Promise<string[]> {
  const job = readJob(await parseHcl(FILES.job, original('job')));
  return checkFabioProperties(text, {
    certSource: fabioCertSourcePath(jobVaultLayout(job)),
    fabioTagPrefix: jobFabioTagPrefix(job),
  });
}

function dockerfileProblems(text: string, fileExists = repoFileExists): string[] {
  return checkDockerfile(text, { fileExists, hasAdminRoute, known: serviceEnvNames() });
}

function assertReported(problems: string[], expected: RegExp): void {
  assert.ok(
    problems.some((p) => expected.test(p)),
    `expected a problem matching ${String(expected)}, got:\n${problems.length ? problems.map((p) => `  - ${p}`).join('\n') : '  (none)'}`,
  );
}

// ---------------------------------------------------------------------------------------------
// Tests

describe('the contract is derived from the code', () => {
  test("every setting's env var is one the service understands", () => {
    const names = serviceEnvNames();
    for (const spec of Object.values(SETTINGS)) assert.ok(names.has(spec.env), spec.env);
  });

  test('the admin server serves the health paths the contract names, and the registration check path is one of them', () => {
    for (const path of Object.values(ADMIN_HEALTH_PATHS)) assert.ok(hasAdminRoute(path), path);
    assert.ok(hasAdminRoute(REGISTRATION_CHECK_PATH));
    assert.equal(hasAdminRoute('/healthz'), false, 'hasRoute answers false for a path the server does not serve');
  });

  test('the default Vault rules are the KV v2 paths under the default mount, prefix, account and pending paths', () => {
    assert.deepEqual(
      storeVaultRules(defaultVaultLayout()).map((r) => [r.path, [...r.capabilities]]),
      [
        ['secret/data/fabio/certs/*', ['create', 'read', 'update']],
        ['secret/metadata/fabio/certs/', ['list']],
        ['secret/metadata/fabio/certs/*', ['read', 'delete']],
        ['secret/data/consul-acme/accounts/*', ['create', 'read', 'update']],
        ['secret/data/consul-acme/pending/*', ['create', 'read', 'update']],
        ['secret/metadata/consul-acme/pending/', ['list']],
        ['secret/metadata/consul-acme/pending/*', ['delete']],
      ],
    );
    assert.equal(fabioCertSourcePath(defaultVaultLayout()), 'secret/fabio/certs');
  });

  test("the token's own rules are lookup-self, renew-self and capabilities-self, and the service needs both sets", () => {
    assert.deepEqual(
      tokenVaultRules().map((r) => [r.path, [...r.capabilities]]),
      [
        ['auth/token/lookup-self', ['read']],
        ['auth/token/renew-self', ['update']],
        ['sys/capabilities-self', ['update']],
      ],
    );
    assert.equal(
      serviceVaultRules(defaultVaultLayout()).length,
      storeVaultRules(defaultVaultLayout()).length + tokenVaultRules().length,
    );
  });

  test('the Consul rules follow the KV prefix and the service name, and drop service write without registration', () => {
    const rules = consulRules({ kvPrefix: 'acme/', serviceName: 'issuer', registerService: true });
    assert.ok(rules.some((r) => r.resource === 'key_prefix' && r.name === 'acme/' && r.policy === 'write'));
    assert.ok(rules.some((r) => r.resource === 'service' && r.name === 'issuer' && r.policy === 'write'));
    assert.equal(
      consulRules({ kvPrefix: 'acme/', serviceName: 'issuer', registerService: false }).some(
        (r) => r.resource === 'service',
      ),
      false,
    );
  });
});

describe('the real deploy files agree with the code', () => {
  test('the Nomad job sets only known env vars, wires the ports, registers once and keeps secrets out', async () => {
    assert.deepEqual(await jobProblems(original('job')), []);
  });

  test('the Nomad job has the expected shape: a service job, count from a variable defaulting to 2, staging by default', async () => {
    const parsed = await parseHcl(FILES.job, original('job'));
    const job = readJob(parsed);
    const variables = new Map(labeled(parsed.variable));
    assert.equal(job.raw.type, 'service');
    assert.equal(job.groups.length, 1);
    assert.equal(job.groups[0]!.raw.count, '${var.count}');
    assert.equal(variables.get('count')?.default, 2);
    assert.equal(variables.get('acme_directory')?.default, 'letsencrypt-staging');
    const update = bodies(job.raw.update)[0] ?? bodies(job.groups[0]!.raw.update)[0];
    assert.equal(update?.max_parallel, 1);
    assert.equal(update?.health_check, 'checks');
    assert.equal(update?.auto_revert, true);
    const task = job.groups[0]!.tasks[0]!;
    assert.equal(task.raw.driver, 'docker');
    assert.equal(task.env.get(SETTINGS.store.env), 'vault');
    assert.equal(task.env.get(SETTINGS.instanceName.env), '${NOMAD_ALLOC_ID}');
    assert.ok(bodies(task.raw.vault)[0]?.role !== undefined, 'vault block uses a workload-identity role');
    assert.equal(task.env.get(SETTINGS.vaultTokenFile.env), '${NOMAD_SECRETS_DIR}/vault_token', 'the Vault token file');
    assert.equal(
      task.env.get(SETTINGS.consulTokenFile.env),
      '${NOMAD_SECRETS_DIR}/consul_token',
      'the Consul token file',
    );
    assert.equal(bodies(task.raw.vault)[0]?.env, false, 'no VAULT_TOKEN that would go stale');
    assert.deepEqual(task.templateEnv, [], 'no token in the environment');
  });

  test('the sink-only job runs the sinks mode on every proxy node, with the sinks on host volumes and no challenge port', async () => {
    assert.deepEqual(await sinksJobProblems(original('sinksJob')), []);
    const job = readJob(await parseHcl(FILES.sinksJob, original('sinksJob')));
    const task = job.groups[0]!.tasks[0]!;
    assert.equal(job.raw.type, 'system');
    assert.equal(task.env.get(SETTINGS.mode.env), 'sinks');
    assert.equal(
      task.templateEnv.includes(SETTINGS.consulToken.env),
      false,
      'no Consul token: it never talks to Consul',
    );
  });

  test('the Fabio Vault policy grants exactly what the sink-only job needs (list and read)', async () => {
    const job = readJob(await parseHcl(FILES.sinksJob, original('sinksJob')));
    assert.deepEqual(
      checkVaultPolicy(
        await parseHcl(FILES.fabioVaultPolicy, original('fabioVaultPolicy')),
        sinkOnlyVaultRules(jobVaultLayout(job)),
        'fabio-vault-policy.hcl',
      ),
      [],
    );
  });

  test('the Vault policy grants exactly what the stores need', async () => {
    assert.deepEqual(await storePolicyProblems(original('vaultPolicy')), []);
  });

  test('the Fabio Vault policy grants list and read on the certificates only', async () => {
    assert.deepEqual(await fabioPolicyProblems(original('fabioVaultPolicy')), []);
  });

  test('the Consul policy grants exactly the rules the service needs', async () => {
    assert.deepEqual(await consulPolicyProblems(original('consulPolicy')), []);
  });

  test('fabio.properties reads the certificates where the store writes them and shares the tag prefix', async () => {
    assert.deepEqual(await fabioPropertiesProblems(original('fabioProperties')), []);
  });

  test('the Dockerfile is multi-stage, non-root, production-only, and its entry point exists after npm run build', () => {
    assert.ok(repoFileExists('dist/src/main.js'), 'dist/src/main.js exists (npm run build ran)');
    assert.deepEqual(dockerfileProblems(original('dockerfile')), []);
  });

  test('.dockerignore keeps what the Dockerfile copies and drops host build output', () => {
    assert.deepEqual(checkDockerignore(original('dockerignore'), original('dockerfile')), []);
  });
});

describe('mutated deploy files are reported', () => {
  const jobCases: Array<{
    name: string;
    from: string | RegExp;
    to: string;
    expected: RegExp;
    /** A second replacement applied after the first. */
    also?: [string, string];
  }> = [
    {
      name: 'an env var the service does not read',
      from: 'CONSUL_ACME_LOG_LEVEL = var.log_level',
      to: 'CONSUL_ACME_LOGLEVEL = var.log_level',
      expected: /env \{\} sets CONSUL_ACME_LOGLEVEL, which consul-acme does not read/,
    },
    {
      name: 'a template env var the service does not read',
      from: 'destination = "secrets/consul_token"',
      to: 'destination = "secrets/consul.env"\n        env         = true',
      expected: /no template renders that file/,
    },
    {
      name: 'an environment variable a template sets that the service does not read',
      from: '{{ .consul_token }}{{ end }}"\n        destination = "secrets/consul_token"',
      to: 'CONSUL_TOKEN={{ .consul_token }}{{ end }}"\n        destination = "secrets/consul.env"\n        env         = true',
      expected: /template with env = true sets CONSUL_TOKEN, which consul-acme does not read/,
    },
    {
      name: 'a Consul token template that restarts the task on a new token',
      from: 'destination = "secrets/consul_token"\n        change_mode = "noop"',
      to: 'destination = "secrets/consul_token"\n        change_mode = "restart"',
      expected: /renders CONSUL_HTTP_TOKEN_FILE has change_mode "restart"; use "noop"/,
    },
    {
      name: 'a vault block that restarts the task on a new token',
      from: 'env         = false\n        change_mode = "noop"',
      to: 'env         = false\n        change_mode = "restart"',
      expected: /the vault block has change_mode "restart"; use "noop"/,
    },
    {
      name: 'a Vault token file where Nomad does not write the token',
      from: '"${NOMAD_SECRETS_DIR}/vault_token"',
      to: '"${NOMAD_SECRETS_DIR}/token"',
      expected: /Nomad writes the Vault token to \$\{NOMAD_SECRETS_DIR\}\/vault_token/,
    },
    {
      name: 'a vault block that writes no token file',
      from: 'env         = false\n        change_mode = "noop"',
      to: 'env         = false\n        disable_file = true\n        change_mode = "noop"',
      expected: /no vault block writes secrets\/vault_token/,
    },
    {
      name: 'the admin port wired to the challenge port',
      from: 'CONSUL_ACME_ADMIN_PORT       = "${NOMAD_PORT_admin}"',
      to: 'CONSUL_ACME_ADMIN_PORT       = "${NOMAD_PORT_challenge}"',
      expected: /CONSUL_ACME_ADMIN_PORT is "\$\{NOMAD_PORT_challenge\}" but must be "\$\{NOMAD_PORT_admin\}"/,
    },
    {
      name: 'a hard-coded challenge port',
      from: '"${NOMAD_PORT_challenge}"',
      to: '"8080"',
      expected: /CONSUL_ACME_CHALLENGE_PORT is "8080" but must be "\$\{NOMAD_PORT_challenge\}"/,
    },
    {
      name: 'a static admin port',
      from: 'port "admin" {}',
      to: 'port "admin" { static = 8081 }',
      expected: /port "admin" is static \(8081\)/,
    },
    {
      name: 'a port docker does not publish',
      from: 'ports = ["challenge", "admin"]',
      to: 'ports = ["challenge"]',
      expected: /docker config ports does not publish "admin"/,
    },
    { name: 'bridge networking', from: 'mode = "host"', to: 'mode = "bridge"', expected: /network mode "bridge"/ },
    {
      name: 'a check path the admin server does not serve',
      from: 'path     = "/health/ready"',
      to: 'path     = "/healthz"',
      expected: /check "ready" requests \/healthz, which the admin server does not serve/,
    },
    {
      name: "a Nomad service with the process's own service name",
      from: 'name     = "consul-acme-admin"',
      to: 'name     = "consul-acme"',
      expected: /Nomad service "consul-acme" has the name the process registers itself under/,
    },
    {
      name: 'Fabio route tags on the Nomad service',
      from: 'provider = "consul"',
      to: 'provider = "consul"\n        tags     = ["urlprefix-/.well-known/acme-challenge/"]',
      expected: /carries the Fabio route tag "urlprefix-\/\.well-known\/acme-challenge\/"/,
    },
    {
      name: 'self-registration switched off',
      from: 'CONSUL_ACME_REGISTER_SERVICE = "true"',
      to: 'CONSUL_ACME_REGISTER_SERVICE = "false"',
      expected: /CONSUL_ACME_REGISTER_SERVICE is false/,
    },
    {
      name: 'a kill timeout shorter than the shutdown timeout',
      from: 'kill_timeout = "40s"',
      to: 'kill_timeout = "10s"',
      expected: /kill_timeout "10s" must exceed CONSUL_ACME_SHUTDOWN_TIMEOUT_MS \(30000 ms\)/,
    },
    {
      name: 'a Consul token written into the job',
      from: 'CONSUL_ACME_LOG_LEVEL = var.log_level',
      to: 'CONSUL_ACME_LOG_LEVEL = var.log_level\n        CONSUL_HTTP_TOKEN = "s3cr3t"',
      expected: /CONSUL_HTTP_TOKEN is a secret but is written in env \{\}/,
    },
    {
      name: 'the Vault store without a vault block',
      from: /vault \{\n\s+role\s+= var\.vault_role\n\s+env\s+= false\n\s+change_mode = "noop"\n\s+\}/,
      to: '',
      expected: /VAULT_TOKEN_FILE is set, but no vault block writes secrets\/vault_token/,
    },
    {
      name: 'the Vault store with neither a token file nor a token',
      from: /vault \{\n\s+role\s+= var\.vault_role\n\s+env\s+= false\n\s+change_mode = "noop"\n\s+\}/,
      to: '',
      expected: /CONSUL_ACME_STORE=vault needs VAULT_TOKEN_FILE or VAULT_TOKEN/,
      also: ['VAULT_TOKEN_FILE               = "${NOMAD_SECRETS_DIR}/vault_token"', ''],
    },
  ];
  for (const c of jobCases) {
    test(`the job checker reports ${c.name}`, async () => {
      const once = mutate(original('job'), c.from, c.to);
      assertReported(await jobProblems(c.also ? mutate(once, c.also[0], c.also[1]) : once), c.expected);
    });
  }

  const sinksJobCases: Array<{ name: string; from: string | RegExp; to: string; expected: RegExp }> = [
    {
      name: 'the mode left at issuer',
      from: 'CONSUL_ACME_MODE          = "sinks"',
      to: 'CONSUL_ACME_MODE          = "issuer"',
      expected: /CONSUL_ACME_MODE must be "sinks"/,
    },
    {
      name: 'a service job instead of a system job',
      from: 'type        = "system"',
      to: 'type        = "service"',
      expected: /type is "service" but must be "system"/,
    },
    {
      name: 'a challenge port it does not need',
      from: 'port "admin" {}',
      to: 'port "admin" {}\n      port "challenge" {}',
      expected: /port "challenge" is not needed/,
    },
    {
      name: 'the HAProxy folder not mounted from the node',
      from: /volume_mount \{\n\s+volume\s+= "haproxy-certs"\n\s+destination = var\.haproxy_dir\n\s+\}/,
      to: '',
      expected: /CONSUL_ACME_HAPROXY_DIR is under \/etc\/haproxy\/consul-acme, which no volume_mount brings in/,
    },
    {
      name: 'a volume_mount of a volume the group lacks',
      from: /volume "haproxy-run" \{[^}]*\}/,
      to: '',
      expected: /volume_mount "haproxy-run" names no volume of group "sinks"/,
    },
    {
      name: 'a kill timeout shorter than the sinks need',
      from: 'kill_timeout = "15s"',
      to: 'kill_timeout = "2s"',
      expected: /kill_timeout "2s" must exceed the sinks' stop timeout/,
    },
    {
      name: 'no sink at all',
      from: /CONSUL_ACME_HAPROXY_DIR\s+= var\.haproxy_dir\n\s+CONSUL_ACME_HAPROXY_SOCKET = var\.haproxy_socket/,
      to: '',
      expected: /no sink is configured/,
    },
    {
      name: 'an env var the service does not read',
      from: 'CONSUL_ACME_SINK_POLL_INTERVAL   = var.poll_interval',
      to: 'CONSUL_ACME_SINK_POLL   = var.poll_interval',
      expected: /env \{\} sets CONSUL_ACME_SINK_POLL, which consul-acme does not read/,
    },
  ];
  for (const c of sinksJobCases) {
    test(`the sink-only job checker reports ${c.name}`, async () => {
      assertReported(await sinksJobProblems(mutate(original('sinksJob'), c.from, c.to)), c.expected);
    });
  }

  const vaultCases: Array<{ name: string; from: string | RegExp; to: string; expected: RegExp }> = [
    {
      name: 'a policy without the self-check rule',
      from: /path "sys\/capabilities-self" \{[^}]*\}/,
      to: '',
      expected: /no rule for path "sys\/capabilities-self"; it needs \[update\] because the start-up self-check/,
    },
    {
      name: 'a missing metadata list rule',
      from: /path "secret\/metadata\/fabio\/certs\/" \{[^}]*\}/,
      to: '',
      expected: /no rule for path "secret\/metadata\/fabio\/certs\/"; it needs \[list\]/,
    },
    {
      name: 'a grant on secret/*',
      from: '# Certificates:',
      to: 'path "secret/*" {\n  capabilities = ["create", "read", "update", "delete", "list"]\n}\n\n# Certificates:',
      expected:
        /path "secret\/\*" grants \[create, read, update, delete, list\] through a wildcard wider than the paths that are needed/,
    },
    {
      name: 'sudo on a needed path',
      from: 'capabilities = ["read", "delete"]',
      to: 'capabilities = ["read", "delete", "sudo"]',
      expected: /path "secret\/metadata\/fabio\/certs\/\*" grants "sudo", which is not needed/,
    },
    {
      name: 'sudo on a path nobody needs',
      from: '# Certificates:',
      to: 'path "sys/mounts" {\n  capabilities = ["sudo", "read"]\n}\n\n# Certificates:',
      expected: /path "sys\/mounts" grants "sudo"; nothing needs sudo/,
    },
    {
      name: 'a missing delete on certificate metadata',
      from: 'capabilities = ["read", "delete"]',
      to: 'capabilities = ["read"]',
      expected: /path "secret\/metadata\/fabio\/certs\/\*" lacks "delete", needed because retiring a certificate/,
    },
    {
      name: 'a missing pending-order data rule',
      from: /path "secret\/data\/consul-acme\/pending\/\*" \{[^}]*\}/,
      to: '',
      expected:
        /no rule for path "secret\/data\/consul-acme\/pending\/\*"; it needs \[create, read, update\] because a pending order/,
    },
    {
      name: 'a pending-order metadata rule that grants read as well as delete',
      from: /(path "secret\/metadata\/consul-acme\/pending\/\*" \{\s*capabilities = )\["delete"\]/,
      to: '$1["read", "delete"]',
      expected: /path "secret\/metadata\/consul-acme\/pending\/\*" grants "read", which is not needed/,
    },
    {
      name: 'a pending-order metadata rule without delete',
      from: /(path "secret\/metadata\/consul-acme\/pending\/\*" \{\s*capabilities = )\["delete"\]/,
      to: '$1["list"]',
      expected:
        /path "secret\/metadata\/consul-acme\/pending\/\*" lacks "delete", needed because a completed pending order/,
    },
    {
      name: 'the list rule written without the trailing slash Vault checks',
      from: 'path "secret/metadata/fabio/certs/" {',
      to: 'path "secret/metadata/fabio/certs" {',
      expected: /no rule for path "secret\/metadata\/fabio\/certs\/"/,
    },
  ];
  for (const c of vaultCases) {
    test(`the Vault policy checker reports ${c.name}`, async () => {
      assertReported(await storePolicyProblems(mutate(original('vaultPolicy'), c.from, c.to)), c.expected);
    });
  }

  test('the Vault policy checker reports a policy that no longer matches a job with another prefix', async () => {
    const job = mutate(original('job'), 'default     = "fabio/certs"', 'default     = "certs/public"');
    assertReported(
      await storePolicyProblems(original('vaultPolicy'), job),
      /no rule for path "secret\/data\/certs\/public\/\*"/,
    );
  });

  test('the Vault policy checker reports a policy that no longer matches a job with another pending path', async () => {
    const job = mutate(original('job'), 'default     = "consul-acme/pending"', 'default     = "acme/in-flight"');
    const problems = await storePolicyProblems(original('vaultPolicy'), job);
    assertReported(problems, /no rule for path "secret\/data\/acme\/in-flight\/\*"/);
    assertReported(
      problems,
      /path "secret\/data\/consul-acme\/pending\/\*" grants \[create, read, update\] through a wildcard/,
    );
  });

  test('the job checker reports a pending-path setting the job does not pass on', async () => {
    const job = mutate(
      original('job'),
      'CONSUL_ACME_VAULT_PENDING_PATH = var.vault_pending_path',
      'CONSUL_ACME_VAULT_PENDINGPATH = var.vault_pending_path',
    );
    assertReported(
      await jobProblems(job),
      /env \{\} sets CONSUL_ACME_VAULT_PENDINGPATH, which consul-acme does not read/,
    );
  });

  test('the Fabio Vault policy checker reports write access', async () => {
    const text = mutate(original('fabioVaultPolicy'), 'capabilities = ["read"]', 'capabilities = ["read", "update"]');
    assertReported(
      await fabioPolicyProblems(text),
      /fabio-vault-policy\.hcl: path "secret\/data\/fabio\/certs\/\*" grants "update", which is not needed/,
    );
  });

  const consulCases: Array<{ name: string; from: string | RegExp; to: string; expected: RegExp }> = [
    {
      name: 'a policy without session write',
      from: /session_prefix "" \{[^}]*\}/,
      to: '',
      expected: /no session_prefix "" \{ policy = "write" \} rule; it is needed because locks/,
    },
    {
      name: 'session read where write is needed',
      from: /(session_prefix "" \{\s*policy = )"write"/,
      to: '$1"read"',
      expected: /session_prefix "" is "read" but "write" is needed/,
    },
    {
      name: 'a policy without the service registration write',
      from: /service "consul-acme" \{[^}]*\}/,
      to: '',
      expected: /no service "consul-acme" \{ policy = "write" \} rule/,
    },
    {
      name: 'write on every key',
      from: 'key_prefix "consul-acme/" {',
      to: 'key_prefix "" {\n  policy = "write"\n}\n\nkey_prefix "consul-acme/" {',
      expected: /key_prefix "" grants "write", which consul-acme does not need/,
    },
    {
      name: 'service write on every service',
      from: /(service_prefix "" \{\s*policy = )"read"/,
      to: '$1"write"',
      expected: /service_prefix "" is "write" where "read" is enough/,
    },
    {
      name: 'operator access',
      from: 'node_prefix "" {',
      to: 'operator = "write"\n\nnode_prefix "" {',
      expected: /operator "" grants "write", which consul-acme does not need/,
    },
  ];
  for (const c of consulCases) {
    test(`the Consul policy checker reports ${c.name}`, async () => {
      assertReported(await consulPolicyProblems(mutate(original('consulPolicy'), c.from, c.to)), c.expected);
    });
  }

  test('the Consul policy checker reports a policy that no longer matches a job with another KV prefix', async () => {
    const job = mutate(original('job'), 'default     = "consul-acme/"', 'default     = "acme/"');
    assertReported(
      await consulPolicyProblems(original('consulPolicy'), job),
      /no key_prefix "acme\/" \{ policy = "write" \} rule/,
    );
  });

  const fabioCases: Array<{ name: string; from: string | RegExp; to: string; expected: RegExp }> = [
    {
      name: "a tag prefix that differs from the service's",
      from: 'registry.consul.tagprefix = urlprefix-',
      to: 'registry.consul.tagprefix = fabio-',
      expected: /registry\.consul\.tagprefix is "fabio-" but CONSUL_ACME_FABIO_TAG_PREFIX is "urlprefix-"/,
    },
    {
      name: 'an https listener without strictmatch',
      from: ';strictmatch=true',
      to: '',
      expected: /lacks strictmatch=true/,
    },
    {
      name: 'a certificate source on another path',
      from: 'cert=secret/fabio/certs',
      to: 'cert=secret/data/fabio/certs',
      expected: /proxy\.cs has no vault source with cert=secret\/fabio\/certs/,
    },
    { name: 'no plain listener on :80', from: ':80;proto=http,', to: '', expected: /no plain http listener on :80/ },
  ];
  for (const c of fabioCases) {
    test(`the fabio.properties checker reports ${c.name}`, async () => {
      assertReported(await fabioPropertiesProblems(mutate(original('fabioProperties'), c.from, c.to)), c.expected);
    });
  }

  const dockerCases: Array<{ name: string; from: string | RegExp; to: string; expected: RegExp }> = [
    {
      name: 'a single stage',
      from: /^FROM node:20-bookworm-slim AS build[\s\S]*?(?=^FROM )/m,
      to: '',
      expected: /1 FROM; build in one stage/,
    },
    { name: 'no USER', from: 'USER node\n', to: '', expected: /runtime stage runs as root/ },
    { name: 'USER root', from: 'USER node\n', to: 'USER root\n', expected: /runtime stage runs as root/ },
    {
      name: 'dev dependencies kept',
      from: ' \\\n && npm prune --omit=dev --no-audit --no-fund',
      to: '',
      expected: /no `npm prune --omit=dev`/,
    },
    {
      name: 'an entry point the build does not produce',
      from: 'dist/src/main.js"]',
      to: 'dist/main.js"]',
      expected: /ENTRYPOINT runs dist\/main\.js, which npm run build does not produce/,
    },
    {
      name: 'a runtime stage without package.json',
      from: 'COPY --from=build /app/package.json ./package.json\n',
      to: '',
      expected: /does not copy package\.json from the build stage/,
    },
    {
      name: 'an ENV the service does not read',
      from: 'ENV CONSUL_ACME_FILE_STORE_DIR=/data',
      to: 'ENV CONSUL_ACME_DATA_DIR=/data',
      expected: /ENV CONSUL_ACME_DATA_DIR is not a variable consul-acme reads/,
    },
    {
      name: 'an exposed port that is not a default',
      from: 'EXPOSE 8080 8081',
      to: 'EXPOSE 8080 9090',
      expected: /EXPOSE lacks 8081/,
    },
    {
      name: 'a HEALTHCHECK on a path the admin server does not serve',
      from: "'/health/live'",
      to: "'/health/alive'",
      expected: /HEALTHCHECK requests \/health\/alive/,
    },
  ];
  for (const c of dockerCases) {
    test(`the Dockerfile checker reports ${c.name}`, () => {
      assertReported(dockerfileProblems(mutate(original('dockerfile'), c.from, c.to)), c.expected);
    });
  }

  test('the .dockerignore checker reports an excluded source directory and an included node_modules', () => {
    const problems = checkDockerignore(
      mutate(mutate(original('dockerignore'), /^node_modules\n/m, ''), /^test\n/m, 'test\nsrc\n'),
      original('dockerfile'),
    );
    assertReported(problems, /\.dockerignore excludes src, which the Dockerfile copies/);
    assertReported(problems, /\.dockerignore does not exclude node_modules/);
  });
});
