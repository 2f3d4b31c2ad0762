// One reconciliation of one BftCluster: bring what exists toward what the spec asks, in an order that a
// crash between any two steps cannot break (names are fixed; key material is made once and read back;
// objects are created only if absent, or applied server-side), then report what is, from observation.
// Membership changes by reconfiguration come later; this pass creates a cluster and heals it.

import type { Logger } from 'pino';
import { type BftClusterSpec, type BftClusterStatus, bftClusterSpecSchema, bftClusterStatusSchema, maxFaultsFor, pauseAnnotation } from '../api/bftcluster.ts';
import { type KubeRest, type JsonObject, isConflict, isNotFound } from '../kube/rest.ts';
import { pathOf, paths } from '../kube/paths.ts';
import {
  type ConfiguredView,
  type KubeObject,
  clientService,
  configFileName,
  configMap,
  dataClaim,
  disruptionBudget,
  peerService,
  replicaConfig,
  replicaPod,
  secret,
} from '../specs/objects.ts';
import { connectionFileName, renderConnectionFile } from '../../../replica/src/client/connection.ts';
import { type ClusterRef, clientIds, labels, replicaDnsName, replicaPort, replicaSelector, configMapName, dataClaimName, fieldManager, replicaPodName, replicaSecretName, secretNames } from '../specs/names.ts';
import { type SecretData, caOf, hashOf, keyFiles, newClientKeys, newClusterCa, newReplicaKeys, newViewManagerKey, publicKeysFile } from './keys.ts';
import { type MembershipChangeInput, changeMembership } from './membership-change.ts';
import { type MembershipRecord, readRecord, recordFiles } from './records.ts';
import { planRollingUpdate } from './rolling-update.ts';
import type { SubmitReconfiguration } from './submit.ts';
import { type PodObservation, type ReplicaReport, computeStatus, conditionEvents } from './status.ts';

export interface ReconcileDeps {
  readonly rest: Pick<KubeRest, 'get' | 'post' | 'delete' | 'apply' | 'mergePatch'>;
  /** A replica's /status, or null when it does not answer. */
  probe(podIp: string): Promise<ReplicaReport | null>;
  now(): Date;
  readonly logger?: Logger;
  /** Events with reasons, on the BftCluster. */
  event?(cluster: ClusterRef, type: 'Normal' | 'Warning', reason: string, message: string): void;
  /** Orders a signed reconfiguration through the cluster (submit.ts); without it, the size stays as created. */
  readonly submitReconfiguration?: SubmitReconfiguration;
}

export interface ReconcileResult {
  /** Reconcile again after this long even if nothing changes (status refresh, waiting for pods). */
  readonly requeueAfterMs: number;
}

/** The annotation on a volume created for a replica of a cluster that had already run: its replica starts amnesic. */
const freshVolumeAnnotation = 'bftkube.dev/fresh-volume-in-running-cluster';
/** The genesis view, recorded once in the ConfigMap: the replicas' configurations name it forever. */
const genesisKey = 'genesis.json';
/** The replica ids whose volumes have existed, recorded in the ConfigMap (JSON array). */
const volumesKey = 'volumes.json';

function parseVolumeRecord(text: unknown): number[] {
  if (typeof text !== 'string') return [];
  try {
    const parsed: unknown = JSON.parse(text);
    return Array.isArray(parsed) ? parsed.filter((id): id is number => Number.isInteger(id) && id >= 0) : [];
  } catch {
    return [];
  }
}

const requeueWhileConvergingMs = 3_000;
const requeueWhenReadyMs = 30_000;

function decodeSecret(object: JsonObject): SecretData {
  const data: SecretData = {};
  for (const [key, value] of Object.entries((object.data ?? {}) as Record<string, string>)) data[key] = Buffer.from(value, 'base64').toString('utf8');
  return data;
}

async function getOrNull(rest: ReconcileDeps['rest'], path: string): Promise<JsonObject | null> {
  try {
    return await rest.get(path);
  } catch (error) {
    if (isNotFound(error)) return null;
    throw error;
  }
}

/** Create if absent (409: another pass or a previous operator created it: read that one). Returns whether it was created. */
async function createIfAbsent(rest: ReconcileDeps['rest'], object: KubeObject, collection: string): Promise<boolean> {
  try {
    await rest.post(collection, object);
    return true;
  } catch (error) {
    if (isConflict(error)) return false;
    throw error;
  }
}

/** The hash of the manifest a replica pod was made from: a pod whose hash differs is outdated. */
const podHashAnnotation = 'bftkube.dev/pod-hash';

function withPodHash(pod: KubeObject): KubeObject {
  return { ...pod, metadata: { ...pod.metadata, annotations: { ...pod.metadata.annotations, [podHashAnnotation]: hashOf(canonical(pod)) } } };
}

/** The hash of what the operator last applied to an object: reapplied only when the wanted manifest differs. */
const appliedHashAnnotation = 'bftkube.dev/applied-hash';

/**
 * Server-side apply, skipped when the live object carries the hash of this very manifest: a pass that
 * changes nothing writes nothing (no resourceVersion churn, no watch events that would requeue us).
 */
async function applyIfChanged(rest: ReconcileDeps['rest'], manifest: KubeObject): Promise<boolean> {
  const hash = hashOf(canonical(manifest));
  const live = await getOrNull(rest, pathOf(manifest));
  if (live?.metadata?.annotations?.[appliedHashAnnotation] === hash) return false;
  const annotated: KubeObject = { ...manifest, metadata: { ...manifest.metadata, annotations: { ...manifest.metadata.annotations, [appliedHashAnnotation]: hash } } };
  await rest.apply(pathOf(manifest), annotated, fieldManager);
  return true;
}

export async function reconcile(deps: ReconcileDeps, namespace: string, name: string): Promise<ReconcileResult> {
  const { rest } = deps;
  const object = await getOrNull(rest, paths.bftCluster(namespace, name));
  if (object === null) return { requeueAfterMs: 0 };
  if (object.metadata?.deletionTimestamp) return { requeueAfterMs: 0 };
  const cluster: ClusterRef = { name, namespace, uid: String(object.metadata.uid) };
  const generation = Number(object.metadata.generation ?? 0);
  const previousStatus = bftClusterStatusSchema.safeParse(object.status ?? {});
  const previous: BftClusterStatus | undefined = previousStatus.success ? previousStatus.data : undefined;
  const paused = object.metadata?.annotations?.[pauseAnnotation] === 'true';
  const parsedSpec = bftClusterSpecSchema.safeParse(object.spec ?? {});
  const changes: string[] = [];

  let stalled: string | null = null;
  let spec: BftClusterSpec | null = null;
  if (!parsedSpec.success) stalled = `the spec is invalid: ${parsedSpec.error.issues[0]?.message ?? 'unknown'}`;
  else spec = parsedSpec.data;

  // The genesis view: recorded in the ConfigMap the first time, read back afterwards; and what else the
  // operator remembers there (records.ts): the view the cluster runs, a change in flight.
  const existingConfig = await getOrNull(rest, paths.configMap(namespace, configMapName(name)));
  const recordedGenesis = existingConfig?.data?.[genesisKey] === undefined ? null : (JSON.parse(String(existingConfig.data[genesisKey])) as ConfiguredView);
  const genesis: ConfiguredView | null =
    recordedGenesis ?? (spec === null ? null : { number: 0, f: spec.f ?? maxFaultsFor(spec.replicas, spec.faultModel), members: Array.from({ length: spec.replicas }, (_, id) => id) });
  let record: MembershipRecord | null = genesis === null ? null : readRecord(existingConfig?.data, genesis);
  const members = record?.view.members ?? [];
  const pods = new Map<number, PodObservation>();
  /** Pods made from an older manifest, by id: their uids, so that only that very pod is replaced. */
  const outdated = new Map<number, string>();
  /** The keys and configuration functions of this pass, once the cluster's Secrets are read (not paused). */
  let membershipKit: Pick<MembershipChangeInput, 'operatorClient' | 'viewManager' | 'replicaKeys' | 'saveRecord'> | null = null;

  if (!paused && spec !== null && genesis !== null && record !== null && stalled === null) {
    // 1. Key material, made once.
    const ensureSecret = async (secretName: string, component: string, make: () => Promise<SecretData> | SecretData): Promise<SecretData> => {
      const found = await getOrNull(rest, paths.secret(namespace, secretName));
      if (found !== null) return decodeSecret(found);
      const data = await make();
      if (await createIfAbsent(rest, secret(cluster, secretName, data, component), paths.secrets(namespace))) {
        changes.push(`created Secret ${secretName}`);
        return data;
      }
      return decodeSecret(await rest.get(paths.secret(namespace, secretName)));
    };
    const caData = await ensureSecret(secretNames.ca(name), 'ca', () => newClusterCa(name));
    const ca = caOf(caData);
    const viewManager = await ensureSecret(secretNames.viewManager(name), 'view-manager', () => newViewManagerKey());
    const application = await ensureSecret(secretNames.client(name), 'client', () => newClientKeys(ca, name, clientIds.application));
    const operatorClient = await ensureSecret(secretNames.operatorClient(name), 'operator-client', () => newClientKeys(ca, name, clientIds.operator));
    const replicaKeys = new Map<number, SecretData>();
    const ensureReplicaKeys = async (id: number): Promise<SecretData> => {
      const known = replicaKeys.get(id);
      if (known !== undefined) return known;
      const keys = await ensureSecret(replicaSecretName(name, id), 'replica', () => newReplicaKeys(ca, name, namespace, id));
      replicaKeys.set(id, keys);
      return keys;
    };
    const keyed = (r: MembershipRecord) => [...new Set([...r.view.members, ...(r.pending?.kind === 'add' && r.pending.id !== undefined ? [r.pending.id] : [])])];
    for (const id of keyed(record)) await ensureReplicaKeys(id);

    // 2. Configuration: each replica's file (the view it was created in: genesis, or the view that added
    // it), everyone's public keys, the connection file for applications, and the records.
    let volumesText = existingConfig?.data?.[volumesKey] === undefined ? undefined : String(existingConfig.data[volumesKey]);
    const renderFiles = (r: MembershipRecord): Record<string, string> => {
      const files: Record<string, string> = {
        [genesisKey]: JSON.stringify(genesis),
        'public-keys.json': publicKeysFile(
          new Map([...replicaKeys].map(([id, data]) => [id, data[keyFiles.signingPublic] ?? ''])),
          new Map([
            [clientIds.application, application[keyFiles.signingPublic] ?? ''],
            [clientIds.operator, operatorClient[keyFiles.signingPublic] ?? ''],
          ]),
          viewManager[keyFiles.signingPublic] ?? '',
        ),
        // What applications connect with (with the Secret <cluster>-client); clients follow newer views by themselves.
        [connectionFileName]: renderConnectionFile({
          cluster: name,
          view: { number: r.view.number, mode: spec.faultModel, f: r.view.f, members: r.view.members.map((id) => ({ id, host: replicaDnsName(name, namespace, id), port: replicaPort })) },
        }),
        ...recordFiles(r),
      };
      if (volumesText !== undefined) files[volumesKey] = volumesText;
      for (const id of keyed(r)) files[configFileName(id)] = `${JSON.stringify(replicaConfig(cluster, spec, r.joined[String(id)] ?? genesis), null, 2)}\n`;
      return files;
    };
    let currentFiles: Readonly<Record<string, unknown>> = existingConfig?.data ?? {};
    const saveFiles = async (files: Record<string, string>): Promise<boolean> => {
      if (canonical(currentFiles) === canonical(files)) return false;
      await rest.apply(paths.configMap(namespace, configMapName(name)), configMap(cluster, files), fieldManager);
      currentFiles = files;
      return true;
    };
    const saveRecord = async (r: MembershipRecord): Promise<void> => {
      for (const id of keyed(r)) await ensureReplicaKeys(id);
      record = r;
      await saveFiles(renderFiles(r));
    };
    if (await saveFiles(renderFiles(record))) changes.push(existingConfig === null ? 'created the configuration' : 'updated the configuration');
    membershipKit = { operatorClient, viewManager, replicaKeys: ensureReplicaKeys, saveRecord };

    // 3. Services and the disruption budget, applied when what we want of them changed.
    const applied: KubeObject[] = [peerService(cluster), clientService(cluster)];
    if (spec.disruptionBudget.enabled) applied.push(disruptionBudget(cluster, record.view.f));
    for (const manifest of applied) {
      if (await applyIfChanged(rest, manifest)) changes.push(`applied ${manifest.kind} ${manifest.metadata.name}`);
    }

    // 4. One volume per replica id. A volume is recorded once it exists; a recorded volume that is gone
    // belonged to a replica that may have voted, so its replacement starts amnesic and catches up by state
    // transfer. Whether the cluster "has run" would not do: a crash between writing the configuration
    // and creating the first volumes would make every replica of a new cluster amnesic, and none could
    // ever answer the others' state transfer.
    const recordedVolumes = new Set<number>(parseVolumeRecord(volumesText));
    const claims = new Map<number, JsonObject | null>();
    for (const id of members) {
      const claimName = dataClaimName(name, id);
      let claim = await getOrNull(rest, paths.claim(namespace, claimName));
      if (claim === null) {
        const manifest = dataClaim(cluster, spec, id);
        const lost = recordedVolumes.has(id);
        const annotated: KubeObject = lost ? { ...manifest, metadata: { ...manifest.metadata, annotations: { [freshVolumeAnnotation]: 'true' } } } : manifest;
        if (await createIfAbsent(rest, annotated, paths.claims(namespace))) {
          changes.push(`created PersistentVolumeClaim ${claimName}${lost ? ' (empty: its replica recovers by state transfer)' : ''}`);
          if (lost) deps.event?.(cluster, 'Warning', 'VolumeRecreated', `replica ${id}'s volume was gone; a new one was created and the replica will catch up from its peers`);
        }
        claim = await getOrNull(rest, paths.claim(namespace, claimName));
      }
      claims.set(id, claim);
    }
    const volumes = [...new Set([...recordedVolumes, ...[...claims].filter(([, claim]) => claim !== null).map(([id]) => id)])].sort((a, b) => a - b);
    if (volumes.length !== recordedVolumes.size) {
      volumesText = JSON.stringify(volumes);
      await saveFiles(renderFiles(record));
    }

    // 5. One pod per replica id, recreated with the same id and volume when lost.
    for (const id of members) {
      const claim = claims.get(id) ?? null;
      if (claim?.metadata?.deletionTimestamp) continue;
      const podName = replicaPodName(name, id);
      const pod = await getOrNull(rest, paths.pod(namespace, podName));
      // Not the public keys: they grow with every added replica, and running replicas learn new members'
      // keys from the reconfiguration itself.
      const configHash = hashOf(String(currentFiles[configFileName(id)] ?? ''), replicaKeys.get(id)?.[keyFiles.tlsCert] ?? '');
      const joinsRunningCluster = claim?.metadata?.annotations?.[freshVolumeAnnotation] === 'true';
      const wantedPod = withPodHash(replicaPod(cluster, spec, id, { joinsRunningCluster, configHash }));
      if (pod === null) {
        if (await createIfAbsent(rest, wantedPod, paths.pods(namespace))) {
          changes.push(`created Pod ${podName}`);
          deps.event?.(cluster, 'Normal', recordedVolumes.has(id) ? 'ReplicaRecreated' : 'ReplicaCreated', `replica ${id} (pod ${podName}) created`);
        }
        continue;
      }
      const phase = String(pod.status?.phase ?? 'Pending');
      if (!pod.metadata?.deletionTimestamp && (phase === 'Failed' || phase === 'Succeeded')) {
        await rest.delete(paths.pod(namespace, podName)).catch((error: unknown) => {
          if (!isNotFound(error)) throw error;
        });
        changes.push(`deleted Pod ${podName}, which had ${phase === 'Failed' ? 'failed' : 'exited'}`);
        continue;
      }
      pods.set(id, observePod(pod));
      if (pod.metadata?.annotations?.[podHashAnnotation] !== wantedPod.metadata.annotations?.[podHashAnnotation]) outdated.set(id, String(pod.metadata?.uid));
    }
  } else {
    for (const id of members) {
      const pod = await getOrNull(rest, paths.pod(namespace, replicaPodName(name, id)));
      if (pod !== null) pods.set(id, observePod(pod));
    }
  }

  // 6. Observe the replicas themselves.
  const reports = new Map<number, ReplicaReport>();
  await Promise.all(
    [...pods].map(async ([id, pod]) => {
      if (pod.podIp === null || pod.phase !== 'Running') return;
      const report = await deps.probe(pod.podIp);
      if (report !== null) reports.set(id, report);
    }),
  );
  const observe = (): BftClusterStatus =>
    computeStatus({
      clusterName: name,
      generation,
      members: record?.view.members ?? [],
      f: record?.view.f ?? 0,
      pods,
      reports,
      changes,
      paused,
      stalled,
      previous,
      now: deps.now(),
      nextReplicaId: record?.nextId ?? 0,
      pending: record?.pending ?? null,
    });
  let status = observe();

  // 7. Membership: one change at a time toward spec.replicas and spec.f, as the View Manager.
  let membershipBusy = record?.pending != null;
  if (membershipKit !== null && spec !== null && record !== null && stalled === null && deps.submitReconfiguration !== undefined) {
    const result = await changeMembership({
      cluster,
      spec,
      generation,
      record,
      pods,
      reports,
      reported: status.view,
      leader: status.leader,
      ...membershipKit,
      submit: deps.submitReconfiguration,
      event: (type, reason, message) => deps.event?.(cluster, type, reason, message),
    });
    record = result.record;
    if (result.progress !== null) changes.push(result.progress);
    if (result.stalled !== null) stalled = result.stalled;
    membershipBusy = result.progress !== null || record.pending !== null;
    status = observe();
  }

  // 8. Replicas no longer in the view: their pods go, their volumes by the retention policy, their keys.
  if (membershipKit !== null && spec !== null && record !== null && record.pending === null) {
    const keep = new Set(record.view.members);
    const owned = await rest.get(`${paths.pods(namespace)}?labelSelector=${encodeURIComponent(replicaSelector(name))}`);
    for (const pod of (owned.items ?? []) as JsonObject[]) {
      const id = Number(pod.metadata?.labels?.[labels.replicaId]);
      if (!Number.isInteger(id) || keep.has(id) || pod.metadata?.deletionTimestamp) continue;
      await rest.delete(paths.pod(namespace, String(pod.metadata.name))).catch((error: unknown) => {
        if (!isNotFound(error)) throw error;
      });
      changes.push(`deleted Pod ${pod.metadata.name}: replica ${id} left the view`);
      deps.event?.(cluster, 'Normal', 'ReplicaRemoved', `replica ${id} left the view; its pod was deleted`);
    }
    for (const id of parseVolumeRecord(membershipVolumes(await getOrNull(rest, paths.configMap(namespace, configMapName(name)))))) {
      if (keep.has(id)) continue;
      if (spec.storage.retentionPolicy === 'Delete' && (await getOrNull(rest, paths.claim(namespace, dataClaimName(name, id)))) !== null) {
        await rest.delete(paths.claim(namespace, dataClaimName(name, id))).catch((error: unknown) => {
          if (!isNotFound(error)) throw error;
        });
        changes.push(`deleted PersistentVolumeClaim ${dataClaimName(name, id)} of removed replica ${id}`);
      }
      if ((await getOrNull(rest, paths.secret(namespace, replicaSecretName(name, id)))) !== null) {
        await rest.delete(paths.secret(namespace, replicaSecretName(name, id))).catch((error: unknown) => {
          if (!isNotFound(error)) throw error;
        });
        changes.push(`deleted Secret ${replicaSecretName(name, id)} of removed replica ${id}`);
      }
    }
    status = observe();
  }

  // 7. A rolling update: replace one outdated pod, when the planner says it is safe (recreated next pass).
  if (!paused && spec !== null && stalled === null && !membershipBusy && outdated.size > 0) {
    if (spec.updateStrategy.type === 'OnDelete') {
      changes.push(`${outdated.size} of ${members.length} replica pods run an older manifest; they are replaced when deleted (updateStrategy OnDelete)`);
    } else {
      const decision = planRollingUpdate(
        members.map((id) => {
          const report = reports.get(id);
          return {
            id,
            ready: pods.get(id)?.ready === true && pods.get(id)?.deleting !== true,
            readyForMs: readyForMs(pods.get(id), deps.now()),
            outdated: outdated.has(id),
            report:
              report === undefined
                ? null
                : { lastDecidedCid: report.lastDecidedCid, catchingUp: report.stateTransfer.awaiting, regency: report.regency ?? 0, synchronized: report.synchronized ?? true },
          };
        }),
        status.leader,
      );
      if (decision.action === 'replace') {
        const podName = replicaPodName(name, decision.id);
        // The uid precondition: never delete a pod that was already replaced since we looked.
        await rest.delete(paths.pod(namespace, podName), { apiVersion: 'v1', kind: 'DeleteOptions', preconditions: { uid: outdated.get(decision.id) } }).catch((error: unknown) => {
          if (!isNotFound(error) && !isConflict(error)) throw error;
        });
        changes.push(`rolling update (${decision.outdated} of ${members.length} outdated): ${decision.reason}`);
        deps.event?.(cluster, 'Normal', 'RollingUpdate', `${decision.reason} (pod ${podName}); ${decision.outdated - 1} left after it`);
      } else if (decision.action === 'wait') {
        changes.push(`rolling update (${decision.outdated} of ${members.length} outdated): ${decision.reason}`);
      }
    }
    status = observe();
  }

  if (!sameStatus(previous, status)) {
    // A merge patch keeps fields it does not name: what is no longer observed is cleared with null.
    await rest.mergePatch(paths.bftClusterStatus(namespace, name), {
      status: { ...status, view: status.view ?? null, leader: status.leader ?? null, pendingReconfiguration: status.pendingReconfiguration ?? null },
    });
    for (const event of conditionEvents(previous, status)) deps.event?.(cluster, event.type, event.reason, event.message);
  }
  for (const change of changes) deps.logger?.info({ cluster: `${namespace}/${name}`, change }, 'reconciled');
  const ready = status.conditions?.find((c) => c.type === 'Ready')?.status === 'True';
  return { requeueAfterMs: ready && changes.length === 0 ? requeueWhenReadyMs : requeueWhileConvergingMs };
}

function membershipVolumes(configMapObject: JsonObject | null): unknown {
  return configMapObject?.data?.[volumesKey];
}

function readyForMs(pod: PodObservation | undefined, now: Date): number {
  if (pod === undefined || !pod.ready || pod.deleting || pod.readySince == null) return 0;
  const since = Date.parse(pod.readySince);
  return Number.isNaN(since) ? 0 : Math.max(0, now.getTime() - since);
}

function observePod(pod: JsonObject): PodObservation {
  const conditions = (pod.status?.conditions ?? []) as Array<{ type: string; status: string; lastTransitionTime?: string }>;
  const readyCondition = conditions.find((c) => c.type === 'Ready' && c.status === 'True');
  return {
    name: String(pod.metadata?.name),
    phase: String(pod.status?.phase ?? 'Pending'),
    ready: readyCondition !== undefined,
    readySince: readyCondition?.lastTransitionTime ?? null,
    podIp: typeof pod.status?.podIP === 'string' && pod.status.podIP !== '' ? pod.status.podIP : null,
    deleting: Boolean(pod.metadata?.deletionTimestamp),
  };
}

/** The status is written only when it changed; compared with keys sorted, so that field order does not count. */
function sameStatus(a: BftClusterStatus | undefined, b: BftClusterStatus): boolean {
  return a !== undefined && canonical(a) === canonical(b);
}

function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    return `{${Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([x], [y]) => (x < y ? -1 : 1))
      .map(([k, v]) => `${JSON.stringify(k)}:${canonical(v)}`)
      .join(',')}}`;
  }
  return JSON.stringify(value);
}
