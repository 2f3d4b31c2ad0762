// Warnings a peer can trigger at will (malformed frames, refused certificates) must not let it flood the
// log: the counters see every event, the log sees a few per peer per window and then how many it missed.

import { limits } from './constants.ts';

export class LogLimiter {
  private readonly windowMs: number;
  private readonly perWindowMax: number;
  private readonly now: () => number;
  private readonly windows = new Map<string, { startMs: number; logged: number; suppressed: number }>();

  constructor(options: { windowMs?: number; perWindowMax?: number; now?: () => number } = {}) {
    this.windowMs = options.windowMs ?? limits.logLimiterWindowMs;
    this.perWindowMax = options.perWindowMax ?? limits.logLimiterPerWindowMax;
    this.now = options.now ?? Date.now;
  }

  /**
   * Whether to log this event for `key`; `suppressedBefore` is how many were dropped in the window that
   * just ended, for the caller to mention once.
   */
  allow(key: string): { log: boolean; suppressedBefore: number } {
    const now = this.now();
    let window = this.windows.get(key);
    let suppressedBefore = 0;
    if (window === undefined || now - window.startMs >= this.windowMs) {
      suppressedBefore = window?.suppressed ?? 0;
      if (window === undefined && this.windows.size >= limits.logLimiterKeysMax) {
        // Too many distinct keys at once: forget the oldest rather than grow.
        const oldest = this.windows.keys().next();
        if (!oldest.done) this.windows.delete(oldest.value);
      }
      window = { startMs: now, logged: 0, suppressed: 0 };
      this.windows.delete(key);
      this.windows.set(key, window);
    }
    if (window.logged < this.perWindowMax) {
      window.logged++;
      return { log: true, suppressedBefore };
    }
    window.suppressed++;
    return { log: false, suppressedBefore };
  }
}
