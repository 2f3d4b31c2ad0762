// Signed client requests (DESIGN §3, §4): a replica checks a request's signature only when the client's own
// authenticated channel cannot vouch for it, and always before it passes the request on.

import { afterEach, describe, expect, it, vi } from 'vitest';
import { LockstepCluster, batchOf, request } from '../../test/sim/lockstep.ts';
import { SimKeys } from '../../test/sim/crypto.ts';
import { requestSigningPayload } from '../protocol/codec.ts';
import { type ClientRequest, MessageType } from '../protocol/messages.ts';
import { DropReason } from '../protocol/reasons.ts';
import type { CoreCrypto } from './crypto.ts';

/** Client signature checks per replica, counted through the cores' crypto. */
function countClientChecks(): Map<number, number> {
  const checks = new Map<number, number>();
  const original = SimKeys.prototype.cryptoFor;
  vi.spyOn(SimKeys.prototype, 'cryptoFor').mockImplementation(function (this: SimKeys, id: number): CoreCrypto {
    const crypto = original.call(this, id);
    return {
      ...crypto,
      verifyClient: (clientId, payload, signature) => {
        checks.set(id, (checks.get(id) ?? 0) + 1);
        return crypto.verifyClient(clientId, payload, signature);
      },
    };
  });
  return checks;
}

function signed(cluster: LockstepCluster, unsigned: ClientRequest): ClientRequest {
  return { ...unsigned, signature: cluster.keys.signClient(unsigned.clientId, requestSigningPayload(unsigned)) };
}

function badlySigned(unsigned: ClientRequest): ClientRequest {
  return { ...unsigned, signature: new Uint8Array(32).fill(7) };
}

const signedConfig = { requireSignedRequests: true } as const;

afterEach(() => {
  vi.restoreAllMocks();
});

describe('signed requests: checked where the channel cannot vouch', () => {
  it('in the normal case only the leader checks a request its client sent to all; the followers check nothing', () => {
    const checks = countClientChecks();
    const cluster = new LockstepCluster(4, 'bft', signedConfig);
    cluster.submit(signed(cluster, request('alice', 1, 'a1')), [0, 1, 2, 3]);
    cluster.run();
    for (const id of [0, 1, 2, 3]) expect(cluster.decidedKeys(id)).toHaveLength(1);
    expect(checks.get(0)).toBe(1);
    for (const id of [1, 2, 3]) expect(checks.get(id) ?? 0, `replica ${id}`).toBe(0);
  });

  it('a follower checks a proposed request it did not get from the client, and one whose bytes differ from what it got', () => {
    const checks = countClientChecks();
    const cluster = new LockstepCluster(4, 'bft', signedConfig);
    const a1 = signed(cluster, request('alice', 1, 'a1'));
    cluster.submit(a1, [1]);
    // Replica 1 got a1 from alice: the same bytes in a PROPOSE cost it nothing.
    cluster.inject(0, 1, { type: MessageType.PROPOSE, view: 0, cid: 0, regency: 0, batch: batchOf(a1) });
    expect(checks.get(1) ?? 0).toBe(0);
    expect(cluster.sent.some((e) => e.from === 1 && e.message.type === MessageType.WRITE)).toBe(true);
    // Replica 2 did not: it checks the signature, finds it good, and votes.
    cluster.inject(0, 2, { type: MessageType.PROPOSE, view: 0, cid: 0, regency: 0, batch: batchOf(a1) });
    expect(checks.get(2)).toBe(1);
    expect(cluster.sent.some((e) => e.from === 2 && e.message.type === MessageType.WRITE)).toBe(true);

    // A Byzantine leader swaps the signature of the request replica 3 holds: only the real one counts.
    const c3 = signed(cluster, request('carol', 1, 'c1'));
    cluster.submit(c3, [3]);
    cluster.inject(0, 3, { type: MessageType.PROPOSE, view: 0, cid: 0, regency: 0, batch: batchOf(badlySigned(c3)) });
    expect(checks.get(3)).toBe(1);
    expect(cluster.core(3).status().dropped[DropReason.BAD_BATCH]).toBe(1);
    // ... or keeps the signature and changes the operation.
    cluster.inject(0, 3, { type: MessageType.PROPOSE, view: 0, cid: 0, regency: 0, batch: batchOf({ ...c3, operation: new TextEncoder().encode('c1!') }) });
    expect(checks.get(3)).toBe(2);
    expect(cluster.core(3).status().dropped[DropReason.BAD_BATCH]).toBe(2);
    expect(cluster.sent.some((e) => e.from === 3 && e.message.type === MessageType.WRITE)).toBe(false);
  });

  it('a badly signed request from its own client costs no leader change: the leader drops it, the followers when its timer ends', () => {
    const cluster = new LockstepCluster(4, 'bft', signedConfig);
    cluster.submit(badlySigned(request('mallory', 1, 'm1')), [0, 1, 2, 3]);
    expect(cluster.core(0).status().dropped[DropReason.BAD_SIGNATURE]).toBe(1);
    for (const id of [1, 2, 3]) expect(cluster.core(id).status().pendingRequests).toBe(1);
    cluster.tick(20);
    cluster.run();
    for (const id of [1, 2, 3]) {
      expect(cluster.core(id).status().pendingRequests).toBe(0);
      expect(cluster.core(id).status().dropped[DropReason.BAD_SIGNATURE]).toBe(1);
    }
    const blamed = cluster.sent.filter((e) => e.message.type === MessageType.STOP || e.message.type === MessageType.FORWARD);
    expect(blamed).toEqual([]);
    // The cluster orders the next good request in the same regency.
    cluster.submit(signed(cluster, request('alice', 1, 'a1')), [0, 1, 2, 3]);
    cluster.run();
    for (const id of [0, 1, 2, 3]) {
      expect(cluster.decidedKeys(id)).toHaveLength(1);
      expect(cluster.core(id).status().regency).toBe(0);
    }
  });

  it('a new leader checks what it got straight from clients before proposing it, and leaves a badly signed one out', () => {
    const checks = countClientChecks();
    const cluster = new LockstepCluster(4, 'bft', signedConfig);
    const cut = (e: { from: number; to: number }) => (e.from === 0 || e.to === 0 ? 'drop' : 'deliver');
    // Leader 0 is cut off; b1's timers expire twice at the followers (forward, then STOP).
    cluster.submit(signed(cluster, request('bob', 1, 'b1')), [1, 2, 3]);
    cluster.tick(4, [1, 2, 3]);
    cluster.run(cut);
    cluster.tick(1, [1, 2, 3]);
    // These reach replica 1 while 0 is still its leader, with timers too young to run out before the change.
    const c1 = signed(cluster, request('carol', 1, 'c1'));
    cluster.submit(c1, [1]);
    cluster.submit(badlySigned(request('mallory', 1, 'm1')), [1]);
    const checksBefore = checks.get(1) ?? 0;
    cluster.tick(3, [1, 2, 3]);
    cluster.run(cut);
    expect(cluster.core(1).status().regency).toBe(1);
    expect(cluster.core(1).status().leader).toBe(1);
    // Replica 1 checked bob's request when its timer first ran out (before forwarding it); as the new leader
    // it checked carol's and mallory's before putting its first batch into the SYNC, and left mallory's out.
    expect(cluster.sent.some((e) => e.from === 1 && e.message.type === MessageType.SYNC)).toBe(true);
    expect(cluster.core(1).status().dropped[DropReason.BAD_SIGNATURE]).toBe(1);
    expect((checks.get(1) ?? 0) - checksBefore).toBe(2);
    for (const id of [1, 2, 3]) {
      const ordered = (cluster.deliveries.get(id) ?? []).flatMap((d) => d.requests.map((r) => r.clientId));
      expect(ordered.sort(), `replica ${id}`).toEqual(['bob', 'carol']);
    }
  });
});
