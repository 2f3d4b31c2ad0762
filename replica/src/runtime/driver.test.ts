// Four drivers around real cores over an in-process network that delivers asynchronously: the driver's
// own duties (stage order, reply path, load shedding) without sockets, which the transport tests cover.
import { afterEach, describe, expect, it } from 'vitest';
import { SimKeys } from '../../test/sim/crypto.ts';
import { Rng } from '../../test/sim/prng.ts';
import { makeCoreConfig } from '../core/config.ts';
import { ReplicaCore } from '../core/replica.ts';
import type { View } from '../core/view.ts';
import { decodeMessage, encodeMessage } from '../protocol/codec.ts';
import { type Message, MessageType } from '../protocol/messages.ts';
import { Executor } from '../service/executor.ts';
import type { OrderedOperation, Service } from '../service/service.ts';
import { type PeerIdentity, ReplicaDriver, type SignaturePreparer } from './driver.ts';
import { VolatileStorage } from './storage.ts';

const utf8 = new TextEncoder();
const text = new TextDecoder();

class AppendLog implements Service {
  length = 0;
  executeOrdered(operations: readonly OrderedOperation[]) {
    return operations.map((op) => utf8.encode(`${++this.length}:${text.decode(op.operation)}`));
  }
  executeUnordered() {
    return utf8.encode(`length ${this.length}`);
  }
  snapshot() {
    return new Uint8Array();
  }
  installSnapshot() {}
}

interface Cluster {
  drivers: Map<number, ReplicaDriver>;
  replies: Array<{ from: number; message: Message }>;
  send(clientId: string, message: Message): void;
  stop(): Promise<void>;
}

let running: Cluster | null = null;
afterEach(async () => {
  await running?.stop();
  running = null;
});

function startCluster(preparer?: (id: number) => SignaturePreparer, verifyingMax?: number): Cluster {
  const view: View = { number: 0, mode: 'bft', f: 1, members: [0, 1, 2, 3] };
  const keys = new SimKeys(new Rng(3));
  const drivers = new Map<number, ReplicaDriver>();
  const replies: Cluster['replies'] = [];
  const deliver = (to: number, from: PeerIdentity, payload: Uint8Array) =>
    setImmediate(() => drivers.get(to)?.receive(from, payload));
  for (const id of view.members) {
    const core = new ReplicaCore(makeCoreConfig(id, view, { requestTimeoutTicks: 50 }), keys.cryptoFor(id));
    const service = new AppendLog();
    const driver = new ReplicaDriver({
      me: id,
      view,
      core,
      service,
      executor: new Executor(service),
      storage: new VolatileStorage(),
      tickMs: 10,
      network: {
        sendToReplica: (to, payload) => deliver(to, { kind: 'replica', id }, payload),
        sendToClient: (_clientId, payload) => {
          const decoded = decodeMessage(payload);
          if (decoded.ok) replies.push({ from: id, message: decoded.message });
        },
      },
      ...(preparer ? { preparer: preparer(id) } : {}),
      ...(verifyingMax !== undefined ? { verifyingMax } : {}),
    });
    drivers.set(id, driver);
    driver.start();
  }
  const cluster: Cluster = {
    drivers,
    replies,
    send: (clientId, message) => {
      for (const id of view.members) deliver(id, { kind: 'client', id: clientId }, encodeMessage(message));
    },
    stop: async () => {
      for (const driver of drivers.values()) await driver.stop();
    },
  };
  running = cluster;
  return cluster;
}

async function until(condition: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

function request(clientId: string, seq: number, ordered = true): Message {
  return { type: MessageType.REQUEST, request: { clientId, seq, ordered, operation: utf8.encode(`${clientId}${seq}`), signature: null } };
}

function repliesFor(cluster: Cluster, seq: number): string[] {
  return cluster.replies.flatMap((r) => (r.message.type === MessageType.REPLY && r.message.seq === seq ? [text.decode(r.message.result)] : []));
}

describe('replica driver', () => {
  it('orders, executes and answers requests: every replica replies with the same result', async () => {
    const cluster = startCluster();
    for (let seq = 1; seq <= 5; seq++) {
      cluster.send('alice', request('alice', seq));
      await until(() => repliesFor(cluster, seq).length === 4);
    }
    expect(new Set(repliesFor(cluster, 5))).toEqual(new Set(['5:alice5']));
    for (const driver of cluster.drivers.values()) expect(driver.status().executedRequests).toBe(5);
  });

  it('answers a re-sent request from the reply cache without executing it again', async () => {
    const cluster = startCluster();
    cluster.send('bob', request('bob', 1));
    await until(() => repliesFor(cluster, 1).length === 4);
    cluster.send('bob', request('bob', 1));
    await until(() => repliesFor(cluster, 1).length === 8);
    expect(new Set(repliesFor(cluster, 1))).toEqual(new Set(['1:bob1']));
    for (const driver of cluster.drivers.values()) expect(driver.status().executedRequests).toBe(1);
  });

  it('runs unordered requests without consensus', async () => {
    const cluster = startCluster();
    cluster.send('carol', request('carol', 1, false));
    await until(() => repliesFor(cluster, 1).length === 4);
    expect(new Set(repliesFor(cluster, 1))).toEqual(new Set(['length 0']));
  });

  it('refuses an unordered request in another client\'s name', async () => {
    const cluster = startCluster();
    for (const id of cluster.drivers.keys()) {
      cluster.drivers.get(id)?.receive({ kind: 'client', id: 'mallory' }, encodeMessage(request('carol', 1, false)));
    }
    cluster.send('carol', request('carol', 2, false));
    await until(() => repliesFor(cluster, 2).length === 4);
    expect(repliesFor(cluster, 1)).toEqual([]);
  });

  it('steps messages only after their signatures were prepared, whatever order preparation finishes in', async () => {
    const rng = new Rng(9);
    const cluster = startCluster(() => ({
      prepare: () => new Promise<void>((resolve) => setTimeout(resolve, rng.int(0, 8))),
    }));
    for (let seq = 1; seq <= 3; seq++) cluster.send('dave', request('dave', seq));
    await until(() => repliesFor(cluster, 3).length === 4);
    expect(new Set(repliesFor(cluster, 3))).toEqual(new Set(['3:dave3']));
  });

  it('sheds load when the verify stage is full: clients get BUSY, nothing is queued without bound', async () => {
    const pending: Array<() => void> = [];
    const cluster = startCluster(() => ({ prepare: () => new Promise<void>((resolve) => pending.push(resolve)) }), 2);
    for (let seq = 1; seq <= 4; seq++) cluster.send('erin', request('erin', seq));
    await until(() => cluster.replies.filter((r) => r.message.type === MessageType.BUSY).length === 8);
    for (const driver of cluster.drivers.values()) {
      expect(driver.status().verifying).toBe(2);
      expect(driver.status().droppedByReason.overloaded).toBe(2);
    }
    for (const resolve of pending.splice(0)) resolve();
  });
});
