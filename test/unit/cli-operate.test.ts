/**
 * The command line of the operator commands (`adopt`, `reissue`, `revoke`) and `run --sinks-only`:
 * what each invocation sends to the admin API, and the usage errors a person gets instead.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_WAIT_MS, parseCli, parseIssuedBefore, type CliCommand } from '../../src/cli/args.js';
import { helpText } from '../../src/cli/help.js';
import { renderStatusTable } from '../../src/cli/status-command.js';
import type { CertificateStatus, StatusReport } from '../../src/engine/status.js';

const NOW = new Date('2026-03-31T12:00:00.000Z');
const ENV = { CONSUL_ACME_ADMIN_URL: 'http://10.0.0.5:8081', CONSUL_ACME_ADMIN_TOKEN: 'operator-token-0123456789' };

function operate(overrides: Partial<Extract<CliCommand, { kind: 'operate' }>>): CliCommand {
  return {
    kind: 'operate',
    operation: 'reissue',
    path: '/reissue',
    body: {},
    adminUrl: 'http://10.0.0.5:8081',
    adminToken: 'operator-token-0123456789',
    json: false,
    wait: true,
    waitTimeoutMs: DEFAULT_WAIT_MS,
    ...overrides,
  };
}

const cases: Array<{ name: string; argv: string[]; expected: CliCommand }> = [
  {
    name: 'run --sinks-only runs the sink-only mode',
    argv: ['run', '--sinks-only'],
    expected: { kind: 'run', configFile: undefined, sinksOnly: true },
  },
  {
    name: 'adopt names the records, normalised',
    argv: ['adopt', 'A.example.com.', 'b.example.com'],
    expected: operate({ operation: 'adopt', path: '/adopt', body: { hostnames: ['a.example.com', 'b.example.com'] } }),
  },
  {
    name: 'adopt --all --no-wait --json',
    argv: ['adopt', '--all', '--no-wait', '--json'],
    expected: operate({ operation: 'adopt', path: '/adopt', body: { all: true }, wait: false, json: true }),
  },
  {
    name: 'reissue of names, waiting at most 90 s',
    argv: ['reissue', 'a.example.com', '--wait', '90s'],
    expected: operate({ body: { hostnames: ['a.example.com'] }, waitTimeoutMs: 90_000 }),
  },
  {
    name: 'reissue --all',
    argv: ['reissue', '--all'],
    expected: operate({ body: { all: true } }),
  },
  {
    name: 'reissue --issued-before an age',
    argv: ['reissue', '--issued-before', '30d'],
    expected: operate({ body: { issuedBefore: '2026-03-01T12:00:00.000Z' } }),
  },
  {
    name: 'reissue --issued-before a date, midnight UTC',
    argv: ['reissue', '--issued-before=2026-03-01'],
    expected: operate({ body: { issuedBefore: '2026-03-01T00:00:00.000Z' } }),
  },
  {
    name: 'revoke with a reason in any case, sent as RFC 5280 spells it',
    argv: ['revoke', 'a.example.com', '--reason', 'KEYCOMPROMISE', '--admin-addr', '10.1.1.1:9000'],
    expected: operate({
      operation: 'revoke',
      path: '/revoke',
      body: { hostname: 'a.example.com', reason: 'keyCompromise' },
      adminUrl: 'http://10.1.1.1:9000',
    }),
  },
];

const errors: Array<{ name: string; argv: string[]; firstLine: RegExp }> = [
  { name: 'adopt without names or --all', argv: ['adopt'], firstLine: /^name the records to adopt, or give --all$/ },
  { name: 'adopt with names and --all', argv: ['adopt', 'a.example.com', '--all'], firstLine: /^name the records/ },
  { name: 'reissue without a selection', argv: ['reissue'], firstLine: /^give names, --all or --issued-before/ },
  {
    name: 'reissue with two selections',
    argv: ['reissue', '--all', '--issued-before', '7d'],
    firstLine: /^give names, --all or --issued-before <time>, exactly one of them$/,
  },
  {
    name: 'an --issued-before that is neither a time nor an age',
    argv: ['reissue', '--issued-before', 'last week'],
    firstLine: /^--issued-before 'last week' is not a time/,
  },
  { name: 'revoke without a reason', argv: ['revoke', 'a.example.com'], firstLine: /^revoke needs --reason <reason>/ },
  {
    name: 'revoke with a reason the CA refuses from a subscriber',
    argv: ['revoke', 'a.example.com', '--reason', 'cACompromise'],
    firstLine: /^cACompromise is not a reason the CA accepts from a subscriber/,
  },
  {
    name: 'revoke with an unknown reason',
    argv: ['revoke', 'a.example.com', '--reason', 'stolen'],
    firstLine: /^"stolen" is not a revocation reason; use one of unspecified, keyCompromise/,
  },
  {
    name: 'revoke of two names',
    argv: ['revoke', 'a.example.com', 'b.example.com', '--reason', 'superseded'],
    firstLine: /^revoke takes exactly one name$/,
  },
  {
    name: 'a name that cannot be a hostname',
    argv: ['reissue', 'not a name'],
    firstLine: /^hostname contains the character " "$/,
  },
  {
    name: 'a wait that is not a duration',
    argv: ['reissue', '--all', '--wait', '5x'],
    firstLine: /^--wait '5x' is not a duration/,
  },
  {
    name: '--wait with --no-wait',
    argv: ['reissue', '--all', '--wait', '5m', '--no-wait'],
    firstLine: /exclude each other/,
  },
  {
    name: 'an option of another command',
    argv: ['adopt', '--reason', 'x', '--all'],
    firstLine: /^unknown option '--reason' for command 'adopt'$/,
  },
];

describe('parseCli: operator commands', () => {
  for (const c of cases) {
    it(c.name, () => {
      assert.deepEqual(parseCli(c.argv, ENV, NOW), c.expected);
    });
  }

  for (const c of errors) {
    it(`reports ${c.name} as a usage error with exit code 2 and the command's usage`, () => {
      const result = parseCli(c.argv, ENV, NOW);
      assert.equal(result.kind, 'error', JSON.stringify(result));
      if (result.kind !== 'error') return;
      assert.equal(result.exitCode, 2);
      assert.match(result.message.split('\n')[0]!, c.firstLine);
      assert.match(result.message, new RegExp(`^usage: consul-acme ${c.argv[0]} `, 'm'));
    });
  }

  it('parseIssuedBefore reads times with zones and ages, and refuses the rest', () => {
    assert.equal(parseIssuedBefore('2026-03-01T12:30:00+02:00', NOW), '2026-03-01T10:30:00.000Z');
    assert.equal(parseIssuedBefore('12h', NOW), '2026-03-31T00:00:00.000Z');
    assert.equal(parseIssuedBefore('2026-02-30', NOW), undefined);
    assert.equal(parseIssuedBefore('yesterday', NOW), undefined);
  });

  it('the help of each command says what it does and how it waits', () => {
    assert.match(helpText('adopt'), /same\s+certificate and key/);
    assert.match(helpText('reissue'), /--issued-before <time>/);
    assert.match(helpText('revoke'), /keyCompromise it is revoked at once/);
    assert.match(helpText('run'), /--sinks-only/);
    for (const word of ['adopt', 'reissue', 'revoke']) assert.ok(helpText().includes(word), word);
  });
});

describe('consul-acme status with operator requests and the sink-only mode', () => {
  const base: StatusReport = {
    instance: 'edge-1',
    ready: true,
    store: 'vault:secret/fabio/certs',
    storeHealth: { error: undefined, failingSince: undefined },
    directoryUrl: '',
    discovery: { lastSyncAt: '2026-03-31T11:59:30.000Z', lastError: undefined, services: 0 },
    certificates: [],
    rejected: [],
    policy: { deny: 0, allow: 0, always: 0, invalid: [], unreadable: [], failsClosed: undefined },
    sinks: [
      {
        name: 'haproxy',
        pending: 0,
        resyncPending: false,
        failures: 0,
        failingSince: undefined,
        lastError: undefined,
        lastErrorAt: undefined,
        lastSuccessAt: '2026-03-31T11:59:31.000Z',
        lastResyncAt: '2026-03-31T11:50:00.000Z',
        nextRetryAt: undefined,
      },
    ],
  };

  it('a sink-only instance shows the store it follows and its sinks, and no certificate table', () => {
    assert.equal(
      renderStatusTable({ ...base, mode: 'sinks' }, NOW),
      [
        'instance   edge-1 (ready), sinks only: no issuance',
        'store      vault:secret/fabio/certs, last listed 2026-03-31 11:59 (30s ago)',
        '',
        'Sinks',
        'SINK     STATE  PENDING  LAST SUCCESS      LAST ERROR',
        'haproxy  ok     0        2026-03-31 11:59  -',
        '',
      ].join('\n'),
    );
  });

  it('a pending revocation, an adoption and a refused adoption are shown when nothing else is', () => {
    const line = (overrides: Partial<CertificateStatus>): CertificateStatus => ({
      hostname: 'a.example.com',
      state: 'valid',
      reason: 'NotYetDue',
      policy: undefined,
      waitingFor: undefined,
      services: ['web'],
      expiresAt: undefined,
      renewsAt: undefined,
      retiresAt: undefined,
      lastError: undefined,
      attempts: 0,
      nextAttemptAt: undefined,
      ...overrides,
    });
    const text = renderStatusTable(
      {
        ...base,
        certificates: [
          line({
            hostname: 'a.example.com',
            state: 'pending',
            request: {
              kind: 'revoke',
              requestedAt: '2026-03-31T11:00:00.000Z',
              requestedBy: 'node-1',
              replacesSerial: 'ab',
              revokeReason: 'keyCompromise',
              revokedAt: undefined,
            },
          }),
          line({ hostname: 'b.example.com', adoptedAt: '2026-03-30T08:00:00.000Z' }),
          line({
            hostname: 'c.example.com',
            state: 'unmanaged',
            adoption: 'not adopted: Expired: its certificate has expired',
          }),
        ],
      },
      NOW,
    );
    assert.match(text, /^a\.example\.com +pending .* revocation requested \(keyCompromise\) +web$/m);
    assert.match(text, /^b\.example\.com +valid .* adopted 2026-03-30 08:00 +web$/m);
    assert.match(text, /^c\.example\.com +unmanaged .* not adopted: Expired: its certificate has expired +web$/m);
  });
});
