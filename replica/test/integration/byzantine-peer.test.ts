// A Byzantine replica on the wire (DESIGN §4, and the rule that a Byzantine peer never crashes a
// replica): the test holds replica 3's real certificate and keys, and sends replicas 0-2 garbage,
// well-formed nonsense, forged votes and hostile frame headers, plus non-TLS bytes on a raw socket. The
// three correct replicas keep deciding a client's writes, count every bad input under its reason, and
// none of them exits.

import { randomBytes } from 'node:crypto';
import { connect as connectTcp } from 'node:net';
import * as tls from 'node:tls';
import { Packr } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import { limits } from '../../src/constants.ts';
import { readTlsMaterial, type TlsMaterial } from '../../src/crypto/certificates.ts';
import { encodeMessage } from '../../src/protocol/codec.ts';
import { MessageType } from '../../src/protocol/messages.ts';
import { TlsReplicaTransport } from '../../src/transport/tls-transport.ts';
import {
  clusterAroundTests,
  createCluster,
  KvClients,
  type ReplicaStatus,
  statusOf,
  waitUntil,
} from './support.ts';

const subnet = 105;
const byzantineId = 3;
const correctIds = [0, 1, 2] as const;
const garbageFrames = 20;
/** How long one raw connection is given to be closed by the replica it provoked. */
const rawConnectionTimeoutMs = 10_000;

// Plain msgpack as any implementation writes it: maps with string keys.
const packr = new Packr({ useRecords: false, moreTypes: false, structuredClone: false });

/** Opens a raw TLS connection to `host:port` as `material`'s identity, writes `bytes`, and resolves once the peer closed it. */
function sendOverTls(host: string, port: number, material: TlsMaterial, bytes: Uint8Array): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host, port, ca: material.caPem, cert: material.certPem, key: material.keyPem, minVersion: 'TLSv1.3' });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`${host}:${port} kept a connection open after a hostile frame for ${rawConnectionTimeoutMs} ms`));
    }, rawConnectionTimeoutMs);
    socket.once('secureConnect', () => socket.write(bytes));
    socket.on('data', () => {});
    socket.on('error', () => {});
    socket.once('close', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/** A plain TCP connection that speaks no TLS at all; resolves once the replica hung up. */
function sendPlainTcp(host: string, port: number, bytes: Uint8Array): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = connectTcp({ host, port });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`${host}:${port} kept a non-TLS connection open for ${rawConnectionTimeoutMs} ms`));
    }, rawConnectionTimeoutMs);
    socket.once('connect', () => socket.write(bytes));
    socket.on('data', () => {});
    socket.on('error', () => {});
    socket.once('close', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

function frameHeader(declaredBytes: number): Uint8Array {
  const header = new Uint8Array(4);
  new DataView(header.buffer).setUint32(0, declaredBytes, false);
  return header;
}

function count(counters: Record<string, number> | undefined, reason: string): number {
  return counters?.[reason] ?? 0;
}

describe('a Byzantine replica 3 against correct replicas 0-2, BFT n=4', () => {
  const started = createCluster('byzantine-peer', { replicas: 4, mode: 'bft', subnet });
  let impostor: TlsReplicaTransport | null = null;
  let clients: KvClients | null = null;
  clusterAroundTests(started, {
    startIds: correctIds,
    beforeStop: async () => {
      await clients?.close();
      await impostor?.stop();
    },
  });

  it('keeps deciding, drops and counts every hostile input, and no replica exits', async () => {
    const { cluster } = started;
    const me = cluster.replica(byzantineId);
    const material = await readTlsMaterial(cluster.keysDir, `replica-${byzantineId}`);
    impostor = new TlsReplicaTransport({
      me: byzantineId,
      listenHost: me.host,
      listenPort: me.port,
      tls: material,
      replicas: cluster.endpoints,
      // What the correct replicas send replica 3 is of no interest to it.
      onFrame: () => {},
    });
    await impostor.start();
    await waitUntil('the impostor connected to replicas 0-2', () => impostor!.stats().connections.replicasOutbound === correctIds.length);

    const baseline = new Map<number, ReplicaStatus>();
    for (const id of correctIds) {
      const status = await statusOf(cluster, id);
      expect(status, `replica ${id} answers /status`).not.toBeNull();
      baseline.set(id, status!);
    }

    // A client writes all along; 3 correct replicas of 4 are a quorum for f = 1.
    clients = await KvClients.connect(cluster);
    const writer = clients.session('writer', { orderedTimeoutMs: 30_000 });
    let acknowledged = 0;
    let lastWritten = '';
    let stopWriting = false;
    let writeFailure: unknown = null;
    const writing = (async () => {
      for (let n = 1; !stopWriting; n++) {
        const value = `value-${n}`;
        try {
          await writer.put('k', value);
        } catch (error) {
          writeFailure = error;
          return;
        }
        acknowledged++;
        lastWritten = value;
      }
    })();

    try {
      await waitUntil('the first writes', () => acknowledged > 0);
      const acknowledgedBeforeAttack = acknowledged;

      // 1. Garbage frames: 0xc1 is never valid msgpack, whatever follows.
      for (let i = 0; i < garbageFrames; i++) {
        const garbage = randomBytes(16 + i * 7);
        garbage[0] = 0xc1;
        for (const id of correctIds) impostor.sendToReplica(id, garbage);
      }
      // 2. Valid msgpack that is not a valid message: an unknown type, a known type with a bad shape,
      // not a map at all, and a well-formed client REQUEST that no replica may send.
      const unknownType = packr.pack({ type: 99, view: 0 });
      const badShape = packr.pack({ type: MessageType.ACCEPT, view: 'zero', cid: -1 });
      const notAMap = packr.pack([MessageType.ACCEPT, 0, 1]);
      const requestFromReplica = encodeMessage({
        type: MessageType.REQUEST,
        request: { clientId: 'it/forged', seq: 1, ordered: true, operation: new Uint8Array([1]), signature: null },
      });
      for (const id of correctIds) {
        for (const payload of [unknownType, badShape, notAMap, requestFromReplica]) impostor.sendToReplica(id, payload);
      }
      // 3. Well-formed ACCEPTs with forged signatures, for the open instance and the next few (those are
      // buffered and checked once their instance opens, which the client's writes bring about).
      const sendForgedAccepts = async (): Promise<void> => {
        const status = await statusOf(cluster, 0);
        if (status === null) return;
        for (let cid = status.lastDecidedCid + 1; cid <= status.lastDecidedCid + 8; cid++) {
          const forged = encodeMessage({
            type: MessageType.ACCEPT,
            view: 0,
            cid,
            regency: status.regency,
            digest: randomBytes(32),
            signature: randomBytes(64),
          });
          for (const id of correctIds) impostor!.sendToReplica(id, forged);
        }
      };
      await sendForgedAccepts();

      const reasonAtLeast = async (id: number, where: 'core' | 'driver' | 'transport', reason: string, atLeast: number): Promise<boolean> => {
        const status = await statusOf(cluster, id);
        const before = baseline.get(id)!;
        const pick = (s: ReplicaStatus) => (where === 'transport' ? s.transport.drops : s.dropped[where]);
        return status !== null && count(pick(status), reason) - count(pick(before), reason) >= atLeast;
      };
      for (const id of correctIds) {
        await waitUntil(`replica ${id} counted the garbage as undecodable`, () => reasonAtLeast(id, 'driver', 'undecodable', garbageFrames));
        await waitUntil(`replica ${id} counted the unknown type`, () => reasonAtLeast(id, 'driver', 'unknown_type', 1));
        await waitUntil(`replica ${id} counted the malformed messages as schema`, () => reasonAtLeast(id, 'driver', 'schema', 2));
        await waitUntil(`replica ${id} counted a REQUEST from a replica`, () => reasonAtLeast(id, 'driver', 'wrong_sender_kind', 1));
        await waitUntil(`replica ${id} counted a forged ACCEPT as bad_signature`, async () => {
          if (await reasonAtLeast(id, 'core', 'bad_signature', 1)) return true;
          // Forgeries can miss the open instance while writes race ahead: forge for the new one.
          await sendForgedAccepts();
          return false;
        });
      }

      // 4. Hostile frame headers on replica 3's own authenticated TLS identity: each closes its connection.
      for (const id of correctIds) {
        const { host, port } = cluster.replica(id);
        await sendOverTls(host, port, material, frameHeader(limits.messageBytesMax + 1));
        await sendOverTls(host, port, material, frameHeader(0xffff_ffff));
        await sendOverTls(host, port, material, frameHeader(0));
        // 5. Bytes that are not TLS at all.
        await sendPlainTcp(host, port, new TextEncoder().encode('GET /status HTTP/1.1\r\nHost: replica\r\n\r\n'));
        await sendPlainTcp(host, port, randomBytes(512));
      }
      for (const id of correctIds) {
        await waitUntil(`replica ${id} counted the huge frames`, () => reasonAtLeast(id, 'transport', 'frame_too_large', 2));
        await waitUntil(`replica ${id} counted the empty frame`, () => reasonAtLeast(id, 'transport', 'frame_malformed', 1));
        await waitUntil(`replica ${id} counted the non-TLS connections`, () => reasonAtLeast(id, 'transport', 'handshake_failed', 2));
      }

      // The client's writes went on through all of it, and still do.
      const progressMark = acknowledged;
      await waitUntil('writes after the attack', () => acknowledged > progressMark || writeFailure !== null);
      expect(writeFailure, 'no write failed').toBeNull();
      expect(acknowledged, 'writes completed during the attack').toBeGreaterThan(acknowledgedBeforeAttack);
    } finally {
      stopWriting = true;
      await writing;
    }
    expect(writeFailure, 'no write failed').toBeNull();
    const reader = clients.session('reader', { orderedTimeoutMs: 30_000 });
    expect(await reader.get('k', true), 'an ordered read returns the last acknowledged write').toBe(lastWritten);
    expect(await reader.get('k', false), 'an unordered read returns the last acknowledged write').toBe(lastWritten);

    for (const id of correctIds) {
      const child = cluster.replica(id).process;
      expect(child, `replica ${id}'s process is still running`).not.toBeNull();
      expect(child!.exitCode, `replica ${id}'s exit code`).toBeNull();
      expect(child!.signalCode, `replica ${id}'s exit signal`).toBeNull();
      const status = await statusOf(cluster, id);
      expect(status, `replica ${id} still answers /status`).not.toBeNull();
    }
  });
});
