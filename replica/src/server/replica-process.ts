// One replica as a process: configuration and keys in; the TLS transport, the verification pool, the
// core, the driver, the service and the admin server wired together; a clean stop on SIGTERM.

import { isIP } from 'node:net';
import { availableParallelism } from 'node:os';
import { Registry, collectDefaultMetrics } from 'prom-client';
import type { Member, Membership } from '../core/reconfiguration.ts';
import { ReplicaCore } from '../core/replica.ts';
import { readTlsMaterial } from '../crypto/certificates.ts';
import { ProcessCrypto } from '../crypto/process-crypto.ts';
import { ed25519Backend } from '../crypto/ed25519.ts';
import { VerifyPool } from '../crypto/verify-pool.ts';
import { limits } from '../constants.ts';
import { BftError } from '../errors.ts';
import { ReplicaDriver } from '../runtime/driver.ts';
import { type Storage, VolatileStorage } from '../runtime/storage.ts';
import { WriteAheadLog } from '../storage/wal.ts';
import { clientIdentityOf } from '../protocol/client-id.ts';
import type { ClientRequest } from '../protocol/messages.ts';
import { decodeBatch, encodeMessage } from '../protocol/codec.ts';
import { dirname, join } from 'node:path';
import { InlineServiceHost, type ServiceHost, WorkerServiceHost } from '../service/service-host.ts';
import { Executor } from '../service/executor.ts';
import { loadService } from '../service/load-service.ts';
import { Checkpointer } from '../runtime/checkpointer.ts';
import { StateTransfer } from '../runtime/state-transfer.ts';
import { CheckpointStore } from '../storage/checkpoint-store.ts';
import { lockDataDir } from '../storage/data-dir-lock.ts';
import { mkdir, open, rm, stat } from 'node:fs/promises';
import { syncDirectory } from '../storage/fs-sync.ts';
import type { Logger } from 'pino';
import { TlsReplicaTransport } from '../transport/tls-transport.ts';
import { buildAdminServer } from './admin.ts';
import { type ReplicaConfig, coreConfigOf, viewOf } from './config.ts';
import { loadSigningKeys } from './keys.ts';
import { createLogger } from './logger.ts';
import { QueueStage, ReplicaMetrics } from './metrics.ts';

/** Where the members of `membership` listen, for the transport. */
function endpointsOf(membership: Membership): Array<{ id: number; host: string; port: number }> {
  return membership.view.members.map((id) => {
    const member = membership.members.get(id) as Member;
    return { id, host: member.host, port: member.port };
  });
}

/** How often gauges (regency, queue depths, connections) are refreshed. */
const gaugeRefreshMs = 1000;
/** Instances behind the (f+1)-th most advanced peer that still count as caught up. */
const readyLagInstancesMax = 2;

export interface RunningReplica {
  readonly config: ReplicaConfig;
  status(): object;
  stop(): Promise<void>;
}

async function openStorage(config: ReplicaConfig, logger: import('pino').Logger): Promise<Storage> {
  if (config.durability === 'none') return new VolatileStorage();
  return WriteAheadLog.open({ dir: join(config.dataDir, 'wal'), durability: config.durability, logger });
}

/** `auto` resolved: a worker thread pays for its hops only where a core is free to run it. */
export function resolveServiceThread(configured: ReplicaConfig['service']['thread'], cores: number): 'worker' | 'inline' {
  if (configured !== 'auto') return configured;
  return cores >= limits.serviceWorkerCoresMin ? 'worker' : 'inline';
}

/** The execute stage: the service in a worker of its own (DESIGN §1), or on this thread (service.thread). */
async function startServiceHost(config: ReplicaConfig, logger: Logger): Promise<ServiceHost> {
  const onFatal = (error: unknown): void => {
    logger.fatal({ err: error }, 'the service failed: the replica stops rather than answer from a state it cannot trust');
    process.exitCode = 1;
    setImmediate(() => process.exit(1));
  };
  const thread = resolveServiceThread(config.service.thread, availableParallelism());
  logger.info({ thread, configured: config.service.thread, cores: availableParallelism() }, 'the service runs on its own worker thread, or inline on the main thread');
  if (thread === 'inline') {
    const service = await loadService(config.service);
    return new InlineServiceHost(service, new Executor(service, config.clientInFlightMax));
  }
  return WorkerServiceHost.start({ service: config.service, clientInFlightMax: config.clientInFlightMax, onFatal });
}

const amnesiaMarkerName = 'AMNESIC';

async function fileExists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

async function writeDurably(path: string, text: string): Promise<void> {
  const handle = await open(path, 'w');
  try {
    await handle.writeFile(text);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await syncDirectory(dirname(path));
}

export async function startReplica(config: ReplicaConfig): Promise<RunningReplica> {
  const me = config.replicaId;
  const view = viewOf(config);
  const logger = createLogger({ replicaId: me, viewNumber: view.number, level: config.logLevel });
  await mkdir(config.dataDir, { recursive: true });
  const lock = await lockDataDir(config.dataDir);
  const storage = await openStorage(config, logger);
  const tls = await readTlsMaterial(config.keysDir, `replica-${me}`);
  const keys = await loadSigningKeys(config.keysDir, `replica-${me}`);
  const registry = new Registry();
  const metrics = new ReplicaMetrics(registry);
  // The standard process metrics every Node service exports: CPU, memory, event-loop lag, GC pauses by kind.
  collectDefaultMetrics({ register: registry, prefix: 'bftkube_' });
  // Several replicas often share a small machine (local clusters, benchmarks): one worker per two cores.
  const pool = new VerifyPool({ workers: Math.max(1, Math.floor(availableParallelism() / 2)) });
  // The genesis members with their keys: part of the replicated state from the start (DESIGN §6).
  const genesisMembers: Member[] = config.cluster.view.members.map((member) => {
    const publicKey = keys.replicaPublicKeys.get(member.id);
    if (publicKey === undefined) {
      throw new BftError('BFT_ERR_KEYS_INVALID', `${config.keysDir}/signing/public-keys.json has no key for replica ${member.id} of the view; add it with "bftkube keys"`);
    }
    return { id: member.id, host: member.host, port: member.port, adminPort: member.adminPort, publicKey };
  });
  const crypto = new ProcessCrypto({
    me,
    privateKeyPem: keys.privateKeyPem,
    replicaPublicKeys: keys.replicaPublicKeys,
    ...(keys.viewManagerPublicKey === undefined ? {} : { viewManagerPublicKey: keys.viewManagerPublicKey }),
    // Client keys matter only when requests must be signed; without them no batch is decoded for signatures.
    ...(config.requireSignedRequests
      ? {
          clientPublicKey: (clientId: string) => keys.clientPublicKeys.get(clientIdentityOf(clientId)),
          // Called only for messages the driver steps, so after the core below exists.
          requestKnown: (request: ClientRequest) => core.knowsRequest(request),
        }
      : {}),
    pool,
  });
  const checkpointStore = await CheckpointStore.open({ dir: join(config.dataDir, 'checkpoints'), chunkBytes: config.checkpoint.chunkBytes, logger });
  const host = await startServiceHost(config, logger);
  // The core is built from what the checkpointer restores; until then checkpoints are of the configured view.
  let coreRef: ReplicaCore | null = null;
  const checkpointer = new Checkpointer({
    me,
    viewNumber: () => coreRef?.view.number ?? view.number,
    store: checkpointStore,
    host,
    ...(storage instanceof WriteAheadLog ? { log: storage } : {}),
    logger,
    onCheckpoint: (manifest, durationMs) => metrics.checkpointed(manifest.cid, manifest.totalBytes, durationMs),
  });
  // The state comes back from the newest checkpoint, then the log after it: replayed through the host
  // as it was executed before the restart.
  const base = await checkpointer.restoreLatest();
  const restore = await storage.load();
  // Empty, in a cluster that has run: whatever this replica voted before, it no longer remembers. The
  // marker file keeps it so across restarts until the replica is past what it forgot: the few records
  // written since would otherwise make it look like a replica that never lost anything.
  const amnesiaMarker = join(config.dataDir, amnesiaMarkerName);
  const amnesic = (config.joinsRunningCluster && base === null && restore.length === 0) || (await fileExists(amnesiaMarker));
  if (amnesic) await writeDurably(amnesiaMarker, 'this replica lost its disk; it votes again once past every instance it could have voted in\n');
  const core = new ReplicaCore({ ...coreConfigOf(config), members: genesisMembers }, crypto, {
    ...(base === null ? {} : { base }),
    ...(restore.length > 0 ? { restore } : {}),
    ...(amnesic ? { amnesic } : {}),
  });
  coreRef = core;
  const missedCheckpoints = new Set(core.restoredCheckpointCids.filter((cid) => cid > (base?.cid ?? -1)));
  // The worker decodes each batch again; here it is checked first so that a damaged log is reported as
  // such, and replay keeps the host's queue full without going past its bound.
  let replayed = 0;
  const replaying: Promise<unknown>[] = [];
  for (const record of restore) {
    if (record.kind !== 'decision' || record.decision.cid <= (base?.cid ?? -1)) continue;
    const decoded = decodeBatch(record.decision.batch);
    if (!decoded.ok) throw new BftError('BFT_ERR_RESTORE_INVALID', `the logged decision for cid ${record.decision.cid} holds an invalid batch; move the data directory away and let the replica recover from its peers`);
    if (replaying.length >= limits.executeQueueBatchesMax) await replaying.shift();
    const answers = core.restoredReconfigurationResults(record.decision.cid);
    const execution = host.execute(
      { decision: record.decision, requests: decoded.batch.requests, ...(answers === undefined ? {} : { reconfigurationResults: answers }) },
      core.view.number,
    );
    // Awaited below; a failure is reported (and ends the process) through onFatal whichever fails first.
    execution.catch(() => undefined);
    replaying.push(execution);
    // A checkpoint the schedule wanted before the crash and that never reached the disk.
    if (missedCheckpoints.has(record.decision.cid)) void checkpointer.take(record.decision.cid, core.restoredViewsAt(record.decision.cid));
    replayed++;
  }
  await Promise.all(replaying);
  if (base !== null || restore.length > 0) {
    logger.info(
      { checkpointCid: base?.cid ?? null, records: restore.length, decisionsReplayed: replayed, lastDecidedCid: core.status().lastDecidedCid },
      'restored from the checkpoint and the write-ahead log',
    );
  }
  if (amnesic) logger.warn('started with an empty data directory in a running cluster: votes resume once past every instance this replica could have voted in');

  const stateTransfer = new StateTransfer({
    me,
    view: core.view,
    store: checkpointStore,
    send: (to, message) => transport.sendToReplica(to, encodeMessage(message)),
    sign: (payload) => crypto.sign(payload),
    verify: async (replica, payload, signature) => {
      const publicKeyRaw = crypto.replicaPublicKey(replica);
      if (publicKeyRaw === undefined) return false;
      const [valid] = await pool.verify([{ keyId: `r${replica}`, publicKeyRaw, payload, signature }]);
      return valid === true;
    },
    logger,
  });
  let transferring = false;
  const runStateTransfer = (minCid: number): void => {
    if (transferring) return;
    transferring = true;
    logger.info({ minCid, lastDecidedCid: core.status().lastDecidedCid }, 'state transfer started');
    void (async () => {
      try {
        const manifest = await stateTransfer.fetch(minCid);
        const installed = await checkpointer.installFromStore(manifest);
        core.installCheckpoint(installed);
        followMembership();
        // Decisions before the checkpoint are covered by it.
        if (storage instanceof WriteAheadLog) void storage.truncateBefore(installed.cid + 1).catch(() => undefined);
        const done = stateTransfer.status();
        metrics.stateTransferred('installed', { bytes: done.bytesFetched, chunks: done.chunksInstalled, durationMs: done.durationMs ?? 0, cid: manifest.cid, totalBytes: manifest.totalBytes });
        logger.info(
          { cid: manifest.cid, totalBytes: manifest.totalBytes, chunks: done.chunksInstalled, sources: done.sources, durationMs: done.durationMs },
          'state transfer finished',
        );
      } catch (error) {
        core.stateTransferFailed();
        const failed = stateTransfer.status();
        metrics.stateTransferred('failed', { bytes: failed.bytesFetched, chunks: failed.chunksInstalled, durationMs: failed.durationMs ?? 0 });
        logger.warn({ err: error }, 'state transfer failed; the replica catches up from decisions and asks again if it must');
      } finally {
        transferring = false;
        driver?.wake();
      }
    })();
  };

  let driver: ReplicaDriver | null = null;
  const transport = new TlsReplicaTransport({
    me,
    listenHost: config.listen.host,
    listenPort: config.listen.port,
    // Listening on one address: connect out from it too, so that peers see where this replica is.
    ...(isIP(config.listen.host) !== 0 && !['0.0.0.0', '::'].includes(config.listen.host) ? { localAddress: config.listen.host } : {}),
    tls,
    replicas: endpointsOf(core.status().membership),
    onFrame: (from, payload, connection) => driver?.receive(from, payload, connection),
    logger,
  });
  // The membership the replica last acted on: links, state transfer and logs follow the core's.
  let followedView = core.view.number;
  const followMembership = (): void => {
    const { membership, removedAtCid } = core.status();
    if (membership.view.number === followedView) return;
    followedView = membership.view.number;
    transport.setReplicas(endpointsOf(membership));
    stateTransfer.setView(membership.view);
    logger.info({ view: membership.view.number, f: membership.view.f, members: membership.view.members }, 'view changed');
    if (removedAtCid !== null) {
      logger.warn({ view: membership.view.number, lastOrderedCid: removedAtCid }, 'removed from the view: this replica orders and answers nothing more; stop it');
    }
  };
  driver = new ReplicaDriver({
    me,
    core,
    network: transport,
    storage,
    host,
    stateTransfer,
    checkpointer,
    onStateTransferNeeded: runStateTransfer,
    onMembership: followMembership,
    preparer: crypto,
    tickMs: config.tickMs,
    batchFillWaitMs: config.batch.fillWaitMs,
    onFatal: (error) => {
      logger.fatal({ err: error }, 'storage or execution failed: the replica stops rather than send what it could not make durable or answer from a state it cannot trust');
      process.exitCode = 1;
      setImmediate(() => process.exit(1));
    },
    observer: {
      dropped: (reason) => metrics.dropped(reason),
      decided: (cid, requests) => metrics.decided(cid, requests),
      executed: (kind, count) => metrics.executed(kind, count),
      busy: (reason) => metrics.busy(reason),
      leaderChanged: (regency) => {
        metrics.leaderChanged(regency);
        logger.info({ regency, leader: core.leader }, 'leader changed');
      },
    },
  });

  const status = () => {
    const coreStatus = core.status();
    const current = coreStatus.membership;
    return {
      id: me,
      view: {
        number: current.view.number,
        mode: current.view.mode,
        f: current.view.f,
        members: current.view.members.map((id) => {
          const member = current.members.get(id);
          return { id, host: member?.host, port: member?.port, adminPort: member?.adminPort };
        }),
      },
      removedAtCid: coreStatus.removedAtCid,
      regency: coreStatus.regency,
      leader: coreStatus.leader,
      synchronized: coreStatus.synchronized,
      lastDecidedCid: coreStatus.lastDecidedCid,
      lagInstances: coreStatus.lagInstances,
      durability: config.durability,
      queues: { pendingRequests: coreStatus.pendingRequests, bufferedMessages: coreStatus.bufferedMessages, verifying: driver?.status().verifying ?? 0 },
      dropped: { core: coreStatus.dropped, driver: driver?.status().droppedByReason ?? {} },
      executedRequests: host.stats().executedRequests,
      execute: host.stats(),
      transport: transport.stats(),
      crypto: { ed25519Backend, ...crypto.stats() },
      verifyPool: pool.stats(),
      leaderChanges: coreStatus.leaderChanges,
      checkpoints: { scheduledCid: coreStatus.checkpointCid, ...checkpointer.status() },
      stateTransfer: { awaiting: coreStatus.awaitingStateTransfer, ...stateTransfer.status() },
      amnesiaFloorCid: coreStatus.amnesiaFloorCid,
    };
  };
  const readiness = () => {
    const s = core.status();
    if (s.removedAtCid !== null) return { ready: false, reason: `removed from view ${s.viewNumber} after cid ${s.removedAtCid}: stop this replica` };
    if (s.awaitingStateTransfer) return { ready: false, reason: `state transfer: ${stateTransfer.status().state}` };
    if (!s.synchronized) return { ready: false, reason: `synchronizing regency ${s.regency}` };
    if (s.lagInstances > readyLagInstancesMax) return { ready: false, reason: `catching up: ${s.lagInstances} instances behind` };
    return { ready: true, reason: `member of view ${s.viewNumber}, regency ${s.regency}, last decided cid ${s.lastDecidedCid}` };
  };
  const admin = buildAdminServer({ status, readiness, registry, logger });

  await transport.start();
  await admin.listen({ host: config.listen.adminHost, port: config.listen.adminPort });
  driver.start();
  // The core counts its drops itself (it stays free of metrics); fold the increase into the counter.
  const coreDropsReported: Record<string, number> = {};
  const gauges = setInterval(() => {
    const s = core.status();
    for (const [reason, count] of Object.entries(s.dropped)) {
      const increase = (count ?? 0) - (coreDropsReported[reason] ?? 0);
      if (increase > 0) metrics.dropped(reason, increase);
      coreDropsReported[reason] = count ?? 0;
    }
    metrics.regency.set(s.regency);
    metrics.lastDecidedCid.set(s.lastDecidedCid);
    metrics.setQueueDepth(QueueStage.ORDER, s.pendingRequests);
    metrics.setQueueDepth(QueueStage.VERIFY, driver?.status().verifying ?? 0);
    if (amnesic && s.amnesiaFloorCid === null) void rm(amnesiaMarker, { force: true });
    const connections = transport.stats().connections;
    metrics.setReplicaConnections(connections.replicasOutbound + connections.replicasInbound);
  }, gaugeRefreshMs);
  gauges.unref();
  logger.info(
    { listen: `${config.listen.host}:${config.listen.port}`, admin: `${config.listen.adminHost}:${config.listen.adminPort}`, mode: view.mode, f: view.f, n: view.members.length },
    'replica started',
  );

  let stopping: Promise<void> | null = null;
  return {
    config,
    status,
    stop: () => {
      stopping ??= (async () => {
        clearInterval(gauges);
        await driver.stop();
        stateTransfer.close();
        await checkpointer.idle();
        await host.close();
        await transport.stop();
        await admin.close();
        await pool.close();
        await storage.close();
        await lock.release();
        logger.info('replica stopped');
      })();
      return stopping;
    },
  };
}
