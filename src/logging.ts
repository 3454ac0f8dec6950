/**
 * The root pino logger and the field names every component uses. One child logger per component
 * (`component` field) and per job (`hostname`). Private keys, key authorizations and tokens are
 * redacted at the top of a line and one level down, and at the top of a child logger's bindings;
 * never log them on purpose either.
 */
import { pino, type Logger, type LevelWithSilent } from 'pino';

export type { Logger };

/** Fixed snake_case field names; use these constants rather than literals. */
export const F = {
  component: 'component',
  hostname: 'hostname',
  reason: 'reason',
  attempt: 'attempt',
  retryInMs: 'retry_in_ms',
  err: 'err',
  service: 'service',
  event: 'event',
  sink: 'sink',
} as const;

/** Lifecycle and audit events, logged in the `event` field. Documented in docs/events.md. */
export const EVENTS = {
  certObtaining: 'cert_obtaining',
  certObtained: 'cert_obtained',
  certRenewed: 'cert_renewed',
  certFailed: 'cert_failed',
  /**
   * An order was completed from its pending record (after a crash, a store outage, a lost lock),
   * without a new order.
   */
  certResumed: 'cert_resumed',
  /** The queue scheduled the next attempt after a failure (of the order or of the pre-flight check). */
  retryScheduled: 'retry_scheduled',
  /** A spent budget or a CA pause holds a certificate back; not a failure. */
  certDeferred: 'cert_deferred',
  certRetired: 'cert_retired',
  /** A record another tool wrote was taken over: the same certificate and key, now marked consul-acme's. */
  certAdopted: 'cert_adopted',
  /** A record another tool wrote was not taken over although adoption was asked for it. */
  adoptRefused: 'adopt_refused',
  /** The CA revoked a certificate at an operator's request (or said it was revoked already). */
  certRevoked: 'cert_revoked',
  /** Audit: an operator asked for a new certificate (`consul-acme reissue`). */
  reissueRequested: 'reissue_requested',
  /** Audit: an operator asked for a certificate to be revoked and replaced (`consul-acme revoke`). */
  revokeRequested: 'revoke_requested',
  /** Audit: an operator asked consul-acme to adopt a record (`consul-acme adopt`). */
  adoptRequested: 'adopt_requested',
  /** An operator request was carried out, or dropped because it no longer could be. */
  requestCompleted: 'request_completed',
  hostnameRejected: 'hostname_rejected',
  hostnameDenied: 'hostname_denied',
  policyChanged: 'policy_changed',
  policyLineInvalid: 'policy_line_invalid',
  /** A policy list cannot be read (ACL, Consul error): no new names are issued until it can. */
  policyUnreadable: 'policy_unreadable',
  discoverySnapshot: 'discovery_snapshot',
  registrationUpdated: 'registration_updated',
  /**
   * A registration the agent had lost (agent restarted without its data, deregistered by hand) was
   * registered again.
   */
  registrationRestored: 'registration_restored',
  /** A sink (HAProxy, Traefik, hook) now reflects a stored or retired certificate. */
  sinkApplied: 'sink_applied',
  /** A sink failed to apply a change or a re-sync; it is retried with backoff. */
  sinkFailed: 'sink_failed',
  sinkResynced: 'sink_resynced',
  sinkRecovered: 'sink_recovered',
  /** HAProxy's runtime API now serves a certificate (or no longer serves a retired one). */
  haproxyPushed: 'haproxy_pushed',
  hookRan: 'hook_ran',
  /** A stored record or KV value was written by a newer release in a format this one does not read; left alone. */
  recordNewerFormat: 'record_newer_format',
  /** The start-up self-check found permissions the tokens lack; the instance stays not ready. */
  permissionMissing: 'permission_missing',
  /** The start-up self-check found every permission; the instance may become ready. */
  selfCheckPassed: 'self_check_passed',
  /** A token file changed and the new token is in use; the registrations were made again with it. */
  tokenChanged: 'token_changed',
} as const;

/** Fields whose values are secrets, wherever a line or a child logger's bindings carry them. */
const SECRET_FIELDS = ['keyPem', 'key', 'keyAuthorization', 'token', 'hmacKey', 'accountKey'];
const SECRET_FIELD_SET = new Set(SECRET_FIELDS);
export const REDACTED = '[REDACTED]';

/**
 * pino's own redaction, one path per top-level field: the secret fields (in a line and in a child
 * logger's bindings) and the token headers of a request. No wildcard: with a path that starts with
 * `*`, pino copies every field of every line to look for secrets, the largest allocation of a busy
 * instance. `censorNested` does the level below instead.
 */
const REDACT_PATHS = [
  ...SECRET_FIELDS,
  'req.headers.authorization',
  'req.headers["x-vault-token"]',
  'req.headers["x-consul-token"]',
];

/**
 * A log line's fields with the secret fields one level down censored (`{ order: { keyPem } }`);
 * `fields` itself, copied nowhere, when there are none, which is every line but a few.
 */
export function censorNested(fields: Record<string, unknown>): Record<string, unknown> {
  let out: Record<string, unknown> | undefined;
  for (const name in fields) {
    const value = fields[name];
    if (!Object.hasOwn(fields, name) || typeof value !== 'object' || value === null || value instanceof Error) continue;
    if (Array.isArray(value)) continue;
    let inner: Record<string, unknown> | undefined;
    for (const field in value) {
      const secret = (value as Record<string, unknown>)[field];
      if (!Object.hasOwn(value, field) || !SECRET_FIELD_SET.has(field) || secret === undefined) continue;
      inner ??= { ...value };
      inner[field] = REDACTED;
    }
    if (inner === undefined) continue;
    out ??= { ...fields };
    out[name] = inner;
  }
  return out ?? fields;
}

export function createLogger(level: LevelWithSilent = 'info', destination?: pino.DestinationStream): Logger {
  const options: pino.LoggerOptions = {
    level,
    base: { service: 'consul-acme' },
    redact: { paths: REDACT_PATHS, censor: REDACTED },
    formatters: { log: censorNested },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  return destination ? pino(options, destination) : pino(options);
}

/** A logger that discards everything; for tests that do not read logs. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
