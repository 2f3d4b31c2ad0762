// The replica's Prometheus metrics (DESIGN §7), on a registry the caller owns: never prom-client's
// global default, so that tests and several replicas in one process do not share counters.
//
// The methods named like DriverObserver's hooks (runtime/driver.ts: dropped, decided, executed, busy,
// leaderChanged) have its signatures, so an instance can be passed as the driver's observer as it is.

import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { limits } from '../constants.ts';
import { BusyReason } from '../protocol/messages.ts';
import { DropReason } from '../protocol/reasons.ts';

export const metricPrefix = 'bftkube_';

/** The pipeline stages of DESIGN §1, the values of the `stage` label of the queue depth gauge. */
export const QueueStage = {
  RECEIVE: 'receive',
  VERIFY: 'verify',
  ORDER: 'order',
  LOG: 'log',
  EXECUTE: 'execute',
  REPLY: 'reply',
} as const;

export type QueueStageName = (typeof QueueStage)[keyof typeof QueueStage];

export type RequestKind = 'ordered' | 'unordered';

/** Label value for reasons seen after metricLabelValuesMax distinct ones. */
export const otherLabelValue = 'other';

/** Powers of two from 1 to batchRequestsMax: batch sizes span orders of magnitude. */
function batchSizeBuckets(): number[] {
  const buckets: number[] = [];
  for (let size = 1; size <= limits.batchRequestsMax; size *= 2) buckets.push(size);
  return buckets;
}

/** 100 µs to 10 s: loopback requests take well under a millisecond, a leader change takes seconds. */
/** 10 ms to 30 min: a checkpoint or a state transfer takes from a moment to many minutes with the state's size. */
const stateBucketsSeconds = [0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600, 1800];

const latencyBucketsSeconds = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export class ReplicaMetrics {
  readonly registry: Registry;
  readonly decidedInstances: Counter;
  readonly requestsExecuted: Counter<'kind'>;
  readonly batchSize: Histogram;
  readonly requestLatency: Histogram<'kind'>;
  readonly leaderChanges: Counter;
  readonly regency: Gauge;
  readonly lastDecidedCid: Gauge;
  readonly queueDepth: Gauge<'stage'>;
  readonly droppedInputs: Counter<'reason'>;
  readonly replicaConnections: Gauge;
  readonly busyReplies: Counter<'reason'>;
  readonly checkpointsTaken: Counter;
  readonly checkpointFailures: Counter;
  readonly checkpointDuration: Histogram;
  readonly checkpointCid: Gauge;
  readonly checkpointBytes: Gauge;
  readonly stateTransfers: Counter<'outcome'>;
  readonly stateTransferBytes: Counter;
  readonly stateTransferChunks: Counter;
  readonly stateTransferDuration: Histogram;
  // Reasons are our own strings, but a bound keeps a bug from growing the exposition without end.
  private readonly droppedReasons = new Set<string>();
  private readonly busyReasons = new Set<string>();

  constructor(registry: Registry) {
    this.registry = registry;
    const registers = [registry];
    this.decidedInstances = new Counter({
      name: `${metricPrefix}decided_instances_total`,
      help: 'Consensus instances this replica has decided.',
      registers,
    });
    this.requestsExecuted = new Counter({
      name: `${metricPrefix}requests_executed_total`,
      help: 'Client requests executed by the service, by kind (ordered through consensus, or unordered read-only).',
      labelNames: ['kind'],
      registers,
    });
    this.batchSize = new Histogram({
      name: `${metricPrefix}batch_size_requests`,
      help: 'Client requests per decided batch.',
      buckets: batchSizeBuckets(),
      registers,
    });
    this.requestLatency = new Histogram({
      name: `${metricPrefix}request_duration_seconds`,
      help: 'Time at this replica from receiving a client request to sending its reply, by kind.',
      labelNames: ['kind'],
      buckets: latencyBucketsSeconds,
      registers,
    });
    this.leaderChanges = new Counter({
      name: `${metricPrefix}leader_changes_total`,
      help: 'Regencies (leader changes) this replica has installed.',
      registers,
    });
    this.regency = new Gauge({
      name: `${metricPrefix}regency`,
      help: 'The regency this replica is in; its leader is members[regency mod n].',
      registers,
    });
    this.lastDecidedCid = new Gauge({
      name: `${metricPrefix}last_decided_cid`,
      help: 'The consensus id of the last instance this replica decided.',
      registers,
    });
    this.queueDepth = new Gauge({
      name: `${metricPrefix}queue_depth`,
      help: 'Items waiting in each pipeline stage (receive, verify, order, log, execute, reply).',
      labelNames: ['stage'],
      registers,
    });
    this.droppedInputs = new Counter({
      name: `${metricPrefix}dropped_inputs_total`,
      help: 'Input from the network dropped as invalid or unwanted, by reason.',
      labelNames: ['reason'],
      registers,
    });
    this.replicaConnections = new Gauge({
      name: `${metricPrefix}replica_connections`,
      help: 'Authenticated links to other replicas that are up.',
      registers,
    });
    this.busyReplies = new Counter({
      name: `${metricPrefix}busy_replies_total`,
      help: 'Client requests answered BUSY instead of queued, by reason.',
      labelNames: ['reason'],
      registers,
    });

    this.checkpointsTaken = new Counter({
      name: `${metricPrefix}checkpoints_total`,
      help: 'Checkpoints of the replicated state this replica wrote.',
      registers,
    });
    this.checkpointFailures = new Counter({
      name: `${metricPrefix}checkpoint_failures_total`,
      help: 'Checkpoints that could not be written (the log still covers the state; see the log for why).',
      registers,
    });
    this.checkpointDuration = new Histogram({
      name: `${metricPrefix}checkpoint_duration_seconds`,
      help: 'Time from the snapshot being asked for to the checkpoint being durable.',
      buckets: stateBucketsSeconds,
      registers,
    });
    this.checkpointCid = new Gauge({
      name: `${metricPrefix}checkpoint_cid`,
      help: 'The consensus id of the newest checkpoint on disk (written or installed).',
      registers,
    });
    this.checkpointBytes = new Gauge({
      name: `${metricPrefix}checkpoint_bytes`,
      help: 'Size of the newest checkpoint on disk.',
      registers,
    });
    this.stateTransfers = new Counter({
      name: `${metricPrefix}state_transfers_total`,
      help: 'State transfers this replica ran, by outcome (installed, failed).',
      labelNames: ['outcome'],
      registers,
    });
    this.stateTransferBytes = new Counter({
      name: `${metricPrefix}state_transfer_bytes_total`,
      help: 'Checkpoint bytes fetched from other replicas by state transfer.',
      registers,
    });
    this.stateTransferChunks = new Counter({
      name: `${metricPrefix}state_transfer_chunks_total`,
      help: 'Checkpoint chunks installed by state transfer.',
      registers,
    });
    this.stateTransferDuration = new Histogram({
      name: `${metricPrefix}state_transfer_duration_seconds`,
      help: 'Duration of each state transfer, from asking for offers to the checkpoint being installed.',
      buckets: stateBucketsSeconds,
      registers,
    });

    // Known label values start at zero, so that rate() and alerts see a series before its first event.
    for (const kind of ['ordered', 'unordered'] as const) this.requestsExecuted.inc({ kind }, 0);
    for (const stage of Object.values(QueueStage)) this.queueDepth.set({ stage }, 0);
    for (const reason of Object.values(DropReason)) this.dropped(reason, 0);
    for (const reason of Object.values(BusyReason)) this.busy(reason, 0);
    for (const outcome of ['installed', 'failed']) this.stateTransfers.inc({ outcome }, 0);
  }

  checkpointed(cid: number, totalBytes: number, durationMs: number): void {
    this.checkpointsTaken.inc();
    this.checkpointDuration.observe(durationMs / 1000);
    this.checkpointCid.set(cid);
    this.checkpointBytes.set(totalBytes);
  }

  stateTransferred(outcome: 'installed' | 'failed', transfer: { bytes: number; chunks: number; durationMs: number; cid?: number; totalBytes?: number }): void {
    this.stateTransfers.inc({ outcome });
    this.stateTransferBytes.inc(transfer.bytes);
    this.stateTransferChunks.inc(transfer.chunks);
    this.stateTransferDuration.observe(transfer.durationMs / 1000);
    if (outcome === 'installed' && transfer.cid !== undefined) {
      this.checkpointCid.set(transfer.cid);
      if (transfer.totalBytes !== undefined) this.checkpointBytes.set(transfer.totalBytes);
    }
  }

  /** An instance was decided with a batch of `requests` client requests. */
  decided(cid: number, requests: number): void {
    this.decidedInstances.inc();
    this.lastDecidedCid.set(cid);
    this.batchSize.observe(requests);
  }

  executed(kind: RequestKind, count: number): void {
    this.requestsExecuted.inc({ kind }, count);
  }

  /** A regency was installed. */
  leaderChanged(regency: number): void {
    this.leaderChanges.inc();
    this.regency.set(regency);
  }

  dropped(reason: string, count = 1): void {
    this.droppedInputs.inc({ reason: boundedLabel(this.droppedReasons, reason) }, count);
  }

  busy(reason: string, count = 1): void {
    this.busyReplies.inc({ reason: boundedLabel(this.busyReasons, reason) }, count);
  }

  observeRequestLatency(kind: RequestKind, seconds: number): void {
    this.requestLatency.observe({ kind }, seconds);
  }

  setQueueDepth(stage: QueueStageName, depth: number): void {
    this.queueDepth.set({ stage }, depth);
  }

  setReplicaConnections(count: number): void {
    this.replicaConnections.set(count);
  }

  /** The Prometheus text exposition and its content type, for /metrics. */
  async exposition(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}

function boundedLabel(seen: Set<string>, value: string): string {
  if (seen.has(value)) return value;
  if (seen.size >= limits.metricLabelValuesMax) return otherLabelValue;
  seen.add(value);
  return value;
}
