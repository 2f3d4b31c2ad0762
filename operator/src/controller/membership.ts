// Membership changes the operator makes as the View Manager (DESIGN §8), one at a time: from the view the
// cluster runs and what the spec asks, the next single step. Pure; the reconcile step carries it out.
//
// f moves with the size unless the spec fixes it: each step's view gets the spec's f (default: the
// largest the spec's size allows), lowered to what that step's size can tolerate. So 4 → 7 replicas (bft,
// f unset) adds two replicas with f=1 and the third with f=2, in the same request; 7 → 4 lowers f to 1
// with the first removal, since 6 replicas cannot tolerate 2.

import { maxFaultsFor } from '../api/bftcluster.ts';

export interface CurrentView {
  readonly number: number;
  readonly mode: 'bft' | 'crash';
  readonly f: number;
  readonly members: readonly number[];
}

export interface DesiredSize {
  readonly replicas: number;
  /** The spec's f, when it sets one. */
  readonly f?: number;
}

export type MembershipStep =
  | { readonly kind: 'none' }
  | { readonly kind: 'add'; readonly id: number; readonly f: number }
  | { readonly kind: 'remove'; readonly id: number; readonly f: number }
  | { readonly kind: 'set-f'; readonly f: number };

export function targetFaults(desired: DesiredSize, mode: CurrentView['mode']): number {
  return desired.f ?? maxFaultsFor(desired.replicas, mode);
}

/**
 * The next step toward `desired`. A removal takes the highest id that is not the leader (a leader
 * removed forces a leader change); ids are never reused: an added replica gets `nextId`.
 */
export function planMembershipStep(current: CurrentView, desired: DesiredSize, nextId: number, leader: number | undefined): MembershipStep {
  const target = targetFaults(desired, current.mode);
  const n = current.members.length;
  if (desired.replicas > n) return { kind: 'add', id: Math.max(nextId, ...current.members.map((id) => id + 1)), f: Math.min(target, maxFaultsFor(n + 1, current.mode)) };
  if (desired.replicas < n) {
    const byId = [...current.members].sort((a, b) => b - a);
    const id = byId.find((candidate) => candidate !== leader) ?? (byId[0] as number);
    return { kind: 'remove', id, f: Math.min(target, maxFaultsFor(n - 1, current.mode)) };
  }
  if (current.f !== target) return { kind: 'set-f', f: target };
  return { kind: 'none' };
}

/** The view a step leads to (the replicas compute the same; the operator uses it to name the joiner's view). */
export function viewAfter(current: CurrentView, step: Exclude<MembershipStep, { kind: 'none' }>): CurrentView {
  switch (step.kind) {
    case 'add':
      return { number: current.number + 1, mode: current.mode, f: step.f, members: [...current.members, step.id] };
    case 'remove':
      return { number: current.number + 1, mode: current.mode, f: step.f, members: current.members.filter((id) => id !== step.id) };
    case 'set-f':
      return { number: current.number + 1, mode: current.mode, f: step.f, members: [...current.members] };
  }
}
