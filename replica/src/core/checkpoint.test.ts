import { describe, expect, it } from 'vitest';
import { LockstepCluster, batchOf, request } from '../../test/sim/lockstep.ts';
import { limits } from '../constants.ts';
import { MessageType } from '../protocol/messages.ts';
import { DropReason } from '../protocol/reasons.ts';
import { makeCoreConfig } from './config.ts';
import type { PersistRecord } from './ready.ts';
import { ReplicaCore } from './replica.ts';

/** Decide `count` instances of one request each, from client `alice`, delivered to `to`. */
function decideMany(cluster: LockstepCluster, count: number, to: readonly number[], drop: (from: number, to: number) => boolean = () => false): void {
  // One request per instance, so alice's request of instance c has seq c + 1.
  const start = cluster.core(to[0] as number).status().lastDecidedCid;
  for (let i = 0; i < count; i++) {
    const seq = start + 2 + i;
    cluster.submit(request('alice', seq, `op-${seq}`), to);
    cluster.run((e) => (drop(e.from, e.to) ? 'drop' : 'deliver'));
  }
}

function checkpointCids(cluster: LockstepCluster, id: number): number[] {
  return (cluster.deliveries.get(id) ?? []).filter((d) => d.checkpoint === true).map((d) => d.decision.cid);
}

describe('the checkpoint schedule', () => {
  it('marks the same instances on every replica, every checkpointPeriodInstances', () => {
    const cluster = new LockstepCluster(4, 'bft', { checkpointPeriodInstances: 3 });
    decideMany(cluster, 8, [0, 1, 2, 3]);
    for (const id of [0, 1, 2, 3]) {
      expect(cluster.core(id).status().lastDecidedCid).toBe(7);
      expect(checkpointCids(cluster, id)).toEqual([2, 5]);
      expect(cluster.core(id).status().checkpointCid).toBe(5);
    }
  });

  it('checkpoints sooner when the decided batches add up to checkpointPeriodBytes', () => {
    // Each decision accounts its batch plus the fixed overhead; a period of two overheads is two decisions.
    const cluster = new LockstepCluster(4, 'bft', { checkpointPeriodInstances: 1000, checkpointPeriodBytes: 2 * limits.decisionRetainedOverheadBytes });
    decideMany(cluster, 6, [0, 1, 2, 3]);
    expect(checkpointCids(cluster, 0)).toEqual([1, 3, 5]);
    expect(checkpointCids(cluster, 3)).toEqual([1, 3, 5]);
  });

  it('a restart from a checkpoint continues the same schedule and reports the checkpoints it replayed', () => {
    const cluster = new LockstepCluster(4, 'bft', { checkpointPeriodInstances: 3 });
    decideMany(cluster, 9, [0, 1, 2, 3]);
    const disk = cluster.disks.get(1) as PersistRecord[];
    const config = makeCoreConfig(1, cluster.view, { checkpointPeriodInstances: 3 });
    // Its state came from the checkpoint of instance 2; the log still holds decisions 0..8.
    const core = new ReplicaCore(config, cluster.keys.cryptoFor(1), { base: { cid: 2, clientSeqs: [['alice', 3]] }, restore: disk });
    expect(core.status().lastDecidedCid).toBe(8);
    expect(core.restoredCheckpointCids).toEqual([5, 8]);
    expect(core.status().checkpointCid).toBe(8);
  });
});

describe('state transfer is asked for when peers no longer keep the decisions a replica lacks', () => {
  const overrides = { checkpointPeriodInstances: 2, decisionsRetainedMax: 8 } as const;

  /** Replica 3 misses 20 instances; then heartbeats tell it, and it asks its peers for decisions. */
  function laggingReplica(): LockstepCluster {
    const cluster = new LockstepCluster(4, 'bft', overrides);
    const cutOff = (from: number, to: number) => from === 3 || to === 3;
    decideMany(cluster, 20, [0, 1, 2], cutOff);
    expect(cluster.core(3).status().lastDecidedCid).toBe(-1);
    expect(cluster.core(0).status().oldestRetainedCid).toBe(12);
    return cluster;
  }

  /**
   * Peers tell replica 3 where they are. Claims of at most two checkpoint periods ahead keep it on the
   * decision path (asking for decisions, then learning they are pruned) rather than the lag rule.
   */
  function hearHeartbeats(cluster: LockstepCluster, lastDecidedCid = 3): void {
    for (const from of [0, 1, 2]) {
      cluster.inject(from, 3, { type: MessageType.HEARTBEAT, view: 0, regency: 0, lastDecidedCid });
    }
  }

  it('peers answer a request for pruned decisions with DECISIONS_PRUNED, and f+1 of them start a state transfer', () => {
    const cluster = laggingReplica();
    hearHeartbeats(cluster);
    const needs: number[] = [];
    const core = cluster.core(3);
    const original = core.ready.bind(core);
    core.ready = () => {
      const ready = original();
      if (ready.stateTransfer !== null) needs.push(ready.stateTransfer.minCid);
      return ready;
    };
    cluster.tick(lockstepCatchUpTicks(cluster), [3]);
    cluster.run();
    const pruned = cluster.sent.filter((e) => e.to === 3 && e.message.type === MessageType.DECISIONS_PRUNED);
    expect(pruned.length).toBeGreaterThanOrEqual(2);
    expect(needs).toEqual([0]);
    expect(core.status().awaitingStateTransfer).toBe(true);
    // While it waits for the checkpoint, it asks nobody for decisions.
    const asked = cluster.sent.filter((e) => e.from === 3 && e.message.type === MessageType.DECISION_REQUEST).length;
    cluster.tick(lockstepCatchUpTicks(cluster), [3]);
    expect(cluster.sent.filter((e) => e.from === 3 && e.message.type === MessageType.DECISION_REQUEST).length).toBe(asked);
  });

  it('one peer saying so is not enough: it could be lying', () => {
    const cluster = laggingReplica();
    cluster.inject(0, 3, { type: MessageType.DECISIONS_PRUNED, view: 0, oldestRetainedCid: 12, checkpointCid: 11 });
    expect(cluster.core(3).status().awaitingStateTransfer).toBe(false);
    expect(cluster.core(3).ready().stateTransfer).toBeNull();
  });

  it('a claim that decisions we still need are kept is refused', () => {
    const cluster = laggingReplica();
    cluster.inject(0, 3, { type: MessageType.DECISIONS_PRUNED, view: 0, oldestRetainedCid: 0, checkpointCid: -1 });
    expect(cluster.core(3).status().dropped[DropReason.STALE_INSTANCE]).toBe(1);
  });

  it('after installing a checkpoint it catches up on the later decisions and decides with the others again', () => {
    const cluster = laggingReplica();
    hearHeartbeats(cluster);
    cluster.tick(lockstepCatchUpTicks(cluster), [3]);
    cluster.run();
    const core = cluster.core(3);
    expect(core.status().awaitingStateTransfer).toBe(true);
    // The state transfer installed the checkpoint of instance 15 (a checkpoint instance of the others).
    expect(checkpointCids(cluster, 0)).toContain(15);
    core.installCheckpoint({ cid: 15, clientSeqs: [['alice', 16]] });
    expect(core.status().lastDecidedCid).toBe(15);
    expect(core.status().awaitingStateTransfer).toBe(false);
    hearHeartbeats(cluster, 19);
    cluster.tick(lockstepCatchUpTicks(cluster), [3]);
    cluster.run();
    expect(core.status().lastDecidedCid).toBe(19);
    expect((cluster.deliveries.get(3) ?? []).map((d) => d.decision.cid)).toEqual([16, 17, 18, 19]);
    // The schedule continues from the installed checkpoint: the same instances as everyone else's.
    expect(checkpointCids(cluster, 3)).toEqual(checkpointCids(cluster, 0).filter((cid) => cid > 15));
    // And a request already executed before the checkpoint is recognised as such.
    core.receiveRequest('alice', request('alice', 16, 'op-16'));
    expect(core.ready().notices).toEqual([{ kind: 'cached-reply', clientId: 'alice', seq: 16 }]);
    decideMany(cluster, 2, [0, 1, 2, 3]);
    expect(core.status().lastDecidedCid).toBe(21);
  });

  it('after installing the newest checkpoint it fetches that instance\'s certificate, and can then carry a leader change', () => {
    const cluster = laggingReplica();
    hearHeartbeats(cluster);
    cluster.tick(lockstepCatchUpTicks(cluster), [3]);
    cluster.run();
    const core = cluster.core(3);
    core.installCheckpoint({ cid: 19, clientSeqs: [['alice', 20]] });
    // Its STOPDATA must prove instance 19 decided: it asks a peer for that certificate.
    cluster.tick(lockstepCatchUpTicks(cluster), [3]);
    cluster.run();
    expect(cluster.sent.some((e) => e.from === 3 && e.message.type === MessageType.DECISION_REQUEST && e.message.fromCid === 19)).toBe(true);
    // The leader dies; 1, 2 and 3 (n - f) must change leader together.
    cluster.submit(request('alice', 21, 'op-21'), [1, 2, 3]);
    for (let k = 0; k < 40; k++) {
      cluster.tick(1, [1, 2, 3]);
      cluster.run((e) => (e.from === 0 || e.to === 0 ? 'drop' : 'deliver'));
    }
    for (const id of [1, 2, 3]) expect(cluster.core(id).status().lastDecidedCid).toBe(20);
    expect(core.status().regency).toBeGreaterThan(0);
  });

  it('while it waits for the checkpoint it executes nothing; if the transfer fails, it goes on from where it was', () => {
    const cluster = laggingReplica();
    hearHeartbeats(cluster);
    cluster.tick(lockstepCatchUpTicks(cluster), [3]);
    cluster.run();
    const core = cluster.core(3);
    expect(core.status().awaitingStateTransfer).toBe(true);
    const first = (cluster.disks.get(0) ?? []).find((r) => r.kind === 'decision' && r.decision.cid === 0);
    if (first?.kind !== 'decision') throw new Error('replica 0 logged instance 0');
    cluster.inject(0, 3, { type: MessageType.DECISION, view: 0, decision: first.decision });
    expect(core.status().lastDecidedCid).toBe(-1);
    expect(cluster.deliveries.get(3)).toEqual([]);
    core.stateTransferFailed();
    cluster.collect();
    expect(core.status().lastDecidedCid).toBe(0);
    expect(cluster.deliveries.get(3)?.map((d) => d.decision.cid)).toEqual([0]);
  });

  it('a replica more than two checkpoint periods behind asks for a checkpoint without asking for decisions first', () => {
    const cluster = new LockstepCluster(4, 'bft', { checkpointPeriodInstances: 2 });
    decideMany(cluster, 8, [0, 1, 2], (from, to) => from === 3 || to === 3);
    for (const from of [0, 1, 2]) cluster.inject(from, 3, { type: MessageType.HEARTBEAT, view: 0, regency: 0, lastDecidedCid: 7 });
    const asked = cluster.sent.filter((e) => e.from === 3 && e.message.type === MessageType.DECISION_REQUEST).length;
    cluster.tick(lockstepCatchUpTicks(cluster), [3]);
    expect(cluster.core(3).status().awaitingStateTransfer).toBe(true);
    expect(cluster.sent.filter((e) => e.from === 3 && e.message.type === MessageType.DECISION_REQUEST).length).toBe(asked);
    // No newer checkpoint could be had: it replays decisions instead of asking again at once.
    cluster.core(3).stateTransferFailed();
    cluster.tick(lockstepCatchUpTicks(cluster), [3]);
    expect(cluster.core(3).status().awaitingStateTransfer).toBe(false);
    expect(cluster.sent.filter((e) => e.from === 3 && e.message.type === MessageType.DECISION_REQUEST).length).toBe(asked + 1);
  });

  it('a wiped replica starts with nothing and asks for a checkpoint the same way', () => {
    const cluster = new LockstepCluster(4, 'bft', overrides);
    decideMany(cluster, 20, [0, 1, 2, 3]);
    cluster.wipe(3);
    hearHeartbeats(cluster);
    cluster.tick(lockstepCatchUpTicks(cluster), [3]);
    cluster.run();
    expect(cluster.core(3).status().awaitingStateTransfer).toBe(true);
  });
});

function lockstepCatchUpTicks(cluster: LockstepCluster): number {
  return cluster.core(0).config.catchUpIntervalTicks;
}

describe('a replica that lost its disk never contradicts a vote it forgot', () => {
  const batchA = batchOf(request('alice', 1, 'A'));
  const batchB = batchOf(request('alice', 1, 'B'));

  function heartbeatsTo(cluster: LockstepCluster, to: number, lastDecidedCid: number, from: readonly number[] = [0, 1, 2]): void {
    for (const peer of from) cluster.inject(peer, to, { type: MessageType.HEARTBEAT, view: 0, regency: 0, lastDecidedCid });
  }

  it('after a wipe it does not WRITE a second value in an instance it may have voted in', () => {
    const cluster = new LockstepCluster(4);
    // The (Byzantine) leader shows A to replica 3 only; replica 3 writes A.
    cluster.inject(0, 3, { type: MessageType.PROPOSE, view: 0, cid: 0, regency: 0, batch: batchA });
    expect(cluster.sent.some((e) => e.from === 3 && e.message.type === MessageType.WRITE)).toBe(true);
    cluster.wipe(3);
    heartbeatsTo(cluster, 3, -1);
    expect(cluster.core(3).status().amnesiaFloorCid).toBe(1);
    const sentBefore = cluster.sent.length;
    cluster.inject(0, 3, { type: MessageType.PROPOSE, view: 0, cid: 0, regency: 0, batch: batchB });
    expect(cluster.sent.slice(sentBefore).filter((e) => e.from === 3)).toEqual([]);
  });

  it('the same replica restored from its disk refuses B as a conflicting vote instead', () => {
    const cluster = new LockstepCluster(4);
    cluster.inject(0, 3, { type: MessageType.PROPOSE, view: 0, cid: 0, regency: 0, batch: batchA });
    cluster.restart(3);
    cluster.inject(0, 3, { type: MessageType.PROPOSE, view: 0, cid: 0, regency: 0, batch: batchB });
    expect(cluster.core(3).status().dropped[DropReason.CONFLICTING_VOTE]).toBe(1);
  });

  it('it stays silent until it has heard from n - f peers, then votes again past the floor', () => {
    const cluster = new LockstepCluster(4);
    cluster.wipe(3);
    heartbeatsTo(cluster, 3, -1, [0, 1]);
    expect(cluster.core(3).status().amnesiaFloorCid).toBe(-1);
    heartbeatsTo(cluster, 3, -1, [2]);
    expect(cluster.core(3).status().amnesiaFloorCid).toBe(1);
    // Instances 0 and 1 are decided by the other three; replica 3 learns them without voting.
    decideMany(cluster, 3, [0, 1, 2, 3]);
    const votesOf3 = (cid: number) =>
      cluster.sent.filter((e) => e.from === 3 && (e.message.type === MessageType.WRITE || e.message.type === MessageType.ACCEPT) && e.message.cid === cid);
    expect(votesOf3(0)).toEqual([]);
    expect(votesOf3(1)).toEqual([]);
    expect(votesOf3(2).length).toBeGreaterThan(0);
    expect(cluster.core(3).status().amnesiaFloorCid).toBeNull();
    expect(cluster.core(3).status().lastDecidedCid).toBe(2);
  });

  it('with a peer silent for long, it settles for n - 2f peers rather than never vote again', () => {
    const cluster = new LockstepCluster(4);
    cluster.wipe(3);
    heartbeatsTo(cluster, 3, 4, [1, 2]);
    expect(cluster.core(3).status().amnesiaFloorCid).toBe(-1);
    cluster.tick(2 * cluster.core(3).config.leaderSilenceTimeoutTicks, [3]);
    expect(cluster.core(3).status().amnesiaFloorCid).toBe(6);
  });
});
