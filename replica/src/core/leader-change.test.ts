import { describe, expect, it } from 'vitest';
import { type InstanceState, chooseValue, emptyInstanceState, syncValueAllowed } from './leader-change.ts';
import { quorumsFor } from './quorum.ts';

const bft4 = quorumsFor(4, 1, 'bft');
const bft7 = quorumsFor(7, 2, 'bft');
const crash3 = quorumsFor(3, 1, 'crash');

function accepted(digest: string, regency: number, written: Array<[string, number]> = [[digest, regency]]): InstanceState {
  return { acceptedRegency: regency, acceptedDigest: digest, writeSet: new Map(written) };
}
function wrote(written: Array<[string, number]>): InstanceState {
  return { acceptedRegency: -1, acceptedDigest: null, writeSet: new Map(written) };
}

describe('value choice in a leader change (Cachin et al., Algorithm 5.17)', () => {
  it('is unbound when a quorum accepted nothing: the new leader chooses', () => {
    expect(chooseValue('bft', [emptyInstanceState, emptyInstanceState, emptyInstanceState], bft4)).toEqual({ kind: 'unbound' });
  });

  it('is unsound with fewer collects than n - f: the leader must wait', () => {
    expect(chooseValue('bft', [emptyInstanceState, emptyInstanceState], bft4)).toEqual({ kind: 'unsound' });
    expect(syncValueAllowed('bft', [emptyInstanceState, emptyInstanceState], bft4, null)).toBe(false);
  });

  it('binds a value that may have been decided, and a SYNC may carry nothing else', () => {
    const states = [accepted('v', 1), accepted('v', 1), emptyInstanceState];
    expect(chooseValue('bft', states, bft4)).toEqual({ kind: 'bound', digest: 'v' });
    expect(syncValueAllowed('bft', states, bft4, 'v')).toBe(true);
    expect(syncValueAllowed('bft', states, bft4, 'w')).toBe(false);
    expect(syncValueAllowed('bft', states, bft4, null)).toBe(false);
  });

  it('does not bind a value only one replica (possibly Byzantine) claims to have written', () => {
    const states = [accepted('w', 2), emptyInstanceState, emptyInstanceState];
    expect(chooseValue('bft', states, bft4).kind).not.toBe('bound');
  });

  // Safety: whatever a subset of at least n - f collects holds, if the rule chooses at all it chooses v.
  // Liveness: with the states of all correct replicas present, it does choose (then the leader sends SYNC).
  it('never unbinds a decided value whatever one Byzantine collect says (n = 4), and decides once all correct states are in', () => {
    // v was decided in regency 1: replicas 0, 1, 2 accepted it; replica 3 is Byzantine. A correct
    // acceptor may have written another value w in an earlier regency.
    const correct: InstanceState[] = [accepted('v', 1), accepted('v', 1, [['v', 1], ['w', 0]]), accepted('v', 1)];
    const lies: InstanceState[] = [
      emptyInstanceState,
      accepted('w', 2),
      accepted('w', 2, [['w', 2], ['v', 0]]),
      accepted('v', 1),
      wrote([['w', 2], ['u', 2]]),
      accepted('u', 0),
    ];
    for (const lie of lies) {
      for (let left = 0; left < 3; left++) {
        const states = [...correct.filter((_, i) => i !== left), lie];
        const choice = chooseValue('bft', states, bft4);
        if (choice.kind !== 'unsound') expect(choice).toEqual({ kind: 'bound', digest: 'v' });
        expect(syncValueAllowed('bft', states, bft4, 'w')).toBe(false);
        expect(syncValueAllowed('bft', states, bft4, null)).toBe(false);
      }
      expect(chooseValue('bft', [...correct, lie], bft4)).toEqual({ kind: 'bound', digest: 'v' });
    }
  });

  it('with n = 7, f = 2: two lying collects cannot unbind a value five replicas accepted', () => {
    const acceptors = [accepted('v', 3), accepted('v', 3), accepted('v', 3), accepted('v', 3), accepted('v', 3)];
    const lies = [emptyInstanceState, accepted('w', 4)];
    // Any n - f = 5 of them with both liars: the rule waits or binds v, never anything else.
    const subset = [...acceptors.slice(0, 3), ...lies];
    const choice = chooseValue('bft', subset, bft7);
    if (choice.kind !== 'unsound') expect(choice).toEqual({ kind: 'bound', digest: 'v' });
    expect(syncValueAllowed('bft', subset, bft7, 'w')).toBe(false);
    expect(chooseValue('bft', [...acceptors, ...lies], bft7)).toEqual({ kind: 'bound', digest: 'v' });
  });

  it('crash mode: the value accepted in the highest regency wins', () => {
    expect(chooseValue('crash', [accepted('v', 1), accepted('w', 2)], crash3)).toEqual({ kind: 'bound', digest: 'w' });
    expect(chooseValue('crash', [emptyInstanceState, emptyInstanceState], crash3)).toEqual({ kind: 'unbound' });
    expect(syncValueAllowed('crash', [accepted('v', 1), emptyInstanceState], crash3, null)).toBe(false);
  });
});
