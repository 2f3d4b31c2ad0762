// The BftCluster's status as a pure function of what the operator observed (CloudNativePG's way): the
// pods, each replica's own /status, and what this pass changed. Conditions keep their transition time
// while their status stays the same, so that a status that did not change is not written again.

import type { BftClusterStatus, Condition } from '../api/bftcluster.ts';
import { replicaPodName, replicaSelector } from '../specs/names.ts';
import type { PendingChange } from './records.ts';

/** What a replica's admin server reports (replica/src/server/replica-process.ts), as far as the operator reads it. */
export interface ReplicaReport {
  readonly view: { readonly number: number; readonly f: number; readonly members: readonly { readonly id: number }[] };
  readonly leader: number;
  /** The leader change count; replicas agree on it when no leader change is in progress. */
  readonly regency?: number;
  /** False while this replica takes part in a leader change. */
  readonly synchronized?: boolean;
  readonly lastDecidedCid: number;
  readonly removedAtCid: number | null;
  readonly stateTransfer: { readonly awaiting: boolean };
}

export interface PodObservation {
  readonly name: string;
  readonly phase: string;
  readonly ready: boolean;
  readonly podIp: string | null;
  readonly deleting: boolean;
  /** When its Ready condition last turned True (ISO time), or null when not ready. */
  readonly readySince?: string | null;
}

export interface Observations {
  readonly clusterName: string;
  readonly generation: number;
  /** The replica ids the cluster should run, and the f of its view. */
  readonly members: readonly number[];
  readonly f: number;
  readonly pods: ReadonlyMap<number, PodObservation>;
  readonly reports: ReadonlyMap<number, ReplicaReport>;
  /** What this pass created or deleted, for the Reconciling condition. */
  readonly changes: readonly string[];
  readonly paused: boolean;
  /** Why the operator cannot go on (an invalid or unsafe spec), or null. */
  readonly stalled: string | null;
  readonly previous: BftClusterStatus | undefined;
  readonly now: Date;
  readonly nextReplicaId: number;
  /** A membership change recorded and not yet seen committed. */
  readonly pending?: PendingChange | null;
}

function condition(previous: readonly Condition[] | undefined, now: Date, generation: number, type: Condition['type'], status: boolean, reason: string, message: string): Condition {
  const value = status ? 'True' : 'False';
  const before = previous?.find((c) => c.type === type);
  const lastTransitionTime = before !== undefined && before.status === value ? before.lastTransitionTime : now.toISOString().replace(/\.\d{3}Z$/, 'Z');
  return { type, status: value, reason, message, lastTransitionTime, observedGeneration: generation };
}

function sameView(a: ReplicaReport['view'], b: ReplicaReport['view']): boolean {
  return a.number === b.number && a.f === b.f && a.members.length === b.members.length && a.members.every((m, i) => m.id === b.members[i]?.id);
}

/**
 * The view that enough of its members report, exactly, to include a correct one (f+1 of it), newest first;
 * else null. A report is its sender's word: a view is keyed by its whole content, not its number, or one
 * Byzantine replica could give the view the others vouch for other members; and the bar is never below
 * `f`, the f the operator knows, or it could report a view of itself alone with f=0 and vouch for it.
 */
export function reportedView(reports: ReadonlyMap<number, ReplicaReport>, f: number): ReplicaReport['view'] | null {
  const views = [...reports.values()].map((r) => r.view).filter((v, i, all) => all.findIndex((w) => sameView(v, w)) === i).sort((a, b) => b.number - a.number);
  for (const view of views) {
    const vouching = [...reports].filter(([id, r]) => sameView(r.view, view) && view.members.some((m) => m.id === id)).length;
    if (vouching >= Math.max(view.f, f) + 1) return view;
  }
  return null;
}

export function computeStatus(o: Observations): BftClusterStatus {
  const previous = o.previous?.conditions;
  const n = o.members.length;
  const ready = o.members.filter((id) => o.pods.get(id)?.ready === true);
  const notReady = o.members.filter((id) => !ready.includes(id));
  const view = reportedView(o.reports, o.f);
  const leaderReports = [...o.reports.values()].filter((r) => view !== null && sameView(r.view, view)).map((r) => r.leader);
  const leader = mostCommon(leaderReports);
  const quorum = n - o.f;
  const transferring = o.members.filter((id) => o.reports.get(id)?.stateTransfer.awaiting === true);
  const viewMatches = view !== null && view.members.length === n && o.members.every((id) => view.members.some((m) => m.id === id));
  const members = o.members.map((id) => {
    const pod = o.pods.get(id);
    const report = o.reports.get(id);
    const state = report?.removedAtCid !== null && report?.removedAtCid !== undefined ? 'Removed' : report?.stateTransfer.awaiting === true ? 'StateTransfer' : pod?.ready === true ? 'Active' : 'Joining';
    return { id, pod: pod?.name ?? replicaPodName(o.clusterName, id), state, ...(report === undefined ? {} : { lastDecided: report.lastDecidedCid }) } as const;
  });
  const list = (ids: readonly number[]) => ids.map((id) => replicaPodName(o.clusterName, id)).join(', ');
  const conditions: Condition[] = [
    o.stalled !== null || !viewMatches || notReady.length > 0
      ? condition(previous, o.now, o.generation, 'Ready', false, o.stalled !== null ? 'Stalled' : notReady.length > 0 ? 'ReplicasNotReady' : 'ViewPending', o.stalled ?? (notReady.length > 0 ? `not ready: ${list(notReady)}` : 'the replicas do not report the view yet'))
      : condition(previous, o.now, o.generation, 'Ready', true, 'AllReplicasReady', `${n} replicas ready in view ${view?.number}, f=${o.f}`),
    ready.length >= quorum
      ? condition(previous, o.now, o.generation, 'Available', true, 'QuorumAvailable', `${ready.length} of ${n} replicas ready; ${quorum} are needed`)
      : condition(previous, o.now, o.generation, 'Available', false, 'QuorumLost', `${ready.length} of ${n} replicas ready; ${quorum} are needed to order requests`),
    notReady.length > 0 && ready.length > 0
      ? condition(previous, o.now, o.generation, 'Degraded', true, transferring.length > 0 ? 'StateTransfer' : 'ReplicasNotReady', transferring.length > 0 ? `catching up by state transfer: ${list(transferring)}` : `not ready: ${list(notReady)}`)
      : condition(previous, o.now, o.generation, 'Degraded', false, 'NotDegraded', notReady.length === 0 ? 'every replica is ready' : 'no replica is ready yet'),
    o.changes.length > 0
      ? condition(previous, o.now, o.generation, 'Reconciling', true, 'Applying', o.changes.slice(0, 10).join('; '))
      : condition(previous, o.now, o.generation, 'Reconciling', false, 'UpToDate', 'the cluster matches its spec'),
    o.stalled !== null
      ? condition(previous, o.now, o.generation, 'Stalled', true, 'Refused', o.stalled)
      : condition(previous, o.now, o.generation, 'Stalled', false, 'NotStalled', 'nothing blocks reconciliation'),
    o.paused
      ? condition(previous, o.now, o.generation, 'ReconciliationPaused', true, 'Annotated', 'the reconciliation-paused annotation is set: the operator only reports')
      : condition(previous, o.now, o.generation, 'ReconciliationPaused', false, 'NotPaused', 'reconciling'),
  ];
  return {
    observedGeneration: o.generation,
    replicas: [...o.pods.values()].filter((pod) => !pod.deleting).length,
    readyReplicas: ready.length,
    selector: replicaSelector(o.clusterName),
    ...(view === null ? {} : { view: { number: view.number, f: view.f, members: view.members.map((m) => m.id) } }),
    ...(leader === undefined ? {} : { leader }),
    members: [...members],
    nextReplicaId: o.nextReplicaId,
    ...(o.pending == null
      ? {}
      : {
          pendingReconfiguration: {
            operation: o.pending.kind,
            ...(o.pending.id === undefined ? {} : { replicaId: o.pending.id }),
            f: o.pending.f,
            fromView: o.pending.fromView,
            epoch: o.pending.epoch,
            nonce: o.pending.nonce,
          },
        }),
    conditions,
  };
}

function mostCommon(values: readonly number[]): number | undefined {
  const counts = new Map<number, number>();
  for (const value of values) counts.set(value, (counts.get(value) ?? 0) + 1);
  return [...counts].sort((a, b) => b[1] - a[1])[0]?.[0];
}

export interface ConditionEvent {
  readonly type: 'Normal' | 'Warning';
  readonly reason: 'Ready' | 'Degraded' | 'Stalled';
  readonly message: string;
}

/**
 * The events a status change is worth: a condition that just became True. On transitions only, so that a
 * condition that holds for hours does not write an event every pass.
 */
export function conditionEvents(previous: BftClusterStatus | undefined, next: BftClusterStatus): ConditionEvent[] {
  const became = (type: Condition['type']): Condition | undefined => {
    const now = next.conditions?.find((c) => c.type === type);
    return now?.status === 'True' && previous?.conditions?.find((c) => c.type === type)?.status !== 'True' ? now : undefined;
  };
  const events: ConditionEvent[] = [];
  if (became('Ready') !== undefined) events.push({ type: 'Normal', reason: 'Ready', message: `all ${next.readyReplicas ?? 0} replicas are ready` });
  const degraded = became('Degraded');
  if (degraded !== undefined) events.push({ type: 'Warning', reason: 'Degraded', message: degraded.message });
  const stalled = became('Stalled');
  if (stalled !== undefined) events.push({ type: 'Warning', reason: 'Stalled', message: stalled.message });
  return events;
}
