import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { e2eDir } from '../src/cluster/layout.ts';
import { freshNamespace, kubectl } from './kube.ts';

function widget(namespace: string, name: string, replicas: number, faultsTolerated: number): string {
  return JSON.stringify({ apiVersion: 'e2e.bftkube.io/v1', kind: 'Widget', metadata: { name, namespace }, spec: { replicas, faultsTolerated } });
}

describe('a CRD with a CEL validation rule', () => {
  let namespace = '';
  beforeAll(async () => {
    namespace = await freshNamespace('cel');
    await kubectl(['apply', '-f', join(e2eDir, 'fixtures', 'crds', 'widgets.yaml')]);
    await kubectl(['wait', '--for=condition=Established', 'crd/widgets.e2e.bftkube.io', '--timeout=60s']);
  });
  afterAll(async () => {
    await kubectl(['delete', 'namespace', namespace, '--wait=false']);
    await kubectl(['delete', 'crd', 'widgets.e2e.bftkube.io', '--wait=false']);
  });

  it('accepts an object that satisfies the rule', async () => {
    await kubectl(['apply', '-f', '-'], widget(namespace, 'good', 4, 1));
    expect(await kubectl(['-n', namespace, 'get', 'widget', 'good', '-o', 'name'])).toContain('widget.e2e.bftkube.io/good');
  });

  it('rejects with the rule\'s message an object kubectl applies that breaks it', async () => {
    const failure = await kubectl(['apply', '-f', '-'], widget(namespace, 'bad', 3, 1)).then(() => undefined, (error: { stderr: string }) => error);
    expect(failure?.stderr).toContain('replicas must be at least 3f+1');
    await expect(kubectl(['-n', namespace, 'get', 'widget', 'bad'])).rejects.toThrow();
  });
});
