// Reconfiguration in the core, on a lockstep cluster: a View Manager's signed request is ordered like any
// request, applied by every replica after the instance that decided it, and answered by the replicas.

import { describe, expect, it } from 'vitest';
import { LockstepCluster, request } from '../../test/sim/lockstep.ts';
import type { Bytes, ClientRequest } from '../protocol/messages.ts';
import { MessageType, RequestKind } from '../protocol/messages.ts';
import {
  type Reconfiguration,
  type ReconfigurationOperation,
  decodeReconfigurationResult,
  encodeSignedReconfiguration,
  reconfigurationSigningPayload,
} from '../protocol/reconfiguration.ts';
import { makeCoreConfig } from './config.ts';
import type { PersistRecord } from './ready.ts';
import { ReplicaCore } from './replica.ts';

const add = (id: number): ReconfigurationOperation => ({ kind: 'add', id, host: `replica-${id}.demo`, port: 7000, adminPort: 8000, publicKey: new Uint8Array(32).fill(id) });
const remove = (id: number): ReconfigurationOperation => ({ kind: 'remove', id });

/** The View Manager client's next sequence number, per cluster. */
const vmSeqs = new WeakMap<LockstepCluster, number>();
let nonce = 0;

/** The View Manager's request as a client request of session vm/1; signed by the View Manager unless `sign` says otherwise. */
function reconfigurationRequest(cluster: LockstepCluster, fromView: number, operations: ReconfigurationOperation[], sign?: (payload: Bytes) => Bytes): ClientRequest {
  const reconfiguration: Reconfiguration = { fromView, operations, epoch: 1, nonce: Uint8Array.of(++nonce % 256) };
  const payload = reconfigurationSigningPayload(reconfiguration);
  const signature = (sign ?? ((p) => cluster.keys.signViewManager(p)))(payload);
  const seq = (vmSeqs.get(cluster) ?? 0) + 1;
  vmSeqs.set(cluster, seq);
  return { ...request('vm', seq, ''), operation: encodeSignedReconfiguration({ reconfiguration, signature }), kind: RequestKind.RECONFIGURATION };
}

/** Submit to `to` and deliver everything. */
function order(cluster: LockstepCluster, submitted: ClientRequest, to: readonly number[]): void {
  cluster.submit(submitted, to);
  cluster.run();
}

/** The replica's answer to the last reconfiguration request it executed. */
function lastResult(cluster: LockstepCluster, id: number) {
  const deliveries = cluster.deliveries.get(id) ?? [];
  for (let i = deliveries.length - 1; i >= 0; i--) {
    const results = deliveries[i]?.reconfigurationResults;
    if (results !== undefined && results.size > 0) return decodeReconfigurationResult([...results.values()].at(-1) as Uint8Array);
  }
  return null;
}

describe('reconfiguration in the core', () => {
  it('every replica applies an added member after the instance that decided it, answers with the new view, and checkpoints there', () => {
    const cluster = new LockstepCluster(4, 'bft');
    order(cluster, request('alice', 1, 'a1'), [0, 1, 2, 3]);
    order(cluster, reconfigurationRequest(cluster, 0, [add(4)]), [0, 1, 2, 3]);
    for (const id of [0, 1, 2, 3]) {
      const status = cluster.core(id).status();
      expect(status.viewNumber).toBe(1);
      expect(status.membership.view.members).toEqual([0, 1, 2, 3, 4]);
      expect(status.membership.members.get(4)?.host).toBe('replica-4.demo');
      const result = lastResult(cluster, id);
      expect(result).toMatchObject({ accepted: true, view: { number: 1, f: 1 } });
      const delivery = cluster.deliveries.get(id)?.at(-1);
      expect(delivery?.checkpoint).toBe(true);
      expect(delivery?.membership?.view.number).toBe(1);
      // The service never sees the request: it is answered by the replica.
      expect(delivery?.reconfigurationResults?.size).toBe(1);
    }
    // Replica 4 is not running: the other four are a quorum of five (more than (5+1)/2) and go on.
    order(cluster, request('alice', 2, 'a2'), [0, 1, 2, 3]);
    for (const id of [0, 1, 2, 3]) expect(cluster.core(id).status().lastDecidedCid).toBe(2);
    // Messages of the new view name it.
    expect(cluster.sent.at(-1)?.message.view).toBe(1);
  });

  it('refuses a request signed by another key, or for a stale view, with a reason, and changes nothing', () => {
    const cluster = new LockstepCluster(4, 'bft');
    order(cluster, reconfigurationRequest(cluster, 0, [add(4)], (payload) => cluster.keys.signClient('mallory', payload)), [0, 1, 2, 3]);
    expect(lastResult(cluster, 0)).toEqual({ accepted: false, reason: expect.stringMatching(/not signed by the View Manager/) });
    expect(cluster.core(0).status().viewNumber).toBe(0);
    order(cluster, reconfigurationRequest(cluster, 0, [add(4)]), [0, 1, 2, 3]);
    expect(cluster.core(1).status().viewNumber).toBe(1);
    // A replay of the same content (new nonce, same fromView) is stale now.
    order(cluster, reconfigurationRequest(cluster, 0, [add(5)]), [0, 1, 2, 3]);
    for (const id of [0, 1, 2, 3]) {
      expect(lastResult(cluster, id)).toEqual({ accepted: false, reason: expect.stringMatching(/stale: it changes view 0, the current view is 1/) });
      expect(cluster.core(id).status().membership.view.members).toEqual([0, 1, 2, 3, 4]);
    }
  });

  it('removing the current leader hands the next regency to a remaining member, and ordering goes on', () => {
    const cluster = new LockstepCluster(5, 'bft');
    expect(cluster.core(1).leader).toBe(0);
    order(cluster, reconfigurationRequest(cluster, 0, [remove(0)]), [0, 1, 2, 3, 4]);
    for (const id of [1, 2, 3, 4]) {
      expect(cluster.core(id).status().membership.view.members).toEqual([1, 2, 3, 4]);
      expect(cluster.core(id).leader).toBe(1);
    }
    expect(cluster.core(0).status().removedAtCid).toBe(0);
    order(cluster, request('alice', 1, 'after'), [1, 2, 3, 4]);
    for (const id of [1, 2, 3, 4]) expect(cluster.core(id).status().lastDecidedCid).toBe(1);
    // The removed replica orders nothing more, and answers no read: its state stops at its last instance.
    expect(cluster.core(0).status().lastDecidedCid).toBe(0);
    expect(cluster.core(0).admitUnordered('alice', { ...request('alice', 2 ** 52, 'read'), ordered: false })).toBe(false);
    expect(cluster.core(1).admitUnordered('alice', { ...request('alice', 2 ** 52, 'read'), ordered: false })).toBe(true);
  });

  it('a removed replica that missed the instance removing it learns it from the members that stay', () => {
    const cluster = new LockstepCluster(5, 'bft');
    const removal = reconfigurationRequest(cluster, 0, [remove(0)]);
    cluster.submit(removal, [0, 1, 2, 3, 4]);
    // Replica 0 (the leader) hears no ACCEPT: it cannot decide the instance itself.
    cluster.run((e) => (e.to === 0 && e.message.type === MessageType.ACCEPT ? 'drop' : 'deliver'));
    for (const id of [1, 2, 3, 4]) expect(cluster.core(id).status().viewNumber).toBe(1);
    expect(cluster.core(0).status().removedAtCid).toBe(0);
    expect(cluster.core(0).status().viewNumber).toBe(1);
  });

  it('a replica restarted from its log comes back in the view its log decided', () => {
    const cluster = new LockstepCluster(4, 'bft');
    order(cluster, reconfigurationRequest(cluster, 0, [add(4), add(5), add(6), { kind: 'set-f', f: 2 }]), [0, 1, 2, 3]);
    const disk = cluster.disks.get(2) as PersistRecord[];
    const restarted = new ReplicaCore(makeCoreConfig(2, cluster.view), cluster.keys.cryptoFor(2), { restore: disk });
    expect(restarted.status().membership.view).toEqual({ number: 1, mode: 'bft', f: 2, members: [0, 1, 2, 3, 4, 5, 6] });
  });

  it('only the first of two reconfigurations decided in one instance applies', () => {
    const cluster = new LockstepCluster(4, 'bft');
    const first = reconfigurationRequest(cluster, 0, [add(4)]);
    const second = { ...reconfigurationRequest(cluster, 0, [add(5)]), clientId: 'vm2', seq: 1 };
    // The leader is busy with instance 0 while both arrive: instance 1 carries both.
    cluster.submit(request('alice', 1, 'busy'), [0, 1, 2, 3]);
    for (const id of [0, 1, 2, 3]) {
      cluster.core(id).receiveRequest(first.clientId, first);
      cluster.core(id).receiveRequest(second.clientId, second);
    }
    cluster.collect();
    cluster.run();
    const results = cluster.deliveries.get(0)?.at(-1)?.reconfigurationResults;
    expect(results?.size).toBe(2);
    const verdicts = [...(results?.values() ?? [])].map((bytes) => decodeReconfigurationResult(bytes));
    expect(verdicts.filter((v) => v?.accepted === true)).toHaveLength(1);
    expect(verdicts.find((v) => v?.accepted === false)).toEqual({ accepted: false, reason: expect.stringMatching(/decided in the same instance/) });
    expect(cluster.core(3).status().viewNumber).toBe(1);
  });
});
