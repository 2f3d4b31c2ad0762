// Reconfiguration (DESIGN §6): membership is part of the replicated state. A View Manager, whose public
// key every replica has from the genesis configuration, signs requests to add replicas, remove them or
// change f; the cluster orders them like any request, and every replica applies the same decided request
// the same way, at the end of the instance that decided it. Everything here is pure and deterministic:
// the same membership and request give the same verdict on every replica.

import { limits } from '../constants.ts';
import type { Member, Reconfiguration, ViewDescription } from '../protocol/reconfiguration.ts';
import { maxFaults } from './quorum.ts';
import { type ReplicaId, type View, invalidView } from './view.ts';

export type { Member, Reconfiguration, ReconfigurationOperation } from '../protocol/reconfiguration.ts';

/** The membership part of the replicated state. */
export interface Membership {
  readonly view: View;
  /** One entry per member of the view. */
  readonly members: ReadonlyMap<ReplicaId, Member>;
  /** Ids are never reused: an added replica's id must be above every id ever used. */
  readonly highestIdEver: ReplicaId;
}

export type ReconfigurationVerdict =
  | { readonly ok: true; readonly membership: Membership }
  | { readonly ok: false; readonly reason: string };

/** Host names as DNS allows them (RFC 1123 labels), or IPv4 addresses; nothing that could smuggle a URL. */
const hostPattern = /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

function isPort(port: number): boolean {
  return Number.isSafeInteger(port) && port >= 1 && port <= 65_535;
}

function refused(reason: string): ReconfigurationVerdict {
  return { ok: false, reason };
}

/**
 * The membership after `request`, or why it is refused. The new rotation is the remaining members in
 * their old order, then the added ones: a replica still catching up is the last to lead. It depends on
 * nothing but the membership and the request (not on the regency, which replicas may not share when
 * they decide an instance), so every replica derives the same leader for every regency.
 */
export function applyReconfiguration(current: Membership, request: Reconfiguration): ReconfigurationVerdict {
  const view = current.view;
  if (request.fromView !== view.number) return refused(`stale: it changes view ${request.fromView}, the current view is ${view.number}`);
  if (request.operations.length === 0) return refused('it has no operations');
  if (request.operations.length > limits.reconfigurationOperationsMax) {
    return refused(`it has ${request.operations.length} operations, more than ${limits.reconfigurationOperationsMax}`);
  }
  const members = new Map(current.members);
  const order = [...view.members];
  const added: ReplicaId[] = [];
  let f = view.f;
  let highestIdEver = current.highestIdEver;
  let fSet = false;
  for (const operation of request.operations) {
    switch (operation.kind) {
      case 'add': {
        if (!Number.isSafeInteger(operation.id) || operation.id <= highestIdEver) {
          return refused(`add ${operation.id}: ids are never reused, and ${highestIdEver} was already used; pick an id above it`);
        }
        if (!hostPattern.test(operation.host)) return refused(`add ${operation.id}: ${JSON.stringify(operation.host.slice(0, 64))} is not a DNS name or IPv4 address`);
        if (!isPort(operation.port) || !isPort(operation.adminPort)) return refused(`add ${operation.id}: ports must be from 1 to 65535`);
        if (operation.publicKey.length !== limits.replicaPublicKeyBytes) {
          return refused(`add ${operation.id}: an Ed25519 public key has ${limits.replicaPublicKeyBytes} bytes, not ${operation.publicKey.length}`);
        }
        const { kind: _kind, ...member } = operation;
        members.set(operation.id, member);
        order.push(operation.id);
        added.push(operation.id);
        highestIdEver = operation.id;
        break;
      }
      case 'remove': {
        const index = order.indexOf(operation.id);
        if (index < 0) return refused(`remove ${operation.id}: it is not a member of view ${view.number}`);
        order.splice(index, 1);
        members.delete(operation.id);
        const addedIndex = added.indexOf(operation.id);
        if (addedIndex >= 0) added.splice(addedIndex, 1);
        break;
      }
      case 'set-f': {
        if (fSet) return refused('it sets f twice');
        if (!Number.isSafeInteger(operation.f) || operation.f < 0) return refused(`set-f ${operation.f}: f is a non-negative integer`);
        f = operation.f;
        fSet = true;
        break;
      }
    }
  }
  if (order.length > limits.membersMax) return refused(`it leaves ${order.length} members, more than ${limits.membersMax}`);
  if (order.length === 0) return refused('it removes every member');
  if (f > maxFaults(order.length, view.mode)) {
    const need = view.mode === 'bft' ? '3f+1' : '2f+1';
    return refused(`${order.length} replicas cannot tolerate f=${f} in ${view.mode} mode (needs n ≥ ${need}); lower f with set-f in the same request`);
  }
  const next: View = { number: view.number + 1, mode: view.mode, f, members: [...order.filter((id) => !added.includes(id)), ...added] };
  const invalid = invalidView(next);
  if (invalid !== null) return refused(invalid);
  return { ok: true, membership: { view: next, members, highestIdEver } };
}

/**
 * Where a replica without a checkpoint starts: the genesis view, with placeholders for what is not given
 * (tests and the simulator): an empty public key means "not known here", never a key to check against.
 */
export function genesisMembership(view: View, members?: readonly Member[]): Membership {
  const given = new Map((members ?? []).map((member) => [member.id, member]));
  const described = new Map<ReplicaId, Member>();
  for (const id of view.members) {
    described.set(id, given.get(id) ?? { id, host: `replica-${id}`, port: 1, adminPort: 1, publicKey: new Uint8Array(0) });
  }
  return { view, members: described, highestIdEver: Math.max(...view.members) };
}

/** The members of `membership` in rotation order, as replicas report a view. */
export function describeView(membership: Membership): ViewDescription {
  const { view } = membership;
  return { number: view.number, mode: view.mode, f: view.f, members: view.members.map((id) => membership.members.get(id) as Member) };
}
