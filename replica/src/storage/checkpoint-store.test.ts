import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, open, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { pattern } from '../../test/helpers.ts';
import { limits } from '../constants.ts';
import { BftError } from '../errors.ts';
import {
  CheckpointStore,
  checkpointFolderName,
  decodeManifest,
  encodeManifest,
  manifestDigest,
  type CheckpointPartSource,
  type Manifest,
} from './checkpoint-store.ts';

// --- Helpers -------------------------------------------------------------------------------------------

const directories: string[] = [];

async function freshDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'bftkube-checkpoint-'));
  directories.push(dir);
  return dir;
}

afterEach(async () => {
  for (const dir of directories.splice(0)) await rm(dir, { recursive: true, force: true });
});

const chunkBytes = limits.checkpointChunkBytesMin;


/** `bytes` as a stream of pieces of the given sizes (cycled), ending with whatever is left. */
async function* piecesOf(bytes: Uint8Array, sizes: readonly number[]): AsyncGenerator<Uint8Array> {
  let offset = 0;
  for (let i = 0; offset < bytes.length; i++) {
    const size = sizes[i % sizes.length] ?? 1;
    yield bytes.subarray(offset, offset + size);
    offset += size;
  }
}

async function collect(source: AsyncIterable<Uint8Array>): Promise<Uint8Array> {
  const pieces: Uint8Array[] = [];
  for await (const piece of source) pieces.push(new Uint8Array(piece));
  return new Uint8Array(Buffer.concat(pieces));
}

// A state whose parts do not line up with chunk edges: the service part spans several chunks and ends
// inside one, the replies part starts and ends inside chunks.
const state = {
  service: pattern(5 * chunkBytes + 123, 1),
  replies: pattern(chunkBytes - 7, 2),
  view: pattern(41, 3),
};

function bufferParts(): CheckpointPartSource[] {
  return [
    { name: 'service', source: state.service },
    { name: 'replies', source: state.replies },
    { name: 'view', source: state.view },
  ];
}

function streamedParts(sizes: readonly number[]): CheckpointPartSource[] {
  return [
    { name: 'service', source: piecesOf(state.service, sizes) },
    { name: 'replies', source: piecesOf(state.replies, sizes) },
    { name: 'view', source: piecesOf(state.view, sizes) },
  ];
}

function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('hex');
}

async function expectBftError(promise: Promise<unknown>, code: string): Promise<BftError> {
  const error = await promise.then(
    () => null,
    (caught: unknown) => caught,
  );
  expect(error).toBeInstanceOf(BftError);
  expect((error as BftError).code).toBe(code);
  return error as BftError;
}

// --- Tests ---------------------------------------------------------------------------------------------

describe('CheckpointStore: write and read back', () => {
  it('round-trips a state streamed as many small pieces, and the same state given as whole buffers', async () => {
    for (const parts of [streamedParts([1, 7, 100, 3000, 9000]), bufferParts()]) {
      const dir = await freshDir();
      const store = await CheckpointStore.open({ dir, chunkBytes });
      const manifest = await store.write(10, 2, parts, 3);

      expect(manifest).toMatchObject({ version: 1, cid: 10, viewNumber: 2, chunkBytes, createdBy: 3 });
      expect(manifest.parts).toEqual([
        { name: 'service', bytes: state.service.length },
        { name: 'replies', bytes: state.replies.length },
        { name: 'view', bytes: state.view.length },
      ]);
      const totalBytes = state.service.length + state.replies.length + state.view.length;
      expect(manifest.totalBytes).toBe(totalBytes);
      expect(manifest.chunkHashes).toHaveLength(Math.ceil(totalBytes / chunkBytes));

      expect(hex(await collect(store.readPart(10, 'service')))).toBe(hex(state.service));
      expect(hex(await collect(store.readPart(10, 'replies')))).toBe(hex(state.replies));
      expect(hex(await collect(store.readPart(10, 'view')))).toBe(hex(state.view));

      // Chunks are the concatenation cut at chunkBytes, each matching its manifest hash.
      const whole = Buffer.concat([state.service, state.replies, state.view]);
      for (let index = 0; index < manifest.chunkHashes.length; index++) {
        const chunk = await store.readChunk(10, index);
        expect(hex(chunk)).toBe(hex(whole.subarray(index * chunkBytes, (index + 1) * chunkBytes)));
        expect(hex(createHash('sha256').update(chunk).digest())).toBe(hex(manifest.chunkHashes[index] as Uint8Array));
      }

      // And a store opened afresh on the directory finds the same checkpoint.
      const reopened = await CheckpointStore.open({ dir, chunkBytes });
      expect(reopened.latest()?.cid).toBe(10);
      expect(hex(manifestDigest(reopened.latest() as Manifest))).toBe(hex(manifestDigest(manifest)));
      expect(hex(await collect(reopened.readPart(10, 'replies')))).toBe(hex(state.replies));
    }
  });

  it('gives identical manifest digests for identical states whatever the piece boundaries or the replica', async () => {
    const digests = new Set<string>();
    const manifests: Manifest[] = [];
    const splits: Array<readonly number[] | null> = [null, [1], [chunkBytes], [chunkBytes + 1, 5], [333, 4095, 17]];
    for (const [replica, sizes] of splits.entries()) {
      const store = await CheckpointStore.open({ dir: await freshDir(), chunkBytes });
      const manifest = await store.write(7, 1, sizes === null ? bufferParts() : streamedParts(sizes), replica);
      manifests.push(manifest);
      digests.add(hex(manifestDigest(manifest)));
    }
    expect(digests.size).toBe(1);
    expect(new Set(manifests.map((manifest) => manifest.createdBy)).size).toBe(splits.length);

    // The digest covers the state, the instance and the view.
    const first = manifests[0] as Manifest;
    const otherState = await (await CheckpointStore.open({ dir: await freshDir(), chunkBytes })).write(
      7,
      1,
      [{ name: 'service', source: state.service }, { name: 'replies', source: state.replies }, { name: 'view', source: pattern(41, 4) }],
      0,
    );
    expect(hex(manifestDigest(otherState))).not.toBe(hex(manifestDigest(first)));
    expect(hex(manifestDigest({ ...first, cid: 8 }))).not.toBe(hex(manifestDigest(first)));
    expect(hex(manifestDigest({ ...first, viewNumber: 2 }))).not.toBe(hex(manifestDigest(first)));
  });

  it('encodes manifests for the network and refuses inconsistent ones when decoding', async () => {
    const store = await CheckpointStore.open({ dir: await freshDir(), chunkBytes });
    const manifest = await store.write(1, 0, bufferParts(), 0);
    const decoded = decodeManifest(encodeManifest(manifest));
    expect(decoded.ok).toBe(true);
    if (decoded.ok) expect(hex(manifestDigest(decoded.manifest))).toBe(hex(manifestDigest(manifest)));

    const wrongTotal = decodeManifest(encodeManifest({ ...manifest, totalBytes: manifest.totalBytes + 1 }));
    expect(wrongTotal).toMatchObject({ ok: false });
    const missingHash = decodeManifest(encodeManifest({ ...manifest, chunkHashes: manifest.chunkHashes.slice(1) }));
    expect(missingHash).toMatchObject({ ok: false });
    const reordered = decodeManifest(encodeManifest({ ...manifest, parts: [...manifest.parts].reverse() }));
    expect(reordered).toMatchObject({ ok: false });
    expect(decodeManifest(Uint8Array.of(0xc1))).toMatchObject({ ok: false });
  });

  it('refuses a checkpoint that is not newer than the latest one', async () => {
    const store = await CheckpointStore.open({ dir: await freshDir(), chunkBytes });
    await store.write(5, 0, bufferParts(), 0);
    await expectBftError(store.write(5, 0, bufferParts(), 0), 'BFT_ERR_CHECKPOINT_STALE');
    await expectBftError(store.write(4, 0, bufferParts(), 0), 'BFT_ERR_CHECKPOINT_STALE');
    expect(store.list().map((manifest) => manifest.cid)).toEqual([5]);
    expect((await readdir(store.dir)).sort()).toEqual([checkpointFolderName(5)]);
  });
});

describe('CheckpointStore: edge cases', () => {
  it('round-trips empty parts and a checkpoint of only some parts', async () => {
    const store = await CheckpointStore.open({ dir: await freshDir(), chunkBytes });
    const emptyParts: CheckpointPartSource[] = [
      { name: 'service', source: new Uint8Array(0) },
      { name: 'view', source: piecesOf(new Uint8Array(0), [1]) },
    ];
    const empty = await store.write(1, 0, emptyParts, 0);
    expect(empty).toMatchObject({ totalBytes: 0, chunkHashes: [], parts: [{ name: 'service', bytes: 0 }, { name: 'view', bytes: 0 }] });
    expect(await collect(store.readPart(1, 'view'))).toHaveLength(0);
    await expectBftError(collect(store.readPart(1, 'replies')), 'BFT_ERR_CHECKPOINT_MISSING');
    await expectBftError(store.readChunk(1, 0), 'BFT_ERR_CHECKPOINT_MISSING');
    expect((await CheckpointStore.open({ dir: store.dir, chunkBytes })).latest()?.totalBytes).toBe(0);

    // Installing an empty checkpoint fetches nothing.
    const target = await CheckpointStore.open({ dir: await freshDir(), chunkBytes });
    await target.install(empty, () => Promise.reject(new Error('no chunk to fetch')));
    expect(target.latest()?.cid).toBe(1);
  });

  it('runs concurrent writes and installs one at a time, each published whole', async () => {
    const source = await CheckpointStore.open({ dir: await freshDir(), chunkBytes });
    const manifest = await source.write(3, 0, bufferParts(), 1);
    const store = await CheckpointStore.open({ dir: await freshDir(), chunkBytes, keep: 3 });
    await Promise.all([
      store.write(1, 0, streamedParts([100]), 0),
      store.write(2, 0, bufferParts(), 0),
      store.install(manifest, (index) => source.readChunk(3, index), { parallel: 4 }),
    ]);
    expect(store.list().map((stored) => stored.cid)).toEqual([1, 2, 3]);
    for (const cid of [1, 2, 3]) expect(hex(await collect(store.readPart(cid, 'replies')))).toBe(hex(state.replies));
  });
});

describe('CheckpointStore: damage on disk', () => {
  it('refuses to read a chunk with a flipped byte, naming the file and the chunk', async () => {
    const store = await CheckpointStore.open({ dir: await freshDir(), chunkBytes });
    await store.write(3, 0, bufferParts(), 0);
    const dataPath = join(store.dir, checkpointFolderName(3), 'state.bin');
    const file = await open(dataPath, 'r+');
    const offset = 2 * chunkBytes + 100;
    const byte = Buffer.alloc(1);
    await file.read(byte, 0, 1, offset);
    byte[0] = (byte[0] as number) ^ 0x01;
    await file.write(byte, 0, 1, offset);
    await file.close();

    const error = await expectBftError(store.readChunk(3, 2), 'BFT_ERR_CHECKPOINT_CORRUPT');
    expect(error.message).toContain(dataPath);
    expect(error.message).toContain('chunk 2 ');
    expect(error.message).toMatch(/delete/);
    // The chunks around it are intact, and streaming the part that holds it fails rather than yield bad bytes.
    await expect(store.readChunk(3, 1)).resolves.toHaveLength(chunkBytes);
    await expect(store.readChunk(3, 3)).resolves.toHaveLength(chunkBytes);
    await expectBftError(collect(store.readPart(3, 'service')), 'BFT_ERR_CHECKPOINT_CORRUPT');
    expect(store.stats().chunkMismatches).toBe(2);
  });

  it('cleans an interrupted write on open and keeps the previous checkpoint intact', async () => {
    const dir = await freshDir();
    const store = await CheckpointStore.open({ dir, chunkBytes });
    const previous = await store.write(100, 1, bufferParts(), 0);
    // What a crash in the middle of write(200) leaves: a temporary folder with part of the data.
    const temporary = join(dir, `${checkpointFolderName(200)}.tmp`);
    await mkdir(temporary);
    await writeFile(join(temporary, 'state.bin'), pattern(3 * chunkBytes, 9));
    // And a crash in the middle of a prune.
    const deleting = join(dir, `${checkpointFolderName(50)}.deleting`);
    await mkdir(deleting);
    await writeFile(join(deleting, 'state.bin'), pattern(10, 9));

    const reopened = await CheckpointStore.open({ dir, chunkBytes });
    expect(reopened.stats().temporaryFoldersRemoved).toBe(2);
    expect((await readdir(dir)).sort()).toEqual([checkpointFolderName(100)]);
    expect(reopened.list().map((manifest) => manifest.cid)).toEqual([100]);
    expect(hex(manifestDigest(reopened.latest() as Manifest))).toBe(hex(manifestDigest(previous)));
    expect(hex(await collect(reopened.readPart(100, 'service')))).toBe(hex(state.service));
    // The store can then write the instance that was interrupted.
    await expect(reopened.write(200, 1, bufferParts(), 0)).resolves.toMatchObject({ cid: 200 });
  });

  it('refuses to open over a published checkpoint whose manifest is damaged, saying to delete it', async () => {
    const dir = await freshDir();
    const store = await CheckpointStore.open({ dir, chunkBytes });
    await store.write(1, 0, bufferParts(), 0);
    const manifestPath = join(dir, checkpointFolderName(1), 'manifest.bin');
    const file = await open(manifestPath, 'r+');
    await file.write(Uint8Array.of(0xff), 0, 1, 20);
    await file.close();

    const error = await expectBftError(CheckpointStore.open({ dir, chunkBytes }), 'BFT_ERR_CHECKPOINT_CORRUPT');
    expect(error.message).toContain(manifestPath);
    expect(error.message).toMatch(/delete its folder/);
    expect(error.message).toMatch(/state transfer/);
  });

  it('refuses to open over a published checkpoint whose data file is missing bytes', async () => {
    const dir = await freshDir();
    const store = await CheckpointStore.open({ dir, chunkBytes });
    await store.write(1, 0, bufferParts(), 0);
    const file = await open(join(dir, checkpointFolderName(1), 'state.bin'), 'r+');
    await file.truncate(chunkBytes);
    await file.close();
    const error = await expectBftError(CheckpointStore.open({ dir, chunkBytes }), 'BFT_ERR_CHECKPOINT_CORRUPT');
    expect(error.message).toContain('state.bin');
  });
});

describe('CheckpointStore: pruning', () => {
  it('keeps the newest `keep` checkpoints', async () => {
    const dir = await freshDir();
    const store = await CheckpointStore.open({ dir, chunkBytes, keep: 3 });
    for (const cid of [10, 20, 30, 40, 50]) await store.write(cid, 0, [{ name: 'service', source: pattern(100 + cid, cid) }], 0);
    expect(store.list().map((manifest) => manifest.cid)).toEqual([30, 40, 50]);
    expect(store.latest()?.cid).toBe(50);
    expect((await readdir(dir)).sort()).toEqual([30, 40, 50].map(checkpointFolderName));
    expect(store.stats()).toMatchObject({ checkpoints: 3, checkpointsPruned: 2 });
    await expectBftError(store.readChunk(20, 0), 'BFT_ERR_CHECKPOINT_MISSING');
    expect(hex(await collect(store.readPart(30, 'service')))).toBe(hex(pattern(130, 30)));
  });

  it('uses keep 2 by default', async () => {
    const store = await CheckpointStore.open({ dir: await freshDir(), chunkBytes });
    for (const cid of [1, 2, 3]) await store.write(cid, 0, bufferParts(), 0);
    expect(store.list().map((manifest) => manifest.cid)).toEqual([2, 3]);
  });
});

describe('CheckpointStore: install (state transfer)', () => {
  async function sourceCheckpoint(): Promise<{ source: CheckpointStore; manifest: Manifest }> {
    const source = await CheckpointStore.open({ dir: await freshDir(), chunkBytes });
    const manifest = await source.write(42, 3, bufferParts(), 1);
    return { source, manifest };
  }

  it('installs from a peer that sends a wrong chunk 3 first and a good one on the second attempt', async () => {
    const { source, manifest } = await sourceCheckpoint();
    const target = await CheckpointStore.open({ dir: await freshDir(), chunkBytes });
    const asked: Array<[number, number]> = [];
    await target.install(
      manifest,
      async (index, attempt) => {
        asked.push([index, attempt]);
        const chunk = await source.readChunk(manifest.cid, index);
        if (index === 3 && attempt === 0) {
          const wrong = new Uint8Array(chunk);
          wrong[17] = (wrong[17] as number) ^ 0xff;
          return wrong;
        }
        return chunk;
      },
      { parallel: 3 },
    );

    expect(asked.filter(([index]) => index === 3).sort()).toEqual([
      [3, 0],
      [3, 1],
    ]);
    expect(asked.filter(([index]) => index !== 3).every(([, attempt]) => attempt === 0)).toBe(true);
    expect(target.stats()).toMatchObject({ checkpoints: 1, chunkMismatches: 1, installRetries: 1, chunkFetchFailures: 0 });
    expect(target.stats().install).toEqual({
      cid: 42,
      state: 'installed',
      chunksTotal: manifest.chunkHashes.length,
      chunksInstalled: manifest.chunkHashes.length,
      retries: 1,
      retriesByIndex: { 3: 1 },
    });
    expect(target.latest()?.cid).toBe(42);
    expect(hex(manifestDigest(target.latest() as Manifest))).toBe(hex(manifestDigest(manifest)));
    expect(hex(await collect(target.readPart(42, 'service')))).toBe(hex(state.service));
    expect(hex(await collect(target.readPart(42, 'replies')))).toBe(hex(state.replies));
    expect(hex(await collect(target.readPart(42, 'view')))).toBe(hex(state.view));
    // It survives a restart like a written checkpoint.
    expect((await CheckpointStore.open({ dir: target.dir, chunkBytes })).latest()?.cid).toBe(42);
  });

  it('retries chunks whose fetch throws, times out or has the wrong length', async () => {
    const { source, manifest } = await sourceCheckpoint();
    const target = await CheckpointStore.open({ dir: await freshDir(), chunkBytes });
    const abortedSignals: AbortSignal[] = [];
    await target.install(
      manifest,
      async (index, attempt, signal) => {
        if (index === 0 && attempt === 0) throw new Error('connection reset');
        if (index === 1 && attempt === 0) {
          // Never answers; the attempt times out and its signal aborts.
          return new Promise<Uint8Array>((_, reject) => {
            signal.addEventListener('abort', () => {
              abortedSignals.push(signal);
              reject(new Error('aborted'));
            });
          });
        }
        const chunk = await source.readChunk(manifest.cid, index);
        return index === 2 && attempt === 0 ? chunk.subarray(1) : chunk;
      },
      { attemptTimeoutMs: 200 },
    );
    expect(abortedSignals).toHaveLength(1);
    expect(target.stats()).toMatchObject({ chunkFetchFailures: 2, chunkMismatches: 1, installRetries: 3 });
    expect(target.stats().install?.retriesByIndex).toEqual({ 0: 1, 1: 1, 2: 1 });
    expect(hex(await collect(target.readPart(42, 'service')))).toBe(hex(state.service));
  });

  it('fails with a BftError and publishes nothing when a chunk never comes good', async () => {
    const { source, manifest } = await sourceCheckpoint();
    const dir = await freshDir();
    const target = await CheckpointStore.open({ dir, chunkBytes });
    let attemptsAtFour = 0;
    const error = await expectBftError(
      target.install(manifest, async (index) => {
        const chunk = new Uint8Array(await source.readChunk(manifest.cid, index));
        if (index === 4) {
          attemptsAtFour += 1;
          chunk[0] = (chunk[0] as number) ^ 1;
        }
        return chunk;
      }),
      'BFT_ERR_CHECKPOINT_TRANSFER_FAILED',
    );
    expect(error.message).toContain('chunk 4 ');
    expect(attemptsAtFour).toBe(limits.checkpointChunkAttemptsMax);
    expect(target.stats()).toMatchObject({ checkpoints: 0, chunkMismatches: limits.checkpointChunkAttemptsMax });
    const retriesAtFour = limits.checkpointChunkAttemptsMax - 1;
    expect(target.stats().install).toMatchObject({ cid: 42, state: 'failed', retriesByIndex: { 4: retriesAtFour } });
    expect(target.latest()).toBeNull();
    expect(await readdir(dir)).toEqual([]);
    expect((await CheckpointStore.open({ dir, chunkBytes })).latest()).toBeNull();
  });

  it('refuses a manifest that is inconsistent or not newer than what it holds, before fetching anything', async () => {
    const { source, manifest } = await sourceCheckpoint();
    const target = await CheckpointStore.open({ dir: await freshDir(), chunkBytes });
    let fetches = 0;
    const fetchChunk = async (index: number) => {
      fetches += 1;
      return source.readChunk(manifest.cid, index);
    };
    await expectBftError(target.install({ ...manifest, totalBytes: 1 }, fetchChunk), 'BFT_ERR_CHECKPOINT_MANIFEST_INVALID');
    const tooParallel = { parallel: limits.checkpointInstallParallelMax + 1 };
    await expectBftError(target.install(manifest, fetchChunk, tooParallel), 'BFT_ERR_CONFIG_INVALID');
    expect(fetches).toBe(0);
    await target.install(manifest, fetchChunk);
    fetches = 0;
    await expectBftError(target.install(manifest, fetchChunk), 'BFT_ERR_CHECKPOINT_STALE');
    expect(fetches).toBe(0);
  });

  it('fetches at most `parallel` chunks at once', async () => {
    const { source, manifest } = await sourceCheckpoint();
    const target = await CheckpointStore.open({ dir: await freshDir(), chunkBytes });
    let inFlight = 0;
    let inFlightMax = 0;
    await target.install(
      manifest,
      async (index) => {
        inFlight += 1;
        inFlightMax = Math.max(inFlightMax, inFlight);
        await new Promise((resolve) => setImmediate(resolve));
        const chunk = await source.readChunk(manifest.cid, index);
        inFlight -= 1;
        return chunk;
      },
      { parallel: 2 },
    );
    expect(inFlightMax).toBe(2);
  });
});

describe('CheckpointStore: memory', () => {
  it('writes a 256 MiB state streamed from a generator with memory of a few chunks', async () => {
    const stateBytes = 256 * 1024 * 1024;
    const pieceBytes = 64 * 1024;
    const store = await CheckpointStore.open({ dir: await freshDir() });
    const baseline = process.memoryUsage();
    let heapUsedMax = baseline.heapUsed;
    let arrayBuffersMax = baseline.arrayBuffers;
    // One piece buffer, refilled for each piece: the store must copy what it keeps.
    const piece = new Uint8Array(pieceBytes);
    async function* generate(): AsyncGenerator<Uint8Array> {
      for (let index = 0; index < stateBytes / pieceBytes; index++) {
        piece.fill(index & 0xff);
        piece[0] = index >>> 8;
        yield piece;
        if (index % 256 === 0) {
          const usage = process.memoryUsage();
          heapUsedMax = Math.max(heapUsedMax, usage.heapUsed);
          arrayBuffersMax = Math.max(arrayBuffersMax, usage.arrayBuffers);
        }
      }
    }
    const manifest = await store.write(1, 0, [{ name: 'service', source: generate() }], 0);
    const heapUsedGrowth = heapUsedMax - baseline.heapUsed;
    const arrayBuffersGrowth = arrayBuffersMax - baseline.arrayBuffers;
    const mib = (bytes: number) => (bytes / 2 ** 20).toFixed(1);
    console.info(`256 MiB checkpoint write: peak growth heapUsed ${mib(heapUsedGrowth)} MiB, arrayBuffers ${mib(arrayBuffersGrowth)} MiB`);

    expect(manifest.totalBytes).toBe(stateBytes);
    expect(manifest.chunkHashes).toHaveLength(stateBytes / limits.checkpointChunkBytesDefault);
    // Two chunk buffers are 2 MiB; the bounds leave room for the garbage collector's timing, and are
    // still eight times below the state, which is what holding the state would cost.
    expect(arrayBuffersGrowth).toBeLessThan(32 * 1024 * 1024);
    expect(heapUsedGrowth).toBeLessThan(32 * 1024 * 1024);
    // The data is what was streamed, where it was streamed.
    const chunk = await store.readChunk(1, 100);
    const pieceIndex = (100 * limits.checkpointChunkBytesDefault) / pieceBytes;
    expect(chunk[0]).toBe(pieceIndex >>> 8);
    expect(chunk[1]).toBe(pieceIndex & 0xff);
  });
});
