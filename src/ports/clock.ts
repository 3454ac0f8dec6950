/**
 * Time, injected everywhere that reads the time or waits, so that every decision and every wait can
 * be tested with a clock the test moves by hand. The two exceptions are deliberate: elapsed times
 * that are only reported (request latencies for metrics, a hook's run time, rate-limit buckets)
 * use the monotonic `performance.now()`, and the file store's writer lock compares with file
 * modification times, which only the system time can.
 *
 * Contract:
 * - `now()` is the wall-clock time; `nowMs()` the same as milliseconds.
 * - `setTimer(fn, delayMs)` calls `fn` once, `delayMs` from now, unless cancelled first; a timer
 *   never keeps the process alive (the service's listeners and watches do that). Delays beyond
 *   Node's timer range are fine: the timer may fire early, never late, so callers re-check the time.
 */
export interface Clock {
  now(): Date;
  nowMs(): number;
  setTimer(fn: () => void, delayMs: number): Timer;
}

export interface Timer {
  cancel(): void;
}

/** Node's timers cap at 2^31-1 ms (~24.8 days). */
const MAX_TIMER_MS = 2 ** 31 - 1;

export const systemClock: Clock = {
  now: () => new Date(),
  nowMs: () => Date.now(),
  setTimer(fn, delayMs) {
    const handle = setTimeout(fn, Math.min(Math.max(0, delayMs), MAX_TIMER_MS));
    handle.unref();
    return { cancel: () => clearTimeout(handle) };
  },
};

interface ManualTimer {
  at: number;
  seq: number;
  fn: () => void;
  cancelled: boolean;
}

/** A clock tests move by hand: `advance` fires the timers that fall due, in order. */
export class ManualClock implements Clock {
  private current: number;
  private timers: ManualTimer[] = [];
  private seq = 0;

  constructor(start: Date | string = '2026-01-01T00:00:00Z') {
    this.current = new Date(start).getTime();
  }

  now(): Date {
    return new Date(this.current);
  }

  nowMs(): number {
    return this.current;
  }

  setTimer(fn: () => void, delayMs: number): Timer {
    const timer: ManualTimer = { at: this.current + Math.max(0, delayMs), seq: this.seq++, fn, cancelled: false };
    this.timers.push(timer);
    return {
      cancel: () => {
        timer.cancelled = true;
      },
    };
  }

  /** Timers waiting to fire. */
  pendingTimers(): number {
    return this.timers.filter((t) => !t.cancelled).length;
  }

  /** Moves time forward by `ms`, firing every timer that falls due on the way, at its own time. */
  advance(ms: number): void {
    const target = this.current + ms;
    for (;;) {
      this.timers = this.timers.filter((t) => !t.cancelled);
      const next = this.timers.filter((t) => t.at <= target).sort((a, b) => a.at - b.at || a.seq - b.seq)[0];
      if (!next) break;
      this.current = Math.max(this.current, next.at);
      next.cancelled = true;
      next.fn();
    }
    this.current = target;
  }

  /** Sets the time; moving forward fires due timers as `advance` does. */
  set(to: Date | string): void {
    const target = new Date(to).getTime();
    if (target >= this.current) this.advance(target - this.current);
    else this.current = target;
  }
}
