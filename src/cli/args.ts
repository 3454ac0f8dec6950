/**
 * The command line: `consul-acme [--version] [--help] <command> [options]`.
 *
 * `parseCli` is pure: it never prints, exits or reads process.env (main.ts passes the environment
 * in). Usage errors come back as `{ kind: 'error', exitCode: 2 }` with a message that names the
 * offending word and ends with the usage.
 */
import { parseArgs } from 'node:util';
import { DEFAULT_ADMIN_PORT } from '../config/schema.js';
import { helpText, isCommandName, usageText, type CommandName } from './help.js';

export const ADMIN_URL_ENV = 'CONSUL_ACME_ADMIN_URL';
/** The admin token `status` sends, read from the same variable the service reads. */
export const ADMIN_TOKEN_ENV = 'CONSUL_ACME_ADMIN_TOKEN';
export const DEFAULT_ADMIN_URL = `http://127.0.0.1:${DEFAULT_ADMIN_PORT}`;
export const USAGE_EXIT_CODE = 2;

export type CliCommand =
  /** Print `text` to stdout and exit 0. */
  | { kind: 'help'; command: CommandName | undefined; text: string }
  /** Print the version and exit 0. */
  | { kind: 'version' }
  | { kind: 'run'; configFile: string | undefined }
  | { kind: 'check-config'; configFile: string | undefined }
  | { kind: 'status'; json: boolean; adminUrl: string; adminToken: string | undefined }
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

const COMMAND_OPTIONS: Record<CommandName, OptionSpec> = {
  run: { help: { type: 'boolean', short: 'h' }, config: { type: 'string' } },
  'check-config': { help: { type: 'boolean', short: 'h' }, config: { type: 'string' } },
  status: { help: { type: 'boolean', short: 'h' }, json: { type: 'boolean' }, 'admin-addr': { type: 'string' } },
};

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

function parseCommand(
  command: CommandName,
  args: string[],
  env: Readonly<Record<string, string | undefined>>,
): CliCommand {
  const spec = COMMAND_OPTIONS[command];
  const values: Record<string, string | boolean> = {};
  for (const token of tokenize(args, spec)) {
    if (token.kind === 'option-terminator') continue;
    if (token.kind === 'positional') {
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
    case 'run':
    case 'check-config': {
      const configFile = values.config;
      return { kind: command, configFile: typeof configFile === 'string' ? configFile : undefined };
    }
    case 'status': {
      const given = values['admin-addr'];
      const fromEnv = env[ADMIN_URL_ENV]?.trim();
      const [source, raw] =
        typeof given === 'string'
          ? ['--admin-addr', given]
          : fromEnv !== undefined && fromEnv !== ''
            ? [ADMIN_URL_ENV, fromEnv]
            : ['default', DEFAULT_ADMIN_URL];
      const adminUrl = normalizeAdminUrl(raw);
      if (adminUrl === undefined) {
        return usageError(`${source}: '${raw}' is not an http(s) URL or host:port`, command);
      }
      const adminToken = env[ADMIN_TOKEN_ENV]?.trim() || undefined;
      return { kind: 'status', json: values.json === true, adminUrl, adminToken };
    }
  }
}

/**
 * Parses the arguments after the program name (`process.argv.slice(2)`). `env` supplies
 * CONSUL_ACME_ADMIN_URL and CONSUL_ACME_ADMIN_TOKEN for `status`; main.ts passes process.env.
 */
export function parseCli(argv: string[], env: Readonly<Record<string, string | undefined>> = {}): CliCommand {
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
    return parseCommand(name, rest, env);
  }
  return usageError('missing command');
}
