import { describe, expect, it } from 'vitest';
import { type RollingReplica, planRollingUpdate, rollingLagInstancesMax, rollingReadyForMsMin } from './rolling-update.ts';

const replica = (id: number, overrides: Partial<RollingReplica> = {}): RollingReplica => ({
  id,
  ready: true,
  readyForMs: 60_000,
  outdated: true,
  report: { lastDecidedCid: 500, catchingUp: false, regency: 0, synchronized: true },
  ...overrides,
});

describe('the rolling update planner', () => {
  it('does nothing when every pod is up to date', () => {
    expect(planRollingUpdate([0, 1, 2, 3].map((id) => replica(id, { outdated: false })), 0)).toEqual({ action: 'none' });
  });

  it('replaces followers first, lowest id first, and the leader last', () => {
    expect(planRollingUpdate([0, 1, 2, 3].map((id) => replica(id)), 0)).toMatchObject({ action: 'replace', id: 1, outdated: 4 });
    const onlyLeaderLeft = [0, 1, 2, 3].map((id) => replica(id, { outdated: id === 2 }));
    expect(planRollingUpdate(onlyLeaderLeft, 2)).toMatchObject({ action: 'replace', id: 2, outdated: 1 });
  });

  it('replaces one at a time: nothing while any replica is not ready', () => {
    const decision = planRollingUpdate([replica(0), replica(1, { ready: false, outdated: false }), replica(2), replica(3)], 0);
    expect(decision).toMatchObject({ action: 'wait', outdated: 3 });
    expect(decision.action === 'wait' && decision.reason).toContain('replica 1');
  });

  it('waits while a replica catches up or does not report', () => {
    expect(planRollingUpdate([replica(0), replica(1, { report: { lastDecidedCid: 10, catchingUp: true, regency: 0, synchronized: true } }), replica(2), replica(3)], 0)).toMatchObject({ action: 'wait' });
    expect(planRollingUpdate([replica(0), replica(1, { report: null }), replica(2), replica(3)], 0)).toMatchObject({ action: 'wait' });
  });

  it('waits until every pod has stayed ready a while, as a Deployment with minReadySeconds', () => {
    const decision = planRollingUpdate([replica(0), replica(1, { readyForMs: rollingReadyForMsMin - 1 }), replica(2), replica(3)], 0);
    expect(decision).toMatchObject({ action: 'wait' });
    expect(decision.action === 'wait' && decision.reason).toContain('replica 1');
  });

  it('waits while a leader change is in progress', () => {
    const synchronizing = [0, 1, 2, 3].map((id) => replica(id, { report: { lastDecidedCid: 500, catchingUp: false, regency: 1, synchronized: id !== 2 } }));
    expect(planRollingUpdate(synchronizing, 1)).toMatchObject({ action: 'wait', reason: 'waiting for a leader change to finish' });
    const disagreeing = [0, 1, 2, 3].map((id) => replica(id, { report: { lastDecidedCid: 500, catchingUp: false, regency: id === 3 ? 0 : 1, synchronized: true } }));
    expect(planRollingUpdate(disagreeing, 1)).toMatchObject({ action: 'wait', reason: 'waiting for a leader change to finish' });
  });

  it('never replaces the leader while another replica lags behind', () => {
    const lagging = [0, 1, 2, 3].map((id) =>
      replica(id, { outdated: id === 0, report: { lastDecidedCid: id === 3 ? 500 - rollingLagInstancesMax - 1 : 500, catchingUp: false, regency: 0, synchronized: true } }),
    );
    const decision = planRollingUpdate(lagging, 0);
    expect(decision).toMatchObject({ action: 'wait', outdated: 1 });
    expect(decision.action === 'wait' && decision.reason).toContain('replica 3');
    const closeEnough = lagging.map((r) => (r.id === 3 ? { ...r, report: { lastDecidedCid: 500 - rollingLagInstancesMax, catchingUp: false, regency: 0, synchronized: true } } : r));
    expect(planRollingUpdate(closeEnough, 0)).toMatchObject({ action: 'replace', id: 0 });
  });
});
