// The node agent: the one stand-in in the local cluster, for the kubelet and its container runtime.
// It registers a Node, renews its Lease, runs the pods the real scheduler binds to it, provisions
// local PersistentVolumes and serves container logs to the apiserver.
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import { cpus, totalmem, release } from 'node:os';
import { join } from 'node:path';
import type { RestartBackoffPolicy } from './backoff.ts';
import type { ImageMapping } from './images.ts';
import { PodIpPool } from './ip-pool.ts';
import type { JsonObject, KubeRest } from './kube-rest.ts';
import { isConflict, isNotFound, runListWatch } from './kube-rest.ts';
import type { NodeContext } from './pod-worker.ts';
import { PodWorker } from './pod-worker.ts';
import { DnsRecordWriter } from './dns-records.ts';
import { ensureStorageClass, LocalProvisioner } from './provisioner.ts';

export const leaseDurationSeconds = 40;
export const leaseRenewIntervalMs = 10_000;
export const nodeStatusIntervalMs = 30_000;
export const shutdownGraceMs = 5_000;
export const kubeletPort = 10250;
/** `kubectl logs -f` polls the log file this often and sends at most this much per poll. */
export const followPollMs = 250;
export const followChunkBytesMax = 1 << 20;
const podsMax = 110;

export interface NodeAgentOptions {
  rest: KubeRest;
  images: ImageMapping;
  nodeName: string;
  hostIp: string;
  podIpPrefix: string;
  dnsIp: string;
  clusterDomain: string;
  apiserver: { host: string; port: number };
  stateDir: string;
  kubernetesVersion: string;
  backoff: RestartBackoffPolicy;
  /** PEM files for the kubelet API (container logs) the apiserver calls. */
  servingCertFile: string;
  servingKeyFile: string;
  /** Hosts file CoreDNS serves headless-Service records from. */
  dnsHostsFile: string;
}

function microTime(): string {
  // metav1.MicroTime wants exactly six fractional digits.
  return new Date().toISOString().replace(/Z$/, '000Z');
}

function log(message: string): void {
  process.stdout.write(`${new Date().toISOString()} ${message}\n`);
}

export class NodeAgent {
  private readonly options: NodeAgentOptions;
  private readonly workers = new Map<string, PodWorker>();
  private readonly ipPool: PodIpPool;
  private readonly abort = new AbortController();
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly provisioner: LocalProvisioner;
  private readonly context: NodeContext;
  private server: Server | undefined;
  private readonly processesFile: string;
  private readonly dnsRecords: DnsRecordWriter;

  constructor(options: NodeAgentOptions) {
    this.options = options;
    this.ipPool = new PodIpPool(options.podIpPrefix);
    const podsDir = join(options.stateDir, 'pods');
    const logsDir = join(options.stateDir, 'logs');
    mkdirSync(podsDir, { recursive: true });
    mkdirSync(logsDir, { recursive: true });
    this.processesFile = join(options.stateDir, 'pod-processes.json');
    this.dnsRecords = new DnsRecordWriter(options.dnsHostsFile, options.clusterDomain);
    this.provisioner = new LocalProvisioner(options.rest, join(options.stateDir, 'volumes'), log);
    this.context = {
      rest: options.rest, images: options.images, nodeName: options.nodeName, hostIp: options.hostIp,
      dnsIp: options.dnsIp, clusterDomain: options.clusterDomain, apiserver: options.apiserver,
      podsDir, logsDir, backoff: options.backoff,
      allocateIp: (owner) => this.ipPool.allocate(owner),
      releaseIp: (owner) => this.ipPool.release(owner),
      onProcessesChanged: () => this.writeProcesses(),
      log,
    };
  }

  async start(): Promise<void> {
    if (process.getuid?.() !== 0) {
      throw new Error('BFT_ERR_NODE_AGENT_NOT_ROOT: pods get their own resolv.conf, hosts and volumes through a private mount namespace, which needs root');
    }
    await this.serveKubeletApi();
    await this.register();
    await ensureStorageClass(this.options.rest);
    this.timers.push(setInterval(() => void this.renewLease().catch((error: unknown) => log(`lease: ${String(error)}`)), leaseRenewIntervalMs));
    this.timers.push(setInterval(() => void this.reportNodeStatus().catch((error: unknown) => log(`node status: ${String(error)}`)), nodeStatusIntervalMs));
    const onError = (what: string) => (error: unknown) => log(`${what} watch restarts: ${String(error instanceof Error ? error.message : error)}`);
    void runListWatch(this.options.rest, '/api/v1/pods', { fieldSelector: `spec.nodeName=${this.options.nodeName}` }, {
      onList: (pods) => { this.dnsRecords.setPods(pods); this.reconcilePods(pods); },
      onEvent: (type, pod) => { this.dnsRecords.onPod(type, pod); if (type === 'DELETED') this.forgetPod(pod); else this.onPod(pod); },
      onError: onError('pods'),
    }, this.abort.signal);
    void runListWatch(this.options.rest, '/api/v1/services', {}, {
      onList: (services) => this.dnsRecords.setServices(services),
      onEvent: (type, service) => this.dnsRecords.onService(type, service),
      onError: onError('services'),
    }, this.abort.signal);
    void runListWatch(this.options.rest, '/api/v1/persistentvolumeclaims', {}, {
      onList: (claims) => claims.forEach((claim) => this.provisioner.onClaim(claim)),
      onEvent: (type, claim) => { if (type !== 'DELETED') this.provisioner.onClaim(claim); },
      onError: onError('claims'),
    }, this.abort.signal);
    void runListWatch(this.options.rest, '/api/v1/persistentvolumes', {}, {
      onList: (volumes) => volumes.forEach((volume) => this.provisioner.onVolume(volume)),
      onEvent: (type, volume) => { if (type !== 'DELETED') this.provisioner.onVolume(volume); },
      onError: onError('volumes'),
    }, this.abort.signal);
    log(`node ${this.options.nodeName} registered; pods get ${this.options.podIpPrefix}.x.y`);
  }

  async stop(): Promise<void> {
    this.abort.abort();
    for (const timer of this.timers) clearInterval(timer);
    this.dnsRecords.stop();
    await Promise.all([...this.workers.values()].map((worker) => worker.stop(shutdownGraceMs)));
    this.workers.clear();
    this.writeProcesses();
    this.server?.close();
  }

  private writeProcesses(): void {
    const processes = [...this.workers.values()].flatMap((worker) => worker.processes());
    writeFileSync(this.processesFile, JSON.stringify(processes, null, 2) + '\n');
  }

  private reconcilePods(pods: JsonObject[]): void {
    const present = new Set(pods.map((pod) => String(pod.metadata.uid)));
    for (const [uid, worker] of this.workers) {
      if (!present.has(uid)) { this.workers.delete(uid); void worker.stop(shutdownGraceMs); }
    }
    for (const pod of pods) this.onPod(pod);
  }

  private onPod(pod: JsonObject): void {
    const uid = String(pod.metadata.uid);
    const existing = this.workers.get(uid);
    if (existing) { if (!existing.isFinished) existing.update(pod); return; }
    const phase = pod.status?.phase;
    const terminal = phase === 'Succeeded' || phase === 'Failed';
    if (terminal && !pod.metadata.deletionTimestamp) return;
    const worker = new PodWorker(pod, this.context);
    this.workers.set(uid, worker);
    if (pod.metadata.deletionTimestamp) void worker.terminate();
    else worker.start();
  }

  private forgetPod(pod: JsonObject): void {
    const uid = String(pod.metadata.uid);
    const worker = this.workers.get(uid);
    if (!worker) return;
    this.workers.delete(uid);
    void worker.stop(shutdownGraceMs);
  }

  private nodeStatus(): JsonObject {
    const at = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
    const condition = (type: string, status: string, reason: string, message: string) => ({
      type, status, reason, message, lastHeartbeatTime: at, lastTransitionTime: at,
    });
    const capacity = {
      cpu: String(cpus().length),
      memory: `${Math.floor(totalmem() / 1024)}Ki`,
      pods: String(podsMax),
      'ephemeral-storage': '100Gi',
    };
    const machineId = existsSync('/etc/machine-id') ? readFileSync('/etc/machine-id', 'utf8').trim() : 'bftkube-local';
    return {
      capacity,
      allocatable: capacity,
      conditions: [
        condition('MemoryPressure', 'False', 'KubeletHasSufficientMemory', 'node agent does not meter memory'),
        condition('DiskPressure', 'False', 'KubeletHasNoDiskPressure', 'node agent does not meter disk'),
        condition('PIDPressure', 'False', 'KubeletHasSufficientPID', 'node agent does not meter pids'),
        condition('Ready', 'True', 'KubeletReady', 'bftkube node agent is posting ready status'),
      ],
      addresses: [{ type: 'InternalIP', address: this.options.hostIp }, { type: 'Hostname', address: this.options.nodeName }],
      daemonEndpoints: { kubeletEndpoint: { Port: kubeletPort } },
      nodeInfo: {
        machineID: machineId, systemUUID: machineId, bootID: readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim(),
        kernelVersion: release(), osImage: 'bftkube local node', containerRuntimeVersion: 'bftkube-node-agent://0.1.0',
        kubeletVersion: this.options.kubernetesVersion, kubeProxyVersion: '', operatingSystem: 'linux', architecture: 'amd64',
      },
    };
  }

  private async register(): Promise<void> {
    const name = this.options.nodeName;
    try {
      await this.options.rest.post('/api/v1/nodes', {
        apiVersion: 'v1', kind: 'Node',
        metadata: { name, labels: { 'kubernetes.io/hostname': name, 'kubernetes.io/os': 'linux', 'kubernetes.io/arch': 'amd64' } },
        spec: {},
      });
    } catch (error) {
      if (!isConflict(error)) throw error;
    }
    await this.reportNodeStatus();
    await this.renewLease();
  }

  private async reportNodeStatus(): Promise<void> {
    await this.options.rest.mergePatch(`/api/v1/nodes/${this.options.nodeName}/status`, { status: this.nodeStatus() });
  }

  private async renewLease(): Promise<void> {
    const name = this.options.nodeName;
    const path = `/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/${name}`;
    try {
      await this.options.rest.mergePatch(path, { spec: { holderIdentity: name, leaseDurationSeconds, renewTime: microTime() } });
    } catch (error) {
      if (!isNotFound(error)) throw error;
      const node = await this.options.rest.get(`/api/v1/nodes/${name}`);
      await this.options.rest.post('/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases', {
        apiVersion: 'coordination.k8s.io/v1', kind: 'Lease',
        metadata: { name, namespace: 'kube-node-lease', ownerReferences: [{ apiVersion: 'v1', kind: 'Node', name, uid: node.metadata.uid }] },
        spec: { holderIdentity: name, leaseDurationSeconds, renewTime: microTime() },
      });
    }
  }

  /** Enough of the kubelet API for `kubectl logs [-f]`: the apiserver proxies /containerLogs here. */
  private serveKubeletApi(): Promise<void> {
    const logsDir = this.context.logsDir;
    this.server = createServer({ cert: readFileSync(this.options.servingCertFile), key: readFileSync(this.options.servingKeyFile) }, (req, res) => {
      const url = new URL(req.url ?? '/', 'https://node');
      const match = /^\/containerLogs\/([^/]+)\/([^/]+)\/([^/]+)$/.exec(url.pathname);
      if (!match) { res.writeHead(404).end('not found\n'); return; }
      const [, namespace, pod, container] = match;
      // The newest pod of that name (a StatefulSet pod replaced keeps its name).
      const file = readdirSync(logsDir)
        .filter((dir) => dir.startsWith(`${namespace}_${pod}_`))
        .map((dir) => join(logsDir, dir, `${container}.log`))
        .filter((path) => existsSync(path))
        .sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs)[0];
      if (!file) { res.writeHead(404).end(`no log for ${namespace}/${pod}/${container}\n`); return; }
      const text = readFileSync(file);
      let lines = text.toString('utf8').split('\n').filter((line) => !(line.startsWith('--- ') && line.includes('bftkube node agent:')));
      const tail = Number(url.searchParams.get('tailLines') ?? NaN);
      if (Number.isInteger(tail) && tail >= 0) lines = lines.slice(-(tail + 1));
      res.writeHead(200, { 'Content-Type': 'text/plain' });
      res.write(lines.join('\n'));
      if (url.searchParams.get('follow') !== 'true') { res.end(); return; }
      let offset = text.length;
      const poll = setInterval(() => {
        try {
          const size = statSync(file).size;
          if (size <= offset) return;
          const fd = openSync(file, 'r');
          try {
            const chunk = Buffer.alloc(Math.min(size - offset, followChunkBytesMax));
            offset += readSync(fd, chunk, 0, chunk.length, offset);
            res.write(chunk);
          } finally {
            closeSync(fd);
          }
        } catch {
          clearInterval(poll);
          res.end();
        }
      }, followPollMs);
      res.on('close', () => clearInterval(poll));
    });
    return new Promise((resolve, reject) => {
      this.server!.once('error', reject);
      this.server!.listen(kubeletPort, this.options.hostIp, () => resolve());
    });
  }
}
