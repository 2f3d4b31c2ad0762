// Pod volumes as folders on this machine: Secrets, ConfigMaps, downward API and projected volumes are
// written out; emptyDirs are created; PVCs resolve to the hostPath of the PersistentVolume bound to them.
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, normalize } from 'node:path';
import type { PodRuntimeFacts } from './downward.ts';
import { fieldValue, resourceFieldValue } from './downward.ts';
import type { JsonObject, KubeRest } from './kube-rest.ts';

/** A volume the pod cannot start without yet (an unbound claim, a missing Secret); retried later. */
export class VolumeNotReadyError extends Error {
  readonly reason: string;
  constructor(reason: string, message: string, options?: ErrorOptions) {
    super(message, options);
    this.reason = reason;
  }
}

export interface PreparedVolumes {
  /** Volume name → folder on this machine. */
  hostPaths: Map<string, string>;
  /** Service-account tokens are short-lived: rewrite them before they expire. */
  refreshAtMs: number | undefined;
}

const defaultFileMode = 0o644;
const defaultTokenExpirationSeconds = 3600;
/** Like the kubelet: renew once 80% of a token's life has passed. */
const tokenRenewFraction = 0.8;

/** Files written in this pass, per volume folder: anything else there is a key that went away. */
type Written = Set<string>;

function writeKeyFile(dir: string, relativePath: string, content: string | Buffer, mode: number, written?: Written): void {
  const target = normalize(join(dir, relativePath));
  if (!target.startsWith(dir + '/')) throw new Error(`BFT_ERR_VOLUME_PATH: ${relativePath} leaves its volume`);
  written?.add(target);
  const bytes = typeof content === 'string' ? Buffer.from(content, 'utf8') : content;
  if (existsSync(target) && readFileSync(target).equals(bytes)) return;
  mkdirSync(dirname(target), { recursive: true });
  // A container may read at any moment: replace the file whole (rename), never truncate it in place.
  const temporary = join(dirname(target), `.${basename(target)}.tmp`);
  writeFileSync(temporary, bytes);
  chmodSync(temporary, mode);
  renameSync(temporary, target);
}

function removeUnwritten(dir: string, written: Written): void {
  for (const entry of readdirSync(dir, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue;
    const path = join(entry.parentPath, entry.name);
    if (!written.has(path)) rmSync(path, { force: true });
  }
}

interface KeySource { data: Map<string, Buffer> }

async function readKeySource(rest: KubeRest, namespace: string, kind: 'secrets' | 'configmaps', name: string, optional: boolean): Promise<KeySource | undefined> {
  try {
    const object = await rest.get(`/api/v1/namespaces/${namespace}/${kind}/${name}`);
    const data = new Map<string, Buffer>();
    for (const [key, value] of Object.entries((object.data ?? {}) as Record<string, string>)) {
      data.set(key, kind === 'secrets' ? Buffer.from(value, 'base64') : Buffer.from(value, 'utf8'));
    }
    for (const [key, value] of Object.entries((object.binaryData ?? {}) as Record<string, string>)) data.set(key, Buffer.from(value, 'base64'));
    return { data };
  } catch (error) {
    if (optional) return undefined;
    throw new VolumeNotReadyError('VolumeSourceMissing', `BFT_ERR_VOLUME_SOURCE: ${kind}/${name} in ${namespace} cannot be read`, { cause: error });
  }
}

function writeKeys(dir: string, source: KeySource | undefined, items: JsonObject[] | undefined, defaultMode: number, written: Written): void {
  if (!source) return;
  if (items && items.length > 0) {
    for (const item of items) {
      const value = source.data.get(String(item.key));
      if (value === undefined) throw new VolumeNotReadyError('VolumeKeyMissing', `BFT_ERR_VOLUME_KEY: key ${item.key} missing`);
      writeKeyFile(dir, String(item.path), value, item.mode ?? defaultMode, written);
    }
    return;
  }
  for (const [key, value] of source.data) writeKeyFile(dir, key, value, defaultMode, written);
}

function writeDownwardItems(dir: string, pod: JsonObject, facts: PodRuntimeFacts, items: JsonObject[], defaultMode: number, written: Written): void {
  for (const item of items) {
    let value = '';
    if (item.fieldRef) value = fieldValue(pod, facts, String(item.fieldRef.fieldPath));
    else if (item.resourceFieldRef) {
      const container = (pod.spec.containers as JsonObject[]).find((c) => c.name === item.resourceFieldRef.containerName);
      value = resourceFieldValue(container, String(item.resourceFieldRef.resource), item.resourceFieldRef.divisor);
    }
    writeKeyFile(dir, String(item.path), value, item.mode ?? defaultMode, written);
  }
}

async function writeServiceAccountToken(rest: KubeRest, pod: JsonObject, dir: string, source: JsonObject, mode: number, written: Written): Promise<number> {
  const expirationSeconds = Number(source.expirationSeconds ?? defaultTokenExpirationSeconds);
  const namespace = String(pod.metadata.namespace);
  const account = String(pod.spec.serviceAccountName ?? 'default');
  const request = await rest.post(`/api/v1/namespaces/${namespace}/serviceaccounts/${account}/token`, {
    apiVersion: 'authentication.k8s.io/v1',
    kind: 'TokenRequest',
    spec: {
      ...(source.audience ? { audiences: [String(source.audience)] } : {}),
      expirationSeconds,
      boundObjectRef: { apiVersion: 'v1', kind: 'Pod', name: pod.metadata.name, uid: pod.metadata.uid },
    },
  });
  writeKeyFile(dir, String(source.path), String(request.status.token), mode, written);
  const expiresMs = Date.parse(String(request.status.expirationTimestamp));
  return Date.now() + (expiresMs - Date.now()) * tokenRenewFraction;
}

export interface VolumeContext {
  rest: KubeRest;
  pod: JsonObject;
  facts: PodRuntimeFacts;
  /** The pod's own folder; volumes go to <podDir>/volumes/<name>. */
  podDir: string;
  /** False on a resync: tokens are renewed on their own schedule, not every pass. */
  renewTokens?: boolean;
}

/** Writes every volume of the pod; called again to resync (changed keys rewritten, removed keys deleted). */
export async function prepareVolumes(context: VolumeContext): Promise<PreparedVolumes> {
  const { rest, pod, facts } = context;
  const namespace = String(pod.metadata.namespace);
  const hostPaths = new Map<string, string>();
  let refreshAtMs: number | undefined;
  for (const volume of (pod.spec.volumes ?? []) as JsonObject[]) {
    const name = String(volume.name);
    const dir = join(context.podDir, 'volumes', name);
    if (volume.persistentVolumeClaim) {
      hostPaths.set(name, await claimHostPath(rest, namespace, String(volume.persistentVolumeClaim.claimName)));
      continue;
    }
    if (volume.hostPath) {
      const path = String(volume.hostPath.path);
      if (volume.hostPath.type === 'DirectoryOrCreate' && !existsSync(path)) mkdirSync(path, { recursive: true });
      hostPaths.set(name, path);
      continue;
    }
    mkdirSync(dir, { recursive: true });
    hostPaths.set(name, dir);
    if (volume.emptyDir) continue;
    const written: Written = new Set();
    if (volume.secret) {
      const source = await readKeySource(rest, namespace, 'secrets', String(volume.secret.secretName), Boolean(volume.secret.optional));
      writeKeys(dir, source, volume.secret.items, volume.secret.defaultMode ?? defaultFileMode, written);
    } else if (volume.configMap) {
      const source = await readKeySource(rest, namespace, 'configmaps', String(volume.configMap.name), Boolean(volume.configMap.optional));
      writeKeys(dir, source, volume.configMap.items, volume.configMap.defaultMode ?? defaultFileMode, written);
    } else if (volume.downwardAPI) {
      writeDownwardItems(dir, pod, facts, volume.downwardAPI.items ?? [], volume.downwardAPI.defaultMode ?? defaultFileMode, written);
    } else if (volume.projected) {
      const mode = volume.projected.defaultMode ?? defaultFileMode;
      for (const projection of (volume.projected.sources ?? []) as JsonObject[]) {
        if (projection.serviceAccountToken) {
          const tokenFile = normalize(join(dir, String(projection.serviceAccountToken.path)));
          if (context.renewTokens === false && existsSync(tokenFile)) { written.add(tokenFile); continue; }
          const renewAtMs = await writeServiceAccountToken(rest, pod, dir, projection.serviceAccountToken, mode, written);
          refreshAtMs = Math.min(refreshAtMs ?? renewAtMs, renewAtMs);
        } else if (projection.configMap) {
          const source = await readKeySource(rest, namespace, 'configmaps', String(projection.configMap.name), Boolean(projection.configMap.optional));
          writeKeys(dir, source, projection.configMap.items, mode, written);
        } else if (projection.secret) {
          const source = await readKeySource(rest, namespace, 'secrets', String(projection.secret.name), Boolean(projection.secret.optional));
          writeKeys(dir, source, projection.secret.items, mode, written);
        } else if (projection.downwardAPI) {
          writeDownwardItems(dir, pod, facts, projection.downwardAPI.items ?? [], mode, written);
        }
      }
    } else {
      throw new VolumeNotReadyError('VolumeTypeUnsupported', `BFT_ERR_VOLUME_TYPE: volume ${name} has a type this node agent does not run`);
    }
    // Like the kubelet's atomic writer: a key removed from its Secret or ConfigMap disappears.
    removeUnwritten(dir, written);
  }
  return { hostPaths, refreshAtMs };
}

async function claimHostPath(rest: KubeRest, namespace: string, claimName: string): Promise<string> {
  let claim: JsonObject;
  try {
    claim = await rest.get(`/api/v1/namespaces/${namespace}/persistentvolumeclaims/${claimName}`);
  } catch (error) {
    throw new VolumeNotReadyError('ClaimMissing', `BFT_ERR_VOLUME_CLAIM: persistentvolumeclaim ${claimName} not found`, { cause: error });
  }
  const volumeName = claim.spec?.volumeName;
  if (claim.status?.phase !== 'Bound' || !volumeName) {
    throw new VolumeNotReadyError('ClaimNotBound', `BFT_ERR_VOLUME_CLAIM_UNBOUND: persistentvolumeclaim ${claimName} is not bound yet`);
  }
  const volume = await rest.get(`/api/v1/persistentvolumes/${volumeName}`);
  const path = volume.spec?.hostPath?.path ?? volume.spec?.local?.path;
  if (!path) throw new VolumeNotReadyError('VolumeTypeUnsupported', `BFT_ERR_VOLUME_PV_TYPE: persistentvolume ${volumeName} is neither hostPath nor local`);
  mkdirSync(String(path), { recursive: true });
  return String(path);
}
