// Vitest global setup of the `cluster` project: one real control plane for all operator and e2e
// cluster tests, started once and stopped after, within bounded time.
import type { TestProject } from 'vitest/node';
import { clusterDown, clusterUp } from '../src/cluster/control-plane.ts';
import { binaryPaths, testLayout } from '../src/cluster/layout.ts';

declare module 'vitest' {
  export interface ProvidedContext {
    clusterKubeconfig: string;
    clusterKubectl: string;
    clusterHelm: string;
    clusterStateDir: string;
  }
}

export const clusterStartTimeoutMs = 300_000;

function withTimeout<T>(promise: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`BFT_ERR_CLUSTER_SETUP_TIMEOUT: ${what} took over ${timeoutMs} ms`)), timeoutMs);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const layout = testLayout();
  // A run that was killed may have left its cluster behind: stop it by its recorded pids first.
  await clusterDown(layout, { keepState: false });
  const startedMs = Date.now();
  const handle = await withTimeout(clusterUp(layout), clusterStartTimeoutMs, 'cluster start');
  process.stderr.write(`cluster project: control plane up in ${Date.now() - startedMs} ms\n`);
  const binaries = binaryPaths();
  project.provide('clusterKubeconfig', handle.kubeconfigPath);
  project.provide('clusterKubectl', binaries.kubectl);
  project.provide('clusterHelm', binaries.helm);
  project.provide('clusterStateDir', layout.stateDir);
  return async () => {
    await withTimeout(clusterDown(layout, { keepState: process.env.BFTKUBE_KEEP_TEST_CLUSTER_STATE === '1' }), clusterStartTimeoutMs, 'cluster stop');
  };
}
