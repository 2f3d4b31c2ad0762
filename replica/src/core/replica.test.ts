import { describe, expect, it } from 'vitest';
import { LockstepCluster, batchOf, request } from '../../test/sim/lockstep.ts';
import { MessageType, type Propose } from '../protocol/messages.ts';
import { DropReason } from '../protocol/reasons.ts';
import { makeCoreConfig } from './config.ts';
import { digestKey } from './crypto.ts';
import { ReplicaCore } from './replica.ts';

const a1 = request('alice', 1, 'a1');
const a2 = request('alice', 2, 'a2');
const a3 = request('alice', 3, 'a3');
const b1 = request('bob', 1, 'b1');

function propose(batch: Uint8Array, regency = 0, cid = 0): Propose {
  return { type: MessageType.PROPOSE, view: 0, cid, regency, batch };
}

describe('Ready: votes are durable before they leave (DESIGN §2)', () => {
  it('the WRITE for a proposal and its record come out in the same Ready, record first', () => {
    const cluster = new LockstepCluster(4);
    const follower = cluster.core(1);
    follower.step(0, propose(batchOf(a1)));
    const ready = follower.ready();
    expect(ready.persist.map((r) => r.kind)).toEqual(['write']);
    expect(ready.messages.map((m) => m.message.type)).toEqual([MessageType.WRITE]);
  });

  it('the ACCEPT goes out with its record once a WRITE quorum forms, and a decision is persisted before delivery', () => {
    const cluster = new LockstepCluster(4);
    cluster.submit(a1, [0, 1, 2, 3]);
    const readies: string[] = [];
    const core = cluster.core(2);
    const original = core.ready.bind(core);
    core.ready = () => {
      const ready = original();
      readies.push(
        `${ready.persist.map((r) => r.kind).join(',')}|${ready.messages.map((m) => m.message.type).join(',')}|${ready.deliveries.length}`,
      );
      return ready;
    };
    cluster.run();
    expect(readies).toContain(`accept|${MessageType.ACCEPT}|0`);
    expect(readies).toContain('decision||1');
    expect(cluster.decidedKeys(2)).toHaveLength(1);
  });
});

describe('restart from persisted votes', () => {
  it('a restored replica refuses a second value in a regency it already voted in, and repeats its own vote', () => {
    const cluster = new LockstepCluster(4);
    cluster.core(1).step(0, propose(batchOf(a1)));
    cluster.collect();
    cluster.restart(1);
    const restored = cluster.core(1);
    restored.step(0, propose(batchOf(b1)));
    expect(restored.status().dropped[DropReason.CONFLICTING_VOTE]).toBe(1);
    expect(restored.hasReady()).toBe(false);
    // Its retransmission repeats the WRITE for the value it voted for before the crash.
    cluster.tick(lockstepRetransmitTicks(cluster), [1]);
    const writes = cluster.queue.filter((e) => e.from === 1 && e.message.type === MessageType.WRITE);
    expect(writes.length).toBeGreaterThan(0);
    for (const w of writes) {
      expect(w.message.type === MessageType.WRITE ? digestKey(w.message.digest) : null).toBe(cluster.digestKeyOf(batchOf(a1)));
    }
  });

  it('a restored replica knows what it decided, and the clients whose requests it ordered', () => {
    const cluster = new LockstepCluster(4);
    cluster.submit(a1, [0, 1, 2, 3]);
    cluster.run();
    cluster.restart(3);
    expect(cluster.core(3).status().lastDecidedCid).toBe(0);
    cluster.core(3).receiveRequest('alice', a1);
    expect(cluster.core(3).ready().notices).toEqual([{ kind: 'cached-reply', clientId: 'alice', seq: 1 }]);
  });
});

describe('restart in the middle of a leader change', () => {
  it('a replica restored after installing a regency, before its SYNC, sends its STOPDATA again', () => {
    const cluster = new LockstepCluster(4);
    cluster.submit(a1, [1, 2, 3]);
    cluster.tick(4);
    cluster.run((e) => (e.to === 0 ? 'drop' : 'deliver'));
    cluster.tick(4);
    // Everyone installs regency 1; r2's STOPDATA to the new leader r1 is lost, so r1 cannot sync yet
    // (it needs n - f = 3 collects and r0's arrive later).
    cluster.run((e) => (e.message.type === MessageType.STOPDATA && (e.from === 2 || e.from === 0) ? 'drop' : 'deliver'));
    expect(cluster.core(2).status().regency).toBe(1);
    expect(cluster.core(1).status().synchronized).toBe(false);
    cluster.restart(2);
    cluster.tick(lockstepRetransmitTicks(cluster), [2]);
    const resent = cluster.queue.filter((e) => e.from === 2 && e.message.type === MessageType.STOPDATA && e.to === 1);
    expect(resent.length).toBeGreaterThan(0);
    cluster.run((e) => (e.from === 2 && e.to === 1) || e.to !== 0 ? 'deliver' : 'drop');
    expect(cluster.core(1).status().synchronized).toBe(true);
    expect(cluster.decidedKeys(1)).toEqual([cluster.digestKeyOf(batchOf(a1))]);
  });
});

function lockstepRetransmitTicks(cluster: LockstepCluster): number {
  return cluster.core(0).config.retransmitTicks;
}

describe('client requests', () => {
  it('answers BUSY beyond the per-client in-flight limit instead of queueing', () => {
    const view = { number: 0, mode: 'bft' as const, f: 1, members: [0, 1, 2, 3] };
    const cluster = new LockstepCluster(4);
    const core = new ReplicaCore(makeCoreConfig(1, view, { clientInFlightMax: 2 }), cluster.keys.cryptoFor(1));
    for (const r of [a1, a2, a3]) core.receiveRequest('alice', r);
    expect(core.ready().notices).toEqual([{ kind: 'busy', clientId: 'alice', seq: 3, reason: 'client_in_flight_full' }]);
    expect(core.status().pendingRequests).toBe(2);
  });

  it('accepts a session of the authenticated client, and nobody else\'s', () => {
    const cluster = new LockstepCluster(4);
    const session = request('alice/7f3a', 1, 'x');
    cluster.core(1).receiveRequest('alice', session);
    cluster.core(1).receiveRequest('alic', session);
    cluster.core(1).receiveRequest('alice/7f3a/x', session);
    expect(cluster.core(1).status().pendingRequests).toBe(1);
    expect(cluster.core(1).status().dropped[DropReason.WRONG_CLIENT]).toBe(2);
  });

  it('drops a request whose client id is not the authenticated sender', () => {
    const cluster = new LockstepCluster(4);
    cluster.core(0).receiveRequest('mallory', a1);
    expect(cluster.core(0).status().dropped[DropReason.WRONG_CLIENT]).toBe(1);
    expect(cluster.core(0).status().pendingRequests).toBe(0);
  });

  it('the leader orders a client\'s requests in sequence and leaves a gap waiting', () => {
    const cluster = new LockstepCluster(4);
    cluster.submit(a2, [0]);
    cluster.submit(a3, [0]);
    expect(cluster.queue.filter((e) => e.message.type === MessageType.PROPOSE)).toEqual([]);
    cluster.submit(a1, [0]);
    cluster.run();
    const delivered = cluster.deliveries.get(1)?.flatMap((d) => d.requests.map((r) => r.seq));
    expect(delivered).toEqual([1, 2, 3]);
  });

  it('followers refuse a batch that skips a sequence number', () => {
    const cluster = new LockstepCluster(4);
    cluster.core(1).step(0, propose(batchOf(a2)));
    expect(cluster.core(1).status().dropped[DropReason.BAD_BATCH]).toBe(1);
  });
});

describe('crash-fault mode', () => {
  it('skips the WRITE phase: a follower accepts the proposal directly', () => {
    const cluster = new LockstepCluster(3, 'crash');
    cluster.core(1).step(0, propose(batchOf(a1)));
    const ready = cluster.core(1).ready();
    expect(ready.persist.map((r) => r.kind)).toEqual(['accept']);
    expect(ready.messages.map((m) => m.message.type)).toEqual([MessageType.ACCEPT]);
  });

  it('decides with a majority of ACCEPTs while one replica is down', () => {
    const cluster = new LockstepCluster(3, 'crash');
    cluster.submit(a1, [0, 1]);
    cluster.run((e) => (e.to === 2 || e.from === 2 ? 'drop' : 'deliver'));
    expect(cluster.decidedKeys(0)).toEqual(cluster.decidedKeys(1));
    expect(cluster.decidedKeys(0)).toHaveLength(1);
  });
});
