// The client library (DESIGN §3): sends each request to every member of the view, and believes a result
// only when enough replicas sent the same bytes that at least one of them is correct (ordered: f+1, or 1
// in crash mode) or, for a read without consensus, a Byzantine majority (more than (n+f)/2).
//
// Sequence numbers. The replicas execute a client's ordered requests strictly in seq order, seq = last+1,
// and never skip one. So the client assigns each ordered request the next seq when it is invoked, sends
// them in that order, and never abandons one: once assigned, a seq is retransmitted until a quorum
// answers it or the client is closed. A timeout (or cancel() of an async call) only gives the caller its
// answer early: the request stays in its in-flight slot and keeps being retransmitted in the background,
// and later requests still wait behind it. It may therefore still execute after its caller saw the
// timeout. A client whose replicas never answer again stays stuck; close it and create a new one with a
// fresh clientId (a new clientId starts at seq 1, which no replica has seen).
//
// Unordered requests carry seqs from a separate range, [unorderedSeqFirst, 2^53), so that their replies
// can never be mistaken for replies to ordered requests (a REPLY names only clientId and seq). Replicas
// answer an unordered request with a REPLY carrying the request's seq and never order it.

import { limits } from '../constants.ts';
import { type ReplicaId, type View, ViewInfo } from '../core/view.ts';
import { BftError } from '../errors.ts';
import { decodeMessage, encodeMessage, requestSigningPayload } from '../protocol/codec.ts';
import { type Busy, type Bytes, type ClientRequest, type Message, MessageType, type Reply, type ReplyDigest, RequestKind, type ViewReply } from '../protocol/messages.ts';
import { type ViewDescription, encodeReconfigurationResult } from '../protocol/reconfiguration.ts';
import { DropReason } from '../protocol/reasons.ts';
import { ReplyTally } from './replies.ts';
import type { ClientTransport } from './transport.ts';

/** First seq of unordered requests; ordered seqs stay below it (2^52 requests: centuries at 1M/s). */
export const unorderedSeqFirst = 2 ** 52;

/** Why the client ignored a message from a replica; every ignored message is counted in stats(). */
export const ClientDropReason = {
  // From the codec and schema.
  FRAME_TOO_LARGE: DropReason.FRAME_TOO_LARGE,
  UNDECODABLE: DropReason.UNDECODABLE,
  UNKNOWN_TYPE: DropReason.UNKNOWN_TYPE,
  SCHEMA: DropReason.SCHEMA,
  /** A valid message that is not a REPLY or BUSY. */
  NOT_FOR_CLIENTS: 'not_for_clients',
  NOT_MEMBER: DropReason.NOT_MEMBER,
  WRONG_CLIENT: DropReason.WRONG_CLIENT,
  /**
   * For no request this client is waiting on. Normal in small numbers: in BFT the replies beyond the
   * quorum arrive after the request completed.
   */
  NOT_OUTSTANDING: 'not_outstanding',
  /** A second REPLY (or a BUSY after a REPLY) from the same replica for the same request. */
  DUPLICATE: DropReason.DUPLICATE,
  /** A REPLY_DIGEST for a request that did not ask for one (an unordered or async request). */
  UNEXPECTED_DIGEST: 'unexpected_digest',
} as const;
export type ClientDropReasonCode = (typeof ClientDropReason)[keyof typeof ClientDropReason];

/** The largest REPLY a replica can send: the largest result plus the envelope (view, clientId, seq, keys). */
const replyBytesMax = limits.resultBytesMax + limits.clientIdLengthMax + 256;

export interface ClientTimeouts {
  /** Wait before the first retransmission; it doubles with each one up to retransmitMsMax. */
  readonly retransmitMs?: number;
  readonly retransmitMsMax?: number;
  /** The caller of an ordered request gets BFT_ERR_CLIENT_TIMEOUT after this (the request lives on). */
  readonly orderedTimeoutMs?: number;
  /** An unordered request without a quorum by then falls back to an ordered one. */
  readonly unorderedTimeoutMs?: number;
  /**
   * With reply digests: how long the replica asked for the result may lag behind a quorum of digests
   * before the client asks the digest senders for it.
   */
  readonly fullResultWaitMs?: number;
}

export interface RequestSigner {
  /** Ed25519 over requestSigningPayload(request), with the key the cluster knows for this clientId. */
  sign(payload: Uint8Array): Uint8Array;
}

export interface BftClientOptions {
  /** Must match the identity in the client's TLS certificate, or replicas drop its requests. */
  readonly clientId: string;
  readonly view: View;
  readonly transport: ClientTransport;
  /** Needed when the cluster requires signed requests. */
  readonly signer?: RequestSigner;
  readonly timeouts?: ClientTimeouts;
  /** Ordered requests outstanding at once (1 to limits.clientInFlightMax). Default 1. */
  readonly inFlightMax?: number;
  /** Ordered requests that may wait for an in-flight slot (0 to limits.clientWaitingMax). */
  readonly waitingMax?: number;
  /**
   * Seq of this client's first ordered request: one more than the last seq the replicas executed for
   * this clientId (1 for a clientId they have never seen). A wrong value stalls the client (too high: the
   * replicas wait forever for the missing seqs) or returns old cached results (too low).
   */
  readonly firstSeq?: number;
  /**
   * Called when f+1 members (1 in crash mode) report a view newer than the client's, so at least one
   * correct replica moved on; the client then asks its members for that view and moves to it by itself
   * (see onViewChanged). Called once per newer view number, with the highest number that many vouch for.
   */
  readonly onNewerView?: (viewNumber: number) => void;
  /** Called after the client moved to a newer view (its requests then go to that view's members). */
  readonly onViewChanged?: (view: ViewDescription) => void;
  /**
   * Ordered requests of invokeOrdered ask one replica for the full result and the others for its SHA-256
   * only (REPLY_DIGEST), as PBFT does: replies cost one result's bytes instead of n. If that replica is
   * slow, silent or lying, the client asks the others for the result. Default true.
   */
  readonly replyDigests?: boolean;
  /**
   * Digests pay only for results longer than a digest: a request asks for them only while the client's
   * previous ordered result had at least this many bytes (and for its first). Default 4096: measured on
   * 2 cores, digests cost 5–8% of throughput with 1–2 KiB results (the client waits for one given replica
   * instead of the fastest quorum), break even at 4 KiB and win 25–42% at 8 KiB.
   */
  readonly replyDigestsFromBytes?: number;
}

export const clientDefaults = {
  retransmitMs: 200,
  retransmitMsMax: 4_000,
  orderedTimeoutMs: 30_000,
  unorderedTimeoutMs: 2_000,
  fullResultWaitMs: 20,
  inFlightMax: 1,
  waitingMax: 256,
  firstSeq: 1,
  replyDigests: true,
  replyDigestsFromBytes: 4096,
} as const;

export interface AsyncInvocation {
  readonly seq: number;
  /**
   * Resolves once the ordered quorum of matching replies arrived; rejects with BFT_ERR_CLIENT_TIMEOUT,
   * BFT_ERR_CLIENT_CANCELLED or BFT_ERR_CLIENT_CLOSED. It never counts as an unhandled rejection: the
   * replies themselves go to onReply, so awaiting `done` is optional.
   */
  readonly done: Promise<void>;
  /** Stop calling onReply. The request keeps its seq and is still retransmitted until answered. */
  cancel(): void;
}

export interface ClientStats {
  /** Ordered requests sent and not yet answered by a quorum (including detached ones). */
  readonly inFlight: number;
  /** Ordered requests waiting for an in-flight slot. */
  readonly waiting: number;
  readonly unorderedInFlight: number;
  /** Ordered requests whose caller timed out or cancelled, still retransmitted until answered. */
  readonly detached: number;
  /** Encoded requests handed to the transport, first copies and retransmissions. */
  readonly sends: number;
  /** REPLY_DIGESTs that counted toward a quorum. */
  readonly digestReplies: number;
  /** Requests answered by digest whose full result had to be asked for again (the chosen replica was slow or wrong). */
  readonly fullResultFetches: number;
  /** Retransmission rounds (each sends to every replica that has not replied yet). */
  readonly retransmissions: number;
  readonly busyReceived: number;
  readonly unorderedFallbacks: number;
  readonly dropped: Readonly<Partial<Record<ClientDropReasonCode, number>>>;
}

type Timer = ReturnType<typeof setTimeout>;

type Caller =
  | { readonly kind: 'promise'; readonly resolve: (result: Bytes) => void; readonly reject: (error: BftError) => void }
  | {
      readonly kind: 'async';
      readonly onReply: (replicaId: number, result: Bytes) => void;
      readonly resolve: () => void;
      readonly reject: (error: BftError) => void;
    };

interface Outstanding {
  readonly request: ClientRequest;
  readonly encoded: Bytes;
  /**
   * The same request asking for a REPLY_DIGEST, sent to every member but `fullReplier`; null when every
   * copy asks for the full result (unordered and async requests, after a retransmission or a fetch).
   */
  encodedForDigest: Bytes | null;
  fullReplier: ReplicaId | null;
  /** Runs fetchFullResult when `fullReplier` lags a quorum of digests for too long. */
  fullResultTimer: Timer | null;
  /** Replaced, restricted to the new members, when the client moves to a new view. */
  tally: ReplyTally;
  /** Null once the caller stopped waiting (timeout, cancel): the request itself is still alive. */
  caller: Caller | null;
  sent: boolean;
  finished: boolean;
  retransmitTimer: Timer | null;
  /** The delay of the next retransmission. */
  retransmitIntervalMs: number;
  /** A BUSY already pushed the retransmission back (and doubled the interval) since the last send. */
  deferredByBusy: boolean;
  deadlineTimer: Timer | null;
}

interface ResolvedOptions {
  readonly retransmitMs: number;
  readonly retransmitMsMax: number;
  readonly orderedTimeoutMs: number;
  readonly unorderedTimeoutMs: number;
  readonly inFlightMax: number;
  readonly waitingMax: number;
  readonly firstSeq: number;
  readonly replyDigests: boolean;
  readonly replyDigestsFromBytes: number;
  readonly fullResultWaitMs: number;
}

export class BftClient {
  readonly clientId: string;
  private viewInfo: ViewInfo;
  private readonly transport: ClientTransport;
  private readonly signer: RequestSigner | null;
  private readonly options: ResolvedOptions;
  private readonly newerViewHook: ((viewNumber: number) => void) | null;
  private readonly viewChangedHook: ((view: ViewDescription) => void) | null;
  /** VIEW_REPLYs for views newer than ours, by replica: the encoded description, compared byte for byte. */
  private readonly viewReplies = new Map<ReplicaId, { readonly key: string; readonly view: ViewDescription }>();
  private lastViewRequestMs = -Infinity;

  private nextOrderedSeq: number;
  private nextUnorderedSeq = unorderedSeqFirst;
  private readonly orderedInFlight = new Map<number, Outstanding>();
  /** FIFO, in seq order; at most options.waitingMax entries. */
  private readonly waiting: Outstanding[] = [];
  private readonly unordered = new Map<number, Outstanding>();

  /** The highest view number each member has reported in a REPLY. */
  private readonly reportedViews = new Map<ReplicaId, number>();
  private surfacedView: number;

  private closed = false;
  private closing: Promise<void> | null = null;

  private sends = 0;
  private fullResultFetches = 0;
  private digestReplies = 0;
  /**
   * The replica asked for full results: the last one whose bytes completed a request. It keeps the role
   * while it delivers; one that withheld them (Byzantine or down) does not win it back by answering fast.
   */
  private preferredFullReplier: ReplicaId | null = null;
  /** The length of the last ordered result; results tend to look like the previous ones. */
  private lastOrderedResultBytes = Number.POSITIVE_INFINITY;
  private retransmissions = 0;
  private busyReceived = 0;
  private unorderedFallbacks = 0;
  private readonly dropped: Partial<Record<ClientDropReasonCode, number>> = {};

  constructor(options: BftClientOptions) {
    this.options = resolveOptions(options);
    this.clientId = options.clientId;
    this.viewInfo = new ViewInfo(options.view);
    this.transport = options.transport;
    this.signer = options.signer ?? null;
    this.newerViewHook = options.onNewerView ?? null;
    this.viewChangedHook = options.onViewChanged ?? null;
    this.nextOrderedSeq = this.options.firstSeq;
    this.surfacedView = options.view.number;
    this.transport.onMessage((replicaId, payload, decoded) => this.receive(replicaId, payload, decoded));
  }

  get view(): View {
    return this.viewInfo.view;
  }

  /**
   * Executes an operation in the replicated order and resolves with its result, once enough replicas
   * sent the same result that at least one of them is correct. Rejects at once with BFT_ERR_CLIENT_BUSY
   * when inFlightMax requests are outstanding and waitingMax more are waiting. On BFT_ERR_CLIENT_TIMEOUT
   * the request may still execute (see the top of this file).
   */
  invokeOrdered(operation: Uint8Array, options: { readonly kind?: typeof RequestKind.RECONFIGURATION } = {}): Promise<Uint8Array> {
    const { promise, resolve, reject } = Promise.withResolvers<Uint8Array>();
    try {
      this.submitOrdered(operation, { kind: 'promise', resolve, reject }, options.kind);
    } catch (error) {
      reject(error);
    }
    return promise;
  }

  /**
   * Executes a read-only operation without consensus; resolves when more than (n+f)/2 replicas sent the
   * same result. When the replicas disagree so that no such majority can form, or none formed within
   * unorderedTimeoutMs, the operation is invoked ordered instead (and resolves or rejects as that does).
   */
  invokeUnordered(operation: Uint8Array): Promise<Uint8Array> {
    const { promise, resolve, reject } = Promise.withResolvers<Uint8Array>();
    try {
      this.submitUnordered(operation, { kind: 'promise', resolve, reject });
    } catch (error) {
      reject(error);
    }
    return promise;
  }

  /**
   * An ordered request whose replies are handed to onReply one by one, the first from each member of the
   * view, as they come; the caller decides when it has enough. Throws (BFT_ERR_CLIENT_BUSY, _CLOSED,
   * _OPERATION_TOO_LARGE) instead of assigning a seq when the request cannot be taken.
   */
  invokeAsync(operation: Uint8Array, onReply: (replicaId: number, result: Uint8Array) => void): AsyncInvocation {
    const { promise, resolve, reject } = Promise.withResolvers<void>();
    // Marks the promise handled without hiding anything from whoever awaits it: a caller that only
    // listens to onReply must not crash its process with an unhandled rejection on timeout or close.
    promise.catch(() => {});
    const entry = this.submitOrdered(operation, { kind: 'async', onReply, resolve, reject });
    return {
      seq: entry.request.seq,
      done: promise,
      cancel: () => {
        const caller = entry.caller;
        if (caller === null) return;
        entry.caller = null;
        caller.reject(
          new BftError(
            'BFT_ERR_CLIENT_CANCELLED',
            `ordered request ${entry.request.seq} was cancelled by its caller; it may still execute, since the ` +
              'client keeps retransmitting it until the replicas answer',
          ),
        );
      },
    };
  }

  stats(): ClientStats {
    let detached = 0;
    for (const entry of this.orderedInFlight.values()) if (entry.caller === null) detached++;
    for (const entry of this.waiting) if (entry.caller === null) detached++;
    return {
      inFlight: this.orderedInFlight.size,
      waiting: this.waiting.length,
      unorderedInFlight: this.unordered.size,
      detached,
      sends: this.sends,
      digestReplies: this.digestReplies,
      fullResultFetches: this.fullResultFetches,
      retransmissions: this.retransmissions,
      busyReceived: this.busyReceived,
      unorderedFallbacks: this.unorderedFallbacks,
      dropped: { ...this.dropped },
    };
  }

  /** Rejects everything outstanding with BFT_ERR_CLIENT_CLOSED, stops every timer, closes the transport. */
  close(): Promise<void> {
    if (this.closing !== null) return this.closing;
    this.closed = true;
    const outstanding = [...this.orderedInFlight.values(), ...this.waiting, ...this.unordered.values()];
    for (const entry of outstanding) {
      const caller = entry.caller;
      this.finish(entry);
      caller?.reject(
        new BftError(
          'BFT_ERR_CLIENT_CLOSED',
          `the client was closed before request ${entry.request.seq} was answered; ` +
            (entry.sent ? 'it may still execute. ' : 'it was never sent. ') +
            'Create a new client to continue',
        ),
      );
    }
    this.closing = this.transport.close();
    return this.closing;
  }

  // ---------------------------------------------------------------------------------------------
  // Submitting.

  private submitOrdered(operation: Uint8Array, caller: Caller, kind?: typeof RequestKind.RECONFIGURATION): Outstanding {
    this.checkAcceptsWork(operation);
    const admitNow = this.orderedInFlight.size < this.options.inFlightMax && this.waiting.length === 0;
    if (!admitNow && this.waiting.length >= this.options.waitingMax) {
      throw new BftError(
        'BFT_ERR_CLIENT_BUSY',
        `${this.orderedInFlight.size} ordered requests are in flight and ${this.waiting.length} waiting, the most ` +
          'this client allows: wait for earlier requests to complete, or raise inFlightMax or waitingMax',
      );
    }
    if (this.nextOrderedSeq >= unorderedSeqFirst) {
      throw new BftError('BFT_ERR_CLIENT_SEQ_EXHAUSTED', 'this clientId used every ordered seq; create a client with a fresh clientId');
    }
    const entry = this.createEntry(this.nextOrderedSeq, true, operation, caller, kind);
    this.nextOrderedSeq++;
    entry.deadlineTimer = setTimeout(() => this.onOrderedDeadline(entry), this.options.orderedTimeoutMs);
    if (admitNow) this.startOrdered(entry);
    else this.waiting.push(entry);
    return entry;
  }

  private submitUnordered(operation: Uint8Array, caller: Caller): void {
    this.checkAcceptsWork(operation);
    if (this.unordered.size >= limits.clientUnorderedInFlightMax) {
      throw new BftError(
        'BFT_ERR_CLIENT_BUSY',
        `${this.unordered.size} unordered requests are in flight, the most one client allows: wait for some to complete`,
      );
    }
    const entry = this.createEntry(this.nextUnorderedSeq, false, operation, caller);
    // Wrapping is harmless: 2^52 reads later, the read that used the seq before is long gone.
    this.nextUnorderedSeq = this.nextUnorderedSeq === Number.MAX_SAFE_INTEGER ? unorderedSeqFirst : this.nextUnorderedSeq + 1;
    this.unordered.set(entry.request.seq, entry);
    entry.deadlineTimer = setTimeout(() => this.fallBack(entry), this.options.unorderedTimeoutMs);
    this.sendFirstCopies(entry);
  }

  private checkAcceptsWork(operation: Uint8Array): void {
    if (this.closed) throw new BftError('BFT_ERR_CLIENT_CLOSED', 'the client is closed; create a new client');
    if (!(operation instanceof Uint8Array) || operation.length > limits.operationBytesMax) {
      const size = operation instanceof Uint8Array ? `${operation.length} bytes` : 'not a Uint8Array';
      throw new BftError(
        'BFT_ERR_CLIENT_OPERATION_TOO_LARGE',
        `an operation is a Uint8Array of at most ${limits.operationBytesMax} bytes (got ${size}); split it`,
      );
    }
  }

  /** Builds, signs and encodes a request; the seq counter moves only after this succeeded. */
  private createEntry(seq: number, ordered: boolean, operation: Uint8Array, caller: Caller, kind?: typeof RequestKind.RECONFIGURATION): Outstanding {
    // A copy, so that the caller may reuse its buffer at once (a waiting request is sent later, and an
    // unordered one is re-invoked ordered on fallback).
    const unsigned: ClientRequest = {
      clientId: this.clientId,
      seq,
      ordered,
      operation: operation.slice(),
      signature: null,
      ...(kind === undefined ? {} : { kind }),
    };
    let request = unsigned;
    if (this.signer !== null) {
      const signature = this.signer.sign(requestSigningPayload(unsigned));
      if (!(signature instanceof Uint8Array) || signature.length === 0 || signature.length > limits.signatureBytesMax) {
        throw new BftError(
          'BFT_ERR_CONFIG_INVALID',
          `the request signer returned ${signature instanceof Uint8Array ? `${signature.length} bytes` : 'no bytes'}; ` +
            `a signature has 1 to ${limits.signatureBytesMax} bytes (Ed25519: 64)`,
        );
      }
      request = { ...unsigned, signature };
    }
    const byDigest =
      ordered &&
      caller.kind === 'promise' &&
      this.options.replyDigests &&
      this.viewInfo.n > 1 &&
      this.lastOrderedResultBytes >= this.options.replyDigestsFromBytes;
    return {
      request,
      encoded: encodeMessage({ type: MessageType.REQUEST, request }),
      encodedForDigest: byDigest ? encodeMessage({ type: MessageType.REQUEST, request, replyWithDigest: true }) : null,
      fullReplier: null,
      fullResultTimer: null,
      tally: new ReplyTally(),
      caller,
      sent: false,
      finished: false,
      retransmitTimer: null,
      retransmitIntervalMs: this.options.retransmitMs,
      deferredByBusy: false,
      deadlineTimer: null,
    };
  }

  private startOrdered(entry: Outstanding): void {
    this.orderedInFlight.set(entry.request.seq, entry);
    this.sendFirstCopies(entry);
  }

  /** Admits waiting requests, oldest (lowest seq) first, into free in-flight slots. */
  private admitWaiting(): void {
    while (this.orderedInFlight.size < this.options.inFlightMax) {
      const next = this.waiting.shift();
      if (next === undefined) return;
      this.startOrdered(next);
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Sending and retransmitting. Sends happen only here and on the retransmission timer, and once per request
  // when a digest quorum lacks its result: never freely in answer to a message from a replica, so that no
  // reply or BUSY can multiply traffic.

  private sendFirstCopies(entry: Outstanding): void {
    entry.sent = true;
    if (entry.encodedForDigest !== null) entry.fullReplier = this.fullReplierNow();
    this.sendCopies(entry);
    this.scheduleRetransmission(entry);
  }

  /** The member to ask for the full result: the one that last delivered it, else one by clientId. */
  private fullReplierNow(): ReplicaId {
    const preferred = this.preferredFullReplier;
    if (preferred !== null && this.viewInfo.isMember(preferred)) return preferred;
    const members = this.viewInfo.view.members;
    let spread = 0;
    for (let i = 0; i < this.clientId.length; i++) spread = (spread * 31 + this.clientId.charCodeAt(i)) >>> 0;
    return members[spread % members.length] as ReplicaId;
  }

  /**
   * To every member that has not replied yet (a replica's first reply is the only one that counts), and,
   * once the request asks for full results only, to those that sent just a digest.
   */
  private sendCopies(entry: Outstanding): void {
    const forDigest = entry.encodedForDigest;
    for (const member of this.viewInfo.view.members) {
      if (entry.tally.hasFullReply(member) || (forDigest !== null && entry.tally.hasReplied(member))) continue;
      this.transport.send(member, forDigest === null || member === entry.fullReplier ? entry.encoded : forDigest);
      this.sends++;
    }
  }

  /**
   * A quorum vouched for a result by digest but nobody sent its bytes: from now on every copy asks for the
   * full result, starting with the replicas that sent a digest (they answer from their reply caches). Once
   * per request, so replies cannot multiply traffic.
   */
  private fetchFullResult(entry: Outstanding): void {
    if (entry.encodedForDigest === null || entry.finished) return;
    this.stopAskingForDigests(entry);
    this.fullResultFetches++;
    this.sendCopies(entry);
  }

  /** Every copy sent from now on asks for the full result, and no fetch is pending any more. */
  private stopAskingForDigests(entry: Outstanding): void {
    entry.encodedForDigest = null;
    if (entry.fullResultTimer !== null) clearTimeout(entry.fullResultTimer);
    entry.fullResultTimer = null;
  }

  private scheduleRetransmission(entry: Outstanding): void {
    if (entry.retransmitTimer !== null) clearTimeout(entry.retransmitTimer);
    entry.retransmitTimer = setTimeout(() => this.retransmit(entry), entry.retransmitIntervalMs);
  }

  private retransmit(entry: Outstanding): void {
    entry.retransmitTimer = null;
    if (entry.finished) return;
    this.retransmissions++;
    // Whatever held the request up, its result's bytes may be part of it: ask everyone for them.
    this.stopAskingForDigests(entry);
    this.sendCopies(entry);
    entry.deferredByBusy = false;
    entry.retransmitIntervalMs = Math.min(entry.retransmitIntervalMs * 2, this.options.retransmitMsMax);
    this.scheduleRetransmission(entry);
  }

  /**
   * A replica is over its limits: the next retransmission waits longer. The interval doubles at most once
   * per round however many replicas say BUSY, and the timer only moves later: the new due time is now
   * plus an interval at least as long as the one the pending timer was started with.
   */
  private deferRetransmission(entry: Outstanding): void {
    if (!entry.deferredByBusy) {
      entry.deferredByBusy = true;
      entry.retransmitIntervalMs = Math.min(entry.retransmitIntervalMs * 2, this.options.retransmitMsMax);
    }
    this.scheduleRetransmission(entry);
  }

  // ---------------------------------------------------------------------------------------------
  // Completing.

  /** Stops the request's timers and forgets it. */
  private finish(entry: Outstanding): void {
    entry.finished = true;
    entry.caller = null;
    if (entry.retransmitTimer !== null) clearTimeout(entry.retransmitTimer);
    if (entry.deadlineTimer !== null) clearTimeout(entry.deadlineTimer);
    if (entry.fullResultTimer !== null) clearTimeout(entry.fullResultTimer);
    entry.retransmitTimer = null;
    entry.deadlineTimer = null;
    entry.fullResultTimer = null;
    const seq = entry.request.seq;
    if (!entry.request.ordered) {
      this.unordered.delete(seq);
    } else if (!this.orderedInFlight.delete(seq)) {
      const index = this.waiting.indexOf(entry);
      if (index >= 0) this.waiting.splice(index, 1);
    }
  }

  private complete(entry: Outstanding, result: Bytes): void {
    const caller = entry.caller;
    this.finish(entry);
    if (caller?.kind === 'promise') caller.resolve(result);
    else if (caller?.kind === 'async') caller.resolve();
    if (entry.request.ordered) this.admitWaiting();
  }

  private onOrderedDeadline(entry: Outstanding): void {
    entry.deadlineTimer = null;
    const caller = entry.caller;
    if (caller === null || entry.finished) return;
    entry.caller = null;
    const { seq } = entry.request;
    caller.reject(
      new BftError(
        'BFT_ERR_CLIENT_TIMEOUT',
        `ordered request ${seq} got no ${this.viewInfo.quorums.orderedReply} matching replies within ` +
          `${this.options.orderedTimeoutMs} ms. ` +
          (entry.sent ? 'It may still execute: ' : 'It waits behind earlier requests and will be sent: ') +
          'the client retransmits it until the replicas answer, and later requests wait behind it. Check that ' +
          'the replicas are reachable and have a quorum; do not simply invoke the operation again unless it is ' +
          'idempotent, and if the replicas stay silent, close this client and create one with a fresh clientId',
      ),
    );
  }

  private fallBack(entry: Outstanding): void {
    if (entry.finished) return;
    const caller = entry.caller;
    this.finish(entry);
    this.unorderedFallbacks++;
    if (caller?.kind === 'promise') this.invokeOrdered(entry.request.operation).then(caller.resolve, caller.reject);
  }

  // ---------------------------------------------------------------------------------------------
  // Receiving: every byte from a replica is untrusted; anything unexpected is counted and ignored.

  private drop(reason: ClientDropReasonCode): void {
    this.dropped[reason] = (this.dropped[reason] ?? 0) + 1;
  }

  private receive(replicaId: number, payload: Uint8Array, alreadyDecoded?: Message): void {
    if (this.closed) return;
    if (payload.length > replyBytesMax) return this.drop(ClientDropReason.FRAME_TOO_LARGE);
    let message = alreadyDecoded;
    if (message === undefined) {
      const decoded = decodeMessage(payload);
      // The codec rejects only with FRAME_TOO_LARGE, UNDECODABLE, UNKNOWN_TYPE or SCHEMA, all client reasons too.
      if (!decoded.ok) return this.drop(decoded.reason as ClientDropReasonCode);
      message = decoded.message;
    }
    if (
      message.type !== MessageType.REPLY &&
      message.type !== MessageType.REPLY_DIGEST &&
      message.type !== MessageType.BUSY &&
      message.type !== MessageType.VIEW_REPLY
    ) {
      return this.drop(ClientDropReason.NOT_FOR_CLIENTS);
    }
    if (!this.viewInfo.isMember(replicaId)) return this.drop(ClientDropReason.NOT_MEMBER);
    if (message.clientId !== this.clientId) return this.drop(ClientDropReason.WRONG_CLIENT);
    if (message.type === MessageType.VIEW_REPLY) return this.onViewReply(replicaId, message);
    if (message.type === MessageType.REPLY || message.type === MessageType.REPLY_DIGEST) this.noteReportedView(replicaId, message.view);
    const entry = message.seq >= unorderedSeqFirst ? this.unordered.get(message.seq) : this.orderedInFlight.get(message.seq);
    if (entry === undefined) return this.drop(ClientDropReason.NOT_OUTSTANDING);
    if (message.type === MessageType.BUSY) return this.onBusy(replicaId, entry, message);
    if (message.type === MessageType.REPLY_DIGEST) return this.onReplyDigest(replicaId, entry, message);
    this.onReply(replicaId, entry, message);
  }

  private onBusy(replicaId: ReplicaId, entry: Outstanding, _busy: Busy): void {
    if (entry.tally.hasReplied(replicaId)) return this.drop(ClientDropReason.DUPLICATE);
    this.busyReceived++;
    this.deferRetransmission(entry);
  }

  private onReplyDigest(replicaId: ReplicaId, entry: Outstanding, reply: ReplyDigest): void {
    // Only ordered requests of invokeOrdered ask for digests; async callers see every reply's bytes.
    if (!entry.request.ordered || entry.caller?.kind === 'async') return this.drop(ClientDropReason.UNEXPECTED_DIGEST);
    if (!entry.tally.addDigest(replicaId, reply.resultDigest)) return this.drop(ClientDropReason.DUPLICATE);
    this.digestReplies++;
    this.settle(entry);
  }

  private onReply(replicaId: ReplicaId, entry: Outstanding, reply: Reply): void {
    if (!entry.tally.add(replicaId, reply.result)) return this.drop(ClientDropReason.DUPLICATE);
    const caller = entry.caller;
    if (caller?.kind === 'async') callUser(() => caller.onReply(replicaId, reply.result));
    // The callback may have closed the client.
    if (entry.finished) return;
    this.settle(entry);
  }

  /** Completes `entry` if its replies make a quorum of the current view, or falls back if a read cannot. */
  private settle(entry: Outstanding): void {
    const { quorums, n } = this.viewInfo;
    const quorum = entry.request.ordered ? quorums.orderedReply : quorums.unorderedReply;
    const result = entry.tally.decided(quorum);
    if (result !== null) {
      if (entry.fullReplier !== null) this.preferredFullReplier = entry.tally.decidedResultFrom(quorum);
      if (entry.request.ordered) this.lastOrderedResultBytes = result.length;
      return this.complete(entry, result);
    }
    if (entry.encodedForDigest !== null && entry.tally.digestOnlyQuorum(quorum).length > 0) {
      // Digests alone finish nothing. A chosen replica that answered with other bytes is not going to
      // send these; one that has not answered gets fullResultWaitMs (it is usually just behind).
      if (entry.fullReplier === null || entry.tally.hasReplied(entry.fullReplier)) return this.fetchFullResult(entry);
      entry.fullResultTimer ??= setTimeout(() => this.fetchFullResult(entry), this.options.fullResultWaitMs);
    }
    // Correct replicas always agree on ordered results, so only a read can end in disagreement.
    if (!entry.request.ordered && !entry.tally.canStillReach(quorum, n)) this.fallBack(entry);
  }

  /**
   * A single replica may lie about the view; f+1 cannot all lie. So the hook hears the highest view
   * number that f+1 members (1 in crash mode) report, and only when it is newer than anything surfaced.
   */
  private noteReportedView(replicaId: ReplicaId, viewNumber: number): void {
    if (viewNumber <= this.surfacedView || viewNumber <= (this.reportedViews.get(replicaId) ?? -1)) return;
    this.reportedViews.set(replicaId, viewNumber);
    const needed = this.viewInfo.quorums.includesCorrect;
    const reported = [...this.reportedViews.values()].sort((a, b) => b - a);
    const vouched = reported[needed - 1];
    if (vouched === undefined || vouched <= this.surfacedView) return;
    this.surfacedView = vouched;
    const hook = this.newerViewHook;
    if (hook !== null) callUser(() => hook(vouched));
    this.requestView();
  }

  /** Ask every member for its current view; at most once per retransmission interval. */
  private requestView(): void {
    const now = performance.now();
    if (this.closed || now - this.lastViewRequestMs < this.options.retransmitMs) return;
    this.lastViewRequestMs = now;
    const encoded = encodeMessage({ type: MessageType.VIEW_REQUEST, clientId: this.clientId });
    for (const member of this.viewInfo.view.members) this.transport.send(member, encoded);
  }

  /**
   * A member's current view. One member may lie; f+1 (crash mode: 1) members of our view describing the
   * same newer view include a correct one, so the client moves to it.
   */
  private onViewReply(replicaId: ReplicaId, reply: ViewReply): void {
    if (reply.view.number <= this.viewInfo.view.number) return;
    // The description's bytes are its identity: two replicas vouch for the same view only if they agree on every member.
    const key = Buffer.from(encodeReconfigurationResult({ accepted: true, view: reply.view })).toString('base64');
    this.viewReplies.set(replicaId, { key, view: reply.view });
    let agreeing = 0;
    for (const vouched of this.viewReplies.values()) if (vouched.key === key) agreeing++;
    if (agreeing < this.viewInfo.quorums.includesCorrect) {
      // Not enough yet: members that answered with an older view may not have applied it yet; ask again later.
      setTimeout(() => this.requestView(), this.options.retransmitMs).unref?.();
      return;
    }
    this.moveToView(reply.view);
  }

  /**
   * Move to a view the caller trusts: the verdict of a reconfiguration (which a quorum of the old view
   * agreed on) names it. Views older than the client's are ignored.
   */
  useView(description: ViewDescription): void {
    if (!this.closed && description.number > this.viewInfo.view.number) this.moveToView(description);
  }

  /**
   * From now on requests go to `description`'s members with its quorums. Requests in flight are not
   * lost: replies from members that stayed still count, and new members get a copy at once.
   */
  private moveToView(description: ViewDescription): void {
    const view: View = { number: description.number, mode: description.mode, f: description.f, members: description.members.map((m) => m.id) };
    this.viewInfo = new ViewInfo(view);
    this.viewReplies.clear();
    this.reportedViews.clear();
    this.surfacedView = Math.max(this.surfacedView, view.number);
    this.transport.setReplicas?.(description.members.map((m) => ({ id: m.id, host: m.host, port: m.port })));
    const members = new Set(view.members);
    for (const entry of [...this.orderedInFlight.values(), ...this.unordered.values()]) {
      entry.tally = entry.tally.restrictedTo(members);
      if (!entry.sent || entry.finished) continue;
      // The replies already in may be a quorum of the new (smaller) view: then nothing more will come.
      this.settle(entry);
      if (!entry.finished) this.sendCopies(entry);
    }
    const hook = this.viewChangedHook;
    if (hook !== null) callUser(() => hook(description));
  }
}

/** An exception in application code must not leave the client half-updated: rethrow it on its own. */
function callUser(callback: () => void): void {
  try {
    callback();
  } catch (error) {
    queueMicrotask(() => {
      throw error;
    });
  }
}

function resolveOptions(options: BftClientOptions): ResolvedOptions {
  const resolved: ResolvedOptions = {
    retransmitMs: options.timeouts?.retransmitMs ?? clientDefaults.retransmitMs,
    retransmitMsMax: options.timeouts?.retransmitMsMax ?? clientDefaults.retransmitMsMax,
    orderedTimeoutMs: options.timeouts?.orderedTimeoutMs ?? clientDefaults.orderedTimeoutMs,
    unorderedTimeoutMs: options.timeouts?.unorderedTimeoutMs ?? clientDefaults.unorderedTimeoutMs,
    inFlightMax: options.inFlightMax ?? clientDefaults.inFlightMax,
    waitingMax: options.waitingMax ?? clientDefaults.waitingMax,
    firstSeq: options.firstSeq ?? clientDefaults.firstSeq,
    replyDigests: options.replyDigests ?? clientDefaults.replyDigests,
    replyDigestsFromBytes: options.replyDigestsFromBytes ?? clientDefaults.replyDigestsFromBytes,
    fullResultWaitMs: options.timeouts?.fullResultWaitMs ?? clientDefaults.fullResultWaitMs,
  };
  const problem = invalidOptions(options.clientId, resolved);
  if (problem !== null) throw new BftError('BFT_ERR_CONFIG_INVALID', `client options: ${problem}`);
  return resolved;
}

function invalidOptions(clientId: string, o: ResolvedOptions): string | null {
  const within = (value: number, min: number, max: number) => Number.isSafeInteger(value) && value >= min && value <= max;
  if (typeof clientId !== 'string' || clientId.length < 1 || clientId.length > limits.clientIdLengthMax) {
    return `clientId must have 1 to ${limits.clientIdLengthMax} characters`;
  }
  if (!within(o.inFlightMax, 1, limits.clientInFlightMax)) return `inFlightMax must be 1 to ${limits.clientInFlightMax}`;
  if (!within(o.waitingMax, 0, limits.clientWaitingMax)) return `waitingMax must be 0 to ${limits.clientWaitingMax}`;
  if (!within(o.firstSeq, 1, unorderedSeqFirst - 1)) return `firstSeq must be an integer from 1 to ${unorderedSeqFirst - 1}`;
  const timeoutMax = limits.clientTimeoutMsMax;
  if (!within(o.retransmitMsMax, 1, limits.clientRetransmitMsMax)) {
    return `timeouts.retransmitMsMax must be 1 to ${limits.clientRetransmitMsMax} ms`;
  }
  if (!within(o.retransmitMs, 1, o.retransmitMsMax)) return 'timeouts.retransmitMs must be 1 ms to timeouts.retransmitMsMax';
  if (!within(o.orderedTimeoutMs, 1, timeoutMax)) return `timeouts.orderedTimeoutMs must be 1 to ${timeoutMax} ms`;
  if (!within(o.unorderedTimeoutMs, 1, timeoutMax)) return `timeouts.unorderedTimeoutMs must be 1 to ${timeoutMax} ms`;
  if (!within(o.fullResultWaitMs, 1, o.retransmitMsMax)) return 'timeouts.fullResultWaitMs must be 1 ms to timeouts.retransmitMsMax';
  if (typeof o.replyDigests !== 'boolean') return 'replyDigests must be true or false';
  if (!within(o.replyDigestsFromBytes, 0, limits.resultBytesMax)) return `replyDigestsFromBytes must be 0 to ${limits.resultBytesMax}`;
  return null;
}
