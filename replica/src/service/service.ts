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
  snapshot(): Bytes;
  installSnapshot(snapshot: Bytes): void;
}
