// Issue 5's acceptance, with real processes: under a steady client load a replica is killed -9 and
// restarted on its disk (it catches up from its log and its peers), then another is killed, its disk
// wiped, and restarted empty: it catches up by state transfer (a checkpoint attested by f+1 replicas,
// chunks from several of them) and then carries the cluster when the leader is killed. Every
// acknowledged write is still there, and the recorded history is linearizable (Porcupine).

import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { checkHistory } from '../linearizability/porcupine.ts';
import { KvClients, RecordedWrites, type StartedCluster, clusterAroundTests, createCluster, restoredAtStart, sleep, statusOf, waitUntil } from './support.ts';

/** Small enough that a wiped replica falls more than two periods behind within seconds. */
const checkpointPeriodInstances = 40;

const started: StartedCluster = createCluster('state-transfer', {
  replicas: 4,
  mode: 'bft',
  subnet: 107,
  // Info logs: the restart's restore line is what proves the replica came back from its own disk.
  configOverrides: { checkpoint: { periodInstances: checkpointPeriodInstances, chunkBytes: 32 * 1024 }, logLevel: 'info' },
});
let clients: KvClients | null = null;

clusterAroundTests(started, {
  afterStart: async () => {
    clients = await KvClients.connect(started.cluster);
  },
  beforeStop: async () => clients?.close(),
});

interface StateTransferStatus {
  readonly state: string;
  readonly cid: number | null;
  readonly bytesFetched: number;
  readonly chunksInstalled: number;
  readonly sources: readonly number[];
}

async function lastDecided(id: number): Promise<number> {
  return (await statusOf(started.cluster, id))?.lastDecidedCid ?? -1;
}

async function stateTransferOf(id: number): Promise<StateTransferStatus | null> {
  const status = (await started.cluster.status(id)) as { stateTransfer?: StateTransferStatus } | null;
  return status?.stateTransfer ?? null;
}

async function killAndWaitForExit(id: number): Promise<void> {
  const child = started.cluster.replica(id).process;
  if (child === null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  started.cluster.kill(id);
  await exited;
}

describe('recovery under load: from the disk, and by state transfer after the disk is lost', () => {
  it('a restarted replica and a wiped replica both catch up, and no acknowledged write is lost', async () => {
    const cluster = started.cluster;
    // Values of 1 KiB over 200 keys: a state of a few hundred KiB, several checkpoint chunks.
    const writes = new RecordedWrites(clients!, { keys: 200, valueBytes: 1000 });
    try {
      await sleep(1000);
      const leader = (await statusOf(cluster, 0))!.leader;
      const [restarted, wiped] = [0, 1, 2, 3].filter((id) => id !== leader) as [number, number];

      // 1. kill -9 and restart on its own disk.
      const decidedBeforeKill = await lastDecided(restarted);
      await killAndWaitForExit(restarted);
      await sleep(1000);
      cluster.start(restarted);
      await cluster.waitReady(restarted);
      // It came back from its own disk (a decision shows in /status a moment before it is durable, so
      // the last one or two before the kill may need its peers).
      expect((await restoredAtStart(cluster, restarted))?.lastDecidedCid).toBeGreaterThan(decidedBeforeKill / 2);
      await waitUntil('the restarted replica catches up', async () => (await lastDecided(restarted)) >= (await lastDecided(leader)) - 2);

      // 2. kill -9, lose the disk, and come back empty once the others are well past two checkpoint periods.
      await killAndWaitForExit(wiped);
      await cluster.wipe(wiped);
      const resumeAt = (await lastDecided(leader)) + 3 * checkpointPeriodInstances;
      await waitUntil('the cluster moves three checkpoint periods on', async () => (await lastDecided(leader)) >= resumeAt, 120_000);
      cluster.start(wiped, { joinsRunningCluster: true });
      await waitUntil(
        'the wiped replica installs a checkpoint by state transfer',
        async () => (await stateTransferOf(wiped))?.state === 'installed',
        120_000,
      );
      const transfer = (await stateTransferOf(wiped))!;
      expect(transfer.cid).toBeGreaterThanOrEqual(resumeAt - checkpointPeriodInstances);
      expect(transfer.bytesFetched).toBeGreaterThan(0);
      // Several chunks (a state of ~200 KiB in 32 KiB chunks), fetched from more than one replica.
      expect(transfer.chunksInstalled).toBeGreaterThan(1);
      expect(transfer.sources.length).toBeGreaterThanOrEqual(2);
      await cluster.waitReady(wiped);
      await waitUntil('the wiped replica catches up', async () => (await lastDecided(wiped)) >= (await lastDecided(leader)) - 2);
      // It heard every peer, and is past every instance it could have voted in before the wipe.
      await waitUntil('the wiped replica votes again', async () => {
        const status = (await cluster.status(wiped)) as { amnesiaFloorCid?: number | null } | null;
        return status?.amnesiaFloorCid === null;
      });
      // Until then a marker kept it amnesic across restarts; past the floor the marker goes.
      await waitUntil('the amnesia marker is removed', () => !existsSync(join(cluster.dataDir(wiped), 'AMNESIC')));

      // 3. Lose the leader: with n = 4 both recovered replicas are needed for every quorum from here on.
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
