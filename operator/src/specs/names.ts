// Names, labels and addresses of everything the operator makes for a BftCluster: one place, so that the
// builders, the planner and the status agree on them.

/** Where replicas listen, in every pod: replica and client TLS on one port, the admin server on the other. */
export const replicaPort = 7000;
export const adminPort = 8000;

/** Paths inside a replica's container. */
export const containerPaths = {
  config: '/etc/bftkube',
  keys: '/var/run/bftkube/keys',
  data: '/var/lib/bftkube',
} as const;

export const labels = {
  name: 'app.kubernetes.io/name',
  instance: 'app.kubernetes.io/instance',
  component: 'app.kubernetes.io/component',
  managedBy: 'app.kubernetes.io/managed-by',
  cluster: 'bftkube.dev/cluster',
  replicaId: 'bftkube.dev/replica-id',
} as const;

export const fieldManager = 'bftkube-operator';

export interface ClusterRef {
  readonly name: string;
  readonly namespace: string;
  readonly uid: string;
}

export function replicaPodName(cluster: string, id: number): string {
  return `${cluster}-${id}`;
}

/** The headless Service that gives each replica pod its DNS name. */
export function peerServiceName(cluster: string): string {
  return `${cluster}-replicas`;
}

/** The Service applications use (its endpoints are the ready replicas). */
export function clientServiceName(cluster: string): string {
  return cluster;
}

export function dataClaimName(cluster: string, id: number): string {
  return `data-${cluster}-${id}`;
}

export function replicaSecretName(cluster: string, id: number): string {
  return `${cluster}-replica-${id}`;
}

export const secretNames = {
  ca: (cluster: string) => `${cluster}-ca`,
  viewManager: (cluster: string) => `${cluster}-view-manager`,
  /** The client certificate and signing key applications use. */
  client: (cluster: string) => `${cluster}-client`,
  /** The operator's own client identity, for submitting reconfigurations. */
  operatorClient: (cluster: string) => `${cluster}-operator-client`,
} as const;

/** Replica configuration files and the public keys every replica checks against. */
export function configMapName(cluster: string): string {
  return `${cluster}-config`;
}

export function disruptionBudgetName(cluster: string): string {
  return cluster;
}

/** The DNS name replica `id` is dialled by, and which its certificate names. */
export function replicaDnsName(cluster: string, namespace: string, id: number): string {
  return `${replicaPodName(cluster, id)}.${peerServiceName(cluster)}.${namespace}.svc.cluster.local`;
}

/** Every name a replica's certificate lists: the full one and its shorter in-cluster forms. */
export function replicaDnsNames(cluster: string, namespace: string, id: number): string[] {
  const host = `${replicaPodName(cluster, id)}.${peerServiceName(cluster)}`;
  return [`${host}.${namespace}.svc.cluster.local`, `${host}.${namespace}.svc`, `${host}.${namespace}`, host];
}

export function clusterLabels(cluster: string): Record<string, string> {
  return { [labels.name]: 'bftkube', [labels.instance]: cluster, [labels.managedBy]: fieldManager, [labels.cluster]: cluster };
}

export function replicaLabels(cluster: string, id: number): Record<string, string> {
  return { ...clusterLabels(cluster), [labels.component]: 'replica', [labels.replicaId]: String(id) };
}

/** The labels that select a cluster's replica pods (Services, the PodDisruptionBudget). */
export function replicaSelectorLabels(cluster: string): Record<string, string> {
  return { [labels.cluster]: cluster, [labels.component]: 'replica' };
}

/** The same selector as a string, as the scale subresource reports it. */
export function replicaSelector(cluster: string): string {
  return Object.entries(replicaSelectorLabels(cluster))
    .map(([key, value]) => `${key}=${value}`)
    .join(',');
}

/** Client ids in certificates: the applications' and the operator's own. */
export const clientIds = {
  application: 'app',
  operator: 'admin',
} as const;
