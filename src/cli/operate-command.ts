/**
 * `consul-acme adopt`, `reissue` and `revoke`: sends the command to a running instance's admin API
 * (`POST /adopt`, `/reissue`, `/revoke`, with the admin token), prints what it accepted and refused,
 * then (unless --no-wait) polls `GET /certificates/<name>` until each accepted request is carried
 * out, printing the old and new serial, or why it still waits when the wait ends.
 *
 * The request itself is kept in Consul KV by the instance, so a command that stops waiting (or an
 * instance that dies) loses nothing: whichever instance gets to the name carries it out.
 */
import type { CertificateDetail, CommandAnswer } from '../http/admin-server.js';
import type { RequestOutcome } from '../engine/requests.js';
import { ConsulAcmeError } from '../errors.js';
import { adminRequest } from './admin-client.js';
import type { OperationCommand } from './args.js';

export const DEFAULT_COMMAND_TIMEOUT_MS = 60_000;
export const POLL_INTERVAL_MS = 1_000;

export interface OperateIo {
  /** Writes one line (no trailing newline) to stdout. */
  out(line: string): void;
  now(): number;
  sleep(ms: number): Promise<void>;
  fetch?: typeof fetch;
}

/** What became of one accepted name while the command waited. */
export interface NameOutcome {
  hostname: string;
  /** `done`: carried out; `dropped`: the instance gave the request up; `waiting`: still open when the wait ended. */
  result: 'done' | 'dropped' | 'waiting';
  oldSerial: string | undefined;
  newSerial: string | undefined;
  /** Why it still waits, or why it was dropped. */
  why: string | undefined;
}

async function call<T>(
  command: Pick<OperationCommand, 'adminUrl' | 'adminToken'>,
  method: 'GET' | 'POST',
  path: string,
  body: unknown,
  fetchImpl: typeof fetch,
): Promise<T> {
  const answer = await adminRequest({
    adminUrl: command.adminUrl,
    adminToken: command.adminToken,
    method,
    path,
    body,
    timeoutMs: DEFAULT_COMMAND_TIMEOUT_MS,
    fetchImpl,
  });
  const parsed = answer.json;
  if (!answer.ok) {
    const error =
      parsed !== null && typeof parsed === 'object' && typeof (parsed as { error?: unknown }).error === 'string'
        ? (parsed as { error: string }).error
        : answer.text.replace(/\s+/g, ' ').trim().slice(0, 200);
    throw new ConsulAcmeError(
      'REQUEST_REFUSED',
      `consul-acme at ${answer.base} refused ${method} ${path} (HTTP ${answer.status}): ${error}`,
    );
  }
  if (parsed === undefined)
    throw new ConsulAcmeError('INTERNAL', `${answer.url} did not answer JSON (is ${answer.base} the admin address?)`);
  return parsed as T;
}

function acceptedLine(
  operation: OperationCommand['operation'],
  r: Extract<RequestOutcome, { accepted: true }>,
  reason: unknown,
): string {
  const again = r.alreadyRequested ? ', requested already' : '';
  if (operation === 'adopt') return `${r.hostname}: adoption requested${again}`;
  if (operation === 'revoke')
    return `${r.hostname}: revocation requested (${String(reason)}) of serial ${r.serial ?? '?'}${again}`;
  return `${r.hostname}: reissue requested, replacing serial ${r.serial ?? '?'}${again}`;
}

/** Why a name still waits, from its status line: what it waits for, its last error, or its state. */
function waitingWhy(detail: CertificateDetail): string {
  const status = detail.status;
  if (status === undefined) return 'the instance does not know the name';
  if (status.waitingFor)
    return `${status.state}: ${status.waitingFor}${status.nextAttemptAt ? ` (until ${status.nextAttemptAt})` : ''}`;
  if (status.lastError)
    return `${status.state}: ${status.lastError}${status.nextAttemptAt ? ` (next try ${status.nextAttemptAt})` : ''}`;
  if (detail.request?.kind === 'revoke' && detail.request.revokedAt)
    return `${status.state}: revoked at ${detail.request.revokedAt}, replacement under way`;
  return status.state;
}

/** Whether the accepted request is carried out, judged from what the store holds and the request left. */
function judge(
  operation: OperationCommand['operation'],
  accepted: Extract<RequestOutcome, { accepted: true }>,
  detail: CertificateDetail,
): NameOutcome | undefined {
  const stored = detail.stored;
  const base = { hostname: accepted.hostname, oldSerial: accepted.serial, newSerial: stored?.serial };
  if (detail.request !== undefined) return undefined;
  const done =
    operation === 'adopt'
      ? stored?.managed === true
      : stored?.serial !== undefined && stored.serial !== accepted.serial;
  if (done) return { ...base, result: 'done', why: undefined };
  return {
    ...base,
    result: 'dropped',
    why: 'the instance removed the request without carrying it out (the name left, or the record could not be adopted); its log says why (event request_completed)',
  };
}

function doneLine(
  operation: OperationCommand['operation'],
  o: NameOutcome,
  detail: CertificateDetail | undefined,
): string {
  if (operation === 'adopt') {
    return `${o.hostname}: adopted, serial ${o.newSerial ?? '?'}${detail?.stored?.notAfter ? `, expires ${detail.stored.notAfter}` : ''}`;
  }
  if (operation === 'revoke')
    return `${o.hostname}: serial ${o.oldSerial ?? '?'} revoked; new serial ${o.newSerial ?? '?'}`;
  return `${o.hostname}: new serial ${o.newSerial ?? '?'} (was ${o.oldSerial ?? '?'})`;
}

/**
 * Runs one operator command; resolves the exit status (0 all done or accepted, 1 otherwise).
 * Throws a ConsulAcmeError when the instance cannot be reached or refuses the command as a whole.
 */
export async function runOperation(command: OperationCommand, io: OperateIo): Promise<number> {
  const fetchImpl = io.fetch ?? fetch;
  const answer = await call<CommandAnswer>(command, 'POST', command.path, command.body, fetchImpl);
  const results = Array.isArray(answer.results) ? answer.results : [];
  const accepted = results.filter((r): r is Extract<RequestOutcome, { accepted: true }> => r.accepted);
  const refused = results.filter((r): r is Extract<RequestOutcome, { accepted: false }> => !r.accepted);
  if (!command.json) {
    for (const r of accepted) io.out(acceptedLine(command.operation, r, command.body.reason));
    for (const r of refused) io.out(`${r.hostname}: refused: ${r.why}`);
    if (results.length === 0) io.out('no name was selected');
  }
  const outcomes: NameOutcome[] = [];
  if (command.wait && accepted.length > 0) {
    const deadline = io.now() + command.waitTimeoutMs;
    const open = new Map(accepted.map((r) => [r.hostname, r]));
    const lastWhy = new Map<string, string>();
    const lastDetail = new Map<string, CertificateDetail>();
    while (open.size > 0) {
      for (const [hostname, r] of open) {
        const detail = await call<CertificateDetail>(
          command,
          'GET',
          `/certificates/${encodeURIComponent(hostname)}`,
          undefined,
          fetchImpl,
        );
        lastDetail.set(hostname, detail);
        const outcome = judge(command.operation, r, detail);
        if (outcome !== undefined) {
          open.delete(hostname);
          outcomes.push(outcome);
          if (!command.json)
            io.out(
              outcome.result === 'done' ? doneLine(command.operation, outcome, detail) : `${hostname}: ${outcome.why}`,
            );
          continue;
        }
        const why = waitingWhy(detail);
        if (!command.json && why !== lastWhy.get(hostname) && why !== 'pending' && why !== 'issuing')
          io.out(`${hostname}: waiting: ${why}`);
        lastWhy.set(hostname, why);
      }
      if (open.size === 0 || io.now() >= deadline) break;
      await io.sleep(POLL_INTERVAL_MS);
    }
    for (const [hostname, r] of open) {
      const detail = lastDetail.get(hostname);
      const why = detail === undefined ? 'no answer' : waitingWhy(detail);
      outcomes.push({ hostname, result: 'waiting', oldSerial: r.serial, newSerial: undefined, why });
      if (!command.json) {
        io.out(
          `${hostname}: still waiting after ${Math.round(command.waitTimeoutMs / 1000)}s: ${why}. The request is kept and carried out by whichever instance gets to it; 'consul-acme status' follows it`,
        );
      }
    }
  }
  if (command.json) io.out(JSON.stringify({ results, outcomes }, null, 2));
  const allDone = command.wait ? outcomes.every((o) => o.result === 'done') : true;
  return refused.length === 0 && results.length > 0 && allDone ? 0 : 1;
}
