/** Help texts for `consul-acme --help` and `consul-acme <command> --help`. */

export const COMMAND_NAMES = ['run', 'check-config', 'status'] as const;
export type CommandName = (typeof COMMAND_NAMES)[number];

export function isCommandName(value: string): value is CommandName {
  return (COMMAND_NAMES as readonly string[]).includes(value);
}

export const TOP_LEVEL_USAGE = 'usage: consul-acme [--version] [--help] <command> [options]';

export const COMMAND_USAGE: Record<CommandName, string> = {
  run: 'usage: consul-acme run [--config <file>]',
  'check-config': 'usage: consul-acme check-config [--config <file>]',
  status: 'usage: consul-acme status [--json] [--admin-addr <url>]',
};

const TOP_LEVEL_HELP = `${TOP_LEVEL_USAGE}

Obtains ACME certificates (HTTP-01) for the hostnames Consul services declare in their tags and
stores them in Vault, where Fabio reads them.

Commands:
  run            Run the service: watch Consul, issue and renew certificates, answer challenges.
  check-config   Load and validate the configuration, list every problem, and exit.
  status         Show the certificates a running instance manages, from its admin API.
  help [command] Show this help, or the help of one command.

Options:
  -h, --help     Show help.
  --version      Print the version and exit.

Run 'consul-acme <command> --help' for the options of a command.
Exit status: 0 success, 1 failure, 2 bad usage or invalid configuration.
`;

const CONFIG_OPTION = `  --config <file>    Configuration file (JSON). Same as CONSUL_ACME_CONFIG_FILE; this option wins.
                     Environment variables (CONSUL_ACME_*) override the file's settings.`;

const COMMAND_HELP: Record<CommandName, string> = {
  run: `${COMMAND_USAGE.run}

Runs the service until SIGINT or SIGTERM: watches the Consul catalog for hostnames, obtains and
renews their certificates, stores them for Fabio, answers HTTP-01 challenges and serves the
admin API (/health/live, /health/ready, /status).

Options:
${CONFIG_OPTION}
  -h, --help         Show this help.

Exit status: 0 after a clean shutdown, 1 on a fatal error, 2 on invalid configuration.
`,
  'check-config': `${COMMAND_USAGE['check-config']}

Loads the configuration from the file and the environment exactly as 'run' would and reports
every problem at once. Contacts nothing.

Options:
${CONFIG_OPTION}
  -h, --help         Show this help.

Exit status: 0 when the configuration is valid, 2 when it is not.
`,
  status: `${COMMAND_USAGE.status}

Asks a running instance for its status report and prints one line per certificate (hostname,
state, expiry, next renewal, last error, services), then the names that were refused and why.
Times are UTC.

Options:
  --json               Print the report as JSON instead of a table.
  --admin-addr <url>   Admin API of the instance, e.g. http://10.0.0.5:8081 (a bare host:port
                       means http). Default: CONSUL_ACME_ADMIN_URL, else http://127.0.0.1:8081.
  -h, --help           Show this help.

Exit status: 0 when the report was shown, 1 when the instance could not be reached.
`,
};

/** The full help text: top-level without a command, else that command's. */
export function helpText(command?: CommandName): string {
  return command === undefined ? TOP_LEVEL_HELP : COMMAND_HELP[command];
}

/** The short usage shown after a usage error, with a pointer to the full help. */
export function usageText(command?: CommandName): string {
  if (command === undefined) return `${TOP_LEVEL_USAGE}\nRun 'consul-acme --help' for the list of commands.`;
  return `${COMMAND_USAGE[command]}\nRun 'consul-acme ${command} --help' for details.`;
}
