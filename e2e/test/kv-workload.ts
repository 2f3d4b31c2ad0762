// The key-value workload pod (e2e/fixtures/kv-workload.ts, image bftkube/e2e-kv-workload) as tests drive
// it: started as an application would run it (the cluster's connection file and client Secret mounted),
// watched while faults happen, then finished: no acknowledged write lost, and the history checked by
// Porcupine.

import { expect } from 'vitest';
import type { HistoryEvent } from '../../replica/test/linearizability/history.ts';
import { checkHistory } from '../../replica/test/linearizability/porcupine.ts';
import { eventually, kubectl } from './kube.ts';

export interface WorkloadStats {
  readonly acknowledgedWrites: number;
  readonly reads: number;
  readonly unanswered: number;
  readonly lastError: string | null;
}

interface WorkloadResult extends WorkloadStats {
  readonly lost: readonly unknown[];
  readonly history: ReadonlyArray<Omit<HistoryEvent, 'callNs' | 'returnNs'> & { callNs: string; returnNs: string | null }>;
}

function workloadPod(namespace: string, cluster: string): string {
  return JSON.stringify({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'workload', namespace, labels: { app: 'kv-workload' } },
    spec: {
      restartPolicy: 'Never',
      terminationGracePeriodSeconds: 5,
      automountServiceAccountToken: false,
      containers: [
        {
          name: 'workload',
          image: 'bftkube/e2e-kv-workload:test',
          env: [{ name: 'POD_IP', valueFrom: { fieldRef: { fieldPath: 'status.podIP' } } }],
          readinessProbe: { httpGet: { path: '/healthz', port: 8080 }, periodSeconds: 1 },
          volumeMounts: [
            { name: 'connection', mountPath: '/etc/bftkube', readOnly: true },
            { name: 'client-keys', mountPath: '/var/run/bftkube/client', readOnly: true },
          ],
        },
      ],
      volumes: [
        // What an application mounts: the connection file the operator publishes and the client Secret.
        { name: 'connection', configMap: { name: `${cluster}-config`, items: [{ key: 'client.json', path: 'client.json' }] } },
        { name: 'client-keys', secret: { secretName: `${cluster}-client` } },
      ],
    },
  });
}

export class KvWorkload {
  readonly namespace: string;
  private readonly ip: string;

  private constructor(namespace: string, ip: string) {
    this.namespace = namespace;
    this.ip = ip;
  }

  /** Starts the workload pod against cluster `cluster` and waits until it is ready. */
  static async start(namespace: string, cluster: string): Promise<KvWorkload> {
    await kubectl(['apply', '-f', '-'], workloadPod(namespace, cluster));
    await kubectl(['-n', namespace, 'wait', '--for=condition=Ready', 'pod/workload', '--timeout=120s']);
    const ip = (await kubectl(['-n', namespace, 'get', 'pod', 'workload', '-o', 'jsonpath={.status.podIP}'])).trim();
    return new KvWorkload(namespace, ip);
  }

  private async call<T>(path: string, init?: RequestInit, timeoutMs = 5_000): Promise<T> {
    const response = await fetch(`http://${this.ip}:8080${path}`, { ...init, signal: AbortSignal.timeout(timeoutMs) });
    const body = (await response.json()) as T;
    if (!response.ok) throw new Error(`BFT_ERR_TEST_POD_HTTP: ${path} → ${response.status} ${JSON.stringify(body)}`);
    return body;
  }

  stats(): Promise<WorkloadStats> {
    return this.call<WorkloadStats>('/stats');
  }

  /** Waits until at least `more` writes more than now are acknowledged: the cluster serves. */
  async progresses(what: string, more: number, timeoutMs = 120_000): Promise<void> {
    const before = (await this.stats()).acknowledgedWrites;
    await eventually(what, timeoutMs, async () => (await this.stats()).acknowledgedWrites >= before + more);
  }

  /** Stops the load, reads every acknowledged key back and checks it all; returns the totals. */
  async finishAndCheck(label: string, acknowledgedAtLeast: number): Promise<WorkloadStats> {
    const result = await this.call<WorkloadResult>('/finish', { method: 'POST' }, 120_000);
    expect(result.lost).toEqual([]);
    expect(result.acknowledgedWrites).toBeGreaterThanOrEqual(acknowledgedAtLeast);
    const history = result.history.map((event) => ({ ...event, callNs: BigInt(event.callNs), returnNs: event.returnNs === null ? null : BigInt(event.returnNs) }) as HistoryEvent);
    const check = await checkHistory(history);
    process.stderr.write(`${label}: ${result.acknowledgedWrites} acknowledged writes, ${result.reads} reads, ${result.unanswered} calls unanswered (last: ${result.lastError ?? 'none'}), ${history.length} operations checked: ${check.result}\n`);
    expect(check.result).toBe('ok');
    await kubectl(['-n', this.namespace, 'delete', 'pod', 'workload', '--wait=false']);
    return result;
  }
}
