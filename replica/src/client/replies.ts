// The replies to one request, and the quorum arithmetic over them. Pure: no timers, no I/O.
//
// Only the first reply of each replica counts. A correct replica answers every copy of a request with the
// same result (ordered: from its reply cache; unordered: whatever it read first), so a second, different
// answer can only come from a faulty replica, and letting it change its vote would let it count twice.
// The one later reply that is taken is a replica's full result after it first sent only that result's
// digest (REPLY_DIGEST): the vote stays the same, the client only learns the bytes behind it.

import { hash } from 'node:crypto';
import type { Bytes } from '../protocol/messages.ts';
import type { ReplicaId } from '../core/view.ts';
import { bytesEqual } from '../bytes.ts';

interface ResultGroup {
  /** Null while only digests of this result have arrived. */
  result: Bytes | null;
  /** The replica whose full reply brought `result`. */
  resultFrom: ReplicaId | null;
  /** The result's SHA-256; computed only once a digest has to be compared with it. */
  digest: Bytes | null;
  count: number;
}

interface Vote {
  readonly group: ResultGroup;
  full: boolean;
}

export class ReplyTally {
  private readonly votes = new Map<ReplicaId, Vote>();
  /** Distinct results, at most one per replica (so at most n, which is ≤ limits.membersMax). */
  private readonly groups: ResultGroup[] = [];

  /** Replicas whose reply counted, full or by digest. */
  get replied(): number {
    return this.votes.size;
  }

  hasReplied(replica: ReplicaId): boolean {
    return this.votes.has(replica);
  }

  /** Whether the replica sent its full result (not only a digest). */
  hasFullReply(replica: ReplicaId): boolean {
    return this.votes.get(replica)?.full === true;
  }

  /**
   * Counts a replica's full result. False (nothing counted) for a replica that already replied, unless it
   * replied by digest and this result has that digest: then the group gains the bytes, not a vote.
   */
  add(replica: ReplicaId, result: Bytes): boolean {
    const previous = this.votes.get(replica);
    if (previous !== undefined) {
      if (previous.full || !bytesEqual(digestOfGroup(previous.group), sha256(result))) return false;
      previous.full = true;
      if (previous.group.result === null) {
        previous.group.result = result;
        previous.group.resultFrom = replica;
      }
      return true;
    }
    // Results are compared byte for byte while no digest is involved: n is small, and hashing a 1 MiB
    // result would cost more than comparing it with the few distinct results seen so far.
    let group = this.groups.find((g) => g.result !== null && bytesEqual(g.result, result));
    let digest: Bytes | null = null;
    if (group === undefined && this.groups.some((g) => g.result === null)) {
      const resultDigest = sha256(result);
      digest = resultDigest;
      group = this.groups.find((g) => g.result === null && bytesEqual(g.digest as Bytes, resultDigest));
      if (group !== undefined) {
        group.result = result;
        group.resultFrom = replica;
      }
    }
    if (group === undefined) {
      group = { result, resultFrom: replica, digest, count: 0 };
      this.groups.push(group);
    }
    group.count += 1;
    this.votes.set(replica, { group, full: true });
    return true;
  }

  /** Counts a replica's REPLY_DIGEST; false (nothing counted) if the replica already replied. */
  addDigest(replica: ReplicaId, digest: Bytes): boolean {
    if (this.votes.has(replica)) return false;
    let group = this.groups.find((g) => bytesEqual(digestOfGroup(g), digest));
    if (group === undefined) {
      group = { result: null, resultFrom: null, digest, count: 0 };
      this.groups.push(group);
    }
    group.count += 1;
    this.votes.set(replica, { group, full: false });
    return true;
  }

  /** The same replies, counting only those of `members` (the client moved to a new view). */
  restrictedTo(members: ReadonlySet<ReplicaId>): ReplyTally {
    const tally = new ReplyTally();
    for (const [replica, vote] of this.votes) {
      if (!members.has(replica)) continue;
      if (vote.full) tally.add(replica, vote.group.result as Bytes);
      else tally.addDigest(replica, digestOfGroup(vote.group));
    }
    return tally;
  }

  /** The result at least `quorum` replicas vouched for and whose bytes the client holds, or null. */
  decided(quorum: number): Bytes | null {
    return this.decidedGroup(quorum)?.result ?? null;
  }

  /** The replica whose full reply brought the decided result's bytes, or null. */
  decidedResultFrom(quorum: number): ReplicaId | null {
    return this.decidedGroup(quorum)?.resultFrom ?? null;
  }

  private decidedGroup(quorum: number): ResultGroup | undefined {
    return this.groups.find((group) => group.count >= quorum && group.result !== null);
  }

  /**
   * The replicas that vouched by digest for a result `quorum` replicas agree on but whose bytes no replica
   * sent: asked for the full result, any of them can finish the request. Empty when there is none.
   */
  digestOnlyQuorum(quorum: number): ReplicaId[] {
    const group = this.groups.find((g) => g.count >= quorum && g.result === null);
    if (group === undefined) return [];
    const replicas: ReplicaId[] = [];
    for (const [replica, vote] of this.votes) if (vote.group === group) replicas.push(replica);
    return replicas;
  }

  /** Whether `quorum` matching replies can still come, if the `members` replicas not heard from all agree. */
  canStillReach(quorum: number, members: number): boolean {
    let best = 0;
    for (const group of this.groups) best = Math.max(best, group.count);
    return best + (members - this.replied) >= quorum;
  }
}

/** The group's digest, computed from its result the first time (a group has a result or a digest). */
function digestOfGroup(group: ResultGroup): Bytes {
  group.digest ??= sha256(group.result as Bytes);
  return group.digest;
}

function sha256(bytes: Bytes): Bytes {
  return hash('sha256', bytes, 'buffer');
}
