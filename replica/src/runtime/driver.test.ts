// Four drivers around real cores over an in-process network that delivers asynchronously: the driver's
// own duties (stage order, reply path, load shedding) without sockets, which the transport tests cover.
import { Buffer } from 'node:buffer';
import { hash } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { SimKeys } from '../../test/sim/crypto.ts';
import { Rng } from '../../test/sim/prng.ts';
import { makeCoreConfig } from '../core/config.ts';
import { ReplicaCore } from '../core/replica.ts';
import type { View } from '../core/view.ts';
import { decodeMessage, encodeMessage } from '../protocol/codec.ts';
import { type Message, MessageType } from '../protocol/messages.ts';
import { fileURLToPath } from 'node:url';
import type { Delivery } from '../core/ready.ts';
import { Executor } from '../service/executor.ts';
import { AppendLogService } from '../service/fixtures/append-log-service.ts';
import { type EncodedReply, InlineServiceHost, type ServiceHost, WorkerServiceHost } from '../service/service-host.ts';
import { configDefaults } from '../server/config.ts';
import { type PeerIdentity, ReplicaDriver, type SignaturePreparer } from './driver.ts';
import { VolatileStorage } from './storage.ts';

const utf8 = new TextEncoder();
const text = new TextDecoder();
const appendLogModule = fileURLToPath(new URL('../service/fixtures/append-log-service.ts', import.meta.url));

function inlineHost(config: { throwOn?: string } = {}): ServiceHost {
  const service = new AppendLogService(config);
  return new InlineServiceHost(service, new Executor(service));
}

/** Holds every batch until released, as a slow service would: the driver must not wait for it. */
class GatedHost extends InlineServiceHost {
  private gate: Promise<void>;
  open!: () => void;
  constructor() {
    const service = new AppendLogService();
    super(service, new Executor(service));
    this.gate = new Promise((resolve) => {
      this.open = resolve;
    });
  }
  override async execute(delivery: Delivery, viewNumber: number): Promise<readonly EncodedReply[]> {
    const executed = super.execute(delivery, viewNumber);
    await this.gate;
    return executed;
  }
}

interface Cluster {
  drivers: Map<number, ReplicaDriver>;
  cores: Map<number, ReplicaCore>;
  hosts: Map<number, ServiceHost>;
  replies: Array<{ from: number; message: Message; connection?: number | undefined }>;
  fatal: Array<{ id: number; error: unknown }>;
  send(clientId: string, message: Message, connection?: number): void;
  /** One copy per replica, each as `messageFor` makes it. */
  sendEach(clientId: string, messageFor: (replica: number) => Message): void;
  stop(): Promise<void>;
}

interface ClusterOptions {
  preparer?: (id: number) => SignaturePreparer;
  verifyingMax?: number;
  host?: (id: number) => ServiceHost | Promise<ServiceHost>;
  batchFillPercent?: number;
  batchFillWaitMs?: number;
  tickMs?: number;
}

let running: Cluster | null = null;
afterEach(async () => {
  await running?.stop();
  running = null;
});

async function startCluster(options: ClusterOptions = {}): Promise<Cluster> {
  const { preparer, verifyingMax } = options;
  const view: View = { number: 0, mode: 'bft', f: 1, members: [0, 1, 2, 3] };
  const keys = new SimKeys(new Rng(3));
  const drivers = new Map<number, ReplicaDriver>();
  const cores = new Map<number, ReplicaCore>();
  const hosts = new Map<number, ServiceHost>();
  const replies: Cluster['replies'] = [];
  const fatal: Cluster['fatal'] = [];
  const deliver = (to: number, from: PeerIdentity, payload: Uint8Array, connection?: number) =>
    setImmediate(() => drivers.get(to)?.receive(from, payload, connection));
  for (const id of view.members) {
    const core = new ReplicaCore(
      makeCoreConfig(id, view, { requestTimeoutTicks: 50, ...(options.batchFillPercent === undefined ? {} : { batchFillPercent: options.batchFillPercent }) }),
      keys.cryptoFor(id),
    );
    const host = await (options.host ?? (() => inlineHost()))(id);
    cores.set(id, core);
    hosts.set(id, host);
    const driver = new ReplicaDriver({
      me: id,
      core,
      host,
      onFatal: (error) => fatal.push({ id, error }),
      storage: new VolatileStorage(),
      tickMs: options.tickMs ?? 10,
      batchFillWaitMs: options.batchFillWaitMs ?? configDefaults.batchFillWaitMs,
      network: {
        sendToReplica: (to, payload) => deliver(to, { kind: 'replica', id }, payload),
        sendToClient: (_clientId, payload, connection) => {
          const decoded = decodeMessage(payload);
          if (decoded.ok) replies.push({ from: id, message: decoded.message, connection });
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
    cores,
    hosts,
    replies,
    fatal,
    send: (clientId, message, connection) => {
      for (const id of view.members) deliver(id, { kind: 'client', id: clientId }, encodeMessage(message), connection);
    },
    sendEach: (clientId, messageFor) => {
      for (const id of view.members) deliver(id, { kind: 'client', id: clientId }, encodeMessage(messageFor(id)));
    },
    stop: async () => {
      for (const driver of drivers.values()) await driver.stop();
      for (const host of hosts.values()) await host.close();
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

function digestRepliesFor(cluster: Cluster, seq: number): Array<{ from: number; digest: string }> {
  return cluster.replies.flatMap((r) =>
    r.message.type === MessageType.REPLY_DIGEST && r.message.seq === seq ? [{ from: r.from, digest: Buffer.from(r.message.resultDigest).toString('hex') }] : [],
  );
}

describe('replica driver', () => {
  it('orders, executes and answers requests: every replica replies with the same result', async () => {
    const cluster = await startCluster();
    for (let seq = 1; seq <= 5; seq++) {
      cluster.send('alice', request('alice', seq));
      await until(() => repliesFor(cluster, seq).length === 4);
    }
    expect(new Set(repliesFor(cluster, 5))).toEqual(new Set(['5:alice5']));
    for (const driver of cluster.drivers.values()) expect(driver.status().executedRequests).toBe(5);
  });

  it('ends a leader\'s batch filling with its own timer: the held request is ordered though no tick comes', async () => {
    // Ticks an hour apart: only the driver's batchFillWaitMs timer can end the wait.
    const cluster = await startCluster({ batchFillPercent: 100, batchFillWaitMs: 200, tickMs: 3_600_000 });
    cluster.send('alice', request('alice', 1));
    cluster.send('bob', request('bob', 1));
    await until(() => repliesFor(cluster, 1).length === 8);
    // Alice is back, Bob is not: the leader holds Alice's request for him.
    cluster.send('alice', request('alice', 2));
    const leader = cluster.cores.get(0) as ReplicaCore;
    await until(() => leader.batchFillWaiting());
    await until(() => repliesFor(cluster, 2).length === 4);
    expect(leader.batchFillWaiting()).toBe(false);
    expect(new Set(repliesFor(cluster, 2))).toEqual(new Set(['3:alice2']));
  });

  it('executes in worker threads: same replies, reads after writes, re-sent requests from the cache', async () => {
    const cluster = await startCluster({ host: () => WorkerServiceHost.start({ service: { module: appendLogModule }, clientInFlightMax: 8 }) });
    for (let seq = 1; seq <= 3; seq++) cluster.send('walt', request('walt', seq));
    await until(() => repliesFor(cluster, 3).length === 4);
    expect(new Set(repliesFor(cluster, 3))).toEqual(new Set(['3:walt3']));
    cluster.send('walt', request('walt', 3));
    await until(() => repliesFor(cluster, 3).length === 8);
    expect(new Set(repliesFor(cluster, 3))).toEqual(new Set(['3:walt3']));
    cluster.send('walt', request('walt', 4, false));
    await until(() => repliesFor(cluster, 4).length === 4);
    expect(new Set(repliesFor(cluster, 4))).toEqual(new Set(['length 3']));
    for (const driver of cluster.drivers.values()) expect(driver.status().executedRequests).toBe(3);
  });

  for (const thread of ['inline', 'worker'] as const) {
    it(`answers the copies that asked for a digest with the SHA-256 of the result (service ${thread})`, async () => {
      const cluster = await startCluster(
        thread === 'worker' ? { host: () => WorkerServiceHost.start({ service: { module: appendLogModule }, clientInFlightMax: 8 }) } : {},
      );
      // Results longer than a digest: shorter ones are always sent whole.
      const longRequest = (seq: number) => ({ clientId: 'dana', seq, ordered: true, operation: utf8.encode(`${'d'.repeat(40)}${seq}`), signature: null });
      const long = (seq: number): Message => ({ type: MessageType.REQUEST, request: longRequest(seq) });
      const expected = (seq: number) => `${seq}:${'d'.repeat(40)}${seq}`;
      const byDigest = (seq: number) => (): Message => ({ type: MessageType.REQUEST, request: longRequest(seq), replyWithDigest: true });
      cluster.sendEach('dana', (replica) => ({ type: MessageType.REQUEST, request: longRequest(1), ...(replica === 0 ? {} : { replyWithDigest: true }) }));
      // Another client cannot turn dana's replies into digests.
      cluster.sendEach('mallory', byDigest(1));
      await until(() => repliesFor(cluster, 1).length + digestRepliesFor(cluster, 1).length === 4);
      expect(repliesFor(cluster, 1)).toEqual([expected(1)]);
      const digests = digestRepliesFor(cluster, 1);
      expect(digests.map((d) => d.from).sort()).toEqual([1, 2, 3]);
      expect(new Set(digests.map((d) => d.digest))).toEqual(new Set([hash('sha256', utf8.encode(expected(1)), 'hex')]));

      // Asked again without the flag (the client fetching the bytes), a replica answers in full from its cache.
      cluster.send('dana', long(1));
      await until(() => repliesFor(cluster, 1).length === 5);
      expect(new Set(repliesFor(cluster, 1))).toEqual(new Set([expected(1)]));
      // A flagged copy followed by a plain one before execution: the plain one wins.
      cluster.sendEach('dana', byDigest(2));
      cluster.send('dana', long(2));
      await until(() => repliesFor(cluster, 2).length >= 4);
      expect(digestRepliesFor(cluster, 2)).toEqual([]);
      // A result no longer than a digest is sent whole even when a digest was asked for.
      cluster.sendEach('dana', (replica) => ({ ...request('dana', 3), ...(replica === 0 ? {} : { replyWithDigest: true }) }));
      await until(() => repliesFor(cluster, 3).length === 4);
      expect(digestRepliesFor(cluster, 3)).toEqual([]);
    });
  }

  it('keeps ordering while batches execute, and sends their replies, in order, when they complete', async () => {
    const gated = new Map<number, GatedHost>();
    const cluster = await startCluster({
      host: (id) => {
        const host = new GatedHost();
        gated.set(id, host);
        return host;
      },
    });
    for (let seq = 1; seq <= 3; seq++) cluster.send('gina', request('gina', seq));
    await until(() => [...cluster.cores.values()].every((core) => core.status().lastDecidedCid >= 0 && core.status().pendingRequests === 0));
    expect(cluster.replies).toEqual([]);
    for (const driver of cluster.drivers.values()) expect(driver.status().executingBatches).toBeGreaterThan(0);
    for (const host of gated.values()) host.open();
    await until(() => repliesFor(cluster, 3).length === 4);
    for (const id of cluster.drivers.keys()) {
      const seqs = cluster.replies.flatMap((r) => (r.from === id && r.message.type === MessageType.REPLY ? [r.message.seq] : []));
      expect(seqs).toEqual([1, 2, 3]);
    }
  });

  it('stops the replica when the service fails on a decided batch (onFatal), and sends nothing more', async () => {
    const cluster = await startCluster({ host: () => inlineHost({ throwOn: 'frank2' }) });
    cluster.send('frank', request('frank', 1));
    await until(() => repliesFor(cluster, 1).length === 4);
    cluster.send('frank', request('frank', 2));
    await until(() => cluster.fatal.length === 4);
    expect(cluster.fatal.map((f) => (f.error as { code?: string }).code)).toEqual(Array(4).fill('BFT_ERR_SERVICE_FAILED'));
    cluster.send('frank', request('frank', 3));
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(repliesFor(cluster, 2)).toEqual([]);
    expect(repliesFor(cluster, 3)).toEqual([]);
  });

  it('answers a re-sent request from the reply cache without executing it again', async () => {
    const cluster = await startCluster();
    cluster.send('bob', request('bob', 1));
    await until(() => repliesFor(cluster, 1).length === 4);
    cluster.send('bob', request('bob', 1));
    await until(() => repliesFor(cluster, 1).length === 8);
    expect(new Set(repliesFor(cluster, 1))).toEqual(new Set(['1:bob1']));
    for (const driver of cluster.drivers.values()) expect(driver.status().executedRequests).toBe(1);
  });

  it('runs unordered requests without consensus', async () => {
    const cluster = await startCluster();
    cluster.send('carol', request('carol', 1, false));
    await until(() => repliesFor(cluster, 1).length === 4);
    expect(new Set(repliesFor(cluster, 1))).toEqual(new Set(['length 0']));
  });

  it('refuses an unordered request in another client\'s name', async () => {
    const cluster = await startCluster();
    for (const id of cluster.drivers.keys()) {
      cluster.drivers.get(id)?.receive({ kind: 'client', id: 'mallory' }, encodeMessage(request('carol', 1, false)));
    }
    cluster.send('carol', request('carol', 2, false));
    await until(() => repliesFor(cluster, 2).length === 4);
    expect(repliesFor(cluster, 1)).toEqual([]);
  });

  it('answers each session on the connection its request came on, which no other identity can redirect', async () => {
    const cluster = await startCluster();
    cluster.send('alice', request('alice/a', 1), 1);
    cluster.send('alice', request('alice/b', 1), 2);
    await until(() => cluster.replies.filter((r) => r.message.type === MessageType.REPLY).length === 8);
    // Mallory's request in alice/a's name, arriving while alice/a's is being ordered, is refused and must not
    // move alice/a's replies to Mallory's connection.
    cluster.send('alice', request('alice/a', 2), 1);
    cluster.send('mallory', request('alice/a', 2), 3);
    await until(() => repliesFor(cluster, 2).length === 4);
    const connectionsOf = (clientId: string): Set<number | undefined> =>
      new Set(cluster.replies.flatMap((r) => (r.message.type === MessageType.REPLY && r.message.clientId === clientId ? [r.connection] : [])));
    expect(connectionsOf('alice/a')).toEqual(new Set([1]));
    expect(connectionsOf('alice/b')).toEqual(new Set([2]));
  });

  it('answers a client that asks for the view with the current members, and only for its own sessions', async () => {
    const cluster = await startCluster();
    cluster.send('alice', { type: MessageType.VIEW_REQUEST, clientId: 'alice/s1' });
    cluster.send('mallory', { type: MessageType.VIEW_REQUEST, clientId: 'alice/s2' });
    await until(() => cluster.replies.filter((r) => r.message.type === MessageType.VIEW_REPLY).length === 4);
    await new Promise((resolve) => setTimeout(resolve, 20));
    const answers = cluster.replies.flatMap((r) => (r.message.type === MessageType.VIEW_REPLY ? [r.message] : []));
    expect(answers).toHaveLength(4);
    for (const answer of answers) {
      expect(answer.clientId).toBe('alice/s1');
      expect(answer.view).toMatchObject({ number: 0, f: 1 });
      expect(answer.view.members.map((m) => m.id)).toEqual([0, 1, 2, 3]);
    }
    for (const driver of cluster.drivers.values()) expect(driver.status().droppedByReason.wrong_client).toBe(1);
  });

  it('steps messages only after their signatures were prepared, whatever order preparation finishes in', async () => {
    const rng = new Rng(9);
    const cluster = await startCluster({
      preparer: () => ({ prepare: () => new Promise<void>((resolve) => setTimeout(resolve, rng.int(0, 8))) }),
    });
    for (let seq = 1; seq <= 3; seq++) cluster.send('dave', request('dave', seq));
    await until(() => repliesFor(cluster, 3).length === 4);
    expect(new Set(repliesFor(cluster, 3))).toEqual(new Set(['3:dave3']));
  });

  it('sheds load when the verify stage is full: clients get BUSY, nothing is queued without bound', async () => {
    const pending: Array<() => void> = [];
    const cluster = await startCluster({ preparer: () => ({ prepare: () => new Promise<void>((resolve) => pending.push(resolve)) }), verifyingMax: 2 });
    for (let seq = 1; seq <= 4; seq++) cluster.send('erin', request('erin', seq));
    await until(() => cluster.replies.filter((r) => r.message.type === MessageType.BUSY).length === 8);
    for (const driver of cluster.drivers.values()) {
      expect(driver.status().verifying).toBe(2);
      expect(driver.status().droppedByReason.overloaded).toBe(2);
    }
    for (const resolve of pending.splice(0)) resolve();
  });
});
