// The operator as a process against the real control plane: it creates a BftCluster's keys,
// configuration, services, volumes and replica pods (run by the local node agent), reports the cluster
// Ready with true columns, heals a deleted pod and a lost volume, and everything it made goes with the
// BftCluster.

import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually, freshNamespace, kubectl } from '../../e2e/test/kube.ts';
import { crdPath } from './api/crd-file.ts';
import { OperatorProcess } from './testing/operator-process.ts';

const examples = join(crdPath, '..', 'examples');

let operator: OperatorProcess | null = null;
let namespace = '';

function startOperator(): OperatorProcess {
  return new OperatorProcess({ namespace, identity: `operator-test-${process.pid}`, logName: 'operator-test.log' });
}

async function stopOperator(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  const stopping = operator;
  operator = null;
  await stopping?.stop(signal);
}

async function condition(name: string, type: string): Promise<string> {
  return kubectl(['-n', namespace, 'get', 'bftcluster', name, '-o', `jsonpath={.status.conditions[?(@.type=="${type}")].status}`]);
}

describe('the operator on a real control plane', () => {
  beforeAll(async () => {
    await kubectl(['apply', '--server-side', '-f', crdPath]);
    await kubectl(['wait', '--for=condition=Established', 'crd/bftclusters.bftkube.dev', '--timeout=60s']);
    namespace = await freshNamespace('op');
    operator = startOperator();
  });

  afterAll(async () => {
    await stopOperator();
    await kubectl(['delete', 'namespace', namespace, '--wait=false']);
  });

  it('creates a 4-replica bft cluster that becomes Ready, with true columns', async () => {
    await kubectl(['-n', namespace, 'apply', '-f', join(examples, 'bft-4.yaml')]);
    await kubectl(['-n', namespace, 'wait', '--for=condition=Ready', 'bftcluster/kv', '--timeout=180s']);
    const table = await kubectl(['-n', namespace, 'get', 'bftclusters']);
    expect(table).toMatch(/kv\s+4\s+4\s+1\s+0\s+\d\s+True\s/);
    const pods = await kubectl(['-n', namespace, 'get', 'pods', '-l', 'bftkube.dev/cluster=kv', '-o', 'name']);
    expect(pods.trim().split('\n').sort()).toEqual(['pod/kv-0', 'pod/kv-1', 'pod/kv-2', 'pod/kv-3']);
    const secrets = await kubectl(['-n', namespace, 'get', 'secrets', '-l', 'bftkube.dev/cluster=kv', '-o', 'name']);
    for (const name of ['kv-ca', 'kv-view-manager', 'kv-client', 'kv-operator-client', 'kv-replica-0', 'kv-replica-3']) expect(secrets).toContain(`secret/${name}`);
    expect(await kubectl(['-n', namespace, 'get', 'pdb', 'kv', '-o', 'jsonpath={.spec.maxUnavailable}'])).toBe('1');
  });

  it('recreates a deleted replica pod with the same id and volume: Degraded, then Ready again', async () => {
    await kubectl(['-n', namespace, 'delete', 'pod', 'kv-2', '--wait=false']);
    await eventually('the cluster reports a replica not ready', 60_000, async () => (await condition('kv', 'Ready')) === 'False');
    await kubectl(['-n', namespace, 'wait', '--for=condition=Ready', 'bftcluster/kv', '--timeout=180s']);
    expect(await kubectl(['-n', namespace, 'get', 'pod', 'kv-2', '-o', 'jsonpath={.spec.volumes[?(@.name=="data")].persistentVolumeClaim.claimName}'])).toBe('data-kv-2');
    // kubectl describe / kubectl events show what happened: a Warning when it degraded, Ready when it healed.
    await eventually('a Degraded warning that names replica 2', 30_000, async () => {
      const events = JSON.parse(
        await kubectl(['-n', namespace, 'get', 'events.events.k8s.io', '--field-selector', 'regarding.name=kv,regarding.kind=BftCluster', '-o', 'json']),
      ) as { items: Array<{ reason: string; type: string; note: string }> };
      return events.items.some((e) => e.reason === 'Degraded' && e.type === 'Warning' && e.note.includes('kv-2'));
    });
  });

  it('converges without duplicates after the operator is killed -9 and started again', async () => {
    const uidBefore = await kubectl(['-n', namespace, 'get', 'pod', 'kv-1', '-o', 'jsonpath={.metadata.uid}']);
    await stopOperator('SIGKILL');
    await kubectl(['-n', namespace, 'delete', 'pod', 'kv-1', '--wait=true', '--timeout=60s']);
    operator = startOperator();
    await eventually('a new kv-1', 120_000, async () => {
      const uid = await kubectl(['-n', namespace, 'get', 'pod', 'kv-1', '-o', 'jsonpath={.metadata.uid}']).catch(() => '');
      return uid !== '' && uid !== uidBefore;
    });
    await kubectl(['-n', namespace, 'wait', '--for=condition=Ready', 'pod/kv-1', '--timeout=120s']);
    await eventually('the cluster reports all 4 ready again', 120_000, async () => (await kubectl(['-n', namespace, 'get', 'bftcluster', 'kv', '-o', 'jsonpath={.status.readyReplicas}'])) === '4');
    await kubectl(['-n', namespace, 'wait', '--for=condition=Ready', 'bftcluster/kv', '--timeout=180s']);
    const secrets = (await kubectl(['-n', namespace, 'get', 'secrets', '-l', 'bftkube.dev/cluster=kv', '-o', 'name'])).trim().split('\n');
    expect(secrets.length).toBe(new Set(secrets).size);
    expect(secrets.filter((s) => s.startsWith('secret/kv-ca')).length).toBe(1);
  });

  it('the pause annotation stops reconciling, says so, and lifting it resumes', async () => {
    await kubectl(['-n', namespace, 'annotate', 'bftcluster', 'kv', 'bftkube.dev/reconciliation-paused=true']);
    await eventually('the cluster reports reconciliation paused', 60_000, async () => (await condition('kv', 'ReconciliationPaused')) === 'True');
    await kubectl(['-n', namespace, 'delete', 'pod', 'kv-3', '--wait=true', '--timeout=60s']);
    // Paused: the operator only reports. Give it several passes' worth of time to (wrongly) act.
    await new Promise((resolve) => setTimeout(resolve, 8_000));
    expect(await kubectl(['-n', namespace, 'get', 'pods', '-l', 'bftkube.dev/replica-id=3', '-o', 'name'])).toBe('');
    expect(await condition('kv', 'Ready')).toBe('False');
    await kubectl(['-n', namespace, 'annotate', 'bftcluster', 'kv', 'bftkube.dev/reconciliation-paused-']);
    await eventually('kv-3 back', 120_000, async () => (await kubectl(['-n', namespace, 'get', 'pod', 'kv-3', '-o', 'name']).catch(() => '')).includes('kv-3'));
    await eventually('the cluster Ready again', 180_000, async () => (await condition('kv', 'Ready')) === 'True' && (await condition('kv', 'ReconciliationPaused')) === 'False');
  });

  it('a changed image rolls the replica pods one at a time, followers first and the leader last', { timeout: 600_000 }, async () => {
    type Pod = {
      metadata: { name: string; labels: Record<string, string>; deletionTimestamp?: string };
      spec: { containers: Array<{ image: string }> };
      status: { conditions?: Array<{ type: string; status: string }> };
    };
    const observe = async () => {
      const pods = (JSON.parse(await kubectl(['-n', namespace, 'get', 'pods', '-l', 'bftkube.dev/cluster=kv', '-o', 'json'])) as { items: Pod[] }).items;
      const isReady = (pod: Pod) => pod.status.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') === true;
      const isUpdated = (pod: Pod) => pod.spec.containers[0]?.image === 'bftkube/replica:0.1.1';
      const updated = pods.filter(isUpdated).map((pod) => Number(pod.metadata.labels['bftkube.dev/replica-id']));
      // Replicas out because of the update: pod gone or terminating, or replaced and not ready yet.
      const replacing = 4 - pods.length + pods.filter((pod) => pod.metadata.deletionTimestamp !== undefined || (isUpdated(pod) && !isReady(pod))).length;
      return { ready: pods.filter(isReady).length, updated, replacing };
    };
    const order: number[] = [];
    let mostReplacing = 0;
    let leaderBeforeLast: string | null = null;
    await kubectl(['-n', namespace, 'patch', 'bftcluster', 'kv', '--type=merge', '-p', '{"spec":{"image":"bftkube/replica:0.1.1"}}']);
    await eventually('every pod runs the new image and is ready', 540_000, async () => {
      const now = await observe();
      mostReplacing = Math.max(mostReplacing, now.replacing);
      for (const id of now.updated) if (!order.includes(id)) order.push(id);
      if (order.length === 3 && leaderBeforeLast === null) leaderBeforeLast = await kubectl(['-n', namespace, 'get', 'bftcluster', 'kv', '-o', 'jsonpath={.status.leader}']);
      return now.updated.length === 4 && now.ready === 4;
    });
    // One replica replaced at a time, never two.
    expect(mostReplacing).toBe(1);
    expect([...order].sort()).toEqual([0, 1, 2, 3]);
    expect(String(order[3])).toBe(leaderBeforeLast);
    await kubectl(['-n', namespace, 'wait', '--for=condition=Ready', 'bftcluster/kv', '--timeout=180s']);
  });

  it('deleting the BftCluster removes its pods, services, secrets and (retention Delete) volumes', async () => {
    await kubectl(['-n', namespace, 'delete', 'bftcluster', 'kv', '--wait=true', '--timeout=120s']);
    await eventually('everything the cluster owned is gone', 120_000, async () => {
      const left = await kubectl(['-n', namespace, 'get', 'pods,services,secrets,configmaps,pvc,pdb', '-l', 'bftkube.dev/cluster=kv', '-o', 'name']);
      return left.trim() === '';
    });
  });
});
