import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually, freshNamespace, fromPod, httpImage, kubectl } from './kube.ts';

interface PodList { items: Array<{ metadata: { name: string; uid: string }; status: { podIP?: string; phase?: string; conditions?: Array<{ type: string; status: string }> } }> }

function deployment(namespace: string): string {
  return JSON.stringify({
    apiVersion: 'apps/v1', kind: 'Deployment',
    metadata: { name: 'web', namespace },
    spec: {
      replicas: 2,
      selector: { matchLabels: { app: 'web' } },
      template: {
        metadata: { labels: { app: 'web' } },
        spec: {
          terminationGracePeriodSeconds: 5,
          containers: [{
            name: 'http', image: httpImage,
            ports: [{ name: 'http', containerPort: 8080 }],
            readinessProbe: { httpGet: { path: '/healthz', port: 'http' }, periodSeconds: 1 },
            livenessProbe: { httpGet: { path: '/healthz', port: 8080 }, periodSeconds: 2 },
          }],
        },
      },
    },
  });
}

async function pods(namespace: string): Promise<PodList['items']> {
  return (JSON.parse(await kubectl(['-n', namespace, 'get', 'pods', '-l', 'app=web', '-o', 'json'])) as PodList).items;
}

describe('a Deployment on the local cluster', () => {
  let namespace = '';
  beforeAll(async () => {
    namespace = await freshNamespace('deploy');
    await kubectl(['apply', '-f', '-'], deployment(namespace));
  });
  afterAll(async () => {
    await kubectl(['delete', 'namespace', namespace, '--wait=false']);
  });

  it('becomes Available with 2 ready pods on distinct IPs that serve HTTP', async () => {
    await kubectl(['-n', namespace, 'wait', '--for=condition=Available', 'deployment/web', '--timeout=90s']);
    const items = await pods(namespace);
    expect(items).toHaveLength(2);
    const ips = items.map((pod) => pod.status.podIP);
    expect(new Set(ips).size).toBe(2);
    for (const pod of items) {
      expect(pod.status.conditions?.find((condition) => condition.type === 'Ready')?.status).toBe('True');
      const reply = await fromPod<{ podIp: string; hostname: string }>(pod.status.podIP!, '/');
      expect(reply).toMatchObject({ podIp: pod.status.podIP, hostname: pod.metadata.name });
    }
  });

  it('replaces a deleted pod', async () => {
    const before = await pods(namespace);
    const victim = before[0]!;
    await kubectl(['-n', namespace, 'delete', 'pod', victim.metadata.name, '--wait=true', '--timeout=60s']);
    const replaced = await eventually('a replacement pod Ready', 60_000, async () => {
      const items = await pods(namespace);
      const ready = items.filter((pod) => pod.status.conditions?.some((condition) => condition.type === 'Ready' && condition.status === 'True'));
      return ready.length === 2 && !items.some((pod) => pod.metadata.uid === victim.metadata.uid) ? items : undefined;
    });
    expect(replaced.map((pod) => pod.metadata.uid)).not.toContain(victim.metadata.uid);
  });

  it('has its pods garbage-collected when the Deployment is deleted', async () => {
    await kubectl(['-n', namespace, 'delete', 'deployment', 'web']);
    await eventually('all pods gone', 60_000, async () => (await pods(namespace)).length === 0);
  });
});
