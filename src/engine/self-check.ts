/**
 * The start-up self-check: before the instance says it is ready, every permission its tokens need
 * is checked (ports/permission-check.ts), so that a policy missing a rule fails the Nomad
 * deployment (its health check never passes, `auto_revert` rolls back) instead of failing the
 * first issuance days later. While anything is missing, or a check cannot tell, the instance stays
 * not ready, says what is missing in the log (`permission_missing`) and in `/status`
 * (`permissions`), and checks again every `retryMs`, so a policy fixed meanwhile is picked up
 * without a restart. Once everything passed the check is not run again.
 */
import { ConsulAcmeError, describeError } from '../errors.js';
import { EVENTS, F, type Logger } from '../logging.js';
import type { Clock, Timer } from '../ports/clock.js';
import { describeMissingPermission, type MissingPermission, type PermissionCheck } from '../ports/permission-check.js';
import type { PermissionsStatus } from './status.js';

export interface SelfCheckDeps {
  checks: readonly PermissionCheck[];
  clock: Clock;
  logger: Logger;
  /** How long to wait before checking again after a failure. */
  retryMs: number;
}

export class SelfCheck {
  private readonly log: Logger;
  private passedAtMs: number | undefined;
  private checkedAtMs: number | undefined;
  private missing: MissingPermission[] = [];
  private error: string | undefined;
  private timer: Timer | undefined;
  private readonly abort = new AbortController();
  private waiting: Promise<boolean> | undefined;
  private settle: ((passed: boolean) => void) | undefined;

  constructor(private readonly deps: SelfCheckDeps) {
    this.log = deps.logger.child({ [F.component]: 'self-check' });
  }

  passed(): boolean {
    return this.passedAtMs !== undefined;
  }

  status(): PermissionsStatus {
    return {
      passed: this.passed(),
      checkedAt: this.checkedAtMs === undefined ? undefined : new Date(this.checkedAtMs).toISOString(),
      missing: this.missing.map((m) => ({ ...m })),
      error: this.error,
    };
  }

  /** Runs the checks until they pass; resolves true then, or false when stopped first. */
  start(): Promise<boolean> {
    this.waiting ??= new Promise<boolean>((resolve) => {
      this.settle = resolve;
      if (this.deps.checks.length === 0) {
        this.passedAtMs = this.deps.clock.nowMs();
        resolve(true);
        return;
      }
      void this.run();
    });
    return this.waiting;
  }

  stop(): void {
    this.abort.abort();
    this.timer?.cancel();
    this.timer = undefined;
    this.settle?.(this.passed());
  }

  private async run(): Promise<void> {
    this.timer = undefined;
    if (this.abort.signal.aborted) return;
    const missing: MissingPermission[] = [];
    const errors: string[] = [];
    for (const check of this.deps.checks) {
      try {
        missing.push(...(await check.check(this.abort.signal)));
      } catch (err) {
        if (this.abort.signal.aborted) return;
        errors.push(`${check.name}: ${describeError(err)}`);
      }
    }
    if (this.abort.signal.aborted) return;
    this.checkedAtMs = this.deps.clock.nowMs();
    this.missing = missing;
    this.error = errors.length > 0 ? errors.join('; ') : undefined;
    if (missing.length === 0 && errors.length === 0) {
      this.passedAtMs = this.checkedAtMs;
      this.log.info({ [F.event]: EVENTS.selfCheckPassed }, 'every permission the instance needs is granted');
      this.settle?.(true);
      return;
    }
    const problem = new ConsulAcmeError(
      'PERMISSION_MISSING',
      missing.length > 0
        ? `missing permissions: ${missing.map(describeMissingPermission).join('; ')}`
        : `permissions could not be checked: ${this.error ?? ''}`,
    );
    this.log.error(
      {
        [F.event]: EVENTS.permissionMissing,
        missing: missing.map((m) => `${m.system}: ${m.permission}`),
        [F.err]: describeError(problem),
        [F.retryInMs]: this.deps.retryMs,
      },
      missing.length > 0
        ? 'permissions missing; not ready until they are granted'
        : 'permissions could not be checked; not ready, checking again',
    );
    this.timer = this.deps.clock.setTimer(() => void this.run(), this.deps.retryMs);
  }
}
