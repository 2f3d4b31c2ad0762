import { describe, expect, it } from 'vitest';
import { LogLimiter } from './log-limiter.ts';

describe('log limiter', () => {
  it('lets a few warnings per key and window through, then reports how many it held back', () => {
    let now = 0;
    const limiter = new LogLimiter({ windowMs: 1000, perWindowMax: 2, now: () => now });
    const decisions = Array.from({ length: 5 }, () => limiter.allow('peer-3').log);
    expect(decisions).toEqual([true, true, false, false, false]);
    expect(limiter.allow('peer-1').log).toBe(true); // another peer has its own budget
    now = 1000;
    expect(limiter.allow('peer-3')).toEqual({ log: true, suppressedBefore: 3 });
  });
});
