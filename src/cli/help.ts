/** Help texts for `consul-acme --help` and `consul-acme <command> --help`. */

export const COMMAND_NAMES = ['run', 'check-config', 'status', 'adopt', 'reissue', 'revoke'] as const;
export type CommandName = (typeof COMMAND_NAMES)[number];

export function isCommandName(value: string): value is CommandName {
  return (COMMAND_NAMES as readonly string[]).includes(value);
}

export const TOP_LEVEL_USAGE = 'usage: consul-acme [--version] [--help] <command> [options]';

export const COMMAND_USAGE: Record<CommandName, string> = {
  run: 'usage: consul-acme run [--config <file>] [--sinks-only]',
  'check-config': 'usage: consul-acme check-config [--config <file>]',
  status: 'usage: consul-acme status [--json] [--admin-addr <url>]',
  adopt: 'usage: consul-acme adopt (<name>... | --all) [--no-wait | --wait <duration>] [--json] [--admin-addr <url>]',
  reissue:
    'usage: consul-acme reissue (<name>... | --all | --issued-before <time>) [--no-wait | --wait <duration>] [--json] [--admin-addr <url>]',
  revoke:
    'usage: consul-acme revoke <name> --reason <reason> [--no-wait | --wait <duration>] [--json] [--admin-addr <url>]',
};

const TOP_LEVEL_HELP = `${TOP_LEVEL_USAGE}

Obtains ACME certificates (HTTP-01) for the hostnames Consul services declare in their tags and
stores them in Vault, where Fabio reads them.

Commands:
  run            Run the service: watch Consul, issue and renew certificates, answer challenges.
  check-config   Load and validate the configuration, list every problem, and exit.
  status         Show the certificates a running instance manages, from its admin API.
  adopt          Take over certificates another tool wrote (same certificate and key, now managed).
  reissue        Replace certificates now, before they are due.
  revoke         Revoke a certificate at the CA and replace it.
  help [command] Show this help, or the help of one command.

Options:
  -h, --help     Show help.
  --version      Print the version and exit.

Run 'consul-acme <command> --help' for the options of a command.
Exit status: 0 success, 1 failure, 2 bad usage or invalid configuration.
`;

const CONFIG_OPTION = `  --config <file>    Configuration file (JSON). Same as CONSUL_ACME_CONFIG_FILE; this option wins.
                     Environment variables (CONSUL_ACME_*) override the file's settings.`;

const OPERATION_OPTIONS = `  --no-wait            Return once the instance accepted the request.
  --wait <duration>    Wait at most this long for the outcome (default 5m), e.g. 90s, 10m.
  --json               Print the outcome as JSON.
  --admin-addr <url>   Admin API of an issuing instance, e.g. http://10.0.0.5:8081 (a bare
                       host:port means http). Default: CONSUL_ACME_ADMIN_URL, else
                       http://127.0.0.1:8081. The admin token is read from CONSUL_ACME_ADMIN_TOKEN;
                       the instance refuses these commands unless it has one.
  -h, --help           Show this help.`;

const OPERATION_EXIT = `Exit status: 0 when every name was done (or, with --no-wait, accepted), 1 when a name was
refused, could not be done, or is still waiting when the wait ends (its request is kept and carried
out by whichever instance gets to it; 'consul-acme status' follows it), 2 on bad usage.`;

const COMMAND_HELP: Record<CommandName, string> = {
  run: `${COMMAND_USAGE.run}

Runs the service until SIGINT or SIGTERM: watches the Consul catalog for hostnames, obtains and
renews their certificates, stores them for Fabio, answers HTTP-01 challenges and serves the
admin API (/health/live, /health/ready, /status).

With --sinks-only (or CONSUL_ACME_MODE=sinks) it runs only the sinks (HAProxy, Traefik, hook) from
the store, on the proxy's node: no issuance, no challenge responder, no locks, no Consul.

Options:
${CONFIG_OPTION}
  --sinks-only       Run only the sinks, whatever CONSUL_ACME_MODE says.
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
  adopt: `${COMMAND_USAGE.adopt}

Takes over certificates another tool (certbot scripts, an exporter, lego) wrote under the store's
prefix without consul-acme's mark: each record is written again as a new version with the same
certificate and key, now marked as consul-acme's, and renewed on schedule from then on. Nothing is
removed or emptied, so Fabio keeps serving it throughout. Only records whose certificate and key
load and match, have not expired and cover the record's name, and whose name a service declares,
are adopted; the others are named with the reason.

  --all                Every such record the instance knows of.
${OPERATION_OPTIONS}

${OPERATION_EXIT}
`,
  reissue: `${COMMAND_USAGE.reissue}

Replaces certificates now, before they are due: a new key and a new certificate for the same
names, written over the old one (which Fabio serves until then). The budgets apply: a reissue is
a renewal of the same names. Prints the serial replaced and, once stored, the new one, or why it
waits (a spent budget, a CA pause).

  --all                  Every declared name with a certificate.
  --issued-before <time> The names whose certificate was issued before <time>: a date or time
                         (2026-03-01, 2026-03-01T12:00:00Z) or an age (30d: issued more than 30
                         days ago).
${OPERATION_OPTIONS}

${OPERATION_EXIT}
`,
  revoke: `${COMMAND_USAGE.revoke}

Revokes the stored certificate of <name> at the CA, then replaces it with a new one. With
--reason keyCompromise it is revoked at once, even while a budget holds the new order back; for
the other reasons it is revoked when the new order may be placed, so a revoked certificate is
served no longer than one order takes. Prints the serial revoked and the new one.

  --reason <reason>    unspecified, keyCompromise, superseded or cessationOfOperation (the RFC
                       5280 reasons Let's Encrypt accepts from a subscriber; it refuses the others).
${OPERATION_OPTIONS}

${OPERATION_EXIT}
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
