// The downward API and env resolution: what a kubelet computes from the pod before starting a container.
import type { JsonObject, KubeRest } from './kube-rest.ts';

export interface PodRuntimeFacts {
  podIp: string;
  hostIp: string;
}

function formatMap(map: Record<string, string> | undefined): string {
  return Object.entries(map ?? {}).sort(([a], [b]) => a.localeCompare(b)).map(([key, value]) => `${key}=${JSON.stringify(value)}`).join('\n');
}

export function fieldValue(pod: JsonObject, facts: PodRuntimeFacts, fieldPath: string): string {
  const subscript = /^metadata\.(labels|annotations)\['(.+)'\]$/.exec(fieldPath);
  if (subscript?.[1] && subscript[2] !== undefined) return String(pod.metadata?.[subscript[1]]?.[subscript[2]] ?? '');
  switch (fieldPath) {
    case 'metadata.name': return String(pod.metadata?.name ?? '');
    case 'metadata.namespace': return String(pod.metadata?.namespace ?? '');
    case 'metadata.uid': return String(pod.metadata?.uid ?? '');
    case 'metadata.labels': return formatMap(pod.metadata?.labels);
    case 'metadata.annotations': return formatMap(pod.metadata?.annotations);
    case 'spec.nodeName': return String(pod.spec?.nodeName ?? '');
    case 'spec.serviceAccountName': return String(pod.spec?.serviceAccountName ?? '');
    case 'status.podIP': case 'status.podIPs': return facts.podIp;
    case 'status.hostIP': case 'status.hostIPs': return facts.hostIp;
    default: throw new Error(`BFT_ERR_DOWNWARD_FIELD: fieldPath ${fieldPath} is not supported`);
  }
}

/** Quantities as the kubelet exposes them: a limit if set, else the request, else "0" (we do not meter). */
export function resourceFieldValue(container: JsonObject | undefined, resource: string, divisor: string | undefined): string {
  const [kind, name] = resource.split('.');
  const value = container?.resources?.[kind === 'requests' ? 'requests' : 'limits']?.[name ?? ''] ?? container?.resources?.requests?.[name ?? ''];
  if (value === undefined) return '0';
  if (!divisor || divisor === '1') return String(value);
  return String(value);
}

async function readKey(rest: KubeRest, kind: 'secrets' | 'configmaps', namespace: string, name: string, key: string, optional: boolean): Promise<string | undefined> {
  try {
    const object = await rest.get(`/api/v1/namespaces/${namespace}/${kind}/${name}`);
    const raw = object.data?.[key];
    if (raw === undefined) {
      if (optional) return undefined;
      throw new Error(`BFT_ERR_ENV_KEY_MISSING: ${kind}/${name} has no key ${key}`);
    }
    return kind === 'secrets' ? Buffer.from(String(raw), 'base64').toString('utf8') : String(raw);
  } catch (error) {
    if (optional) return undefined;
    throw error;
  }
}

/** Expands $(NAME) from earlier variables as Kubernetes does; $$(NAME) escapes. */
export function expandReferences(text: string, variables: Map<string, string>): string {
  return text.replace(/\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)/g, (match, name: string | undefined) => {
    if (match === '$$') return '$';
    return name !== undefined && variables.has(name) ? variables.get(name)! : match;
  });
}

/** The container's environment: service variables first, then envFrom, then env, in order. */
export async function containerEnvironment(rest: KubeRest, pod: JsonObject, container: JsonObject, facts: PodRuntimeFacts, apiserver: { host: string; port: number }): Promise<Map<string, string>> {
  const namespace = String(pod.metadata.namespace);
  const variables = new Map<string, string>();
  // In-cluster clients read these; without kube-proxy the Service IP is unreachable, so they name
  // the real apiserver address, whose certificate carries it.
  variables.set('KUBERNETES_SERVICE_HOST', apiserver.host);
  variables.set('KUBERNETES_SERVICE_PORT', String(apiserver.port));
  variables.set('KUBERNETES_SERVICE_PORT_HTTPS', String(apiserver.port));
  variables.set('KUBERNETES_PORT', `tcp://${apiserver.host}:${apiserver.port}`);
  variables.set('POD_IP', facts.podIp);
  variables.set('HOSTNAME', String(pod.spec?.hostname ?? pod.metadata.name));
  for (const source of (container.envFrom ?? []) as JsonObject[]) {
    const prefix = String(source.prefix ?? '');
    const reference = source.configMapRef ?? source.secretRef;
    const kind = source.configMapRef ? 'configmaps' : 'secrets';
    try {
      const object = await rest.get(`/api/v1/namespaces/${namespace}/${kind}/${reference.name}`);
      for (const [key, raw] of Object.entries((object.data ?? {}) as Record<string, string>)) {
        variables.set(prefix + key, kind === 'secrets' ? Buffer.from(raw, 'base64').toString('utf8') : raw);
      }
    } catch (error) {
      if (!reference.optional) throw error;
    }
  }
  for (const entry of (container.env ?? []) as JsonObject[]) {
    const name = String(entry.name);
    if (entry.value !== undefined) { variables.set(name, expandReferences(String(entry.value), variables)); continue; }
    const from = entry.valueFrom;
    if (!from) { variables.set(name, ''); continue; }
    let value: string | undefined;
    if (from.fieldRef) value = fieldValue(pod, facts, String(from.fieldRef.fieldPath));
    else if (from.resourceFieldRef) {
      const target = from.resourceFieldRef.containerName
        ? (pod.spec.containers as JsonObject[]).find((c) => c.name === from.resourceFieldRef.containerName)
        : container;
      value = resourceFieldValue(target, String(from.resourceFieldRef.resource), from.resourceFieldRef.divisor);
    } else if (from.secretKeyRef) value = await readKey(rest, 'secrets', namespace, from.secretKeyRef.name, from.secretKeyRef.key, Boolean(from.secretKeyRef.optional));
    else if (from.configMapKeyRef) value = await readKey(rest, 'configmaps', namespace, from.configMapKeyRef.name, from.configMapKeyRef.key, Boolean(from.configMapKeyRef.optional));
    if (value !== undefined) variables.set(name, value);
  }
  return variables;
}
