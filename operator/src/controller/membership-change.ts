// One membership change at a time, carried out as the View Manager (DESIGN §8): plan the next step
// toward the spec (membership.ts), record it as pending (with the nonce of the request) before
// submitting, submit it signed, and record the new view once the replicas have decided it. A crash at
// any point resumes from the record: a pending change is submitted again, byte for byte the same, and
// a request that was applied already is refused as stale while the replicas report the newer view.

import { randomBytes } from 'node:crypto';
import type { BftClusterSpec } from '../api/bftcluster.ts';
import type { ReconfigurationOperation } from '../../../replica/src/protocol/reconfiguration.ts';
import { adminPort, type ClusterRef, replicaDnsName, replicaPort } from '../specs/names.ts';
import type { ConfiguredView } from '../specs/objects.ts';
import { type SecretData, keyFiles } from './keys.ts';
import { type CurrentView, type MembershipStep, planMembershipStep, viewAfter } from './membership.ts';
import type { MembershipRecord, PendingChange } from './records.ts';
import type { PodObservation, ReplicaReport } from './status.ts';
import type { SubmitReconfiguration } from './submit.ts';

export interface MembershipChangeInput {
  readonly cluster: ClusterRef;
  readonly spec: BftClusterSpec;
  readonly generation: number;
  readonly record: MembershipRecord;
  /** The members' pods and what the members report. */
  readonly pods: ReadonlyMap<number, PodObservation>;
  readonly reports: ReadonlyMap<number, ReplicaReport>;
  /** The view f+1 of its members report exactly (status.view), and the leader they report. */
  readonly reported: { readonly number: number; readonly f: number; readonly members: readonly number[] } | undefined;
  readonly leader: number | undefined;
  readonly operatorClient: SecretData;
  readonly viewManager: SecretData;
  readonly replicaKeys: (id: number) => Promise<SecretData>;
  /** Writes the record (and everything derived from it) to the ConfigMap. */
  readonly saveRecord: (record: MembershipRecord) => Promise<void>;
  readonly submit: SubmitReconfiguration;
  readonly event?: (type: 'Normal' | 'Warning', reason: string, message: string) => void;
}

export interface MembershipChangeResult {
  readonly record: MembershipRecord;
  /** What this pass did or waits for, for the Reconciling condition; null when the size matches the spec. */
  readonly progress: string | null;
  /** A change the replicas refused for this spec generation: the cluster is Stalled until the spec changes. */
  readonly stalled: string | null;
}

function describeStep(step: Exclude<MembershipStep, { kind: 'none' }> | PendingChange, view: ConfiguredView): string {
  switch (step.kind) {
    case 'add':
      return `adding replica ${step.id} (view ${view.number} → ${view.number + 1}, ${view.members.length + 1} replicas, f=${step.f})`;
    case 'remove':
      return `removing replica ${step.id} (view ${view.number} → ${view.number + 1}, ${view.members.length - 1} replicas, f=${step.f})`;
    case 'set-f':
      return `changing f from ${view.f} to ${step.f} (view ${view.number} → ${view.number + 1})`;
  }
}

/** Why a change must wait, or null when the cluster is healthy enough for one. */
function notHealthy(input: MembershipChangeInput): string | null {
  const { record, pods, reports, reported } = input;
  const notReady = record.view.members.filter((id) => pods.get(id)?.ready !== true);
  if (notReady.length > 0) return `waiting for replica ${notReady.join(', ')} to be ready`;
  const catchingUp = record.view.members.filter((id) => reports.get(id)?.stateTransfer.awaiting === true);
  if (catchingUp.length > 0) return `waiting for replica ${catchingUp.join(', ')} to finish catching up`;
  if (reported === undefined || reported.number !== record.view.number) return `waiting for the replicas to report view ${record.view.number}`;
  return null;
}

async function operationsOf(input: MembershipChangeInput, pending: PendingChange): Promise<ReconfigurationOperation[]> {
  const { cluster, record } = input;
  const setF: ReconfigurationOperation[] = pending.f === record.view.f ? [] : [{ kind: 'set-f', f: pending.f }];
  switch (pending.kind) {
    case 'add': {
      const id = pending.id as number;
      const keys = await input.replicaKeys(id);
      const publicKey = new Uint8Array(Buffer.from(keys[keyFiles.signingPublic] ?? '', 'base64'));
      return [{ kind: 'add', id, host: replicaDnsName(cluster.name, cluster.namespace, id), port: replicaPort, adminPort, publicKey }, ...setF];
    }
    case 'remove':
      return [{ kind: 'remove', id: pending.id as number }, ...setF];
    case 'set-f':
      return setF;
  }
}

async function submitPending(input: MembershipChangeInput, record: MembershipRecord, pending: PendingChange): Promise<MembershipChangeResult> {
  const { cluster, spec, pods } = input;
  const description = describeStep(pending, record.view);
  const result = await input.submit({
    view: {
      number: record.view.number,
      mode: spec.faultModel,
      f: record.view.f,
      members: record.view.members.map((id) => {
        const address = pods.get(id)?.podIp ?? undefined;
        return { id, host: replicaDnsName(cluster.name, cluster.namespace, id), port: replicaPort, ...(address === undefined ? {} : { address }) };
      }),
    },
    client: {
      identity: input.operatorClient[keyFiles.clientId] ?? 'admin',
      caPem: input.operatorClient[keyFiles.caCert] ?? '',
      certPem: input.operatorClient[keyFiles.tlsCert] ?? '',
      keyPem: input.operatorClient[keyFiles.tlsKey] ?? '',
      signingKeyPem: input.operatorClient[keyFiles.signingKey] ?? '',
    },
    viewManagerKeyPem: input.viewManager[keyFiles.signingKey] ?? '',
    operations: await operationsOf(input, pending),
    fromView: pending.fromView,
    epoch: pending.epoch,
    nonce: new Uint8Array(Buffer.from(pending.nonce, 'hex')),
  });
  if (result.accepted) {
    const view: ConfiguredView = { number: result.view.number, f: result.view.f, members: result.view.members.map((m) => m.id) };
    const done: MembershipRecord = { ...record, view, pending: null, refused: null };
    await input.saveRecord(done);
    input.event?.('Normal', 'Reconfigured', `view ${view.number}: ${description.replace(/^./, (c) => c.toUpperCase())} done; members ${view.members.join(', ')}, f=${view.f}`);
    return { record: done, progress: `view ${view.number} committed: ${description}`, stalled: null };
  }
  // Refused. Applied before (a crash or a lost answer) if the replicas already run a newer view.
  const reported = input.reported;
  if (reported !== undefined && reported.number > pending.fromView) {
    const view: ConfiguredView = { number: reported.number, f: reported.f, members: [...reported.members] };
    const done: MembershipRecord = { ...record, view, pending: null, refused: null };
    await input.saveRecord(done);
    return { record: done, progress: `view ${view.number} had been committed: ${description}`, stalled: null };
  }
  const refused: MembershipRecord = { ...record, pending: null, refused: { generation: input.generation, reason: result.reason } };
  await input.saveRecord(refused);
  input.event?.('Warning', 'ReconfigurationRefused', `${description}: the replicas refused it: ${result.reason}`);
  return { record: refused, progress: null, stalled: `${description} was refused by the replicas: ${result.reason}; change the spec to try again` };
}

export async function changeMembership(input: MembershipChangeInput): Promise<MembershipChangeResult> {
  const { record, spec } = input;
  if (record.pending !== null) return submitPending(input, record, record.pending);
  const current: CurrentView = { number: record.view.number, mode: spec.faultModel, f: record.view.f, members: record.view.members };
  const step = planMembershipStep(current, { replicas: spec.replicas, ...(spec.f === undefined ? {} : { f: spec.f }) }, record.nextId, input.leader);
  if (step.kind === 'none') return { record, progress: null, stalled: null };
  const description = describeStep(step, record.view);
  if (record.refused !== null && record.refused.generation === input.generation) {
    return { record, progress: null, stalled: `${description} was refused by the replicas: ${record.refused.reason}; change the spec to try again` };
  }
  const unhealthy = notHealthy(input);
  if (unhealthy !== null) return { record, progress: `${description}: ${unhealthy}`, stalled: null };

  const pending: PendingChange = {
    kind: step.kind,
    ...(step.kind === 'set-f' ? {} : { id: step.id }),
    f: step.f,
    fromView: record.view.number,
    epoch: 0,
    nonce: randomBytes(16).toString('hex'),
  };
  let planned: MembershipRecord = { ...record, pending, refused: null };
  if (step.kind === 'add') {
    // Its keys first: the request carries its public key, and its configuration names the view it joins.
    await input.replicaKeys(step.id);
    const joinedView = viewAfter(current, step);
    planned = { ...planned, joined: { ...record.joined, [String(step.id)]: { number: joinedView.number, f: joinedView.f, members: [...joinedView.members] } }, nextId: step.id + 1 };
  }
  // Recorded before it is submitted: a crash from here on resumes by submitting this very request.
  await input.saveRecord(planned);
  return submitPending(input, planned, pending);
}
