// The driver around the pure core (DESIGN §1): frames in → decode and validate → verify signatures in
// the pool → step the core → persist → send → execute → reply. Each stage is bounded; over its bound
// the driver sheds load (BUSY to clients, counted drops for replicas, which retransmit) instead of
// queueing without end. Execution runs in the service host (a worker thread in the process): the flush
// loop hands it decided batches and moves on, and sends each batch's replies when the batch completes;
// it waits for the host only when the host's queue is at its bound.

import { hash } from 'node:crypto';
import { limits } from '../constants.ts';
import type { Delivery } from '../core/ready.ts';
import type { ReplicaCore, ViewEra } from '../core/replica.ts';
import type { Membership } from '../core/reconfiguration.ts';
import { requestKey } from '../core/requests.ts';
import { decodeMessage, encodeMessage } from '../protocol/codec.ts';
import {
  BusyReason,
  type BusyReasonCode,
  type ClientRequest,
  type Message,
  MessageType,
  type ReplicaMessage,
  type RequestMessage,
  type StateTransferMessage,
  resultDigestBytes,
  isClientMessage,
  isStateTransferMessage,
} from '../protocol/messages.ts';
import { clientIdentityOf, requestBelongsTo } from '../protocol/client-id.ts';
import { describeView } from '../core/reconfiguration.ts';
import type { DropReasonCode } from '../protocol/reasons.ts';
import { BftError } from '../errors.ts';
import type { EncodedReply, ServiceHost } from '../service/service-host.ts';
import type { Storage } from './storage.ts';

export type PeerIdentity = { readonly kind: 'replica'; readonly id: number } | { readonly kind: 'client'; readonly id: string };

/** What the driver needs from the transport. */
export interface ReplicaNetwork {
  sendToReplica(id: number, payload: Uint8Array): void;
  /** To client `identity`, on `connection` (as receive() was given it) while that is open, else on its latest. */
  sendToClient(identity: string, payload: Uint8Array, connection?: number): void;
}

/**
 * Verifies a message's signatures ahead of the core, off the main thread (ProcessCrypto in the process).
 * Returns undefined when there is nothing worth waiting for: the message then goes straight on.
 */
export interface SignaturePreparer {
  prepare(from: PeerIdentity, message: Message): Promise<void> | undefined;
}

/** Hooks for metrics and logs; every one optional. */
export interface DriverObserver {
  dropped?(reason: string): void;
  decided?(cid: number, requests: number): void;
  executed?(kind: 'ordered' | 'unordered', count: number): void;
  busy?(reason: BusyReasonCode): void;
  leaderChanged?(regency: number): void;
}

export interface DriverOptions {
  readonly me: number;
  readonly core: ReplicaCore;
  readonly network: ReplicaNetwork;
  readonly storage: Storage;
  /** The execute stage: the service and its reply cache. */
  readonly host: ServiceHost;
  readonly preparer?: SignaturePreparer;
  readonly tickMs: number;
  /** How long a leader may hold a proposal back to fill it (CoreConfig.batchFillPercent). */
  readonly batchFillWaitMs: number;
  readonly observer?: DriverObserver;
  /** Messages whose signatures are being verified at once; beyond, input is shed. */
  readonly verifyingMax?: number;
  /**
   * Called once when the replica cannot go on safely: its storage failed (the driver has stopped, and
   * nothing of the Ready whose records could not be made durable was sent), or the service failed while
   * executing a decided batch (the state is no longer trustworthy).
   */
  readonly onFatal?: (error: unknown) => void;
  /** Serves and fetches checkpoints: replica messages of state transfer go here instead of the core. */
  readonly stateTransfer?: { receive(from: number, message: StateTransferMessage): void };
  /** Takes the checkpoints the core schedules; called right after the instance's batch went to the host. */
  readonly checkpointer?: { take(cid: number, views: readonly ViewEra[]): Promise<unknown> };
  /**
   * The core needs a checkpoint of instance minCid or later (Ready.stateTransfer). The callee fetches and
   * installs it, then calls core.installCheckpoint() (or core.stateTransferFailed()) and wake().
   */
  readonly onStateTransferNeeded?: (minCid: number) => void;
  /**
   * A decided reconfiguration changed the membership: called before any message of the new view leaves,
   * so that links to new members exist (the transport, state transfer and status follow it here).
   */
  readonly onMembership?: (membership: Membership) => void;
}

export interface DriverStatus {
  readonly verifying: number;
  readonly flushing: boolean;
  readonly droppedByReason: Readonly<Record<string, number>>;
  readonly executedRequests: number;
  /** Decided batches handed to the host whose replies have not been sent yet. */
  readonly executingBatches: number;
}

export class ReplicaDriver {
  private readonly options: DriverOptions;
  private readonly core: ReplicaCore;
  /** The other members of the view numbered othersOfView. */
  private others: readonly number[] = [];
  private othersOfView = -1;
  private readonly verifyingMax: number;
  private verifying = 0;
  private flushing = false;
  private flushAgain = false;
  private tickTimer: NodeJS.Timeout | null = null;
  private batchFillTimer: NodeJS.Timeout | null = null;
  private stopped = false;
  private failed = false;
  private lastRegency = 0;
  private readonly dropped: Record<string, number> = {};
  /** Batches handed to the host, oldest first; their replies go out as each completes. */
  private readonly executing: Promise<void>[] = [];
  /**
   * The connection each client session last sent a request on, least recently used first: its replies
   * go there, so that processes sharing one client certificate each get their own.
   */
  private readonly sessionConnections = new Map<string, number>();
  /**
   * Ordered requests whose client asked this replica for a REPLY_DIGEST (`clientId NUL seq`), oldest first.
   * Forgetting one (the bound, or a copy without the flag) only means a full REPLY: always safe.
   */
  private readonly digestReplyRequests = new Set<string>();

  constructor(options: DriverOptions) {
    this.options = options;
    this.core = options.core;
    this.verifyingMax = options.verifyingMax ?? limits.verifyingMessagesMax;
    this.lastRegency = this.core.currentRegency;
  }

  start(): void {
    this.tickTimer = setInterval(() => {
      this.core.tick();
      this.flush();
    }, this.options.tickMs);
  }

  private clearTimers(): void {
    if (this.tickTimer !== null) clearInterval(this.tickTimer);
    this.tickTimer = null;
    if (this.batchFillTimer !== null) clearTimeout(this.batchFillTimer);
    this.batchFillTimer = null;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.clearTimers();
    // Let a flush in progress finish its persist → send → execute sequence, and decided batches execute.
    while (this.flushing) await new Promise((resolve) => setImmediate(resolve));
    await Promise.allSettled([...this.executing]);
  }

  status(): DriverStatus {
    return {
      verifying: this.verifying,
      flushing: this.flushing,
      droppedByReason: { ...this.dropped },
      executedRequests: this.options.host.stats().executedRequests,
      executingBatches: this.executing.length,
    };
  }

  private drop(reason: DropReasonCode | 'overloaded' | 'wrong_sender_kind'): void {
    this.dropped[reason] = (this.dropped[reason] ?? 0) + 1;
    this.options.observer?.dropped?.(reason);
  }

  /** A frame from the transport; `from` was authenticated by TLS; `connection` names a client's connection. */
  receive(from: PeerIdentity, payload: Uint8Array, connection?: number): void {
    if (this.stopped) return;
    const decoded = decodeMessage(payload);
    if (!decoded.ok) return this.drop(decoded.reason);
    const message = decoded.message;
    if (from.kind === 'client') {
      if (message.type === MessageType.VIEW_REQUEST) return this.answerViewRequest(from.id, message.clientId, connection);
      if (message.type !== MessageType.REQUEST) return this.drop('wrong_sender_kind');
    } else if (isClientMessage(message)) {
      return this.drop('wrong_sender_kind');
    }
    if (connection !== undefined && message.type === MessageType.REQUEST && clientIdentityOf(message.request.clientId) === from.id) {
      this.routeSession(message.request.clientId, connection);
    }
    // Only the client itself chooses how its replies come: another client must not turn them into digests.
    if (from.kind === 'client' && message.type === MessageType.REQUEST && message.request.ordered && requestBelongsTo(message.request.clientId, from.id)) {
      this.noteReplyForm(message);
    }
    if (from.kind === 'replica' && this.options.stateTransfer && isStateTransferMessage(message as ReplicaMessage)) {
      // Its signatures (offers) are the state-transfer module's to check, off the hot path.
      return this.options.stateTransfer.receive(from.id, message as StateTransferMessage);
    }
    if (this.verifying >= this.verifyingMax) {
      if (message.type === MessageType.REQUEST) this.sendBusy(message.request, BusyReason.PENDING_FULL);
      return this.drop('overloaded');
    }
    const preparing = this.options.preparer?.prepare(from, message);
    if (preparing === undefined) return this.apply(from, message);
    this.verifying++;
    preparing.then(
      () => {
        this.verifying--;
        this.apply(from, message);
      },
      () => {
        // prepare() never rejects by contract; if it did, the core still verifies synchronously.
        this.verifying--;
        this.apply(from, message);
      },
    );
  }

  private apply(from: PeerIdentity, message: Message): void {
    if (this.stopped) return;
    if (from.kind === 'client') {
      if (message.type !== MessageType.REQUEST) return;
      if (message.request.ordered) this.core.receiveRequest(from.id, message.request);
      else if (this.core.admitUnordered(from.id, message.request)) this.executeUnordered(message.request);
    } else {
      this.core.step(from.id, message as ReplicaMessage);
    }
    this.flush();
  }

  /**
   * Read-only requests run against the current state without consensus (DESIGN §3), after every batch
   * handed to the host before them. Over the host's read bound the client gets BUSY.
   */
  private executeUnordered(request: ClientRequest): void {
    this.options.host.executeUnordered(request, this.core.view.number).then(
      (reply) => {
        this.options.observer?.executed?.('unordered', 1);
        this.sendReply(reply);
      },
      (error: unknown) => {
        if (error instanceof BftError && error.code === 'BFT_ERR_OVERLOADED') {
          this.drop('overloaded');
          this.sendBusy(request, BusyReason.PENDING_FULL);
        }
        // Anything else means the host failed or closed; its onFatal (or stop) says so.
      },
    );
  }

  /** A client asks for the current view (it saw replies from a newer one): answered at once, no consensus. */
  private answerViewRequest(identity: string, sessionId: string, connection: number | undefined): void {
    if (!requestBelongsTo(sessionId, identity)) return this.drop('wrong_client');
    if (connection !== undefined) this.routeSession(sessionId, connection);
    const reply: Message = { type: MessageType.VIEW_REPLY, clientId: sessionId, view: describeView(this.core.currentMembership) };
    this.sendToSession(sessionId, encodeMessage(reply));
  }

  private cachedReply(clientId: string, seq: number): void {
    this.options.host.cachedReply(clientId, seq, this.core.view.number).then(
      (reply) => {
        if (reply !== undefined) this.sendReply(reply);
      },
      (error: unknown) => {
        // Over the read bound the client re-sends later; a failed host is reported by its onFatal.
        if (error instanceof BftError && error.code === 'BFT_ERR_OVERLOADED') this.drop('overloaded');
      },
    );
  }

  private sendReply(reply: EncodedReply): void {
    // After a fatal failure nothing more leaves; a clean stop still answers the batches it drains.
    if (this.failed) return;
    this.sendToSession(reply.clientId, reply.payload);
  }

  /** Remembers whether the client wants this copy of an ordered request answered by digest. */
  private noteReplyForm(message: RequestMessage): void {
    if (message.replyWithDigest !== true) {
      // A copy without the flag (a retransmission, or the client fetching the full result) wins. Most
      // workloads never ask for digests: no key is built for them.
      if (this.digestReplyRequests.size > 0) this.digestReplyRequests.delete(requestKey(message.request.clientId, message.request.seq));
      return;
    }
    this.digestReplyRequests.add(requestKey(message.request.clientId, message.request.seq));
    if (this.digestReplyRequests.size > limits.digestReplyRequestsMax) {
      const oldest = this.digestReplyRequests.values().next();
      if (oldest.done !== true) this.digestReplyRequests.delete(oldest.value);
    }
  }

  /** The reply to a just-executed ordered request: by digest when its client asked this replica for one. */
  private sendExecutedReply(reply: EncodedReply, viewNumber: number): void {
    const executed = reply.executed;
    if (
      executed === undefined ||
      this.failed ||
      this.digestReplyRequests.size === 0 ||
      !this.digestReplyRequests.delete(requestKey(reply.clientId, executed.seq))
    ) {
      return this.sendReply(reply);
    }
    // A result no longer than its digest is cheaper sent whole, and a full reply counts anywhere.
    if (executed.result.length <= resultDigestBytes) return this.sendReply(reply);
    const digest: Message = {
      type: MessageType.REPLY_DIGEST,
      view: viewNumber,
      clientId: reply.clientId,
      seq: executed.seq,
      resultDigest: hash('sha256', executed.result, 'buffer'),
    };
    this.sendToSession(reply.clientId, encodeMessage(digest));
  }

  private sendBusy(request: ClientRequest, reason: BusyReasonCode): void {
    this.options.observer?.busy?.(reason);
    const busy: Message = { type: MessageType.BUSY, clientId: request.clientId, seq: request.seq, reason };
    this.sendToSession(request.clientId, encodeMessage(busy));
  }

  private sendToSession(sessionId: string, payload: Uint8Array): void {
    this.options.network.sendToClient(clientIdentityOf(sessionId), payload, this.sessionConnections.get(sessionId));
  }

  /** Remembers where `sessionId` is answered; the table is bounded, forgetting the least recently heard session. */
  private routeSession(sessionId: string, connection: number): void {
    // Re-inserted so that the Map's insertion order stays least recently heard first.
    this.sessionConnections.delete(sessionId);
    this.sessionConnections.set(sessionId, connection);
    if (this.sessionConnections.size > limits.sessionRoutesMax) {
      const oldest = this.sessionConnections.keys().next();
      if (oldest.done !== true) this.sessionConnections.delete(oldest.value);
    }
  }

  /** Something outside the driver changed the core (a checkpoint was installed): act on it now. */
  wake(): void {
    if (!this.stopped) this.flush();
  }

  /** The core holds a proposal back to fill it: it gets batchFillWaitMs for that, then proposes what it has. */
  private armBatchFill(): void {
    if (this.batchFillTimer !== null || this.stopped || !this.core.batchFillWaiting()) return;
    this.batchFillTimer = setTimeout(() => {
      this.batchFillTimer = null;
      if (this.stopped) return;
      this.core.endBatchFill();
      this.flush();
    }, this.options.batchFillWaitMs);
  }

  /** Drain the core's Ready in order, one at a time: persist, then send, then execute and reply. */
  private flush(): void {
    this.armBatchFill();
    if (this.flushing) {
      this.flushAgain = true;
      return;
    }
    if (!this.core.hasReady()) return;
    this.flushing = true;
    void this.flushLoop();
  }

  private async flushLoop(): Promise<void> {
    try {
      do {
        this.flushAgain = false;
        while (this.core.hasReady()) {
          const ready = this.core.ready();
          this.core.advance();
          if (ready.persist.length > 0) {
            const durable = this.options.storage.append(ready.persist);
            if (durable !== undefined) await durable;
          }
          for (const delivery of ready.deliveries) if (delivery.membership !== undefined) this.options.onMembership?.(delivery.membership);
          const others = this.otherMembers();
          for (const out of ready.messages) {
            const payload = encodeMessage(out.message);
            if (out.to === 'others') for (const id of others) this.options.network.sendToReplica(id, payload);
            else this.options.network.sendToReplica(out.to, payload);
          }
          for (const delivery of ready.deliveries) {
            this.options.observer?.decided?.(delivery.decision.cid, delivery.requests.length);
            // Backpressure: at the host's bound, wait for the oldest batch before handing over another.
            while (this.executing.length >= limits.executeQueueBatchesMax) await this.executing[0];
            if (this.failed) return;
            this.startExecution(delivery);
            // Asked for now, before any later batch reaches the host: the snapshot is of this instance.
            if (delivery.checkpoint === true) void this.options.checkpointer?.take(delivery.decision.cid, delivery.views ?? []);
          }
          if (ready.stateTransfer !== null) this.options.onStateTransferNeeded?.(ready.stateTransfer.minCid);
          for (const notice of ready.notices) {
            if (notice.kind === 'cached-reply') {
              this.cachedReply(notice.clientId, notice.seq);
            } else {
              this.options.observer?.busy?.(notice.reason);
              const busy: Message = { type: MessageType.BUSY, clientId: notice.clientId, seq: notice.seq, reason: notice.reason };
              this.sendToSession(notice.clientId, encodeMessage(busy));
            }
          }
        }
        const regency = this.core.currentRegency;
        if (regency !== this.lastRegency) {
          this.lastRegency = regency;
          this.options.observer?.leaderChanged?.(regency);
        }
      } while (this.flushAgain);
    } catch (error) {
      // A vote that cannot be made durable must not be sent; the replica stops rather than guess.
      this.fatal(error);
    } finally {
      this.flushing = false;
    }
  }

  /** The other members of the core's current view (the messages of a Ready are all of that view). */
  private otherMembers(): readonly number[] {
    const view = this.core.view;
    if (view.number !== this.othersOfView) {
      this.others = view.members.filter((m) => m !== this.options.me);
      this.othersOfView = view.number;
    }
    return this.others;
  }

  /** Hands a decided batch to the host; its replies are sent when it completes, batches in order. */
  private startExecution(delivery: Delivery): void {
    const viewNumber = this.core.view.number;
    const execution = this.options.host.execute(delivery, viewNumber).then(
      (replies) => {
        this.options.observer?.executed?.('ordered', replies.length);
        for (const reply of replies) this.sendExecutedReply(reply, viewNumber);
      },
      (error: unknown) => this.fatal(error),
    );
    this.executing.push(execution);
    void execution.finally(() => {
      const index = this.executing.indexOf(execution);
      if (index >= 0) this.executing.splice(index, 1);
    });
  }

  private fatal(error: unknown): void {
    if (this.failed) return;
    this.failed = true;
    this.stopped = true;
    this.clearTimers();
    if (this.options.onFatal) this.options.onFatal(error);
    else queueMicrotask(() => {
      throw error;
    });
  }
}
