// Where the local control plane's binaries and state live, and which addresses it uses.
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const e2eDir = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const repoDir = resolve(e2eDir, '..');

export interface PinnedVersions {
  kubernetes: string;
  etcd: string;
  coredns: string;
  helm: string;
}

export function readPinnedVersions(): PinnedVersions {
  const text = readFileSync(join(e2eDir, 'versions.env'), 'utf8');
  const values = new Map<string, string>();
  for (const line of text.split('\n')) {
    const match = /^([A-Z_]+)=(\S+)$/.exec(line.trim());
    if (match?.[1] && match[2]) values.set(match[1], match[2]);
  }
  const read = (key: string): string => {
    const value = values.get(key);
    if (!value) throw new Error(`BFT_ERR_VERSIONS_FILE: ${key} missing from e2e/versions.env`);
    return value;
  };
  return {
    kubernetes: read('KUBERNETES_VERSION'),
    etcd: read('ETCD_VERSION'),
    coredns: read('COREDNS_VERSION'),
    helm: read('HELM_VERSION'),
  };
}

export function cacheDir(): string {
  return process.env.BFTKUBE_CACHE_DIR ?? join(homedir(), '.cache', 'bftkube');
}

export interface BinaryPaths {
  etcd: string;
  kubeApiserver: string;
  kubeControllerManager: string;
  kubeScheduler: string;
  kubectl: string;
  coredns: string;
  helm: string;
  /** Folder holding kubectl, to put on PATH. */
  kubernetesBinDir: string;
  helmBinDir: string;
}

export function binaryPaths(versions: PinnedVersions = readPinnedVersions()): BinaryPaths {
  const bin = join(cacheDir(), 'bin');
  const kubernetesBinDir = join(bin, `kubernetes-${versions.kubernetes}`);
  const helmBinDir = join(bin, `helm-${versions.helm}`);
  return {
    etcd: join(bin, `etcd-${versions.etcd}`, 'etcd'),
    kubeApiserver: join(kubernetesBinDir, 'kube-apiserver'),
    kubeControllerManager: join(kubernetesBinDir, 'kube-controller-manager'),
    kubeScheduler: join(kubernetesBinDir, 'kube-scheduler'),
    kubectl: join(kubernetesBinDir, 'kubectl'),
    coredns: join(bin, `coredns-${versions.coredns}`, 'coredns'),
    helm: join(helmBinDir, 'helm'),
    kubernetesBinDir,
    helmBinDir,
  };
}

/**
 * One local cluster's identity. Two clusters with different host IPs, pod prefixes and state folders
 * can run side by side (a developer's cluster and the test suite's).
 */
export interface ClusterLayout {
  name: string;
  stateDir: string;
  /** Loopback address every control-plane component binds. */
  hostIp: string;
  /** Pods get <podIpPrefix>.<x>.<y>: two octets, e.g. "127.20". */
  podIpPrefix: string;
  nodeName: string;
  etcdClientPort: number;
  etcdPeerPort: number;
  apiserverPort: number;
  controllerManagerPort: number;
  schedulerPort: number;
  /** resolv.conf cannot name a port: CoreDNS must listen on 53 of its own loopback address. */
  dnsIp: string;
  serviceCidr: string;
  clusterDomain: string;
  /** First container restart backoff; the kubelet's 10 s when absent. */
  restartBackoffBaseMs?: number;
}

export function defaultLayout(overrides: Partial<ClusterLayout> = {}): ClusterLayout {
  const name = overrides.name ?? 'local';
  return {
    name,
    stateDir: join(cacheDir(), 'clusters', name),
    hostIp: '127.10.0.1',
    podIpPrefix: '127.20',
    nodeName: 'bftkube-node',
    etcdClientPort: 2379,
    etcdPeerPort: 2380,
    apiserverPort: 6443,
    controllerManagerPort: 10257,
    schedulerPort: 10259,
    dnsIp: '127.10.0.53',
    serviceCidr: '10.96.0.0/16',
    clusterDomain: 'cluster.local',
    ...overrides,
  };
}

/**
 * Named clusters on separate addresses, so they can run side by side: `local` is a developer's
 * `npm run cluster:up`, `test` the one the cluster test project shares, `lifecycle` the one a test
 * brings up and down through the npm scripts.
 */
export const clusterSlots: Record<string, number> = { local: 0, test: 1, lifecycle: 2 };

export function namedLayout(name: string): ClusterLayout {
  const slot = clusterSlots[name];
  if (slot === undefined) throw new Error(`BFT_ERR_CLUSTER_NAME: ${name} is not one of ${Object.keys(clusterSlots).join(', ')}`);
  return defaultLayout({
    name,
    hostIp: `127.${10 + slot}.0.1`,
    podIpPrefix: `127.${20 + slot}`,
    dnsIp: `127.${10 + slot}.0.53`,
    nodeName: slot === 0 ? 'bftkube-node' : `bftkube-${name}-node`,
  });
}

/** The layout the test suites use: away from a developer's `npm run cluster:up`. */
export function testLayout(): ClusterLayout {
  // Tests crash containers on purpose; the kubelet's 10 s first backoff would only slow them down.
  return { ...namedLayout('test'), restartBackoffBaseMs: 1_000 };
}

/** `--name=<cluster>` on the command line, else `local`. */
export function layoutFromArguments(argv: string[]): ClusterLayout {
  const argument = argv.find((arg) => arg.startsWith('--name='));
  return namedLayout(argument ? argument.slice('--name='.length) : 'local');
}

export function statePaths(layout: ClusterLayout) {
  const dir = layout.stateDir;
  return {
    pki: join(dir, 'pki'),
    etcdData: join(dir, 'etcd'),
    logs: join(dir, 'logs'),
    processes: join(dir, 'processes.json'),
    adminKubeconfig: join(dir, 'admin.kubeconfig'),
    controllerManagerKubeconfig: join(dir, 'controller-manager.kubeconfig'),
    schedulerKubeconfig: join(dir, 'scheduler.kubeconfig'),
    nodeKubeconfig: join(dir, 'node.kubeconfig'),
    corefile: join(dir, 'Corefile'),
    node: join(dir, 'node'),
    layoutFile: join(dir, 'layout.json'),
    /** Headless-Service records the node agent writes and CoreDNS's hosts plugin serves. */
    dnsHosts: join(dir, 'dns', 'hosts'),
  };
}
