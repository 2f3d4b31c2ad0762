import { describe, expect, it } from 'vitest';
import { kubectl } from './kube.ts';

describe('local control plane', () => {
  it('shows its node Ready to kubectl get nodes', async () => {
    const output = await kubectl(['get', 'nodes', '--no-headers']);
    expect(output).toMatch(/^bftkube-test-node\s+Ready\s/m);
  });

  it('runs the real kube-apiserver at the pinned version', async () => {
    const version = JSON.parse(await kubectl(['version', '-o', 'json'])) as { serverVersion: { gitVersion: string }; clientVersion: { gitVersion: string } };
    expect(version.serverVersion.gitVersion).toMatch(/^v1\.\d+\.\d+$/);
    expect(version.clientVersion.gitVersion).toBe(version.serverVersion.gitVersion);
  });
});
