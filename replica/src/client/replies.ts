// The replies to one request, and the quorum arithmetic over them. Pure: no timers, no I/O.
//
// Only the first REPLY of each replica counts. A correct replica answers every copy of a request with the
// same result (ordered: from its reply cache; unordered: whatever it read first), so a second, different
// answer can only come from a faulty replica, and letting it change its vote would let it count twice.

import { Buffer } from 'node:buffer';
import type { Bytes } from '../protocol/messages.ts';
import type { ReplicaId } from '../core/view.ts';

interface ResultGroup {
  readonly result: Bytes;
  count: number;
}

export class ReplyTally {
  /** Each replica's counted result. */
  private readonly repliedReplicas = new Map<ReplicaId, Bytes>();
  /** Distinct results, at most one per replica (so at most n, which is ≤ limits.membersMax). */
  private readonly groups: ResultGroup[] = [];
  private best: ResultGroup | null = null;

  /** Replicas whose REPLY counted. */
  get replied(): number {
    return this.repliedReplicas.size;
  }

  hasReplied(replica: ReplicaId): boolean {
    return this.repliedReplicas.has(replica);
  }

  /** Counts the first reply of a replica; false (and nothing counted) for any later one. */
  add(replica: ReplicaId, result: Bytes): boolean {
    if (this.repliedReplicas.has(replica)) return false;
    this.repliedReplicas.set(replica, result);
    // Results are compared byte for byte: n is small, and hashing a 1 MiB result would cost more than
    // comparing it with the few distinct results seen so far.
    let group = this.groups.find((g) => bytesEqual(g.result, result));
    if (group === undefined) {
      group = { result, count: 0 };
      this.groups.push(group);
    }
    group.count += 1;
    if (this.best === null || group.count > this.best.count) this.best = group;
    return true;
  }

  /** The same replies, counting only those of `members` (the client moved to a new view). */
  restrictedTo(members: ReadonlySet<ReplicaId>): ReplyTally {
    const tally = new ReplyTally();
    for (const [replica, result] of this.repliedReplicas) if (members.has(replica)) tally.add(replica, result);
    return tally;
  }

  /** The result at least `quorum` replicas sent, or null. */
  decided(quorum: number): Bytes | null {
    return this.best !== null && this.best.count >= quorum ? this.best.result : null;
  }

  /** Whether `quorum` matching replies can still come, if the `members` replicas not heard from all agree. */
  canStillReach(quorum: number, members: number): boolean {
    return (this.best?.count ?? 0) + (members - this.replied) >= quorum;
  }
}

function bytesEqual(a: Bytes, b: Bytes): boolean {
  return a.length === b.length && Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(b);
}
