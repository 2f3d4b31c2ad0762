// The user's path, end to end on the real local control plane: helm install the operator (it runs as a
// pod, with its chart's least-privilege RBAC and in-cluster credentials), kubectl apply a 4-replica bft
// cluster, wait for Ready, and run an application pod that writes and reads through the cluster with
// the client Secret and the replicas' DNS names. Under that load: the leader's pod deleted, then a
// replica's pod and volume deleted (it restarts amnesic: it may have voted, and must not contradict
// itself) → Degraded, then Ready again, no acknowledged write lost, and the
// history linearizable (Porcupine). Then the cluster is deleted and the chart uninstalled: nothing stays.

import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { crdPath } from '../../operator/src/api/crd-file.ts';
import { repoDir } from '../src/cluster/layout.ts';
import { eventually, freshNamespace, helm, kubectl } from './kube.ts';
import { KvWorkload } from './kv-workload.ts';

const chart = join(repoDir, 'helm', 'bftkube-operator');
const example = join(crdPath, '..', 'examples', 'bft-4.yaml');
const release = 'bftkube-operator';

describe('the operator installed with helm, running a cluster an application uses', () => {
  let operatorNamespace = '';
  let namespace = '';
  let workload: KvWorkload;
  const clusterField = (path: string) => kubectl(['-n', namespace, 'get', 'bftcluster', 'kv', '-o', `jsonpath={${path}}`]);
  const condition = (type: string) => clusterField(`.status.conditions[?(@.type=="${type}")].status`);
  const podUid = (name: string) => kubectl(['-n', namespace, 'get', 'pod', name, '-o', 'jsonpath={.metadata.uid}']).catch(() => '');
  const progresses = (what: string, more: number) => workload.progresses(what, more);
  const backToReady = async () => {
    await eventually('all 4 replicas ready again', 300_000, async () => (await clusterField('.status.readyReplicas')) === '4' && (await condition('Ready')) === 'True');
  };

  beforeAll(async () => {
    operatorNamespace = await freshNamespace('bftkube-system');
    namespace = await freshNamespace('app');
  });

  afterAll(async () => {
    await helm(['uninstall', release, '-n', operatorNamespace, '--wait', '--timeout', '60s']).catch(() => undefined);
    await kubectl(['delete', 'namespace', namespace, operatorNamespace, '--wait=false']);
  });

  it('helm install: the operator runs in its pod and takes the leader lease', async () => {
    await helm(['install', release, chart, '-n', operatorNamespace, '--wait', '--timeout', '120s']);
    const pod = (await kubectl(['-n', operatorNamespace, 'get', 'pods', '-l', `app.kubernetes.io/instance=${release}`, '-o', 'jsonpath={.items[0].metadata.name}'])).trim();
    expect(pod).toMatch(/^bftkube-operator-/);
    await eventually('the operator pod holds the lease', 60_000, async () => (await kubectl(['-n', operatorNamespace, 'get', 'lease', 'bftkube-operator', '-o', 'jsonpath={.spec.holderIdentity}'])) === pod);
    const podIp = (await kubectl(['-n', operatorNamespace, 'get', 'pod', pod, '-o', 'jsonpath={.status.podIP}'])).trim();
    const readyz = await fetch(`http://${podIp}:8080/readyz`, { signal: AbortSignal.timeout(5_000) });
    expect(await readyz.json()).toEqual({ ready: true, leader: true, synced: true });
    const metrics = await (await fetch(`http://${podIp}:8080/metrics`, { signal: AbortSignal.timeout(5_000) })).text();
    expect(metrics).toMatch(/^bftkube_operator_leader 1$/m);
  });

  it('kubectl apply a 4-replica bft cluster: Ready, with true columns', async () => {
    await kubectl(['-n', namespace, 'apply', '-f', example]);
    await kubectl(['-n', namespace, 'wait', '--for=condition=Ready', 'bftcluster/kv', '--timeout=240s']);
    const table = await kubectl(['-n', namespace, 'get', 'bftclusters']);
    expect(table).toMatch(/kv\s+4\s+4\s+1\s+0\s+\d\s+True\s/);
    expect(JSON.parse(await clusterField('.status.view.members'))).toEqual([0, 1, 2, 3]);
    // Events are written best effort, after the status: give the last one a moment.
    await eventually('events with reasons on the BftCluster', 30_000, async () => {
      const reasons = (await kubectl(['-n', namespace, 'get', 'events.events.k8s.io', '--field-selector', 'regarding.name=kv,regarding.kind=BftCluster', '-o', 'jsonpath={.items[*].reason}'])).split(' ');
      return reasons.includes('ReplicaCreated') && reasons.includes('Ready');
    });
  });

  it('an application pod writes and reads through the cluster with the client Secret and DNS names', async () => {
    workload = await KvWorkload.start(namespace, 'kv');
    await progresses('the first acknowledged writes', 30);
    expect((await workload.stats()).reads).toBeGreaterThan(0);
  });

  it('the leader pod deleted under load: Degraded, then Ready again, and writes go on', async () => {
    const leader = (await clusterField('.status.leader')).trim();
    expect(leader).toMatch(/^[0-3]$/);
    const uid = await podUid(`kv-${leader}`);
    await kubectl(['-n', namespace, 'delete', 'pod', `kv-${leader}`, '--wait=false']);
    await eventually('the cluster reports itself degraded', 60_000, async () => (await condition('Degraded')) === 'True');
    await eventually(`a new kv-${leader}`, 120_000, async () => ![uid, ''].includes(await podUid(`kv-${leader}`)));
    await backToReady();
    await progresses('writes after the leader came back', 30);
  });

  it('a replica pod and its volume deleted under load: it starts amnesic on a fresh volume and catches up from its peers', async () => {
    const leader = Number((await clusterField('.status.leader')).trim());
    const id = (leader + 1) % 4;
    const claimUid = await kubectl(['-n', namespace, 'get', 'pvc', `data-kv-${id}`, '-o', 'jsonpath={.metadata.uid}']);
    await kubectl(['-n', namespace, 'delete', 'pvc', `data-kv-${id}`, '--wait=false']);
    await kubectl(['-n', namespace, 'delete', 'pod', `kv-${id}`, '--wait=false']);
    await eventually('the cluster reports itself degraded', 60_000, async () => (await condition('Degraded')) === 'True');
    await eventually(`a new volume for kv-${id}`, 120_000, async () => {
      const uid = await kubectl(['-n', namespace, 'get', 'pvc', `data-kv-${id}`, '-o', 'jsonpath={.metadata.uid}']).catch(() => '');
      return uid !== '' && uid !== claimUid;
    });
    await backToReady();
    const joining = await kubectl(['-n', namespace, 'get', 'pod', `kv-${id}`, '-o', 'jsonpath={.spec.containers[0].env[?(@.name=="BFTKUBE_JOINS_RUNNING_CLUSTER")].value}']);
    expect(joining).toBe('true');
    await progresses('writes after the replica caught up', 30);
  });

  it('no acknowledged write was lost, and the history is linearizable', async () => {
    await workload.finishAndCheck('operator e2e workload', 120);
  });

  it('deleting the BftCluster removes what it owned; helm uninstall leaves nothing of the operator', async () => {
    await kubectl(['-n', namespace, 'delete', 'bftcluster', 'kv', '--wait=true', '--timeout=120s']);
    await eventually('everything the cluster owned is gone', 120_000, async () => {
      const left = await kubectl(['-n', namespace, 'get', 'pods,services,secrets,configmaps,pvc,pdb', '-l', 'bftkube.dev/cluster=kv', '-o', 'name']);
      return left.trim() === '';
    });

    await helm(['uninstall', release, '-n', operatorNamespace, '--wait', '--timeout', '60s']);
    expect(await helm(['list', '-n', operatorNamespace, '-q'])).toBe('');
    await eventually('the operator namespace holds only what Kubernetes puts in every namespace', 120_000, async () => {
      const left = await kubectl(['-n', operatorNamespace, 'get', 'deployments,replicasets,pods,services,serviceaccounts,roles,rolebindings,leases,configmaps,secrets', '-o', 'name']);
      return left.trim().split('\n').sort().join(' ') === 'configmap/kube-root-ca.crt serviceaccount/default';
    });
    const clusterWide = await kubectl(['get', 'clusterroles,clusterrolebindings', '-l', `app.kubernetes.io/instance=${release}`, '-o', 'name']);
    expect(clusterWide.trim()).toBe('');
    // Helm never deletes CRDs, so that uninstalling the operator cannot delete users' clusters and data.
    expect(await kubectl(['get', 'crd', 'bftclusters.bftkube.dev', '-o', 'name'])).toContain('bftclusters.bftkube.dev');
  });
});
