// "Kill the operator between any two steps of creation → on restart it converges without duplicates":
// the operator is started with a crash injected after its first write, again and again, so that it dies
// once after every single write of creating a cluster (each Secret, the ConfigMap, each Service, the PDB,
// each volume, each pod, each status update), and each successor starts from what the last one left.
// The same for scaling: it dies after recording the change, after submitting it (decided, not yet
// recorded), after recording the new view, and after each object of the new replica.

import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually, freshNamespace, kubectl } from '../../e2e/test/kube.ts';
import { crdPath } from './api/crd-file.ts';
import { OperatorProcess } from './testing/operator-process.ts';

const examples = join(crdPath, '..', 'examples');
/** An operator that lives this long without writing has nothing left to do. */
const quietAliveMs = 15_000;
/** A bound on the restarts: creating a 4-replica cluster takes about 25 writes. */
const restartsMax = 80;

describe('an operator killed after every step of creating a cluster', () => {
  let namespace = '';
  let operator: OperatorProcess | null = null;

  beforeAll(async () => {
    await kubectl(['apply', '--server-side', '-f', crdPath]);
    await kubectl(['wait', '--for=condition=Established', 'crd/bftclusters.bftkube.dev', '--timeout=60s']);
    namespace = await freshNamespace('opcrash');
  });

  afterAll(async () => {
    await operator?.stop('SIGKILL');
    await kubectl(['delete', 'namespace', namespace, '--wait=false']);
  });

  /**
   * Restarts an operator that dies after its `writesBeforeKill(restart)`-th write until one stays alive
   * with nothing to write; returns the kills.
   */
  const crashUntilQuiet = async (writesBeforeKill: (restart: number) => number = () => 1): Promise<number> => {
    let kills = 0;
    for (let restart = 0; restart < restartsMax; restart++) {
      operator = new OperatorProcess({ namespace, identity: `crashing-operator-${process.pid}`, logName: 'operator-crash-test.log', killAfterWrites: writesBeforeKill(restart) });
      const outcome = await Promise.race([operator.exited, new Promise<'alive'>((resolve) => setTimeout(() => resolve('alive'), quietAliveMs))]);
      if (outcome === 'alive') break;
      expect(outcome.signal, `the operator died of something other than the injected kill: exit code ${outcome.code}`).toBe('SIGKILL');
      kills++;
    }
    expect(operator?.running, `the operator was still writing after ${restartsMax} restarts`).toBe(true);
    return kills;
  };

  it('converges to a Ready cluster with exactly one of each object', { timeout: 900_000 }, async () => {
    await kubectl(['-n', namespace, 'apply', '-f', join(examples, 'bft-4.yaml')]);
    const kills = await crashUntilQuiet();
    // Every step of creation was cut once: Secrets (8), ConfigMap, Services and PDB (3), volumes (4) and
    // their record, pods (4), then status updates as the pods come up.
    expect(kills).toBeGreaterThanOrEqual(21);
    // The replicas may still be coming up (status updates to come): an operator without a crash finishes.
    await operator?.stop('SIGKILL');
    operator = new OperatorProcess({ namespace, identity: `crashing-operator-${process.pid}`, logName: 'operator-crash-test.log' });
    await kubectl(['-n', namespace, 'wait', '--for=condition=Ready', 'bftcluster/kv', '--timeout=180s']);

    const names = async (kinds: string) => (await kubectl(['-n', namespace, 'get', kinds, '-l', 'bftkube.dev/cluster=kv', '-o', 'name'])).trim().split('\n').sort();
    expect(await names('secrets')).toEqual(
      ['kv-ca', 'kv-client', 'kv-operator-client', 'kv-replica-0', 'kv-replica-1', 'kv-replica-2', 'kv-replica-3', 'kv-view-manager'].map((n) => `secret/${n}`),
    );
    expect(await names('pods')).toEqual(['kv-0', 'kv-1', 'kv-2', 'kv-3'].map((n) => `pod/${n}`));
    expect(await names('pvc')).toEqual(['data-kv-0', 'data-kv-1', 'data-kv-2', 'data-kv-3'].map((n) => `persistentvolumeclaim/${n}`));
    expect(await names('services')).toEqual(['service/kv', 'service/kv-replicas']);
    expect(await names('configmaps')).toEqual(['configmap/kv-config']);
    // No replica of a new cluster was started as one recovering a lost volume (it could never catch up).
    const joining = await kubectl(['-n', namespace, 'get', 'pods', '-l', 'bftkube.dev/cluster=kv', '-o', 'jsonpath={.items[*].spec.containers[0].env[?(@.name=="BFTKUBE_JOINS_RUNNING_CLUSTER")].value}']);
    expect(joining.trim()).toBe('');
    expect(await kubectl(['-n', namespace, 'get', 'bftcluster', 'kv', '-o', 'jsonpath={.status.view.members}'])).toBe('[0,1,2,3]');
  });

  it('scales 4 → 5 through a reconfiguration while killed after every step, ending in view 1 with replica 4', { timeout: 900_000 }, async () => {
    await operator?.stop('SIGKILL');
    await kubectl(['-n', namespace, 'scale', 'bftcluster/kv', '--replicas=5']);
    // Killed after 1, 1, 2, 2, 3, 3... writes: always dying after its first write would submit the pending
    // change and die before recording it, forever. This way each point is cut once, then passed: after
    // recording the change; after submitting it; after recording it as committed; after each object of the
    // new replica.
    const kills = await crashUntilQuiet((restart) => 1 + Math.floor(restart / 2));
    // At least: after recording the change, after submitting it, after recording it committed, and later.
    expect(kills).toBeGreaterThanOrEqual(4);
    await operator?.stop('SIGKILL');
    operator = new OperatorProcess({ namespace, identity: `crashing-operator-${process.pid}`, logName: 'operator-crash-test.log' });
    await eventually('view 1 with 5 ready replicas', 300_000, async () => {
      const get = (path: string) => kubectl(['-n', namespace, 'get', 'bftcluster', 'kv', '-o', `jsonpath={${path}}`]);
      return (await get('.status.view.number')) === '1' && (await get('.status.view.members')) === '[0,1,2,3,4]' && (await get('.status.readyReplicas')) === '5';
    });
    const names = async (kinds: string) => (await kubectl(['-n', namespace, 'get', kinds, '-l', 'bftkube.dev/cluster=kv', '-o', 'name'])).trim().split('\n').sort();
    expect(await names('pods')).toEqual(['kv-0', 'kv-1', 'kv-2', 'kv-3', 'kv-4'].map((n) => `pod/${n}`));
    // One change, applied once: the resubmitted request was refused as stale, not applied twice; nothing refused for good.
    expect(await kubectl(['-n', namespace, 'get', 'bftcluster', 'kv', '-o', 'jsonpath={.status.conditions[?(@.type=="Stalled")].status}'])).toBe('False');
    expect(await kubectl(['-n', namespace, 'get', 'configmap', 'kv-config', '-o', 'jsonpath={.data.refused\.json}'])).toBe('');
  });
});
