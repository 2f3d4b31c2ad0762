import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { pattern } from '../../test/helpers.ts';
import { limits } from '../constants.ts';
import { BftError } from '../errors.ts';
import type { ReplicaId, View } from '../core/view.ts';
import { type Ed25519PublicKey, Signer, generateSigningKeyPair, publicKeyFromRaw, verifySignature } from '../crypto/ed25519.ts';
import { VerifyPool } from '../crypto/verify-pool.ts';
import { decodeMessage, encodeMessage } from '../protocol/codec.ts';
import { MessageType, isStateTransferMessage, type ReplicaMessage, type StateTransferMessage } from '../protocol/messages.ts';
import { CheckpointStore, manifestDigest, type CheckpointPartSource, type Manifest } from '../storage/checkpoint-store.ts';
import { StateTransfer, attestationPayload, manifestOf, offerOf, type StateTransferOptions } from './state-transfer.ts';

// --- Helpers -------------------------------------------------------------------------------------------

const directories: string[] = [];
const closers: (() => void)[] = [];

afterEach(async () => {
  for (const close of closers.splice(0)) close();
  for (const dir of directories.splice(0)) await rm(dir, { recursive: true, force: true });
});

const kibibyte = 1024;
const mebibyte = 1024 * kibibyte;

async function openStore(chunkBytes = 64 * kibibyte): Promise<CheckpointStore> {
  const dir = await mkdtemp(join(tmpdir(), 'bftkube-state-transfer-'));
  directories.push(dir);
  return CheckpointStore.open({ dir, chunkBytes });
}


/** A 3 MiB state in three parts whose edges do not line up with chunks. */
function stateOf(seed: number): CheckpointPartSource[] {
  return [
    { name: 'service', source: pattern(3 * mebibyte - 70_001, seed) },
    { name: 'replies', source: pattern(70_000, seed + 1) },
    { name: 'view', source: pattern(1, seed + 2) },
  ];
}

async function readAll(store: CheckpointStore, cid: number): Promise<Buffer> {
  const pieces: Uint8Array[] = [];
  for (const name of ['service', 'replies', 'view'] as const) {
    for await (const piece of store.readPart(cid, name)) pieces.push(new Uint8Array(piece));
  }
  return Buffer.concat(pieces);
}

interface Keys {
  readonly signers: Map<ReplicaId, Signer>;
  readonly publicKeysRaw: Map<ReplicaId, Uint8Array>;
  readonly publicKeys: Map<ReplicaId, Ed25519PublicKey>;
}

/** Real Ed25519 keys for replicas 0..4 and 9 (an outsider); generated once, they are slow enough to share. */
const keys: Keys = (() => {
  const signers = new Map<ReplicaId, Signer>();
  const publicKeys = new Map<ReplicaId, Ed25519PublicKey>();
  const publicKeysRaw = new Map<ReplicaId, Uint8Array>();
  for (const id of [0, 1, 2, 3, 4, 9]) {
    const pair = generateSigningKeyPair();
    signers.set(id, new Signer(pair.privateKeyPem));
    publicKeys.set(id, publicKeyFromRaw(pair.publicKeyRaw));
    publicKeysRaw.set(id, pair.publicKeyRaw);
  }
  return { signers, publicKeysRaw, publicKeys };
})();

function signerOf(id: ReplicaId): Signer {
  const signer = keys.signers.get(id);
  if (signer === undefined) throw new Error(`no key for ${id}`);
  return signer;
}

function verify(replica: ReplicaId, payload: Uint8Array, signature: Uint8Array): boolean {
  const key = keys.publicKeys.get(replica);
  return key !== undefined && verifySignature(key, payload, signature);
}

type Interceptor = (from: ReplicaId, to: ReplicaId, message: StateTransferMessage) => StateTransferMessage | null;

/**
 * An in-memory network between StateTransfer instances. Every message goes through the wire codec
 * (encodeMessage, then decodeMessage with its schema checks) and is delivered on a later turn of the
 * event loop, as a socket would.
 */
class Router {
  readonly nodes = new Map<ReplicaId, StateTransfer>();
  readonly sent = new Map<number, number>();
  intercept: Interceptor | null = null;

  send(from: ReplicaId, to: ReplicaId, message: StateTransferMessage): void {
    this.sent.set(message.type, (this.sent.get(message.type) ?? 0) + 1);
    const changed = this.intercept === null ? message : this.intercept(from, to, message);
    if (changed === null) return;
    // A copy, as a socket write would take: the encoder reuses its buffer.
    const frame = Buffer.from(encodeMessage(changed));
    setImmediate(() => {
      const decoded = decodeMessage(frame);
      if (!decoded.ok) throw new Error(`the codec refused our own ${message.type}: ${decoded.detail}`);
      const node = this.nodes.get(to);
      if (node !== undefined) node.receive(from, decoded.message as StateTransferMessage & ReplicaMessage);
    });
  }
}

function bftView(members: readonly ReplicaId[] = [0, 1, 2, 3]): View {
  return { number: 1, mode: 'bft', f: 1, members };
}

interface NodeSetup {
  readonly id: ReplicaId;
  readonly store: CheckpointStore;
  readonly view?: View;
  readonly sign?: (payload: Uint8Array) => Uint8Array;
  readonly options?: Partial<StateTransferOptions>;
}

function addNode(router: Router, setup: NodeSetup): StateTransfer {
  const node = new StateTransfer({
    me: setup.id,
    view: setup.view ?? bftView(),
    store: setup.store,
    send: (to, message) => router.send(setup.id, to, message),
    sign: setup.sign ?? ((payload) => signerOf(setup.id).sign(payload)),
    verify,
    offerWaitMs: 10_000,
    offerRetryMs: 200,
    attemptTimeoutMs: 10_000,
    ...setup.options,
  });
  router.nodes.set(setup.id, node);
  closers.push(() => node.close());
  return node;
}

async function expectRejectsWith(promise: Promise<unknown>, code: string): Promise<BftError> {
  const error = await promise.then(
    () => null,
    (thrown: unknown) => thrown,
  );
  expect(error).toBeInstanceOf(BftError);
  expect((error as BftError).code).toBe(code);
  return error as BftError;
}

async function until(condition: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** Three replicas holding the same checkpoint of a 3 MiB state at instance 100, and a fresh replica 0. */
async function honestCluster(router: Router, options: Partial<StateTransferOptions> = {}) {
  const stores = await Promise.all([openStore(), openStore(), openStore(), openStore()]);
  const [fresh, ...holders] = stores as [CheckpointStore, CheckpointStore, CheckpointStore, CheckpointStore];
  const manifests: Manifest[] = [];
  for (const [i, store] of holders.entries()) manifests.push(await store.write(100, 1, stateOf(7), i + 1));
  const fetcher = addNode(router, { id: 0, store: fresh, options });
  const servers = holders.map((store, i) => addNode(router, { id: i + 1, store }));
  return { fresh, holders, fetcher, servers, manifest: manifests[0] as Manifest };
}

// --- Attestations and offers ---------------------------------------------------------------------------

describe('offers on the wire', () => {
  it('round-trips a manifest through offerOf and manifestOf with the same digest', async () => {
    const store = await openStore();
    const manifest = await store.write(5, 2, stateOf(1), 1);
    const offer = offerOf(manifest, new Uint8Array(64));
    const back = manifestOf(offer, 3);
    expect(back.ok).toBe(true);
    if (!back.ok) return;
    expect(back.manifest.createdBy).toBe(3);
    expect(manifestDigest(back.manifest)).toEqual(manifestDigest(manifest));
  });

  it('refuses an offer whose hashes do not match its size or whose part code is unknown', async () => {
    const store = await openStore();
    const offer = offerOf(await store.write(5, 2, stateOf(1), 1), new Uint8Array(64));
    const short = manifestOf({ ...offer, chunkHashes: offer.chunkHashes.subarray(32) }, 1);
    expect(short.ok).toBe(false);
    const unknownPart = manifestOf({ ...offer, parts: [{ code: 4, bytes: offer.totalBytes }] }, 1);
    expect(unknownPart.ok).toBe(false);
  });

  it('signs attestations in their own domain', () => {
    const digest = new Uint8Array(32).fill(7);
    const payload = attestationPayload(digest);
    expect(Buffer.from(payload.subarray(0, payload.length - 32)).toString()).toBe('bftkube/checkpoint-attestation/v1');
    expect(payload.subarray(-32)).toEqual(digest);
  });
});

// --- Fetching ------------------------------------------------------------------------------------------

describe('state transfer between four replicas (BFT, f = 1)', () => {
  it('a fresh replica fetches a multi-chunk checkpoint from several replicas and installs the same bytes', async () => {
    const router = new Router();
    const { fresh, holders, fetcher, manifest } = await honestCluster(router);
    const installed = await fetcher.fetch(1);
    expect(installed.cid).toBe(100);
    expect(manifestDigest(installed)).toEqual(manifestDigest(manifest));
    expect(fresh.latest()?.cid).toBe(100);
    expect((await readAll(fresh, 100)).equals(await readAll(holders[0] as CheckpointStore, 100))).toBe(true);
    const status = fetcher.status();
    expect(status.state).toBe('installed');
    expect(status.chunksTotal).toBe(48);
    expect(status.chunksInstalled).toBe(48);
    expect(status.bytesFetched).toBe(manifest.totalBytes);
    expect(status.sources.length).toBeGreaterThanOrEqual(2);
    expect(Object.values(status.chunksBySource).reduce((a, b) => a + b, 0)).toBe(48);
    expect(status.badChunksByReplica).toEqual({});
    expect(status.badOffersByReplica).toEqual({});
    expect(status.lastError).toBeNull();
  });

  it('a forged manifest, validly signed by a Byzantine replica, is outvoted and counted against it', async () => {
    const router = new Router();
    const stores = await Promise.all([openStore(), openStore(), openStore(), openStore()]);
    const [fresh, a, b, byzantine] = stores as [CheckpointStore, CheckpointStore, CheckpointStore, CheckpointStore];
    const honest = await a.write(100, 1, stateOf(7), 1);
    await b.write(100, 1, stateOf(7), 2);
    // The same instance with another state, and a newer instance that nobody else attests.
    await byzantine.write(100, 1, stateOf(666), 3);
    await byzantine.write(200, 1, stateOf(667), 3);
    const fetcher = addNode(router, { id: 0, store: fresh });
    addNode(router, { id: 1, store: a });
    addNode(router, { id: 2, store: b });
    addNode(router, { id: 3, store: byzantine });
    const installed = await fetcher.fetch(1);
    expect(installed.cid).toBe(100);
    expect(manifestDigest(installed)).toEqual(manifestDigest(honest));
    expect((await readAll(fresh, 100)).equals(await readAll(a, 100))).toBe(true);
    const status = fetcher.status();
    expect(status.badOffersByReplica).toEqual({ 3: 1 });
    expect(status.drops['conflicting_manifest']).toBe(1);
    expect(status.sources).not.toContain(3);
  });

  it('a Byzantine replica serving wrong chunks is blamed, its chunks are fetched from others, and the transfer completes', async () => {
    const router = new Router();
    const { fresh, holders, fetcher } = await honestCluster(router);
    // Replica 3 also lures with a newer checkpoint of its own that no one else attests.
    await (holders[2] as CheckpointStore).write(300, 1, stateOf(999), 3);
    router.intercept = (from, _to, message) => {
      if (from !== 3 || message.type !== MessageType.CHUNK || message.bytes.length === 0) return message;
      const bytes = new Uint8Array(message.bytes);
      bytes[0] = (bytes[0] ?? 0) ^ 0xff;
      return { ...message, bytes };
    };
    const installed = await fetcher.fetch(1);
    expect(installed.cid).toBe(100);
    expect((await readAll(fresh, 100)).equals(await readAll(holders[0] as CheckpointStore, 100))).toBe(true);
    const status = fetcher.status();
    expect(status.attesters).toEqual([1, 2, 3]);
    expect(status.badChunksByReplica[3]).toBeGreaterThanOrEqual(1);
    expect(Object.keys(status.badChunksByReplica)).toEqual(['3']);
    expect(status.drops['bad_chunk']).toBe(status.badChunksByReplica[3]);
    expect(status.sources).toEqual([1, 2]);
    expect(fresh.stats().installRetries).toBeGreaterThanOrEqual(1);
  });

  it('refuses an offer with a bad signature and one from a non-member, and then has no quorum', async () => {
    const router = new Router();
    const stores = await Promise.all([openStore(), openStore(), openStore(), openStore()]);
    const [fresh, a, b, empty] = stores as [CheckpointStore, CheckpointStore, CheckpointStore, CheckpointStore];
    const manifest = await a.write(100, 1, stateOf(7), 1);
    await b.write(100, 1, stateOf(7), 2);
    const fetcher = addNode(router, { id: 0, store: fresh, options: { offerWaitMs: 600, offerRetryMs: 100 } });
    addNode(router, { id: 1, store: a });
    // Replica 2 holds the right checkpoint but signs with a key that is not its own.
    addNode(router, { id: 2, store: b, sign: (payload) => signerOf(4).sign(payload) });
    addNode(router, { id: 3, store: empty });
    // Replica 9 is not a member, though its key is known and its offer is genuinely signed by it.
    const outsiderOffer = offerOf(manifest, signerOf(9).sign(attestationPayload(manifestDigest(manifest))));
    const fetching = fetcher.fetch(1);
    router.send(9, 0, { type: MessageType.CHECKPOINT_OFFER, view: 1, offers: [outsiderOffer] });
    const error = await expectRejectsWith(fetching, 'BFT_ERR_STATE_TRANSFER_NO_QUORUM');
    expect(error.message).toContain('attested by 2 replicas');
    const status = fetcher.status();
    expect(status.state).toBe('failed');
    expect(status.badOffersByReplica[2]).toBeGreaterThanOrEqual(1);
    expect(status.badOffersByReplica[9]).toBeUndefined();
    expect(status.drops['bad_signature']).toBe(status.badOffersByReplica[2]);
    expect(status.drops['not_member']).toBe(1);
    expect(fresh.latest()).toBeNull();
  });

  it('installs nothing when only f replicas agree, re-asks until its bounded wait ends, and says what to check', async () => {
    const router = new Router();
    const stores = await Promise.all([openStore(), openStore(), openStore(), openStore()]);
    const [fresh, a, b, empty] = stores as [CheckpointStore, CheckpointStore, CheckpointStore, CheckpointStore];
    await a.write(100, 1, stateOf(7), 1);
    await b.write(100, 1, stateOf(8), 2);
    const fetcher = addNode(router, { id: 0, store: fresh, options: { offerWaitMs: 500, offerRetryMs: 120 } });
    addNode(router, { id: 1, store: a });
    addNode(router, { id: 2, store: b });
    addNode(router, { id: 3, store: empty });
    const error = await expectRejectsWith(fetcher.fetch(1), 'BFT_ERR_STATE_TRANSFER_NO_QUORUM');
    expect(error.message).toMatch(/check that at least 2 other replicas are up/);
    expect(error.message).toContain('replica 1: 100');
    expect(router.sent.get(MessageType.CHECKPOINT_REQUEST)).toBeGreaterThanOrEqual(6);
    expect(router.sent.get(MessageType.CHUNK_REQUEST)).toBeUndefined();
    expect(fresh.latest()).toBeNull();
    expect(fetcher.status().lastError?.code).toBe('BFT_ERR_STATE_TRANSFER_NO_QUORUM');
  });

  it('a fetch aborted by its caller fails with BFT_ERR_STATE_TRANSFER_ABORTED and can be started again', async () => {
    const router = new Router();
    const { fresh, fetcher } = await honestCluster(router);
    const silence: Interceptor = (_from, _to, message) => (message.type === MessageType.CHECKPOINT_OFFER ? null : message);
    router.intercept = silence;
    const controller = new AbortController();
    const fetching = fetcher.fetch(1, controller.signal);
    await expectRejectsWith(fetcher.fetch(1), 'BFT_ERR_STATE_TRANSFER_BUSY');
    controller.abort(new Error('operator said stop'));
    await expectRejectsWith(fetching, 'BFT_ERR_STATE_TRANSFER_ABORTED');
    expect(fresh.latest()).toBeNull();
    router.intercept = null;
    expect((await fetcher.fetch(1)).cid).toBe(100);
  });

  it('takes verdicts from a verification worker pool: a wrongly signed offer is counted once its verdict arrives', async () => {
    const pool = new VerifyPool({ workers: 1 });
    try {
      const router = new Router();
      const stores = await Promise.all([openStore(), openStore(), openStore(), openStore()]);
      const [fresh, a, b, c] = stores as [CheckpointStore, CheckpointStore, CheckpointStore, CheckpointStore];
      for (const [i, store] of [a, b, c].entries()) await store.write(100, 1, stateOf(7), i + 1);
      const fetcher = addNode(router, {
        id: 0,
        store: fresh,
        options: {
          verify: async (replica, payload, signature) => {
            const publicKeyRaw = keys.publicKeysRaw.get(replica);
            if (publicKeyRaw === undefined) return false;
            const [valid] = await pool.verify([{ keyId: `replica-${replica}`, publicKeyRaw, payload, signature }]);
            return valid === true;
          },
        },
      });
      addNode(router, { id: 1, store: a });
      addNode(router, { id: 2, store: b, sign: (payload) => signerOf(4).sign(payload) });
      addNode(router, { id: 3, store: c });
      const installed = await fetcher.fetch(1);
      expect(installed.cid).toBe(100);
      expect((await readAll(fresh, 100)).equals(await readAll(a, 100))).toBe(true);
      await until(() => fetcher.status().badOffersByReplica[2] !== undefined, 'the bad signature to be counted');
      expect(fetcher.status().badOffersByReplica).toEqual({ 2: 1 });
      expect(fetcher.status().attesters).toEqual([1, 3]);
    } finally {
      await pool.close();
    }
  });

  it('close() during the chunk fetch fails the fetch with BFT_ERR_CLOSED and publishes nothing', async () => {
    const router = new Router();
    const { fresh, fetcher } = await honestCluster(router);
    // Chunks never arrive, so the fetch is waiting on its chunk requests when it is closed.
    router.intercept = (_from, _to, message) => (message.type === MessageType.CHUNK ? null : message);
    const fetching = fetcher.fetch(1);
    await until(() => (router.sent.get(MessageType.CHUNK_REQUEST) ?? 0) > 0, 'the first chunk request');
    expect(fetcher.status().state).toBe('fetching');
    fetcher.close();
    await expectRejectsWith(fetching, 'BFT_ERR_CLOSED');
    expect(fresh.latest()).toBeNull();
    expect(fresh.stats().install?.state).toBe('failed');
  });

  it('drops chunks and offers nobody asked for, and counts them', async () => {
    const router = new Router();
    const { fetcher } = await honestCluster(router);
    fetcher.receive(1, { type: MessageType.CHUNK, view: 1, cid: 100, index: 0, bytes: new Uint8Array(10) });
    fetcher.receive(2, { type: MessageType.CHECKPOINT_OFFER, view: 1, offers: [] });
    expect(fetcher.status().drops).toEqual({ unsolicited: 2 });
    expect(fetcher.status().badChunksByReplica).toEqual({});
  });
});

describe('state transfer in crash mode', () => {
  it('accepts a checkpoint that one replica offers', async () => {
    const router = new Router();
    const view: View = { number: 1, mode: 'crash', f: 1, members: [0, 1, 2] };
    const [fresh, holder, empty] = (await Promise.all([openStore(), openStore(), openStore()])) as [
      CheckpointStore,
      CheckpointStore,
      CheckpointStore,
    ];
    await holder.write(40, 1, stateOf(3), 1);
    const fetcher = addNode(router, { id: 0, store: fresh, view });
    addNode(router, { id: 1, store: holder, view });
    addNode(router, { id: 2, store: empty, view });
    expect((await fetcher.fetch(1)).cid).toBe(40);
    expect((await readAll(fresh, 40)).equals(await readAll(holder, 40))).toBe(true);
    expect(fetcher.status().sources).toEqual([1]);
  });
});

// --- Serving -------------------------------------------------------------------------------------------

describe('serving checkpoints', () => {
  it('offers its checkpoints at or after the asked instance, newest last, each signed by itself', async () => {
    const store = await openStore();
    await store.write(10, 1, stateOf(1), 1);
    await store.write(20, 1, stateOf(2), 1);
    const sent: StateTransferMessage[] = [];
    const server = new StateTransfer({
      me: 1,
      view: bftView(),
      store,
      send: (_to, message) => sent.push(message),
      sign: (payload) => signerOf(1).sign(payload),
      verify,
    });
    closers.push(() => server.close());
    server.receive(0, { type: MessageType.CHECKPOINT_REQUEST, view: 1, minCid: 0 });
    server.receive(2, { type: MessageType.CHECKPOINT_REQUEST, view: 1, minCid: 15 });
    const [all, newer] = sent as [StateTransferMessage, StateTransferMessage];
    if (all.type !== MessageType.CHECKPOINT_OFFER || newer.type !== MessageType.CHECKPOINT_OFFER) throw new Error('expected offers');
    expect(all.offers.map((offer) => offer.cid)).toEqual([10, 20]);
    expect(newer.offers.map((offer) => offer.cid)).toEqual([20]);
    for (const offer of all.offers) {
      const checked = manifestOf(offer, 1);
      if (!checked.ok) throw new Error(checked.detail);
      expect(verify(1, attestationPayload(manifestDigest(checked.manifest)), offer.signature)).toBe(true);
    }
    // A peer asking again at once is not answered again: every answer carries all chunk hashes.
    server.receive(0, { type: MessageType.CHECKPOINT_REQUEST, view: 1, minCid: 0 });
    expect(sent).toHaveLength(2);
    expect(server.status().drops).toEqual({ rate_limited: 1 });
  });

  it('refuses chunk requests beyond its bounds on reads in flight, per peer and in total, and counts them', async () => {
    const store = await openStore();
    const manifest = await store.write(100, 1, stateOf(7), 1);
    const answers: { to: ReplicaId; bytes: number }[] = [];
    const view = bftView([0, 1, 2, 3, 4]);
    const server = new StateTransfer({
      me: 1,
      view,
      store,
      send: (to, message) => {
        if (message.type === MessageType.CHUNK) answers.push({ to, bytes: message.bytes.length });
      },
      sign: (p) => signerOf(1).sign(p),
      verify,
    });
    closers.push(() => server.close());
    const perPeer = limits.stateTransferChunkReadsPerPeerMax;
    const total = limits.stateTransferChunkReadsMax;
    expect(total).toBe(2 * perPeer);
    // Peer 0 floods; peers 2 and 3 then ask while the reads are still in flight.
    const ask = (from: ReplicaId, count: number) => {
      for (let index = 0; index < count; index++) server.receive(from, { type: MessageType.CHUNK_REQUEST, view: 1, cid: 100, index });
    };
    ask(0, manifest.chunkHashes.length);
    expect(server.status().serving.chunkReadsInFlight).toBe(perPeer);
    ask(2, perPeer);
    ask(3, 1);
    expect(server.status().serving.chunkReadsInFlight).toBe(total);
    expect(server.status().drops['serving_full']).toBe(manifest.chunkHashes.length - perPeer + 1);
    await until(() => answers.length === total, 'the admitted reads to be answered');
    expect(answers.filter((answer) => answer.to === 0)).toHaveLength(perPeer);
    expect(answers.filter((answer) => answer.to === 2)).toHaveLength(perPeer);
    expect(answers.every((answer) => answer.bytes === manifest.chunkBytes)).toBe(true);
    expect(server.status().serving).toMatchObject({ chunkReadsInFlight: 0, chunksServed: total });
    // The bound is on reads at once, not a ban: once they are done, the peer is served again.
    ask(3, 1);
    await until(() => answers.length === total + 1, 'a later request to be answered');
    // Unknown checkpoints and chunks cost no read: an empty answer says "ask another replica".
    server.receive(0, { type: MessageType.CHUNK_REQUEST, view: 1, cid: 99, index: 0 });
    server.receive(0, { type: MessageType.CHUNK_REQUEST, view: 1, cid: 100, index: 1000 });
    expect(answers.slice(-2)).toEqual([
      { to: 0, bytes: 0 },
      { to: 0, bytes: 0 },
    ]);
    expect(server.status().serving.chunksMissing).toBe(2);
  });
});

// --- Memory --------------------------------------------------------------------------------------------

describe('memory', () => {
  it('fetching a 256 MiB checkpoint keeps memory growth to a few chunks, not the state', async () => {
    const chunkBytes = mebibyte;
    const source = await openStore(chunkBytes);
    const fresh = await openStore(chunkBytes);
    const pieces = 256;
    async function* service(): AsyncGenerator<Uint8Array> {
      const piece = pattern(chunkBytes, 11);
      for (let i = 0; i < pieces; i++) {
        // Distinct chunks: a chunk served for the wrong index would fail its hash.
        new DataView(piece.buffer).setUint32(0, i);
        yield piece;
      }
    }
    const manifest = await source.write(1000, 1, [{ name: 'service', source: service() }], 1);
    expect(manifest.totalBytes).toBe(256 * mebibyte);
    const router = new Router();
    // Three servers reading one store: the disk holds the state twice, not four times.
    const fetcher = addNode(router, { id: 0, store: fresh, options: { parallel: 4 } });
    for (const id of [1, 2, 3]) addNode(router, { id, store: source });
    const used = () => {
      const usage = process.memoryUsage();
      return usage.heapUsed + usage.arrayBuffers;
    };
    const before = used();
    let peak = before;
    const sampler = setInterval(() => {
      peak = Math.max(peak, used());
    }, 2);
    try {
      const installed = await fetcher.fetch(1);
      expect(installed.cid).toBe(1000);
    } finally {
      clearInterval(sampler);
    }
    const growth = peak - before;
    console.log(`256 MiB state transfer: peak heap + array buffer growth ${(growth / mebibyte).toFixed(1)} MiB`);
    expect(growth).toBeLessThan(96 * mebibyte);
    expect(fresh.stats().install).toMatchObject({ state: 'installed', chunksInstalled: 256 });
    expect(fetcher.status().sources.length).toBeGreaterThanOrEqual(2);
  });
});
