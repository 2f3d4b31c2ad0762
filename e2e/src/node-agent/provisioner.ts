// A local volume provisioner: PersistentVolumeClaims of our StorageClass get a hostPath
// PersistentVolume under the node's state folder, pre-bound to the claim; the real PV controller in
// kube-controller-manager completes the binding. Released volumes with reclaim policy Delete are
// removed with their data.
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { JsonObject, KubeRest } from './kube-rest.ts';
import { isConflict, isNotFound, KubeApiError } from './kube-rest.ts';

export const provisionerName = 'bftkube.io/local-path';
export const storageClassName = 'bftkube-local';

export async function ensureStorageClass(rest: KubeRest): Promise<void> {
  try {
    await rest.post('/apis/storage.k8s.io/v1/storageclasses', {
      apiVersion: 'storage.k8s.io/v1',
      kind: 'StorageClass',
      metadata: { name: storageClassName, annotations: { 'storageclass.kubernetes.io/is-default-class': 'true' } },
      provisioner: provisionerName,
      reclaimPolicy: 'Delete',
      volumeBindingMode: 'Immediate',
    });
  } catch (error) {
    if (!(error instanceof KubeApiError && error.statusCode === 409)) throw error;
  }
}

export class LocalProvisioner {
  private readonly rest: KubeRest;
  private readonly volumesDir: string;
  private readonly log: (message: string) => void;
  private readonly inFlight = new Set<string>();

  constructor(rest: KubeRest, volumesDir: string, log: (message: string) => void) {
    this.rest = rest;
    this.volumesDir = volumesDir;
    this.log = log;
  }

  private wantsVolume(claim: JsonObject): boolean {
    if (claim.spec?.volumeName || claim.metadata?.deletionTimestamp) return false;
    const className = claim.spec?.storageClassName;
    return className === storageClassName;
  }

  onClaim(claim: JsonObject): void {
    if (!this.wantsVolume(claim)) return;
    const uid = String(claim.metadata.uid);
    if (this.inFlight.has(uid)) return;
    this.inFlight.add(uid);
    void this.provision(claim).catch((error: unknown) => this.log(`provision ${claim.metadata.namespace}/${claim.metadata.name}: ${String(error)}`))
      .finally(() => this.inFlight.delete(uid));
  }

  private async provision(claim: JsonObject): Promise<void> {
    const name = `pvc-${claim.metadata.uid}`;
    const path = join(this.volumesDir, name);
    mkdirSync(path, { recursive: true });
    try {
      await this.rest.post('/api/v1/persistentvolumes', {
        apiVersion: 'v1',
        kind: 'PersistentVolume',
        metadata: { name, annotations: { 'pv.kubernetes.io/provisioned-by': provisionerName } },
        spec: {
          capacity: { storage: claim.spec?.resources?.requests?.storage ?? '1Gi' },
          accessModes: claim.spec?.accessModes ?? ['ReadWriteOnce'],
          persistentVolumeReclaimPolicy: 'Delete',
          storageClassName,
          volumeMode: claim.spec?.volumeMode ?? 'Filesystem',
          hostPath: { path, type: 'DirectoryOrCreate' },
          claimRef: { apiVersion: 'v1', kind: 'PersistentVolumeClaim', namespace: claim.metadata.namespace, name: claim.metadata.name, uid: claim.metadata.uid },
        },
      });
      this.log(`provisioned ${name} for ${claim.metadata.namespace}/${claim.metadata.name} at ${path}`);
    } catch (error) {
      if (!isConflict(error)) throw error;
    }
  }

  onVolume(volume: JsonObject): void {
    const ours = volume.metadata?.annotations?.['pv.kubernetes.io/provisioned-by'] === provisionerName;
    if (!ours || volume.status?.phase !== 'Released' || volume.spec?.persistentVolumeReclaimPolicy !== 'Delete') return;
    const name = String(volume.metadata.name);
    if (this.inFlight.has(name)) return;
    this.inFlight.add(name);
    void (async () => {
      const path = volume.spec?.hostPath?.path;
      if (typeof path === 'string' && path.startsWith(this.volumesDir + '/')) rmSync(path, { recursive: true, force: true });
      try {
        await this.rest.delete(`/api/v1/persistentvolumes/${name}`);
        this.log(`deleted released ${name}`);
      } catch (error) {
        if (!isNotFound(error)) throw error;
      }
    })().catch((error: unknown) => this.log(`delete ${name}: ${String(error)}`)).finally(() => this.inFlight.delete(name));
  }
}
