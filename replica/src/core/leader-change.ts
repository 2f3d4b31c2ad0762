// The value-choice rule of the synchronization phase, as pure functions over signed collects.
// BFT: Cachin, Guerraoui and Rodrigues, "Introduction to Reliable and Secure Distributed Programming",
// 2nd ed., Algorithm 5.17 (Byzantine read/write epoch consensus): predicates quorumhighest,
// certifiedvalue, binds, unbound, sound. The leader and every receiver of SYNC evaluate the same
// function on the same collects, so a Byzantine leader cannot make a correct replica write anything else.
// Crash mode: Paxos's rule, the value accepted in the highest regency.

import type { FaultMode, Quorums } from './quorum.ts';

/** One replica's state in the instance being synchronized, with digests as map keys. */
export interface InstanceState {
  /** Regency of the last accepted value, or -1 when nothing was accepted. */
  readonly acceptedRegency: number;
  readonly acceptedDigest: string | null;
  /** digest → the highest regency in which it was written. */
  readonly writeSet: ReadonlyMap<string, number>;
}

export const emptyInstanceState: InstanceState = {
  acceptedRegency: -1,
  acceptedDigest: null,
  writeSet: new Map(),
};

export type Choice =
  /** A value that may have been decided: it must be proposed again. */
  | { readonly kind: 'bound'; readonly digest: string }
  /** Nothing can have been decided: the new leader chooses freely. */
  | { readonly kind: 'unbound' }
  /** Not enough information yet: the leader waits for more collects; a receiver rejects the SYNC. */
  | { readonly kind: 'unsound' };

function quorumHighest(states: readonly InstanceState[], regency: number, digest: string): number {
  let count = 0;
  for (const s of states) {
    if (s.acceptedRegency < regency || (s.acceptedRegency === regency && s.acceptedDigest === digest)) count++;
  }
  return count;
}

function certifiers(states: readonly InstanceState[], regency: number, digest: string): number {
  let count = 0;
  for (const s of states) {
    const written = s.writeSet.get(digest);
    if (written !== undefined && written >= regency) count++;
  }
  return count;
}

/** binds(ts, v, S) of Algorithm 5.17 for ts ≥ 0. */
export function binds(
  states: readonly InstanceState[],
  quorums: Quorums,
  regency: number,
  digest: string,
): boolean {
  return (
    states.length >= quorums.collect &&
    quorumHighest(states, regency, digest) >= quorums.accept &&
    certifiers(states, regency, digest) >= quorums.includesCorrect
  );
}

export function unbound(states: readonly InstanceState[], quorums: Quorums): boolean {
  if (states.length < quorums.collect) return false;
  let empty = 0;
  for (const s of states) if (s.acceptedRegency < 0) empty++;
  return empty >= quorums.accept;
}

/** Every (regency, digest) pair named in the states: the only candidates binds() can hold for. */
function candidates(states: readonly InstanceState[]): Array<[number, string]> {
  const seen = new Set<string>();
  const pairs: Array<[number, string]> = [];
  const add = (regency: number, digest: string): void => {
    const key = `${regency}/${digest}`;
    if (!seen.has(key)) {
      seen.add(key);
      pairs.push([regency, digest]);
    }
  };
  for (const s of states) {
    if (s.acceptedRegency >= 0 && s.acceptedDigest !== null) add(s.acceptedRegency, s.acceptedDigest);
    for (const [digest, regency] of s.writeSet) add(regency, digest);
  }
  // Highest regency first, then by digest, so every replica picks the same one when several bind.
  pairs.sort((a, b) => b[0] - a[0] || (a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0));
  return pairs;
}

export function chooseValue(mode: FaultMode, states: readonly InstanceState[], quorums: Quorums): Choice {
  if (states.length < quorums.collect) return { kind: 'unsound' };
  if (mode === 'crash') {
    let best: InstanceState | null = null;
    for (const s of states) {
      if (s.acceptedRegency >= 0 && (best === null || s.acceptedRegency > best.acceptedRegency)) best = s;
    }
    return best?.acceptedDigest ? { kind: 'bound', digest: best.acceptedDigest } : { kind: 'unbound' };
  }
  for (const [regency, digest] of candidates(states)) {
    if (binds(states, quorums, regency, digest)) return { kind: 'bound', digest };
  }
  return unbound(states, quorums) ? { kind: 'unbound' } : { kind: 'unsound' };
}

/** May a SYNC carry this digest (null: no value) given these states? Receivers of SYNC ask this. */
export function syncValueAllowed(
  mode: FaultMode,
  states: readonly InstanceState[],
  quorums: Quorums,
  digest: string | null,
): boolean {
  if (states.length < quorums.collect) return false;
  if (mode === 'crash') {
    const choice = chooseValue(mode, states, quorums);
    return choice.kind === 'unbound' || (choice.kind === 'bound' && choice.digest === digest);
  }
  if (digest !== null && candidates(states).some(([r, d]) => d === digest && binds(states, quorums, r, d))) {
    return true;
  }
  return unbound(states, quorums);
}
