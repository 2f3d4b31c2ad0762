// A replica killed with -9 and restarted on its own disk (durability fsync, the write-ahead log) comes
// back with what it had decided, catches up with what it missed, and carries the cluster when another
// replica fails: no acknowledged write is lost, and the history is linearizable.

import { describe, expect, it } from 'vitest';
import { checkHistory } from '../linearizability/porcupine.ts';
import { KvClients, RecordedWrites, type StartedCluster, clusterAroundTests, createCluster, restoredAtStart, sleep, statusOf, waitUntil } from './support.ts';

const started: StartedCluster = createCluster('restart-from-disk', { replicas: 4, mode: 'bft', subnet: 106, configOverrides: { logLevel: 'info' } });
let clients: KvClients | null = null;

clusterAroundTests(started, {
  afterStart: async () => {
    clients = await KvClients.connect(started.cluster);
  },
  beforeStop: async () => clients?.close(),
});

describe('restart from the write-ahead log', () => {
  it('a replica killed -9 and restarted with its disk catches up and then keeps the cluster going', async () => {
    const cluster = started.cluster;
    const writes = new RecordedWrites(clients!, { keys: 20 });
    try {
      await sleep(1000);
      const victim = 2;
      const leader = (await statusOf(cluster, 0))!.leader;
      expect(victim).not.toBe(leader);
      const decidedBeforeKill = (await statusOf(cluster, victim))!.lastDecidedCid;
      expect(decidedBeforeKill).toBeGreaterThan(0);
      cluster.kill(victim);
      await sleep(1500);
      // It comes back from its log (at least what it had decided before the kill), then the rest from peers.
      cluster.start(victim);
      await cluster.waitReady(victim);
      // It came back from its own disk (a decision shows in /status a moment before it is durable, so
      // the last one or two before the kill may need its peers).
      expect((await restoredAtStart(cluster, victim))?.lastDecidedCid).toBeGreaterThan(decidedBeforeKill / 2);
      await waitUntil('the restarted replica catches up', async () => {
        const [mine, theirs] = await Promise.all([statusOf(cluster, victim), statusOf(cluster, (victim + 1) % 4)]);
        return mine !== null && theirs !== null && mine.lastDecidedCid >= theirs.lastDecidedCid - 2;
      });

      // Now lose the leader: with n=4 the restarted replica is needed for every quorum from here on.
      const acknowledgedBeforeLeaderKill = writes.acknowledgedWrites;
      cluster.kill(leader);
      await waitUntil('writes are acknowledged after the leader is killed', () => writes.acknowledgedWrites > acknowledgedBeforeLeaderKill + 20, 60_000);
    } finally {
      await writes.stop();
    }

    expect(await writes.readBack(clients!)).toEqual([]);
    const result = await checkHistory(writes.recorder.history());
    expect(result.result).toBe('ok');
  });
});
