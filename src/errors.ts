/**
 * One error hierarchy for the whole service. Every error carries a stable `code` (listed in
 * docs/errors.md and in ERROR_CODES below), a `retryable` flag that the queue reads, and the
 * original `cause`. Adapters classify the errors of the libraries they wrap at their boundary,
 * so nothing above the adapters ever inspects a foreign error.
 */

export const ERROR_CODES = {
  CONFIG_INVALID: 'Configuration is invalid; every problem is listed.',
  ACME_PROBLEM: 'The ACME server answered with a problem document (type and detail kept).',
  ACME_RATE_LIMITED: 'The ACME server refused with urn:ietf:params:acme:error:rateLimited; Retry-After is kept.',
  ACME_UNREACHABLE: 'The ACME server could not be reached or answered with a server error.',
  STORE_CONFLICT: 'A check-and-set write found a newer version than the one read; nothing was overwritten.',
  STORE_UNAVAILABLE: 'The certificate store could not be read or written (network, 5xx, sealed Vault).',
  STORE_PERMISSION_DENIED: 'The certificate store refused the token (Vault 403).',
  STORE_VERIFY_FAILED: 'A secret read back after writing did not match what was written.',
  CONSUL_UNAVAILABLE: 'Consul could not be reached or answered with a server error.',
  CONSUL_PERMISSION_DENIED: 'Consul refused the token: "Permission denied" or "ACL not found".',
  LOCK_LOST: 'The Consul session behind a lock was lost; the work under it was abandoned.',
  ABORTED: 'The operation was aborted (shutdown or lost lock).',
  INVALID_HOSTNAME: 'A hostname cannot be issued (see the reason).',
  PREFLIGHT_FAILED:
    'The pre-flight check found that the name does not resolve (NoDNS), that its CAA records do not allow the CA or could not be read (CAA), or that its challenge path does not reach consul-acme (NotRouted); no order was placed.',
  SINK_WRITE_FAILED: 'A sink could not write or remove its files (permissions, disk full); retried with backoff.',
  HAPROXY_UNREACHABLE:
    "HAProxy's stats socket is absent, refused the connection or did not answer in time; the files are written and the push is retried.",
  HAPROXY_REFUSED:
    'HAProxy answered a runtime API command with an error (its answer is in the message); retried with backoff.',
  HOOK_FAILED: 'The hook command exited non-zero, outlived its timeout or could not be started; retried with backoff.',
  ADOPT_REFUSED:
    'A record consul-acme did not write cannot be adopted: its certificate or key does not load or match, or its key type is not one consul-acme issues; nothing was written.',
  REQUEST_REFUSED:
    'An operator command (adopt, reissue, revoke) was refused for a name: not declared, nothing of ours stored, or an unknown revocation reason; the message says which.',
  FORMAT_NEWER:
    'A stored record or Consul KV value was written by a newer release in a format this one does not read; it is left alone and nothing is ordered for its name (a rolling upgrade in progress, or a downgrade).',
  PERMISSION_MISSING:
    'The start-up self-check found permissions the Vault or Consul token lacks (each named); the instance stays not ready and checks again.',
  INTERNAL: 'An unexpected error; the message says where.',
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export interface ConsulAcmeErrorOptions {
  cause?: unknown;
  retryable?: boolean;
}

export class ConsulAcmeError extends Error {
  readonly code: ErrorCode;
  readonly retryable: boolean;

  constructor(code: ErrorCode, message: string, options: ConsulAcmeErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.retryable = options.retryable ?? false;
  }
}

export class ConfigError extends ConsulAcmeError {
  readonly problems: readonly string[];
  constructor(problems: readonly string[]) {
    super('CONFIG_INVALID', `invalid configuration:\n  - ${problems.join('\n  - ')}`);
    this.problems = problems;
  }
}

export interface AcmeProblemOptions extends ConsulAcmeErrorOptions {
  /** The problem document's `type`, e.g. `urn:ietf:params:acme:error:rateLimited`. */
  problemType?: string;
  /** HTTP status of the failing response, when one was seen. */
  status?: number;
  /** Seconds from the `Retry-After` header, when the server sent one. */
  retryAfterSeconds?: number;
}

export class AcmeProblemError extends ConsulAcmeError {
  readonly problemType: string | undefined;
  readonly status: number | undefined;
  readonly retryAfterSeconds: number | undefined;
  constructor(
    code: 'ACME_PROBLEM' | 'ACME_RATE_LIMITED' | 'ACME_UNREACHABLE',
    message: string,
    options: AcmeProblemOptions = {},
  ) {
    super(code, message, { retryable: options.retryable ?? true, cause: options.cause });
    this.problemType = options.problemType;
    this.status = options.status;
    this.retryAfterSeconds = options.retryAfterSeconds;
  }
}

export class StoreConflictError extends ConsulAcmeError {
  constructor(what: string, expectedVersion: number, options: ConsulAcmeErrorOptions = {}) {
    super(
      'STORE_CONFLICT',
      `${what}: check-and-set expected version ${expectedVersion} but the stored version differs`,
      {
        retryable: false,
        cause: options.cause,
      },
    );
  }
}

export class LockLostError extends ConsulAcmeError {
  constructor(key: string, options: ConsulAcmeErrorOptions = {}) {
    super('LOCK_LOST', `lock ${key} was lost`, { retryable: true, cause: options.cause });
  }
}

export class AbortedError extends ConsulAcmeError {
  constructor(what: string, options: ConsulAcmeErrorOptions = {}) {
    super('ABORTED', `${what} was aborted`, { retryable: true, cause: options.cause });
  }
}

/** Throws an AbortedError when the signal has fired. Call between steps of long operations. */
export function throwIfAborted(signal: AbortSignal | undefined, what: string): void {
  if (signal?.aborted) throw new AbortedError(what, { cause: signal.reason });
}

/**
 * Codes that mean our own infrastructure failed (the store, Consul, a lock), not the name: the work
 * is retried on a short schedule and never counts as the name's failure, since it succeeds as soon
 * as the infrastructure is back.
 */
export const INFRASTRUCTURE_FAULT_CODES: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  'STORE_UNAVAILABLE',
  'STORE_PERMISSION_DENIED',
  'STORE_VERIFY_FAILED',
  'CONSUL_UNAVAILABLE',
  'CONSUL_PERMISSION_DENIED',
  'LOCK_LOST',
]);

/** Whether `err` is a fault of our infrastructure (see INFRASTRUCTURE_FAULT_CODES). */
export function isInfrastructureFault(err: unknown): err is ConsulAcmeError {
  return err instanceof ConsulAcmeError && INFRASTRUCTURE_FAULT_CODES.has(err.code);
}

/** Wraps anything thrown into a ConsulAcmeError, keeping ours as they are. */
export function asConsulAcmeError(err: unknown, where: string): ConsulAcmeError {
  if (err instanceof ConsulAcmeError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new ConsulAcmeError('INTERNAL', `${where}: ${message}`, { cause: err, retryable: true });
}

/** A short, single-line description of an error for logs and the status API. */
export function describeError(err: unknown): string {
  if (err instanceof ConsulAcmeError) return `${err.code}: ${err.message}`;
  if (err instanceof Error) return err.message;
  return String(err);
}
