/**
 * `consul-acme status`: fetches GET /status from a running instance's admin API and renders it as
 * a plain-text table (or passes the JSON through).
 */
import type { CertificateStatus, StatusReport } from '../engine/status.js';
import { ConsulAcmeError } from '../errors.js';
import { adminRequest } from './admin-client.js';

export const DEFAULT_STATUS_TIMEOUT_MS = 5000;
export const LAST_ERROR_MAX_CHARS = 60;
const EMPTY = '-';

function isStatusReport(value: unknown): value is StatusReport {
  if (value === null || typeof value !== 'object') return false;
  const v = value as Partial<Record<keyof StatusReport, unknown>>;
  return typeof v.instance === 'string' && Array.isArray(v.certificates) && Array.isArray(v.rejected);
}

/**
 * GET `<adminUrl>/status`, with `Authorization: Bearer <adminToken>` when a token is given. Throws
 * a ConsulAcmeError whose message says what went wrong: "cannot reach consul-acme at <url>:
 * <reason>", an HTTP status, or a body that is not a report.
 */
export async function fetchStatus(
  adminUrl: string,
  { timeoutMs = DEFAULT_STATUS_TIMEOUT_MS, adminToken }: { timeoutMs?: number; adminToken?: string | undefined } = {},
): Promise<StatusReport> {
  const answer = await adminRequest({ adminUrl, adminToken, path: '/status', timeoutMs });
  if (!answer.ok) {
    const snippet = answer.text.replace(/\s+/g, ' ').trim().slice(0, 200);
    throw new ConsulAcmeError(
      'INTERNAL',
      `consul-acme at ${answer.base} answered ${answer.url} with HTTP ${answer.status}${snippet ? `: ${snippet}` : ''}`,
      { retryable: true },
    );
  }
  if (!isStatusReport(answer.json)) {
    throw new ConsulAcmeError(
      'INTERNAL',
      `${answer.url} did not return a consul-acme status report (is ${answer.base} the admin address?)`,
    );
  }
  return answer.json;
}

/** `2025-01-31T12:34:56.789Z` → `2025-01-31 12:34` (UTC); missing → `-`; unparseable as given. */
export function shortDate(iso: string | undefined): string {
  if (iso === undefined || iso === '') return EMPTY;
  const ms = Date.parse(iso);
  if (Number.isNaN(ms)) return clean(iso);
  return new Date(ms).toISOString().slice(0, 16).replace('T', ' ');
}

/** One line, no control characters: values come from Consul tags and error messages. */
function clean(text: string): string {
  return text
    .replace(/\s+/g, ' ')
    .replace(/\p{Cc}/gu, '?')
    .trim();
}

/** Shortened to at most `max` characters, ending in `…` when cut. */
export function truncate(text: string, max: number): string {
  const chars = [...text];
  return chars.length <= max ? text : `${chars.slice(0, max - 1).join('')}…`;
}

function orDash(text: string | undefined): string {
  return text === undefined || text.trim() === '' ? EMPTY : clean(text);
}

function ago(iso: string | undefined, now: Date): string {
  if (iso === undefined) return '';
  const ms = now.getTime() - Date.parse(iso);
  if (Number.isNaN(ms)) return '';
  const s = Math.round(ms / 1000);
  if (s < 0) return ' (in the future)';
  if (s < 60) return ` (${s}s ago)`;
  if (s < 3600) return ` (${Math.floor(s / 60)}m ago)`;
  if (s < 86_400) return ` (${Math.floor(s / 3600)}h ago)`;
  return ` (${Math.floor(s / 86_400)}d ago)`;
}

/** Columns padded to their widest cell, two spaces apart, no trailing spaces. */
function table(header: string[], rows: string[][]): string[] {
  const width = (cell: string): number => [...cell].length;
  const widths = header.map((h, i) => Math.max(width(h), ...rows.map((r) => width(r[i] ?? ''))));
  return [header, ...rows].map((cells) =>
    cells
      .map((cell, i) => cell + ' '.repeat(Math.max(0, (widths[i] ?? 0) - width(cell))))
      .join('  ')
      .trimEnd(),
  );
}

/** What an operator request or an adoption adds to a line, when nothing else is to be said. */
function operatorNote(c: CertificateStatus): string | undefined {
  const request = c.request;
  if (request?.kind === 'revoke')
    return request.revokedAt
      ? `revoked (${request.revokeReason ?? '?'}), replacing`
      : `revocation requested (${request.revokeReason ?? '?'})`;
  if (request?.kind === 'reissue') return 'reissue requested';
  if (request?.kind === 'adopt') return 'adoption requested';
  if (c.adoption) return c.adoption;
  if (c.adoptedAt) return `adopted ${shortDate(c.adoptedAt)}`;
  return undefined;
}

/**
 * The LAST ERROR cell: the policy verdict of a refused name, what a waiting name waits for, the
 * last error with its retry, or else an operator request or adoption.
 */
function problemCell(c: CertificateStatus): string {
  let text: string | undefined;
  if (c.policy) text = c.policy;
  else if (c.waitingFor) text = `until ${shortDate(c.nextAttemptAt)}: ${c.waitingFor}`;
  else if (c.lastError && c.lastError.trim() !== '')
    text =
      c.attempts > 0 && c.nextAttemptAt
        ? `${c.lastError} (try ${c.attempts + 1} at ${shortDate(c.nextAttemptAt)})`
        : c.lastError;
  else text = operatorNote(c);
  return text === undefined ? EMPTY : truncate(clean(text), LAST_ERROR_MAX_CHARS);
}

function certificateRow(c: CertificateStatus): string[] {
  return [
    clean(c.hostname),
    c.state,
    shortDate(c.expiresAt),
    shortDate(c.renewsAt),
    problemCell(c),
    c.services.length === 0 ? EMPTY : c.services.map(clean).join(','),
  ];
}

/**
 * The report as plain text: a few summary lines, one aligned row per certificate (times in UTC),
 * then the refused names with reason and service when there are any.
 */
export function renderStatusTable(report: StatusReport, now: Date): string {
  const d = report.discovery;
  const sinksOnly = report.mode === 'sinks';
  const lines: string[] = sinksOnly
    ? [
        `instance   ${clean(report.instance)} (${report.ready ? 'ready' : 'not ready'}), sinks only: no issuance`,
        `store      ${orDash(report.store)}, last listed ${shortDate(d.lastSyncAt)}${ago(d.lastSyncAt, now)}` +
          (d.lastError ? `, last error: ${truncate(clean(d.lastError), LAST_ERROR_MAX_CHARS)}` : ''),
      ]
    : [
        `instance   ${clean(report.instance)} (${report.ready ? 'ready' : 'not ready'})`,
        `store      ${orDash(report.store)}`,
        `ca         ${orDash(report.directoryUrl)}`,
        `discovery  ${d.services} service${d.services === 1 ? '' : 's'}, last sync ${shortDate(d.lastSyncAt)}${ago(d.lastSyncAt, now)}` +
          (d.lastError ? `, last error: ${truncate(clean(d.lastError), LAST_ERROR_MAX_CHARS)}` : ''),
        '',
      ];
  if (sinksOnly) {
    // The sinks below are what this instance does.
  } else if (report.certificates.length === 0) {
    lines.push('No certificates.');
  } else {
    lines.push(
      ...table(
        ['HOSTNAME', 'STATE', 'EXPIRES', 'RENEWS AT', 'LAST ERROR', 'SERVICES'],
        report.certificates.map(certificateRow),
      ),
    );
  }
  const sinks = report.sinks ?? [];
  if (sinks.length > 0) {
    lines.push('', 'Sinks');
    lines.push(
      ...table(
        ['SINK', 'STATE', 'PENDING', 'LAST SUCCESS', 'LAST ERROR'],
        sinks.map((s) => [
          clean(s.name),
          s.failingSince === undefined ? 'ok' : `failing since ${shortDate(s.failingSince)}`,
          String(s.pending + (s.resyncPending ? 1 : 0)),
          shortDate(s.lastSuccessAt),
          s.failingSince === undefined || s.lastError === undefined
            ? EMPTY
            : truncate(
                clean(s.nextRetryAt ? `${s.lastError} (retry at ${shortDate(s.nextRetryAt)})` : s.lastError),
                LAST_ERROR_MAX_CHARS,
              ),
        ]),
      ),
    );
  }
  if (report.policy.invalid.length > 0) {
    lines.push('', 'Ignored policy lines');
    lines.push(
      ...table(
        ['LIST', 'LINE', 'TEXT', 'REASON'],
        report.policy.invalid.map((p) => [p.list, String(p.line), orDash(p.text), orDash(p.reason)]),
      ),
    );
  }
  if (report.rejected.length > 0) {
    lines.push('', 'Refused names');
    lines.push(
      ...table(
        ['NAME', 'REASON', 'SERVICE'],
        report.rejected.map((r) => [orDash(r.value), orDash(r.reason), orDash(r.service)]),
      ),
    );
  }
  return `${lines.join('\n')}\n`;
}

/** What `consul-acme status` prints: the table, or the report as indented JSON with `--json`. */
export function formatStatus(report: StatusReport, options: { json: boolean; now: Date }): string {
  return options.json ? `${JSON.stringify(report, null, 2)}\n` : renderStatusTable(report, options.now);
}
