/**
 * How an operator request (OperatorRequest in src/domain/request.ts) is recorded by every
 * RequestStore (Consul KV, memory): JSON with snake_case fields and a `format` number, so that a
 * later release can tell a record it does not understand from a damaged one. Reading is strict:
 * a request that is wrong in any way is not acted on (the operator repeats the command).
 */
import { REQUEST_KINDS, type OperatorRequest, type RequestKind } from '../domain/request.js';
import { isRevocationReason } from '../domain/revocation.js';

/** The format this release writes and the only one it reads. */
export const REQUEST_FORMAT = 1;

interface RequestFields {
  format: typeof REQUEST_FORMAT;
  hostname: string;
  kind: RequestKind;
  requested_at: string;
  requested_by: string;
  replaces?: { obtained_at: string; not_after: string; serial: string; cert?: string };
  revoke_reason?: string;
  revoked_at?: string;
}

/** The JSON text stored for `request`. */
export function requestToText(request: OperatorRequest): string {
  const fields: RequestFields = {
    format: REQUEST_FORMAT,
    hostname: request.hostname,
    kind: request.kind,
    requested_at: request.requestedAt.toISOString(),
    requested_by: request.requestedBy,
    ...(request.replaces === undefined
      ? {}
      : {
          replaces: {
            obtained_at: request.replaces.obtainedAt.toISOString(),
            not_after: request.replaces.notAfter.toISOString(),
            serial: request.replaces.serial,
            ...(request.replaces.certPem === undefined ? {} : { cert: request.replaces.certPem }),
          },
        }),
    ...(request.revokeReason === undefined ? {} : { revoke_reason: request.revokeReason }),
    ...(request.revokedAt === undefined ? {} : { revoked_at: request.revokedAt.toISOString() }),
  };
  return JSON.stringify(fields);
}

function date(value: unknown): Date | undefined {
  if (typeof value !== 'string') return undefined;
  const parsed = new Date(value);
  return Number.isNaN(parsed.getTime()) ? undefined : parsed;
}

/** The request stored under `hostname` in `text`, or why it cannot be read. */
export function requestFromText(
  text: string,
  hostname: string,
): { ok: true; request: OperatorRequest } | { ok: false; problem: string } {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return { ok: false, problem: 'is not JSON' };
  }
  if (parsed === null || typeof parsed !== 'object') return { ok: false, problem: 'is not a JSON object' };
  const f = parsed as Partial<Record<keyof RequestFields, unknown>>;
  if (f.format !== REQUEST_FORMAT)
    return { ok: false, problem: `has format ${String(f.format)}, not ${REQUEST_FORMAT}` };
  if (f.hostname !== hostname) return { ok: false, problem: `names ${String(f.hostname)}, not ${hostname}` };
  if (!(REQUEST_KINDS as readonly unknown[]).includes(f.kind))
    return { ok: false, problem: `has kind ${String(f.kind)}` };
  const requestedAt = date(f.requested_at);
  if (requestedAt === undefined || typeof f.requested_by !== 'string') {
    return { ok: false, problem: 'lacks requested_at or requested_by' };
  }
  const kind = f.kind as RequestKind;
  let replaces: OperatorRequest['replaces'];
  if (f.replaces !== undefined) {
    const raw: unknown = f.replaces;
    const r: Partial<Record<'obtained_at' | 'not_after' | 'serial' | 'cert', unknown>> | null =
      typeof raw === 'object' && raw !== null ? raw : null;
    const obtainedAt = date(r?.obtained_at);
    const notAfter = date(r?.not_after);
    if (r === null || obtainedAt === undefined || notAfter === undefined || typeof r.serial !== 'string') {
      return { ok: false, problem: 'has an unreadable replaces field' };
    }
    replaces = {
      obtainedAt,
      notAfter,
      serial: r.serial,
      ...(typeof r.cert === 'string' ? { certPem: r.cert } : {}),
    };
  }
  if (kind !== 'adopt' && replaces === undefined) return { ok: false, problem: `is a ${kind} without replaces` };
  const revokeReason = f.revoke_reason;
  if (kind === 'revoke' && (!isRevocationReason(revokeReason) || replaces?.certPem === undefined)) {
    return { ok: false, problem: 'is a revocation without a reason or a certificate' };
  }
  return {
    ok: true,
    request: {
      hostname,
      kind,
      requestedAt,
      requestedBy: f.requested_by,
      replaces,
      revokeReason: isRevocationReason(revokeReason) ? revokeReason : undefined,
      revokedAt: date(f.revoked_at),
    },
  };
}
