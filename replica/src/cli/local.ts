// bftkube local: the README's main job. Starts n replicas as separate processes on 127.0.0.x, runs a
// short key-value workload through the client library with a progress line, then prints where each
// replica's /status and /metrics are, and keeps the cluster running until Ctrl-C.

import { randomUUID } from 'node:crypto';
import { parseArgs } from 'node:util';
import { BftClient } from '../client/client.ts';
import type { FaultMode } from '../core/quorum.ts';
import { readTlsMaterial } from '../crypto/certificates.ts';
import { BftError } from '../errors.ts';
import { decodeKvResult, encodeKvOperation } from '../service/kv-operations.ts';
import { TlsClientTransport } from '../transport/tls-transport.ts';
import { LocalCluster, defaultLocalDir } from './local-cluster.ts';

const utf8 = new TextEncoder();
const text = new TextDecoder();

export async function runLocal(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      replicas: { type: 'string', default: '4' },
      mode: { type: 'string', default: 'bft' },
      dir: { type: 'string' },
      'demo-seconds': { type: 'string', default: '10' },
      'exit-after-demo': { type: 'boolean', default: false },
    },
  });
  const mode = values.mode as FaultMode;
  if (mode !== 'bft' && mode !== 'crash') throw new BftError('BFT_ERR_CONFIG_INVALID', '--mode is bft or crash');
  const cluster = new LocalCluster({
    dir: values.dir ?? defaultLocalDir('local'),
    replicas: Number(values.replicas),
    mode,
    clients: ['demo'],
    logLevel: 'warn',
  });
  const out = (line: string) => process.stdout.write(`${line}\n`);
  out(`bftkube local: ${cluster.options.replicas} replicas, ${mode} mode, f=${cluster.view.f}; state in ${cluster.options.dir}`);
  await cluster.prepare();
  let stopping = false;
  const stop = async (code: number) => {
    if (stopping) return;
    stopping = true;
    await cluster.stopAll();
    // Replicas that `bftkube view add` started in the background belong to this cluster too.
    await cluster.stopDetached();
    process.exit(code);
  };
  process.on('SIGINT', () => void stop(0));
  process.on('SIGTERM', () => void stop(0));
  try {
    await cluster.startAll();
  } catch (error) {
    await cluster.stopAll();
    throw error;
  }
  out(`replicas ready: ${cluster.replicas.map((r) => `${r.id}@${r.host}:${r.port}`).join('  ')}`);

  const transport = new TlsClientTransport({ tls: await readTlsMaterial(cluster.keysDir, 'client-demo'), replicas: cluster.endpoints });
  const client = new BftClient({ clientId: `demo/${randomUUID()}`, view: cluster.view, transport });
  const demoMs = Number(values['demo-seconds']) * 1000;
  const started = Date.now();
  let writes = 0;
  let reads = 0;
  let lastLine = 0;
  while (Date.now() - started < demoMs) {
    const key = `demo/${writes % 100}`;
    const value = `value ${writes}`;
    const written = decodeKvResult(await client.invokeOrdered(encodeKvOperation({ type: 'put', key, value: utf8.encode(value) })));
    if (!written.ok || written.value.type !== 'written') throw new BftError('BFT_ERR_INVARIANT', `put ${key} answered ${JSON.stringify(written)}`);
    writes++;
    const read = decodeKvResult(await client.invokeUnordered(encodeKvOperation({ type: 'get', key })));
    if (!read.ok || read.value.type !== 'value' || read.value.value === null || text.decode(read.value.value) !== value) {
      throw new BftError('BFT_ERR_INVARIANT', `get ${key} did not return the value just written`);
    }
    reads++;
    if (Date.now() - lastLine > 500) {
      lastLine = Date.now();
      const seconds = (lastLine - started) / 1000;
      process.stdout.write(`\r  demo: ${writes} writes, ${reads} reads in ${seconds.toFixed(1)} s (${Math.round((writes + reads) / seconds)} ops/s)   `);
    }
  }
  const seconds = (Date.now() - started) / 1000;
  out(`\r  demo: ${writes} writes and ${reads} reads in ${seconds.toFixed(1)} s, every read saw its write (${Math.round((writes + reads) / seconds)} ops/s)`);
  await client.close();
  for (const replica of cluster.replicas) out(`  replica ${replica.id}: ${replica.adminUrl}/status  ${replica.adminUrl}/metrics  (log ${replica.logFile})`);
  out(`  key-value from the command line: node replica/src/cli/main.ts kv get demo/0  (connection file ${cluster.connectionFile})`);
  if (values['exit-after-demo']) return stop(0);
  out('the cluster keeps running; Ctrl-C stops it');
}
