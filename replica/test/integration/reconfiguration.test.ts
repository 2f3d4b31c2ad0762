// Reconfiguration with real processes (DESIGN §6): a View Manager grows a BFT cluster from 4 to 5 to 7
// replicas (f 1 → 2) and shrinks it back to 4, removing the leader on the way, while a client writes
// throughout. New replicas catch up by state transfer, removed ones stop, no acknowledged write is lost,
// and the history is linearizable. Requests signed by another key or for a stale view change nothing.

import { describe, expect, it } from 'vitest';
import { BftClient } from '../../src/client/client.ts';
import { ViewManager } from '../../src/client/view-manager.ts';
import { viewManagerClientName } from '../../src/cli/local-cluster.ts';
import { readTlsMaterial } from '../../src/crypto/certificates.ts';
import { Signer, generateSigningKeyPair } from '../../src/crypto/ed25519.ts';
import type { ReconfigurationOperation, ViewDescription } from '../../src/protocol/reconfiguration.ts';
import { reconfigurationSigningPayload } from '../../src/protocol/reconfiguration.ts';
import { loadViewManagerKey } from '../../src/server/keys.ts';
import { TlsClientTransport } from '../../src/transport/tls-transport.ts';
import { checkHistory } from '../linearizability/porcupine.ts';
import { KvClients, RecordedWrites, type StartedCluster, clusterAroundTests, createCluster, waitUntil } from './support.ts';

const started: StartedCluster = createCluster('reconfiguration', { replicas: 4, mode: 'bft', subnet: 108, configOverrides: { logLevel: 'info' } });
let clients: KvClients | null = null;
let admin: BftClient | null = null;

clusterAroundTests(started, {
  afterStart: async () => {
    clients = await KvClients.connect(started.cluster);
    const cluster = started.cluster;
    admin = new BftClient({
      clientId: `${viewManagerClientName}/vm`,
      view: cluster.view,
      transport: new TlsClientTransport({ tls: await readTlsMaterial(cluster.keysDir, `client-${viewManagerClientName}`), replicas: cluster.endpoints }),
      timeouts: { orderedTimeoutMs: 30_000 },
    });
  },
  beforeStop: async () => {
    await admin?.close();
    await clients?.close();
  },
});

interface Status {
  readonly lastDecidedCid: number;
  readonly view: { readonly number: number; readonly members: readonly { readonly id: number }[] };
  readonly removedAtCid: number | null;
  readonly leader: number;
  readonly stateTransfer: { readonly awaiting: boolean; readonly state: string };
}

async function status(id: number): Promise<Status | null> {
  return (await started.cluster.status(id)) as Status | null;
}

/** waitUntil, and on a timeout the status of every replica first: what a failure in CI needs to be understood. */
async function waitOrReport(what: string, condition: () => Promise<boolean> | boolean, timeoutMs?: number): Promise<void> {
  try {
    await waitUntil(what, condition, timeoutMs);
  } catch (error) {
    for (const replica of started.cluster.replicas) {
      const s = (await started.cluster.status(replica.id)) as Record<string, unknown> | null;
      const pick = (keys: string[]) => (s === null ? 'down' : JSON.stringify(Object.fromEntries(keys.map((k) => [k, s[k]]))));
      process.stderr.write(`replica ${replica.id}: ${pick(['view', 'regency', 'leader', 'synchronized', 'lastDecidedCid', 'lagInstances', 'amnesiaFloorCid', 'removedAtCid', 'queues', 'dropped'])}\n`);
    }
    throw error;
  }
}

/** Start replicas a reconfiguration added, and wait until each has caught up with replica `peer`. */
async function startJoiners(view: ViewDescription, ids: readonly number[], peer: number): Promise<void> {
  const cluster = started.cluster;
  for (const id of ids) {
    await cluster.addReplica(id, view);
    const child = cluster.start(id);
    if (child.pid !== undefined) started.spawnedPids.push(child.pid);
  }
  for (const id of ids) {
    await waitOrReport(
      `replica ${id} caught up in view ${view.number}`,
      async () => {
        const [mine, theirs] = await Promise.all([status(id), status(peer)]);
        return mine !== null && theirs !== null && mine.view.number >= view.number && !mine.stateTransfer.awaiting && mine.lastDecidedCid >= theirs.lastDecidedCid - 2;
      },
      90_000,
    );
  }
}

describe('reconfiguration under load', () => {
  it('4 → 5 → 7 → 4 replicas, the leader removed on the way: new replicas catch up, removed ones stop, nothing is lost', async () => {
    const cluster = started.cluster;
    const viewManager = new ViewManager({ privateKeyPem: await loadViewManagerKey(cluster.keysDir), client: admin!, epoch: 1 });
    const add = async (id: number): Promise<ReconfigurationOperation> => ({ kind: 'add', ...(await cluster.createReplicaKeys(id)) });
    const writes = new RecordedWrites(clients!, { keys: 20 });
    try {
      await waitOrReport('the first writes', () => writes.acknowledgedWrites > 20);

      // A request signed by another key, and one for a stale view, are refused with a reason; nothing changes.
      const stranger = new Signer(generateSigningKeyPair().privateKeyPem);
      const forged = viewManager.sign(0, [await add(4)]);
      const forgedResult = await viewManager.submit({ ...forged, signature: stranger.sign(reconfigurationSigningPayload(forged.reconfiguration)) });
      expect(forgedResult).toEqual({ accepted: false, reason: expect.stringMatching(/not signed by the View Manager/) });
      const staleResult = await viewManager.submit(viewManager.sign(7, [await add(4)]));
      expect(staleResult).toEqual({ accepted: false, reason: expect.stringMatching(/stale: it changes view 7, the current view is 0/) });
      expect((await status(0))?.view.number).toBe(0);

      // 4 → 5.
      const view1 = await viewManager.reconfigure([await add(4)]);
      expect(view1.members.map((m) => m.id)).toEqual([0, 1, 2, 3, 4]);
      await startJoiners(view1, [4], 0);

      // 5 → 7, f 1 → 2.
      const view2 = await viewManager.reconfigure([await add(5), await add(6), { kind: 'set-f', f: 2 }]);
      expect(view2).toMatchObject({ number: 2, f: 2 });
      await startJoiners(view2, [5, 6], 0);
      const beforeShrink = writes.acknowledgedWrites;
      await waitOrReport('writes acknowledged by the 7-replica cluster', () => writes.acknowledgedWrites > beforeShrink + 20, 60_000);

      // 7 → 4, f 2 → 1, removing the current leader and two others.
      const leader = (await status(3))!.leader;
      const removed = [leader, ...[0, 1, 2, 3, 4, 5, 6].filter((id) => id !== leader)].slice(0, 3);
      const view3 = await viewManager.reconfigure([...removed.map((id): ReconfigurationOperation => ({ kind: 'remove', id })), { kind: 'set-f', f: 1 }]);
      expect(view3.members.map((m) => m.id).sort()).toEqual([0, 1, 2, 3, 4, 5, 6].filter((id) => !removed.includes(id)));
      for (const id of removed) {
        await waitOrReport(`replica ${id} reports its removal`, async () => (await status(id))?.removedAtCid !== null);
        await cluster.stop(id);
      }
      const remaining = view3.members.map((m) => m.id);
      await waitOrReport('a new leader among the remaining replicas', async () => remaining.includes((await status(remaining[0] as number))?.leader ?? -1), 60_000);
      const afterShrink = writes.acknowledgedWrites;
      await waitOrReport('writes acknowledged by the 4 remaining replicas', () => writes.acknowledgedWrites > afterShrink + 20, 60_000);
    } finally {
      await writes.stop();
    }
    expect(await writes.readBack(clients!)).toEqual([]);
    const result = await checkHistory(writes.recorder.history());
    expect(result.result).toBe('ok');
  });
});
