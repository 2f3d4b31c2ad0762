// Reconfiguration (DESIGN §6): membership is part of the replicated state. A View Manager, whose public
// key every replica has from the genesis configuration, signs requests to add replicas, remove them or
// change f; the cluster orders them like any request, and every replica applies the same decided request
// the same way, at the end of the instance that decided it. Everything here is pure and deterministic:
// the same membership and request give the same verdict on every replica.

import { limits } from '../constants.ts';
import type { Bytes } from '../protocol/messages.ts';
import { maxFaults } from './quorum.ts';
import { type ReplicaId, type View, invalidView } from './view.ts';

/** Where a member listens (a DNS name or an address), and the key that checks its votes. */
export interface Member {
  readonly id: ReplicaId;
  readonly host: string;
  readonly port: number;
  readonly adminPort: number;
  /** Ed25519 public key, raw (32 bytes). */
  readonly publicKey: Bytes;
}

/** The membership part of the replicated state. */
export interface Membership {
  readonly view: View;
  /** One entry per member of the view. */
  readonly members: ReadonlyMap<ReplicaId, Member>;
  /** Ids are never reused: an added replica's id must be above every id ever used. */
  readonly highestIdEver: ReplicaId;
}

export type ReconfigurationOperation =
  | ({ readonly kind: 'add' } & Member)
  | { readonly kind: 'remove'; readonly id: ReplicaId }
  | { readonly kind: 'set-f'; readonly f: number };

/** What the View Manager signs. */
export interface Reconfiguration {
  /** The view it changes; a request for any other view is stale and refused. */
  readonly fromView: number;
  readonly operations: readonly ReconfigurationOperation[];
  /** The View Manager's epoch (the operator's leadership term), for its own bookkeeping and the logs. */
  readonly epoch: number;
  /** Makes every request distinct, so that two with the same content are told apart in replies and logs. */
  readonly nonce: Bytes;
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
 * The membership after `request`, or why it is refused. `leader` is the current leader: the new view's
 * rotation keeps it leading if it stays, or passes leadership to the next remaining member in the old
 * rotation, so that a reconfiguration does not, by itself, hand the cluster to a replica that is still
 * catching up. `regency` is the current regency (the new view's leader is members[regency mod n]).
 */
export function applyReconfiguration(current: Membership, request: Reconfiguration, regency: number, leader: ReplicaId): ReconfigurationVerdict {
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
  const kept = order.filter((id) => !added.includes(id));
  const rotated = rotateForLeader(kept, added, view.members, regency, leader);
  const next: View = { number: view.number + 1, mode: view.mode, f, members: rotated };
  const invalid = invalidView(next);
  if (invalid !== null) return refused(invalid);
  return { ok: true, membership: { view: next, members, highestIdEver } };
}

/**
 * The new rotation: it starts (at index regency mod n, where the regency's leader sits) with the replica
 * that should lead: the current leader if it stays, else the first member after it in the old rotation
 * that stays; then the other remaining members in their old order; then the added ones, which are the
 * most likely to be still catching up, so that they lead last.
 */
function rotateForLeader(kept: readonly ReplicaId[], added: readonly ReplicaId[], oldOrder: readonly ReplicaId[], regency: number, leader: ReplicaId): ReplicaId[] {
  const staying = new Set(kept);
  const from = Math.max(0, oldOrder.indexOf(leader));
  const cycle: ReplicaId[] = [];
  for (let step = 0; step < oldOrder.length; step++) {
    const candidate = oldOrder[(from + step) % oldOrder.length] as ReplicaId;
    if (staying.has(candidate)) cycle.push(candidate);
  }
  cycle.push(...added);
  const n = cycle.length;
  const first = regency % n;
  const members = new Array<ReplicaId>(n);
  for (let i = 0; i < n; i++) members[(first + i) % n] = cycle[i] as ReplicaId;
  return members;
}
