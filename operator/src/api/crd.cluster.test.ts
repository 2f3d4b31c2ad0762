// The generated CRD against the real API server: installed and established, examples accepted and
// defaulted, invalid manifests refused with the CEL messages, immutable fields kept, kubectl scale and the
// printer columns working.

import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freshNamespace, kubectl } from '../../../e2e/test/kube.ts';
import { crdPath } from './crd-file.ts';

const examples = join(crdPath, '..', 'examples');

function manifest(namespace: string, name: string, spec: Record<string, unknown>): string {
  return JSON.stringify({ apiVersion: 'bftkube.dev/v1alpha1', kind: 'BftCluster', metadata: { name, namespace }, spec });
}

/** The stderr of a kubectl call that must fail. */
async function refusal(args: string[], input?: string): Promise<string> {
  const failure = await kubectl(args, input).then(
    () => undefined,
    (error: { stderr: string }) => error,
  );
  expect(failure, `kubectl ${args.join(' ')} should have been refused`).toBeDefined();
  return failure?.stderr ?? '';
}

describe('the BftCluster CRD on a real API server', () => {
  let namespace = '';
  beforeAll(async () => {
    await kubectl(['apply', '--server-side', '-f', crdPath]);
    await kubectl(['wait', '--for=condition=Established', 'crd/bftclusters.bftkube.dev', '--timeout=60s']);
    namespace = await freshNamespace('crd');
  });
  afterAll(async () => {
    await kubectl(['delete', 'namespace', namespace, '--wait=false']);
    await kubectl(['delete', 'crd', 'bftclusters.bftkube.dev', '--wait=false']);
  });

  it('accepts the examples and fills in the defaults', async () => {
    for (const name of ['bft-4.yaml', 'crash-3.yaml', 'bft-7-f2.yaml']) await kubectl(['-n', namespace, 'apply', '-f', join(examples, name)]);
    const kv = JSON.parse(await kubectl(['-n', namespace, 'get', 'bftcluster', 'kv', '-o', 'json'])) as { spec: Record<string, unknown> };
    expect(kv.spec).toMatchObject({
      replicas: 4,
      faultModel: 'bft',
      durability: 'fsync',
      requireSignedRequests: false,
      storage: { size: '1Gi', retentionPolicy: 'Delete' },
      service: { module: 'builtin:kv' },
      updateStrategy: { type: 'RollingUpdate' },
      disruptionBudget: { enabled: true },
    });
    expect(await kubectl(['-n', namespace, 'get', 'bftc', '-o', 'name'])).toContain('bftcluster.bftkube.dev/kv-crash');
  });

  it('refuses a bft cluster of 3 replicas and a crash-fault one of 2, with the CEL messages', async () => {
    expect(await refusal(['-n', namespace, 'apply', '-f', join(examples, 'invalid', 'bft-3.yaml')])).toContain('a bft cluster needs replicas >= 3f+1');
    expect(await refusal(['apply', '-f', '-'], manifest(namespace, 'tiny', { replicas: 2, faultModel: 'crash' }))).toContain(
      'a crash-fault cluster needs replicas >= 2f+1',
    );
    expect(await refusal(['apply', '-f', '-'], manifest(namespace, 'f2', { replicas: 6, f: 2, faultModel: 'bft' }))).toContain('replicas >= 3f+1');
    await expect(kubectl(['-n', namespace, 'get', 'bftcluster', 'kv-too-small'])).rejects.toThrow();
  });

  it('refuses names that cannot prefix its Services and DNS labels, with the CEL messages', async () => {
    const spec = { replicas: 4, faultModel: 'bft' };
    await kubectl(['apply', '-f', '-'], manifest(namespace, 'n'.repeat(54), spec));
    expect(await refusal(['apply', '-f', '-'], manifest(namespace, 'n'.repeat(55), spec))).toContain('a BftCluster name has at most 54 characters');
    expect(await refusal(['apply', '-f', '-'], manifest(namespace, 'kv.prod', spec))).toContain('no dots');
    expect(await refusal(['apply', '-f', '-'], manifest(namespace, '4kv', spec))).toContain('starting with a letter');
  });

  it('keeps faultModel and storage.storageClassName as they were created', async () => {
    await kubectl(['apply', '-f', '-'], manifest(namespace, 'fixed', { replicas: 4, faultModel: 'bft', storage: { storageClassName: 'bftkube-local' } }));
    expect(await refusal(['apply', '-f', '-'], manifest(namespace, 'fixed', { replicas: 4, faultModel: 'crash', storage: { storageClassName: 'bftkube-local' } }))).toContain(
      'faultModel is immutable',
    );
    expect(await refusal(['apply', '-f', '-'], manifest(namespace, 'fixed', { replicas: 4, faultModel: 'bft', storage: { storageClassName: 'fast' } }))).toContain(
      'storageClassName is immutable',
    );
  });

  it('scales through the scale subresource, within the rules, and shows the columns', async () => {
    await kubectl(['-n', namespace, 'scale', 'bftcluster/kv', '--replicas=7']);
    expect(await kubectl(['-n', namespace, 'get', 'bftcluster', 'kv', '-o', 'jsonpath={.spec.replicas}'])).toBe('7');
    expect(await refusal(['-n', namespace, 'scale', 'bftcluster/kv', '--replicas=3'])).toContain('replicas >= 3f+1');
    const table = await kubectl(['-n', namespace, 'get', 'bftclusters']);
    expect(table.split('\n')[0]).toMatch(/NAME\s+REPLICAS\s+READY\s+F\s+VIEW\s+LEADER\s+STATUS\s+AGE/);
    expect(table).toMatch(/kv\s+7\s/);
  });
});
