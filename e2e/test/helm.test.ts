import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { e2eDir } from '../src/cluster/layout.ts';
import { eventually, freshNamespace, fromPod, helm, kubectl } from './kube.ts';

describe('helm against the local cluster', () => {
  let namespace = '';
  beforeAll(async () => { namespace = await freshNamespace('helm'); });
  afterAll(async () => { await kubectl(['delete', 'namespace', namespace, '--wait=false']); });

  it('installs a chart whose workload becomes ready, and uninstalls it', async () => {
    await helm(['install', 'hello', join(e2eDir, 'fixtures', 'charts', 'hello'), '-n', namespace, '--wait', '--timeout', '90s']);
    const status = JSON.parse(await helm(['status', 'hello', '-n', namespace, '-o', 'json'])) as { info: { status: string } };
    expect(status.info.status).toBe('deployed');
    const pods = JSON.parse(await kubectl(['-n', namespace, 'get', 'pods', '-l', 'app.kubernetes.io/instance=hello', '-o', 'json'])) as { items: Array<{ status: { podIP: string } }> };
    expect(pods.items).toHaveLength(1);
    const greeting = await fromPod<{ content: string }>(pods.items[0]!.status.podIP, '/file?path=/etc/bftkube-e2e/greeting/greeting');
    expect(greeting.content).toBe('hello from helm');

    await helm(['uninstall', 'hello', '-n', namespace, '--wait', '--timeout', '60s']);
    expect(await helm(['list', '-n', namespace, '-q'])).toBe('');
    await eventually('chart objects gone', 60_000, async () => {
      const left = await kubectl(['-n', namespace, 'get', 'deployments,configmaps,pods', '-l', 'app.kubernetes.io/instance=hello', '-o', 'name']);
      return left.trim() === '';
    });
  });
});
