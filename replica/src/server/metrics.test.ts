import { Registry, register as globalRegistry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { limits } from '../constants.ts';
import { BusyReason } from '../protocol/messages.ts';
import { DropReason } from '../protocol/reasons.ts';
import { QueueStage, ReplicaMetrics, otherLabelValue } from './metrics.ts';

/** The value of one sample line of the exposition, e.g. `bftkube_regency 3`. */
function sample(exposition: string, series: string): number | undefined {
  const line = exposition.split('\n').find((candidate) => candidate.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

describe('ReplicaMetrics', () => {
  it('exposes every replica metric with Prometheus names, types and base units', async () => {
    const registry = new Registry();
    new ReplicaMetrics(registry);
    const text = await registry.metrics();
    const types: Array<[string, string]> = [
      ['bftkube_decided_instances_total', 'counter'],
      ['bftkube_requests_executed_total', 'counter'],
      ['bftkube_batch_size_requests', 'histogram'],
      ['bftkube_request_duration_seconds', 'histogram'],
      ['bftkube_leader_changes_total', 'counter'],
      ['bftkube_regency', 'gauge'],
      ['bftkube_last_decided_cid', 'gauge'],
      ['bftkube_queue_depth', 'gauge'],
      ['bftkube_dropped_inputs_total', 'counter'],
      ['bftkube_replica_connections', 'gauge'],
      ['bftkube_busy_replies_total', 'counter'],
      ['bftkube_checkpoints_total', 'counter'],
      ['bftkube_checkpoint_failures_total', 'counter'],
      ['bftkube_checkpoint_duration_seconds', 'histogram'],
      ['bftkube_checkpoint_cid', 'gauge'],
      ['bftkube_checkpoint_bytes', 'gauge'],
      ['bftkube_state_transfers_total', 'counter'],
      ['bftkube_state_transfer_bytes_total', 'counter'],
      ['bftkube_state_transfer_chunks_total', 'counter'],
      ['bftkube_state_transfer_duration_seconds', 'histogram'],
    ];
    for (const [name, type] of types) {
      expect(text.split('\n'), name).toContain(`# TYPE ${name} ${type}`);
      expect(text, name).toMatch(new RegExp(`^# HELP ${name} \\S`, 'm'));
    }
  });

  it('counts checkpoints and state transfers, and the newest checkpoint either way', async () => {
    const registry = new Registry();
    const metrics = new ReplicaMetrics(registry);
    metrics.checkpointed(99, 4096, 250);
    let text = await registry.metrics();
    expect(sample(text, 'bftkube_checkpoints_total')).toBe(1);
    expect(sample(text, 'bftkube_checkpoint_cid')).toBe(99);
    expect(sample(text, 'bftkube_checkpoint_duration_seconds_sum')).toBe(0.25);
    metrics.stateTransferred('installed', { bytes: 8192, chunks: 2, durationMs: 1500, cid: 199, totalBytes: 8192 });
    metrics.stateTransferred('failed', { bytes: 100, chunks: 0, durationMs: 30_000 });
    text = await registry.metrics();
    expect(sample(text, 'bftkube_state_transfers_total{outcome="installed"}')).toBe(1);
    expect(sample(text, 'bftkube_state_transfers_total{outcome="failed"}')).toBe(1);
    expect(sample(text, 'bftkube_state_transfer_bytes_total')).toBe(8292);
    expect(sample(text, 'bftkube_checkpoint_cid')).toBe(199);
    expect(sample(text, 'bftkube_checkpoint_bytes')).toBe(8192);
  });

  it('starts labelled series at zero for every known kind, stage, drop reason and BUSY reason', async () => {
    const registry = new Registry();
    new ReplicaMetrics(registry);
    const text = await registry.metrics();
    expect(sample(text, 'bftkube_requests_executed_total{kind="ordered"}')).toBe(0);
    expect(sample(text, 'bftkube_requests_executed_total{kind="unordered"}')).toBe(0);
    for (const stage of Object.values(QueueStage)) expect(sample(text, `bftkube_queue_depth{stage="${stage}"}`)).toBe(0);
    for (const reason of Object.values(DropReason)) expect(sample(text, `bftkube_dropped_inputs_total{reason="${reason}"}`)).toBe(0);
    for (const reason of Object.values(BusyReason)) expect(sample(text, `bftkube_busy_replies_total{reason="${reason}"}`)).toBe(0);
  });

  it('records decisions, executions, leader changes, latency, queues, drops, connections and BUSY answers', async () => {
    const registry = new Registry();
    const metrics = new ReplicaMetrics(registry);
    metrics.decided(41, 3);
    metrics.decided(42, 100);
    metrics.executed('ordered', 103);
    metrics.executed('unordered', 2);
    metrics.leaderChanged(1);
    metrics.leaderChanged(2);
    metrics.observeRequestLatency('ordered', 0.003);
    metrics.setQueueDepth('verify', 17);
    metrics.dropped(DropReason.BAD_SIGNATURE);
    metrics.dropped(DropReason.BAD_SIGNATURE);
    metrics.setReplicaConnections(3);
    metrics.busy(BusyReason.PENDING_FULL);
    const text = await registry.metrics();
    expect(sample(text, 'bftkube_decided_instances_total')).toBe(2);
    expect(sample(text, 'bftkube_last_decided_cid')).toBe(42);
    expect(sample(text, 'bftkube_batch_size_requests_count')).toBe(2);
    expect(sample(text, 'bftkube_batch_size_requests_sum')).toBe(103);
    expect(sample(text, 'bftkube_batch_size_requests_bucket{le="4"}')).toBe(1);
    expect(sample(text, 'bftkube_batch_size_requests_bucket{le="128"}')).toBe(2);
    expect(sample(text, 'bftkube_requests_executed_total{kind="ordered"}')).toBe(103);
    expect(sample(text, 'bftkube_requests_executed_total{kind="unordered"}')).toBe(2);
    expect(sample(text, 'bftkube_leader_changes_total')).toBe(2);
    expect(sample(text, 'bftkube_regency')).toBe(2);
    expect(sample(text, 'bftkube_request_duration_seconds_count{kind="ordered"}')).toBe(1);
    expect(sample(text, 'bftkube_request_duration_seconds_bucket{le="0.0025",kind="ordered"}')).toBe(0);
    expect(sample(text, 'bftkube_request_duration_seconds_bucket{le="0.005",kind="ordered"}')).toBe(1);
    expect(sample(text, 'bftkube_queue_depth{stage="verify"}')).toBe(17);
    expect(sample(text, 'bftkube_dropped_inputs_total{reason="bad_signature"}')).toBe(2);
    expect(sample(text, 'bftkube_replica_connections')).toBe(3);
    expect(sample(text, 'bftkube_busy_replies_total{reason="pending_full"}')).toBe(1);
  });

  it('bounds distinct reason labels, counting the excess as "other"', async () => {
    const registry = new Registry();
    const metrics = new ReplicaMetrics(registry);
    for (let i = 0; i < limits.metricLabelValuesMax + 10; i++) metrics.dropped(`made_up_${i}`);
    const text = await registry.metrics();
    const series = text.split('\n').filter((line) => line.startsWith('bftkube_dropped_inputs_total{'));
    expect(series.length).toBe(limits.metricLabelValuesMax + 1);
    expect(sample(text, `bftkube_dropped_inputs_total{reason="${otherLabelValue}"}`)).toBeGreaterThan(0);
  });

  it('registers only on the registry it is given, so two replicas in one process do not collide', async () => {
    const first = new ReplicaMetrics(new Registry());
    const second = new ReplicaMetrics(new Registry());
    first.decided(1, 1);
    expect(sample(await second.registry.metrics(), 'bftkube_decided_instances_total')).toBe(0);
    expect(await globalRegistry.getSingleMetric('bftkube_decided_instances_total')).toBeUndefined();
  });

  it('gives the exposition with the registry’s content type', async () => {
    const metrics = new ReplicaMetrics(new Registry());
    const exposition = await metrics.exposition();
    expect(exposition.contentType).toMatch(/^text\/plain; version=0\.0\.4/);
    expect(exposition.body).toContain('bftkube_regency 0');
  });
});
