/**
 * The command line: `consul-acme [--version] [--help] <command> [options]`.
 *
 * `parseCli` is pure: it never prints, exits or reads process.env (main.ts passes the environment
 * in). Usage errors come back as `{ kind: 'error', exitCode: 2 }` with a message that names the
 * offending word and ends with the usage.
 */
import { parseArgs } from 'node:util';
import { DEFAULT_ADMIN_PORT, parseDurationMs } from '../config/schema.js';
import { normalizeHostname } from '../domain/hostname.js';
import { parseRevocationReason } from '../domain/revocation.js';
import { helpText, isCommandName, usageText, type CommandName } from './help.js';

export const ADMIN_URL_ENV = 'CONSUL_ACME_ADMIN_URL';
/** The admin token `status` sends, read from the same variable the service reads. */
export const ADMIN_TOKEN_ENV = 'CONSUL_ACME_ADMIN_TOKEN';
export const DEFAULT_ADMIN_URL = `http://127.0.0.1:${DEFAULT_ADMIN_PORT}`;
export const USAGE_EXIT_CODE = 2;
/** How long `adopt`, `reissue` and `revoke` wait for the outcome unless told otherwise. */
export const DEFAULT_WAIT_MS = 5 * 60_000;

/** The operator commands, sent to the admin API. */
export type OperationName = 'adopt' | 'reissue' | 'revoke';

/** An operator command ready to send: the path, its JSON body, and how to wait for the outcome. */
export interface OperationCommand {
  kind: 'operate';
  operation: OperationName;
  path: '/adopt' | '/reissue' | '/revoke';
  body: Record<string, unknown>;
  adminUrl: string;
  adminToken: string | undefined;
  json: boolean;
  /** Wait until each request is carried out (new serial stored, adopted), up to `waitTimeoutMs`. */
  wait: boolean;
  waitTimeoutMs: number;
}

export type CliCommand =
  /** Print `text` to stdout and exit 0. */
  | { kind: 'help'; command: CommandName | undefined; text: string }
  /** Print the version and exit 0. */
  | { kind: 'version' }
  /** `sinksOnly` (present only when set) runs the sink-only mode whatever CONSUL_ACME_MODE says. */
  | { kind: 'run'; configFile: string | undefined; sinksOnly?: true }
  | { kind: 'check-config'; configFile: string | undefined }
  | { kind: 'status'; json: boolean; adminUrl: string; adminToken: string | undefined }
  | OperationCommand
  /** Print `message` (error line, blank line, usage) to stderr and exit with `exitCode`. */
  | { kind: 'error'; message: string; exitCode: typeof USAGE_EXIT_CODE };

type OptionSpec = Record<string, { type: 'boolean' | 'string'; short?: string }>;

/** parseArgs' token shape for strict: false, spelled out so the walk below is typed simply. */
type Token =
  | {
      kind: 'option';
      name: string;
      rawName: string;
      index: number;
      value?: string | undefined;
      inlineValue?: boolean | undefined;
    }
  | { kind: 'positional'; index: number; value: string }
  | { kind: 'option-terminator'; index: number };

const TOP_LEVEL_OPTIONS: OptionSpec = { help: { type: 'boolean', short: 'h' }, version: { type: 'boolean' } };

const OPERATION_OPTIONS: OptionSpec = {
  help: { type: 'boolean', short: 'h' },
  json: { type: 'boolean' },
  'admin-addr': { type: 'string' },
  'no-wait': { type: 'boolean' },
  wait: { type: 'string' },
};

const COMMAND_OPTIONS: Record<CommandName, OptionSpec> = {
  run: { help: { type: 'boolean', short: 'h' }, config: { type: 'string' }, 'sinks-only': { type: 'boolean' } },
  'check-config': { help: { type: 'boolean', short: 'h' }, config: { type: 'string' } },
  status: { help: { type: 'boolean', short: 'h' }, json: { type: 'boolean' }, 'admin-addr': { type: 'string' } },
  adopt: { ...OPERATION_OPTIONS, all: { type: 'boolean' } },
  reissue: { ...OPERATION_OPTIONS, all: { type: 'boolean' }, 'issued-before': { type: 'string' } },
  revoke: { ...OPERATION_OPTIONS, reason: { type: 'string' } },
};

/** Commands that take hostnames as positional arguments. */
const TAKES_HOSTNAMES: ReadonlySet<CommandName> = new Set<CommandName>(['adopt', 'reissue', 'revoke']);

function tokenize(args: string[], options: OptionSpec): Token[] {
  // strict: false so that we write the error messages ourselves (parseArgs' own are long and
  // suggest '--' tricks); every token is then checked against `options` below.
  return parseArgs({ args, options, strict: false, allowPositionals: true, tokens: true }).tokens;
}

function usageError(problem: string, command?: CommandName): CliCommand {
  return { kind: 'error', message: `${problem}\n\n${usageText(command)}`, exitCode: USAGE_EXIT_CODE };
}

/**
 * The admin API base URL from `--admin-addr` or the environment: an http(s) URL, or a bare
 * `host:port` taken as http. Returns it without a trailing slash, or undefined when unusable.
 */
export function normalizeAdminUrl(raw: string): string | undefined {
  const text = raw.trim();
  if (text === '') return undefined;
  const withScheme = /^[A-Za-z][A-Za-z0-9+.-]*:\/\//.test(text) ? text : `http://${text}`;
  let url: URL;
  try {
    url = new URL(withScheme);
  } catch {
    return undefined;
  }
  if ((url.protocol !== 'http:' && url.protocol !== 'https:') || url.hostname === '') return undefined;
  if (url.search !== '' || url.hash !== '' || url.username !== '' || url.password !== '') return undefined;
  return `${url.protocol}//${url.host}${url.pathname.replace(/\/+$/, '')}`;
}

/** The admin URL from `--admin-addr`, CONSUL_ACME_ADMIN_URL or the default; an error names the source. */
function adminUrlFrom(
  given: string | boolean | undefined,
  env: Readonly<Record<string, string | undefined>>,
): { ok: true; adminUrl: string } | { ok: false; problem: string } {
  const fromEnv = env[ADMIN_URL_ENV]?.trim();
  const [source, raw] =
    typeof given === 'string'
      ? ['--admin-addr', given]
      : fromEnv !== undefined && fromEnv !== ''
        ? [ADMIN_URL_ENV, fromEnv]
        : ['default', DEFAULT_ADMIN_URL];
  const adminUrl = normalizeAdminUrl(raw);
  return adminUrl === undefined
    ? { ok: false, problem: `${source}: '${raw}' is not an http(s) URL or host:port` }
    : { ok: true, adminUrl };
}

/**
 * `--issued-before`: a time (`2026-03-01`, `2026-03-01T12:00:00Z`) or an age (`30d`: issued more
 * than 30 days before `now`). Resolves the ISO time, or undefined when it is neither.
 */
export function parseIssuedBefore(text: string, now: Date): string | undefined {
  const ageMs = parseDurationMs(text);
  if (ageMs !== undefined) return new Date(now.getTime() - ageMs).toISOString();
  if (!/^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$/.test(text)) return undefined;
  const [year, month, day] = text.slice(0, 10).split('-').map(Number) as [number, number, number];
  // Date.parse rolls 2026-02-30 over into March: a day the month does not have is refused.
  if (new Date(Date.UTC(year, month - 1, day)).getUTCDate() !== day) return undefined;
  const ms = Date.parse(text.includes('T') || text.includes(' ') ? text.replace(' ', 'T') : `${text}T00:00:00Z`);
  return Number.isNaN(ms) ? undefined : new Date(ms).toISOString();
}

function parseOperation(
  command: OperationName,
  hostnames: string[],
  values: Record<string, string | boolean>,
  env: Readonly<Record<string, string | undefined>>,
  now: Date,
): CliCommand {
  const url = adminUrlFrom(values['admin-addr'], env);
  if (!url.ok) return usageError(url.problem, command);
  const problems: string[] = [];
  const names: string[] = [];
  for (const name of hostnames) {
    const normalized = normalizeHostname(name);
    if (normalized.ok) names.push(normalized.hostname);
    else problems.push(normalized.reason);
  }
  if (problems.length > 0) return usageError(problems.join('; '), command);
  hostnames = names;
  let waitTimeoutMs = DEFAULT_WAIT_MS;
  if (typeof values.wait === 'string') {
    const parsed = parseDurationMs(values.wait);
    if (parsed === undefined || parsed <= 0)
      return usageError(`--wait '${values.wait}' is not a duration such as 90s or 10m`, command);
    waitTimeoutMs = parsed;
  }
  if (values['no-wait'] === true && typeof values.wait === 'string')
    return usageError('--wait and --no-wait exclude each other', command);
  let path: OperationCommand['path'];
  let body: Record<string, unknown>;
  switch (command) {
    case 'adopt':
      if ((values.all === true) === hostnames.length > 0)
        return usageError('name the records to adopt, or give --all', command);
      path = '/adopt';
      body = values.all === true ? { all: true } : { hostnames };
      break;
    case 'reissue': {
      const issuedBefore = values['issued-before'];
      const given = [values.all === true, hostnames.length > 0, typeof issuedBefore === 'string'].filter(
        Boolean,
      ).length;
      if (given !== 1) return usageError('give names, --all or --issued-before <time>, exactly one of them', command);
      path = '/reissue';
      if (typeof issuedBefore === 'string') {
        const iso = parseIssuedBefore(issuedBefore, now);
        if (iso === undefined) {
          return usageError(
            `--issued-before '${issuedBefore}' is not a time (2026-03-01, 2026-03-01T12:00:00Z) or an age (30d)`,
            command,
          );
        }
        body = { issuedBefore: iso };
      } else body = values.all === true ? { all: true } : { hostnames };
      break;
    }
    case 'revoke': {
      if (hostnames.length !== 1) return usageError('revoke takes exactly one name', command);
      if (typeof values.reason !== 'string')
        return usageError('revoke needs --reason <reason>, e.g. --reason keyCompromise', command);
      const reason = parseRevocationReason(values.reason);
      if (!reason.ok) return usageError(reason.problem, command);
      path = '/revoke';
      body = { hostname: hostnames[0], reason: reason.reason };
      break;
    }
  }
  return {
    kind: 'operate',
    operation: command,
    path,
    body,
    adminUrl: url.adminUrl,
    adminToken: env[ADMIN_TOKEN_ENV]?.trim() || undefined,
    json: values.json === true,
    wait: values['no-wait'] !== true,
    waitTimeoutMs,
  };
}

function parseCommand(
  command: CommandName,
  args: string[],
  env: Readonly<Record<string, string | undefined>>,
  now: Date,
): CliCommand {
  const spec = COMMAND_OPTIONS[command];
  const values: Record<string, string | boolean> = {};
  const positionals: string[] = [];
  for (const token of tokenize(args, spec)) {
    if (token.kind === 'option-terminator') continue;
    if (token.kind === 'positional') {
      if (TAKES_HOSTNAMES.has(command)) {
        positionals.push(token.value);
        continue;
      }
      return usageError(`unexpected argument '${token.value}' for command '${command}'`, command);
    }
    const option = Object.hasOwn(spec, token.name) ? spec[token.name] : undefined;
    if (option === undefined) {
      return usageError(`unknown option '${token.rawName}' for command '${command}'`, command);
    }
    if (token.name === 'help') {
      if (token.value !== undefined) return usageError(`option '${token.rawName}' does not take a value`, command);
      return { kind: 'help', command, text: helpText(command) };
    }
    if (option.type === 'boolean') {
      if (token.value !== undefined) return usageError(`option '${token.rawName}' does not take a value`, command);
      values[token.name] = true;
    } else {
      // `--config --json` would otherwise take '--json' as the file name.
      const value = token.value;
      if (value === undefined || value === '' || (!token.inlineValue && value.startsWith('-'))) {
        return usageError(`option '${token.rawName}' needs a value`, command);
      }
      values[token.name] = value;
    }
  }

  switch (command) {
    case 'run': {
      const configFile = typeof values.config === 'string' ? values.config : undefined;
      return values['sinks-only'] === true ? { kind: 'run', configFile, sinksOnly: true } : { kind: 'run', configFile };
    }
    case 'check-config': {
      const configFile = values.config;
      return { kind: command, configFile: typeof configFile === 'string' ? configFile : undefined };
    }
    case 'status': {
      const url = adminUrlFrom(values['admin-addr'], env);
      if (!url.ok) return usageError(url.problem, command);
      const adminToken = env[ADMIN_TOKEN_ENV]?.trim() || undefined;
      return { kind: 'status', json: values.json === true, adminUrl: url.adminUrl, adminToken };
    }
    case 'adopt':
    case 'reissue':
    case 'revoke':
      return parseOperation(command, positionals, values, env, now);
  }
}

/**
 * Parses the arguments after the program name (`process.argv.slice(2)`). `env` supplies
 * CONSUL_ACME_ADMIN_URL and CONSUL_ACME_ADMIN_TOKEN for `status` and the operator commands;
 * main.ts passes process.env. `now` resolves `reissue --issued-before <age>`.
 */
export function parseCli(
  argv: string[],
  env: Readonly<Record<string, string | undefined>> = {},
  now: Date = new Date(),
): CliCommand {
  for (const token of tokenize(argv, TOP_LEVEL_OPTIONS)) {
    if (token.kind === 'option-terminator') continue;
    if (token.kind === 'option') {
      if (token.name === 'help' && token.value === undefined)
        return { kind: 'help', command: undefined, text: helpText() };
      if (token.name === 'version' && token.value === undefined) return { kind: 'version' };
      if (token.name === 'help' || token.name === 'version')
        return usageError(`option '${token.rawName}' does not take a value`);
      return usageError(`unknown option '${token.rawName}'`);
    }
    const name = token.value;
    const rest = argv.slice(token.index + 1);
    if (name === 'help') {
      const [topic, ...extra] = rest;
      if (topic === undefined) return { kind: 'help', command: undefined, text: helpText() };
      if (!isCommandName(topic)) return usageError(`unknown command '${topic}'`);
      if (extra.length > 0) return usageError(`unexpected argument '${extra[0]}' for 'help'`);
      return { kind: 'help', command: topic, text: helpText(topic) };
    }
    if (!isCommandName(name)) return usageError(`unknown command '${name}'`);
    return parseCommand(name, rest, env, now);
  }
  return usageError('missing command');
}
