import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually, freshNamespace, fromPod, httpImage, kubectl } from './kube.ts';

interface Pod {
  metadata: { uid: string };
  status: { podIP?: string; phase?: string; conditions?: Array<{ type: string; status: string }>;
    containerStatuses?: Array<{ ready: boolean; restartCount: number; lastState?: { terminated?: { exitCode: number } } }> };
}

function podSpec(namespace: string, name: string, container: Record<string, unknown>, extra: Record<string, unknown> = {}): string {
  return JSON.stringify({
    apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace },
    spec: { terminationGracePeriodSeconds: 2, containers: [{ name: 'http', image: httpImage, ports: [{ containerPort: 8080 }], ...container }], ...extra },
  });
}

async function getPod(namespace: string, name: string): Promise<Pod> {
  return JSON.parse(await kubectl(['-n', namespace, 'get', 'pod', name, '-o', 'json'])) as Pod;
}

const readyCondition = (pod: Pod) => pod.status.conditions?.find((condition) => condition.type === 'Ready')?.status;

describe('probes, restarts and termination on the node agent', () => {
  let namespace = '';
  beforeAll(async () => { namespace = await freshNamespace('probes'); });
  afterAll(async () => { await kubectl(['delete', 'namespace', namespace, '--wait=false']); });

  it('takes a pod out of Ready while its readiness probe fails, and back when it passes', async () => {
    await kubectl(['apply', '-f', '-'], podSpec(namespace, 'ready', { readinessProbe: { httpGet: { path: '/healthz', port: 8080 }, periodSeconds: 1, failureThreshold: 1 } }));
    const pod = await eventually('Ready', 60_000, async () => { const p = await getPod(namespace, 'ready'); return readyCondition(p) === 'True' ? p : undefined; });
    await fromPod(pod.status.podIP!, '/health?status=500');
    await eventually('not Ready', 30_000, async () => readyCondition(await getPod(namespace, 'ready')) === 'False');
    await fromPod(pod.status.podIP!, '/health?status=200');
    await eventually('Ready again', 30_000, async () => readyCondition(await getPod(namespace, 'ready')) === 'True');
    expect((await getPod(namespace, 'ready')).status.containerStatuses?.[0]?.restartCount).toBe(0);
  });

  it('restarts a container whose liveness probe fails, counting the restart', async () => {
    await kubectl(['apply', '-f', '-'], podSpec(namespace, 'live', { livenessProbe: { httpGet: { path: '/healthz', port: 8080 }, periodSeconds: 1, failureThreshold: 2 } }));
    const pod = await eventually('running', 60_000, async () => { const p = await getPod(namespace, 'live'); return p.status.containerStatuses?.[0]?.ready ? p : undefined; });
    // Without a readiness probe a container is ready as soon as it runs, maybe before it listens.
    await eventually('fixture listening', 10_000, async () => (await fromPod<{ ok: boolean }>(pod.status.podIP!, '/healthz')).ok);
    await fromPod(pod.status.podIP!, '/health?status=503');
    const restarted = await eventually('restarted and ready', 60_000, async () => {
      const p = await getPod(namespace, 'live');
      const status = p.status.containerStatuses?.[0];
      return status && status.restartCount >= 1 && status.ready ? p : undefined;
    });
    expect(restarted.metadata.uid).toBe(pod.metadata.uid);
    // The new process starts healthy: the fixture's failure switch lived in the old one.
    expect(await eventually('new process healthy', 10_000, async () => (await fromPod<{ ok: boolean }>(restarted.status.podIP!, '/healthz')).ok)).toBe(true);
  });

  it('does not restart a container that exits 0 under restartPolicy OnFailure, and reports Succeeded', async () => {
    await kubectl(['apply', '-f', '-'], podSpec(namespace, 'once', {}, { restartPolicy: 'OnFailure' }));
    const pod = await eventually('running', 60_000, async () => { const p = await getPod(namespace, 'once'); return p.status.podIP && p.status.phase === 'Running' ? p : undefined; });
    await eventually('fixture listening', 10_000, async () => (await fromPod<{ ok: boolean }>(pod.status.podIP!, '/healthz')).ok);
    await fromPod(pod.status.podIP!, '/exit?code=0');
    const done = await eventually('Succeeded', 30_000, async () => { const p = await getPod(namespace, 'once'); return p.status.phase === 'Succeeded' ? p : undefined; });
    expect(done.status.containerStatuses?.[0]?.restartCount).toBe(0);
  });

  it('serves the container\'s output to kubectl logs, through the apiserver', async () => {
    await kubectl(['apply', '-f', '-'], podSpec(namespace, 'talker', {}));
    await eventually('running', 60_000, async () => (await getPod(namespace, 'talker')).status.containerStatuses?.[0]?.ready);
    const pod = await getPod(namespace, 'talker');
    const logs = await eventually('log line', 10_000, async () => {
      const text = await kubectl(['-n', namespace, 'logs', 'talker']);
      return text.includes('listening on') ? text : undefined;
    });
    expect(logs).toContain(`listening on ${pod.status.podIP}:8080`);
  });

  it('kills a container that ignores SIGTERM once the grace period is over', async () => {
    await kubectl(['apply', '-f', '-'], podSpec(namespace, 'stubborn', { env: [{ name: 'IGNORE_SIGTERM', value: '1' }] }));
    await eventually('running', 60_000, async () => (await getPod(namespace, 'stubborn')).status.containerStatuses?.[0]?.ready);
    const startedMs = Date.now();
    await kubectl(['-n', namespace, 'delete', 'pod', 'stubborn', '--wait=true', '--timeout=60s']);
    const tookMs = Date.now() - startedMs;
    // terminationGracePeriodSeconds is 2: not before it, and not much after.
    expect(tookMs).toBeGreaterThanOrEqual(2_000);
    expect(tookMs).toBeLessThan(15_000);
  });
});
