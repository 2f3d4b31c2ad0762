// Streamed snapshots (service.ts): a writer that cuts a byte stream into pieces as it is produced, and a
// reader that takes a stream of pieces cut anywhere and reads fields across their edges. Both hash what
// passes through them in bulk (one update per piece, not per field), so that a snapshot carries a
// trailing SHA-256 without ever being held whole.

import { type Hash, createHash } from 'node:crypto';
import { limits } from '../constants.ts';
import { invariant } from '../errors.ts';
import type { Bytes } from '../protocol/messages.ts';

/** Small states get small pieces: the first piece is this large, each next one twice as large up to the maximum. */
const firstPieceBytes = 4096;
export const snapshotHashBytes = 32;

/**
 * Writes fields into pieces of at most `pieceBytesMax`; full pieces are collected in `sealed` for the
 * caller to hand out (and clear). The piece sizes depend only on the bytes written, so equal content
 * gives equal pieces.
 */
export class PieceWriter {
  readonly sealed: Bytes[] = [];
  private readonly pieceBytesMax: number;
  private piece: Uint8Array;
  private view: DataView;
  private position = 0;
  private hash: Hash | null = createHash('sha256');
  private readonly scratch = new Uint8Array(8);
  private readonly scratchView = new DataView(this.scratch.buffer);

  constructor(pieceBytesMax: number = limits.snapshotPieceBytesMax) {
    invariant(Number.isSafeInteger(pieceBytesMax) && pieceBytesMax >= 16 && pieceBytesMax <= limits.snapshotPieceBytesMax, 'piece size within limits');
    this.pieceBytesMax = pieceBytesMax;
    this.piece = new Uint8Array(Math.min(firstPieceBytes, pieceBytesMax));
    this.view = new DataView(this.piece.buffer);
  }

  writeBytes(bytes: Bytes): void {
    let offset = 0;
    while (offset < bytes.length) {
      if (this.position === this.piece.length) this.seal();
      const count = Math.min(bytes.length - offset, this.piece.length - this.position);
      this.piece.set(offset === 0 && count === bytes.length ? bytes : bytes.subarray(offset, offset + count), this.position);
      this.position += count;
      offset += count;
    }
  }

  writeU16(value: number): void {
    if (this.piece.length - this.position >= 2) {
      this.view.setUint16(this.position, value);
      this.position += 2;
    } else {
      this.scratchView.setUint16(0, value);
      this.writeBytes(this.scratch.subarray(0, 2));
    }
  }

  writeU32(value: number): void {
    if (this.piece.length - this.position >= 4) {
      this.view.setUint32(this.position, value);
      this.position += 4;
    } else {
      this.scratchView.setUint32(0, value);
      this.writeBytes(this.scratch.subarray(0, 4));
    }
  }

  /** A non-negative safe integer, as 8 bytes (big-endian u64). */
  writeU64(value: number): void {
    invariant(Number.isSafeInteger(value) && value >= 0, 'u64 fields hold non-negative safe integers');
    this.writeU32(Math.floor(value / 2 ** 32));
    this.writeU32(value >>> 0);
  }

  /** Appends the SHA-256 of everything written so far; nothing written after it is hashed. */
  writeDigest(): void {
    const hash = this.hash;
    invariant(hash !== null, 'a snapshot has one digest');
    hash.update(this.piece.subarray(0, this.position));
    this.hash = null;
    // With the hash gone, seal() hashes nothing more: the digest and anything after it stay outside it.
    this.writeBytes(hash.digest());
  }

  /** Seals the last piece; `sealed` then holds the rest of the stream. */
  finish(): void {
    if (this.position > 0) this.seal();
  }

  private seal(): void {
    const full = this.position === this.piece.length ? this.piece : this.piece.slice(0, this.position);
    this.hash?.update(full);
    this.sealed.push(full);
    this.piece = new Uint8Array(Math.min(this.pieceBytesMax, this.piece.length * 2));
    this.view = new DataView(this.piece.buffer);
    this.position = 0;
  }
}

/**
 * Reads fields from pieces cut at arbitrary bytes. It buffers at most the field being read plus one
 * piece, so memory does not grow with the stream. Reads are synchronous while enough bytes are
 * buffered: call `fill(n)` (and await it) only when `buffered < n`.
 */
export class PieceReader {
  private readonly iterator: AsyncIterator<Bytes>;
  /** Buffered pieces; bytes before `offset` of the first one are consumed. */
  private readonly pieces: Bytes[] = [];
  private offset = 0;
  private bufferedBytes = 0;
  private ended = false;
  private hash: Hash | null = createHash('sha256');
  /** Bytes of the first piece already hashed (always ≤ offset). */
  private hashedInFirst = 0;
  private consumedBytes = 0;

  constructor(pieces: AsyncIterable<Bytes>) {
    this.iterator = pieces[Symbol.asyncIterator]();
  }

  get buffered(): number {
    return this.bufferedBytes;
  }

  /** Bytes taken so far. */
  get consumed(): number {
    return this.consumedBytes;
  }

  /** Buffers at least `count` bytes; false when the stream ended before that. */
  async fill(count: number): Promise<boolean> {
    while (this.bufferedBytes < count) {
      if (this.ended) return false;
      const next = await this.iterator.next();
      if (next.done === true) {
        this.ended = true;
        return false;
      }
      const piece = next.value;
      if (!(piece instanceof Uint8Array)) throw new TypeError('snapshot pieces must be Uint8Arrays');
      if (piece.length === 0) continue;
      this.pieces.push(piece);
      this.bufferedBytes += piece.length;
    }
    return true;
  }

  /** Whether the stream holds no more bytes. */
  async atEnd(): Promise<boolean> {
    return !(await this.fill(1));
  }

  /**
   * Takes `count` buffered bytes (`buffered ≥ count`). The result is a view of a piece when the bytes lie
   * in one, else a fresh array: copy it before keeping it.
   */
  take(count: number): Bytes {
    invariant(count <= this.bufferedBytes, 'take() reads buffered bytes only');
    const first = this.pieces[0];
    if (count === 0 || first === undefined) return new Uint8Array(0);
    let result: Bytes;
    if (first.length - this.offset >= count) {
      result = first.subarray(this.offset, this.offset + count);
      this.offset += count;
      if (this.offset === first.length) this.dropFirst();
    } else {
      result = new Uint8Array(count);
      let written = 0;
      while (written < count) {
        const piece = this.pieces[0] as Bytes;
        const part = Math.min(count - written, piece.length - this.offset);
        result.set(piece.subarray(this.offset, this.offset + part), written);
        written += part;
        this.offset += part;
        if (this.offset === piece.length) this.dropFirst();
      }
    }
    this.bufferedBytes -= count;
    this.consumedBytes += count;
    return result;
  }

  /**
   * Takes `count` buffered bytes as an array of its own (never a view of a piece). A copy through the
   * Uint8Array constructor: pieces may be Buffers, whose slice() is a view.
   */
  takeCopy(count: number): Bytes {
    const first = this.pieces[0];
    if (first !== undefined && first.length - this.offset >= count) return new Uint8Array(this.take(count));
    return this.take(count);
  }

  takeU16(): number {
    const bytes = this.take(2);
    return (bytes[0] as number) * 256 + (bytes[1] as number);
  }

  takeU32(): number {
    const bytes = this.take(4);
    return (((bytes[0] as number) << 24) >>> 0) + (((bytes[1] as number) << 16) | ((bytes[2] as number) << 8) | (bytes[3] as number));
  }

  /** A big-endian u64; null when it is beyond the safe integers. */
  takeU64(): number | null {
    const high = this.takeU32();
    const low = this.takeU32();
    if (high >= 2 ** 21) return null;
    return high * 2 ** 32 + low;
  }

  /** The SHA-256 of every byte taken so far; nothing taken after it is hashed. */
  digestConsumed(): Buffer {
    const hash = this.hash;
    invariant(hash !== null, 'digestConsumed() is called once');
    const first = this.pieces[0];
    if (first !== undefined && this.offset > this.hashedInFirst) hash.update(first.subarray(this.hashedInFirst, this.offset));
    this.hash = null;
    return hash.digest();
  }

  /** Stops the source early (after a malformed snapshot), so that its producer can release what it holds. */
  async cancel(): Promise<void> {
    if (this.ended) return;
    this.ended = true;
    this.pieces.length = 0;
    this.bufferedBytes = 0;
    await this.iterator.return?.();
  }

  private dropFirst(): void {
    const first = this.pieces.shift() as Bytes;
    if (this.hash !== null) hash(this.hash, first, this.hashedInFirst);
    this.offset = 0;
    this.hashedInFirst = 0;
  }
}

function hash(target: Hash, piece: Bytes, from: number): void {
  target.update(from === 0 ? piece : piece.subarray(from));
}

/** Pieces as an async iterable (tests, and the inline host). */
export async function* asAsyncPieces(pieces: Iterable<Bytes>): AsyncGenerator<Bytes, void, undefined> {
  for (const piece of pieces) yield piece;
}

/** The whole stream in one array: for tests and small parts only. */
export function concatPieces(pieces: Iterable<Bytes>): Uint8Array {
  const list = [...pieces];
  const total = list.reduce((sum, piece) => sum + piece.length, 0);
  const all = new Uint8Array(total);
  let position = 0;
  for (const piece of list) {
    all.set(piece, position);
    position += piece.length;
  }
  return all;
}
