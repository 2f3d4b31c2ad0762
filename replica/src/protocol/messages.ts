// Wire messages. Type codes are fixed forever: a retired code is never reused (as in TigerBeetle's commands).
// Every message from the network passes protocol/validate.ts before anything reads it.

export type Bytes = Uint8Array;

export const MessageType = {
  PROPOSE: 1,
  WRITE: 2,
  ACCEPT: 3,
  FORWARD: 4,
  STOP: 5,
  STOPDATA: 6,
  SYNC: 7,
  HEARTBEAT: 8,
  DECISION_REQUEST: 9,
  DECISION: 10,
  REQUEST: 32,
  REPLY: 33,
  BUSY: 34,
} as const;

export type MessageTypeCode = (typeof MessageType)[keyof typeof MessageType];

/** A client's request. (clientId, seq) identifies it; a client's ordered requests execute in seq order. */
export interface ClientRequest {
  readonly clientId: string;
  /** Starts at 1 and grows by one per ordered request of this client. */
  readonly seq: number;
  readonly ordered: boolean;
  readonly operation: Bytes;
  /** Ed25519 over the request's signing payload, when the cluster requires signed requests. */
  readonly signature: Bytes | null;
}

/** The value of one consensus instance. Travels encoded; its digest is the hash of those exact bytes. */
export interface Batch {
  readonly requests: readonly ClientRequest[];
}

/** One replica's signature on ACCEPT(view, cid, regency, digest). */
export interface Vote {
  readonly replica: number;
  readonly signature: Bytes;
}

/**
 * A decided instance with its certificate: a quorum of signed ACCEPTs, all for this very cid, regency
 * and digest (the digest is the hash of `batch`), so no vote for another instance or epoch can be mixed in.
 */
export interface Decision {
  readonly cid: number;
  readonly regency: number;
  readonly batch: Bytes;
  readonly votes: readonly Vote[];
}

/** A (timestamp, value) pair of the write set: the regency in which this replica wrote a digest. */
export interface WrittenValue {
  readonly regency: number;
  readonly digest: Bytes;
}

/**
 * A replica's state in its open instance, reported to the leader of the regency being installed.
 * Signed, so that the leader can show it to everyone in SYNC.
 */
export interface Collect {
  readonly replica: number;
  readonly view: number;
  /** The regency being installed; a collect for any other regency is void. */
  readonly regency: number;
  /** The replica's open instance (its last decided cid + 1). */
  readonly cid: number;
  /** Regency in which the replica last accepted a value in this instance, or -1. */
  readonly acceptedRegency: number;
  readonly acceptedDigest: Bytes | null;
  readonly writeSet: readonly WrittenValue[];
}

export interface SignedCollect {
  readonly collect: Collect;
  readonly signature: Bytes;
}

export interface Propose {
  readonly type: typeof MessageType.PROPOSE;
  readonly view: number;
  readonly cid: number;
  readonly regency: number;
  /** The encoded Batch. */
  readonly batch: Bytes;
}

export interface Write {
  readonly type: typeof MessageType.WRITE;
  readonly view: number;
  readonly cid: number;
  readonly regency: number;
  readonly digest: Bytes;
}

export interface Accept {
  readonly type: typeof MessageType.ACCEPT;
  readonly view: number;
  readonly cid: number;
  readonly regency: number;
  readonly digest: Bytes;
  readonly signature: Bytes;
}

export interface Forward {
  readonly type: typeof MessageType.FORWARD;
  readonly view: number;
  readonly requests: readonly ClientRequest[];
}

export interface Stop {
  readonly type: typeof MessageType.STOP;
  readonly view: number;
  /** The regency the sender wants to install. */
  readonly regency: number;
  /** The sender's pending requests, so that the next leader orders them. */
  readonly requests: readonly ClientRequest[];
}

export interface StopData {
  readonly type: typeof MessageType.STOPDATA;
  readonly view: number;
  readonly regency: number;
  readonly collect: SignedCollect;
  /** Proof of the sender's last decided instance (collect.cid - 1), or null if it decided none. */
  readonly lastDecision: Decision | null;
  /** Encoded batches for the digests named in the collect, so the leader can re-propose a bound value. */
  readonly values: readonly Bytes[];
}

export interface Sync {
  readonly type: typeof MessageType.SYNC;
  readonly view: number;
  readonly regency: number;
  /** The instance the new regency continues with. */
  readonly cid: number;
  readonly collects: readonly SignedCollect[];
  /** Proof of instance cid - 1, or null when cid is 0. */
  readonly lastDecision: Decision | null;
  /** The encoded batch for instance cid: the bound value, or the leader's free choice when none is bound. */
  readonly batch: Bytes;
}

export interface Heartbeat {
  readonly type: typeof MessageType.HEARTBEAT;
  readonly view: number;
  readonly regency: number;
  readonly lastDecidedCid: number;
}

export interface DecisionRequest {
  readonly type: typeof MessageType.DECISION_REQUEST;
  readonly view: number;
  readonly fromCid: number;
}

export interface DecisionMessage {
  readonly type: typeof MessageType.DECISION;
  readonly view: number;
  readonly decision: Decision;
}

export interface RequestMessage {
  readonly type: typeof MessageType.REQUEST;
  readonly request: ClientRequest;
}

export interface Reply {
  readonly type: typeof MessageType.REPLY;
  readonly view: number;
  readonly clientId: string;
  readonly seq: number;
  readonly result: Bytes;
}

export const BusyReason = {
  PENDING_FULL: 'pending_full',
  CLIENT_IN_FLIGHT_FULL: 'client_in_flight_full',
  CLIENTS_FULL: 'clients_full',
} as const;
export type BusyReasonCode = (typeof BusyReason)[keyof typeof BusyReason];

export interface Busy {
  readonly type: typeof MessageType.BUSY;
  readonly clientId: string;
  readonly seq: number;
  readonly reason: BusyReasonCode;
}

export type ReplicaMessage =
  | Propose
  | Write
  | Accept
  | Forward
  | Stop
  | StopData
  | Sync
  | Heartbeat
  | DecisionRequest
  | DecisionMessage;

export type ClientMessage = RequestMessage | Reply | Busy;

export type Message = ReplicaMessage | ClientMessage;
