// Batch filling (CoreConfig.batchFillPercent): right after a decision the leader may hold its next proposal
// back until the clients of the last two batches are back, so that instances carry more requests each.

import { describe, expect, it } from 'vitest';
import { LockstepCluster, request } from '../../test/sim/lockstep.ts';
import { MessageType } from '../protocol/messages.ts';

function proposals(cluster: LockstepCluster): number {
  return cluster.sent.filter((e) => e.from === 0 && e.message.type === MessageType.PROPOSE).length / 3;
}

/** Decides one batch with a1 and b1 (and c1 when given), so that the leader knows those clients as recent. */
function afterFirstBatch(percent: number, clients: readonly string[] = ['alice', 'bob']): LockstepCluster {
  const cluster = new LockstepCluster(4, 'bft', { batchFillPercent: percent });
  for (const client of clients) cluster.submit(request(client, 1, `${client}1`), [0, 1, 2, 3]);
  cluster.run();
  for (const id of [0, 1, 2, 3]) expect(cluster.deliveries.get(id)?.length).toBeGreaterThan(0);
  return cluster;
}

describe('batch filling', () => {
  it('the leader holds a proposal until every recent client is back, then proposes them in one instance', () => {
    const cluster = afterFirstBatch(100);
    const before = proposals(cluster);
    const decided = cluster.deliveries.get(0)?.length ?? 0;
    cluster.submit(request('alice', 2, 'alice2'), [0, 1, 2, 3]);
    expect(cluster.core(0).batchFillWaiting()).toBe(true);
    expect(proposals(cluster)).toBe(before);
    cluster.submit(request('bob', 2, 'bob2'), [0, 1, 2, 3]);
    expect(cluster.core(0).batchFillWaiting()).toBe(false);
    cluster.run();
    expect(proposals(cluster)).toBe(before + 1);
    const last = cluster.deliveries.get(0)?.at(-1);
    expect(cluster.deliveries.get(0)?.length).toBe(decided + 1);
    expect(last?.requests.map((r) => r.clientId).sort()).toEqual(['alice', 'bob']);
  });

  it('endBatchFill() makes the leader propose what it has', () => {
    const cluster = afterFirstBatch(100);
    const before = proposals(cluster);
    cluster.submit(request('alice', 2, 'alice2'), [0, 1, 2, 3]);
    expect(cluster.core(0).batchFillWaiting()).toBe(true);
    cluster.core(0).endBatchFill();
    cluster.collect();
    expect(cluster.core(0).batchFillWaiting()).toBe(false);
    expect(proposals(cluster)).toBe(before + 1);
    cluster.run();
    expect(cluster.deliveries.get(1)?.at(-1)?.requests.map((r) => r.clientId)).toEqual(['alice']);
  });

  it('without endBatchFill() the wait ends by the second tick: a silent driver cannot stall the leader', () => {
    const cluster = afterFirstBatch(100);
    const before = proposals(cluster);
    cluster.submit(request('alice', 2, 'alice2'), [0, 1, 2, 3]);
    cluster.tick(1, [0]);
    expect(proposals(cluster)).toBe(before);
    cluster.tick(1, [0]);
    expect(proposals(cluster)).toBe(before + 1);
    expect(cluster.core(0).batchFillWaiting()).toBe(false);
  });

  it('a lone client never waits, and filling off (0) proposes at once', () => {
    const lone = afterFirstBatch(100, ['alice']);
    const before = proposals(lone);
    lone.submit(request('alice', 2, 'alice2'), [0, 1, 2, 3]);
    expect(lone.core(0).batchFillWaiting()).toBe(false);
    expect(proposals(lone)).toBe(before + 1);

    const off = afterFirstBatch(0);
    const offBefore = proposals(off);
    off.submit(request('alice', 2, 'alice2'), [0, 1, 2, 3]);
    expect(off.core(0).batchFillWaiting()).toBe(false);
    expect(proposals(off)).toBe(offBefore + 1);
  });

  it('at 50%, half of the recent clients are enough', () => {
    const cluster = afterFirstBatch(50, ['alice', 'bob', 'carol', 'dave']);
    const before = proposals(cluster);
    cluster.submit(request('alice', 2, 'alice2'), [0, 1, 2, 3]);
    expect(cluster.core(0).batchFillWaiting()).toBe(true);
    cluster.submit(request('bob', 2, 'bob2'), [0, 1, 2, 3]);
    expect(cluster.core(0).batchFillWaiting()).toBe(false);
    expect(proposals(cluster)).toBe(before + 1);
  });
});
