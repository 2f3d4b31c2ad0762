// Shared by the multi-process integration tests: a LocalCluster of real replica processes in a fixed
// folder per test file, key-value clients over real TLS, bounded waits, and a teardown that proves every
// spawned process is gone.

import { readFile } from 'node:fs/promises';
import { afterAll, beforeAll, expect } from 'vitest';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BftClient, type ClientTimeouts } from '../../src/client/client.ts';
import type { View } from '../../src/core/view.ts';
import { ClientMux } from '../../src/client/mux.ts';
import { LocalCluster, type LocalClusterOptions, isAlive } from '../../src/cli/local-cluster.ts';
import { readTlsMaterial } from '../../src/crypto/certificates.ts';
import { decodeKvResult, encodeKvOperation, type KvResult } from '../../src/service/kv-operations.ts';
import { TlsClientTransport } from '../../src/transport/tls-transport.ts';
import { HistoryRecorder } from '../linearizability/porcupine.ts';

/** The one client certificate every integration cluster issues; sessions are `<clientName>/<session>`. */
export const clientName = 'it';

/**
 * Faster than the defaults so that a dead leader is replaced within a couple of seconds, yet far above
 * what two busy cores need between ticks, so that a live leader is not deposed by a slow event loop.
 */
export const fastTimings = {
  requestTimeoutMs: 1_000,
  heartbeatIntervalMs: 250,
  leaderSilenceTimeoutMs: 1_500,
  regencyTimeoutMs: 1_500,
} as const;

export interface StartedCluster {
  readonly cluster: LocalCluster;
  /** Every replica process this test spawned, killed ones included. */
  readonly spawnedPids: number[];
}

export function createCluster(
  name: string,
  options: Pick<LocalClusterOptions, 'replicas' | 'mode' | 'subnet'> & { configOverrides?: Record<string, unknown> },
): StartedCluster {
  const cluster = new LocalCluster({
    dir: join(tmpdir(), 'bftkube-integration', name),
    replicas: options.replicas,
    mode: options.mode,
    subnet: options.subnet,
    clients: [clientName],
    logLevel: 'warn',
    configOverrides: { ...fastTimings, ...options.configOverrides },
  });
  return { cluster, spawnedPids: [] };
}

/** Prepares keys and configuration, then starts the given replicas (all by default) and waits until ready. */
export async function startReplicas(started: StartedCluster, ids?: readonly number[]): Promise<void> {
  const { cluster } = started;
  const which = ids ?? cluster.replicas.map((r) => r.id);
  for (const id of which) {
    const child = cluster.start(id);
    if (child.pid !== undefined) started.spawnedPids.push(child.pid);
  }
  await Promise.all(which.map((id) => cluster.waitReady(id)));
}

export interface ClusterHooks {
  /** The replicas to start before the tests (default: all). */
  readonly startIds?: readonly number[];
  /** Once they are ready: the suite's own set-up. */
  readonly afterStart?: () => Promise<void>;
  /** Before they stop: close what the tests opened. */
  readonly beforeStop?: () => Promise<void>;
}

/**
 * Registers what every suite needs around its cluster: before the tests, prepare it and start its replicas;
 * after them, close what the tests opened and stop the replicas, with no process they spawned left alive.
 */
export function clusterAroundTests(started: StartedCluster, hooks: ClusterHooks = {}): void {
  beforeAll(async () => {
    await started.cluster.prepare();
    await startReplicas(started, hooks.startIds);
    await hooks.afterStart?.();
  });
  afterAll(async () => {
    await hooks.beforeStop?.();
    expect(await stopCluster(started), 'replica processes still running after stopAll').toEqual([]);
  });
}

/**
 * Stops every replica and returns the pids still alive afterwards (an empty list is the goal). A
 * SIGKILLed child is reaped asynchronously, so its pid is given a bounded moment to disappear.
 */
export async function stopCluster(started: StartedCluster, waitMs = 10_000): Promise<number[]> {
  const pids = [...new Set([...started.spawnedPids, ...started.cluster.pids()])];
  await started.cluster.stopAll();
  const deadline = Date.now() + waitMs;
  while (pids.some(isAlive) && Date.now() < deadline) await sleep(50);
  return pids.filter(isAlive);
}

/**
 * What a replica's latest start restored from its own disk, from its log line: null if it restored
 * nothing. Status alone cannot tell: a decision shows there before its log record is durable.
 */
export async function restoredAtStart(cluster: LocalCluster, id: number): Promise<{ lastDecidedCid: number; checkpointCid: number | null } | null> {
  const lines = (await readFile(cluster.replica(id).logFile, 'utf8')).split('\n');
  const starts = lines.flatMap((line, index) => (line.includes('"msg":"replica started"') ? [index] : []));
  const latest = starts.at(-1);
  if (latest === undefined) return null;
  // The restore is logged before its start; the previous start (if any) ends the one before.
  for (let index = latest - 1; index > (starts.at(-2) ?? -1); index--) {
    const line = lines[index] ?? '';
    if (!line.includes('restored from the checkpoint and the write-ahead log')) continue;
    const entry = JSON.parse(line) as { lastDecidedCid: number; checkpointCid: number | null };
    return { lastDecidedCid: entry.lastDecidedCid, checkpointCid: entry.checkpointCid };
  }
  return null;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `condition` until it holds; throws naming `what` after `timeoutMs` (a bound, not a timing assertion). */
export async function waitUntil(what: string, condition: () => Promise<boolean> | boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await condition()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(100);
  }
}

export interface ReplicaStatus {
  readonly id: number;
  readonly regency: number;
  readonly leader: number;
  readonly synchronized: boolean;
  readonly lastDecidedCid: number;
  readonly executedRequests: number;
  readonly dropped: { readonly core: Record<string, number>; readonly driver: Record<string, number> };
  readonly transport: { readonly drops: Record<string, number>; readonly framesIn: number };
}

export async function statusOf(cluster: LocalCluster, id: number): Promise<ReplicaStatus | null> {
  return (await cluster.status(id)) as ReplicaStatus | null;
}

/** One TLS transport for the `it` client certificate, shared by any number of sessions. */
export class KvClients {
  private readonly mux: ClientMux;
  private readonly clients: BftClient[] = [];
  private readonly cluster: LocalCluster;
  /** The newest view any session moved to: new sessions start in it. */
  private view: View;

  private constructor(cluster: LocalCluster, mux: ClientMux) {
    this.cluster = cluster;
    this.mux = mux;
    this.view = cluster.view;
  }

  static async connect(cluster: LocalCluster): Promise<KvClients> {
    const transport = new TlsClientTransport({ tls: await readTlsMaterial(cluster.keysDir, `client-${clientName}`), replicas: cluster.endpoints });
    return new KvClients(cluster, new ClientMux(transport));
  }

  session(session: string, timeouts?: ClientTimeouts): KvSession {
    const clientId = `${clientName}/${session}`;
    const client = new BftClient({
      clientId,
      view: this.view,
      transport: this.mux.session(clientId),
      onViewChanged: (view) => {
        if (view.number > this.view.number) this.view = { number: view.number, mode: view.mode, f: view.f, members: view.members.map((m) => m.id) };
      },
      ...(timeouts === undefined ? {} : { timeouts }),
    });
    this.clients.push(client);
    return new KvSession(client);
  }

  async close(): Promise<void> {
    await Promise.all(this.clients.map((client) => client.close()));
    await this.mux.close();
  }
}

const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder('utf-8', { fatal: true });

/** Key-value operations over one client session, with UTF-8 string values as the history records them. */
export class KvSession {
  readonly client: BftClient;

  constructor(client: BftClient) {
    this.client = client;
  }

  get clientId(): string {
    return this.client.clientId;
  }

  async put(key: string, value: string): Promise<void> {
    const result = await this.call(true, encodeKvOperation({ type: 'put', key, value: utf8.encode(value) }));
    if (result.type !== 'written') throw new Error(`put ${key} answered ${result.type}`);
  }

  /** A read through consensus (ordered: true) or without it (false: needs more than (n+f)/2 matching replies). */
  async get(key: string, ordered: boolean): Promise<string | null> {
    const result = await this.call(ordered, encodeKvOperation({ type: 'get', key }));
    if (result.type !== 'value') throw new Error(`get ${key} answered ${result.type}`);
    return result.value === null ? null : fromUtf8.decode(result.value);
  }

  private async call(ordered: boolean, operation: Uint8Array): Promise<KvResult> {
    const bytes = ordered ? await this.client.invokeOrdered(operation) : await this.client.invokeUnordered(operation);
    const decoded = decodeKvResult(bytes);
    if (!decoded.ok) throw new Error(`undecodable key-value result: ${decoded.message}`);
    if (decoded.value.type === 'error') throw new Error(`key-value error ${decoded.value.code}: ${decoded.value.message}`);
    return decoded.value;
  }
}

/** The BftError code of a rejection, or undefined. */
export function errorCode(error: unknown): string | undefined {
  return typeof error === 'object' && error !== null && 'code' in error ? String((error as { code: unknown }).code) : undefined;
}

/**
 * One writer putting values to `keys` keys in a loop, each call recorded for the linearizability check,
 * until stop(); then readBack() reads every acknowledged key through a fresh session (recorded too).
 */
export class RecordedWrites {
  readonly recorder = new HistoryRecorder();
  /** The last acknowledged value of each key. */
  readonly acknowledged = new Map<string, string>();
  acknowledgedWrites = 0;
  private stopping = false;
  private readonly loop: Promise<void>;

  constructor(clients: KvClients, options: { readonly keys: number; readonly valueBytes?: number }) {
    const session = clients.session('writer', { orderedTimeoutMs: 30_000 });
    const padding = options.valueBytes === undefined ? '' : `-${'x'.repeat(options.valueBytes)}`;
    this.loop = (async () => {
      for (let written = 0; !this.stopping; written++) {
        const key = `k${written % options.keys}`;
        const value = `v${written}${padding}`;
        const done = this.recorder.call(session.clientId, { kind: 'put', key, value });
        try {
          await session.put(key, value);
          done();
          this.acknowledged.set(key, value);
          this.acknowledgedWrites++;
        } catch {
          done.unknown();
        }
      }
    })();
  }

  /** Ends the load; call it in a finally, or the load spins against a stopped cluster. */
  async stop(): Promise<void> {
    this.stopping = true;
    await this.loop;
  }

  /** Keys whose read-back value is not the last acknowledged one (the goal: none). */
  async readBack(clients: KvClients): Promise<Array<{ key: string; acknowledged: string; read: string | null }>> {
    const reader = clients.session('reader', { orderedTimeoutMs: 30_000 });
    const lost: Array<{ key: string; acknowledged: string; read: string | null }> = [];
    for (const [key, value] of this.acknowledged) {
      const done = this.recorder.call(reader.clientId, { kind: 'get', key });
      const read = await reader.get(key, true);
      done(read);
      if (read !== value) lost.push({ key, acknowledged: value, read });
    }
    return lost;
  }
}
