#!/usr/bin/env node
/**
 * The process entry point: the only place that reads process.env, parses argv, listens and
 * handles signals. Exit codes: 0 success, 1 runtime failure, 2 bad usage or configuration.
 */
import { readFileSync } from 'node:fs';
import { parseCli } from './cli/args.js';
import { runOperation } from './cli/operate-command.js';
import { fetchStatus, formatStatus } from './cli/status-command.js';
import { describeConfig, loadConfig } from './config/load.js';
import type { Config } from './config/schema.js';
import { ConfigError, describeError } from './errors.js';
import { fixHeapGrowth } from './heap-growth.js';
import { createLogger } from './logging.js';
import { systemClock } from './ports/clock.js';
import { buildService } from './service.js';
import { buildSinkOnlyService } from './sink-only-service.js';

const CONFIG_EXIT_CODE = 2;

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

function loadOrExit(configFile: string | undefined, overrides: Record<string, string> = {}): Config {
  try {
    return loadConfig({ env: { ...process.env, ...overrides }, configFile });
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`consul-acme: ${err.message}\n`);
      process.exit(CONFIG_EXIT_CODE);
    }
    throw err;
  }
}

async function run(configFile: string | undefined, sinksOnly: boolean): Promise<void> {
  const loaded = loadOrExit(configFile);
  // `run --sinks-only` wins over CONSUL_ACME_MODE; the same checks as the setting apply.
  const config = sinksOnly && loaded.mode !== 'sinks' ? loadOrExit(configFile, { CONSUL_ACME_MODE: 'sinks' }) : loaded;
  const logger = createLogger(config.logLevel);
  const heapFlag = fixHeapGrowth(process.execArgv);
  logger.debug({ flag: heapFlag ?? 'set on the node command line' }, 'V8 heap growing factor');
  const service = config.mode === 'sinks' ? buildSinkOnlyService(config, logger) : buildService(config, logger);
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'stopping');
    service.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        logger.error({ err: describeError(err) }, 'stop failed');
        process.exit(1);
      },
    );
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
  try {
    await service.start();
  } catch (err) {
    logger.fatal({ err: describeError(err) }, 'could not start');
    await service.stop().catch(() => undefined);
    process.exit(1);
  }
}

async function main(): Promise<void> {
  const command = parseCli(process.argv.slice(2), process.env);
  switch (command.kind) {
    case 'help':
      process.stdout.write(`${command.text}\n`);
      return;
    case 'version':
      process.stdout.write(`consul-acme ${version()}\n`);
      return;
    case 'error':
      process.stderr.write(`consul-acme: ${command.message}\n`);
      process.exit(command.exitCode);
      return;
    case 'check-config': {
      const config = loadOrExit(command.configFile);
      process.stdout.write(`configuration is valid\n${describeConfig(config)}\n`);
      return;
    }
    case 'status': {
      try {
        const report = await fetchStatus(command.adminUrl, { adminToken: command.adminToken });
        process.stdout.write(`${formatStatus(report, { json: command.json, now: systemClock.now() })}\n`);
      } catch (err) {
        process.stderr.write(`consul-acme: ${err instanceof Error ? err.message : String(err)}\n`);
        process.exit(1);
      }
      return;
    }
    case 'operate': {
      try {
        const code = await runOperation(command, {
          out: (line) => process.stdout.write(`${line}\n`),
          now: () => systemClock.nowMs(),
          sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
        });
        process.exitCode = code;
      } catch (err) {
        process.stderr.write(`consul-acme: ${err instanceof Error ? err.message : String(err)}\n`);
        process.exit(1);
      }
      return;
    }
    case 'run':
      await run(command.configFile, command.sinksOnly === true);
      return;
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`consul-acme: ${describeError(err)}\n`);
  process.exit(1);
});
