// A local cluster: n replica processes on 127.0.0.x, each its own OS process with its own loopback
// address, keys made by `bftkube keys`. Used by `bftkube local`, the benchmark and integration tests.

import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, createWriteStream, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { mkdir, readFile, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FaultMode } from '../core/quorum.ts';
import { maxFaults } from '../core/quorum.ts';
import { connectionFileName, readConnectionFile, renderConnectionFile } from '../client/connection.ts';
import type { ReplicaEndpoint } from '../client/transport.ts';
import { BftError } from '../errors.ts';
import { replicaNodeFlags } from '../constants.ts';
import type { Member } from '../protocol/reconfiguration.ts';
import { generateLocalKeys, loadPublicKeys } from '../server/keys.ts';

const mainScript = fileURLToPath(new URL('./main.ts', import.meta.url));
/** Where prepare() records the cluster's options, for LocalCluster.open. */
const optionsFileName = 'local-cluster.json';
/** The cluster name of every local cluster: its certificates' organisation and its connection file's `cluster`. */
const localClusterName = 'local';
/** The client certificate a local cluster issues for its View Manager (bftkube view, tests). */
export const viewManagerClientName = 'admin';
const replicaPort = 11000;
const adminPort = 12000;
/** How long a replica may take from spawn to /readyz answering 200. */
const startTimeoutMs = 30_000;
const stopGraceMs = 5_000;

export interface LocalClusterOptions {
  readonly dir: string;
  readonly replicas: number;
  readonly mode: FaultMode;
  readonly clients: readonly string[];
  /** Third octet of the 127.0.x.y addresses, so that clusters of parallel tests do not collide. */
  readonly subnet?: number;
  readonly service?: { readonly module: string; readonly config?: unknown; readonly thread?: 'auto' | 'worker' | 'inline' };
  readonly batch?: { readonly requestsMax: number; readonly bytesMax: number; readonly fillPercent?: number };
  readonly requireSignedRequests?: boolean;
  readonly logLevel?: string;
  /** Default fsync: each replica logs its votes and decisions in <dir>/data-<id>/wal before acting on them. */
  readonly durability?: 'fsync' | 'batch' | 'none';
  /** Extra configuration fields merged into every replica's file. */
  readonly configOverrides?: Record<string, unknown>;
}

export interface LocalReplica {
  readonly id: number;
  readonly host: string;
  readonly port: number;
  readonly adminUrl: string;
  readonly configFile: string;
  readonly logFile: string;
  process: ChildProcess | null;
}

export class LocalCluster {
  readonly options: LocalClusterOptions;
  readonly replicas: LocalReplica[];
  readonly keysDir: string;

  constructor(options: LocalClusterOptions) {
    this.options = options;
    this.keysDir = join(options.dir, 'keys');
    this.replicas = Array.from({ length: options.replicas }, (_, id) => this.describe(id));
  }

  /** Replica `id` of this folder: its address (127.0.<subnet>.<10 + id>) and files. */
  private describe(id: number): LocalReplica {
    const host = `127.0.${this.options.subnet ?? 0}.${10 + id}`;
    return {
      id,
      host,
      port: replicaPort,
      adminUrl: `http://${host}:${adminPort}`,
      configFile: join(this.options.dir, `replica-${id}.json`),
      logFile: join(this.options.dir, `replica-${id}.log`),
      process: null,
    };
  }

  /** The client certificates made: the options' clients, and `admin` for the View Manager. */
  private get clientNames(): string[] {
    return [...new Set([...this.options.clients, viewManagerClientName])];
  }

  get endpoints(): ReplicaEndpoint[] {
    return this.replicas.map((r) => ({ id: r.id, host: r.host, port: r.port }));
  }

  get view() {
    const members = this.replicas.map((r) => r.id);
    return { number: 0, mode: this.options.mode, f: maxFaults(members.length, this.options.mode), members };
  }

  /** The cluster a previous prepare() made in `dir` (bftkube view works on the folder of bftkube local). */
  static async open(dir: string): Promise<LocalCluster> {
    let options: LocalClusterOptions;
    try {
      options = JSON.parse(await readFile(join(dir, optionsFileName), 'utf8')) as LocalClusterOptions;
    } catch (cause) {
      throw new BftError('BFT_ERR_CONFIG_INVALID', `${dir} holds no local cluster; start one with "bftkube local" (or pass --dir)`, { cause });
    }
    const cluster = new LocalCluster({ ...options, dir });
    // Replicas that reconfigurations added since: their configuration files say so.
    for (const name of await readdir(dir)) {
      const id = /^replica-(\d+)\.json$/.exec(name)?.[1];
      if (id !== undefined && !cluster.replicas.some((r) => r.id === Number(id))) cluster.replicas.push(cluster.describe(Number(id)));
    }
    cluster.replicas.sort((a, b) => a.id - b.id);
    return cluster;
  }

  /** Keys and configuration files; replaces whatever a previous run left in the folder. */
  async prepare(): Promise<void> {
    await rm(this.options.dir, { recursive: true, force: true });
    await mkdir(this.options.dir, { recursive: true });
    await writeFile(join(this.options.dir, optionsFileName), `${JSON.stringify(this.options, null, 2)}\n`);
    await generateLocalKeys({
      dir: this.keysDir,
      clusterName: localClusterName,
      replicas: this.replicas.map((r) => ({ id: r.id, dnsNames: ['localhost'], ipAddresses: [r.host] })),
      clients: this.clientNames,
    });
    const genesis = {
      number: 0,
      mode: this.options.mode,
      members: this.replicas.map((r) => ({ id: r.id, host: r.host, port: r.port, adminPort })),
    };
    for (const replica of this.replicas) await this.writeConfig(replica, genesis, false);
    await this.writeConnectionFile({ ...genesis, f: this.view.f });
  }

  /** The connection file applications use (`bftkube kv`, openKvClient): beside the keys folder. */
  get connectionFile(): string {
    return join(this.options.dir, connectionFileName);
  }

  /**
   * Writes client.json for `view`, unless the file already names a newer view. Clients follow newer views
   * by themselves; a current file only spares them the detour through members that may have left.
   */
  async writeConnectionFile(view: { readonly number: number; readonly mode: FaultMode; readonly f: number; readonly members: readonly { id: number; host: string; port: number }[] }): Promise<void> {
    const existing = await readConnectionFile(this.connectionFile).catch(() => null);
    if (existing !== null && existing.view.number > view.number) return;
    const partial = `${this.connectionFile}.partial`;
    await writeFile(partial, renderConnectionFile({ cluster: localClusterName, view }));
    await rename(partial, this.connectionFile);
  }

  private async writeConfig(
    replica: LocalReplica,
    view: { readonly number: number; readonly mode: FaultMode; readonly f?: number; readonly members: readonly { id: number; host: string; port: number; adminPort: number }[] },
    joinsRunningCluster: boolean,
  ): Promise<void> {
    const config = {
      replicaId: replica.id,
      cluster: { name: localClusterName, view },
      listen: { host: replica.host, port: replica.port, adminHost: replica.host, adminPort },
      keysDir: this.keysDir,
      dataDir: this.dataDir(replica.id),
      durability: this.options.durability ?? 'fsync',
      requireSignedRequests: this.options.requireSignedRequests ?? false,
      logLevel: this.options.logLevel ?? 'info',
      ...(joinsRunningCluster ? { joinsRunningCluster: true } : {}),
      ...(this.options.batch ? { batch: this.options.batch } : {}),
      ...(this.options.service ? { service: this.options.service } : {}),
      ...this.options.configOverrides,
    };
    await writeFile(replica.configFile, `${JSON.stringify(config, null, 2)}\n`);
  }

  /** Where a replica with this id would listen in this folder: what a reconfiguration adding it names. */
  endpointFor(id: number): { id: number; host: string; port: number; adminPort: number } {
    const replica = this.replicas.find((r) => r.id === id) ?? this.describe(id);
    return { id, host: replica.host, port: replica.port, adminPort };
  }

  /**
   * Keys for a replica that a reconfiguration is to add (a certificate from the cluster's CA, an Ed25519
   * key), and the member description the reconfiguration names it with.
   */
  async createReplicaKeys(id: number): Promise<Member> {
    const endpoint = this.endpointFor(id);
    await generateLocalKeys({ dir: this.keysDir, clusterName: localClusterName, replicas: [{ id, dnsNames: ['localhost'], ipAddresses: [endpoint.host] }], clients: [] });
    const publicKey = (await loadPublicKeys(this.keysDir)).replicaPublicKeys.get(id);
    if (publicKey === undefined) throw new BftError('BFT_ERR_KEYS_INVALID', `no public key was made for replica ${id}`);
    return { ...endpoint, publicKey };
  }

  /**
   * Readies a replica that a reconfiguration added (keys from createReplicaKeys): a configuration that
   * starts it in `view` (which lists it) with an empty disk, to catch up by state transfer. Start it with
   * start(id).
   */
  async addReplica(id: number, view: { readonly number: number; readonly mode: FaultMode; readonly f: number; readonly members: readonly { id: number; host: string; port: number; adminPort: number }[] }): Promise<LocalReplica> {
    if (!view.members.some((member) => member.id === id)) {
      throw new BftError('BFT_ERR_CONFIG_INVALID', `view ${view.number} does not list replica ${id}; add it with a reconfiguration first`);
    }
    let replica = this.replicas.find((r) => r.id === id);
    if (replica === undefined) {
      replica = this.describe(id);
      this.replicas.push(replica);
    }
    await rm(this.dataDir(id), { recursive: true, force: true });
    // Never started before (ids are never reused), it cannot have voted: not amnesic. Should it lose its
    // disk later, start it with joinsRunningCluster.
    await this.writeConfig(replica, { number: view.number, mode: view.mode, f: view.f, members: view.members.map((m) => ({ id: m.id, host: m.host, port: m.port, adminPort: m.adminPort })) }, false);
    await this.writeConnectionFile(view);
    return replica;
  }

  /**
   * Spawn one replica process (again, after a kill); its output goes to its log file. A replica whose
   * disk was wiped while the cluster ran must be started with `joinsRunningCluster`.
   */
  start(id: number, options: { readonly joinsRunningCluster?: boolean } = {}): ChildProcess {
    const replica = this.replica(id);
    if (replica.process !== null && replica.process.exitCode === null) return replica.process;
    const log = createWriteStream(replica.logFile, { flags: 'a' });
    // Node flags for the replicas only, for profiling (`--cpu-prof` is refused in NODE_OPTIONS).
    const nodeFlags = (process.env.BFTKUBE_REPLICA_NODE_FLAGS ?? '').split(' ').filter((flag) => flag !== '');
    const child = spawn(process.execPath, [...replicaNodeFlags, ...nodeFlags, mainScript, 'replica', '--config', replica.configFile], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...(options.joinsRunningCluster === true ? { BFTKUBE_JOINS_RUNNING_CLUSTER: 'true' } : {}) },
    });
    // Two sources share one file: neither may end it, or the other's late output is a write after end.
    child.stdout?.pipe(log, { end: false });
    child.stderr?.pipe(log, { end: false });
    log.on('error', () => {});
    child.on('close', () => log.end());
    child.on('exit', () => {
      if (replica.process === child) replica.process = null;
      // Only its own: a restarted replica has written another pid there already.
      try {
        if (readFileSync(this.pidFile(id), 'utf8').trim() === String(child.pid)) rmSync(this.pidFile(id), { force: true });
      } catch {
        // No pid file.
      }
    });
    replica.process = child;
    // For bftkube view, which stops a removed replica from another process.
    if (child.pid !== undefined) writeFileSync(this.pidFile(id), `${child.pid}\n`);
    return child;
  }

  /**
   * Spawn a replica that outlives this process (bftkube view add): its output goes straight to its log
   * file, and its pid to replica-<id>.pid, where `bftkube local` finds it when it stops the cluster.
   */
  startDetached(id: number): number {
    const replica = this.replica(id);
    const log = openSync(replica.logFile, 'a');
    try {
      const child = spawn(process.execPath, [...replicaNodeFlags, mainScript, 'replica', '--config', replica.configFile], { stdio: ['ignore', log, log], detached: true, env: process.env });
      child.unref();
      if (child.pid === undefined) throw new BftError('BFT_ERR_CONFIG_INVALID', `replica ${id} could not be started; see ${replica.logFile}`);
      writeFileSync(this.pidFile(id), `${child.pid}\n`);
      return child.pid;
    } finally {
      closeSync(log);
    }
  }

  pidFile(id: number): string {
    return join(this.options.dir, `replica-${id}.pid`);
  }

  /** SIGTERM to the replicas that `bftkube view add` started (pid files), and wait for them to exit. */
  async stopDetached(): Promise<void> {
    const files = (await readdir(this.options.dir)).filter((name) => /^replica-\d+\.pid$/.test(name));
    await Promise.all(files.map((name) => this.stopByPidFile(join(this.options.dir, name))));
  }

  /** Stop replica `id`, ours or another process's (its pid file), and wait until it exited. */
  async stopReplica(id: number): Promise<void> {
    if (this.replica(id).process !== null) return this.stop(id);
    await this.stopByPidFile(this.pidFile(id));
  }

  private async stopByPidFile(path: string): Promise<void> {
    let pid: number;
    try {
      pid = Number((await readFile(path, 'utf8')).trim());
    } catch {
      return;
    }
    await rm(path, { force: true });
    if (!Number.isSafeInteger(pid) || pid <= 1 || !isAlive(pid)) return;
    process.kill(pid, 'SIGTERM');
    const deadline = Date.now() + stopGraceMs;
    while (isAlive(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    if (isAlive(pid)) process.kill(pid, 'SIGKILL');
  }

  async startAll(): Promise<void> {
    for (const replica of this.replicas) this.start(replica.id);
    await Promise.all(this.replicas.map((r) => this.waitReady(r.id)));
  }

  replica(id: number): LocalReplica {
    const replica = this.replicas.find((r) => r.id === id);
    if (replica === undefined) throw new BftError('BFT_ERR_CONFIG_INVALID', `no replica ${id} in this local cluster`);
    return replica;
  }

  async status(id: number): Promise<Record<string, unknown> | null> {
    try {
      const response = await fetch(`${this.replica(id).adminUrl}/status`, { signal: AbortSignal.timeout(2000) });
      return response.ok ? ((await response.json()) as Record<string, unknown>) : null;
    } catch {
      return null;
    }
  }

  /** Until /readyz answers 200; `pid` names a replica started detached (startDetached). */
  async waitReady(id: number, timeoutMs = startTimeoutMs, pid?: number): Promise<void> {
    const replica = this.replica(id);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (pid === undefined ? replica.process === null : !isAlive(pid)) {
        throw new BftError('BFT_ERR_CONFIG_INVALID', `replica ${id} exited while starting; see ${replica.logFile}`);
      }
      try {
        const response = await fetch(`${replica.adminUrl}/readyz`, { signal: AbortSignal.timeout(1000) });
        if (response.ok) return;
      } catch {
        // Not listening yet.
      }
      if (Date.now() > deadline) throw new BftError('BFT_ERR_CONFIG_INVALID', `replica ${id} not ready after ${timeoutMs} ms; see ${replica.logFile}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  dataDir(id: number): string {
    return join(this.options.dir, `data-${id}`);
  }

  /** Lose a stopped replica's disk: its log, checkpoints and lock. */
  async wipe(id: number): Promise<void> {
    const child = this.replica(id).process;
    if (child !== null && child.exitCode === null) {
      throw new BftError('BFT_ERR_DATA_DIR_LOCKED', `replica ${id} is running; stop or kill it before wiping its data directory`);
    }
    await rm(this.dataDir(id), { recursive: true, force: true });
  }

  /** kill -9: no goodbye, no flush. */
  kill(id: number): void {
    this.replica(id).process?.kill('SIGKILL');
  }

  async stop(id: number): Promise<void> {
    const child = this.replica(id).process;
    if (child === null || child.exitCode !== null) return;
    const exited = new Promise<void>((resolveExit) => child.once('exit', () => resolveExit()));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), stopGraceMs);
    await exited;
    clearTimeout(timer);
  }

  async stopAll(): Promise<void> {
    await Promise.all(this.replicas.map((r) => this.stop(r.id)));
  }

  pids(): number[] {
    return this.replicas.flatMap((r) => (r.process?.pid !== undefined ? [r.process.pid] : []));
  }
}

/** Whether a process with this pid exists (signal 0 checks without sending anything). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export function defaultLocalDir(name: string): string {
  const cache = process.env.BFTKUBE_CACHE_DIR ?? join(process.env.HOME ?? '/tmp', '.cache', 'bftkube');
  return resolve(cache, name);
}
