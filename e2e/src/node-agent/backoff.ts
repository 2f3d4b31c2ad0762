// Container restart backoff as the kubelet does it: doubling from a base to a cap, reset after a
// container has run long enough without failing.
export interface RestartBackoffPolicy {
  baseMs: number;
  maxMs: number;
  /** A container that ran this long before exiting starts over at baseMs. */
  resetAfterMs: number;
}

export const kubeletRestartBackoff: RestartBackoffPolicy = { baseMs: 10_000, maxMs: 300_000, resetAfterMs: 600_000 };

export function restartDelayMs(policy: RestartBackoffPolicy, consecutiveFailures: number): number {
  if (consecutiveFailures <= 0) return 0;
  return Math.min(policy.maxMs, policy.baseMs * 2 ** Math.min(consecutiveFailures - 1, 30));
}
