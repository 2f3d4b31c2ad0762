// Scaling a running cluster through reconfiguration, with the operator as the View Manager (DESIGN §8,
// §9 "scale 4 → 7 → 4"), under an application's load: kubectl scale adds replicas one at a time (the
// last one raises f to 2), each catching up from its peers, then removes them again (the first removal
// lowers f), deleting their pods, volumes and keys. No acknowledged write is lost and the history is
// linearizable.

import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually, freshNamespace, kubectl } from '../../e2e/test/kube.ts';
import { KvWorkload } from '../../e2e/test/kv-workload.ts';
import { crdPath } from './api/crd-file.ts';
import { OperatorProcess } from './testing/operator-process.ts';

const examples = join(crdPath, '..', 'examples');

describe('scaling a BftCluster through reconfiguration', () => {
  let namespace = '';
  let operator: OperatorProcess | null = null;
  let workload: KvWorkload;

  const field = (path: string) => kubectl(['-n', namespace, 'get', 'bftcluster', 'kv', '-o', `jsonpath={${path}}`]);
  const ids = async (kinds: string) =>
    (await kubectl(['-n', namespace, 'get', kinds, '-l', 'bftkube.dev/cluster=kv,app.kubernetes.io/component=replica', '-o', 'jsonpath={.items[*].metadata.labels.bftkube\\.dev/replica-id}']))
      .split(' ')
      .filter((id) => id !== '')
      .map(Number)
      .sort((a, b) => a - b);
  /** Waits until the cluster runs `members` with `f`, every member ready, and the operator has nothing pending. */
  const runs = async (members: number[], f: number) => {
    await eventually(`view ${JSON.stringify(members)} with f=${f}, all ready`, 300_000, async () => {
      const view = (await field('.status.view.members')).trim();
      return (
        view === JSON.stringify(members) &&
        (await field('.status.view.f')) === String(f) &&
        (await field('.status.readyReplicas')) === String(members.length) &&
        (await field('.status.conditions[?(@.type=="Ready")].status')) === 'True' &&
        (await field('.status.pendingReconfiguration')) === ''
      );
    });
  };

  beforeAll(async () => {
    await kubectl(['apply', '--server-side', '-f', crdPath]);
    await kubectl(['wait', '--for=condition=Established', 'crd/bftclusters.bftkube.dev', '--timeout=60s']);
    namespace = await freshNamespace('scale');
    operator = new OperatorProcess({ namespace, identity: `scale-operator-${process.pid}`, logName: 'operator-scale-test.log' });
    await kubectl(['-n', namespace, 'apply', '-f', join(examples, 'bft-4.yaml')]);
    await kubectl(['-n', namespace, 'wait', '--for=condition=Ready', 'bftcluster/kv', '--timeout=240s']);
    workload = await KvWorkload.start(namespace, 'kv');
    await workload.progresses('the first acknowledged writes', 20);
  });

  afterAll(async () => {
    await operator?.stop();
    await kubectl(['-n', namespace, 'delete', 'bftcluster', 'kv', '--wait=false']).catch(() => undefined);
    await kubectl(['delete', 'namespace', namespace, '--wait=false']);
  });

  it('kubectl scale 4 → 7: replicas 4, 5 and 6 join one at a time, f becomes 2', { timeout: 600_000 }, async () => {
    await kubectl(['-n', namespace, 'scale', 'bftcluster/kv', '--replicas=7']);
    await runs([0, 1, 2, 3, 4, 5, 6], 2);
    expect(await ids('pods')).toEqual([0, 1, 2, 3, 4, 5, 6]);
    expect(await kubectl(['-n', namespace, 'get', 'pdb', 'kv', '-o', 'jsonpath={.spec.maxUnavailable}'])).toBe('2');
    const table = await kubectl(['-n', namespace, 'get', 'bftclusters']);
    expect(table).toMatch(/kv\s+7\s+7\s+2\s+3\s+\d\s+True\s/);
    await workload.progresses('writes in the 7-replica cluster', 20);
  });

  it('kubectl scale 7 → 4: three replicas leave, f back to 1, their pods, volumes and keys go', { timeout: 600_000 }, async () => {
    const leader = Number((await field('.status.leader')).trim());
    await kubectl(['-n', namespace, 'scale', 'bftcluster/kv', '--replicas=4']);
    // The highest ids go first, but never the leader (that would force a leader change).
    const removed = [6, 5, 4, 3, 2, 1, 0].filter((id) => id !== leader).slice(0, 3);
    const kept = [0, 1, 2, 3, 4, 5, 6].filter((id) => !removed.includes(id));
    await runs(kept, 1);
    await eventually('the removed replicas’ pods, volumes and Secrets gone', 120_000, async () => {
      const pods = await ids('pods');
      const claims = await ids('pvc');
      const secrets = (await kubectl(['-n', namespace, 'get', 'secrets', '-l', 'bftkube.dev/cluster=kv,app.kubernetes.io/component=replica', '-o', 'name'])).trim().split('\n').length;
      return JSON.stringify(pods) === JSON.stringify(kept) && JSON.stringify(claims) === JSON.stringify(kept) && secrets === 4;
    });
    await workload.progresses('writes in the 4-replica cluster', 20);
  });

  it('no acknowledged write was lost across the view changes, and the history is linearizable', async () => {
    await workload.finishAndCheck('scaling workload', 60);
    const reasons = (await kubectl(['-n', namespace, 'get', 'events.events.k8s.io', '--field-selector', 'regarding.name=kv,regarding.kind=BftCluster', '-o', 'jsonpath={.items[*].reason}'])).split(' ');
    expect(reasons.filter((reason) => reason === 'Reconfigured').length).toBe(6);
  });
});
