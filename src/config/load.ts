/**
 * Builds the effective configuration: defaults, then the optional JSON config file, then the
 * environment. Every problem is collected and reported together; nothing falls back silently.
 */
import { accessSync, constants, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { BUDGET_RETENTION_MS } from '../domain/budget.js';
import { ConfigError } from '../errors.js';
import { isRuntimeArgument } from '../sinks/haproxy-runtime.js';
import { CONFIG_FILE_ENV, SETTINGS, type Config, type SettingSpec } from './schema.js';

export interface LoadConfigInput {
  env: Record<string, string | undefined>;
  /** `--config <file>`; wins over CONSUL_ACME_CONFIG_FILE. */
  configFile?: string | undefined;
  readFile?: (path: string) => string;
  isReadable?: (path: string) => boolean;
}

const settingsList = Object.values(SETTINGS) as SettingSpec<unknown>[];

function defaultIsReadable(path: string): boolean {
  try {
    accessSync(path, constants.R_OK);
    return true;
  } catch {
    return false;
  }
}

function readConfigFile(path: string, readFile: (p: string) => string, problems: string[]): Record<string, unknown> {
  let body: string;
  try {
    body = readFile(path);
  } catch (err) {
    problems.push(`config file ${path}: cannot be read (${(err as Error).message})`);
    return {};
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(body);
  } catch (err) {
    problems.push(`config file ${path}: not valid JSON (${(err as Error).message})`);
    return {};
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    problems.push(`config file ${path}: must be a JSON object of settings`);
    return {};
  }
  const known = new Set(settingsList.map((s) => s.key));
  for (const key of Object.keys(parsed)) {
    if (!known.has(key)) problems.push(`config file ${path}: unknown setting "${key}"`);
  }
  return parsed as Record<string, unknown>;
}

export function loadConfig(input: LoadConfigInput): Config {
  const { env } = input;
  const readFile = input.readFile ?? ((p: string) => readFileSync(p, 'utf8'));
  const isReadable = input.isReadable ?? defaultIsReadable;
  const problems: string[] = [];

  const configFile = input.configFile ?? (env[CONFIG_FILE_ENV]?.trim() || undefined);
  const fromFile = configFile ? readConfigFile(configFile, readFile, problems) : {};

  const values: Record<string, unknown> = {};
  for (const spec of settingsList) {
    const envRaw = env[spec.env];
    const source =
      envRaw !== undefined && envRaw !== ''
        ? { raw: envRaw, where: spec.env }
        : spec.key in fromFile
          ? { raw: fromFile[spec.key], where: `${configFile}: ${spec.key}` }
          : undefined;
    if (source === undefined) {
      values[spec.key] = spec.default;
      continue;
    }
    const parsed = spec.parse(source.raw);
    if (parsed.ok) values[spec.key] = parsed.value;
    else problems.push(`${source.where} ${parsed.problem}`);
  }

  crossCheck(values as unknown as Config, problems, isReadable);
  if (problems.length > 0) throw new ConfigError(problems);
  return Object.freeze({ ...values, configFile }) as Config;
}

/** Rules that involve more than one setting, or the file system. */
function crossCheck(c: Config, problems: string[], isReadable: (p: string) => boolean): void {
  if ((c.eabKid === undefined) !== (c.eabHmacKey === undefined)) {
    problems.push(`${SETTINGS.eabKid.env} and ${SETTINGS.eabHmacKey.env} must be set together`);
  }
  if (c.store === 'vault' && !c.vaultToken && !c.vaultTokenFile) {
    problems.push(
      `${SETTINGS.vaultToken.env} or ${SETTINGS.vaultTokenFile.env} is required when ${SETTINGS.store.env}=vault`,
    );
  }
  for (const [cert, key] of [
    [SETTINGS.consulClientCert, SETTINGS.consulClientKey],
    [SETTINGS.vaultClientCert, SETTINGS.vaultClientKey],
  ] as const) {
    if ((c[cert.key as 'consulClientCert'] === undefined) !== (c[key.key as 'consulClientKey'] === undefined))
      problems.push(`${cert.env} and ${key.env} must be set together`);
  }
  if (typeof c.acmePollMinMs === 'number' && typeof c.acmePollMaxMs === 'number' && c.acmePollMinMs > c.acmePollMaxMs) {
    problems.push(
      `${SETTINGS.acmePollMinMs.env} (${c.acmePollMinMs}) must not exceed ${SETTINGS.acmePollMaxMs.env} (${c.acmePollMaxMs})`,
    );
  }
  if (c.challengePort !== 0 && c.challengePort === c.adminPort) {
    problems.push(`${SETTINGS.challengePort.env} and ${SETTINGS.adminPort.env} must differ (both ${c.challengePort})`);
  }
  if (
    typeof c.vaultPrefix === 'string' &&
    typeof c.vaultAccountPath === 'string' &&
    (c.vaultAccountPath === c.vaultPrefix || c.vaultAccountPath.startsWith(`${c.vaultPrefix}/`))
  ) {
    problems.push(
      `${SETTINGS.vaultAccountPath.env} must not be under ${SETTINGS.vaultPrefix.env}: Fabio would try to load the account key as a certificate`,
    );
  }
  if (
    typeof c.vaultPrefix === 'string' &&
    typeof c.vaultPendingPath === 'string' &&
    (c.vaultPendingPath === c.vaultPrefix || c.vaultPendingPath.startsWith(`${c.vaultPrefix}/`))
  ) {
    problems.push(
      `${SETTINGS.vaultPendingPath.env} must not be under ${SETTINGS.vaultPrefix.env}: Fabio would try to load the pending orders as certificates`,
    );
  }
  crossCheckSafety(c, problems);
  crossCheckSinks(c, problems);
  if (c.mode === 'sinks' && c.haproxyDir === undefined && c.traefikDir === undefined && c.hookCommand === undefined) {
    problems.push(
      `${SETTINGS.mode.env}=sinks runs only the sinks, but none is configured: set ${SETTINGS.haproxyDir.env}, ${SETTINGS.traefikDir.env} or ${SETTINGS.hookCommand.env}`,
    );
  }
  if (typeof c.sinkPollIntervalMs === 'number' && c.sinkPollIntervalMs <= 0)
    problems.push(`${SETTINGS.sinkPollIntervalMs.env} must be longer than 0`);
  for (const spec of [
    SETTINGS.caBundle,
    SETTINGS.consulCaCert,
    SETTINGS.vaultCaCert,
    SETTINGS.consulClientCert,
    SETTINGS.consulClientKey,
    SETTINGS.vaultClientCert,
    SETTINGS.vaultClientKey,
    SETTINGS.consulTokenFile,
    SETTINGS.vaultTokenFile,
  ]) {
    const path = c[spec.key as 'caBundle'];
    if (typeof path === 'string' && !isReadable(path)) problems.push(`${spec.env} ${path} is not a readable file`);
  }
}

/** The CAA check needs the pre-flight; a budget's window must fit in what the ledger keeps. */
function crossCheckSafety(c: Config, problems: string[]): void {
  if (c.preflight === false && Array.isArray(c.caaIdentities)) {
    problems.push(
      `${SETTINGS.caaIdentities.env} is set but ${SETTINGS.preflight.env} is false: the CAA check is part of the pre-flight check (set ${SETTINGS.caaIdentities.env}=off, or switch the pre-flight on)`,
    );
  }
  for (const spec of [
    SETTINGS.budgetNewOrders,
    SETTINGS.budgetRegisteredDomain,
    SETTINGS.budgetFailedAuthorizations,
    SETTINGS.budgetExactSet,
  ]) {
    const value = c[spec.key as 'budgetNewOrders'];
    if (typeof value === 'object' && value.windowMs > BUDGET_RETENTION_MS)
      problems.push(
        `${spec.env} has a window longer than 7d, but the shared budget ledger forgets events after 7 days, so the budget would not hold`,
      );
  }
}

/** The sinks' folders must not overlap the file store or each other, and HAProxy's paths must fit its runtime API. */
function crossCheckSinks(c: Config, problems: string[]): void {
  if (c.haproxyDir === undefined) {
    for (const spec of [SETTINGS.haproxyCrtList, SETTINGS.haproxySocket]) {
      if (c[spec.key as 'haproxyCrtList'] !== undefined)
        problems.push(`${spec.env} needs ${SETTINGS.haproxyDir.env} (the folder of the HAProxy sink)`);
    }
  } else {
    for (const [spec, path] of [
      [SETTINGS.haproxyDir, resolve(c.haproxyDir)],
      [SETTINGS.haproxyCrtList, c.haproxyCrtList],
    ] as const) {
      if (path !== undefined && !isRuntimeArgument(path))
        problems.push(
          `${spec.env} "${path}" cannot be named in HAProxy's runtime API (no spaces, quotes, backslashes, "#" or ";")`,
        );
    }
  }
  const folders: Array<[string, string]> = [];
  if (c.store === 'file' && typeof c.fileStoreDir === 'string')
    folders.push([SETTINGS.fileStoreDir.env, resolve(c.fileStoreDir)]);
  if (c.haproxyDir !== undefined) folders.push([SETTINGS.haproxyDir.env, resolve(c.haproxyDir)]);
  if (c.traefikDir !== undefined) folders.push([SETTINGS.traefikDir.env, resolve(c.traefikDir)]);
  for (let i = 0; i < folders.length; i++) {
    for (let j = i + 1; j < folders.length; j++) {
      const [envA, a] = folders[i]!;
      const [envB, b] = folders[j]!;
      if (a === b || a.startsWith(`${b}/`) || b.startsWith(`${a}/`))
        problems.push(`${envA} and ${envB} must be separate folders (both are under ${a.length <= b.length ? a : b})`);
    }
  }
  if (typeof c.hookTimeoutMs === 'number' && c.hookTimeoutMs <= 0)
    problems.push(`${SETTINGS.hookTimeoutMs.env} must be longer than 0`);
}

/** The effective configuration as `key  ENV  value` lines, secrets masked. For `check-config`. */
export function describeConfig(config: Config): string {
  const rows = settingsList.map((spec) => {
    const value = (config as unknown as Record<string, unknown>)[spec.key];
    const shown =
      value === undefined
        ? '(not set)'
        : spec.secret
          ? '(set, hidden)'
          : Array.isArray(value)
            ? value.join(',') || '(empty)'
            : typeof value === 'string'
              ? value
              : JSON.stringify(value);
    return [spec.key, spec.env, shown] as const;
  });
  const w0 = Math.max(...rows.map((r) => r[0].length));
  const w1 = Math.max(...rows.map((r) => r[1].length));
  const lines = rows.map(([k, e, v]) => `${k.padEnd(w0)}  ${e.padEnd(w1)}  ${v}`);
  return [`config file: ${config.configFile ?? '(none)'}`, ...lines].join('\n');
}
