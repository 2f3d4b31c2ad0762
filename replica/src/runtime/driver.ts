// The driver around the pure core (DESIGN §1): frames in → decode and validate → verify signatures in
// the pool → step the core → persist → send → execute → reply. Each stage is bounded; over its bound
// the driver sheds load (BUSY to clients, counted drops for replicas, which retransmit) instead of
// queueing without end.

import { limits } from '../constants.ts';
import type { ReplicaCore } from '../core/replica.ts';
import type { View } from '../core/view.ts';
import { decodeMessage, encodeMessage } from '../protocol/codec.ts';
import {
  BusyReason,
  type BusyReasonCode,
  type ClientRequest,
  type Message,
  MessageType,
  type ReplicaMessage,
} from '../protocol/messages.ts';
import { clientIdentityOf } from '../protocol/client-id.ts';
import type { DropReasonCode } from '../protocol/reasons.ts';
import type { Executor } from '../service/executor.ts';
import type { Service } from '../service/service.ts';
import type { Storage } from './storage.ts';

export type PeerIdentity = { readonly kind: 'replica'; readonly id: number } | { readonly kind: 'client'; readonly id: string };

/** What the driver needs from the transport. */
export interface ReplicaNetwork {
  sendToReplica(id: number, payload: Uint8Array): void;
  sendToClient(clientId: string, payload: Uint8Array): void;
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
  readonly view: View;
  readonly core: ReplicaCore;
  readonly network: ReplicaNetwork;
  readonly storage: Storage;
  readonly executor: Executor;
  readonly service: Service;
  readonly preparer?: SignaturePreparer;
  readonly tickMs: number;
  readonly observer?: DriverObserver;
  /** Messages whose signatures are being verified at once; beyond, input is shed. */
  readonly verifyingMax?: number;
  /**
   * Called once when the replica cannot go on safely (its storage failed): the driver has stopped, and
   * nothing of the Ready whose records could not be made durable was sent.
   */
  readonly onFatal?: (error: unknown) => void;
}

export interface DriverStatus {
  readonly verifying: number;
  readonly flushing: boolean;
  readonly droppedByReason: Readonly<Record<string, number>>;
  readonly executedRequests: number;
}

export class ReplicaDriver {
  private readonly options: DriverOptions;
  private readonly core: ReplicaCore;
  private readonly others: readonly number[];
  private readonly verifyingMax: number;
  private verifying = 0;
  private flushing = false;
  private flushAgain = false;
  private tickTimer: NodeJS.Timeout | null = null;
  private stopped = false;
  private lastRegency = 0;
  private readonly dropped: Record<string, number> = {};

  constructor(options: DriverOptions) {
    this.options = options;
    this.core = options.core;
    this.others = options.view.members.filter((m) => m !== options.me);
    this.verifyingMax = options.verifyingMax ?? limits.verifyingMessagesMax;
    this.lastRegency = this.core.currentRegency;
  }

  start(): void {
    this.tickTimer = setInterval(() => {
      this.core.tick();
      this.flush();
    }, this.options.tickMs);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.tickTimer !== null) clearInterval(this.tickTimer);
    this.tickTimer = null;
    // Let a flush in progress finish its persist → send → execute sequence.
    while (this.flushing) await new Promise((resolve) => setImmediate(resolve));
  }

  status(): DriverStatus {
    return {
      verifying: this.verifying,
      flushing: this.flushing,
      droppedByReason: { ...this.dropped },
      executedRequests: this.options.executor.executed,
    };
  }

  private drop(reason: DropReasonCode | 'overloaded' | 'wrong_sender_kind'): void {
    this.dropped[reason] = (this.dropped[reason] ?? 0) + 1;
    this.options.observer?.dropped?.(reason);
  }

  /** A frame from the transport; `from` was authenticated by TLS. */
  receive(from: PeerIdentity, payload: Uint8Array): void {
    if (this.stopped) return;
    const decoded = decodeMessage(payload);
    if (!decoded.ok) return this.drop(decoded.reason);
    const message = decoded.message;
    const fromClient = from.kind === 'client';
    if (fromClient !== (message.type === MessageType.REQUEST)) return this.drop('wrong_sender_kind');
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

  /** Read-only requests run against the current state without consensus (DESIGN §3). */
  private executeUnordered(request: ClientRequest): void {
    const result = this.options.service.executeUnordered(request.operation);
    this.options.observer?.executed?.('unordered', 1);
    this.sendReply(request.clientId, request.seq, result);
  }

  private sendReply(clientId: string, seq: number, result: Uint8Array): void {
    const reply: Message = { type: MessageType.REPLY, view: this.options.view.number, clientId, seq, result };
    this.options.network.sendToClient(clientIdentityOf(clientId), encodeMessage(reply));
  }

  private sendBusy(request: ClientRequest, reason: BusyReasonCode): void {
    this.options.observer?.busy?.(reason);
    const busy: Message = { type: MessageType.BUSY, clientId: request.clientId, seq: request.seq, reason };
    this.options.network.sendToClient(clientIdentityOf(request.clientId), encodeMessage(busy));
  }

  /** Drain the core's Ready in order, one at a time: persist, then send, then execute and reply. */
  private flush(): void {
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
          for (const out of ready.messages) {
            const payload = encodeMessage(out.message);
            if (out.to === 'others') for (const id of this.others) this.options.network.sendToReplica(id, payload);
            else this.options.network.sendToReplica(out.to, payload);
          }
          for (const delivery of ready.deliveries) {
            this.options.observer?.decided?.(delivery.decision.cid, delivery.requests.length);
            const replies = this.options.executor.execute(delivery);
            this.options.observer?.executed?.('ordered', replies.length);
            for (const reply of replies) this.sendReply(reply.clientId, reply.seq, reply.result);
          }
          for (const notice of ready.notices) {
            if (notice.kind === 'cached-reply') {
              const result = this.options.executor.cachedReply(notice.clientId, notice.seq);
              if (result !== undefined) this.sendReply(notice.clientId, notice.seq, result);
            } else {
              this.options.observer?.busy?.(notice.reason);
              const busy: Message = { type: MessageType.BUSY, clientId: notice.clientId, seq: notice.seq, reason: notice.reason };
              this.options.network.sendToClient(clientIdentityOf(notice.clientId), encodeMessage(busy));
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
      this.stopped = true;
      if (this.tickTimer !== null) clearInterval(this.tickTimer);
      this.tickTimer = null;
      if (this.options.onFatal) this.options.onFatal(error);
      else throw error;
    } finally {
      this.flushing = false;
    }
  }
}
