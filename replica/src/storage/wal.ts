// The write-ahead log: what the core persists before its messages leave (DESIGN §2 "votes are durable", §5).
//
// Layout: segment files `wal-<16-digit index of the segment's first record>.log` in one directory. Each
// record is framed as
//
//   [u32 BE payload bytes][u32 BE checksum][u8 kind][payload: msgpack of the PersistRecord]
//
// The checksum is CRC-32 (the zlib/IEEE polynomial, node:zlib's crc32, which runs in native code) over the
// length field, the kind and the payload, so a flipped bit in the length is caught as well as one in the
// data. CRC-32 detects every burst of up to 32 bits and every odd number of flipped bits in a record.
//
// Recovery trusts nothing on disk: a record must frame, checksum, decode and pass a schema, and its batch
// must decode, before it is returned. A damaged record at the very end of the last segment is what a
// crash in the middle of a write leaves behind: it is cut off and counted. Damage anywhere else means
// acknowledged records are gone, and the log refuses to open rather than let the replica forget votes
// it may have sent (recovery is then by state transfer from the peers).

import { mkdir, open, readdir, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { Packr } from 'msgpackr';
import type { Logger } from 'pino';
import { z } from 'zod';
import { limits } from '../constants.ts';
import { BftError, invariant } from '../errors.ts';
import type { PersistRecord } from '../core/ready.ts';
import { decodeBatch, plainMsgpackOptions } from '../protocol/codec.ts';
import { decisionSchema } from '../protocol/validate.ts';
import type { Storage } from '../runtime/storage.ts';
import { syncDirectory } from './fs-sync.ts';

export type Durability = 'fsync' | 'batch' | 'none';

export interface WriteAheadLogOptions {
  readonly dir: string;
  /**
   * fsync: append() resolves once its records are written and fdatasync'd (appends that arrive during a
   * sync share the next one). batch: append() resolves once written; a timer fdatasyncs within
   * groupCommitMs. none: nothing is written, and load() returns nothing.
   */
  readonly durability: Durability;
  /** Roll to a new segment file when the next record would pass this size. Default limits.walSegmentBytesDefault. */
  readonly segmentBytesMax?: number;
  /** Durability "batch" only: the longest written data stays unsynced. Default limits.walGroupCommitMsDefault. */
  readonly groupCommitMs?: number;
  readonly logger?: Logger;
}

export interface WalStats {
  /** Calls to append() that were accepted, and the records and framed bytes they carried. */
  readonly appends: number;
  readonly recordsAppended: number;
  readonly bytesAppended: number;
  /** fdatasync calls on segment files (group commits, batch timers, segment rolls, close). */
  readonly fsyncs: number;
  /** Records made durable per fdatasync, on average (0 before the first). */
  readonly meanRecordsPerFsync: number;
  /** Records found on disk at open, and the bytes of a torn or corrupt tail cut off then. */
  readonly recordsRecovered: number;
  readonly truncatedTailBytes: number;
  readonly segments: number;
  readonly segmentsDeleted: number;
  /** True once a failed write or sync stopped the log: every later append is refused. */
  readonly failed: boolean;
}

/** Kind codes on disk: fixed forever, a retired code is never reused. */
export const walRecordKind = {
  regency: 1,
  synced: 2,
  write: 3,
  accept: 4,
  decision: 5,
} as const satisfies Record<PersistRecord['kind'], number>;

const kindCodeMin = 1;
const kindCodeMax = 5;

/** Length (4), checksum (4), kind (1). */
const headerBytes = 9;

const segmentNamePattern = /^wal-(\d{16})\.log$/;

export function segmentFileName(firstIndex: number): string {
  return `wal-${String(firstIndex).padStart(16, '0')}.log`;
}

// The wire codec's plain msgpack, but with decoded byte fields copied, so a record never pins a read chunk.
const packr = new Packr({ ...plainMsgpackOptions, copyBuffers: true });

// --- Record schemas ------------------------------------------------------------------------------------

const nonNegativeInteger = z.int().min(0);
function bytes(lengthMin: number, lengthMax: number) {
  return z.custom<Uint8Array>(
    (value) => value instanceof Uint8Array && value.length >= lengthMin && value.length <= lengthMax,
    { error: `expected ${lengthMin}..${lengthMax} bytes` },
  );
}
const batchBytes = bytes(1, limits.batchBytesMax);

const recordSchemas = {
  [walRecordKind.regency]: z.strictObject({ kind: z.literal('regency'), regency: nonNegativeInteger }),
  [walRecordKind.synced]: z.strictObject({
    kind: z.literal('synced'),
    regency: nonNegativeInteger,
    cid: nonNegativeInteger,
    // Empty when SYNC bound no value.
    batch: bytes(0, limits.batchBytesMax),
  }),
  [walRecordKind.write]: z.strictObject({
    kind: z.literal('write'),
    cid: nonNegativeInteger,
    regency: nonNegativeInteger,
    batch: batchBytes,
  }),
  [walRecordKind.accept]: z.strictObject({
    kind: z.literal('accept'),
    cid: nonNegativeInteger,
    regency: nonNegativeInteger,
    batch: batchBytes,
  }),
  [walRecordKind.decision]: z.strictObject({ kind: z.literal('decision'), decision: decisionSchema }),
} as const;

type Decoded = { readonly ok: true; readonly record: PersistRecord } | { readonly ok: false; readonly detail: string };

/** Validates a payload read from disk like input from the network. Never throws. */
export function decodeRecord(kind: number, payload: Uint8Array): Decoded {
  if (kind < kindCodeMin || kind > kindCodeMax) return { ok: false, detail: `unknown record kind ${kind}` };
  let value: unknown;
  try {
    value = packr.unpack(payload) as unknown;
  } catch (error) {
    return { ok: false, detail: `payload is not msgpack (${String(error instanceof Error ? error.message : error).slice(0, 120)})` };
  }
  const schema = recordSchemas[kind as keyof typeof recordSchemas];
  const parsed = schema.safeParse(value);
  if (!parsed.success) {
    return { ok: false, detail: `payload is not a valid ${Object.keys(walRecordKind)[kind - 1]} record (${parsed.error.message.slice(0, 200)})` };
  }
  const record = parsed.data as PersistRecord;
  // The core asserts that persisted batches decode: check it here, where bad bytes are refused, not fatal.
  const batch = record.kind === 'decision' ? record.decision.batch : record.kind === 'regency' ? null : record.batch;
  if (batch !== null && batch.length > 0) {
    const decoded = decodeBatch(batch);
    if (!decoded.ok) return { ok: false, detail: `its batch does not decode (${decoded.reason}: ${decoded.detail})` };
  }
  return { ok: true, record };
}

/** CRC-32 over the length field, the kind and the payload: everything in the frame but the checksum. */
function frameChecksum(lengthField: Uint8Array, kindAndPayload: Uint8Array, payload?: Uint8Array): number {
  let checksum = crc32(lengthField);
  checksum = crc32(kindAndPayload, checksum);
  return payload === undefined ? checksum : crc32(payload, checksum);
}

function checksumOfFrame(frame: Buffer): number {
  return frameChecksum(frame.subarray(0, 4), frame.subarray(8));
}

// --- What the log remembers per segment ------------------------------------------------------------------

/** What truncateBefore needs to know about one record, without keeping the record. */
interface RecordFacts {
  /** The instance it concerns, or -1 (a regency record concerns none). */
  readonly cid: number;
  /** For a regency record, its regency; otherwise -1. */
  readonly installedRegency: number;
  /** For a synced record, its regency; otherwise -1. */
  readonly syncedRegency: number;
}

function factsOf(record: PersistRecord): RecordFacts {
  switch (record.kind) {
    case 'regency':
      return { cid: -1, installedRegency: record.regency, syncedRegency: -1 };
    case 'synced':
      return { cid: record.cid, installedRegency: -1, syncedRegency: record.regency };
    case 'write':
    case 'accept':
      return { cid: record.cid, installedRegency: -1, syncedRegency: -1 };
    case 'decision':
      return { cid: record.decision.cid, installedRegency: -1, syncedRegency: -1 };
  }
}

interface Segment {
  readonly firstIndex: number;
  readonly path: string;
  records: number;
  bytes: number;
  /** Highest cid any of its records concerns, or -1. */
  maxCid: number;
  /** Highest regency a regency record in it installed, or -1. */
  maxInstalledRegency: number;
  /** Its synced record of the highest regency (the later one on a tie), by byte offset. */
  latestSynced: { readonly regency: number; readonly offset: number } | null;
}

function noteRecord(segment: Segment, facts: RecordFacts, offset: number): void {
  segment.records += 1;
  segment.maxCid = Math.max(segment.maxCid, facts.cid);
  segment.maxInstalledRegency = Math.max(segment.maxInstalledRegency, facts.installedRegency);
  if (facts.syncedRegency >= 0 && facts.syncedRegency >= (segment.latestSynced?.regency ?? -1)) {
    segment.latestSynced = { regency: facts.syncedRegency, offset };
  }
}

// --- Reading segments ----------------------------------------------------------------------------------

/** Reads a file through one window of at least walReadChunkBytes, so recovery memory stays bounded. */
class SegmentReader {
  readonly handle: FileHandle;
  readonly size: number;
  private window: Buffer = Buffer.alloc(0);
  private windowStart = 0;

  constructor(handle: FileHandle, size: number) {
    this.handle = handle;
    this.size = size;
  }

  /** What was read last, and the file offset of its first byte. */
  get windowBytes(): Buffer {
    return this.window;
  }

  get windowOffset(): number {
    return this.windowStart;
  }

  /** Whether the window holds bytes [offset, offset + length), so that no read is needed. */
  holds(offset: number, length: number): boolean {
    return offset >= this.windowStart && offset + length <= this.windowStart + this.window.length;
  }

  /** Bytes [offset, offset + length), which the caller has checked lie within the file. */
  async bytes(offset: number, length: number): Promise<Buffer> {
    if (this.holds(offset, length)) return this.window.subarray(offset - this.windowStart, offset - this.windowStart + length);
    const readLength = Math.min(this.size - offset, Math.max(length, limits.walReadChunkBytes));
    const buffer = Buffer.allocUnsafe(readLength);
    let filled = 0;
    while (filled < readLength) {
      const { bytesRead } = await this.handle.read(buffer, filled, readLength - filled, offset + filled);
      if (bytesRead === 0) break;
      filled += bytesRead;
    }
    if (filled < length) throw new Error(`the file shrank while it was read (${filled} of ${length} bytes at offset ${offset})`);
    this.window = buffer.subarray(0, filled);
    this.windowStart = offset;
    return this.window.subarray(0, length);
  }
}

type FrameRead =
  | { readonly ok: true; readonly kind: number; readonly payload: Buffer; readonly frameBytes: number }
  | { readonly ok: false; readonly detail: string };

async function readFrame(reader: SegmentReader, offset: number): Promise<FrameRead> {
  const available = reader.size - offset;
  if (available < headerBytes) {
    return { ok: false, detail: `only ${available} of its ${headerBytes} header bytes are present` };
  }
  const header = await reader.bytes(offset, headerBytes);
  const payloadBytes = header.readUInt32BE(0);
  if (payloadBytes === 0 || payloadBytes > limits.walRecordBytesMax) {
    return { ok: false, detail: `its length field says ${payloadBytes} bytes, outside 1..${limits.walRecordBytesMax}` };
  }
  if (payloadBytes > available - headerBytes) {
    return { ok: false, detail: `its length field says ${payloadBytes} bytes but only ${available - headerBytes} follow` };
  }
  const frame = await reader.bytes(offset, headerBytes + payloadBytes);
  if (checksumOfFrame(frame) !== frame.readUInt32BE(4)) return { ok: false, detail: 'its checksum does not match' };
  return { ok: true, kind: frame[8] as number, payload: frame.subarray(headerBytes), frameBytes: headerBytes + payloadBytes };
}

/**
 * The offset of the first intact frame at or after `start`, or null. Tells a torn tail (nothing intact
 * after the damage) from damage in the middle. Candidates are filtered cheaply before the checksum: a
 * known kind, a length that fits, and a payload that starts with a msgpack fixmap, as every record we
 * write does (a record is an object of at most five keys).
 */
async function findIntactFrame(reader: SegmentReader, start: number): Promise<number | null> {
  for (let offset = start; offset + headerBytes < reader.size; offset += 1) {
    // Indexes into the reader's window instead of slicing it: this loop may visit every byte of a segment.
    if (!reader.holds(offset, headerBytes + 1)) await reader.bytes(offset, headerBytes + 1);
    const window = reader.windowBytes;
    const at = offset - reader.windowOffset;
    const kind = window[at + 8] as number;
    if (kind < kindCodeMin || kind > kindCodeMax) continue;
    const firstPayloadByte = window[at + headerBytes] as number;
    if ((firstPayloadByte & 0xf0) !== 0x80) continue;
    const payloadBytes = window.readUInt32BE(at);
    if (payloadBytes === 0 || payloadBytes > limits.walRecordBytesMax || offset + headerBytes + payloadBytes > reader.size) continue;
    const frame = await reader.bytes(offset, headerBytes + payloadBytes);
    if (checksumOfFrame(frame) === frame.readUInt32BE(4)) return offset;
  }
  return null;
}

interface SegmentScan {
  readonly validBytes: number;
  /** The first damaged frame: torn (framing or checksum) or invalid (intact frame, bad content). */
  readonly damage: { readonly offset: number; readonly index: number; readonly detail: string; readonly intact: boolean } | null;
}

async function scanSegment(reader: SegmentReader, segment: Segment, records: PersistRecord[] | null): Promise<SegmentScan> {
  let offset = 0;
  while (offset < reader.size) {
    const index = segment.firstIndex + segment.records;
    const frame = await readFrame(reader, offset);
    if (!frame.ok) return { validBytes: offset, damage: { offset, index, detail: frame.detail, intact: false } };
    const decoded = decodeRecord(frame.kind, frame.payload);
    if (!decoded.ok) return { validBytes: offset, damage: { offset, index, detail: decoded.detail, intact: true } };
    records?.push(decoded.record);
    noteRecord(segment, factsOf(decoded.record), offset);
    offset += frame.frameBytes;
  }
  segment.bytes = offset;
  return { validBytes: offset, damage: null };
}

function corrupt(dir: string, what: string, cause?: unknown): BftError {
  return new BftError(
    'BFT_ERR_WAL_CORRUPT',
    `${what}. Records the replica acknowledged are missing, so it must not start from this log: move the data ` +
      `directory ${dir} away (keep it for diagnosis) and restart the replica with an empty one; it then recovers ` +
      'its state by state transfer from its peers.',
    cause === undefined ? undefined : { cause },
  );
}

function ioError(what: string, cause: unknown): BftError {
  const code = (cause as { code?: unknown } | null)?.code;
  return new BftError('BFT_ERR_WAL_IO', `${what}${typeof code === 'string' ? ` (${code})` : ''}`, { cause });
}

// --- The log -------------------------------------------------------------------------------------------

interface Entry {
  readonly header: Buffer;
  readonly payload: Uint8Array;
  readonly facts: RecordFacts;
}

interface PendingAppend {
  readonly entries: readonly Entry[];
  readonly bytes: number;
  readonly resolve: () => void;
  readonly reject: (error: BftError) => void;
}

function encodeEntry(record: PersistRecord): Entry {
  const kind = walRecordKind[record.kind];
  invariant(kind !== undefined, `a persist record of kind ${String(record.kind)} has a log kind code`);
  const payload = packr.pack(record);
  invariant(
    payload.length > 0 && payload.length <= limits.walRecordBytesMax,
    `a ${record.kind} record of ${payload.length} bytes fits walRecordBytesMax (${limits.walRecordBytesMax})`,
  );
  const header = Buffer.allocUnsafe(headerBytes);
  header.writeUInt32BE(payload.length, 0);
  header[8] = kind;
  header.writeUInt32BE(frameChecksum(header.subarray(0, 4), header.subarray(8, 9), payload), 4);
  return { header, payload, facts: factsOf(record) };
}

export class WriteAheadLog implements Storage {
  readonly dir: string;
  readonly durability: Durability;
  private readonly segmentBytesMax: number;
  private readonly groupCommitMs: number;
  private readonly logger: Logger | undefined;

  /** Every segment on disk, oldest first; the last one is open for appending. */
  private readonly segments: Segment[];
  private handle: FileHandle | null;
  private recovered: PersistRecord[] | null;

  private readonly queue: PendingAppend[] = [];
  private queuedBytes = 0;
  private pumping: Promise<void> | null = null;
  /** Written since the last fdatasync. */
  private unsyncedRecords = 0;
  private syncTimer: NodeJS.Timeout | null = null;
  private syncWanted = false;
  private syncWaiters: Array<{ resolve: () => void; reject: (error: BftError) => void }> = [];
  /** Set by a failed write that could not be undone, or any failed sync: the log takes no more appends. */
  private failure: BftError | null = null;
  private closing: Promise<void> | null = null;
  private maintenance: Promise<unknown> = Promise.resolve();

  private counters = {
    appends: 0,
    recordsAppended: 0,
    bytesAppended: 0,
    fsyncs: 0,
    recordsSynced: 0,
    recordsRecovered: 0,
    truncatedTailBytes: 0,
    segmentsDeleted: 0,
  };

  private constructor(
    options: WriteAheadLogOptions,
    segments: Segment[],
    handle: FileHandle | null,
    recovered: PersistRecord[],
  ) {
    this.dir = options.dir;
    this.durability = options.durability;
    this.segmentBytesMax = options.segmentBytesMax ?? limits.walSegmentBytesDefault;
    this.groupCommitMs = options.groupCommitMs ?? limits.walGroupCommitMsDefault;
    this.logger = options.logger;
    this.segments = segments;
    this.handle = handle;
    this.recovered = recovered;
    this.counters.recordsRecovered = recovered.length;
  }

  /**
   * Opens (creating if needed) the log in `dir` and recovers it: a torn tail is cut off and reported; any
   * other damage refuses with BFT_ERR_WAL_CORRUPT. With durability "none" the directory is not touched.
   */
  static async open(options: WriteAheadLogOptions): Promise<WriteAheadLog> {
    checkOptions(options);
    if (options.durability === 'none') return new WriteAheadLog(options, [], null, []);
    const { dir } = options;
    let names: string[];
    try {
      await mkdir(dir, { recursive: true });
      names = await readdir(dir);
    } catch (cause) {
      throw ioError(`cannot open the write-ahead log directory ${dir}; check that it exists and is writable`, cause);
    }
    const indexes: number[] = [];
    for (const name of names) {
      const match = segmentNamePattern.exec(name);
      if (match === null) continue;
      const index = Number(match[1]);
      if (!Number.isSafeInteger(index)) throw corrupt(dir, `segment ${name} has a first index beyond 2^53`);
      indexes.push(index);
    }
    indexes.sort((a, b) => a - b);

    const records: PersistRecord[] = [];
    const segments: Segment[] = [];
    let handle: FileHandle | null = null;
    let truncatedTailBytes = 0;
    try {
      for (const [position, firstIndex] of indexes.entries()) {
        const isLast = position === indexes.length - 1;
        const path = join(dir, segmentFileName(firstIndex));
        const previous = segments.at(-1);
        if (previous !== undefined && previous.firstIndex + previous.records !== firstIndex) {
          throw corrupt(
            dir,
            `${path} starts at record ${firstIndex} but the segment before it ends at record ` +
              `${previous.firstIndex + previous.records}: a segment is missing or was cut short`,
          );
        }
        const segment: Segment = { firstIndex, path, records: 0, bytes: 0, maxCid: -1, maxInstalledRegency: -1, latestSynced: null };
        const file = await open(path, isLast ? 'r+' : 'r');
        try {
          const reader = new SegmentReader(file, (await file.stat()).size);
          const scan = await scanSegment(reader, segment, records);
          if (scan.damage !== null) {
            const { offset, index, detail, intact } = scan.damage;
            const where = `${path}, record ${index} at byte offset ${offset}`;
            if (intact) throw corrupt(dir, `${where}: the record is intact but ${detail}`);
            if (!isLast) throw corrupt(dir, `${where}: ${detail}, and later segments follow`);
            const next = await findIntactFrame(reader, offset + 1);
            if (next !== null) throw corrupt(dir, `${where}: ${detail}, and an intact record follows at byte offset ${next}`);
            // The torn remains of a write that never completed: it was never acknowledged in fsync mode.
            const cut = reader.size - offset;
            options.logger?.warn(
              { file: path, offset, bytes: cut, recordIndex: index, detail },
              'write-ahead log: cutting off a torn or corrupt tail',
            );
            await file.truncate(offset);
            await file.datasync();
            truncatedTailBytes += cut;
            segment.bytes = offset;
          }
        } catch (error) {
          await file.close().catch(() => undefined);
          throw error;
        }
        segments.push(segment);
        if (isLast) handle = file;
        else await file.close();
      }
      if (handle === null) {
        const first: Segment = {
          firstIndex: 0,
          path: join(dir, segmentFileName(0)),
          records: 0,
          bytes: 0,
          maxCid: -1,
          maxInstalledRegency: -1,
          latestSynced: null,
        };
        handle = await open(first.path, 'wx');
        await syncDirectory(dir);
        segments.push(first);
      }
    } catch (error) {
      await handle?.close().catch(() => undefined);
      if (error instanceof BftError) throw error;
      throw ioError(`cannot recover the write-ahead log in ${dir}; check the disk and the directory's permissions`, error);
    }
    const log = new WriteAheadLog(options, segments, handle, records);
    log.counters.truncatedTailBytes = truncatedTailBytes;
    return log;
  }

  /**
   * The records recovered at open, in order. They are handed over, not kept: a later call reads the
   * segments again (and then also sees records appended since open).
   */
  async load(): Promise<readonly PersistRecord[]> {
    if (this.durability === 'none') return [];
    const recovered = this.recovered;
    if (recovered !== null) {
      this.recovered = null;
      return recovered;
    }
    await this.idle();
    const records: PersistRecord[] = [];
    for (const segment of [...this.segments]) {
      const copy: Segment = { ...segment, records: 0, bytes: 0, maxCid: -1, maxInstalledRegency: -1, latestSynced: null };
      const file = await open(segment.path, 'r').catch((cause: unknown) => {
        throw ioError(`cannot read ${segment.path}`, cause);
      });
      try {
        const scan = await scanSegment(new SegmentReader(file, segment.bytes), copy, records);
        if (scan.damage !== null) {
          throw corrupt(this.dir, `${segment.path}, byte offset ${scan.damage.offset}: ${scan.damage.detail} (it was intact at open)`);
        }
      } finally {
        await file.close();
      }
    }
    return records;
  }

  /**
   * Makes `records` as durable as the log's durability says, in order after every earlier append.
   * Rejects with BFT_ERR_WAL_IO when a write or sync fails (the cause is the system error), with
   * BFT_ERR_OVERLOADED beyond the queue's bounds, and with BFT_ERR_CLOSED after close().
   */
  append(records: readonly PersistRecord[]): Promise<void> | void {
    if (this.closing !== null) return Promise.reject(new BftError('BFT_ERR_CLOSED', 'the write-ahead log is closed; open it again to append'));
    if (this.durability === 'none') {
      this.counters.appends += 1;
      this.counters.recordsAppended += records.length;
      return;
    }
    if (records.length === 0) return Promise.resolve();
    let entries: Entry[];
    try {
      entries = records.map(encodeEntry);
    } catch (error) {
      return Promise.reject(error);
    }
    return this.enqueue(entries);
  }

  /**
   * Deletes the oldest segments whose records all concern instances before `decidedCid` (the open
   * segment is never deleted). The latest installed regency and the latest synchronization are appended
   * again first, when they would otherwise go, so that the log alone still says what regency the replica
   * is in. Resolves with what was deleted.
   */
  truncateBefore(decidedCid: number): Promise<{ readonly segmentsDeleted: number; readonly bytesDeleted: number }> {
    const run = this.maintenance.then(() => this.deleteSegmentsBefore(decidedCid));
    this.maintenance = run.catch(() => undefined);
    return run;
  }

  stats(): WalStats {
    const c = this.counters;
    return {
      appends: c.appends,
      recordsAppended: c.recordsAppended,
      bytesAppended: c.bytesAppended,
      fsyncs: c.fsyncs,
      meanRecordsPerFsync: c.fsyncs === 0 ? 0 : c.recordsSynced / c.fsyncs,
      recordsRecovered: c.recordsRecovered,
      truncatedTailBytes: c.truncatedTailBytes,
      segments: this.segments.length,
      segmentsDeleted: c.segmentsDeleted,
      failed: this.failure !== null,
    };
  }

  /** Finishes queued appends, syncs what was written, and closes the file. Later appends are refused. */
  close(): Promise<void> {
    if (this.closing === null) this.closing = this.shutDown();
    return this.closing;
  }

  // --- Internals -------------------------------------------------------------------------------------

  private enqueue(entries: readonly Entry[]): Promise<void> {
    if (this.failure !== null) return Promise.reject(this.refusal());
    let bytes = 0;
    for (const entry of entries) bytes += entry.header.length + entry.payload.length;
    // One append is always taken whatever its size, or a Ready larger than the bound could never persist.
    if (this.queue.length > 0 && (this.queue.length >= limits.walQueuedAppendsMax || this.queuedBytes + bytes > limits.walQueuedBytesMax)) {
      return Promise.reject(
        new BftError(
          'BFT_ERR_OVERLOADED',
          `the write-ahead log has ${this.queue.length} appends (${this.queuedBytes} bytes) waiting; await earlier appends before adding more`,
        ),
      );
    }
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ entries, bytes, resolve, reject });
      this.queuedBytes += bytes;
      this.counters.appends += 1;
      this.pump();
    });
  }

  private refusal(): BftError {
    return new BftError(
      'BFT_ERR_WAL_IO',
      `the write-ahead log in ${this.dir} stopped after a failed write or sync and takes no more appends ` +
        '(a failed fsync cannot be retried safely); restart the replica so that it recovers from what is on disk',
      { cause: this.failure },
    );
  }

  /** One loop at a time drives the file: writes, syncs and rolls never overlap. */
  private pump(): void {
    if (this.pumping !== null) return;
    this.pumping = this.pumpLoop().finally(() => {
      this.pumping = null;
      // Work that arrived while the loop was finishing.
      if (this.failure === null && (this.queue.length > 0 || this.syncWanted)) this.pump();
    });
  }

  private async pumpLoop(): Promise<void> {
    while (this.failure === null) {
      if (this.syncWanted) {
        this.syncWanted = false;
        const waiters = this.syncWaiters;
        this.syncWaiters = [];
        try {
          if (this.unsyncedRecords > 0 || waiters.length > 0) await this.syncActive();
          for (const waiter of waiters) waiter.resolve();
        } catch (error) {
          for (const waiter of waiters) waiter.reject(error as BftError);
        }
      } else if (this.queue.length > 0) {
        await this.writeGroup(this.takeGroup());
      } else {
        return;
      }
    }
    this.rejectEverything();
  }

  private takeGroup(): PendingAppend[] {
    const group: PendingAppend[] = [];
    let bytes = 0;
    while (this.queue.length > 0) {
      const next = this.queue[0] as PendingAppend;
      if (group.length > 0 && bytes + next.bytes > limits.walWriteGroupBytesMax) break;
      this.queue.shift();
      this.queuedBytes -= next.bytes;
      bytes += next.bytes;
      group.push(next);
    }
    return group;
  }

  /** Writes a group of appends with as few writes as segment boundaries allow, then syncs once (fsync). */
  private async writeGroup(group: readonly PendingAppend[]): Promise<void> {
    try {
      let pending: Entry[] = [];
      let pendingBytes = 0;
      for (const append of group) {
        for (const entry of append.entries) {
          const frameBytes = entry.header.length + entry.payload.length;
          const active = this.activeSegment();
          const fill = active.bytes + pendingBytes;
          if (fill > 0 && fill + frameBytes > this.segmentBytesMax) {
            await this.writeEntries(pending, pendingBytes);
            pending = [];
            pendingBytes = 0;
            await this.roll();
          }
          pending.push(entry);
          pendingBytes += frameBytes;
        }
      }
      await this.writeEntries(pending, pendingBytes);
      if (this.durability === 'fsync') await this.syncActive();
      else this.armSyncTimer();
    } catch (error) {
      for (const append of group) append.reject(error as BftError);
      return;
    }
    for (const append of group) append.resolve();
  }

  private activeSegment(): Segment {
    const active = this.segments.at(-1);
    invariant(active !== undefined && this.handle !== null, 'an open log has an active segment');
    return active;
  }

  private async writeEntries(entries: readonly Entry[], bytes: number): Promise<void> {
    if (entries.length === 0) return;
    const active = this.activeSegment();
    const handle = this.handle as FileHandle;
    const position = active.bytes;
    const buffers: Uint8Array[] = [];
    for (const entry of entries) buffers.push(entry.header, entry.payload);
    let problem: unknown = null;
    try {
      const { bytesWritten } = await handle.writev(buffers, position);
      if (bytesWritten !== bytes) {
        problem = Object.assign(new Error(`short write: ${bytesWritten} of ${bytes} bytes (is the disk full?)`), { code: 'ENOSPC' });
      }
    } catch (error) {
      problem = error;
    }
    if (problem !== null) {
      // Cut off whatever part landed, so that the next write starts on a record boundary and no record of
      // a refused append can reappear at recovery. If even that fails, the file's tail is unknown: stop.
      try {
        await handle.truncate(position);
      } catch (truncateError) {
        this.fail(ioError(`cannot undo a failed write to ${active.path}`, truncateError));
      }
      throw ioError(`cannot write ${entries.length} records (${bytes} bytes) to ${active.path}; check free space and the disk`, problem);
    }
    let offset = position;
    for (const entry of entries) {
      noteRecord(active, entry.facts, offset);
      offset += entry.header.length + entry.payload.length;
    }
    active.bytes = offset;
    this.unsyncedRecords += entries.length;
    this.counters.recordsAppended += entries.length;
    this.counters.bytesAppended += bytes;
  }

  /** fdatasync of the active segment. A failure is final: the kernel may already have dropped the pages. */
  private async syncActive(): Promise<void> {
    const active = this.activeSegment();
    const records = this.unsyncedRecords;
    try {
      await (this.handle as FileHandle).datasync();
    } catch (error) {
      const failure = ioError(`fdatasync of ${active.path} failed; ${records} written records may not be durable`, error);
      this.fail(failure);
      throw failure;
    }
    this.counters.fsyncs += 1;
    this.counters.recordsSynced += records;
    this.unsyncedRecords -= records;
  }

  private armSyncTimer(): void {
    if (this.syncTimer !== null || this.unsyncedRecords === 0) return;
    this.syncTimer = setTimeout(() => {
      this.syncTimer = null;
      this.syncWanted = true;
      this.pump();
    }, this.groupCommitMs);
    // Written data is in the page cache: a process exit loses none of it, so the timer need not hold the process.
    this.syncTimer.unref();
  }

  /** Resolves when everything written so far is fdatasync'd. */
  private syncNow(): Promise<void> {
    if (this.failure !== null) return Promise.reject(this.refusal());
    return new Promise<void>((resolve, reject) => {
      this.syncWaiters.push({ resolve, reject });
      this.syncWanted = true;
      this.pump();
    });
  }

  /**
   * The old segment is synced before the new one exists, in every mode: otherwise a crash could leave a
   * torn segment followed by another, which recovery must treat as damage in the middle of the log.
   */
  private async roll(): Promise<void> {
    const old = this.activeSegment();
    await this.syncActive();
    const firstIndex = old.firstIndex + old.records;
    const path = join(this.dir, segmentFileName(firstIndex));
    try {
      await (this.handle as FileHandle).close();
      this.handle = null;
      this.handle = await open(path, 'wx');
      await syncDirectory(this.dir);
    } catch (error) {
      const failure = ioError(`cannot start segment ${path}`, error);
      this.fail(failure);
      throw failure;
    }
    this.segments.push({ firstIndex, path, records: 0, bytes: 0, maxCid: -1, maxInstalledRegency: -1, latestSynced: null });
  }

  private fail(failure: BftError): void {
    if (this.failure !== null) return;
    this.failure = failure;
    this.logger?.error({ err: failure, dir: this.dir }, 'write-ahead log stopped: it takes no more appends');
  }

  private rejectEverything(): void {
    const refusal = this.refusal();
    for (const append of this.queue.splice(0)) append.reject(refusal);
    this.queuedBytes = 0;
    for (const waiter of this.syncWaiters.splice(0)) waiter.reject(refusal);
    this.syncWanted = false;
  }

  /** Waits until no append is queued or being written. */
  private async idle(): Promise<void> {
    while (this.pumping !== null) await this.pumping;
  }

  private async shutDown(): Promise<void> {
    if (this.durability === 'none') return;
    await this.maintenance;
    await this.idle();
    if (this.syncTimer !== null) clearTimeout(this.syncTimer);
    this.syncTimer = null;
    const handle = this.handle;
    this.handle = null;
    if (handle === null) return;
    try {
      if (this.failure === null && this.unsyncedRecords > 0) {
        const records = this.unsyncedRecords;
        await handle.datasync();
        this.counters.fsyncs += 1;
        this.counters.recordsSynced += records;
        this.unsyncedRecords = 0;
      }
    } catch (error) {
      this.fail(ioError(`fdatasync of ${this.segments.at(-1)?.path ?? this.dir} failed at close`, error));
      throw this.refusal();
    } finally {
      await handle.close();
    }
  }

  private async deleteSegmentsBefore(decidedCid: number): Promise<{ segmentsDeleted: number; bytesDeleted: number }> {
    if (this.closing !== null) throw new BftError('BFT_ERR_CLOSED', 'the write-ahead log is closed; open it again to truncate');
    if (this.durability === 'none') return { segmentsDeleted: 0, bytesDeleted: 0 };
    let doomed = 0;
    while (doomed < this.segments.length - 1 && (this.segments[doomed] as Segment).maxCid < decidedCid) doomed += 1;
    if (doomed === 0) return { segmentsDeleted: 0, bytesDeleted: 0 };
    const deleted = this.segments.slice(0, doomed);
    const kept = this.segments.slice(doomed);

    const carried: PersistRecord[] = [];
    const installed = (segments: readonly Segment[]) => Math.max(-1, ...segments.map((s) => s.maxInstalledRegency));
    const deletedRegency = installed(deleted);
    if (deletedRegency > installed(kept)) carried.push({ kind: 'regency', regency: deletedRegency });
    const latestSynced = (segments: readonly Segment[]) => {
      let best: { segment: Segment; regency: number; offset: number } | null = null;
      for (const segment of segments) {
        const synced = segment.latestSynced;
        if (synced !== null && synced.regency >= (best?.regency ?? -1)) best = { segment, ...synced };
      }
      return best;
    };
    const deletedSynced = latestSynced(deleted);
    if (deletedSynced !== null && deletedSynced.regency > (latestSynced(kept)?.regency ?? -1)) {
      carried.push(await this.readRecordAt(deletedSynced.segment, deletedSynced.offset));
    }
    if (carried.length > 0) {
      // Durable before any segment that held them goes, whatever the durability mode.
      await this.enqueue(carried.map(encodeEntry));
      if (this.durability !== 'fsync') await this.syncNow();
    }

    let bytesDeleted = 0;
    let segmentsDeleted = 0;
    try {
      // Oldest first, so that a crash part way leaves a contiguous log.
      for (const segment of deleted) {
        await unlink(segment.path);
        this.segments.shift();
        segmentsDeleted += 1;
        bytesDeleted += segment.bytes;
      }
      await syncDirectory(this.dir);
    } catch (error) {
      throw ioError(`cannot delete old segments of the write-ahead log in ${this.dir}`, error);
    } finally {
      this.counters.segmentsDeleted += segmentsDeleted;
    }
    this.logger?.debug({ dir: this.dir, decidedCid, segmentsDeleted, bytesDeleted }, 'write-ahead log: deleted old segments');
    return { segmentsDeleted, bytesDeleted };
  }

  private async readRecordAt(segment: Segment, offset: number): Promise<PersistRecord> {
    let file: FileHandle;
    try {
      file = await open(segment.path, 'r');
    } catch (cause) {
      throw ioError(`cannot read ${segment.path}`, cause);
    }
    try {
      const frame = await readFrame(new SegmentReader(file, segment.bytes), offset);
      const decoded = frame.ok ? decodeRecord(frame.kind, frame.payload) : frame;
      if (!decoded.ok) throw corrupt(this.dir, `${segment.path}, byte offset ${offset}: ${decoded.detail} (it was intact when written)`);
      return decoded.record;
    } finally {
      await file.close();
    }
  }
}

function checkOptions(options: WriteAheadLogOptions): void {
  const { durability, segmentBytesMax, groupCommitMs } = options;
  if (durability !== 'fsync' && durability !== 'batch' && durability !== 'none') {
    throw new BftError('BFT_ERR_CONFIG_INVALID', `durability must be "fsync", "batch" or "none", not ${JSON.stringify(durability)}`);
  }
  if (
    segmentBytesMax !== undefined &&
    !(Number.isSafeInteger(segmentBytesMax) && segmentBytesMax >= limits.walSegmentBytesMin && segmentBytesMax <= limits.walSegmentBytesMax)
  ) {
    throw new BftError(
      'BFT_ERR_CONFIG_INVALID',
      `segmentBytesMax must be an integer in ${limits.walSegmentBytesMin}..${limits.walSegmentBytesMax}, not ${segmentBytesMax}`,
    );
  }
  if (groupCommitMs !== undefined && !(Number.isFinite(groupCommitMs) && groupCommitMs >= 0 && groupCommitMs <= limits.walGroupCommitMsMax)) {
    throw new BftError('BFT_ERR_CONFIG_INVALID', `groupCommitMs must be in 0..${limits.walGroupCommitMsMax}, not ${groupCommitMs}`);
  }
}

