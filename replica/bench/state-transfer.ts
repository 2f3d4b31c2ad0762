// npm run bench:state-transfer -- --state-mib N [--chunk-kib 1024] [--mode bft|crash]
// How long a replica that joins with an empty disk takes to catch up by state transfer when the service
// holds N MiB of state, and how much memory that costs it. Three replicas of a four-replica cluster run
// (processes on loopback, durability fsync, checkpoints on disk) with the throughput service standing for
// a service whose state lives outside the heap (service/throughput.ts, `stateBytes`); once they hold
// checkpoints of that size, the fourth starts empty and fetches one. Prints JSON.
//
// The joining replica's peak RSS is the measure of "memory does not grow with the state": compare the
// figures for two sizes.

import { readFile } from 'node:fs/promises';
import { availableParallelism, cpus } from 'node:os';
import { parseArgs } from 'node:util';
import { BftClient } from '../src/client/client.ts';
import { ClientMux } from '../src/client/mux.ts';
import { LocalCluster, defaultLocalDir } from '../src/cli/local-cluster.ts';
import type { FaultMode } from '../src/core/quorum.ts';
import { readTlsMaterial } from '../src/crypto/certificates.ts';
import { TlsClientTransport } from '../src/transport/tls-transport.ts';

const { values } = parseArgs({
  options: {
    'state-mib': { type: 'string', default: '256' },
    'chunk-kib': { type: 'string', default: '1024' },
    mode: { type: 'string', default: 'bft' },
    'timeout-seconds': { type: 'string', default: '1800' },
  },
});
const mode = values.mode as FaultMode;
if (mode !== 'bft' && mode !== 'crash') throw new Error('--mode is bft or crash');
const stateMiB = Number(values['state-mib']);
const stateBytes = stateMiB * 1024 * 1024;
/** Few instances per checkpoint: the benchmark is about the state, not the load that builds it. */
const checkpointPeriodInstances = 10;
const timeoutMs = Number(values['timeout-seconds']) * 1000;

interface Status {
  lastDecidedCid: number;
  checkpoints: { latest: { cid: number; totalBytes: number } | null };
  stateTransfer: { state: string; cid: number | null; durationMs: number | null; bytesFetched: number; chunksInstalled: number; sources: number[] };
}

async function peakRssMiB(pid: number | undefined): Promise<number | null> {
  if (pid === undefined) return null;
  try {
    const status = await readFile(`/proc/${pid}/status`, 'utf8');
    return Math.round(Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024);
  } catch {
    return null;
  }
}

async function until(what: string, condition: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

const n = mode === 'bft' ? 4 : 3;
const joiner = n - 1;
const donors = Array.from({ length: n - 1 }, (_, id) => id);
const cluster = new LocalCluster({
  dir: defaultLocalDir('bench-state-transfer'),
  replicas: n,
  mode,
  clients: ['bench'],
  subnet: 202,
  logLevel: 'warn',
  durability: 'fsync',
  service: { module: 'builtin:throughput', config: { replyBytes: 0, stateBytes } },
  configOverrides: {
    checkpoint: { periodInstances: checkpointPeriodInstances, chunkBytes: Number(values['chunk-kib']) * 1024 },
    // A checkpoint of gigabytes pauses each donor's execution for seconds: not a dead leader.
    requestTimeoutMs: 60_000,
    leaderSilenceTimeoutMs: 60_000,
    regencyTimeoutMs: 60_000,
  },
});
const status = async (id: number) => (await cluster.status(id)) as Status | null;

await cluster.prepare();
for (const id of donors) cluster.start(id);
try {
  await Promise.all(donors.map((id) => cluster.waitReady(id, timeoutMs)));
  const transport = new TlsClientTransport({ tls: await readTlsMaterial(cluster.keysDir, 'client-bench'), replicas: cluster.endpoints });
  const mux = new ClientMux(transport);
  const client = new BftClient({ clientId: 'bench/load', view: cluster.view, transport: mux.session('bench/load'), timeouts: { orderedTimeoutMs: timeoutMs } });
  // Enough instances for three checkpoints of the full state on every donor: the joiner is then more
  // than two checkpoint periods behind and asks for one.
  const loadStarted = performance.now();
  for (let i = 0; i < 3 * checkpointPeriodInstances + 1; i++) await client.invokeOrdered(new Uint8Array(0));
  await until('every donor to hold a checkpoint', async () => {
    const all = await Promise.all(donors.map(status));
    return all.every((s) => (s?.checkpoints.latest?.cid ?? -1) >= 2 * checkpointPeriodInstances);
  });
  const buildSeconds = (performance.now() - loadStarted) / 1000;
  const checkpoint = (await status(0))!.checkpoints.latest!;

  const started = performance.now();
  const child = cluster.start(joiner, { joinsRunningCluster: true });
  let joinerPeakMiB: number | null = null;
  const sampler = setInterval(async () => {
    joinerPeakMiB = (await peakRssMiB(child.pid)) ?? joinerPeakMiB;
  }, 200);
  await until('the joiner to install a checkpoint', async () => (await status(joiner))?.stateTransfer.state === 'installed');
  const installedSeconds = (performance.now() - started) / 1000;
  // One more request after the transfer: the joiner must take part again (decide it with the others).
  await client.invokeOrdered(new Uint8Array(0));
  const target = (await status(0))!.lastDecidedCid;
  await until('the joiner to catch up', async () => ((await status(joiner))?.lastDecidedCid ?? -1) >= target);
  const caughtUpSeconds = (performance.now() - started) / 1000;
  clearInterval(sampler);
  joinerPeakMiB = (await peakRssMiB(child.pid)) ?? joinerPeakMiB;
  const transfer = (await status(joiner))!.stateTransfer;
  const donorsPeakMiB = Object.fromEntries(await Promise.all(donors.map(async (id) => [`replica-${id}`, await peakRssMiB(cluster.replica(id).process?.pid ?? undefined)])));
  await client.close();
  await mux.close();
  process.stdout.write(
    `${JSON.stringify(
      {
        benchmark: 'state-transfer',
        mode,
        replicas: n,
        stateMiB,
        checkpointBytes: checkpoint.totalBytes,
        chunkBytes: Number(values['chunk-kib']) * 1024,
        buildSeconds: Number(buildSeconds.toFixed(1)),
        transfer: {
          cid: transfer.cid,
          seconds: transfer.durationMs === null ? null : transfer.durationMs / 1000,
          bytes: transfer.bytesFetched,
          chunks: transfer.chunksInstalled,
          sources: transfer.sources,
          mibPerSecond: transfer.durationMs ? Number((transfer.bytesFetched / 1024 / 1024 / (transfer.durationMs / 1000)).toFixed(1)) : null,
        },
        joiner: {
          startToInstalledSeconds: Number(installedSeconds.toFixed(2)),
          startToCaughtUpSeconds: Number(caughtUpSeconds.toFixed(2)),
          peakRssMiB: joinerPeakMiB,
        },
        donorsPeakRssMiB: donorsPeakMiB,
        machine: { cores: availableParallelism(), cpu: cpus()[0]?.model ?? 'unknown', node: process.version },
      },
      null,
      2,
    )}\n`,
  );
} finally {
  await cluster.stopAll();
}
