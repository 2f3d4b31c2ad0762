// The bftkube operator: watches BftClusters and the pods it made, reconciles each cluster in a per-key
// work queue while it holds the leader Lease, and serves /healthz, /readyz and /metrics.
//
// Environment: KUBECONFIG (else the in-cluster service account), WATCH_NAMESPACE (default: all),
// POD_NAMESPACE (where the leader Lease lives; default "default"), POD_NAME (the leader identity),
// LEASE_NAME / LEASE_DURATION_SECONDS (default bftkube-operator, 15), LOG_LEVEL (default info),
// ADMIN_HOST / ADMIN_PORT (default POD_IP or 0.0.0.0, 8080: in the local node, pods share one network
// namespace and each binds its own address).

import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import Fastify from 'fastify';
import pino from 'pino';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { z } from 'zod';
import { labels } from './specs/names.ts';
import { reconcile } from './controller/reconcile.ts';
import { submitReconfiguration } from './controller/submit.ts';
import type { ReplicaReport } from './controller/status.ts';
import { eventRecorder } from './kube/events.ts';
import { WriteKiller, killAfterWritesFrom, killingAfterWrites } from './kube/fault-injection.ts';
import { LeaderElection } from './kube/lease.ts';
import { paths } from './kube/paths.ts';
import { type JsonObject, connectToApiServer, runListWatch } from './kube/rest.ts';
import { WorkQueue } from './kube/work-queue.ts';

const environmentSchema = z.object({
  KUBECONFIG: z.string().min(1).optional(),
  WATCH_NAMESPACE: z.string().max(63).optional(),
  POD_NAMESPACE: z.string().min(1).max(63).default('default'),
  POD_NAME: z.string().min(1).max(253).optional(),
  POD_IP: z.string().min(1).max(64).optional(),
  LEASE_NAME: z.string().min(1).max(253).default('bftkube-operator'),
  LEASE_DURATION_SECONDS: z.coerce.number().int().min(5).max(300).default(15),
  LOG_LEVEL: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal']).default('info'),
  ADMIN_HOST: z.string().min(1).max(253).optional(),
  ADMIN_PORT: z.coerce.number().int().min(0).max(65_535).default(8080),
});

const parsedEnvironment = environmentSchema.safeParse(process.env);
if (!parsedEnvironment.success) {
  const issue = parsedEnvironment.error.issues[0];
  process.stderr.write(`bftkube-operator: BFT_ERR_CONFIG_INVALID: environment variable ${String(issue?.path[0])}: ${issue?.message}; fix the Deployment's env\n`);
  process.exit(2);
}
const environment = parsedEnvironment.data;
const logger = pino({ base: { component: 'operator' }, level: environment.LOG_LEVEL });

const reportSchema = z.object({
  view: z.object({ number: z.int().min(0), f: z.int().min(0), members: z.array(z.object({ id: z.int().min(0) })).max(64) }),
  leader: z.int().min(0),
  regency: z.int().min(0).optional(),
  synchronized: z.boolean().optional(),
  lastDecidedCid: z.int().min(-1),
  removedAtCid: z.int().min(-1).nullable().default(null),
  stateTransfer: z.object({ awaiting: z.boolean() }),
});

/** A replica's /status, validated: a replica is not trusted to answer sensibly. */
async function probe(podIp: string): Promise<ReplicaReport | null> {
  try {
    const response = await fetch(`http://${podIp}:8000/status`, { signal: AbortSignal.timeout(2_000) });
    if (!response.ok) return null;
    const parsed = reportSchema.safeParse(await response.json());
    return parsed.success ? parsed.data : null;
  } catch {
    return null;
  }
}

async function main(): Promise<void> {
  const rest = connectToApiServer(environment.KUBECONFIG);
  const killAfterWrites = killAfterWritesFrom(process.env);
  // Only reconciliation's writes count toward an injected crash (tests of "killed between two steps").
  const killer = killAfterWrites === null ? null : new WriteKiller(killAfterWrites);
  const reconcileRest = killer === null ? rest : killingAfterWrites(rest, killer);
  const submit = killer === null ? submitReconfiguration : killer.counted(submitReconfiguration);
  const watchNamespace = environment.WATCH_NAMESPACE || undefined;
  const identity = environment.POD_NAME ?? `${hostname()}-${randomUUID().slice(0, 8)}`;

  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'bftkube_operator_' });
  const reconciles = new Counter({ name: 'bftkube_operator_reconciles_total', help: 'Reconciliations by outcome', labelNames: ['outcome'], registers: [registry] });
  const reconcileSeconds = new Histogram({ name: 'bftkube_operator_reconcile_seconds', help: 'Time per reconciliation', registers: [registry], buckets: [0.01, 0.05, 0.1, 0.5, 1, 5, 30] });
  const leading = new Gauge({ name: 'bftkube_operator_leader', help: '1 while this instance holds the leader Lease', registers: [registry] });
  const queueDepth = new Gauge({ name: 'bftkube_operator_queue_depth', help: 'Keys waiting in the work queue', registers: [registry] });

  const event = eventRecorder(rest, identity, logger);
  const queue = new WorkQueue(
    async (key) => {
      // A key queued before leadership was lost is dropped: the next leader lists everything again.
      if (!election.isLeader) return undefined;
      const [namespace, name] = key.split('/') as [string, string];
      const timer = reconcileSeconds.startTimer();
      try {
        const result = await reconcile({ rest: reconcileRest, probe, submitReconfiguration: submit, now: () => new Date(), logger, event }, namespace, name);
        reconciles.inc({ outcome: 'ok' });
        return result.requeueAfterMs > 0 ? { requeueAfterMs: result.requeueAfterMs } : undefined;
      } catch (error) {
        reconciles.inc({ outcome: 'error' });
        logger.warn({ err: error, cluster: key }, 'reconciliation failed; it is retried with backoff');
        throw error;
      } finally {
        timer();
        queueDepth.set(queue.stats().waiting);
      }
    },
    { concurrency: 4, retryBaseMs: 500, retryMaxMs: 60_000, keysMax: 10_000 },
  );

  let watches: AbortController | null = null;
  let synced = false;
  const startWatching = (): void => {
    watches = new AbortController();
    const signal = watches.signal;
    const keyOf = (object: JsonObject) => `${object.metadata?.namespace}/${object.metadata?.name}`;
    void runListWatch(
      rest,
      paths.bftClusters(watchNamespace),
      {},
      {
        onList: (items) => {
          synced = true;
          for (const item of items) queue.add(keyOf(item));
        },
        onEvent: (_type, object) => queue.add(keyOf(object)),
        onError: (error) => logger.warn({ err: error }, 'the BftCluster watch failed; it lists again after a backoff'),
      },
      signal,
    );
    const podOwner = (pod: JsonObject): string | null => {
      const cluster = pod.metadata?.labels?.[labels.cluster];
      return typeof cluster === 'string' ? `${pod.metadata?.namespace}/${cluster}` : null;
    };
    void runListWatch(
      rest,
      paths.pods(watchNamespace),
      { labelSelector: `${labels.managedBy}=bftkube-operator` },
      {
        onList: (items) => {
          for (const item of items) {
            const key = podOwner(item);
            if (key !== null) queue.add(key);
          }
        },
        onEvent: (_type, pod) => {
          const key = podOwner(pod);
          if (key !== null) queue.add(key);
        },
        onError: (error) => logger.warn({ err: error }, 'the pod watch failed; it lists again after a backoff'),
      },
      signal,
    );
  };

  const election = new LeaderElection({
    rest,
    namespace: environment.POD_NAMESPACE,
    name: environment.LEASE_NAME,
    identity,
    durationSeconds: environment.LEASE_DURATION_SECONDS,
    // Renew at a third of the duration: two renewals may fail before another instance may take over.
    renewMs: Math.floor((environment.LEASE_DURATION_SECONDS * 1000) / 3),
    logger,
    onStartedLeading: () => {
      leading.set(1);
      startWatching();
    },
    onStoppedLeading: () => {
      leading.set(0);
      watches?.abort();
      watches = null;
      synced = false;
    },
  });

  const admin = Fastify({ logger: false });
  admin.get('/healthz', async () => ({ ok: true }));
  admin.get('/readyz', async (_request, reply) => {
    // A standby instance is ready too: it is up and waits for the lease.
    const ready = !election.isLeader || synced;
    return reply.code(ready ? 200 : 503).send({ ready, leader: election.isLeader, synced });
  });
  admin.get('/metrics', async (_request, reply) => reply.type(registry.contentType).send(await registry.metrics()));
  const adminHost = environment.ADMIN_HOST ?? environment.POD_IP ?? '0.0.0.0';
  const adminPort = environment.ADMIN_PORT;
  await admin.listen({ host: adminHost, port: adminPort });
  election.start();
  logger.info({ identity, watchNamespace: watchNamespace ?? '(all)', admin: `${adminHost}:${adminPort}` }, 'operator started');

  let stopping = false;
  const shutdown = (): void => {
    if (stopping) process.exit(1);
    stopping = true;
    queue.stop();
    void Promise.allSettled([election.release(), admin.close()]).then(() => process.exit(0));
  };
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);
}

main().catch((error: unknown) => {
  logger.fatal({ err: error }, 'the operator could not start');
  process.exit(1);
});
