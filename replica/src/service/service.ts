// What an application implements to be replicated (DESIGN §3): deterministic execution of ordered
// requests, read-only execution without consensus, and snapshots for checkpoints and state transfer.

import type { Bytes } from '../protocol/messages.ts';

export interface OrderedOperation {
  readonly clientId: string;
  readonly seq: number;
  readonly operation: Bytes;
}

/** Facts every replica agrees on when it executes a decided batch. */
export interface ExecutionContext {
  readonly cid: number;
  readonly regency: number;
}

export interface Service {
  /** Execute a decided batch in order; one result per operation. Must be deterministic. */
  executeOrdered(operations: readonly OrderedOperation[], context: ExecutionContext): Bytes[];
  /** Execute a read-only operation against the current state, without consensus. */
  executeUnordered(operation: Bytes): Bytes;
  /**
   * The state as a stream of pieces, each at most limits.snapshotPieceBytesMax bytes. Deterministic:
   * equal states give equal concatenated bytes (piece edges may differ; readers ignore them). Unless
   * snapshotsAreIsolated, the host consumes it fully, or calls return() on it, before anything else
   * executes, so the state does not change underneath it: the service pauses for as long as the
   * checkpoint takes to write. A yielded piece belongs to the consumer: the service does not change it later.
   */
  snapshot(): Iterable<Bytes>;
  /**
   * True when snapshot() captures the state at the call (copy-on-write, for instance) so that later
   * executions do not change what it yields: the host then streams checkpoints while execution goes on,
   * and a checkpoint does not pause the service. The key-value service does this.
   */
  readonly snapshotsAreIsolated?: boolean;
  /**
   * Replaces the state with the one `pieces` carry, cut at arbitrary bytes. Memory must not grow with the
   * state beyond the new state itself (read the stream as it comes; never concatenate it). A malformed
   * snapshot throws a BftError (BFT_ERR_SNAPSHOT_INVALID) and leaves the old state in place.
   */
  installSnapshot(pieces: AsyncIterable<Bytes>): Promise<void>;
}
