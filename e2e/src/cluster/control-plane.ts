// Brings the local control plane up and down: etcd, kube-apiserver, kube-controller-manager,
// kube-scheduler and CoreDNS on one loopback address, plus our node agent standing in for a kubelet.
import { CoreV1Api, KubeConfig } from '@kubernetes/client-node';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { dirname, join } from 'node:path';
import type { BinaryPaths, ClusterLayout } from './layout.ts';
import { binaryPaths, e2eDir, statePaths } from './layout.ts';
import { ensurePki } from './pki.ts';
import type { StartedProcess } from './processes.ts';
import { isOurs, readProcesses, startProcess, stopProcess, waitFor, writeProcesses } from './processes.ts';

export const etcdReadyTimeoutMs = 30_000;
export const apiserverReadyTimeoutMs = 120_000;
export const nodeReadyTimeoutMs = 90_000;
export const defaultServiceAccountTimeoutMs = 60_000;

export interface ClusterHandle {
  layout: ClusterLayout;
  kubeconfigPath: string;
  binaries: BinaryPaths;
  apiserverUrl: string;
}

function checkBinaries(binaries: BinaryPaths): void {
  const missing = Object.entries(binaries)
    .filter(([key]) => !key.endsWith('Dir'))
    .filter(([, path]) => !existsSync(path))
    .map(([, path]) => path);
  if (missing.length > 0) {
    throw new Error(`BFT_ERR_CLUSTER_BINARIES_MISSING: run e2e/scripts/build-binaries.sh first; missing: ${missing.join(', ')}`);
  }
}

function httpsStatus(url: string, pki: string, timeoutMs: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(url, {
      ca: readFileSync(join(pki, 'ca.crt')),
      cert: readFileSync(join(pki, 'admin.crt')),
      key: readFileSync(join(pki, 'admin.key')),
      timeout: timeoutMs,
    }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

function corefile(layout: ClusterLayout, kubeconfigPath: string, dnsHostsFile: string): string {
  // hosts first: EndpointSlices cannot carry loopback pod IPs, so headless-Service and pod-hostname
  // records come from the node agent's file (see e2e/src/node-agent/dns-records.ts).
  return `.:53 {
    bind ${layout.dnsIp}
    errors
    ready ${layout.dnsIp}:8181
    hosts ${dnsHostsFile} ${layout.clusterDomain} {
        ttl 5
        reload 1s
        fallthrough
    }
    kubernetes ${layout.clusterDomain} in-addr.arpa ip6.arpa {
        kubeconfig ${kubeconfigPath} bftkube-${layout.name}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }
    forward . /etc/resolv.conf
    cache 5
}
`;
}

function log(message: string): void {
  process.stderr.write(`cluster: ${message}\n`);
}

/** True when processes.json lists a process that still runs. */
export function isClusterRunning(layout: ClusterLayout): boolean {
  return readProcesses(statePaths(layout).processes).some(isOurs);
}

export async function clusterUp(layout: ClusterLayout): Promise<ClusterHandle> {
  const binaries = binaryPaths();
  checkBinaries(binaries);
  const paths = statePaths(layout);
  if (isClusterRunning(layout)) {
    throw new Error(`BFT_ERR_CLUSTER_ALREADY_RUNNING: ${layout.stateDir} has running processes; run cluster:down first`);
  }
  mkdirSync(paths.logs, { recursive: true });
  writeFileSync(paths.layoutFile, JSON.stringify(layout, null, 2) + '\n');
  await ensurePki(layout);
  const started: StartedProcess[] = [];
  const record = (process: StartedProcess): StartedProcess => {
    started.push(process);
    writeProcesses(paths.processes, started);
    return process;
  };
  const logFile = (name: string) => join(paths.logs, `${name}.log`);
  const host = layout.hostIp;
  const apiserverUrl = `https://${host}:${layout.apiserverPort}`;
  try {
    const etcdUrl = `http://${host}:${layout.etcdClientPort}`;
    const etcd = record(startProcess({ name: 'etcd', executable: binaries.etcd, logDir: paths.logs, args: [
      '--name=bftkube', `--data-dir=${paths.etcdData}`,
      `--listen-client-urls=${etcdUrl}`, `--advertise-client-urls=${etcdUrl}`,
      `--listen-peer-urls=http://${host}:${layout.etcdPeerPort}`,
      `--initial-advertise-peer-urls=http://${host}:${layout.etcdPeerPort}`,
      `--initial-cluster=bftkube=http://${host}:${layout.etcdPeerPort}`,
      `--listen-metrics-urls=http://${host}:${layout.etcdClientPort + 2}`,
      '--log-level=warn',
    ] }));
    await waitFor({ what: 'etcd healthy', timeoutMs: etcdReadyTimeoutMs, process: etcd, logFile: logFile('etcd') }, async () => {
      const response = await fetch(`${etcdUrl}/health`, { signal: AbortSignal.timeout(2_000) });
      return response.ok;
    });
    log(`etcd ready at ${etcdUrl}`);

    const pki = paths.pki;
    const apiserver = record(startProcess({ name: 'kube-apiserver', executable: binaries.kubeApiserver, logDir: paths.logs, args: [
      `--advertise-address=${host}`, `--bind-address=${host}`, `--secure-port=${layout.apiserverPort}`,
      `--etcd-servers=${etcdUrl}`,
      `--client-ca-file=${join(pki, 'ca.crt')}`,
      `--tls-cert-file=${join(pki, 'apiserver.crt')}`, `--tls-private-key-file=${join(pki, 'apiserver.key')}`,
      `--kubelet-client-certificate=${join(pki, 'admin.crt')}`, `--kubelet-client-key=${join(pki, 'admin.key')}`,
      '--kubelet-preferred-address-types=InternalIP',
      `--service-account-issuer=https://kubernetes.default.svc.${layout.clusterDomain}`,
      `--service-account-key-file=${join(pki, 'sa.pub')}`,
      `--service-account-signing-key-file=${join(pki, 'sa.key')}`,
      `--service-cluster-ip-range=${layout.serviceCidr}`,
      '--authorization-mode=Node,RBAC',
      // The endpoint reconciler refuses loopback addresses; pods reach the apiserver through
      // KUBERNETES_SERVICE_HOST, which the node agent sets to its real address.
      '--endpoint-reconciler-type=none',
      '--allow-privileged=true',
      '--profiling=false',
      `--cert-dir=${join(paths.pki, 'apiserver-generated')}`,
    ] }));
    await waitFor({ what: 'kube-apiserver ready', timeoutMs: apiserverReadyTimeoutMs, process: apiserver, logFile: logFile('kube-apiserver'), intervalMs: 500 },
      async () => (await httpsStatus(`${apiserverUrl}/readyz`, pki, 2_000)) === 200);
    log(`kube-apiserver ready at ${apiserverUrl}`);

    record(startProcess({ name: 'kube-controller-manager', executable: binaries.kubeControllerManager, logDir: paths.logs, args: [
      `--kubeconfig=${paths.controllerManagerKubeconfig}`,
      `--authentication-kubeconfig=${paths.controllerManagerKubeconfig}`,
      `--authorization-kubeconfig=${paths.controllerManagerKubeconfig}`,
      `--bind-address=${host}`, `--secure-port=${layout.controllerManagerPort}`,
      `--cert-dir=${join(paths.pki, 'controller-manager-generated')}`,
      '--leader-elect=false',
      `--service-account-private-key-file=${join(pki, 'sa.key')}`,
      `--root-ca-file=${join(pki, 'ca.crt')}`,
      `--cluster-signing-cert-file=${join(pki, 'ca.crt')}`, `--cluster-signing-key-file=${join(pki, 'ca.key')}`,
      '--use-service-account-credentials=true',
      `--service-cluster-ip-range=${layout.serviceCidr}`,
    ] }));
    record(startProcess({ name: 'kube-scheduler', executable: binaries.kubeScheduler, logDir: paths.logs, args: [
      `--kubeconfig=${paths.schedulerKubeconfig}`,
      `--authentication-kubeconfig=${paths.schedulerKubeconfig}`,
      `--authorization-kubeconfig=${paths.schedulerKubeconfig}`,
      `--bind-address=${host}`, `--secure-port=${layout.schedulerPort}`,
      `--cert-dir=${join(paths.pki, 'scheduler-generated')}`,
      '--leader-elect=false',
    ] }));
    mkdirSync(dirname(paths.dnsHosts), { recursive: true });
    writeFileSync(paths.dnsHosts, '');
    writeFileSync(paths.corefile, corefile(layout, paths.adminKubeconfig, paths.dnsHosts));
    const coredns = record(startProcess({ name: 'coredns', executable: binaries.coredns, logDir: paths.logs, cwd: layout.stateDir,
      args: ['-conf', paths.corefile] }));
    const nodeAgentMain = join(e2eDir, 'src', 'node-agent', 'main.ts');
    const nodeAgent = record(startProcess({ name: 'node-agent', executable: process.execPath, logDir: paths.logs, args: [
      nodeAgentMain, `--layout=${paths.layoutFile}`,
    ] }));
    await waitFor({ what: 'CoreDNS ready', timeoutMs: nodeReadyTimeoutMs, process: coredns, logFile: logFile('coredns') }, async () => {
      const response = await fetch(`http://${layout.dnsIp}:8181/ready`, { signal: AbortSignal.timeout(2_000) });
      return response.ok;
    });
    log(`CoreDNS ready at ${layout.dnsIp}:53`);

    const kubeConfig = new KubeConfig();
    kubeConfig.loadFromFile(paths.adminKubeconfig);
    const core = kubeConfig.makeApiClient(CoreV1Api);
    await waitFor({ what: `node ${layout.nodeName} Ready`, timeoutMs: nodeReadyTimeoutMs, process: nodeAgent, logFile: logFile('node-agent') }, async () => {
      const node = await core.readNode({ name: layout.nodeName });
      const ready = node.status?.conditions?.find((condition) => condition.type === 'Ready');
      const notReadyTaint = node.spec?.taints?.some((taint) => taint.key === 'node.kubernetes.io/not-ready');
      return ready?.status === 'True' && !notReadyTaint;
    });
    log(`node ${layout.nodeName} Ready`);
    // Pods cannot be created in a namespace before the controller manager made its default account.
    await waitFor({ what: 'default ServiceAccount', timeoutMs: defaultServiceAccountTimeoutMs, logFile: logFile('kube-controller-manager') }, async () => {
      await core.readNamespacedServiceAccount({ name: 'default', namespace: 'default' });
      return true;
    });
    return { layout, kubeconfigPath: paths.adminKubeconfig, binaries, apiserverUrl };
  } catch (error) {
    log('start failed; stopping what was started');
    await stopAll(started);
    throw error;
  }
}

async function stopAll(processes: StartedProcess[]): Promise<void> {
  // Reverse order: the node agent first (it stops its pods), etcd last.
  for (const started of [...processes].reverse()) await stopProcess(started);
}

export interface DownOptions {
  keepState: boolean;
}

export async function clusterDown(layout: ClusterLayout, options: DownOptions): Promise<void> {
  const paths = statePaths(layout);
  await stopAll(readProcesses(paths.processes));
  // Pods whose node agent died without stopping them are listed by the agent itself.
  const podProcessesFile = join(paths.node, 'pod-processes.json');
  for (const started of readProcesses(podProcessesFile)) await stopProcess(started, 2_000);
  if (existsSync(paths.processes)) rmSync(paths.processes);
  if (!options.keepState) {
    await unmountUnder(layout.stateDir);
    rmSync(layout.stateDir, { recursive: true, force: true });
  }
}

/** Bind mounts live in each pod's private mount namespace, which dies with the pod; this is a guard. */
async function unmountUnder(dir: string): Promise<void> {
  if (!existsSync('/proc/self/mounts')) return;
  const mounts = readFileSync('/proc/self/mounts', 'utf8').split('\n')
    .map((line) => line.split(' ')[1] ?? '')
    .filter((mountPoint) => mountPoint.startsWith(dir + '/'));
  if (mounts.length > 0) {
    throw new Error(`BFT_ERR_CLUSTER_MOUNTS_LEFT: ${mounts.join(', ')} still mounted; not removing ${dir}`);
  }
}

export function usageText(handle: ClusterHandle): string {
  return [
    `Local Kubernetes control plane is up (state in ${handle.layout.stateDir}).`,
    '',
    `  export KUBECONFIG=${handle.kubeconfigPath}`,
    `  export PATH=${handle.binaries.kubernetesBinDir}:${handle.binaries.helmBinDir}:$PATH`,
    '  kubectl get nodes',
    '',
    `Logs: ${statePaths(handle.layout).logs}/ (pods: ${statePaths(handle.layout).node}/logs/)`,
    'Stop: npm run cluster:down   (keep state: npm run cluster:down -- --keep-state)',
  ].join('\n');
}
