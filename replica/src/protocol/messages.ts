// Wire messages. Type codes are fixed forever: a retired code is never reused (as in TigerBeetle's commands).
// Every message from the network passes protocol/validate.ts before anything reads it.

import type { ViewDescription } from './reconfiguration.ts';

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
  DECISIONS_PRUNED: 11,
  CHECKPOINT_REQUEST: 12,
  CHECKPOINT_OFFER: 13,
  CHUNK_REQUEST: 14,
  CHUNK: 15,
  REQUEST: 32,
  REPLY: 33,
  BUSY: 34,
  VIEW_REQUEST: 35,
  VIEW_REPLY: 36,
  REPLY_DIGEST: 37,
} as const;

export type MessageTypeCode = (typeof MessageType)[keyof typeof MessageType];

/** What a request asks of the replicas. Codes are fixed forever. */
export const RequestKind = {
  /** A View Manager's signed reconfiguration (protocol/reconfiguration.ts), for the replicas themselves. */
  RECONFIGURATION: 1,
} as const;

/** A client's request. (clientId, seq) identifies it; a client's ordered requests execute in seq order. */
export interface ClientRequest {
  readonly clientId: string;
  /** Starts at 1 and grows by one per ordered request of this client. */
  readonly seq: number;
  readonly ordered: boolean;
  readonly operation: Bytes;
  /** Ed25519 over the request's signing payload, when the cluster requires signed requests. */
  readonly signature: Bytes | null;
  /** Absent for the service's requests (almost all of them). */
  readonly kind?: typeof RequestKind.RECONFIGURATION;
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

/**
 * The answer to a DECISION_REQUEST for decisions the sender no longer keeps: they are covered by its
 * checkpoints, so the asker needs state transfer rather than decisions.
 */
export interface DecisionsPruned {
  readonly type: typeof MessageType.DECISIONS_PRUNED;
  readonly view: number;
  /** The oldest decided instance the sender still keeps (-1: none). */
  readonly oldestRetainedCid: number;
  /** The instance of the sender's newest checkpoint (-1: none). */
  readonly checkpointCid: number;
}

/** State transfer: "offer me your checkpoints of instance minCid or later". */
export interface CheckpointRequest {
  readonly type: typeof MessageType.CHECKPOINT_REQUEST;
  readonly view: number;
  readonly minCid: number;
}

/** A checkpoint manifest (storage/checkpoint-store.ts) as it travels, signed by the replica offering it. */
export interface CheckpointOffer {
  readonly cid: number;
  readonly viewNumber: number;
  /** Part codes (1 service, 2 replies, 3 view) and sizes, in that order. */
  readonly parts: readonly { readonly code: number; readonly bytes: number }[];
  readonly totalBytes: number;
  readonly chunkBytes: number;
  /** The SHA-256 of each chunk, concatenated (32 bytes each). */
  readonly chunkHashes: Bytes;
  /** Ed25519 by the sender over the attestation of the manifest's digest (state-transfer module). */
  readonly signature: Bytes;
}

export interface CheckpointOfferMessage {
  readonly type: typeof MessageType.CHECKPOINT_OFFER;
  readonly view: number;
  /** Newest last; empty when the sender has no checkpoint at or after the asked instance. */
  readonly offers: readonly CheckpointOffer[];
}

export interface ChunkRequest {
  readonly type: typeof MessageType.CHUNK_REQUEST;
  readonly view: number;
  readonly cid: number;
  readonly index: number;
}

export interface Chunk {
  readonly type: typeof MessageType.CHUNK;
  readonly view: number;
  readonly cid: number;
  readonly index: number;
  /** Empty when the sender no longer has (or cannot read) that checkpoint: ask another replica. */
  readonly bytes: Bytes;
}

export interface RequestMessage {
  readonly type: typeof MessageType.REQUEST;
  readonly request: ClientRequest;
  /**
   * Answer this copy with a REPLY_DIGEST: another replica was asked for the full result. Only this copy's
   * envelope says so (it is never ordered), so each replica answers as its own copy asked.
   */
  readonly replyWithDigest?: boolean;
}

export interface Reply {
  readonly type: typeof MessageType.REPLY;
  readonly view: number;
  readonly clientId: string;
  readonly seq: number;
  readonly result: Bytes;
}

/** A REPLY_DIGEST's resultDigest: SHA-256. */
export const resultDigestBytes = 32;

/**
 * A REPLY without its result: the SHA-256 of the result only. It counts toward the reply quorum like a
 * REPLY with those result bytes, once the client holds a full REPLY whose result has that digest.
 */
export interface ReplyDigest {
  readonly type: typeof MessageType.REPLY_DIGEST;
  readonly view: number;
  readonly clientId: string;
  readonly seq: number;
  readonly resultDigest: Bytes;
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
  | DecisionMessage
  | DecisionsPruned
  | CheckpointRequest
  | CheckpointOfferMessage
  | ChunkRequest
  | Chunk;

/** Replica-to-replica messages that the state-transfer module handles, not the core. */
export type StateTransferMessage = CheckpointRequest | CheckpointOfferMessage | ChunkRequest | Chunk;

export function isStateTransferMessage(message: ReplicaMessage): message is StateTransferMessage {
  return (
    message.type === MessageType.CHECKPOINT_REQUEST ||
    message.type === MessageType.CHECKPOINT_OFFER ||
    message.type === MessageType.CHUNK_REQUEST ||
    message.type === MessageType.CHUNK
  );
}

/** "Which view are you in?": a client that saw f+1 replies from a newer view asks its members. */
export interface ViewRequest {
  readonly type: typeof MessageType.VIEW_REQUEST;
  /** The session asking; the answer goes to it. */
  readonly clientId: string;
}

/** A replica's current view, with where its members listen and their keys. */
export interface ViewReply {
  readonly type: typeof MessageType.VIEW_REPLY;
  readonly clientId: string;
  readonly view: ViewDescription;
}

export type ClientMessage = RequestMessage | Reply | ReplyDigest | Busy | ViewRequest | ViewReply;

export type Message = ReplicaMessage | ClientMessage;

export function isClientMessage(message: Message): message is ClientMessage {
  return (
    message.type === MessageType.REQUEST ||
    message.type === MessageType.REPLY ||
    message.type === MessageType.REPLY_DIGEST ||
    message.type === MessageType.BUSY ||
    message.type === MessageType.VIEW_REQUEST ||
    message.type === MessageType.VIEW_REPLY
  );
}
