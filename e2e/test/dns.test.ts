import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually, freshNamespace, fromPod, httpImage, kubectl } from './kube.ts';

interface Pod { metadata: { name: string }; status: { podIP?: string } }

describe('cluster DNS seen from inside a pod', () => {
  let namespace = '';
  const ips = new Map<string, string>();
  beforeAll(async () => {
    namespace = await freshNamespace('dns');
    const objects = [
      { apiVersion: 'v1', kind: 'Service', metadata: { name: 'peers', namespace },
        spec: { clusterIP: 'None', selector: { app: 'peer' }, ports: [{ name: 'http', port: 8080 }] } },
      { apiVersion: 'apps/v1', kind: 'StatefulSet', metadata: { name: 'peer', namespace },
        spec: { serviceName: 'peers', replicas: 2, podManagementPolicy: 'Parallel', selector: { matchLabels: { app: 'peer' } },
          template: { metadata: { labels: { app: 'peer' } }, spec: { terminationGracePeriodSeconds: 2, containers: [{
            name: 'http', image: httpImage, ports: [{ containerPort: 8080 }],
            readinessProbe: { httpGet: { path: '/healthz', port: 8080 }, periodSeconds: 1 } }] } } } },
    ];
    await kubectl(['apply', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'List', items: objects }));
    await kubectl(['-n', namespace, 'rollout', 'status', 'statefulset/peer', '--timeout=90s']);
    const pods = JSON.parse(await kubectl(['-n', namespace, 'get', 'pods', '-l', 'app=peer', '-o', 'json'])) as { items: Pod[] };
    for (const pod of pods.items) ips.set(pod.metadata.name, pod.status.podIP!);
  });
  afterAll(async () => {
    await kubectl(['delete', 'namespace', namespace, '--wait=false']);
  });

  it('resolves the headless Service name to all its pods\' IPs', async () => {
    const expected = [...ips.values()].sort();
    expect(expected).toHaveLength(2);
    const resolved = await eventually('both endpoints in DNS', 30_000, async () => {
      const reply = await fromPod<{ addresses: string[] }>(ips.get('peer-0')!, `/resolve?name=peers.${namespace}.svc.cluster.local`);
      return reply.addresses.length === 2 ? reply.addresses : undefined;
    });
    expect(resolved).toEqual(expected);
  });

  it('resolves <pod>.<headless service>.<namespace>.svc.cluster.local and the short form through the search path', async () => {
    const full = await fromPod<{ addresses: string[] }>(ips.get('peer-0')!, `/resolve?name=peer-1.peers.${namespace}.svc.cluster.local`);
    expect(full.addresses).toEqual([ips.get('peer-1')]);
    const short = await fromPod<{ addresses: string[] }>(ips.get('peer-1')!, '/resolve?name=peer-0.peers');
    expect(short.addresses).toEqual([ips.get('peer-0')]);
  });

  it('gives each pod a hosts file naming itself', async () => {
    const reply = await fromPod<{ content: string }>(ips.get('peer-1')!, '/file?path=/etc/hosts');
    expect(reply.content).toContain(`${ips.get('peer-1')}\tpeer-1.peers.${namespace}.svc.cluster.local\tpeer-1`);
  });
});
