import type { Bytes, ClientRequest, Decision, ReplicaMessage, BusyReasonCode } from '../protocol/messages.ts';
import type { Membership } from './reconfiguration.ts';
import type { ReplicaId } from './view.ts';

/**
 * What must be durable before the messages of the same Ready leave. Restoring from these records gives
 * back a replica that never contradicts what it already sent (DESIGN §2, "votes are durable").
 */
export type PersistRecord =
  /** Installed a regency: never again act in an older one. */
  | { readonly kind: 'regency'; readonly regency: number }
  /** Completed the synchronization of a regency; `batch` is the value SYNC bound for `cid` (empty: none). */
  | { readonly kind: 'synced'; readonly regency: number; readonly cid: number; readonly batch: Bytes }
  /** Wrote (BFT) a value in an instance: part of the write set reported in later collects. */
  | { readonly kind: 'write'; readonly cid: number; readonly regency: number; readonly batch: Bytes }
  /** Accepted a value in an instance: the (timestamp, value) reported in later collects. */
  | { readonly kind: 'accept'; readonly cid: number; readonly regency: number; readonly batch: Bytes }
  /** An instance was decided, with its certificate. */
  | { readonly kind: 'decision'; readonly decision: Decision };

export interface Outbound {
  /** A single replica, or every other member of the view. */
  readonly to: ReplicaId | 'others';
  readonly message: ReplicaMessage;
}

/** A decided batch to execute, in cid order. */
export interface Delivery {
  readonly decision: Decision;
  readonly requests: readonly ClientRequest[];
  /**
   * After executing it, checkpoint the state of instance decision.cid. Every correct replica checkpoints
   * at the same instances (the schedule depends only on the decided sequence), so that f+1 of them can
   * attest one manifest for state transfer.
   */
  readonly checkpoint?: boolean;
  /**
   * The results of the batch's reconfiguration requests (by index in `requests`), which the replica
   * answers itself: the service never sees these requests. Encoded ReconfigurationResults.
   */
  readonly reconfigurationResults?: ReadonlyMap<number, Bytes>;
  /** The membership from the next instance on, when this batch changed it. */
  readonly membership?: Membership;
  /**
   * With `checkpoint`: the recent memberships as they stand after this instance, oldest first, each with
   * the first instance it ordered. The checkpoint keeps them, for whoever installs it.
   */
  readonly views?: readonly { readonly membership: Membership; readonly firstCid: number }[];
}

/** The replica lags behind what its peers still keep as decisions: it needs a checkpoint first. */
export interface StateTransferNeed {
  /** Fetch and install a checkpoint of this instance or a later one, then call installCheckpoint(). */
  readonly minCid: number;
}

/** Answers the core owes a client without consensus. */
export type ClientNotice =
  /** Already executed: answer from the reply cache. */
  | { readonly kind: 'cached-reply'; readonly clientId: string; readonly seq: number }
  | { readonly kind: 'busy'; readonly clientId: string; readonly seq: number; readonly reason: BusyReasonCode };

/**
 * Duties in order: make `persist` durable; then send `messages`; then execute `deliveries` and answer
 * `notices`; then call advance(). Nothing of a Ready may be sent before all of its records are durable.
 */
export interface Ready {
  readonly persist: readonly PersistRecord[];
  readonly messages: readonly Outbound[];
  readonly deliveries: readonly Delivery[];
  readonly notices: readonly ClientNotice[];
  /** Set once when a state transfer becomes necessary; not again until installCheckpoint() or stateTransferFailed(). */
  readonly stateTransfer: StateTransferNeed | null;
}
