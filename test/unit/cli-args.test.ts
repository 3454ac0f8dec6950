import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_ADMIN_URL, normalizeAdminUrl, parseCli, type CliCommand } from '../../src/cli/args.js';
import { helpText } from '../../src/cli/help.js';

type Env = Record<string, string | undefined>;

interface Case {
  name: string;
  argv: string[];
  env?: Env;
  expected: CliCommand;
}

const cases: Case[] = [
  { name: 'run without options uses no config file', argv: ['run'], expected: { kind: 'run', configFile: undefined } },
  {
    name: 'run takes --config <file>',
    argv: ['run', '--config', '/etc/ca.json'],
    expected: { kind: 'run', configFile: '/etc/ca.json' },
  },
  {
    name: 'run takes --config=<file>',
    argv: ['run', '--config=/etc/ca.json'],
    expected: { kind: 'run', configFile: '/etc/ca.json' },
  },
  {
    name: 'the last --config wins',
    argv: ['run', '--config', 'a.json', '--config', 'b.json'],
    expected: { kind: 'run', configFile: 'b.json' },
  },
  {
    name: 'check-config takes --config',
    argv: ['check-config', '--config', 'c.json'],
    expected: { kind: 'check-config', configFile: 'c.json' },
  },
  {
    name: 'check-config without options',
    argv: ['check-config'],
    expected: { kind: 'check-config', configFile: undefined },
  },
  {
    name: 'status defaults to the local admin port',
    argv: ['status'],
    expected: { kind: 'status', json: false, adminUrl: 'http://127.0.0.1:8081', adminToken: undefined },
  },
  {
    name: 'status reads CONSUL_ACME_ADMIN_URL',
    argv: ['status'],
    env: { CONSUL_ACME_ADMIN_URL: 'http://10.0.0.5:9000/' },
    expected: { kind: 'status', json: false, adminUrl: 'http://10.0.0.5:9000', adminToken: undefined },
  },
  {
    name: 'status ignores an empty CONSUL_ACME_ADMIN_URL',
    argv: ['status'],
    env: { CONSUL_ACME_ADMIN_URL: ' ' },
    expected: { kind: 'status', json: false, adminUrl: 'http://127.0.0.1:8081', adminToken: undefined },
  },
  {
    name: '--admin-addr wins over the environment',
    argv: ['status', '--admin-addr', 'https://ca.internal:8443'],
    env: { CONSUL_ACME_ADMIN_URL: 'http://10.0.0.5:9000' },
    expected: { kind: 'status', json: false, adminUrl: 'https://ca.internal:8443', adminToken: undefined },
  },
  {
    name: 'a bare host:port for --admin-addr means http',
    argv: ['status', '--json', '--admin-addr=10.1.2.3:8081'],
    expected: { kind: 'status', json: true, adminUrl: 'http://10.1.2.3:8081', adminToken: undefined },
  },
  {
    name: 'status sends the admin token from CONSUL_ACME_ADMIN_TOKEN',
    argv: ['status'],
    env: { CONSUL_ACME_ADMIN_TOKEN: 'a-token-of-sixteen-chars' },
    expected: { kind: 'status', json: false, adminUrl: DEFAULT_ADMIN_URL, adminToken: 'a-token-of-sixteen-chars' },
  },
  {
    name: 'status --json',
    argv: ['status', '--json'],
    expected: { kind: 'status', json: true, adminUrl: DEFAULT_ADMIN_URL, adminToken: undefined },
  },
  { name: '--version prints the version', argv: ['--version'], expected: { kind: 'version' } },
  {
    name: '--version before a command still prints the version',
    argv: ['--version', 'run'],
    expected: { kind: 'version' },
  },
  {
    name: '--help shows the top-level help',
    argv: ['--help'],
    expected: { kind: 'help', command: undefined, text: helpText() },
  },
  {
    name: '-h shows the top-level help',
    argv: ['-h'],
    expected: { kind: 'help', command: undefined, text: helpText() },
  },
  {
    name: 'help shows the top-level help',
    argv: ['help'],
    expected: { kind: 'help', command: undefined, text: helpText() },
  },
  {
    name: "help <command> shows that command's help",
    argv: ['help', 'status'],
    expected: { kind: 'help', command: 'status', text: helpText('status') },
  },
  {
    name: 'run --help shows the help of run',
    argv: ['run', '--help'],
    expected: { kind: 'help', command: 'run', text: helpText('run') },
  },
  {
    name: 'check-config -h shows the help of check-config',
    argv: ['check-config', '-h'],
    expected: { kind: 'help', command: 'check-config', text: helpText('check-config') },
  },
  {
    name: 'status --json --help shows the help of status',
    argv: ['status', '--json', '--help'],
    expected: { kind: 'help', command: 'status', text: helpText('status') },
  },
  {
    name: 'options after -- are not read as options',
    argv: ['--', 'run'],
    expected: { kind: 'run', configFile: undefined },
  },
];

interface ErrorCase {
  name: string;
  argv: string[];
  env?: Env;
  /** The first line of the message. */
  firstLine: string;
  /** Which usage follows. */
  usage: RegExp;
}

const errorCases: ErrorCase[] = [
  { name: 'no command at all', argv: [], firstLine: 'missing command', usage: /^usage: consul-acme \[--version\]/m },
  {
    name: 'an unknown command',
    argv: ['serve'],
    firstLine: "unknown command 'serve'",
    usage: /^usage: consul-acme \[--version\]/m,
  },
  {
    name: 'an unknown top-level option',
    argv: ['--verbose', 'run'],
    firstLine: "unknown option '--verbose'",
    usage: /^usage: consul-acme \[--version\]/m,
  },
  {
    name: 'an unknown top-level short option',
    argv: ['-x'],
    firstLine: "unknown option '-x'",
    usage: /^usage: consul-acme \[--version\]/m,
  },
  {
    name: 'help for an unknown command',
    argv: ['help', 'serve'],
    firstLine: "unknown command 'serve'",
    usage: /^usage: consul-acme \[--version\]/m,
  },
  {
    name: 'an option another command has',
    argv: ['run', '--json'],
    firstLine: "unknown option '--json' for command 'run'",
    usage: /^usage: consul-acme run \[--config <file>\] \[--sinks-only\]$/m,
  },
  {
    name: 'an unknown option of status',
    argv: ['status', '--config', 'x.json'],
    firstLine: "unknown option '--config' for command 'status'",
    usage: /^usage: consul-acme status/m,
  },
  {
    name: '--config without a value',
    argv: ['run', '--config'],
    firstLine: "option '--config' needs a value",
    usage: /^usage: consul-acme run/m,
  },
  {
    name: '--config with an empty value',
    argv: ['check-config', '--config='],
    firstLine: "option '--config' needs a value",
    usage: /^usage: consul-acme check-config/m,
  },
  {
    name: '--config followed by another option',
    argv: ['run', '--config', '--help'],
    firstLine: "option '--config' needs a value",
    usage: /^usage: consul-acme run/m,
  },
  {
    name: 'a value given to a flag',
    argv: ['status', '--json=yes'],
    firstLine: "option '--json' does not take a value",
    usage: /^usage: consul-acme status/m,
  },
  {
    name: 'a stray argument',
    argv: ['run', 'extra'],
    firstLine: "unexpected argument 'extra' for command 'run'",
    usage: /^usage: consul-acme run/m,
  },
  {
    name: 'an --admin-addr that is not http(s)',
    argv: ['status', '--admin-addr', 'ftp://host:21'],
    firstLine: "--admin-addr: 'ftp://host:21' is not an http(s) URL or host:port",
    usage: /^usage: consul-acme status/m,
  },
  {
    name: 'a malformed CONSUL_ACME_ADMIN_URL',
    argv: ['status'],
    env: { CONSUL_ACME_ADMIN_URL: 'http://' },
    firstLine: "CONSUL_ACME_ADMIN_URL: 'http://' is not an http(s) URL or host:port",
    usage: /^usage: consul-acme status/m,
  },
];

describe('parseCli', () => {
  for (const c of cases) {
    it(c.name, () => {
      assert.deepEqual(parseCli(c.argv, c.env ?? {}), c.expected);
    });
  }

  for (const c of errorCases) {
    it(`reports ${c.name} as a usage error with exit code 2`, () => {
      const result = parseCli(c.argv, c.env ?? {});
      assert.equal(result.kind, 'error');
      if (result.kind !== 'error') return;
      assert.equal(result.exitCode, 2);
      assert.equal(result.message.split('\n')[0], c.firstLine);
      assert.match(result.message, c.usage);
    });
  }

  it('does not read process.env when no environment is passed', () => {
    const saved = process.env.CONSUL_ACME_ADMIN_URL;
    process.env.CONSUL_ACME_ADMIN_URL = 'http://10.9.9.9:1';
    try {
      assert.deepEqual(parseCli(['status']), {
        kind: 'status',
        json: false,
        adminUrl: DEFAULT_ADMIN_URL,
        adminToken: undefined,
      });
    } finally {
      if (saved === undefined) delete process.env.CONSUL_ACME_ADMIN_URL;
      else process.env.CONSUL_ACME_ADMIN_URL = saved;
    }
  });
});

describe('help texts', () => {
  it('the top-level help lists every command and the global options', () => {
    const text = helpText();
    for (const word of ['run', 'check-config', 'status', '--help', '--version']) assert.ok(text.includes(word), word);
  });
  it('each command help lists its options', () => {
    assert.match(helpText('run'), /--config <file>/);
    assert.match(helpText('check-config'), /--config <file>/);
    assert.match(helpText('status'), /--json/);
    assert.match(helpText('status'), /--admin-addr <url>/);
    assert.match(helpText('status'), /CONSUL_ACME_ADMIN_URL/);
  });
});

describe('normalizeAdminUrl', () => {
  const table: Array<[string, string | undefined]> = [
    ['http://127.0.0.1:8081', 'http://127.0.0.1:8081'],
    ['http://127.0.0.1:8081/', 'http://127.0.0.1:8081'],
    ['127.0.0.1:8081', 'http://127.0.0.1:8081'],
    ['https://[::1]:8443/prefix/', 'https://[::1]:8443/prefix'],
    ['localhost', 'http://localhost'],
    ['', undefined],
    ['ftp://host', undefined],
    ['http://user:pw@host:1', undefined],
    ['http://host:1/?x=1', undefined],
    ['http://host:99999', undefined],
  ];
  for (const [input, expected] of table) {
    it(`${JSON.stringify(input)} → ${String(expected)}`, () => {
      assert.equal(normalizeAdminUrl(input), expected);
    });
  }
});
