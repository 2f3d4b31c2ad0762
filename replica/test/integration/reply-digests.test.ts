// Reply digests between real processes (DESIGN §3): with results of 8 KiB, a client gets one full reply and
// SHA-256 digests from the others, and when the replica it relies on for the bytes is killed -9 it gets
// them from the digest senders and carries on.

import { describe, expect, it } from 'vitest';
import { clusterAroundTests, createCluster, KvClients, startReplicas, statusOf, waitUntil } from './support.ts';

const subnet = 110;
const valueBytes = 8 * 1024;
const readsPerRound = 5;

describe('reply digests, BFT n=4, 8 KiB results', () => {
  const started = createCluster('reply-digests', { replicas: 4, mode: 'bft', subnet });
  let clients: KvClients | null = null;
  clusterAroundTests(started, { beforeStop: async () => clients?.close() });

  it('answers by digest, and gets the bytes from the digest senders when the replica holding them dies', { timeout: 240_000 }, async () => {
    const { cluster } = started;
    clients = await KvClients.connect(cluster);
    // Sessions pick the replica they first ask for bytes by their id: four of them cover more than the leader.
    const sessions = [0, 1, 2, 3].map((i) => clients!.session(`reader-${i}`, { orderedTimeoutMs: 60_000 }));
    const values = ['a', 'b', 'c', 'd'].map((fill) => fill.repeat(valueBytes));
    for (const [i, value] of values.entries()) await sessions[0]!.put(`big/${i}`, value);

    const readAll = async (): Promise<void> => {
      for (const session of sessions) {
        for (let n = 0; n < readsPerRound; n++) {
          const i = n % values.length;
          expect(await session.get(`big/${i}`, true)).toBe(values[i]);
        }
      }
    };
    const total = (stat: 'digestReplies' | 'fullResultFetches') => sessions.reduce((sum, s) => sum + s.client.stats()[stat], 0);
    await readAll();
    // Each session's first read asked every replica for the bytes (no result yet said they are large); the rest got digests.
    expect(total('digestReplies')).toBeGreaterThanOrEqual(sessions.length * 2 * (readsPerRound - 1));
    expect(total('fullResultFetches')).toBe(0);
    const digestsBefore = total('digestReplies');

    // Every follower in turn (killing the leader would bring a leader change and retransmissions to everyone).
    const leader = (await statusOf(cluster, 0))?.leader;
    expect(leader).toBeDefined();
    for (const id of cluster.replicas.map((r) => r.id).filter((id) => id !== leader)) {
      cluster.kill(id);
      await readAll();
      // Back from its disk and caught up before the next one goes, so that at most f=1 is ever behind.
      await startReplicas(started, [id]);
      await waitUntil(`replica ${id} caught up`, async () => {
        await sessions[0]!.get('big/0', true);
        const [restarted, peer] = await Promise.all([statusOf(cluster, id), statusOf(cluster, leader as number)]);
        return restarted !== null && peer !== null && restarted.lastDecidedCid >= peer.lastDecidedCid;
      }, 60_000);
    }
    // Some session relied on a follower that was killed: it fetched the bytes from the digest senders.
    expect(total('fullResultFetches')).toBeGreaterThanOrEqual(1);
    expect(total('digestReplies')).toBeGreaterThan(digestsBefore);
  });
});
