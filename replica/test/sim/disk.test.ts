import { describe, expect, it } from 'vitest';
import type { PersistRecord } from '../../src/core/ready.ts';
import { encodeBatch } from '../../src/protocol/codec.ts';
import { SimDisk, buildCheckpoint, firstDamagedChunk, readChunk, simChunkBytes } from './disk.ts';
import { Rng } from './prng.ts';

const emptyBatch = encodeBatch({ requests: [] });

function decision(cid: number): PersistRecord {
  return { kind: 'decision', decision: { cid, regency: 0, batch: emptyBatch, votes: [] } };
}

function accept(cid: number): PersistRecord {
  return { kind: 'accept', cid, regency: 0, batch: emptyBatch };
}

function checkpointOf(cid: number, serviceBytes: number) {
  const service = new Rng(cid + 1).bytes(serviceBytes);
  return buildCheckpoint(cid, 0, [
    { name: 'service', bytes: service },
    { name: 'replies', bytes: Uint8Array.of(1, 2, 3) },
  ], 0);
}

describe('the simulated disk refuses what the real storage refuses', () => {
  it('a damaged record in the middle of the log refuses the start with BFT_ERR_WAL_CORRUPT', () => {
    const disk = new SimDisk();
    disk.append([decision(0), accept(1), decision(1)]);
    expect(disk.flipLogBit(new Rng(1))).not.toBeNull();
    const opened = disk.open();
    expect(opened.ok).toBe(false);
    if (!opened.ok) expect(opened.error.code).toBe('BFT_ERR_WAL_CORRUPT');
  });

  it('a damaged last record is cut off like a torn write, and the rest is read', () => {
    const disk = new SimDisk();
    disk.append([decision(0), decision(1)]);
    (disk.log[1] as { damaged: boolean }).damaged = true;
    const opened = disk.open();
    expect(opened.ok && opened.truncatedTail).toBe(true);
    expect(opened.ok ? opened.records : null).toEqual([decision(0)]);
  });

  it('a flipped bit in the newest checkpoint refuses the start with BFT_ERR_CHECKPOINT_CORRUPT', () => {
    const disk = new SimDisk();
    disk.addCheckpoint(checkpointOf(3, 100));
    const newest = disk.checkpoints.at(-1);
    if (newest === undefined) throw new Error('no checkpoint');
    newest.bytes[50] = (newest.bytes[50] as number) ^ 4;
    const opened = disk.open();
    expect(opened.ok).toBe(false);
    if (!opened.ok) expect(opened.error.code).toBe('BFT_ERR_CHECKPOINT_CORRUPT');
  });

  it('a damaged chunk is not read (so it is never served), the others still are', () => {
    const checkpoint = checkpointOf(5, 2 * simChunkBytes + 10);
    expect(checkpoint.manifest.chunkHashes.length).toBe(3);
    checkpoint.bytes[simChunkBytes + 7] = (checkpoint.bytes[simChunkBytes + 7] as number) ^ 1;
    expect(firstDamagedChunk(checkpoint)).toBe(1);
    expect(readChunk(checkpoint, 1)).toBeNull();
    expect(readChunk(checkpoint, 0)?.length).toBe(simChunkBytes);
    expect(readChunk(checkpoint, 2)?.length).toBe(13);
    expect(readChunk(checkpoint, 3)).toBeNull();
  });
});

describe('checkpoints on the simulated disk', () => {
  it('keeps the newest two, and the log forgets what the newest covers but its own certificate', () => {
    const disk = new SimDisk();
    disk.append([{ kind: 'regency', regency: 1 }, decision(0), accept(1), decision(1), decision(2), accept(3)]);
    disk.addCheckpoint(checkpointOf(1, 10));
    disk.addCheckpoint(checkpointOf(2, 10));
    disk.addCheckpoint(checkpointOf(0, 10));
    expect(disk.checkpoints.map((c) => c.manifest.cid)).toEqual([1, 2]);
    expect(disk.log.map((entry) => entry.record)).toEqual([{ kind: 'regency', regency: 1 }, decision(2), accept(3)]);
    disk.addCheckpoint(checkpointOf(7, 10));
    expect(disk.checkpoints.map((c) => c.manifest.cid)).toEqual([2, 7]);
  });

  it('a wipe loses everything and marks the replica amnesic', () => {
    const disk = new SimDisk();
    disk.append([decision(0)]);
    disk.addCheckpoint(checkpointOf(0, 10));
    disk.wipe();
    const opened = disk.open();
    expect(opened.ok && opened.records.length === 0 && opened.checkpoint === null).toBe(true);
    expect(disk.amnesic).toBe(true);
  });
});
