// What the operator must remember about a cluster beyond what it can observe, kept in the cluster's
// ConfigMap (owned by the BftCluster, so it goes with it, and never lost with a status): the genesis
// view, the view the cluster runs as the operator last saw it committed, the view each added replica was
// configured with, a membership change in flight (written before it is submitted, so that a restarted
// operator submits the very same request again), the next replica id, and the volumes that have existed.

import { z } from 'zod';
import { replicasMax } from '../api/bftcluster.ts';
import type { ConfiguredView } from '../specs/objects.ts';

export const recordKeys = {
  genesis: 'genesis.json',
  view: 'view.json',
  joined: 'joined.json',
  pending: 'pending.json',
  volumes: 'volumes.json',
  refused: 'refused.json',
} as const;

const idSchema = z.int().min(0).max(1_000_000);
const viewSchema = z.object({ number: z.int().min(0), f: z.int().min(0), members: z.array(idSchema).min(1).max(replicasMax) });

export const pendingChangeSchema = z.object({
  kind: z.enum(['add', 'remove', 'set-f']),
  id: idSchema.optional(),
  f: z.int().min(0),
  fromView: z.int().min(0),
  epoch: z.int().min(0),
  /** Hex, 16 bytes. */
  nonce: z.string().regex(/^[0-9a-f]{32}$/),
});
export type PendingChange = z.output<typeof pendingChangeSchema>;

/** A change the replicas refused, and the spec generation it was planned for: not planned again for it. */
const refusedSchema = z.object({ generation: z.int().min(0), reason: z.string().max(1024) });

export interface MembershipRecord {
  readonly view: ConfiguredView;
  /** The view each replica added by a reconfiguration was configured with, by id. */
  readonly joined: Readonly<Record<string, ConfiguredView>>;
  readonly pending: PendingChange | null;
  readonly refused: z.output<typeof refusedSchema> | null;
  /** Ids are never reused: the next added replica gets this one. */
  readonly nextId: number;
}

function parsed<T>(schema: z.ZodType<T>, text: unknown): T | null {
  if (typeof text !== 'string') return null;
  try {
    const result = schema.safeParse(JSON.parse(text));
    return result.success ? result.data : null;
  } catch {
    return null;
  }
}

export function readRecord(data: Readonly<Record<string, unknown>> | undefined, genesis: ConfiguredView): MembershipRecord {
  const joined = parsed(z.record(z.string().regex(/^\d+$/), viewSchema), data?.[recordKeys.joined]) ?? {};
  const view = parsed(viewSchema, data?.[recordKeys.view]) ?? genesis;
  const everUsed = [...genesis.members, ...view.members, ...Object.keys(joined).map(Number)];
  return {
    view,
    joined,
    pending: parsed(pendingChangeSchema, data?.[recordKeys.pending]),
    refused: parsed(refusedSchema, data?.[recordKeys.refused]),
    nextId: Math.max(...everUsed) + 1,
  };
}

/** The ConfigMap entries of a record (genesis and volumes are written by the reconcile steps). */
export function recordFiles(record: MembershipRecord): Record<string, string> {
  return {
    [recordKeys.view]: JSON.stringify(record.view),
    [recordKeys.joined]: JSON.stringify(record.joined),
    ...(record.pending === null ? {} : { [recordKeys.pending]: JSON.stringify(record.pending) }),
    ...(record.refused === null ? {} : { [recordKeys.refused]: JSON.stringify(record.refused) }),
  };
}
