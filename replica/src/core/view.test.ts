import { describe, expect, it } from 'vitest';
import { BftError } from '../errors.ts';
import { ViewInfo, invalidView } from './view.ts';

describe('views', () => {
  it('rejects a BFT view too small for its f, naming the rule', () => {
    expect(invalidView({ number: 0, mode: 'bft', f: 1, members: [0, 1, 2] })).toMatch(/n ≥ 3f\+1/);
    expect(() => new ViewInfo({ number: 0, mode: 'bft', f: 1, members: [0, 1, 2] })).toThrow(BftError);
  });
  it('accepts a crash view of 2f+1 and rejects duplicate members', () => {
    expect(invalidView({ number: 0, mode: 'crash', f: 1, members: [0, 1, 2] })).toBeNull();
    expect(invalidView({ number: 0, mode: 'crash', f: 1, members: [0, 1, 1] })).toMatch(/distinct/);
  });
  it('rotates leadership over the members in order', () => {
    const info = new ViewInfo({ number: 3, mode: 'bft', f: 1, members: [5, 7, 9, 11] });
    expect([0, 1, 2, 3, 4, 9].map((r) => info.leaderOf(r))).toEqual([5, 7, 9, 11, 5, 7]);
  });
});
