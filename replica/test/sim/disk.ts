// The simulated disk of one replica (DESIGN §5, §9): its write-ahead log, its checkpoint store, and the
// faults a real disk has. It keeps what the real storage keeps and refuses what the real storage refuses:
//
// - the log: records in the order they were made durable. Durability is `fsync` (our default): a Ready's
//   records are on disk before any of its messages leaves. A crash in the middle of persisting a Ready
//   leaves a prefix of its records; the record being written when the power went is torn, and the WAL
//   cuts a torn tail off at open, so it is simply absent. That is also what "lost unsynced writes" means
//   under fsync: records written but not yet synced are lost, and nothing sent depended on them.
//   (Durability `batch` sends before the sync, so a crash can forget a sent vote; the simulator does not
//   model it: it is unsafe by design, and documented as such.)
// - a flipped bit in a log record that is not the last one: its checksum fails, acknowledged records
//   are gone, and the log refuses to open (BFT_ERR_WAL_CORRUPT), as storage/wal.ts does.
// - checkpoints: the real parts (service snapshot, reply cache, view) as bytes, cut into chunks whose
//   SHA-256 the manifest lists, as storage/checkpoint-store.ts keeps them. The newest two are kept, and
//   the log forgets what the newest covers (but the certificate of its own instance). A flipped bit in a checkpoint's bytes is found when a chunk
//   is read: at start for the newest (the replica refuses to start, BFT_ERR_CHECKPOINT_CORRUPT), when
//   serving a peer for any (the chunk is answered empty, and the peer asks another replica).
// - a wipe: everything is gone; the replica starts amnesic (it may have voted in instances it no longer
//   remembers). The marker survives restarts until the core reports it is past what it forgot: a
//   restart from the few records it wrote since must not make it forget that it forgot.

import { createHash } from 'node:crypto';
import { limits } from '../../src/constants.ts';
import type { PersistRecord } from '../../src/core/ready.ts';
import { BftError } from '../../src/errors.ts';
import type { Manifest } from '../../src/storage/checkpoint-store.ts';
import type { Rng } from './prng.ts';

/** The chunk size of simulated checkpoints: the smallest the wire allows, so that states span chunks. */
export const simChunkBytes = limits.checkpointChunkBytesMin;

export interface SimLogEntry {
  readonly record: PersistRecord;
  /** A flipped bit: its checksum no longer matches. */
  damaged: boolean;
}

export interface SimCheckpoint {
  readonly manifest: Manifest;
  /** The concatenated parts; a flipped bit changes them in place. */
  readonly bytes: Uint8Array;
}

export type OpenedDisk =
  | {
      readonly ok: true;
      /** The newest checkpoint, verified chunk by chunk; the state starts from it. */
      readonly checkpoint: SimCheckpoint | null;
      readonly records: readonly PersistRecord[];
      /** A damaged last record was cut off, as the WAL does with a torn tail. */
      readonly truncatedTail: boolean;
    }
  | { readonly ok: false; readonly error: BftError };

export function sha256(bytes: Uint8Array): Uint8Array {
  return new Uint8Array(createHash('sha256').update(bytes).digest());
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

export function concatBytes(pieces: Iterable<Uint8Array>): Uint8Array {
  const list = [...pieces];
  const all = new Uint8Array(list.reduce((sum, piece) => sum + piece.length, 0));
  let position = 0;
  for (const piece of list) {
    all.set(piece, position);
    position += piece.length;
  }
  return all;
}

export interface CheckpointPart {
  readonly name: 'service' | 'replies' | 'view';
  readonly bytes: Uint8Array;
}

/** A checkpoint of instance `cid` from its parts, with the manifest checkpoint-store.ts would write. */
export function buildCheckpoint(cid: number, viewNumber: number, parts: readonly CheckpointPart[], createdBy: number): SimCheckpoint {
  const bytes = concatBytes(parts.map((part) => part.bytes));
  const chunkHashes: Uint8Array[] = [];
  for (let offset = 0; offset < bytes.length; offset += simChunkBytes) {
    chunkHashes.push(sha256(bytes.subarray(offset, offset + simChunkBytes)));
  }
  const manifest: Manifest = {
    version: 1,
    cid,
    viewNumber,
    parts: parts.map((part) => ({ name: part.name, bytes: part.bytes.length })),
    totalBytes: bytes.length,
    chunkBytes: simChunkBytes,
    chunkHashes,
    createdBy,
  };
  return { manifest, bytes };
}

/** Chunk `index` of a checkpoint, or null when it does not match its manifest (damaged) or does not exist. */
export function readChunk(checkpoint: SimCheckpoint, index: number): Uint8Array | null {
  const expected = checkpoint.manifest.chunkHashes[index];
  if (expected === undefined) return null;
  const chunkBytes = checkpoint.manifest.chunkBytes;
  const chunk = checkpoint.bytes.slice(index * chunkBytes, (index + 1) * chunkBytes);
  return equalBytes(sha256(chunk), expected) ? chunk : null;
}

/** The index of the first chunk that does not match the manifest, or -1. */
export function firstDamagedChunk(checkpoint: SimCheckpoint): number {
  for (let index = 0; index < checkpoint.manifest.chunkHashes.length; index++) {
    if (readChunk(checkpoint, index) === null) return index;
  }
  return -1;
}

/**
 * What a checkpoint of `cid` makes useless in the log. The decision of `cid` itself stays: its certificate
 * is what a replica standing at the checkpoint must show for the next instance (STOPDATA, SYNC).
 */
function coveredBy(record: PersistRecord, cid: number): boolean {
  if (record.kind === 'decision') return record.decision.cid < cid;
  if (record.kind === 'write' || record.kind === 'accept') return record.cid <= cid;
  // Regencies and synchronizations stay: they say what the replica may no longer do.
  return false;
}

export class SimDisk {
  log: SimLogEntry[] = [];
  /** Oldest first, at most limits.checkpointKeepDefault. */
  checkpoints: SimCheckpoint[] = [];
  /** Lost its disk, and not yet past every instance it may have voted in before. */
  amnesic = false;

  append(records: readonly PersistRecord[]): void {
    for (const record of records) this.log.push({ record, damaged: false });
  }

  /** Publishes a checkpoint (taken here or fetched by state transfer); the log forgets what it covers. */
  addCheckpoint(checkpoint: SimCheckpoint): void {
    const cid = checkpoint.manifest.cid;
    const newest = this.checkpoints.at(-1);
    if (newest !== undefined && newest.manifest.cid >= cid) return;
    this.checkpoints.push(checkpoint);
    while (this.checkpoints.length > limits.checkpointKeepDefault) this.checkpoints.shift();
    this.log = this.log.filter((entry) => !coveredBy(entry.record, cid));
  }

  checkpoint(cid: number): SimCheckpoint | undefined {
    return this.checkpoints.find((checkpoint) => checkpoint.manifest.cid === cid);
  }

  wipe(): void {
    this.log = [];
    this.checkpoints = [];
    this.amnesic = true;
  }

  /** Flips one bit of a log record that is not the last: damage the WAL cannot take for a torn write. */
  flipLogBit(rng: Rng): string | null {
    if (this.log.length < 2) return null;
    const index = rng.int(0, this.log.length - 2);
    (this.log[index] as SimLogEntry).damaged = true;
    return `log record ${index} of ${this.log.length}`;
  }

  /** Flips one bit of a checkpoint's bytes (any kept checkpoint). */
  flipCheckpointBit(rng: Rng): string | null {
    const candidates = this.checkpoints.filter((checkpoint) => checkpoint.bytes.length > 0);
    if (candidates.length === 0) return null;
    const checkpoint = rng.pick(candidates);
    const offset = rng.int(0, checkpoint.bytes.length - 1);
    checkpoint.bytes[offset] = (checkpoint.bytes[offset] as number) ^ (1 << rng.int(0, 7));
    return `checkpoint ${checkpoint.manifest.cid} byte ${offset}`;
  }

  /** What a starting replica reads: refused, as the WAL and the checkpoint store refuse damage. */
  open(): OpenedDisk {
    const damaged = this.log.findIndex((entry) => entry.damaged);
    let entries = this.log;
    let truncatedTail = false;
    if (damaged >= 0 && damaged < this.log.length - 1) {
      return {
        ok: false,
        error: new BftError(
          'BFT_ERR_WAL_CORRUPT',
          `log record ${damaged} of ${this.log.length} fails its checksum, and records after it were acknowledged; ` +
            'move the data directory away and let the replica recover from its peers',
        ),
      };
    }
    if (damaged >= 0) {
      entries = this.log.slice(0, damaged);
      truncatedTail = true;
    }
    const checkpoint = this.checkpoints.at(-1) ?? null;
    if (checkpoint !== null) {
      const bad = firstDamagedChunk(checkpoint);
      if (bad >= 0) {
        return {
          ok: false,
          error: new BftError(
            'BFT_ERR_CHECKPOINT_CORRUPT',
            `checkpoint ${checkpoint.manifest.cid}: chunk ${bad} does not match its manifest; ` +
              'move the data directory away and let the replica recover from its peers',
          ),
        };
      }
    }
    return { ok: true, checkpoint, records: entries.map((entry) => entry.record), truncatedTail };
  }
}
