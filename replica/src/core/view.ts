import { limits } from '../constants.ts';
import { BftError } from '../errors.ts';
import { type FaultMode, type Quorums, maxFaults, quorumsFor } from './quorum.ts';

export type ReplicaId = number;

/** A membership: who the replicas are and how many of them may fail. Part of the replicated state. */
export interface View {
  readonly number: number;
  readonly mode: FaultMode;
  readonly f: number;
  /** Replica ids in leader rotation order. Ids are never reused. */
  readonly members: readonly ReplicaId[];
}

/** Why a view is unusable, or null. */
export function invalidView(view: View): string | null {
  const n = view.members.length;
  if (!Number.isSafeInteger(view.number) || view.number < 0) return 'view number must be a non-negative integer';
  if (view.mode !== 'bft' && view.mode !== 'crash') return 'mode must be bft or crash';
  if (n < 1 || n > limits.membersMax) return `a view has 1 to ${limits.membersMax} members`;
  if (new Set(view.members).size !== n) return 'member ids must be distinct';
  if (view.members.some((id) => !Number.isSafeInteger(id) || id < 0)) return 'member ids are non-negative integers';
  if (!Number.isSafeInteger(view.f) || view.f < 0) return 'f must be a non-negative integer';
  if (view.f > maxFaults(n, view.mode)) {
    const need = view.mode === 'bft' ? '3f+1' : '2f+1';
    return `${n} replicas cannot tolerate f=${view.f} in ${view.mode} mode (needs n ≥ ${need})`;
  }
  return null;
}

export function assertValidView(view: View): void {
  const reason = invalidView(view);
  if (reason !== null) throw new BftError('BFT_ERR_VIEW_INVALID', `${reason}; fix the view's members or f`);
}

/** Derived, read-only facts about a view, computed once. */
export class ViewInfo {
  readonly view: View;
  readonly n: number;
  readonly quorums: Quorums;
  private readonly memberSet: ReadonlySet<ReplicaId>;

  constructor(view: View, quorums?: Quorums) {
    assertValidView(view);
    this.view = view;
    this.n = view.members.length;
    this.quorums = quorums ?? quorumsFor(this.n, view.f, view.mode);
    this.memberSet = new Set(view.members);
  }

  isMember(id: ReplicaId): boolean {
    return this.memberSet.has(id);
  }

  /** Round robin over the members: regency r is led by members[r mod n]. */
  leaderOf(regency: number): ReplicaId {
    return this.view.members[regency % this.n] as ReplicaId;
  }
}
