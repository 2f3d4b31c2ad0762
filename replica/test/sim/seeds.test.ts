// A slice of the random simulation that fits in CI; `npm run sim -- --seeds 10000` runs the long one.
import { describe, expect, it } from 'vitest';
import type { FaultMode } from '../../src/core/quorum.ts';
import { type SeedOptions, reproduceCommand, runSeed } from './run.ts';

function failures(replicas: number, mode: FaultMode, byzantine: boolean, seeds: number, extra: Partial<SeedOptions> = {}): string[] {
  const failed: string[] = [];
  for (let seed = 1; seed <= seeds; seed++) {
    const options = { seed, replicas, mode, byzantine, ...extra };
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

describe('random schedules with reconfigurations: a View Manager adds and removes replicas, and sends requests that must be refused', () => {
  it('BFT n=4 and n=7 with Byzantine replicas, and crash mode n=3: no violation in 60, 30 and 30 seeds', () => {
    expect([
      ...failures(4, 'bft', true, 60, { reconfiguration: true }),
      ...failures(7, 'bft', true, 30, { reconfiguration: true }),
      ...failures(3, 'crash', false, 30, { reconfiguration: true }),
    ]).toEqual([]);
  });

  it('the checkers catch replicas that apply a reconfiguration the View Manager did not sign', () => {
    const kinds = new Set<string>();
    for (let seed = 1; seed <= 40 && !kinds.has('reconfiguration'); seed++) {
      const result = runSeed({ seed, replicas: 4, mode: 'bft', byzantine: false, reconfiguration: true, brokenViewManagerCheck: true });
      for (const violation of result.violations) kinds.add(violation.kind);
    }
    expect(kinds).toContain('reconfiguration');
  });
});
