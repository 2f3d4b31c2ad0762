// A slice of the random simulation that fits in CI; `npm run sim -- --seeds 10000` runs the long one.
import { describe, expect, it } from 'vitest';
import type { FaultMode } from '../../src/core/quorum.ts';
import { reproduceCommand, runSeed } from './run.ts';

function failures(replicas: number, mode: FaultMode, byzantine: boolean, seeds: number): string[] {
  const failed: string[] = [];
  for (let seed = 1; seed <= seeds; seed++) {
    const options = { seed, replicas, mode, byzantine };
    const result = runSeed(options);
    if (result.violations.length > 0) {
      failed.push(`${reproduceCommand(options)}: ${result.violations[0]?.kind} ${result.violations[0]?.detail}`);
    }
  }
  return failed;
}

describe('random schedules with network faults, crashes, partitions and Byzantine replicas', () => {
  it('BFT n=4, one Byzantine replica: no violation in 400 seeds', () => {
    expect(failures(4, 'bft', true, 400)).toEqual([]);
  });
  it('BFT n=7, two Byzantine replicas: no violation in 120 seeds', () => {
    expect(failures(7, 'bft', true, 120)).toEqual([]);
  });
  it('crash mode n=3 and n=5: no violation in 60 seeds each', () => {
    expect([...failures(3, 'crash', false, 60), ...failures(5, 'crash', false, 60)]).toEqual([]);
  });
});
