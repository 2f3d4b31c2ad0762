import { once } from 'node:events';
import * as net from 'node:net';
import * as tls from 'node:tls';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { limits } from '../constants.ts';
import { createClusterCa, issueClientCertificate, issueReplicaCertificate } from '../crypto/certificates.ts';
import { encodeFrame } from './frames.ts';
import type { PeerIdentity } from './identity.ts';
import {
  bytes,
  clusterName,
  credentialsOf,
  endpoints,
  makeTestCluster,
  randomPort,
  type TestCluster,
  text,
  waitFor,
} from './test-support.ts';
import { TlsClientTransport, type TlsCredentials, TlsReplicaTransport } from './tls-transport.ts';

interface Received {
  readonly from: PeerIdentity;
  readonly text: string;
}

let cluster: TestCluster;
const stoppers: (() => Promise<void>)[] = [];

beforeAll(async () => {
  cluster = await makeTestCluster(3);
});

afterEach(async () => {
  await Promise.all(stoppers.splice(0).map((stop) => stop()));
});

function startReplica(options: {
  id: number;
  port: number;
  listenHost?: string;
  credentials?: TlsCredentials;
  replicas?: ReturnType<typeof endpoints>;
  localAddress?: string;
  onFrame?: (from: PeerIdentity, payload: Uint8Array, connection: number) => void;
}): { transport: TlsReplicaTransport; received: Received[]; started: Promise<void> } {
  const received: Received[] = [];
  const transport = new TlsReplicaTransport({
    me: options.id,
    listenHost: options.listenHost ?? cluster.address(options.id + 1),
    listenPort: options.port,
    tls: options.credentials ?? credentialsOf(cluster, options.id),
    replicas: options.replicas ?? endpoints(cluster, options.port),
    onFrame: options.onFrame ?? ((from, payload) => received.push({ from, text: text(payload) })),
    ...(options.localAddress === undefined ? {} : { localAddress: options.localAddress }),
  });
  stoppers.push(() => transport.stop());
  return { transport, received, started: transport.start() };
}

function startClient(options: { replicas: ReturnType<typeof endpoints>; credentials?: TlsCredentials }): {
  transport: TlsClientTransport;
  received: { replicaId: number; text: string }[];
} {
  const received: { replicaId: number; text: string }[] = [];
  const transport = new TlsClientTransport({ tls: options.credentials ?? cluster.client, replicas: options.replicas });
  transport.onMessage((replicaId, payload) => received.push({ replicaId, text: text(payload) }));
  stoppers.push(() => transport.close());
  return { transport, received };
}

/** A raw mutual-TLS connection with the client certificate, for writing bytes no transport would write. */
async function rawClientConnection(host: string, port: number, credentials: TlsCredentials): Promise<tls.TLSSocket> {
  const socket = tls.connect({
    host,
    port,
    ca: credentials.caPem,
    cert: credentials.certPem,
    key: credentials.keyPem,
    minVersion: 'TLSv1.3',
  });
  socket.on('error', () => {});
  stoppers.push(async () => {
    socket.destroy();
  });
  await new Promise<void>((resolve, reject) => {
    socket.once('secureConnect', () => resolve());
    socket.once('close', () => reject(new Error('closed before the handshake finished')));
  });
  return socket;
}

function closed(socket: tls.TLSSocket): Promise<void> {
  return new Promise((resolve) => {
    if (socket.closed) resolve();
    else socket.once('close', () => resolve());
  });
}

describe('TlsReplicaTransport and TlsClientTransport on real TLS sockets', () => {
  it('carries frames between every pair of replicas, each labelled with the sender taken from its certificate', async () => {
    const port = randomPort();
    const replicas = [0, 1, 2].map((id) => startReplica({ id, port }));
    await Promise.all(replicas.map((replica) => replica.started));
    for (const [id, replica] of replicas.entries()) {
      for (const other of [0, 1, 2]) if (other !== id) replica.transport.sendToReplica(other, bytes(`from ${id} to ${other}`));
    }
    await waitFor('two frames at every replica', () => replicas.every((replica) => replica.received.length === 2));
    for (const [id, replica] of replicas.entries()) {
      const senders = replica.received.map((frame) => frame.from).sort((a, b) => Number(a.id) - Number(b.id));
      expect(senders).toEqual([0, 1, 2].filter((other) => other !== id).map((other) => ({ kind: 'replica', id: other })));
      for (const frame of replica.received) expect(frame.text).toBe(`from ${frame.from.id} to ${id}`);
      const stats = replica.transport.stats();
      expect(stats.connections.replicasOutbound).toBe(2);
      expect(stats.connections.replicasInbound).toBe(2);
    }
  });

  it('carries requests from a client to every replica and replies back, with the client identity from its certificate', async () => {
    const port = randomPort();
    const replicas = [0, 1, 2].map((id) =>
      startReplica({ id, port, onFrame: (from, payload) => {
        if (from.kind === 'client') replica(id).sendToClient(from.id, bytes(`${text(payload)} -> replica ${id} answers ${from.id}`));
      } }),
    );
    const replica = (id: number): TlsReplicaTransport => (replicas[id] as { transport: TlsReplicaTransport }).transport;
    await Promise.all(replicas.map((r) => r.started));
    const client = startClient({ replicas: endpoints(cluster, port) });
    for (const id of [0, 1, 2]) client.transport.send(id, bytes(`request ${id}`));
    await waitFor('three replies', () => client.received.length === 3);
    expect(client.received.sort((a, b) => a.replicaId - b.replicaId)).toEqual(
      [0, 1, 2].map((id) => ({ replicaId: id, text: `request ${id} -> replica ${id} answers alice` })),
    );
    expect(replica(0).stats().connections.clients).toBe(1);
  });

  it('answers two clients sharing one certificate each on its own connection, and a closed one on the latest', async () => {
    const port = randomPort();
    const started = startReplica({
      id: 0,
      port,
      onFrame: (from, payload, connection) => {
        if (from.kind === 'client') started.transport.sendToClient(from.id, bytes(`answer to ${text(payload)}`), connection);
      },
    });
    await started.started;
    const only0 = endpoints(cluster, port).filter((endpoint) => endpoint.id === 0);
    const first = startClient({ replicas: only0 });
    const second = startClient({ replicas: only0 });
    first.transport.send(0, bytes('first'));
    await waitFor('the first answer', () => first.received.length === 1);
    second.transport.send(0, bytes('second'));
    await waitFor('the second answer', () => second.received.length === 1);
    for (let i = 0; i < 5; i++) first.transport.send(0, bytes(`first ${i}`));
    await waitFor('five more answers', () => first.received.length === 6);
    expect(first.received.map((r) => r.text)).toEqual(['answer to first', ...[0, 1, 2, 3, 4].map((i) => `answer to first ${i}`)]);
    expect(second.received.map((r) => r.text)).toEqual(['answer to second']);
    expect(started.transport.stats().connections.clients).toBe(2);
    // A connection that is gone: the reply goes to the identity's latest instead of being lost.
    started.transport.sendToClient('alice', bytes('rerouted'), 999_999);
    await waitFor('the rerouted answer', () => second.received.length === 2);
    expect(second.received[1]?.text).toBe('rerouted');
  });

  it('dials a replica by the host name localhost, verified against the DNS name in its certificate', async () => {
    const server = startReplica({ id: 1, port: 0, listenHost: '127.0.0.1', replicas: [], onFrame: (from, payload) => {
      if (from.kind === 'client') server.transport.sendToClient(from.id, bytes(`echo ${text(payload)}`));
    } });
    await server.started;
    const client = startClient({ replicas: [{ id: 1, host: 'localhost', port: server.transport.address().port }] });
    client.transport.send(1, bytes('hello by name'));
    await waitFor('the echo', () => client.received.length === 1);
    expect(client.received).toEqual([{ replicaId: 1, text: 'echo hello by name' }]);
    expect(client.transport.stats().connects).toBe(1);
  });

  it('refuses a client whose certificate comes from another CA', async () => {
    const port = randomPort();
    const server = startReplica({ id: 0, port, replicas: [] });
    await server.started;
    const otherCa = await createClusterCa({ clusterName, validityDays: 1 });
    const intruder = { caPem: cluster.ca.certPem, ...(await issueClientCertificate(otherCa, { clusterName, clientId: 'alice', validityDays: 1 })) };
    const client = startClient({ replicas: [{ id: 0, host: cluster.address(1), port }], credentials: intruder });
    client.transport.send(0, bytes('let me in'));
    await waitFor('the server to refuse a handshake', () => server.transport.stats().drops.handshake_failed >= 1);
    expect(server.transport.stats().accepted).toBe(0);
    expect(server.received).toEqual([]);
  });

  it('refuses a server whose certificate comes from another CA', async () => {
    const port = randomPort();
    const otherCa = await createClusterCa({ clusterName, validityDays: 1 });
    const impostor = {
      caPem: otherCa.certPem,
      ...(await issueReplicaCertificate(otherCa, { clusterName, replicaId: 0, dnsNames: [], ipAddresses: [cluster.address(1)], validityDays: 1 })),
    };
    const server = startReplica({ id: 0, port, replicas: [], credentials: impostor });
    await server.started;
    const client = startClient({ replicas: [{ id: 0, host: cluster.address(1), port }] });
    client.transport.send(0, bytes('for replica 0 only'));
    await waitFor('the client to refuse the server', () => client.transport.stats().drops.handshake_failed >= 1);
    expect(client.transport.stats().connects).toBe(0);
    expect(server.received).toEqual([]);
  });

  it('refuses a server whose certificate says replica-2 when it dialled replica-1, on both client and replica links', async () => {
    const port = randomPort();
    const impostorAddress = cluster.address(9);
    // A genuine replica-2 certificate that also names the address we believe replica 1 is at.
    const replica2 = {
      caPem: cluster.ca.certPem,
      ...(await issueReplicaCertificate(cluster.ca, { clusterName, replicaId: 2, dnsNames: [], ipAddresses: [impostorAddress], validityDays: 1 })),
    };
    const server = startReplica({ id: 2, port, listenHost: impostorAddress, replicas: [], credentials: replica2 });
    await server.started;
    const wrongMap = [{ id: 1, host: impostorAddress, port }];
    const client = startClient({ replicas: wrongMap });
    const dialler = startReplica({ id: 0, port, replicas: [{ id: 0, host: cluster.address(1), port }, ...wrongMap] });
    await dialler.started;
    client.transport.send(1, bytes('for replica 1 only'));
    dialler.transport.sendToReplica(1, bytes('for replica 1 only'));
    await waitFor('both diallers to refuse', () =>
      client.transport.stats().drops.wrong_peer >= 1 && dialler.transport.stats().drops.wrong_peer >= 1,
    );
    expect(client.transport.stats().connects).toBe(0);
    expect(dialler.transport.stats().connects).toBe(0);
    expect(server.received).toEqual([]);
  });

  it.each([
    ['a length above the limit', [0xff, 0xff, 0xff, 0xff], 'frame_too_large'],
    ['a length of zero', [0, 0, 0, 0], 'frame_malformed'],
  ] as const)('closes only the connection that sends %s, counts it, and keeps serving the others', async (_, prefix, reason) => {
    const port = randomPort();
    const server = startReplica({ id: 0, port, replicas: [], onFrame: (from, payload) => {
      if (from.kind === 'client') server.transport.sendToClient(from.id, payload);
    } });
    await server.started;
    const goodClient = {
      caPem: cluster.ca.certPem,
      ...(await issueClientCertificate(cluster.ca, { clusterName, clientId: 'bob', validityDays: 1 })),
    };
    const good = startClient({ replicas: [{ id: 0, host: cluster.address(1), port }], credentials: goodClient });
    good.transport.send(0, bytes('before'));
    await waitFor('the first echo', () => good.received.length === 1);

    const bad = await rawClientConnection(cluster.address(1), port, cluster.client);
    bad.write(Buffer.from(prefix));
    await closed(bad);
    expect(server.transport.stats().drops[reason]).toBe(1);

    good.transport.send(0, bytes('after'));
    await waitFor('the second echo', () => good.received.length === 2);
    expect(good.received.map((frame) => frame.text)).toEqual(['before', 'after']);
    expect(server.transport.stats().connections.clients).toBe(1);
  });

  it('drops a connection that never finishes its handshake once the handshake bound passes', async () => {
    const port = randomPort();
    const server = startReplica({ id: 0, port, replicas: [] });
    await server.started;
    const silent = net.connect(port, cluster.address(1));
    silent.on('error', () => {});
    stoppers.push(async () => {
      silent.destroy();
    });
    await once(silent, 'connect');
    await once(silent, 'close');
    expect(server.transport.stats().drops.handshake_timeout).toBe(1);
    expect(server.transport.stats().accepted).toBe(0);
  }, limits.tlsHandshakeTimeoutMs * 3);

  it('hands a frame to onFrame byte for byte even when it arrives split across many TLS records', async () => {
    const port = randomPort();
    const server = startReplica({ id: 0, port, replicas: [] });
    await server.started;
    const raw = await rawClientConnection(cluster.address(1), port, cluster.client);
    const frame = encodeFrame(bytes('split'));
    for (const byte of frame) raw.write(Buffer.from([byte]));
    await waitFor('the frame', () => server.received.length === 1);
    expect(server.received).toEqual([{ from: { kind: 'client', id: 'alice' }, text: 'split' }]);
  });

  it('reconnects to a restarted replica and delivers what was queued while it was down', async () => {
    const port = randomPort();
    const sender = startReplica({ id: 0, port });
    const first = startReplica({ id: 1, port });
    await Promise.all([sender.started, first.started]);
    sender.transport.sendToReplica(1, bytes('before restart'));
    await waitFor('the first frame', () => first.received.length === 1);

    await first.transport.stop();
    await waitFor('the sender to notice', () => sender.transport.stats().connections.replicasOutbound === 0);
    sender.transport.sendToReplica(1, bytes('while down'));

    const second = startReplica({ id: 1, port });
    await second.started;
    await waitFor('the queued frame at the restarted replica', () => second.received.length === 1);
    expect(second.received).toEqual([{ from: { kind: 'replica', id: 0 }, text: 'while down' }]);
    expect(sender.transport.stats().reconnects).toBeGreaterThanOrEqual(1);
  });

  it('redials a returning replica as soon as it connects to us, not after the backoff that grew while it was down', async () => {
    const port = randomPort();
    const sender = startReplica({ id: 0, port });
    const first = startReplica({ id: 1, port });
    await Promise.all([sender.started, first.started]);
    sender.transport.sendToReplica(1, bytes('before'));
    await waitFor('the first frame', () => first.received.length === 1);
    await first.transport.stop();
    // Long enough for several failed dials: the sender's backoff toward replica 1 is now seconds long.
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    sender.transport.sendToReplica(1, bytes('while down'));

    // The restarted replica dials the sender (its own outbound link), which tells the sender it is back.
    const second = startReplica({ id: 1, port });
    await second.started;
    await waitFor('the queued frame at the restarted replica', () => second.received.length === 1);
    expect(sender.transport.stats().peerReturnRedials).toBe(1);
  });

  it('reaches a replica whose name still resolves to an old address at the address it connected from, verified by name', async () => {
    const port = randomPort();
    // The sender knows replica 1 as "localhost", which resolves to 127.0.0.1, where nothing listens: a
    // stale DNS answer, as for a pod recreated with a new IP. Replica 1 listens, and dials out, at its own address.
    const byStaleName = [
      { id: 0, host: cluster.address(1), port },
      { id: 1, host: 'localhost', port },
    ];
    const sender = startReplica({ id: 0, port, replicas: byStaleName, localAddress: cluster.address(1) });
    await sender.started;
    sender.transport.sendToReplica(1, bytes('to the new address'));
    const moved = startReplica({ id: 1, port, localAddress: cluster.address(2) });
    await moved.started;
    await waitFor('the frame at the address replica 1 connected from', () => moved.received.length === 1);
    expect(moved.received).toEqual([{ from: { kind: 'replica', id: 0 }, text: 'to the new address' }]);
    expect(sender.transport.stats().peerReturnRedials).toBeGreaterThanOrEqual(1);
  });

  it('delivers 10,000 frames sent in one turn in order, coalesced into far fewer socket writes', async () => {
    const port = randomPort();
    const sender = startReplica({ id: 0, port });
    const receiver = startReplica({ id: 1, port });
    await Promise.all([sender.started, receiver.started]);
    sender.transport.sendToReplica(1, bytes('warm-up'));
    await waitFor('the link', () => receiver.received.length === 1);
    const writesBefore = sender.transport.stats().socketWrites;

    const count = 10_000;
    for (let i = 0; i < count; i++) sender.transport.sendToReplica(1, bytes(`frame ${i}`));
    await waitFor('every frame', () => receiver.received.length === count + 1);

    const texts = receiver.received.slice(1).map((frame) => frame.text);
    expect(texts).toEqual(Array.from({ length: count }, (_, i) => `frame ${i}`));
    const stats = sender.transport.stats();
    expect(stats.framesOut).toBe(count + 1);
    expect(stats.socketWrites - writesBefore).toBeLessThan(count / 100);
    expect(receiver.transport.stats().framesIn).toBe(count + 1);
  });

  it('drops and counts frames for a client with no connection and for an unknown replica', async () => {
    const port = randomPort();
    const server = startReplica({ id: 0, port, replicas: [] });
    await server.started;
    server.transport.sendToClient('nobody', bytes('lost'));
    server.transport.sendToReplica(7, bytes('lost'));
    expect(server.transport.stats().drops.no_connection).toBe(2);
  });

  it('refuses unusable key material when constructed, not later from a redial', () => {
    const broken = { ...cluster.client, keyPem: '-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n' };
    expect(() => new TlsClientTransport({ tls: broken, replicas: [] })).toThrow(expect.objectContaining({ code: 'BFT_ERR_KEYS_INVALID' }));
    expect(
      () => new TlsReplicaTransport({ me: 0, listenHost: '127.0.0.1', listenPort: 0, tls: broken, replicas: [], onFrame: () => {} }),
    ).toThrow(expect.objectContaining({ code: 'BFT_ERR_KEYS_INVALID' }));
  });

  it('refuses to start on an address that is already taken, with a stable error code', async () => {
    const port = randomPort();
    const first = startReplica({ id: 0, port, replicas: [] });
    await first.started;
    const second = startReplica({ id: 0, port, replicas: [] });
    await expect(second.started).rejects.toMatchObject({ code: 'BFT_ERR_TRANSPORT_LISTEN' });
  });

  it('leaves no sockets or timers behind after stop, even with a peer that never answers', async () => {
    const port = randomPort();
    const count = (): number =>
      process.getActiveResourcesInfo().filter((name) => name.startsWith('TCP') || name === 'Timeout' || name === 'Immediate').length;
    // Handles of earlier tests close on a later loop iteration: start from none of ours.
    await waitFor('earlier sockets to close', () =>
      !process.getActiveResourcesInfo().some((name) => name.startsWith('TCP') || name === 'Immediate'),
    );
    const before = count();
    // Replica 2 is never started: replica 0 keeps redialling it with a backoff timer.
    const a = startReplica({ id: 0, port });
    const b = startReplica({ id: 1, port });
    await Promise.all([a.started, b.started]);
    a.transport.sendToReplica(1, bytes('x'));
    a.transport.sendToReplica(2, bytes('queued for a replica that is down'));
    await waitFor('the frame', () => b.received.length === 1);
    expect(count()).toBeGreaterThan(before);
    await Promise.all([a.transport.stop(), b.transport.stop()]);
    // Closed handles leave the list one loop iteration later; a pending redial timer would stay for seconds.
    for (let turn = 0; turn < 3; turn++) await new Promise((resolve) => setImmediate(resolve));
    expect(process.getActiveResourcesInfo().filter((name) => name.startsWith('TCP'))).toEqual([]);
    expect(count()).toBeLessThanOrEqual(before);
  });
});
