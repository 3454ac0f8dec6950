import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { formatStatus, renderStatusTable, shortDate, truncate } from '../../src/cli/status-command.js';
import type { StatusReport } from '../../src/engine/status.js';

const NOW = new Date('2025-03-01T12:00:00.000Z');

const LONG_ERROR = 'ACME_RATE_LIMITED: too many certificates already issued for exact set of domains: shop.example.com';

const REPORT: StatusReport = {
  instance: 'node-1',
  ready: true,
  store: 'vault secret/fabio/certs',
  storeHealth: { error: undefined, failingSince: undefined },
  directoryUrl: 'https://acme-v02.api.letsencrypt.org/directory',
  discovery: { lastSyncAt: '2025-03-01T11:57:30.000Z', lastError: undefined, services: 3 },
  certificates: [
    {
      hostname: 'app.example.com',
      state: 'valid',
      reason: 'NotYetDue',
      services: ['app', 'app-canary'],
      expiresAt: '2025-05-30T10:15:42.000Z',
      renewsAt: '2025-04-30T10:15:42.000Z',
      retiresAt: undefined,
      lastError: undefined,
      policy: undefined,
      waitingFor: undefined,
      attempts: 0,
      nextAttemptAt: undefined,
    },
    {
      hostname: 'shop.example.com',
      state: 'failed',
      reason: 'Missing',
      services: ['shop'],
      expiresAt: undefined,
      renewsAt: undefined,
      retiresAt: undefined,
      lastError: LONG_ERROR,
      policy: undefined,
      waitingFor: undefined,
      attempts: 3,
      nextAttemptAt: '2025-03-01T13:00:00.000Z',
    },
    {
      hostname: 'old.example.org',
      state: 'unmanaged',
      reason: undefined,
      services: [],
      expiresAt: '2025-03-10T00:00:00.000Z',
      renewsAt: undefined,
      retiresAt: undefined,
      lastError: 'short\nerror',
      policy: undefined,
      waitingFor: undefined,
      attempts: 0,
      nextAttemptAt: undefined,
    },
  ],
  policy: { deny: 0, allow: 0, always: 0, invalid: [], unreadable: [], failsClosed: undefined },
  rejected: [
    { value: 'localhost', reason: 'not a public name', service: 'web', tag: 'urlprefix-localhost/' },
    { value: '*.example.com', reason: 'wildcards need DNS-01', service: 'wild', tag: 'urlprefix-*.example.com/' },
  ],
  sinks: [],
};

describe('renderStatusTable', () => {
  it('renders the summary, one aligned row per certificate and the refused names', () => {
    const expected = [
      'instance   node-1 (ready)',
      'store      vault secret/fabio/certs',
      'ca         https://acme-v02.api.letsencrypt.org/directory',
      'discovery  3 services, last sync 2025-03-01 11:57 (2m ago)',
      '',
      'HOSTNAME          STATE      EXPIRES           RENEWS AT         LAST ERROR                                                    SERVICES',
      'app.example.com   valid      2025-05-30 10:15  2025-04-30 10:15  -                                                             app,app-canary',
      'shop.example.com  failed     -                 -                 ACME_RATE_LIMITED: too many certificates already issued for…  shop',
      'old.example.org   unmanaged  2025-03-10 00:00  -                 short error                                                   -',
      '',
      'Refused names',
      'NAME           REASON                 SERVICE',
      'localhost      not a public name      web',
      '*.example.com  wildcards need DNS-01  wild',
      '',
    ].join('\n');
    assert.equal(renderStatusTable(REPORT, NOW), expected);
  });

  it('cuts a long error to exactly 60 characters ending in …', () => {
    const row = renderStatusTable(REPORT, NOW)
      .split('\n')
      .find((l) => l.startsWith('shop.example.com'));
    assert.ok(row);
    const cell = /(ACME_RATE_LIMITED[^…]*…)/.exec(row)?.[1];
    assert.equal([...(cell ?? '')].length, 60);
  });

  it('leaves out the refused-names section when nothing was refused, and says when there are no certificates', () => {
    const text = renderStatusTable(
      {
        ...REPORT,
        ready: false,
        certificates: [],
        rejected: [],
        discovery: { lastSyncAt: undefined, lastError: 'consul: ECONNREFUSED', services: 1 },
      },
      NOW,
    );
    assert.equal(
      text,
      [
        'instance   node-1 (not ready)',
        'store      vault secret/fabio/certs',
        'ca         https://acme-v02.api.letsencrypt.org/directory',
        'discovery  1 service, last sync -, last error: consul: ECONNREFUSED',
        '',
        'No certificates.',
        '',
      ].join('\n'),
    );
  });

  it('has no trailing spaces on any line', () => {
    for (const line of renderStatusTable(REPORT, NOW).split('\n')) assert.equal(line, line.trimEnd());
  });
});

describe('renderStatusTable for policy and budgets', () => {
  const row = (c: Partial<StatusReport['certificates'][number]>): StatusReport['certificates'][number] => ({
    hostname: 'x.example.com',
    state: 'pending',
    reason: undefined,
    services: ['web'],
    expiresAt: undefined,
    renewsAt: undefined,
    retiresAt: undefined,
    lastError: undefined,
    policy: undefined,
    waitingFor: undefined,
    attempts: 0,
    nextAttemptAt: undefined,
    ...c,
  });
  const report: StatusReport = {
    ...REPORT,
    certificates: [
      row({ hostname: 'denied.example.com', state: 'refused', policy: 'denied by *.example.com' }),
      row({
        hostname: 'budget.example.com',
        state: 'waiting',
        waitingFor: 'budget account default spent (300/300)',
        nextAttemptAt: '2025-03-01T15:00:00.000Z',
      }),
      row({
        hostname: 'unrouted.example.com',
        state: 'failed',
        lastError: 'PREFLIGHT_FAILED: NotRouted',
        attempts: 2,
        nextAttemptAt: '2025-03-01T12:05:00.000Z',
      }),
    ],
    policy: {
      deny: 1,
      allow: 0,
      always: 0,
      invalid: [{ list: 'deny', line: 3, text: 'bad*.example.com', reason: 'not a pattern' }],
      unreadable: [],
      failsClosed: undefined,
    },
  };
  const lines = renderStatusTable(report, NOW).split('\n');
  const line = (host: string): string => lines.find((l) => l.startsWith(host)) ?? '';

  it('a refused name shows the policy verdict', () => {
    assert.match(line('denied.example.com'), /refused\s.*denied by \*\.example\.com/);
  });

  it('a waiting name shows the spent budget and until when', () => {
    assert.match(line('budget.example.com'), /waiting\s.*until 2025-03-01 15:00: budget account default spent/);
  });

  it('a failing name shows its last error and when the next try is', () => {
    assert.match(line('unrouted.example.com'), /failed\s.*PREFLIGHT_FAILED: NotRouted \(try 3 at 2025-03-01 12:05\)/);
  });

  it('ignored policy lines are listed with list, line, text and reason', () => {
    const at = lines.indexOf('Ignored policy lines');
    assert.ok(at > 0);
    assert.match(lines[at + 2] ?? '', /^deny\s+3\s+bad\*\.example\.com\s+not a pattern$/);
  });
});

describe('formatStatus', () => {
  it('prints the report as JSON with --json', () => {
    assert.deepEqual(JSON.parse(formatStatus(REPORT, { json: true, now: NOW })), JSON.parse(JSON.stringify(REPORT)));
  });
  it('prints the table otherwise', () => {
    assert.equal(formatStatus(REPORT, { json: false, now: NOW }), renderStatusTable(REPORT, NOW));
  });
});

describe('shortDate and truncate', () => {
  const dates: Array<[string | undefined, string]> = [
    ['2025-01-31T12:34:56.789Z', '2025-01-31 12:34'],
    ['2025-01-31T23:59:00+02:00', '2025-01-31 21:59'],
    [undefined, '-'],
    ['', '-'],
    ['not a date', 'not a date'],
  ];
  for (const [input, expected] of dates) {
    it(`shortDate(${JSON.stringify(input)}) is ${JSON.stringify(expected)}`, () =>
      assert.equal(shortDate(input), expected));
  }
  it('truncate keeps text at the limit and cuts text over it', () => {
    assert.equal(truncate('abcdef', 6), 'abcdef');
    assert.equal(truncate('abcdefg', 6), 'abcde…');
  });
});

describe('renderStatusTable for sinks', () => {
  const sink = (s: Partial<StatusReport['sinks'][number]>): StatusReport['sinks'][number] => ({
    name: 'haproxy',
    pending: 0,
    resyncPending: false,
    failures: 0,
    failingSince: undefined,
    lastError: undefined,
    lastErrorAt: undefined,
    lastSuccessAt: '2025-03-01T11:59:00.000Z',
    lastResyncAt: '2025-03-01T11:00:00.000Z',
    nextRetryAt: undefined,
    ...s,
  });
  const report: StatusReport = {
    ...REPORT,
    sinks: [
      sink({}),
      sink({
        name: 'hook',
        pending: 2,
        failures: 3,
        failingSince: '2025-03-01T11:50:00.000Z',
        lastError: 'HOOK_FAILED: the hook for a.example.com (renewed) exited with status 1',
        nextRetryAt: '2025-03-01T12:01:00.000Z',
      }),
    ],
  };
  const lines = renderStatusTable(report, NOW).split('\n');

  it('a healthy sink shows ok and its last success', () => {
    assert.match(lines.find((l) => l.startsWith('haproxy')) ?? '', /^haproxy\s+ok\s+0\s+2025-03-01 11:59\s+-$/);
  });

  it('a failing sink shows since when, what is pending and the error', () => {
    assert.match(
      lines.find((l) => l.startsWith('hook')) ?? '',
      /^hook\s+failing since 2025-03-01 11:50\s+2\s+2025-03-01 11:59\s+HOOK_FAILED: the hook for a\.example\.com/,
    );
  });

  it('no sinks, no section', () => {
    assert.ok(!renderStatusTable(REPORT, NOW).includes('Sinks'));
  });
});
