// Measures appends/s and fdatasyncs/s of the write-ahead log with durability "fsync" and ~1 KiB records,
// for one appender (each append awaited before the next) and for 50 concurrent appenders.
// Run: /work/main/node_modules/.bin/node replica/src/storage/wal.bench.ts [seconds] [directory]
// The directory defaults to a fresh one under os.tmpdir(), removed afterwards. Prints JSON; asserts nothing.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { PersistRecord } from '../core/ready.ts';
import { encodeBatch } from '../protocol/codec.ts';
import { WriteAheadLog } from './wal.ts';

const seconds = Number(process.argv[2] ?? 5);
const parent = process.argv[3] ?? tmpdir();
const recordBytesTarget = 1024;

// A WRITE record whose batch holds one request: the operation is sized so the framed record is ~1 KiB.
const operation = new Uint8Array(recordBytesTarget - 90).fill(7);
const record: PersistRecord = {
  kind: 'write',
  cid: 1,
  regency: 0,
  batch: encodeBatch({ requests: [{ clientId: 'bench', seq: 1, ordered: true, operation, signature: null }] }),
};

async function run(appenders: number): Promise<Record<string, number | string>> {
  const dir = await mkdtemp(join(parent, 'bftkube-wal-bench-'));
  const log = await WriteAheadLog.open({ dir, durability: 'fsync' });
  const startedMs = performance.now();
  const deadlineMs = startedMs + seconds * 1000;
  await Promise.all(
    Array.from({ length: appenders }, async () => {
      while (performance.now() < deadlineMs) await log.append([record]);
    }),
  );
  const elapsedS = (performance.now() - startedMs) / 1000;
  const stats = log.stats();
  await log.close();
  await rm(dir, { recursive: true, force: true });
  return {
    appenders,
    directory: parent,
    recordBytes: Math.round(stats.bytesAppended / stats.recordsAppended),
    appendsPerS: Math.round(stats.appends / elapsedS),
    fsyncsPerS: Math.round(stats.fsyncs / elapsedS),
    meanRecordsPerFsync: Number(stats.meanRecordsPerFsync.toFixed(2)),
    seconds: Number(elapsedS.toFixed(2)),
  };
}

const results = [await run(1), await run(50)];
console.log(JSON.stringify(results, null, 2));
