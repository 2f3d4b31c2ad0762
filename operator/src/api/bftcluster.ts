// The BftCluster resource (DESIGN §8), group bftkube.dev, version v1alpha1: one source of truth. The zod
// schemas below validate what the operator reads; crds/ is generated from them (api/crd.ts, `npm run
// generate:crd`), and a test fails when the committed CRD and these schemas drift apart.

import { z } from 'zod';

export const group = 'bftkube.dev';
export const version = 'v1alpha1';
export const kind = 'BftCluster';
export const plural = 'bftclusters';
export const apiVersion = `${group}/${version}`;

/** Replicas one cluster may have: the replica's limits.membersMax. */
export const replicasMax = 64;
/** The annotation that pauses reconciliation ("true"); the operator then only reports. */
export const pauseAnnotation = 'bftkube.dev/reconciliation-paused';

const quantity = z
  .string()
  .regex(/^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti|E|Ei)?$/, { error: 'must be a Kubernetes quantity such as 500m, 1Gi' })
  .max(32);
const resourceList = z.object({ cpu: quantity.optional(), memory: quantity.optional() });

export const bftClusterSpecSchema = z.object({
  /** Members of the view; `kubectl scale` changes it (the scale subresource points here). */
  replicas: z.int().min(1).max(replicasMax).default(4),
  /** bft tolerates f Byzantine replicas with n ≥ 3f+1; crash tolerates f crashes with n ≥ 2f+1. Immutable. */
  faultModel: z.enum(['bft', 'crash']).default('bft'),
  /** Faults tolerated; by default the largest the replicas allow. */
  f: z.int().min(0).max(21).optional(),
  /** The replica image (the SMR engine with its service). */
  image: z.string().min(1).max(512).default('bftkube/replica:0.1.0'),
  resources: z.object({ requests: resourceList.optional(), limits: resourceList.optional() }).optional(),
  storage: z
    .object({
      /** Each replica's volume: write-ahead log and checkpoints. */
      size: quantity.default('1Gi'),
      /** Immutable: a replica's data cannot move to another class in place. */
      storageClassName: z.string().min(1).max(253).optional(),
      /** What happens to a replica's volume when the replica is removed or the cluster deleted. */
      retentionPolicy: z.enum(['Delete', 'Retain']).default('Delete'),
    })
    .prefault({}),
  /** The replicated service: a built-in one (builtin:kv) or a module path in the image, and its configuration. */
  service: z
    .object({
      module: z.string().min(1).max(512).default('builtin:kv'),
      config: z.record(z.string(), z.unknown()).optional(),
    })
    .prefault({}),
  /** fsync: votes and decisions durable before they leave; batch: group commit; none: memory only. */
  durability: z.enum(['fsync', 'batch', 'none']).default('fsync'),
  batch: z
    .object({
      requestsMax: z.int().min(1).max(4096).optional(),
      bytesMax: z.int().min(1024).max(4 * 1024 * 1024).optional(),
      /** The leader waits, up to fillWaitMs, until this percentage of its recent clients are back (0: never; default 100). */
      fillPercent: z.int().min(0).max(100).optional(),
      fillWaitMs: z.int().min(1).max(1000).optional(),
    })
    .optional(),
  /** Whether clients must sign their requests (Ed25519), as well as authenticate their links. */
  requireSignedRequests: z.boolean().default(false),
  /** RollingUpdate: one replica at a time, the leader last; OnDelete: only when a pod is deleted. */
  updateStrategy: z.object({ type: z.enum(['RollingUpdate', 'OnDelete']).default('RollingUpdate') }).prefault({}),
  /** A PodDisruptionBudget that never lets more than f replicas be evicted at once. */
  disruptionBudget: z.object({ enabled: z.boolean().default(true) }).prefault({}),
});

export const memberStates = ['Joining', 'StateTransfer', 'Active', 'Leaving', 'Removed'] as const;
export const conditionTypes = ['Ready', 'Available', 'Reconciling', 'Degraded', 'Stalled', 'ReconciliationPaused'] as const;

const conditionSchema = z.object({
  type: z.enum(conditionTypes),
  status: z.enum(['True', 'False', 'Unknown']),
  reason: z.string().min(1).max(1024),
  message: z.string().max(32_768),
  lastTransitionTime: z.string().min(1).max(64),
  observedGeneration: z.int().min(0).optional(),
});

export const bftClusterStatusSchema = z.object({
  observedGeneration: z.int().min(0).optional(),
  replicas: z.int().min(0).optional(),
  readyReplicas: z.int().min(0).optional(),
  /** The replicas' label selector, for the scale subresource. */
  selector: z.string().max(1024).optional(),
  view: z
    .object({
      number: z.int().min(0),
      f: z.int().min(0),
      members: z.array(z.int().min(0)).max(replicasMax),
    })
    .optional(),
  leader: z.int().min(0).optional(),
  members: z
    .array(
      z.object({
        id: z.int().min(0),
        pod: z.string().max(253),
        state: z.enum(memberStates),
        lastDecided: z.int().min(-1).optional(),
      }),
    )
    .max(replicasMax * 2)
    .optional(),
  /** A membership change in progress: recorded before it is submitted, so that a restarted operator resumes it. */
  pendingReconfiguration: z
    .object({
      operation: z.enum(['add', 'remove', 'set-f']),
      replicaId: z.int().min(0).optional(),
      f: z.int().min(0).optional(),
      fromView: z.int().min(0),
      epoch: z.int().min(0),
      nonce: z.string().max(64),
    })
    .optional(),
  /** The next replica id: ids are never reused. */
  nextReplicaId: z.int().min(0).optional(),
  conditions: z.array(conditionSchema).max(conditionTypes.length).optional(),
});

export type BftClusterSpec = z.output<typeof bftClusterSpecSchema>;
export type BftClusterStatus = z.output<typeof bftClusterStatusSchema>;
export type Condition = z.output<typeof conditionSchema>;

/**
 * Rules the API server enforces with CEL (x-kubernetes-validations): what needs no live state. Each rule
 * is on the object it names, with the message users see when kubectl apply is refused.
 */
export const specValidations = [
  {
    rule: "self.faultModel != 'bft' || self.replicas >= 3 * (has(self.f) ? self.f : 1) + 1",
    message: 'a bft cluster needs replicas >= 3f+1 (at least 4 replicas for f=1); add replicas or lower f',
  },
  {
    rule: "self.faultModel != 'crash' || self.replicas >= 2 * (has(self.f) ? self.f : 1) + 1",
    message: 'a crash-fault cluster needs replicas >= 2f+1 (at least 3 replicas for f=1); add replicas or lower f',
  },
  {
    rule: 'self.faultModel == oldSelf.faultModel',
    message: 'faultModel is immutable: create a new BftCluster to change it',
  },
] as const;

/**
 * A BftCluster's name becomes Service names (`<name>-replicas`, `<name>`), pod host names and a DNS label
 * of every replica's address: a DNS-1035 label with room for the longest suffix. The API server itself
 * only asks a DNS-1123 subdomain (dots, 253 characters, a leading digit), which would stall the cluster.
 */
export const clusterNameLengthMax = 63 - '-replicas'.length;

export const nameValidations = [
  {
    rule: `self.metadata.name.size() <= ${clusterNameLengthMax}`,
    message: `a BftCluster name has at most ${clusterNameLengthMax} characters (it prefixes its Services and replica host names); choose a shorter name`,
  },
  {
    rule: "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
    message: 'a BftCluster name is lower-case letters, digits and dashes, starting with a letter (it names Services and DNS labels); no dots',
  },
] as const;

export const storageValidations = [
  {
    rule: 'has(self.storageClassName) == has(oldSelf.storageClassName) && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)',
    message: 'storage.storageClassName is immutable: a replica’s data cannot move to another storage class in place',
  },
] as const;

/** The largest f that `replicas` allow in `faultModel`. */
export function maxFaultsFor(replicas: number, faultModel: 'bft' | 'crash'): number {
  return faultModel === 'bft' ? Math.floor((replicas - 1) / 3) : Math.floor((replicas - 1) / 2);
}
