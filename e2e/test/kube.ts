// Helpers for tests against the shared local control plane: kubectl and helm as users run them,
// and a REST client for what a test needs to observe.
import { KubeConfig } from '@kubernetes/client-node';
import { execFile } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { inject } from 'vitest';
import { KubeRest } from '../src/node-agent/kube-rest.ts';

const run = promisify(execFile);
export const commandTimeoutMs = 90_000;

export function clusterEnv(): NodeJS.ProcessEnv {
  return { ...process.env, KUBECONFIG: inject('clusterKubeconfig'), HOME: process.env.HOME ?? '/root' };
}

export async function kubectl(args: string[], input?: string): Promise<string> {
  return command(inject('clusterKubectl'), args, input);
}

export async function helm(args: string[]): Promise<string> {
  return command(inject('clusterHelm'), args);
}

async function command(executable: string, args: string[], input?: string): Promise<string> {
  if (input === undefined) {
    const { stdout } = await run(executable, args, { env: clusterEnv(), timeout: commandTimeoutMs, maxBuffer: 16 << 20 });
    return stdout;
  }
  return new Promise((resolve, reject) => {
    const child = execFile(executable, args, { env: clusterEnv(), timeout: commandTimeoutMs, maxBuffer: 16 << 20 }, (error, stdout, stderr) => {
      if (error) reject(Object.assign(error, { stdout, stderr }));
      else resolve(stdout);
    });
    child.stdin?.end(input);
  });
}

export function kubeRest(): KubeRest {
  const kubeConfig = new KubeConfig();
  kubeConfig.loadFromFile(inject('clusterKubeconfig'));
  return new KubeRest(kubeConfig);
}

export async function eventually<T>(what: string, timeoutMs: number, check: () => Promise<T | undefined | false>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  while (Date.now() < deadline) {
    try {
      const result = await check();
      if (result !== undefined && result !== false) return result;
    } catch (error) {
      lastError = error;
    }
    await sleep(250);
  }
  throw new Error(`BFT_ERR_TEST_TIMEOUT: ${what} not within ${timeoutMs} ms`, { cause: lastError });
}

/** GET a pod's fixture server (e2e/fixtures/http-server.ts) on its own loopback IP. */
export async function fromPod<T>(podIp: string, path: string, init?: RequestInit): Promise<T> {
  const response = await fetch(`http://${podIp}:8080${path}`, { ...init, signal: AbortSignal.timeout(5_000) });
  const body = await response.json() as T;
  if (!response.ok) throw new Error(`BFT_ERR_TEST_POD_HTTP: ${path} → ${response.status} ${JSON.stringify(body)}`);
  return body;
}

let namespaceCounter = 0;

/** A fresh namespace per test file keeps files independent on the shared cluster. */
export async function freshNamespace(prefix: string): Promise<string> {
  namespaceCounter += 1;
  const name = `${prefix}-${process.pid}-${namespaceCounter}`;
  await kubectl(['create', 'namespace', name]);
  await eventually(`default ServiceAccount in ${name}`, 30_000, async () => {
    await kubectl(['-n', name, 'get', 'serviceaccount', 'default']);
    return true;
  });
  return name;
}

export const httpImage = 'bftkube/e2e-http:test';
