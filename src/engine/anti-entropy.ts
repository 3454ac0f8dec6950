/**
 * State in Consul heals itself instead of being assumed. Every `everyMs` each step compares what
 * this instance put into Consul with what Consul holds now, and restores what Consul lost (an
 * agent restarted without its data, a service deregistered through the API, a cluster that lost
 * its KV): the challenge-route and certificate-health registrations, and the challenge tokens of
 * validations in flight. A step that fails is logged and tried again at the next round.
 */
import { describeError } from '../errors.js';
import { F, type Logger } from '../logging.js';
import type { Clock, Timer } from '../ports/clock.js';

/** How often the registrations and tokens in flight are compared with Consul. */
export const DEFAULT_ANTI_ENTROPY_EVERY_MS = 30_000;

export interface AntiEntropyStep {
  /** What is checked, for logs: `registrations`, `challenge tokens`. */
  name: string;
  run: () => Promise<unknown>;
}

export class AntiEntropy {
  private timer: Timer | undefined;
  private running = false;
  private readonly log: Logger;

  constructor(
    private readonly deps: { steps: readonly AntiEntropyStep[]; clock: Clock; logger: Logger; everyMs?: number },
  ) {
    this.log = deps.logger.child({ [F.component]: 'anti-entropy' });
  }

  start(): void {
    this.running = true;
    this.schedule();
  }

  stop(): void {
    this.running = false;
    this.timer?.cancel();
    this.timer = undefined;
  }

  /** One round of every step, now. */
  async runOnce(): Promise<void> {
    for (const step of this.deps.steps) {
      try {
        await step.run();
      } catch (err) {
        this.log.warn(
          { step: step.name, [F.err]: describeError(err) },
          'could not compare with Consul; retrying next round',
        );
      }
    }
  }

  private schedule(): void {
    if (!this.running) return;
    this.timer = this.deps.clock.setTimer(() => {
      void this.runOnce().finally(() => this.schedule());
    }, this.deps.everyMs ?? DEFAULT_ANTI_ENTROPY_EVERY_MS);
  }
}
