// npm run bench -- --replicas 4 --mode bft|crash --request-bytes 0 --reply-bytes 0 --clients 50 --seconds 30 [--signed]
//                  [--service-thread auto|worker|inline] [--durability none|batch|fsync] [--batch-fill-percent P]
//                  [--state-mib N --checkpoint-instances I --checkpoint-mib B]: the cost of checkpoints of an N MiB
//                  state every I instances or B MiB of decided batches
// A throughput/latency microbenchmark in the manner of BFT-SMaRt's ThroughputLatencyServer/Client:
// n replicas as separate processes on loopback, the clients in a process of their own. Prints JSON:
// ops/s, latency p50/p90/p99, CPU seconds and peak RSS of every process.

import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { availableParallelism, cpus } from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { LocalCluster, defaultLocalDir } from '../src/cli/local-cluster.ts';
import type { FaultMode } from '../src/core/quorum.ts';
import { resolveServiceThread } from '../src/server/replica-process.ts';
import { configDefaults } from '../src/server/config.ts';

const { values } = parseArgs({
  options: {
    replicas: { type: 'string', default: '4' },
    mode: { type: 'string', default: 'bft' },
    'request-bytes': { type: 'string', default: '0' },
    'reply-bytes': { type: 'string', default: '0' },
    clients: { type: 'string', default: '50' },
    seconds: { type: 'string', default: '30' },
    'warmup-seconds': { type: 'string', default: '5' },
    'batch-requests': { type: 'string', default: '1024' },
    // batch.fillPercent of the replicas; 0 proposes at once, as Mod-SMaRt does.
    'batch-fill-percent': { type: 'string', default: String(configDefaults.batchFillPercent) },
    signed: { type: 'boolean', default: false },
    // Where the replicas run the service (service.thread): auto (the replicas' default), worker or inline.
    'service-thread': { type: 'string', default: 'auto' },
    // As BFT-SMaRt's reference microbenchmark: no disk on the replication path.
    durability: { type: 'string', default: 'none' },
    'state-mib': { type: 'string', default: '0' },
    'checkpoint-instances': { type: 'string' },
    'checkpoint-mib': { type: 'string' },
  },
});
const durability = values.durability;
if (durability !== 'none' && durability !== 'batch' && durability !== 'fsync') throw new Error('--durability is none, batch or fsync');
const stateBytes = Number(values['state-mib']) * 1024 * 1024;
const checkpointInstances = values['checkpoint-instances'] === undefined ? undefined : Number(values['checkpoint-instances']);
const checkpointBytes = values['checkpoint-mib'] === undefined ? undefined : Number(values['checkpoint-mib']) * 1024 * 1024;
const mode = values.mode as FaultMode;
const serviceThread = values['service-thread'];
if (serviceThread !== 'auto' && serviceThread !== 'worker' && serviceThread !== 'inline') throw new Error('--service-thread is auto, worker or inline');
if (mode !== 'bft' && mode !== 'crash') throw new Error('--mode is bft or crash');

/** CPU seconds and peak RSS of a live process, from /proc. */
async function usage(pid: number): Promise<{ cpuSeconds: number; peakRssMiB: number } | null> {
  try {
    const stat = (await readFile(`/proc/${pid}/stat`, 'utf8')).split(') ')[1]?.split(' ') ?? [];
    const ticksPerSecond = 100;
    const cpuSeconds = (Number(stat[11]) + Number(stat[12])) / ticksPerSecond;
    const status = await readFile(`/proc/${pid}/status`, 'utf8');
    const peakKiB = Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0);
    return { cpuSeconds, peakRssMiB: Math.round(peakKiB / 1024) };
  } catch {
    return null;
  }
}

const cluster = new LocalCluster({
  dir: defaultLocalDir('bench'),
  replicas: Number(values.replicas),
  mode,
  clients: ['bench'],
  subnet: 200,
  logLevel: 'warn',
  durability,
  service: { module: 'builtin:throughput', config: { replyBytes: Number(values['reply-bytes']), stateBytes }, thread: serviceThread },
  batch: { requestsMax: Number(values['batch-requests']), bytesMax: 4 * 1024 * 1024, fillPercent: Number(values['batch-fill-percent']) },
  configOverrides: {
    clientInFlightMax: 64,
    checkpoint: {
      ...(checkpointInstances === undefined ? {} : { periodInstances: checkpointInstances }),
      ...(checkpointBytes === undefined ? {} : { periodBytes: checkpointBytes }),
    },
  },
  requireSignedRequests: values.signed,
});
await cluster.prepare();
await cluster.startAll();
try {
  const clientScript = fileURLToPath(new URL('./client-process.ts', import.meta.url));
  // Node flags for the client process only, for profiling it (`--cpu-prof` is refused in NODE_OPTIONS).
  const clientNodeFlags = (process.env.BFTKUBE_CLIENT_NODE_FLAGS ?? '').split(' ').filter((flag) => flag !== '');
  const child = spawn(
    process.execPath,
    [
      ...clientNodeFlags,
      clientScript,
      '--keys', cluster.keysDir,
      '--view', JSON.stringify(cluster.view),
      '--endpoints', JSON.stringify(cluster.endpoints),
      '--clients', values.clients,
      '--request-bytes', values['request-bytes'],
      '--warmup-seconds', values['warmup-seconds'],
      '--seconds', values.seconds,
      ...(values.signed ? ['--signed'] : []),
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => {
    output += chunk.toString();
  });
  // Sample the client's usage just before it finishes: /proc is gone once it exits.
  let clientUsage: Awaited<ReturnType<typeof usage>> = null;
  const sampler = setInterval(async () => {
    if (child.pid !== undefined) clientUsage = (await usage(child.pid)) ?? clientUsage;
  }, 250);
  await new Promise<void>((resolve, reject) => child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`client process exited with ${code}`)))));
  clearInterval(sampler);
  const result = JSON.parse(output.trim().split('\n').at(-1) ?? '{}');
  const replicas: Record<string, unknown> = {};
  for (const replica of cluster.replicas) {
    if (replica.process?.pid === undefined) continue;
    const status = (await cluster.status(replica.id)) as {
      lastDecidedCid?: number;
      executedRequests?: number;
      checkpoints?: { taken: number; lastDurationMs: number | null };
      crypto?: { cacheHits: number; cacheMisses: number; preparedItems: number };
    } | null;
    const instances = (status?.lastDecidedCid ?? -1) + 1;
    replicas[`replica-${replica.id}`] = {
      ...(await usage(replica.process.pid)),
      // Over the whole run, warm-up included: how well requests were batched.
      ...(instances > 0 && status?.executedRequests !== undefined ? { instances, requestsPerInstance: Math.round((10 * status.executedRequests) / instances) / 10 } : {}),
      // Where signatures were checked: on the main thread (misses), in the pool, or found already checked.
      ...(status?.crypto === undefined
        ? {}
        : { signaturesVerifiedInline: status.crypto.cacheMisses, signaturesVerifiedInPool: status.crypto.preparedItems, signatureCacheHits: status.crypto.cacheHits }),
      ...(status?.checkpoints === undefined ? {} : { checkpointsTaken: status.checkpoints.taken, checkpointLastMs: status.checkpoints.lastDurationMs }),
    };
  }
  process.stdout.write(
    `${JSON.stringify(
      {
        benchmark: 'throughput-latency',
        replicas: cluster.replicas.length,
        mode,
        clients: Number(values.clients),
        requestBytes: Number(values['request-bytes']),
        replyBytes: Number(values['reply-bytes']),
        seconds: Number(values.seconds),
        signedRequests: values.signed,
        batchFillPercent: Number(values['batch-fill-percent']),
        serviceThread: resolveServiceThread(serviceThread, availableParallelism()),
        durability,
        ...(stateBytes > 0 || checkpointInstances !== undefined || checkpointBytes !== undefined
          ? { stateMiB: Number(values['state-mib']), checkpointInstances, checkpointMiB: values['checkpoint-mib'] }
          : {}),
        ...result,
        processes: { ...replicas, client: clientUsage },
        machine: { cores: availableParallelism(), cpu: cpus()[0]?.model ?? 'unknown', node: process.version },
      },
      null,
      2,
    )}\n`,
  );
} finally {
  await cluster.stopAll();
}
