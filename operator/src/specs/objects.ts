// Pure builders of every object the operator owns for a BftCluster (after CloudNativePG's pkg/specs):
// given the cluster and what was decided about it, the manifest to apply. No I/O, no clock, no random.

import { type BftClusterSpec, apiVersion, kind } from '../api/bftcluster.ts';
import {
  type ClusterRef,
  adminPort,
  clientServiceName,
  clusterLabels,
  configMapName,
  containerPaths,
  dataClaimName,
  disruptionBudgetName,
  labels,
  peerServiceName,
  replicaDnsName,
  replicaLabels,
  replicaPodName,
  replicaPort,
  replicaSecretName,
  replicaSelectorLabels,
} from './names.ts';

/** A manifest as the API server takes it (server-side apply). */
export interface KubeObject {
  readonly apiVersion: string;
  readonly kind: string;
  readonly metadata: {
    readonly name: string;
    readonly namespace: string;
    readonly labels?: Record<string, string>;
    readonly annotations?: Record<string, string>;
    readonly ownerReferences?: readonly Record<string, unknown>[];
  };
  readonly [field: string]: unknown;
}

/** The cluster owns it: Kubernetes' garbage collector deletes it with the BftCluster. */
export function ownerReference(cluster: ClusterRef): Record<string, unknown> {
  return { apiVersion, kind, name: cluster.name, uid: cluster.uid, controller: true, blockOwnerDeletion: true };
}

function metadata(cluster: ClusterRef, name: string, objectLabels: Record<string, string>, owned = true) {
  return { name, namespace: cluster.namespace, labels: objectLabels, ...(owned ? { ownerReferences: [ownerReference(cluster)] } : {}) };
}

/** The view a replica's configuration names: the genesis view, or the view that added it. */
export interface ConfiguredView {
  readonly number: number;
  readonly f: number;
  readonly members: readonly number[];
}

/** A replica's configuration file (replica/src/server/config.ts); its id and listen address come from the environment. */
export function replicaConfig(cluster: ClusterRef, spec: BftClusterSpec, view: ConfiguredView): Record<string, unknown> {
  return {
    cluster: {
      name: cluster.name,
      view: {
        number: view.number,
        mode: spec.faultModel,
        f: view.f,
        members: view.members.map((id) => ({ id, host: replicaDnsName(cluster.name, cluster.namespace, id), port: replicaPort, adminPort })),
      },
    },
    keysDir: containerPaths.keys,
    dataDir: containerPaths.data,
    durability: spec.durability,
    requireSignedRequests: spec.requireSignedRequests,
    ...(spec.batch === undefined ? {} : { batch: spec.batch }),
    service: { module: spec.service.module, ...(spec.service.config === undefined ? {} : { config: spec.service.config }) },
    logLevel: 'info',
  };
}

export function configFileName(id: number): string {
  return `replica-${id}.json`;
}

/** Every replica's configuration file, and the public keys all of them check votes and requests against. */
export function configMap(cluster: ClusterRef, files: Readonly<Record<string, string>>): KubeObject {
  return { apiVersion: 'v1', kind: 'ConfigMap', metadata: metadata(cluster, configMapName(cluster.name), clusterLabels(cluster.name)), data: { ...files } };
}

export function secret(cluster: ClusterRef, name: string, data: Readonly<Record<string, string>>, component: string): KubeObject {
  return {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: metadata(cluster, name, { ...clusterLabels(cluster.name), [labels.component]: component }),
    type: 'Opaque',
    stringData: { ...data },
  };
}

export function dataClaim(cluster: ClusterRef, spec: BftClusterSpec, id: number): KubeObject {
  return {
    apiVersion: 'v1',
    kind: 'PersistentVolumeClaim',
    // Retain: not owned, so the garbage collector leaves it when the cluster goes.
    metadata: metadata(cluster, dataClaimName(cluster.name, id), replicaLabels(cluster.name, id), spec.storage.retentionPolicy === 'Delete'),
    spec: {
      accessModes: ['ReadWriteOnce'],
      resources: { requests: { storage: spec.storage.size } },
      ...(spec.storage.storageClassName === undefined ? {} : { storageClassName: spec.storage.storageClassName }),
    },
  };
}

/** Replicas find each other by name; not-ready ones too, or a replica catching up could never be reached. */
export function peerService(cluster: ClusterRef): KubeObject {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: metadata(cluster, peerServiceName(cluster.name), clusterLabels(cluster.name)),
    spec: {
      clusterIP: 'None',
      publishNotReadyAddresses: true,
      selector: replicaSelectorLabels(cluster.name),
      ports: [
        { name: 'replica', port: replicaPort, targetPort: replicaPort },
        { name: 'admin', port: adminPort, targetPort: adminPort },
      ],
    },
  };
}

/** What applications connect through: the ready replicas. */
export function clientService(cluster: ClusterRef): KubeObject {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: metadata(cluster, clientServiceName(cluster.name), clusterLabels(cluster.name)),
    spec: {
      selector: replicaSelectorLabels(cluster.name),
      ports: [{ name: 'replica', port: replicaPort, targetPort: replicaPort }],
    },
  };
}

/** Never more than f replicas evicted at once: the cluster keeps its quorums through drains. */
export function disruptionBudget(cluster: ClusterRef, f: number): KubeObject {
  return {
    apiVersion: 'policy/v1',
    kind: 'PodDisruptionBudget',
    metadata: metadata(cluster, disruptionBudgetName(cluster.name), clusterLabels(cluster.name)),
    spec: { maxUnavailable: f, selector: { matchLabels: replicaSelectorLabels(cluster.name) } },
  };
}

export interface ReplicaPodOptions {
  /** Its volume was lost (or it replaces a replica whose was): it may have voted before and must not contradict itself. */
  readonly joinsRunningCluster: boolean;
  /** A hash of its configuration and keys: a change rolls the pod. */
  readonly configHash: string;
}

export function replicaPod(cluster: ClusterRef, spec: BftClusterSpec, id: number, options: ReplicaPodOptions): KubeObject {
  const env = [
    { name: 'POD_IP', valueFrom: { fieldRef: { fieldPath: 'status.podIP' } } },
    { name: 'BFTKUBE_REPLICA_ID', value: String(id) },
    // Each replica binds its own pod address (pods of the local node share one network namespace).
    { name: 'BFTKUBE_LISTEN_HOST', value: '$(POD_IP)' },
    { name: 'BFTKUBE_LISTEN_ADMIN_HOST', value: '$(POD_IP)' },
    ...(options.joinsRunningCluster ? [{ name: 'BFTKUBE_JOINS_RUNNING_CLUSTER', value: 'true' }] : []),
  ];
  const probe = (path: string, periodSeconds: number, failureThreshold: number) => ({
    httpGet: { path, port: adminPort },
    periodSeconds,
    failureThreshold,
    timeoutSeconds: 2,
  });
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      ...metadata(cluster, replicaPodName(cluster.name, id), replicaLabels(cluster.name, id)),
      annotations: { 'bftkube.dev/config-hash': options.configHash },
    },
    spec: {
      hostname: replicaPodName(cluster.name, id),
      subdomain: peerServiceName(cluster.name),
      restartPolicy: 'Always',
      terminationGracePeriodSeconds: 30,
      // Replicas never talk to the API server: no token in their pods.
      automountServiceAccountToken: false,
      securityContext: { runAsNonRoot: true, runAsUser: 10001, runAsGroup: 10001, fsGroup: 10001, seccompProfile: { type: 'RuntimeDefault' } },
      containers: [
        {
          name: 'replica',
          image: spec.image,
          args: ['replica', '--config', `${containerPaths.config}/replica-${id}.json`],
          env,
          ports: [
            { name: 'replica', containerPort: replicaPort },
            { name: 'admin', containerPort: adminPort },
          ],
          readinessProbe: probe('/readyz', 2, 3),
          livenessProbe: { ...probe('/healthz', 10, 6), initialDelaySeconds: 10 },
          ...(spec.resources === undefined ? {} : { resources: spec.resources }),
          securityContext: { allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } },
          volumeMounts: [
            { name: 'config', mountPath: containerPaths.config, readOnly: true },
            { name: 'keys', mountPath: containerPaths.keys, readOnly: true },
            { name: 'data', mountPath: containerPaths.data },
          ],
        },
      ],
      volumes: [
        { name: 'config', configMap: { name: configMapName(cluster.name), items: [{ key: configFileName(id), path: configFileName(id) }] } },
        {
          // The layout replica/src/server/keys.ts reads: TLS material at the top, signing keys in signing/.
          name: 'keys',
          projected: {
            defaultMode: 0o400,
            sources: [
              {
                secret: {
                  name: replicaSecretName(cluster.name, id),
                  items: [
                    { key: 'ca.crt', path: 'ca.crt' },
                    { key: 'tls.crt', path: `replica-${id}.crt` },
                    { key: 'tls.key', path: `replica-${id}.key` },
                    { key: 'signing.pem', path: `signing/replica-${id}.pem` },
                  ],
                },
              },
              { configMap: { name: configMapName(cluster.name), items: [{ key: 'public-keys.json', path: 'signing/public-keys.json' }] } },
            ],
          },
        },
        { name: 'data', persistentVolumeClaim: { claimName: dataClaimName(cluster.name, id) } },
      ],
    },
  };
}
