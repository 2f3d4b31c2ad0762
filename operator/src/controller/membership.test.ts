import { describe, expect, it } from 'vitest';
import { type CurrentView, planMembershipStep, viewAfter } from './membership.ts';

const view = (members: number[], f: number, mode: 'bft' | 'crash' = 'bft', number = 0): CurrentView => ({ number, mode, f, members });

/** Every step from `start` until the plan says none, each applied as the replicas would. */
function walk(start: CurrentView, desired: { replicas: number; f?: number }, leader = 0): Array<{ kind: string; id?: number; f: number; n: number }> {
  const steps: Array<{ kind: string; id?: number; f: number; n: number }> = [];
  let current = start;
  let nextId = Math.max(...start.members) + 1;
  for (let i = 0; i < 20; i++) {
    const step = planMembershipStep(current, desired, nextId, leader);
    if (step.kind === 'none') return steps;
    current = viewAfter(current, step);
    if (step.kind === 'add') nextId = step.id + 1;
    steps.push({ kind: step.kind, ...('id' in step ? { id: step.id } : {}), f: current.f, n: current.members.length });
  }
  throw new Error('the plan does not converge');
}

describe('membership steps toward the spec', () => {
  it('grows 4 → 7 (bft, f unset) one replica at a time, raising f to 2 with the last', () => {
    expect(walk(view([0, 1, 2, 3], 1), { replicas: 7 })).toEqual([
      { kind: 'add', id: 4, f: 1, n: 5 },
      { kind: 'add', id: 5, f: 1, n: 6 },
      { kind: 'add', id: 6, f: 2, n: 7 },
    ]);
  });

  it('shrinks 7 → 4 lowering f with the first removal, highest ids first, never reusing ids', () => {
    expect(walk(view([0, 1, 2, 3, 4, 5, 6], 2), { replicas: 4 })).toEqual([
      { kind: 'remove', id: 6, f: 1, n: 6 },
      { kind: 'remove', id: 5, f: 1, n: 5 },
      { kind: 'remove', id: 4, f: 1, n: 4 },
    ]);
    // Grown again after that, the next replica is 7, not 4.
    expect(planMembershipStep(view([0, 1, 2, 3], 1, 'bft', 6), { replicas: 5 }, 7, 0)).toEqual({ kind: 'add', id: 7, f: 1 });
  });

  it('no step breaks n ≥ 3f+1 (bft) or n ≥ 2f+1 (crash), whatever the sizes', () => {
    for (const mode of ['bft', 'crash'] as const) {
      for (let from = mode === 'bft' ? 4 : 3; from <= 10; from++) {
        for (let to = mode === 'bft' ? 4 : 3; to <= 10; to++) {
          const start = view(Array.from({ length: from }, (_, id) => id), mode === 'bft' ? Math.floor((from - 1) / 3) : Math.floor((from - 1) / 2), mode);
          for (const step of walk(start, { replicas: to })) expect(step.n).toBeGreaterThanOrEqual(mode === 'bft' ? 3 * step.f + 1 : 2 * step.f + 1);
        }
      }
    }
  });

  it('removes another replica than the leader when it can', () => {
    expect(planMembershipStep(view([0, 1, 2, 3, 4], 1), { replicas: 4 }, 5, 4)).toEqual({ kind: 'remove', id: 3, f: 1 });
  });

  it('changes f alone when the spec changes only f, and keeps an f the spec fixes', () => {
    expect(planMembershipStep(view([0, 1, 2, 3, 4, 5, 6], 2), { replicas: 7, f: 1 }, 7, 0)).toEqual({ kind: 'set-f', f: 1 });
    expect(walk(view([0, 1, 2, 3], 1), { replicas: 7, f: 1 })).toEqual([
      { kind: 'add', id: 4, f: 1, n: 5 },
      { kind: 'add', id: 5, f: 1, n: 6 },
      { kind: 'add', id: 6, f: 1, n: 7 },
    ]);
    expect(planMembershipStep(view([0, 1, 2, 3], 1), { replicas: 4 }, 4, 0)).toEqual({ kind: 'none' });
  });
});
