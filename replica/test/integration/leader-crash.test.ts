// A leader killed with SIGKILL under load (DESIGN §2, leader change; §9 layer 3): three client sessions
// keep writing and reading through the change, every acknowledged write survives it, and the whole
// history, kill included, is linearizable by Porcupine.

import { describe, expect, it } from 'vitest';
import { checkHistory, HistoryRecorder } from '../linearizability/porcupine.ts';
import {
  clusterAroundTests,
  createCluster,
  KvClients,
  type KvSession,
  sleep,
  statusOf,
  waitUntil,
} from './support.ts';

const subnet = 101;
const loadBeforeKillMs = 2_000;
const loadAfterKillMs = 6_000;
/** Acknowledged writes invoked after the kill that prove the cluster moved on (more keep coming; a few suffice). */
const writesAfterKillMin = 10;
/** If the change is slow on a loaded machine, the load goes on this long at most waiting for them. */
const loadAfterKillMsMax = 30_000;
const sharedKeys = ['shared/0', 'shared/1', 'shared/2'];

interface AcknowledgedWrite {
  readonly key: string;
  readonly value: string;
  /** hrtime of the call: after the kill or not. */
  readonly callNs: bigint;
}

describe('leader crash under load, BFT n=4', () => {
  const started = createCluster('leader-crash', { replicas: 4, mode: 'bft', subnet });
  let clients: KvClients | null = null;
  clusterAroundTests(started, { beforeStop: async () => clients?.close() });

  it('keeps serving through a leader change, loses no acknowledged write, and stays linearizable', async () => {
    const { cluster } = started;
    clients = await KvClients.connect(cluster);
    const sessions = [0, 1, 2].map((i) =>
      clients!.session(`load-${i}`, { orderedTimeoutMs: 15_000, unorderedTimeoutMs: 2_000 }),
    );
    const recorder = new HistoryRecorder();
    const acknowledged: AcknowledgedWrite[] = [];
    let stopLoad = false;
    let killNs: bigint | null = null;

    const runLoad = async (session: KvSession, index: number): Promise<void> => {
      let n = 0;
      const ownKeys: string[] = [];
      while (!stopLoad) {
        n++;
        // Deterministic mix per session: puts to fresh keys (each must survive), puts to shared keys
        // (contended registers for Porcupine), ordered and unordered reads of both.
        const pick = (n * 7 + index) % 10;
        if (pick < 4 || ownKeys.length === 0) {
          const key = `own/${index}/${n}`;
          await recordPut(session, key, `v-${index}-${n}`);
          ownKeys.push(key);
        } else if (pick < 6) {
          await recordPut(session, sharedKeys[n % sharedKeys.length] as string, `v-${index}-${n}`);
        } else {
          const key = pick % 2 === 0 ? (sharedKeys[n % sharedKeys.length] as string) : (ownKeys[(n * 13) % ownKeys.length] as string);
          await recordGet(session, key, pick < 8);
        }
      }
    };

    const recordPut = async (session: KvSession, key: string, value: string): Promise<void> => {
      const done = recorder.call(session.clientId, { kind: 'put', key, value });
      const callNs = process.hrtime.bigint();
      try {
        await session.put(key, value);
        done();
        acknowledged.push({ key, value, callNs });
      } catch {
        done.unknown();
      }
    };

    let readsCompletedAfterKill = 0;
    const recordGet = async (session: KvSession, key: string, ordered: boolean): Promise<void> => {
      const done = recorder.call(session.clientId, { kind: 'get', key });
      const callNs = process.hrtime.bigint();
      try {
        done(await session.get(key, ordered));
        if (killNs !== null && callNs > killNs) readsCompletedAfterKill++;
      } catch {
        done.unknown();
      }
    };

    const loads = sessions.map((session, index) => runLoad(session, index));
    try {
      await sleep(loadBeforeKillMs);
      const before = await statusOf(cluster, 0);
      expect(before, 'replica 0 answers /status').not.toBeNull();
      const oldLeader = before!.leader;
      const regencyBefore = before!.regency;
      expect(acknowledged.length, 'writes completed before the kill').toBeGreaterThan(0);

      cluster.kill(oldLeader);
      killNs = process.hrtime.bigint();
      const survivors = cluster.replicas.map((r) => r.id).filter((id) => id !== oldLeader);

      await sleep(loadAfterKillMs);
      const afterKill = () => acknowledged.filter((w) => killNs !== null && w.callNs > killNs).length;
      await waitUntil(`${writesAfterKillMin} writes acknowledged after the kill`, () => afterKill() >= writesAfterKillMin, loadAfterKillMsMax);

      // Every survivor installed a higher regency led by a live replica. Polled: a survivor may still be
      // synchronizing when the others already decide.
      const survivorsMovedOn = async (): Promise<boolean> => {
        const statuses = await Promise.all(survivors.map((id) => statusOf(cluster, id)));
        return statuses.every(
          (status) =>
            status !== null &&
            status.synchronized &&
            status.regency > regencyBefore &&
            status.leader !== oldLeader &&
            survivors.includes(status.leader),
        );
      };
      await waitUntil('every survivor to follow a new, live leader in a higher regency', survivorsMovedOn);
      expect(readsCompletedAfterKill, 'reads completed after the kill').toBeGreaterThan(0);
      expect(await statusOf(cluster, oldLeader), 'the killed leader is gone').toBeNull();
    } finally {
      stopLoad = true;
      await Promise.all(loads);
    }

    // Every acknowledged write to a key of its own is still there: nobody else writes those keys.
    const checker = clients.session('verify', { orderedTimeoutMs: 15_000 });
    for (const write of acknowledged) {
      if (!write.key.startsWith('own/')) continue;
      const done = recorder.call(checker.clientId, { kind: 'get', key: write.key });
      const value = await checker.get(write.key, true);
      done(value);
      expect(value, `acknowledged write of ${write.key}`).toBe(write.value);
    }
    for (const key of sharedKeys) {
      const done = recorder.call(checker.clientId, { kind: 'get', key });
      done(await checker.get(key, true));
    }

    const verdict = await checkHistory(recorder.history(), { timeoutMs: 30_000 });
    expect(verdict.result, `Porcupine verdict (visualization: ${verdict.visualization ?? 'none'})`).toBe('ok');
  });
});
