// REST paths of the kinds the operator touches.

import { group, plural, version } from '../api/bftcluster.ts';

const core = (namespace: string, resource: string) => `/api/v1/namespaces/${encodeURIComponent(namespace)}/${resource}`;

export const paths = {
  bftClusters: (namespace?: string) =>
    namespace === undefined ? `/apis/${group}/${version}/${plural}` : `/apis/${group}/${version}/namespaces/${encodeURIComponent(namespace)}/${plural}`,
  bftCluster: (namespace: string, name: string) => `${paths.bftClusters(namespace)}/${encodeURIComponent(name)}`,
  bftClusterStatus: (namespace: string, name: string) => `${paths.bftCluster(namespace, name)}/status`,
  pods: (namespace?: string) => (namespace === undefined ? '/api/v1/pods' : core(namespace, 'pods')),
  pod: (namespace: string, name: string) => `${core(namespace, 'pods')}/${encodeURIComponent(name)}`,
  secrets: (namespace: string) => core(namespace, 'secrets'),
  secret: (namespace: string, name: string) => `${core(namespace, 'secrets')}/${encodeURIComponent(name)}`,
  configMaps: (namespace: string) => core(namespace, 'configmaps'),
  configMap: (namespace: string, name: string) => `${core(namespace, 'configmaps')}/${encodeURIComponent(name)}`,
  service: (namespace: string, name: string) => `${core(namespace, 'services')}/${encodeURIComponent(name)}`,
  claims: (namespace: string) => core(namespace, 'persistentvolumeclaims'),
  claim: (namespace: string, name: string) => `${core(namespace, 'persistentvolumeclaims')}/${encodeURIComponent(name)}`,
  disruptionBudget: (namespace: string, name: string) => `/apis/policy/v1/namespaces/${encodeURIComponent(namespace)}/poddisruptionbudgets/${encodeURIComponent(name)}`,
  events: (namespace: string) => `/apis/events.k8s.io/v1/namespaces/${encodeURIComponent(namespace)}/events`,
  lease: (namespace: string, name: string) => `/apis/coordination.k8s.io/v1/namespaces/${encodeURIComponent(namespace)}/leases/${encodeURIComponent(name)}`,
  leases: (namespace: string) => `/apis/coordination.k8s.io/v1/namespaces/${encodeURIComponent(namespace)}/leases`,
} as const;

/** The REST path of an object from its manifest. */
export function pathOf(object: { apiVersion: string; kind: string; metadata: { name: string; namespace: string } }): string {
  const { namespace, name } = object.metadata;
  switch (object.kind) {
    case 'Pod':
      return paths.pod(namespace, name);
    case 'Secret':
      return paths.secret(namespace, name);
    case 'ConfigMap':
      return paths.configMap(namespace, name);
    case 'Service':
      return paths.service(namespace, name);
    case 'PersistentVolumeClaim':
      return paths.claim(namespace, name);
    case 'PodDisruptionBudget':
      return paths.disruptionBudget(namespace, name);
    default:
      throw new Error(`BFT_ERR_INVARIANT: no path for kind ${object.kind}`);
  }
}
