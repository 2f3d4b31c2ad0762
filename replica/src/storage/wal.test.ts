import { mkdtemp, open, readdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { limits } from '../constants.ts';
import type { PersistRecord } from '../core/ready.ts';
import { BftError } from '../errors.ts';
import { encodeBatch } from '../protocol/codec.ts';
import { segmentFileName, WriteAheadLog, type WriteAheadLogOptions } from './wal.ts';
import { mulberry32 } from '../../test/helpers.ts';

// --- Helpers -------------------------------------------------------------------------------------------

const directories: string[] = [];

async function freshDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'bftkube-wal-'));
  directories.push(dir);
  return dir;
}

afterEach(async () => {
  vi.restoreAllMocks();
  for (const dir of directories.splice(0)) await rm(dir, { recursive: true, force: true });
});

function batch(tag: number, operationBytes = 16): Uint8Array {
  const operation = new Uint8Array(operationBytes).map((_, i) => (tag * 31 + i) & 0xff);
  return encodeBatch({ requests: [{ clientId: `client-${tag % 7}`, seq: tag + 1, ordered: true, operation, signature: null }] });
}

function signature(tag: number): Uint8Array {
  return new Uint8Array(64).map((_, i) => (tag + i * 7) & 0xff);
}

function decision(cid: number, regency = 0, operationBytes = 16): PersistRecord {
  return {
    kind: 'decision',
    decision: {
      cid,
      regency,
      batch: batch(cid, operationBytes),
      votes: [0, 1, 2].map((replica) => ({ replica, signature: signature(cid * 3 + replica) })),
    },
  };
}

function everyKind(cid: number): PersistRecord[] {
  return [
    { kind: 'regency', regency: cid + 1 },
    { kind: 'synced', regency: cid + 1, cid, batch: batch(cid + 100) },
    { kind: 'synced', regency: cid + 1, cid, batch: new Uint8Array(0) },
    { kind: 'write', cid, regency: cid + 1, batch: batch(cid + 200) },
    { kind: 'accept', cid, regency: cid + 1, batch: batch(cid + 300) },
    decision(cid, cid + 1),
  ];
}

/** Records as plain data (Buffers become plain Uint8Arrays), so decoded and written ones compare equal. */
function plain(value: unknown): unknown {
  if (value instanceof Uint8Array) return new Uint8Array(value);
  if (Array.isArray(value)) return value.map(plain);
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([key, field]) => [key, plain(field)]));
  }
  return value;
}

async function openLog(dir: string, options: Partial<WriteAheadLogOptions> = {}): Promise<WriteAheadLog> {
  return WriteAheadLog.open({ dir, durability: 'fsync', ...options });
}

async function writeLog(dir: string, records: readonly PersistRecord[], options: Partial<WriteAheadLogOptions> = {}): Promise<void> {
  const log = await openLog(dir, options);
  for (const record of records) await log.append([record]);
  await log.close();
}

async function loadLog(dir: string, options: Partial<WriteAheadLogOptions> = {}): Promise<{ records: unknown; log: WriteAheadLog }> {
  const log = await openLog(dir, options);
  const records = plain(await log.load());
  return { records, log };
}

/** Opens, loads and closes: the records as plain data. */
async function readBack(dir: string, options: Partial<WriteAheadLogOptions> = {}): Promise<unknown> {
  const { records, log } = await loadLog(dir, options);
  await log.close();
  return records;
}

/** Byte offsets at which each record of a segment file starts. */
function frameOffsets(bytes: Uint8Array): number[] {
  const view = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const offsets: number[] = [];
  for (let offset = 0; offset < view.length; offset += 9 + view.readUInt32BE(offset)) offsets.push(offset);
  return offsets;
}

async function segmentFiles(dir: string): Promise<string[]> {
  return (await readdir(dir)).filter((name) => name.startsWith('wal-')).sort();
}

function capturingLogger(): { logger: pino.Logger; lines: string[] } {
  const lines: string[] = [];
  return { logger: pino({ level: 'debug' }, { write: (line: string) => void lines.push(line) }), lines };
}

async function expectCorrupt(promise: Promise<unknown>): Promise<BftError> {
  const error = await promise.then(
    () => null,
    (thrown: unknown) => thrown,
  );
  expect(error).toBeInstanceOf(BftError);
  expect((error as BftError).code).toBe('BFT_ERR_WAL_CORRUPT');
  return error as BftError;
}

/** The prototype of node:fs/promises FileHandle, to wrap its real methods with spies. */
let fileHandlePrototype: FileHandle;
beforeAll(async () => {
  const dir = await mkdtemp(join(tmpdir(), 'bftkube-wal-probe-'));
  const handle = await open(join(dir, 'probe'), 'w');
  fileHandlePrototype = Object.getPrototypeOf(handle) as FileHandle;
  await handle.close();
  await rm(dir, { recursive: true, force: true });
});

// --- Round trip ----------------------------------------------------------------------------------------

describe('WriteAheadLog round trip', () => {
  it('returns every record kind, field for field, after close and reopen', async () => {
    const dir = await freshDir();
    const written = [...everyKind(0), ...everyKind(1)];
    const log = await openLog(dir);
    await log.append(written.slice(0, 6));
    await log.append(written.slice(6));
    expect(log.stats()).toMatchObject({ appends: 2, recordsAppended: 12 });
    await log.close();

    const { records, log: reopened } = await loadLog(dir);
    expect(records).toEqual(plain(written));
    expect(reopened.stats()).toMatchObject({ recordsRecovered: 12, truncatedTailBytes: 0 });
    await reopened.close();
  });

  it('continues after the recovered records when reopened, in every mode that writes', async () => {
    for (const durability of ['fsync', 'batch'] as const) {
      const dir = await freshDir();
      await writeLog(dir, [decision(0), decision(1)], { durability });
      const log = await openLog(dir, { durability });
      expect(plain(await log.load())).toEqual(plain([decision(0), decision(1)]));
      await log.append([decision(2)]);
      await log.close();
      expect(await readBack(dir, { durability })).toEqual(plain([decision(0), decision(1), decision(2)]));
    }
  });

  it('load() hands the recovered records over once, then reads the segments again from disk', async () => {
    const dir = await freshDir();
    await writeLog(dir, [decision(0)]);
    const log = await openLog(dir);
    expect(plain(await log.load())).toEqual(plain([decision(0)]));
    await log.append([decision(1)]);
    expect(plain(await log.load())).toEqual(plain([decision(0), decision(1)]));
    await log.close();
  });

  it('refuses appends after close with BFT_ERR_CLOSED', async () => {
    const log = await openLog(await freshDir());
    await log.close();
    await expect(log.append([decision(0)])).rejects.toMatchObject({ code: 'BFT_ERR_CLOSED' });
  });

  it('refuses options outside the limits with BFT_ERR_CONFIG_INVALID', async () => {
    const dir = await freshDir();
    await expect(openLog(dir, { segmentBytesMax: limits.walSegmentBytesMin - 1 })).rejects.toMatchObject({ code: 'BFT_ERR_CONFIG_INVALID' });
    await expect(openLog(dir, { groupCommitMs: limits.walGroupCommitMsMax + 1 })).rejects.toMatchObject({ code: 'BFT_ERR_CONFIG_INVALID' });
  });
});

// --- Durability modes ----------------------------------------------------------------------------------

describe('WriteAheadLog durability', () => {
  it('fsync: an append resolves only after the fdatasync that covers it has completed', async () => {
    const events: string[] = [];
    const realDatasync = fileHandlePrototype.datasync;
    vi.spyOn(fileHandlePrototype, 'datasync').mockImplementation(async function (this: FileHandle) {
      events.push('datasync started');
      await realDatasync.call(this);
      events.push('datasync done');
    });
    const log = await openLog(await freshDir());
    await Promise.resolve(log.append([decision(0)])).then(() => events.push('append resolved'));
    expect(events).toEqual(['datasync started', 'datasync done', 'append resolved']);
    expect(log.stats().fsyncs).toBe(1);
    await log.close();
  });

  it('fsync: 100 concurrent appends share far fewer fdatasyncs (group commit)', async () => {
    const dir = await freshDir();
    const log = await openLog(dir);
    const written = Array.from({ length: 100 }, (_, cid) => decision(cid));
    await Promise.all(written.map((record) => log.append([record])));
    const stats = log.stats();
    expect(stats.recordsAppended).toBe(100);
    expect(stats.fsyncs).toBeGreaterThan(0);
    expect(stats.fsyncs).toBeLessThanOrEqual(10);
    expect(stats.meanRecordsPerFsync).toBeGreaterThanOrEqual(10);
    await log.close();
    expect(await readBack(dir)).toEqual(plain(written));
  });

  it('batch: an append resolves after the write, before any fdatasync; the timer then syncs it', async () => {
    const events: string[] = [];
    const realDatasync = fileHandlePrototype.datasync;
    vi.spyOn(fileHandlePrototype, 'datasync').mockImplementation(async function (this: FileHandle) {
      events.push('datasync');
      await realDatasync.call(this);
    });
    const dir = await freshDir();
    const log = await openLog(dir, { durability: 'batch', groupCommitMs: 20 });
    await log.append([decision(0)]);
    events.push('append resolved');
    await log.append([decision(1)]);
    events.push('append resolved');
    expect(events).toEqual(['append resolved', 'append resolved']);
    // Written (visible to another reader) before it is synced.
    expect((await stat(join(dir, segmentFileName(0)))).size).toBeGreaterThan(0);
    await vi.waitFor(() => expect(log.stats().fsyncs).toBe(1), { timeout: 10_000, interval: 5 });
    expect(events).toEqual(['append resolved', 'append resolved', 'datasync']);
    expect(log.stats().meanRecordsPerFsync).toBe(2);
    await log.close();
  });

  it('none: writes nothing, creates nothing and loads nothing, even over an existing log', async () => {
    const dir = await freshDir();
    await writeLog(dir, [decision(0)]);
    const before = await readFile(join(dir, segmentFileName(0)));
    const log = await openLog(dir, { durability: 'none' });
    expect(await log.load()).toEqual([]);
    await log.append([decision(1)]);
    await log.close();
    expect(await segmentFiles(dir)).toEqual([segmentFileName(0)]);
    expect(await readFile(join(dir, segmentFileName(0)))).toEqual(before);

    const absent = join(dir, 'never-created');
    const volatile = await openLog(absent, { durability: 'none' });
    await volatile.append([decision(0)]);
    await volatile.close();
    await expect(stat(absent)).rejects.toMatchObject({ code: 'ENOENT' });
  });
});

// --- Failures ------------------------------------------------------------------------------------------

describe('WriteAheadLog failures', () => {
  it('a failed fdatasync rejects the append with its cause, and the log refuses every later append', async () => {
    const injected = Object.assign(new Error('input/output error'), { code: 'EIO' });
    const spy = vi.spyOn(fileHandlePrototype, 'datasync').mockRejectedValueOnce(injected);
    const log = await openLog(await freshDir());
    const error = await Promise.resolve(log.append([decision(0)])).then(() => null, (thrown: unknown) => thrown);
    expect(error).toBeInstanceOf(BftError);
    expect(error).toMatchObject({ code: 'BFT_ERR_WAL_IO' });
    expect((error as BftError).cause).toBe(injected);
    spy.mockRestore();
    // The next sync would succeed, but a failed fsync is not retried (the kernel may have dropped the pages).
    await expect(log.append([decision(1)])).rejects.toMatchObject({ code: 'BFT_ERR_WAL_IO' });
    expect(log.stats().failed).toBe(true);
    await log.close();
  });

  it('a full disk rejects the append with BftError whose cause is ENOSPC', async () => {
    const dir = await freshDir();
    // A segment that is the kernel's always-full device: every write fails with ENOSPC, for real.
    await symlink('/dev/full', join(dir, segmentFileName(0)));
    const log = await openLog(dir);
    const error = await Promise.resolve(log.append([decision(0)])).then(() => null, (thrown: unknown) => thrown);
    expect(error).toBeInstanceOf(BftError);
    expect(error).toMatchObject({ code: 'BFT_ERR_WAL_IO', cause: { code: 'ENOSPC' } });
    expect((error as BftError).message).toContain('check free space');
    await log.close().catch(() => undefined);
  });

  it('refuses appends beyond walQueuedAppendsMax with BFT_ERR_OVERLOADED and keeps every accepted one', async () => {
    const dir = await freshDir();
    const log = await openLog(dir);
    const attempts = limits.walQueuedAppendsMax + 200;
    const outcomes = await Promise.allSettled(
      Array.from({ length: attempts }, (_, i) => Promise.resolve(log.append([{ kind: 'regency', regency: i }]))),
    );
    const refused = outcomes.filter((outcome) => outcome.status === 'rejected');
    expect(refused.length).toBeGreaterThan(0);
    for (const outcome of refused) expect(outcome.reason).toMatchObject({ code: 'BFT_ERR_OVERLOADED' });
    await log.close();
    const accepted = outcomes.flatMap((outcome, i) => (outcome.status === 'fulfilled' ? [{ kind: 'regency', regency: i }] : []));
    expect(await readBack(dir)).toEqual(accepted);
  });
});

// --- Recovery ------------------------------------------------------------------------------------------

describe('WriteAheadLog recovery', () => {
  const written = [decision(0), { kind: 'regency', regency: 3 } as const, decision(1, 3, 40)];

  async function writtenSegment(): Promise<Buffer> {
    const dir = await freshDir();
    await writeLog(dir, written);
    return readFile(join(dir, segmentFileName(0)));
  }

  it('cuts off a torn last record at every possible cut point, reports it, and appends after it', async () => {
    const bytes = await writtenSegment();
    const lastStart = frameOffsets(bytes).at(-1) as number;
    for (let cut = lastStart + 1; cut < bytes.length; cut += 1) {
      const dir = await freshDir();
      await writeFile(join(dir, segmentFileName(0)), bytes.subarray(0, cut));
      const { records, log } = await loadLog(dir);
      expect(records, `cut at ${cut}`).toEqual(plain(written.slice(0, 2)));
      expect(log.stats().truncatedTailBytes).toBe(cut - lastStart);
      expect((await stat(join(dir, segmentFileName(0)))).size).toBe(lastStart);
      await log.append([decision(9)]);
      await log.close();
      expect(await readBack(dir)).toEqual(plain([...written.slice(0, 2), decision(9)]));
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('cuts off the last record when any one of its bytes has a flipped bit, and logs file and offset', async () => {
    const bytes = await writtenSegment();
    const lastStart = frameOffsets(bytes).at(-1) as number;
    for (let position = lastStart; position < bytes.length; position += 1) {
      const damaged = Buffer.from(bytes);
      damaged[position] = (damaged[position] as number) ^ (1 << (position % 8));
      const dir = await freshDir();
      const file = join(dir, segmentFileName(0));
      await writeFile(file, damaged);
      const { logger, lines } = capturingLogger();
      const { records, log } = await loadLog(dir, { logger });
      expect(records, `bit flipped at byte ${position}`).toEqual(plain(written.slice(0, 2)));
      expect(log.stats().truncatedTailBytes).toBe(bytes.length - lastStart);
      const report = lines.map((line) => JSON.parse(line) as Record<string, unknown>).find((line) => line.level === 40);
      expect(report).toMatchObject({ file, offset: lastStart, bytes: bytes.length - lastStart });
      await log.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('refuses a flipped bit in a middle record with BFT_ERR_WAL_CORRUPT naming file, offset and the way out', async () => {
    const bytes = await writtenSegment();
    const middleStart = frameOffsets(bytes)[1] as number;
    // One in the length field, one in the checksum, one in the payload.
    for (const position of [middleStart + 2, middleStart + 5, middleStart + 12]) {
      const damaged = Buffer.from(bytes);
      damaged[position] = (damaged[position] as number) ^ 0x10;
      const dir = await freshDir();
      const file = join(dir, segmentFileName(0));
      await writeFile(file, damaged);
      const error = await expectCorrupt(openLog(dir));
      expect(error.message).toContain(file);
      expect(error.message).toContain(`byte offset ${middleStart}`);
      expect(error.message).toContain('move the data directory');
      expect(error.message).toContain('state transfer');
      // Refusing must not have modified the evidence.
      expect(await readFile(file)).toEqual(damaged);
    }
  });

  it('refuses an intact frame whose content is not a valid record', async () => {
    const dir = await freshDir();
    // A frame with a correct checksum around a payload that is not a record: not a torn write, so refused.
    const { crc32 } = await import('node:zlib');
    const payload = Buffer.from([0x81, 0xa4, ...Buffer.from('kind'), 0xa3, ...Buffer.from('bad')]);
    const header = Buffer.alloc(9);
    header.writeUInt32BE(payload.length, 0);
    header[8] = 1;
    header.writeUInt32BE(crc32(Buffer.concat([header.subarray(8, 9), payload]), crc32(header.subarray(0, 4))), 4);
    await writeFile(join(dir, segmentFileName(0)), Buffer.concat([header, payload]));
    const error = await expectCorrupt(openLog(dir));
    expect(error.message).toContain('intact');
  });
});

// --- Segments ------------------------------------------------------------------------------------------

describe('WriteAheadLog segments', () => {
  const segmentBytesMax = limits.walSegmentBytesMin;

  it('rolls segments at segmentBytesMax, names them by first record index, and reads them back in order', async () => {
    const dir = await freshDir();
    const written = Array.from({ length: 60 }, (_, cid) => decision(cid, 0, 200));
    const log = await openLog(dir, { segmentBytesMax });
    for (const record of written) await log.append([record]);
    await log.close();

    const files = await segmentFiles(dir);
    expect(files.length).toBeGreaterThan(3);
    let nextIndex = 0;
    for (const name of files) {
      expect(name).toBe(segmentFileName(nextIndex));
      const bytes = await readFile(join(dir, name));
      expect(bytes.length).toBeLessThanOrEqual(segmentBytesMax);
      nextIndex += frameOffsets(bytes).length;
    }
    expect(nextIndex).toBe(60);
    expect(await readBack(dir, { segmentBytesMax })).toEqual(plain(written));
  });

  it('truncateBefore deletes only whole segments before the cid, and keeps the regency and synchronization they held', async () => {
    const dir = await freshDir();
    const synced: PersistRecord = { kind: 'synced', regency: 5, cid: 1, batch: batch(77) };
    const written: PersistRecord[] = [
      { kind: 'regency', regency: 5 },
      synced,
      ...Array.from({ length: 60 }, (_, cid) => decision(cid, 5, 200)),
    ];
    const log = await openLog(dir, { segmentBytesMax });
    for (const record of written) await log.append([record]);
    const segmentsBefore = (await segmentFiles(dir)).length;

    const result = await log.truncateBefore(30);
    expect(result.segmentsDeleted).toBeGreaterThan(0);
    expect(log.stats().segmentsDeleted).toBe(result.segmentsDeleted);
    const files = await segmentFiles(dir);
    expect(files.length).toBeLessThanOrEqual(segmentsBefore - result.segmentsDeleted + 1);
    await log.close();

    const loaded = (await readBack(dir, { segmentBytesMax })) as PersistRecord[];
    const cids = loaded.flatMap((record) => (record.kind === 'decision' ? [record.decision.cid] : []));
    // Every instance from 30 on is kept; the first kept segment still reaches 30 or beyond.
    expect(cids).toEqual(Array.from({ length: 60 - (cids[0] as number) }, (_, i) => (cids[0] as number) + i));
    expect(cids[0]).toBeGreaterThan(0);
    expect(cids[0]).toBeLessThanOrEqual(30);
    const firstFile = await readFile(join(dir, files[0] as string));
    expect(cids[0] as number).toBeGreaterThan(30 - frameOffsets(firstFile).length);
    // The regency and synchronization records were in deleted segments, so they were appended again.
    expect(loaded).toContainEqual({ kind: 'regency', regency: 5 });
    expect(loaded).toContainEqual(plain(synced));
  });

  it('truncateBefore never deletes the segment being appended to', async () => {
    const dir = await freshDir();
    const log = await openLog(dir, { segmentBytesMax });
    for (let cid = 0; cid < 30; cid += 1) await log.append([decision(cid, 0, 200)]);
    await log.truncateBefore(1_000);
    expect(await segmentFiles(dir)).toHaveLength(1);
    await log.append([decision(30)]);
    await log.close();
    const records = (await readBack(dir, { segmentBytesMax })) as PersistRecord[];
    expect(records.at(-1)).toEqual(plain(decision(30)));
  });

  it('refuses damage at the tail of a segment that is not the last', async () => {
    const dir = await freshDir();
    await writeLog(dir, Array.from({ length: 30 }, (_, cid) => decision(cid, 0, 200)), { segmentBytesMax });
    const first = join(dir, segmentFileName(0));
    const bytes = await readFile(first);
    await writeFile(first, bytes.subarray(0, bytes.length - 3));
    const error = await expectCorrupt(openLog(dir, { segmentBytesMax }));
    expect(error.message).toContain(first);
  });

  it('refuses a log with a segment missing in the middle', async () => {
    const dir = await freshDir();
    await writeLog(dir, Array.from({ length: 40 }, (_, cid) => decision(cid, 0, 200)), { segmentBytesMax });
    const files = await segmentFiles(dir);
    expect(files.length).toBeGreaterThan(2);
    await rm(join(dir, files[1] as string));
    const error = await expectCorrupt(openLog(dir, { segmentBytesMax }));
    expect(error.message).toContain('missing');
  });
});

// --- Fuzz ----------------------------------------------------------------------------------------------

describe('WriteAheadLog fuzz', () => {
  it('cut or corrupted at random offsets, it either refuses with BftError or returns a prefix of what was written', async () => {
    const segmentBytesMax = limits.walSegmentBytesMin;
    const source = await freshDir();
    const written: PersistRecord[] = [];
    for (let cid = 0; cid < 24; cid += 1) written.push(...everyKind(cid).slice(cid % 6, cid % 6 + 2));
    await writeLog(source, written, { segmentBytesMax });
    const names = await segmentFiles(source);
    const files = await Promise.all(names.map((name) => readFile(join(source, name))));
    expect(files.length).toBeGreaterThan(1);
    const expected = plain(written) as unknown[];

    let refused = 0;
    let truncated = 0;
    for (let seed = 1; seed <= 300; seed += 1) {
      const random = mulberry32(seed);
      const damaged: Buffer[] = files.map((bytes) => Buffer.from(bytes));
      const victim = Math.floor(random() * damaged.length);
      let bytes: Buffer = damaged[victim] as Buffer;
      const at = Math.floor(random() * bytes.length);
      const operation = Math.floor(random() * 4);
      if (operation === 0) bytes = bytes.subarray(0, at);
      else if (operation === 1) bytes[at] = (bytes[at] as number) ^ (1 << Math.floor(random() * 8));
      else if (operation === 2) bytes.fill(0, at, Math.min(bytes.length, at + 1 + Math.floor(random() * 64)));
      else for (let i = at; i < Math.min(bytes.length, at + 1 + Math.floor(random() * 16)); i += 1) bytes[i] = Math.floor(random() * 256);
      damaged[victim] = bytes;

      const dir = await freshDir();
      await Promise.all(names.map((name, i) => writeFile(join(dir, name), damaged[i] as Buffer)));
      let loaded: unknown[];
      let log: WriteAheadLog;
      try {
        log = await openLog(dir, { segmentBytesMax });
        loaded = plain(await log.load()) as unknown[];
      } catch (error) {
        expect(error, `seed ${seed}`).toBeInstanceOf(BftError);
        expect((error as BftError).code, `seed ${seed}`).toBe('BFT_ERR_WAL_CORRUPT');
        refused += 1;
        await rm(dir, { recursive: true, force: true });
        continue;
      }
      expect(loaded, `seed ${seed}`).toEqual(expected.slice(0, loaded.length));
      if (loaded.length < expected.length) truncated += 1;
      await log.append([decision(99)]);
      await log.close();
      expect(await readBack(dir, { segmentBytesMax }), `seed ${seed}`).toEqual([...loaded, plain(decision(99))]);
      await rm(dir, { recursive: true, force: true });
    }
    // Both outcomes must actually occur, or the fuzz proves nothing.
    expect(refused).toBeGreaterThan(10);
    expect(truncated).toBeGreaterThan(10);
  });
});
