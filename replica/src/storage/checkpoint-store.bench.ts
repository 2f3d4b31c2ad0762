// Measures the checkpoint store's throughput on this disk: write() of a state streamed from a generator
// (hash + write + fsync + publish), install() of that checkpoint into a second store fetching its chunks
// from the first with readChunk (verify on read, verify on fetch, write, fsync, publish), and readPart().
// Run: /work/main/node_modules/.bin/node replica/src/storage/checkpoint-store.bench.ts [MiB] [parallel] [directory]
// The directory defaults to a fresh one under os.tmpdir(), removed afterwards. Prints JSON; asserts nothing.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CheckpointStore } from './checkpoint-store.ts';

const mebibytes = Number(process.argv[2] ?? 1024);
const parallel = Number(process.argv[3] ?? 4);
const parent = process.argv[4] ?? tmpdir();
const pieceBytes = 256 * 1024;
const stateBytes = mebibytes * 1024 * 1024;

const dir = await mkdtemp(join(parent, 'bftkube-checkpoint-bench-'));
try {
  const source = await CheckpointStore.open({ dir: join(dir, 'source') });
  const target = await CheckpointStore.open({ dir: join(dir, 'target') });
  const piece = new Uint8Array(pieceBytes);
  async function* generate(): AsyncGenerator<Uint8Array> {
    for (let index = 0; index < stateBytes / pieceBytes; index++) {
      piece.fill(index & 0xff);
      yield piece;
    }
  }
  const rssBefore = process.memoryUsage().rss;
  let startedMs = performance.now();
  const manifest = await source.write(1, 0, [{ name: 'service', source: generate() }], 0);
  const writeS = (performance.now() - startedMs) / 1000;

  startedMs = performance.now();
  await target.install(manifest, (index) => source.readChunk(manifest.cid, index), { parallel });
  const installS = (performance.now() - startedMs) / 1000;

  startedMs = performance.now();
  let readBytes = 0;
  for await (const bytes of target.readPart(manifest.cid, 'service')) readBytes += bytes.length;
  const readS = (performance.now() - startedMs) / 1000;

  const mib = stateBytes / 2 ** 20;
  console.log(
    JSON.stringify({
      directory: parent,
      stateMiB: mib,
      chunkBytes: manifest.chunkBytes,
      parallel,
      writeMiBPerS: Math.round(mib / writeS),
      installMiBPerS: Math.round(mib / installS),
      readPartMiBPerS: Math.round(readBytes / 2 ** 20 / readS),
      seconds: { write: Number(writeS.toFixed(2)), install: Number(installS.toFixed(2)), readPart: Number(readS.toFixed(2)) },
      rssGrowthMiB: Number(((process.memoryUsage().rss - rssBefore) / 2 ** 20).toFixed(1)),
      targetStats: target.stats(),
    }),
  );
} finally {
  await rm(dir, { recursive: true, force: true });
}
