// HTTP, TCP and exec probes with the kubelet's timing fields and defaults.
import { execFile } from 'node:child_process';
import { request } from 'node:http';
import { connect } from 'node:net';
import type { JsonObject } from './kube-rest.ts';

export interface ProbeTiming {
  initialDelayMs: number;
  periodMs: number;
  timeoutMs: number;
  successThreshold: number;
  failureThreshold: number;
}

export function probeTiming(probe: JsonObject): ProbeTiming {
  return {
    initialDelayMs: Number(probe.initialDelaySeconds ?? 0) * 1000,
    periodMs: Number(probe.periodSeconds ?? 10) * 1000,
    timeoutMs: Number(probe.timeoutSeconds ?? 1) * 1000,
    successThreshold: Number(probe.successThreshold ?? 1),
    failureThreshold: Number(probe.failureThreshold ?? 3),
  };
}

export interface ProbeTarget {
  podIp: string;
  container: JsonObject;
  env: Map<string, string>;
  cwd: string;
}

function resolvePort(port: unknown, container: JsonObject): number {
  if (typeof port === 'number') return port;
  const named = ((container.ports ?? []) as JsonObject[]).find((p) => p.name === port);
  if (named) return Number(named.containerPort);
  const numeric = Number(port);
  if (Number.isInteger(numeric)) return numeric;
  throw new Error(`BFT_ERR_PROBE_PORT: port ${String(port)} is not declared by container ${container.name}`);
}

function httpProbe(spec: JsonObject, target: ProbeTarget, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const headers: Record<string, string> = { 'User-Agent': 'kube-probe/bftkube' };
    for (const header of (spec.httpHeaders ?? []) as JsonObject[]) headers[String(header.name)] = String(header.value);
    const req = request({
      host: spec.host ?? target.podIp,
      port: resolvePort(spec.port, target.container),
      path: spec.path ?? '/',
      method: 'GET',
      headers,
      timeout: timeoutMs,
    }, (res) => {
      res.resume();
      const status = res.statusCode ?? 0;
      resolve(status >= 200 && status < 400);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
    req.end();
  });
}

function tcpProbe(spec: JsonObject, target: ProbeTarget, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: spec.host ?? target.podIp, port: resolvePort(spec.port, target.container) });
    const timer = setTimeout(() => { socket.destroy(); resolve(false); }, timeoutMs);
    socket.on('connect', () => { clearTimeout(timer); socket.end(); resolve(true); });
    socket.on('error', () => { clearTimeout(timer); resolve(false); });
  });
}

function execProbe(spec: JsonObject, target: ProbeTarget, timeoutMs: number): Promise<boolean> {
  const [file, ...args] = (spec.command ?? []) as string[];
  if (!file) return Promise.resolve(false);
  return new Promise((resolve) => {
    execFile(file, args, { env: Object.fromEntries(target.env), cwd: target.cwd, timeout: timeoutMs }, (error) => resolve(!error));
  });
}

export async function runProbe(probe: JsonObject, target: ProbeTarget): Promise<boolean> {
  const { timeoutMs } = probeTiming(probe);
  try {
    if (probe.httpGet) return await httpProbe(probe.httpGet, target, timeoutMs);
    if (probe.tcpSocket) return await tcpProbe(probe.tcpSocket, target, timeoutMs);
    if (probe.exec) return await execProbe(probe.exec, target, timeoutMs);
  } catch {
    return false;
  }
  return false;
}
