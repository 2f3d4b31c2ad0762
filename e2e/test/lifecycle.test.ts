import { execFile } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { binaryPaths, namedLayout, repoDir, statePaths } from '../src/cluster/layout.ts';
import type { StartedProcess } from '../src/cluster/processes.ts';
import { eventually } from './kube.ts';

const run = promisify(execFile);
const scriptTimeoutMs = 240_000;

function processesMentioning(text: string): number[] {
  const found: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes(text)) found.push(Number(entry));
    } catch { /* exited meanwhile */ }
  }
  return found;
}

function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^\d+ \(.*\) Z /.test(stat);
  } catch {
    return false;
  }
}

describe('npm run cluster:up and cluster:down', () => {
  // A second cluster on its own addresses, so the shared test cluster keeps running meanwhile.
  const layout = namedLayout('lifecycle');
  const paths = statePaths(layout);
  const npmEnv = { ...process.env, KUBECONFIG: paths.adminKubeconfig };

  it('brings up a node that kubectl shows Ready, and stops every process it started, pods included', { timeout: scriptTimeoutMs * 2 }, async () => {
    const up = await run('npm', ['run', 'cluster:up', '--', '--name=lifecycle'], { cwd: repoDir, env: npmEnv, timeout: scriptTimeoutMs });
    expect(up.stdout).toContain(`export KUBECONFIG=${paths.adminKubeconfig}`);
    const kubectl = binaryPaths().kubectl;
    const nodes = await run(kubectl, ['get', 'nodes', '--no-headers'], { env: npmEnv });
    expect(nodes.stdout).toMatch(/^bftkube-lifecycle-node\s+Ready\s/m);

    await run(kubectl, ['run', 'sleeper', '--image=busybox:1', '--restart=Never', '--command', '--', 'sleep', '600'], { env: npmEnv });
    await eventually('sleeper running', 60_000, async () => {
      const { stdout } = await run(kubectl, ['get', 'pod', 'sleeper', '-o', 'jsonpath={.status.phase}'], { env: npmEnv });
      return stdout === 'Running';
    });
    const started = [
      ...JSON.parse(readFileSync(paths.processes, 'utf8')) as StartedProcess[],
      ...JSON.parse(readFileSync(join(paths.node, 'pod-processes.json'), 'utf8')) as StartedProcess[],
    ];
    expect(started.map((process) => process.name)).toEqual(expect.arrayContaining([
      'etcd', 'kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'coredns', 'node-agent', 'default/sleeper/sleeper',
    ]));
    expect(started.every((process) => alive(process.pid))).toBe(true);

    await run('npm', ['run', 'cluster:down', '--', '--name=lifecycle'], { cwd: repoDir, env: npmEnv, timeout: scriptTimeoutMs });
    expect(started.filter((process) => alive(process.pid))).toEqual([]);
    expect(processesMentioning(layout.stateDir)).toEqual([]);
    expect(existsSync(layout.stateDir)).toBe(false);
  });
});
