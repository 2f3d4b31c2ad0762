import { describe, expect, it } from 'vitest';
import { type BftClusterStatus, bftClusterStatusSchema, conditionTypes } from '../api/bftcluster.ts';
import { replicaSelector } from '../specs/names.ts';
import { type Observations, type PodObservation, type ReplicaReport, computeStatus, conditionEvents, reportedView } from './status.ts';

const clusterName = 'ledger';
const now = new Date('2030-01-02T03:04:05.678Z');
const nowText = '2030-01-02T03:04:05Z';
const earlier = '2029-12-31T23:00:00Z';

function view(number: number, members: readonly number[] = [0, 1, 2, 3], f = 1): ReplicaReport['view'] {
  return { number, f, members: members.map((id) => ({ id })) };
}

function report(overrides: Partial<ReplicaReport> = {}): ReplicaReport {
  return { view: view(0), leader: 0, lastDecidedCid: 41, removedAtCid: null, stateTransfer: { awaiting: false }, ...overrides };
}

function pod(id: number, overrides: Partial<PodObservation> = {}): PodObservation {
  return { name: `${clusterName}-${id}`, phase: 'Running', ready: true, podIp: `10.0.0.${10 + id}`, deleting: false, ...overrides };
}

/** Four members with f=1, every pod ready and every replica reporting view 0 led by replica 0. */
function observations(overrides: Partial<Observations> = {}): Observations {
  const members = [0, 1, 2, 3];
  return {
    clusterName,
    generation: 7,
    members,
    f: 1,
    pods: new Map(members.map((id) => [id, pod(id)])),
    reports: new Map(members.map((id) => [id, report()])),
    changes: [],
    paused: false,
    stalled: null,
    previous: undefined,
    now,
    nextReplicaId: 4,
    ...overrides,
  };
}

function conditionOf(status: BftClusterStatus, type: (typeof conditionTypes)[number]) {
  const found = status.conditions?.find((c) => c.type === type);
  if (found === undefined) throw new Error(`no ${type} condition in ${JSON.stringify(status.conditions)}`);
  return found;
}

/** The pods map with some replaced. */
function podsWith(replaced: Record<number, Partial<PodObservation>>): Map<number, PodObservation> {
  return new Map([0, 1, 2, 3].map((id) => [id, pod(id, replaced[id] ?? {})]));
}

function reportsWith(replaced: Record<number, Partial<ReplicaReport>>): Map<number, ReplicaReport> {
  return new Map([0, 1, 2, 3].map((id) => [id, report(replaced[id] ?? {})]));
}

describe('computeStatus', () => {
  it('reports Ready, Available and not Degraded, with the view, its leader and every member Active, when all 4 replicas are ready in the view', () => {
    const status = computeStatus(observations());
    expect(conditionOf(status, 'Ready')).toMatchObject({ status: 'True', reason: 'AllReplicasReady', message: '4 replicas ready in view 0, f=1' });
    expect(conditionOf(status, 'Available')).toMatchObject({ status: 'True', reason: 'QuorumAvailable' });
    expect(conditionOf(status, 'Degraded')).toMatchObject({ status: 'False', reason: 'NotDegraded' });
    expect(status.view).toEqual({ number: 0, f: 1, members: [0, 1, 2, 3] });
    expect(status.leader).toBe(0);
    expect(status.members).toEqual([0, 1, 2, 3].map((id) => ({ id, pod: `ledger-${id}`, state: 'Active', lastDecided: 41 })));
    expect(status.readyReplicas).toBe(4);
    expect(status.replicas).toBe(4);
    expect(status.selector).toBe(replicaSelector(clusterName));
    expect(status.nextReplicaId).toBe(4);
  });

  it('produces a status the BftCluster status schema (and so the CRD) accepts, with one condition of each type', () => {
    const statuses = [
      computeStatus(observations()),
      computeStatus(observations({ reports: new Map(), pods: new Map(), stalled: 'replicas: 2 is below 3f+1', paused: true, changes: ['created pod ledger-0'] })),
    ];
    for (const status of statuses) {
      expect(bftClusterStatusSchema.parse(status)).toEqual(status);
      expect(status.conditions?.map((c) => c.type).sort()).toEqual([...conditionTypes].sort());
    }
  });

  it('with one pod not ready: Ready False (ReplicasNotReady) naming that pod, Degraded, and still Available with 3 of 4 ready (quorum n−f)', () => {
    const status = computeStatus(observations({ pods: podsWith({ 2: { ready: false } }) }));
    expect(conditionOf(status, 'Ready')).toMatchObject({ status: 'False', reason: 'ReplicasNotReady', message: 'not ready: ledger-2' });
    expect(conditionOf(status, 'Degraded')).toMatchObject({ status: 'True', reason: 'ReplicasNotReady', message: 'not ready: ledger-2' });
    expect(conditionOf(status, 'Available')).toMatchObject({ status: 'True', reason: 'QuorumAvailable', message: '3 of 4 replicas ready; 3 are needed' });
    expect(status.readyReplicas).toBe(3);
    expect(status.members?.find((m) => m.id === 2)?.state).toBe('Joining');
  });

  it('with fewer than n−f replicas ready: Available False (QuorumLost), still Degraded while some are ready', () => {
    const status = computeStatus(observations({ pods: podsWith({ 1: { ready: false }, 3: { ready: false } }) }));
    expect(conditionOf(status, 'Available')).toMatchObject({ status: 'False', reason: 'QuorumLost', message: '2 of 4 replicas ready; 3 are needed to order requests' });
    expect(conditionOf(status, 'Ready')).toMatchObject({ status: 'False', reason: 'ReplicasNotReady', message: 'not ready: ledger-1, ledger-3' });
    expect(conditionOf(status, 'Degraded')).toMatchObject({ status: 'True' });
  });

  it('with no replica ready: Available False and not Degraded (the cluster is not up yet)', () => {
    const status = computeStatus(observations({ pods: new Map(), reports: new Map() }));
    expect(conditionOf(status, 'Available')).toMatchObject({ status: 'False', reason: 'QuorumLost' });
    expect(conditionOf(status, 'Degraded')).toMatchObject({ status: 'False', message: 'no replica is ready yet' });
  });

  it('names a member without a pod by its pod name, in state Joining, without lastDecided', () => {
    const pods = podsWith({});
    pods.delete(3);
    const reports = reportsWith({});
    reports.delete(3);
    const status = computeStatus(observations({ pods, reports }));
    expect(status.members?.find((m) => m.id === 3)).toEqual({ id: 3, pod: 'ledger-3', state: 'Joining' });
    expect(conditionOf(status, 'Ready')).toMatchObject({ status: 'False', message: 'not ready: ledger-3' });
  });

  it('shows a replica awaiting state transfer as member state StateTransfer and Degraded reason StateTransfer naming its pod', () => {
    const status = computeStatus(
      observations({
        pods: podsWith({ 3: { ready: false } }),
        reports: reportsWith({ 3: { stateTransfer: { awaiting: true }, lastDecidedCid: 5 } }),
      }),
    );
    expect(status.members?.find((m) => m.id === 3)).toEqual({ id: 3, pod: 'ledger-3', state: 'StateTransfer', lastDecided: 5 });
    expect(conditionOf(status, 'Degraded')).toMatchObject({ status: 'True', reason: 'StateTransfer', message: 'catching up by state transfer: ledger-3' });
  });

  it('shows a replica that reports removedAtCid as Removed, even when it is also awaiting state transfer', () => {
    const status = computeStatus(
      observations({ pods: podsWith({ 1: { ready: false } }), reports: reportsWith({ 1: { removedAtCid: 90, stateTransfer: { awaiting: true } } }) }),
    );
    expect(status.members?.find((m) => m.id === 1)?.state).toBe('Removed');
  });

  it('reports as leader the one most replicas of the view name, ignoring reports of other views', () => {
    const status = computeStatus(
      observations({
        reports: reportsWith({
          0: { view: view(1), leader: 1 },
          1: { view: view(1), leader: 1 },
          2: { view: view(1), leader: 3 },
          // A replica still in the older view names its old leader: not counted.
          3: { view: view(0), leader: 0 },
        }),
      }),
    );
    expect(status.view?.number).toBe(1);
    expect(status.leader).toBe(1);
  });

  it('does not believe a single (possibly Byzantine) replica reporting a higher view', () => {
    const reports = reportsWith({ 3: { view: view(7), leader: 3 } });
    expect(reportedView(reports, 1)?.number).toBe(0);
    const status = computeStatus(observations({ reports }));
    expect(status.view?.number).toBe(0);
    expect(status.leader).toBe(0);
  });

  it('believes a higher view once f+1 of its members report it, and takes the leader from their reports', () => {
    const reports = reportsWith({ 2: { view: view(1), leader: 1 }, 3: { view: view(1), leader: 1 } });
    expect(reportedView(reports, 1)?.number).toBe(1);
    const status = computeStatus(observations({ reports }));
    expect(status.view).toEqual({ number: 1, f: 1, members: [0, 1, 2, 3] });
    expect(status.leader).toBe(1);
  });

  it('counts only members of a view as vouching for it', () => {
    // View 1 (as its reporters give it) replaces replica 3 by replica 4.
    const next = view(1, [0, 1, 2, 4]);
    // Replica 3 is not a member of view 1: only replica 2 vouches, and f+1 = 2 are needed.
    expect(reportedView(reportsWith({ 2: { view: next }, 3: { view: next } }), 1)?.number).toBe(0);
    expect(reportedView(reportsWith({ 1: { view: next }, 2: { view: next } }), 1)?.number).toBe(1);
  });

  it('does not believe a single replica claiming a higher view with f=0 of which it is the only member', () => {
    // The view's f is what the reporter says: a Byzantine replica cannot lower the bar to itself.
    const reports = reportsWith({ 3: { view: view(9, [3], 0), leader: 3 } });
    const status = computeStatus(observations({ reports }));
    expect(status.view).toEqual({ number: 0, f: 1, members: [0, 1, 2, 3] });
    expect(status.leader).toBe(0);
    expect(reportedView(reports, 1)?.number).toBe(0);
  });

  it('does not let a single replica rewrite the members of the view the others report', () => {
    // Replica 3 reports the same view number with an extra member: the members shown are the other three's.
    const reports = reportsWith({ 3: { view: view(0, [0, 1, 2, 3, 99]) } });
    expect(reportedView(reports, 1)).toEqual(view(0));
    const status = computeStatus(observations({ reports }));
    expect(status.view).toEqual({ number: 0, f: 1, members: [0, 1, 2, 3] });
    expect(conditionOf(status, 'Ready')).toMatchObject({ status: 'True' });
  });

  it('holds a view that claims a larger f than the operator knows to its own f+1', () => {
    const seven = [0, 1, 2, 3, 4, 5, 6];
    const raised = view(3, seven, 2);
    const reports = (raisedBy: readonly number[]) => new Map(seven.map((id) => [id, report({ view: raisedBy.includes(id) ? raised : view(2, seven, 1) })]));
    expect(reportedView(reports([5, 6]), 1)?.number).toBe(2);
    expect(reportedView(reports([4, 5, 6]), 1)?.number).toBe(3);
  });

  it('shows the newest view that f+1 of its members report exactly, an older one while they are split across newer ones', () => {
    const split = reportsWith({ 0: { view: view(2) }, 1: { view: view(1) } });
    expect(reportedView(split, 1)?.number).toBe(0);
  });

  it('reports no view, no leader and Ready False (ViewPending) when no replica reports, even with every pod ready', () => {
    const status = computeStatus(observations({ reports: new Map() }));
    expect(status.view).toBeUndefined();
    expect(status.leader).toBeUndefined();
    expect(conditionOf(status, 'Ready')).toMatchObject({ status: 'False', reason: 'ViewPending' });
    expect(conditionOf(status, 'Available')).toMatchObject({ status: 'True' });
  });

  it('is not Ready (ViewPending) while the reported view has other members than the cluster should run', () => {
    const fiveMembers = view(2, [0, 1, 2, 3, 4]);
    const status = computeStatus(observations({ reports: new Map([0, 1, 2, 3].map((id) => [id, report({ view: fiveMembers })])) }));
    expect(status.view?.members).toEqual([0, 1, 2, 3, 4]);
    expect(conditionOf(status, 'Ready')).toMatchObject({ status: 'False', reason: 'ViewPending' });
  });

  it('when stalled: Ready False with reason Stalled and the cause, and Stalled True; otherwise Stalled False', () => {
    const cause = 'spec.f=2 needs at least 7 replicas';
    const stalled = computeStatus(observations({ stalled: cause }));
    expect(conditionOf(stalled, 'Ready')).toMatchObject({ status: 'False', reason: 'Stalled', message: cause });
    expect(conditionOf(stalled, 'Stalled')).toMatchObject({ status: 'True', reason: 'Refused', message: cause });
    expect(conditionOf(computeStatus(observations()), 'Stalled')).toMatchObject({ status: 'False', reason: 'NotStalled' });
  });

  it('sets ReconciliationPaused True when paused and False otherwise', () => {
    expect(conditionOf(computeStatus(observations({ paused: true })), 'ReconciliationPaused')).toMatchObject({ status: 'True', reason: 'Annotated' });
    expect(conditionOf(computeStatus(observations()), 'ReconciliationPaused')).toMatchObject({ status: 'False', reason: 'NotPaused' });
  });

  it('sets Reconciling True with what this pass changed, at most 10 changes, and False (UpToDate) when nothing changed', () => {
    const two = computeStatus(observations({ changes: ['created pod ledger-0', 'created pod ledger-1'] }));
    expect(conditionOf(two, 'Reconciling')).toMatchObject({ status: 'True', reason: 'Applying', message: 'created pod ledger-0; created pod ledger-1' });
    const many = computeStatus(observations({ changes: Array.from({ length: 12 }, (_, i) => `change ${i}`) }));
    expect(conditionOf(many, 'Reconciling').message.split('; ')).toEqual(Array.from({ length: 10 }, (_, i) => `change ${i}`));
    expect(conditionOf(computeStatus(observations()), 'Reconciling')).toMatchObject({ status: 'False', reason: 'UpToDate' });
  });

  it('keeps lastTransitionTime from the previous status when a condition keeps its status, and sets it to now (whole seconds) when it changes', () => {
    const previous: BftClusterStatus = {
      conditions: [
        // Same status, another reason: still no transition.
        { type: 'Ready', status: 'True', reason: 'Earlier', message: '', lastTransitionTime: earlier, observedGeneration: 6 },
        // Status changes: a transition now.
        { type: 'Reconciling', status: 'True', reason: 'Applying', message: 'created pod ledger-0', lastTransitionTime: earlier, observedGeneration: 6 },
      ],
    };
    const status = computeStatus(observations({ previous }));
    expect(conditionOf(status, 'Ready')).toMatchObject({ status: 'True', lastTransitionTime: earlier });
    expect(conditionOf(status, 'Reconciling')).toMatchObject({ status: 'False', lastTransitionTime: nowText });
    // No previous condition of the type: now.
    expect(conditionOf(status, 'Available').lastTransitionTime).toBe(nowText);
  });

  it('sets observedGeneration on the status and on every condition', () => {
    const status = computeStatus(observations({ generation: 12 }));
    expect(status.observedGeneration).toBe(12);
    expect(status.conditions?.map((c) => c.observedGeneration)).toEqual(conditionTypes.map(() => 12));
  });

  it('counts as replicas every pod not being deleted, members or not, and as readyReplicas the ready members', () => {
    const pods = podsWith({ 1: { deleting: true }, 2: { ready: false } });
    pods.set(9, pod(9));
    const status = computeStatus(observations({ pods }));
    expect(status.replicas).toBe(4);
    // Replica 1's pod is ready while it terminates; replica 9 is not a member.
    expect(status.readyReplicas).toBe(3);
  });
});

describe('conditionEvents', () => {
  it('writes an event when Ready, Degraded or Stalled becomes True, and none while it stays so', () => {
    const healthy = computeStatus(observations());
    const degraded = computeStatus(observations({ pods: podsWith({ 2: { ready: false } }), previous: healthy }));
    const stalled = computeStatus(observations({ stalled: 'adding replica 4 was refused by the replicas: stale view', previous: healthy }));

    expect(conditionEvents(undefined, healthy)).toEqual([{ type: 'Normal', reason: 'Ready', message: 'all 4 replicas are ready' }]);
    expect(conditionEvents(healthy, healthy)).toEqual([]);
    expect(conditionEvents(healthy, degraded)).toEqual([{ type: 'Warning', reason: 'Degraded', message: 'not ready: ledger-2' }]);
    expect(conditionEvents(degraded, degraded)).toEqual([]);
    expect(conditionEvents(degraded, healthy)).toEqual([{ type: 'Normal', reason: 'Ready', message: 'all 4 replicas are ready' }]);
    expect(conditionEvents(healthy, stalled)).toEqual([
      { type: 'Warning', reason: 'Stalled', message: 'adding replica 4 was refused by the replicas: stale view' },
    ]);
    expect(conditionEvents(stalled, stalled)).toEqual([]);
  });
});
