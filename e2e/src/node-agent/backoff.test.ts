import { describe, expect, it } from 'vitest';
import { kubeletRestartBackoff, restartDelayMs } from './backoff.ts';

describe('restart backoff', () => {
  it('restarts at once the first time, then doubles from the base up to the cap', () => {
    expect(restartDelayMs(kubeletRestartBackoff, 0)).toBe(0);
    expect(restartDelayMs(kubeletRestartBackoff, 1)).toBe(10_000);
    expect(restartDelayMs(kubeletRestartBackoff, 2)).toBe(20_000);
    expect(restartDelayMs(kubeletRestartBackoff, 6)).toBe(300_000);
    expect(restartDelayMs(kubeletRestartBackoff, 1000)).toBe(300_000);
  });
});
