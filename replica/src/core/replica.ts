// The consensus core: Mod-SMaRt over VP-Consensus as a pure state machine (DESIGN §2).
// Callers feed it messages (step), client requests (receiveRequest) and ticks (tick), and read back a
// Ready: what to persist, then what to send, then what to execute. It reads no clock, no socket, no
// file and no random source, so the simulator and the replica process run exactly this code.
//
// One instance (cid) is open at a time. The value of an instance is an encoded batch; its digest is the
// hash of those bytes. Epochs of an instance are regencies: a value proposed, written or accepted in
// regency r has timestamp r in the sense of Cachin's epoch consensus (see leader-change.ts).

import { limits } from '../constants.ts';
import { invariant } from '../errors.ts';
import {
  acceptSigningPayload,
  collectSigningPayload,
  decodeBatch,
  encodeBatch,
  requestSigningPayload,
} from '../protocol/codec.ts';
import {
  type Accept,
  type Bytes,
  BusyReason,
  type BusyReasonCode,
  type ClientRequest,
  type Collect,
  type Decision,
  type DecisionMessage,
  type DecisionRequest,
  type DecisionsPruned,
  type Forward,
  type Heartbeat,
  MessageType,
  type Propose,
  type ReplicaMessage,
  RequestKind,
  type SignedCollect,
  type Stop,
  type StopData,
  type Sync,
  type Vote,
  type Write,
} from '../protocol/messages.ts';
import { requestBelongsTo } from '../protocol/client-id.ts';
import { DropReason, type DropReasonCode } from '../protocol/reasons.ts';
import type { CoreConfig } from './config.ts';
import { type CoreCrypto, digestKey } from './crypto.ts';
import { type InstanceState, chooseValue, emptyInstanceState, syncValueAllowed } from './leader-change.ts';
import { type Quorums, quorumsFor } from './quorum.ts';
import { type Membership, type ReconfigurationVerdict, applyReconfiguration, describeView, genesisMembership } from './reconfiguration.ts';
import { decodeSignedReconfiguration, encodeReconfigurationResult, reconfigurationSigningPayload } from '../protocol/reconfiguration.ts';
import type { Member } from '../protocol/reconfiguration.ts';
import type { ClientNotice, Delivery, Outbound, PersistRecord, Ready, StateTransferNeed } from './ready.ts';
import { ClientTable, type PendingEntry, PendingRequests, fitting, requestBytes, sameRequest } from './requests.ts';
import { type ReplicaId, type View, ViewInfo } from './view.ts';

const emptyBytes: Bytes = new Uint8Array(0);


interface InstanceValue {
  readonly bytes: Bytes;
  readonly digest: Bytes;
  readonly key: string;
  readonly requests: readonly ClientRequest[];
}

interface AcceptVote {
  readonly key: string;
  readonly signature: Bytes;
}

/** Everything this replica knows about its open instance. */
class Instance {
  readonly cid: number;
  /** Values seen for this instance, by digest key (bounded by limits.writeSetMax * 2). */
  readonly values = new Map<string, InstanceValue>();
  /** regency → digest key of the value its leader proposed (the first one only: a second is equivocation). */
  readonly proposals = new Map<number, string>();
  readonly writes = new Map<number, Map<ReplicaId, string>>();
  readonly accepts = new Map<number, Map<ReplicaId, AcceptVote>>();
  /** digest key → the highest regency in which this replica wrote it. */
  readonly writeSet = new Map<string, number>();
  acceptedRegency = -1;
  acceptedKey: string | null = null;
  readonly sentAccept = new Set<number>();

  constructor(cid: number) {
    this.cid = cid;
  }

  state(): InstanceState {
    return { acceptedRegency: this.acceptedRegency, acceptedDigest: this.acceptedKey, writeSet: this.writeSet };
  }
}

interface ReceivedStopData {
  readonly signed: SignedCollect;
  readonly lastDecision: Decision | null;
}

interface BufferedMessage {
  readonly from: ReplicaId;
  readonly message: ReplicaMessage;
}

/** The start of a synchronized regency: instance `cid` continues there, bound to `batch` unless it is empty. */
interface RegencyStart {
  readonly regency: number;
  readonly cid: number;
  readonly batch: Bytes;
}

export interface CoreStatus {
  readonly me: ReplicaId;
  readonly viewNumber: number;
  /** The current view with its members' addresses and keys. */
  readonly membership: Membership;
  /** The last instance this replica ordered as a member, once a reconfiguration removed it; else null. */
  readonly removedAtCid: number | null;
  readonly regency: number;
  readonly leader: ReplicaId;
  readonly synchronized: boolean;
  readonly lastDecidedCid: number;
  /** Instances this replica is behind the (f+1)-th most advanced peer it heard of: 0 or 1 is normal. */
  readonly lagInstances: number;
  readonly pendingRequests: number;
  readonly bufferedMessages: number;
  readonly leaderChanges: number;
  /** The instance of the latest checkpoint in the schedule (taken or due), or -1. */
  readonly checkpointCid: number;
  /** The oldest decision kept for lagging peers, or -1. */
  readonly oldestRetainedCid: number;
  /** Waiting for a checkpoint from state transfer (installCheckpoint / stateTransferFailed). */
  readonly awaitingStateTransfer: boolean;
  /** After a lost disk: votes resume after this instance (-1: not known yet); null when voting normally. */
  readonly amnesiaFloorCid: number | null;
  readonly dropped: Readonly<Partial<Record<DropReasonCode, number>>>;
}

/** A membership and the first instance it orders. */
export interface ViewEra {
  readonly membership: Membership;
  readonly firstCid: number;
}

/** The replicated state a checkpoint gives the core: where it stands, and each client's last decided request. */
export interface CheckpointBase {
  readonly cid: number;
  readonly clientSeqs: Iterable<readonly [clientId: string, lastSeq: number]>;
  /** The recent memberships, oldest first, the one that orders cid + 1 last; absent: the genesis view's. */
  readonly views?: readonly ViewEra[];
}

export interface CoreOptions {
  /** The checkpoint the replica's state was restored from; the restored records continue after it. */
  readonly base?: CheckpointBase;
  /** Records persisted by an earlier incarnation, in the order they were written. */
  readonly restore?: readonly PersistRecord[];
  /**
   * The replica lost its disk (started empty in a cluster that may have run before): it may have voted
   * in instances it no longer remembers, so it votes in none of them (see amnesiaFloor).
   */
  readonly amnesic?: boolean;
  /** Only for tests that prove the checkers catch a broken protocol. */
  readonly quorumsOverride?: Quorums;
}

export class ReplicaCore {
  readonly config: CoreConfig;
  private readonly crypto: CoreCrypto;
  /** The membership that orders the open instance: changed by decided reconfigurations (DESIGN §6). */
  private membership: Membership;
  private viewInfo: ViewInfo;
  private quorums: Quorums;
  /** Recent memberships, oldest first, the current one last: to check and serve decisions of older views. */
  private views: ViewEra[];
  /** Once a reconfiguration removed this replica: the last instance it ordered. It votes no more. */
  private removedAtCid: number | null = null;
  /** Replaying the log in the constructor: nothing is sent for what is replayed. */
  private restoring = false;
  private readonly me: ReplicaId;

  private nowTick = 0;
  private regency = 0;
  private syncedRegency = 0;
  private regencyStart: RegencyStart | null = null;
  private lastDecidedCid = -1;
  private instance = new Instance(0);
  private readonly pending = new PendingRequests();
  private readonly clients = new ClientTable();
  /** Recent decisions, insertion-ordered by cid, to serve lagging replicas. */
  private readonly retained = new Map<number, Decision>();
  private retainedBytes = 0;
  private readonly futureDecisions = new Map<number, Decision>();
  private future: BufferedMessage[] = [];
  private draining = false;
  private drainAgain = false;

  // Leader change.
  /** Latest STOP target of each member (only targets above the installed regency matter). */
  private readonly stopTargets = new Map<ReplicaId, number>();
  private myStopTarget = 0;
  private changeStartedTick = 0;
  private failedRegencies = 0;
  private readonly stopData = new Map<ReplicaId, ReceivedStopData>();
  private readonly stopDataValues = new Map<string, Bytes>();
  private myStopData: StopData | null = null;
  private syncSent: Sync | null = null;
  private leaderChanges = 0;

  // Timers.
  private lastLeaderContactTick = 0;
  /** Batch filling (CoreConfig.batchFillPercent): when the last decision came, and the clients of the last two batches. */
  private lastDecisionTick = -1;
  private lastBatchClients: ReadonlySet<string> = new Set();
  private recentClients = 0;
  /** True while the leader holds its proposal back to fill it; endBatchFill() or the next tick but one ends that. */
  private fillWaiting = false;
  private fillEndedForCid = -1;
  private lastHeartbeatTick = 0;
  private lastProgressTick = 0;
  private lastRetransmitTick = 0;
  private lastCatchUpTick = 0;
  private catchUpRotation = 0;
  private readonly peerCid = new Map<ReplicaId, number>();
  /** Highest synchronized regency each peer reported in its heartbeats. */
  private readonly peerRegency = new Map<ReplicaId, number>();
  /** Per peer: the tick of its last catch-up answers and how many it got in that tick. */
  private readonly catchUpServed = new Map<ReplicaId, { tick: number; answers: number }>();
  /** The open instance at which the last catch-up answer is used up and the next one is due. */
  private catchUpExhaustedAt = -1;

  // Checkpoints and state transfer.
  /** The last instance of the checkpoint schedule (taken, due, or installed), or -1. */
  private checkpointCid = -1;
  /** Decided bytes since that checkpoint, accounted as for the retained window. */
  private bytesSinceCheckpoint = 0;
  /** Checkpoint instances met while restoring, so that the process can take one it missed before a crash. */
  private readonly restoredCheckpoints: number[] = [];
  /** While restoring: the memberships at each checkpoint instance, and the replicas' own answers by instance. */
  private readonly restoredViews = new Map<number, readonly ViewEra[]>();
  private readonly restoredAnswers = new Map<number, ReadonlyMap<number, Bytes>>();
  private readonly restoredMemberships = new Map<number, Membership>();
  /** Peers that said they no longer keep the decisions we asked for, for our open instance. */
  private readonly prunedBy = new Map<ReplicaId, number>();
  private awaitingStateTransfer = false;
  /** After a failed transfer, the lag rule waits until the replica has caught up this far by decisions. */
  private lagRuleResumesAtCid = 0;
  private stateTransferOut: StateTransferNeed | null = null;
  /**
   * For a replica that lost its disk: the last instance it might have voted in before, or Infinity until
   * it knows; null once its open instance is past it. It proposes, writes, accepts, and sends collects
   * only in later instances, so it can never contradict a vote it forgot: such a vote was in an instance
   * whose predecessor f+1 correct replicas accepted, so their decided instance is at most one behind it,
   * and hearing n - f peers includes one of them (claims are their last decided instance, plus 2).
   */
  private amnesiaFloor: number | null = null;

  // Output, drained by ready()/advance().
  private persistOut: PersistRecord[] = [];
  private messagesOut: Outbound[] = [];
  private deliveriesOut: Delivery[] = [];
  private noticesOut: ClientNotice[] = [];
  private readonly dropped: Partial<Record<DropReasonCode, number>> = {};

  constructor(config: CoreConfig, crypto: CoreCrypto, options: CoreOptions = {}) {
    this.config = config;
    this.crypto = crypto;
    this.membership = genesisMembership(config.view, config.members);
    this.viewInfo = new ViewInfo(config.view, options.quorumsOverride);
    this.quorums = this.viewInfo.quorums;
    this.views = [{ membership: this.membership, firstCid: 0 }];
    this.me = config.me;
    invariant(this.viewInfo.isMember(this.me), 'a replica core starts as a member of its genesis view');
    this.crypto.useMembers?.(this.knownMembers());
    if (options.base) this.applyBase(options.base);
    if (options.restore) this.restore(options.restore);
    if (options.amnesic === true) this.amnesiaFloor = Infinity;
    // Started empty in a view that a reconfiguration made (a replica that joins, or lost its disk after a
    // change): it does not know which instances older views ordered, so it cannot check their
    // certificates. It starts from a checkpoint (every reconfiguration has one), which says.
    if (options.base === undefined && this.lastDecidedCid < 0 && config.view.number > 0) {
      this.views = [{ membership: this.membership, firstCid: Number.MAX_SAFE_INTEGER }];
      this.needStateTransfer();
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Public surface.

  get leader(): ReplicaId {
    return this.viewInfo.leaderOf(this.regency);
  }

  get currentRegency(): number {
    return this.regency;
  }

  /** The view that orders the open instance. */
  get view(): View {
    return this.membership.view;
  }

  /** The view that orders the open instance, with its members' addresses and keys. */
  get currentMembership(): Membership {
    return this.membership;
  }

  status(): CoreStatus {
    return {
      me: this.me,
      viewNumber: this.view.number,
      membership: this.membership,
      removedAtCid: this.removedAtCid,
      regency: this.regency,
      leader: this.leader,
      synchronized: this.syncedRegency === this.regency,
      lastDecidedCid: this.lastDecidedCid,
      lagInstances: this.lagInstances(),
      pendingRequests: this.pending.size,
      bufferedMessages: this.future.length,
      leaderChanges: this.leaderChanges,
      checkpointCid: this.checkpointCid,
      oldestRetainedCid: this.oldestRetainedCid(),
      awaitingStateTransfer: this.awaitingStateTransfer,
      amnesiaFloorCid: this.amnesiaFloor === null ? null : Number.isFinite(this.amnesiaFloor) ? this.amnesiaFloor : -1,
      dropped: { ...this.dropped },
    };
  }

  /** A message from another replica, whose identity the transport authenticated. */
  step(from: ReplicaId, message: ReplicaMessage): void {
    this.dispatch(from, message);
  }

  /**
   * An ordered request from a client, whose identity the transport authenticated. A client may use its
   * own id or `<id>/<session>`: each client instance picks a fresh session, so a restarted client never
   * collides with the sequence numbers of its previous life, and nobody can speak for another client.
   */
  receiveRequest(clientId: string, request: ClientRequest): void {
    if (!requestBelongsTo(request.clientId, clientId)) return this.drop(DropReason.WRONG_CLIENT);
    if (!request.ordered) return this.drop(DropReason.BAD_REQUEST);
    // The client's authenticated channel already proves who sent this request. Its signature is for the
    // replicas that learn of it from someone else, so it is checked only before the request is passed on:
    // here by the leader, which proposes it next; by a follower when it forwards it or would blame the
    // leader for it (checkRequestTimers), or becomes leader itself (buildBatch). A follower given the very
    // same request in a PROPOSE then has nothing to verify.
    const checkNow = this.config.requireSignedRequests && this.me === this.leader;
    if (checkNow && !this.requestSignatureValid(request)) return this.drop(DropReason.BAD_SIGNATURE);
    this.admit(request, true, checkNow || !this.config.requireSignedRequests);
  }

  /**
   * Whether this very request (signature included) is waiting here, received from its client or checked:
   * then a batch carrying it needs no signature check for it. For the driver, to skip pre-verifying it.
   */
  knowsRequest(request: ClientRequest): boolean {
    const entry = this.pending.get(request.clientId, request.seq);
    return entry !== undefined && sameRequest(entry.request, request);
  }

  /**
   * May this read-only request run? The same rules as for ordered ones (whose client, signed when the
   * cluster requires it); the driver executes it without consensus. Drops are counted here.
   */
  admitUnordered(clientId: string, request: ClientRequest): boolean {
    // A removed replica's state stops at its last instance: a read from it could be stale.
    if (this.removedAtCid !== null) {
      this.drop(DropReason.NOT_MEMBER);
      return false;
    }
    if (!requestBelongsTo(request.clientId, clientId)) {
      this.drop(DropReason.WRONG_CLIENT);
      return false;
    }
    if (request.ordered) {
      this.drop(DropReason.BAD_REQUEST);
      return false;
    }
    if (!this.requestSignatureValid(request)) {
      this.drop(DropReason.BAD_SIGNATURE);
      return false;
    }
    return true;
  }

  tick(): void {
    this.nowTick++;
    // Removed by a reconfiguration: it orders nothing more, and only answers peers that catch up.
    if (this.removedAtCid !== null) return;
    const changing = this.syncedRegency < this.regency || this.myStopTarget > this.regency;
    if (changing) {
      if (this.nowTick - this.changeStartedTick >= this.regencyTimeoutTicks()) {
        this.failedRegencies++;
        this.sendStop(Math.max(this.myStopTarget, this.regency) + 1);
      }
    } else {
      this.checkRequestTimers();
      this.checkLeaderSilence();
    }
    if (this.fillWaiting && !changing) this.maybePropose();
    this.maybeHeartbeat();
    // A replica that must start from a checkpoint (see the constructor) keeps asking until it has one.
    if (!this.awaitingStateTransfer && this.views[0]?.firstCid === Number.MAX_SAFE_INTEGER) this.needStateTransfer();
    this.maybeFixAmnesiaFloor();
    this.maybeFollowRegency();
    if (this.nowTick - this.lastRetransmitTick >= this.config.retransmitTicks) this.retransmit();
    if (this.nowTick - this.lastCatchUpTick >= this.config.catchUpIntervalTicks) this.maybeCatchUp();
  }

  hasReady(): boolean {
    return (
      this.persistOut.length > 0 ||
      this.messagesOut.length > 0 ||
      this.deliveriesOut.length > 0 ||
      this.noticesOut.length > 0 ||
      this.stateTransferOut !== null
    );
  }

  ready(): Ready {
    return {
      persist: this.persistOut,
      messages: this.messagesOut,
      deliveries: this.deliveriesOut,
      notices: this.noticesOut,
      stateTransfer: this.stateTransferOut,
    };
  }

  /** Checkpoint instances met while restoring from the log, oldest first. */
  get restoredCheckpointCids(): readonly number[] {
    return this.restoredCheckpoints;
  }

  /** The memberships as they stood after restored checkpoint instance `cid` (what its checkpoint keeps). */
  restoredViewsAt(cid: number): readonly ViewEra[] {
    return this.restoredViews.get(cid) ?? [...this.views];
  }

  /**
   * The answers to reconfiguration requests of restored decision `cid` (Delivery.reconfigurationResults
   * for the replay of the log through the service host), or undefined when it carried none.
   */
  restoredReconfigurationResults(cid: number): ReadonlyMap<number, Bytes> | undefined {
    return this.restoredAnswers.get(cid);
  }

  /** The membership restored decision `cid` moved to (Delivery.membership), or undefined. */
  restoredMembershipAfter(cid: number): Membership | undefined {
    return this.restoredMemberships.get(cid);
  }

  /**
   * The state transfer asked for by Ready.stateTransfer installed a checkpoint of `base.cid` into the
   * service: the replica continues after it, catching up on later decisions from its peers.
   */
  installCheckpoint(base: CheckpointBase): void {
    this.awaitingStateTransfer = false;
    this.prunedBy.clear();
    if (base.cid <= this.lastDecidedCid) return;
    this.applyBase(base);
    this.catchUpExhaustedAt = -1;
    this.lastProgressTick = this.nowTick;
    this.openInstance(base.cid + 1);
  }

  /** The state transfer asked for could not finish; the replica asks its peers again later. */
  stateTransferFailed(): void {
    this.awaitingStateTransfer = false;
    this.prunedBy.clear();
    // Peers had no newer checkpoint to give (or could not give it): replay decisions for a while rather
    // than ask again at once and stand still meanwhile. Pruned decisions still trigger a transfer.
    this.lagRuleResumesAtCid = this.instance.cid + 2 * this.config.checkpointPeriodInstances;
    const held = this.futureDecisions.get(this.instance.cid);
    if (held !== undefined) {
      this.futureDecisions.delete(this.instance.cid);
      this.offerDecision(held);
    }
  }

  /** The caller has persisted, sent and executed everything of the last ready(). */
  advance(): void {
    this.persistOut = [];
    this.messagesOut = [];
    this.deliveriesOut = [];
    this.noticesOut = [];
    this.stateTransferOut = null;
  }

  // ---------------------------------------------------------------------------------------------
  // Dispatch: who may say what, and when.

  private drop(reason: DropReasonCode): void {
    this.dropped[reason] = (this.dropped[reason] ?? 0) + 1;
  }

  private dispatch(from: ReplicaId, message: ReplicaMessage): void {
    if (from === this.me) return this.drop(DropReason.NOT_MEMBER);
    if (message.view > this.view.number) {
      // From a replica that already applied a reconfiguration we have yet to decide: kept for when we
      // have. A member's heartbeat is evidence, meanwhile, of how far the cluster got, and its answer
      // that it no longer keeps the decisions we asked for holds whatever view it is in.
      if (message.type === MessageType.HEARTBEAT) {
        if (this.viewInfo.isMember(from)) this.notePeerAt(from, message.lastDecidedCid + 1);
        return;
      }
      if (message.type === MessageType.DECISIONS_PRUNED) {
        if (!this.viewInfo.isMember(from)) return this.drop(DropReason.NOT_MEMBER);
        return this.onDecisionsPruned(from, message);
      }
      return this.buffer(from, message);
    }
    // Catch-up works across views: a replica that has not applied a reconfiguration yet asks in its old
    // view, and a certificate of an older view's instance says so.
    if (message.type === MessageType.DECISION_REQUEST) {
      if (!this.wasMember(from)) return this.drop(DropReason.NOT_MEMBER);
      return this.onDecisionRequest(from, message);
    }
    if (message.type === MessageType.DECISION && message.view < this.view.number) {
      if (!this.wasMember(from)) return this.drop(DropReason.NOT_MEMBER);
      return this.onDecision(from, message);
    }
    if (message.view < this.view.number && this.wasMember(from)) {
      // A replica still in an older view, most likely stuck in it (a leader change that the members who
      // moved on no longer take part in): the decision that ended its view lets it move on too.
      this.helpOlderView(from, message.view);
      return this.drop(DropReason.WRONG_VIEW);
    }
    if (!this.viewInfo.isMember(from)) return this.drop(DropReason.NOT_MEMBER);
    if (message.view !== this.view.number) return this.drop(DropReason.WRONG_VIEW);
    switch (message.type) {
      case MessageType.PROPOSE:
      case MessageType.WRITE:
      case MessageType.ACCEPT:
        return this.onInstanceMessage(from, message);
      case MessageType.FORWARD:
        return this.onForward(message);
      case MessageType.STOP:
        return this.onStop(from, message);
      case MessageType.STOPDATA:
        return this.onStopData(from, message);
      case MessageType.SYNC:
        return this.onSync(from, message);
      case MessageType.HEARTBEAT:
        return this.onHeartbeat(from, message);
      case MessageType.DECISION:
        return this.onDecision(from, message);
      case MessageType.DECISIONS_PRUNED:
        return this.onDecisionsPruned(from, message);
      case MessageType.CHECKPOINT_REQUEST:
      case MessageType.CHECKPOINT_OFFER:
      case MessageType.CHUNK_REQUEST:
      case MessageType.CHUNK:
        // The state-transfer module's, never the core's: the driver routes them there.
        return this.drop(DropReason.MISDIRECTED);
    }
  }

  /** Every member of a recent view with its address and key: ids are never reused, so they do not clash. */
  private knownMembers(): Map<ReplicaId, Member> {
    const known = new Map<ReplicaId, Member>();
    for (const era of this.views) for (const [id, member] of era.membership.members) known.set(id, member);
    return known;
  }

  /** Send `to`, in view `viewNumber`, the decision of that view's last instance, if retained (rate-limited as catch-up is). */
  private helpOlderView(to: ReplicaId, viewNumber: number): void {
    const index = this.views.findIndex((era) => era.membership.view.number === viewNumber);
    const next = this.views[index + 1];
    if (index < 0 || next === undefined) return;
    const decision = this.retained.get(next.firstCid - 1);
    if (decision === undefined) return;
    const served = this.catchUpServed.get(to);
    if (served !== undefined && served.tick === this.nowTick) {
      if (served.answers >= limits.catchUpAnswersPerTickMax) return;
      served.answers++;
    } else {
      this.catchUpServed.set(to, { tick: this.nowTick, answers: 1 });
    }
    this.messagesOut.push({ to, message: { type: MessageType.DECISION, view: viewNumber, decision } });
  }

  /** Was `id` a member of a recent view (this one included)? */
  private wasMember(id: ReplicaId): boolean {
    return this.views.some((era) => era.membership.view.members.includes(id));
  }

  /** The recent membership that ordered instance `cid` (the current one for the open instance and later). */
  private eraOf(cid: number): ViewEra | null {
    for (let i = this.views.length - 1; i >= 0; i--) {
      const era = this.views[i] as ViewEra;
      if (era.firstCid <= cid) return era;
    }
    return null;
  }

  private notePeerAt(peer: ReplicaId, cid: number): void {
    if (cid > (this.peerCid.get(peer) ?? -1)) this.peerCid.set(peer, cid);
  }

  private buffer(from: ReplicaId, message: ReplicaMessage): void {
    if (this.future.length >= limits.futureMessagesMax) return this.drop(DropReason.FUTURE_BUFFER_FULL);
    this.future.push({ from, message });
  }

  /** Re-dispatch buffered messages after the open instance or the regency moved. */
  private drainFuture(): void {
    if (this.draining) {
      this.drainAgain = true;
      return;
    }
    this.draining = true;
    try {
      do {
        this.drainAgain = false;
        const buffered = this.future;
        this.future = [];
        for (const { from, message } of buffered) this.dispatch(from, message);
      } while (this.drainAgain);
    } finally {
      this.draining = false;
    }
  }

  private onInstanceMessage(from: ReplicaId, message: Propose | Write | Accept): void {
    this.notePeerAt(from, message.cid);
    const cid = this.instance.cid;
    if (message.cid < cid) return this.drop(DropReason.STALE_INSTANCE);
    if (message.cid > cid + limits.instancesAheadMax) return this.drop(DropReason.TOO_FAR_AHEAD);
    if (message.regency < this.regency) {
      // A late ACCEPT of an older regency still proves a decision: count it toward a certificate.
      if (message.type === MessageType.ACCEPT && message.cid === cid) return this.onAccept(from, message);
      return this.drop(DropReason.STALE_REGENCY);
    }
    const regencyReady = message.regency === this.regency && this.syncedRegency === this.regency;
    if (message.cid > cid || !regencyReady) return this.buffer(from, message);
    switch (message.type) {
      case MessageType.PROPOSE:
        return this.onPropose(from, message);
      case MessageType.WRITE:
        return this.onWrite(from, message);
      case MessageType.ACCEPT:
        return this.onAccept(from, message);
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Client requests.

  /**
   * For a request learnt from another replica: whether it is known to come from its client, by holding the
   * very same bytes from the client's own channel, or else by its signature (when the cluster requires one).
   */
  private requestOriginProven(request: ClientRequest): boolean {
    return !this.config.requireSignedRequests || this.knowsRequest(request) || this.requestSignatureValid(request);
  }

  private requestSignatureValid(request: ClientRequest): boolean {
    if (!this.config.requireSignedRequests) return true;
    return (
      request.signature !== null &&
      this.crypto.verifyClient(request.clientId, requestSigningPayload(request), request.signature)
    );
  }

  private busy(request: ClientRequest, reason: BusyReasonCode, fromClient: boolean): void {
    if (fromClient) this.noticesOut.push({ kind: 'busy', clientId: request.clientId, seq: request.seq, reason });
  }

  private admit(request: ClientRequest, fromClient: boolean, signatureChecked: boolean): void {
    if (this.removedAtCid !== null) return;
    // A reconfiguration the replicas could not even read would only take a place in a batch.
    if (request.kind === RequestKind.RECONFIGURATION && !decodeSignedReconfiguration(request.operation).ok) return this.drop(DropReason.BAD_REQUEST);
    const last = this.clients.lastDecided(request.clientId);
    if (request.seq <= last) {
      if (fromClient) this.noticesOut.push({ kind: 'cached-reply', clientId: request.clientId, seq: request.seq });
      return;
    }
    if (this.pending.has(request.clientId, request.seq)) return;
    if (
      request.seq > last + this.config.clientInFlightMax ||
      this.pending.countFor(request.clientId) >= this.config.clientInFlightMax
    ) {
      return this.busy(request, BusyReason.CLIENT_IN_FLIGHT_FULL, fromClient);
    }
    if (this.pending.size >= this.config.pendingRequestsMax) return this.busy(request, BusyReason.PENDING_FULL, fromClient);
    if (!this.clients.knows(request.clientId) && this.clients.size >= limits.clientsMax) {
      return this.busy(request, BusyReason.CLIENTS_FULL, fromClient);
    }
    this.pending.add(request, this.nowTick, signatureChecked);
    this.maybePropose();
  }

  private onForward(message: Forward): void {
    for (const request of message.requests) {
      if (!request.ordered) {
        this.drop(DropReason.BAD_REQUEST);
        continue;
      }
      if (!this.requestOriginProven(request)) {
        this.drop(DropReason.BAD_SIGNATURE);
        continue;
      }
      this.admit(request, false, true);
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Batches.

  /** Decode and check a proposed value against the replicated state before this instance; null if invalid. */
  private validValue(bytes: Bytes): InstanceValue | null {
    if (bytes.length === 0 || bytes.length > this.config.batchBytesMax) return null;
    const decoded = decodeBatch(bytes);
    if (!decoded.ok) return null;
    const requests = decoded.batch.requests;
    if (requests.length === 0 || requests.length > this.config.batchRequestsMax) return null;
    const nextSeq = new Map<string, number>();
    let newClients = 0;
    for (const request of requests) {
      if (!request.ordered) return null;
      if (!this.requestOriginProven(request)) return null;
      if (request.kind === RequestKind.RECONFIGURATION && !decodeSignedReconfiguration(request.operation).ok) return null;
      const expected = nextSeq.get(request.clientId) ?? this.clients.lastDecided(request.clientId) + 1;
      if (request.seq !== expected) return null;
      if (!nextSeq.has(request.clientId) && !this.clients.knows(request.clientId)) newClients++;
      nextSeq.set(request.clientId, expected + 1);
    }
    if (this.clients.size + newClients > limits.clientsMax) return null;
    const digest = this.crypto.digest(bytes);
    return { bytes, digest, key: digestKey(digest), requests };
  }

  /** Pending requests that may be ordered next: each client's run of consecutive sequence numbers. */
  private buildBatch(): ClientRequest[] {
    const taken: ClientRequest[] = [];
    const nextSeq = new Map<string, number>();
    let bytes = 16;
    let newClients = 0;
    for (const entry of this.pending.values()) {
      const clientId = entry.request.clientId;
      let seq = nextSeq.get(clientId) ?? this.clients.lastDecided(clientId) + 1;
      if (entry.request.seq !== seq) continue;
      if (!nextSeq.has(clientId) && !this.clients.knows(clientId)) {
        if (this.clients.size + newClients >= limits.clientsMax) continue;
        newClients++;
      }
      for (let next = this.pending.get(clientId, seq); next !== undefined; next = this.pending.get(clientId, seq)) {
        if (taken.length >= this.config.batchRequestsMax || bytes + next.bytes > this.config.batchBytesMax) {
          nextSeq.set(clientId, seq);
          return taken;
        }
        // The followers check what they did not get from the client: a bad signature would cost the regency.
        if (!this.keepIfSignatureGood(next)) break;
        taken.push(next.request);
        bytes += next.bytes;
        seq++;
      }
      nextSeq.set(clientId, seq);
    }
    return taken;
  }

  /**
   * Checks a pending request's signature if not done yet. A bad one is dropped (and counted) from pending;
   * a Map may lose entries while it is iterated, so callers walking pending may call this.
   */
  private keepIfSignatureGood(entry: PendingEntry): boolean {
    if (entry.signatureChecked) return true;
    if (!this.requestSignatureValid(entry.request)) {
      this.drop(DropReason.BAD_SIGNATURE);
      this.pending.remove(entry.request.clientId, entry.request.seq);
      return false;
    }
    entry.signatureChecked = true;
    return true;
  }

  /** Whether the leader waits for a fuller batch (CoreConfig.batchFillPercent); tick() ends the wait. */
  private fillingBatch(): boolean {
    const percent = this.config.batchFillPercent;
    // The tick bound keeps a driver that never calls endBatchFill() live (the simulator's, for one).
    if (percent === 0 || this.fillEndedForCid === this.instance.cid || this.nowTick - this.lastDecisionTick > 1) return false;
    return this.pending.size * 100 < this.recentClients * percent;
  }

  private encodeProposal(requests: ClientRequest[]): Bytes {
    let bytes = encodeBatch({ requests });
    // The size estimate is conservative, but the encoding is what counts: shrink until it fits.
    while (bytes.length > this.config.batchBytesMax && requests.length > 1) {
      requests = requests.slice(0, Math.ceil(requests.length / 2));
      bytes = encodeBatch({ requests });
    }
    return bytes;
  }

  /** Whether the leader is holding its next proposal back to fill it: the driver calls endBatchFill() soon. */
  batchFillWaiting(): boolean {
    return this.fillWaiting;
  }

  /** Ends the current batch filling: the leader proposes what it has. */
  endBatchFill(): void {
    if (!this.fillWaiting) return;
    this.fillWaiting = false;
    this.fillEndedForCid = this.instance.cid;
    this.maybePropose();
  }

  private maybePropose(): void {
    this.fillWaiting = false;
    if (this.me !== this.leader || this.syncedRegency !== this.regency || this.pending.size === 0) return;
    if (!this.mayVote()) return;
    if (this.instance.proposals.has(this.regency)) return;
    const start = this.regencyStart;
    if (start !== null && start.regency === this.regency) {
      // SYNC already decided what this regency's first instance carries.
      if (this.instance.cid < start.cid) return;
      if (this.instance.cid === start.cid && start.batch.length > 0) return;
    }
    if (this.fillingBatch()) {
      this.fillWaiting = true;
      return;
    }
    const requests = this.buildBatch();
    if (requests.length === 0) return;
    const batch = this.encodeProposal(requests);
    const propose: Propose = {
      type: MessageType.PROPOSE,
      view: this.view.number,
      cid: this.instance.cid,
      regency: this.regency,
      batch,
    };
    this.messagesOut.push({ to: 'others', message: propose });
    this.acceptProposal(this.regency, batch);
  }

  // ---------------------------------------------------------------------------------------------
  // Normal case: PROPOSE → WRITE → ACCEPT → decide.

  private onPropose(from: ReplicaId, message: Propose): void {
    if (from !== this.leader) return this.drop(DropReason.NOT_FROM_LEADER);
    const start = this.regencyStart;
    if (start !== null && start.regency === message.regency) {
      if (message.cid < start.cid) return this.drop(DropReason.STALE_INSTANCE);
      if (message.cid === start.cid && start.batch.length > 0) {
        // The SYNC bound this instance's value; a PROPOSE may only repeat it.
        const same = digestKey(this.crypto.digest(message.batch)) === this.instance.proposals.get(message.regency);
        return this.drop(same ? DropReason.DUPLICATE : DropReason.CONFLICTING_VOTE);
      }
    }
    this.lastLeaderContactTick = this.nowTick;
    this.acceptProposal(message.regency, message.batch);
  }

  /** Take the value of the current regency's leader for the open instance, and vote for it. */
  private acceptProposal(regency: number, bytes: Bytes): void {
    const instance = this.instance;
    const existing = instance.proposals.get(regency);
    if (existing !== undefined) {
      const key = digestKey(this.crypto.digest(bytes));
      return this.drop(key === existing ? DropReason.DUPLICATE : DropReason.CONFLICTING_VOTE);
    }
    const value = this.validValue(bytes);
    if (value === null) return this.drop(DropReason.BAD_BATCH);
    instance.proposals.set(regency, value.key);
    this.rememberValue(value);
    if (!this.mayVote()) return;
    if (this.view.mode === 'crash') return this.acceptValue(regency, value);
    const previous = instance.writeSet.get(value.key);
    if (previous === undefined || previous < regency) {
      if (previous === undefined && instance.writeSet.size >= limits.writeSetMax) this.evictOldestWrite();
      instance.writeSet.set(value.key, regency);
    }
    this.persistOut.push({ kind: 'write', cid: instance.cid, regency, batch: bytes });
    const write: Write = {
      type: MessageType.WRITE,
      view: this.view.number,
      cid: instance.cid,
      regency,
      digest: value.digest,
    };
    this.messagesOut.push({ to: 'others', message: write });
    this.recordWrite(this.me, regency, value.key);
  }

  private evictOldestWrite(): void {
    let oldestKey: string | null = null;
    let oldest = Infinity;
    for (const [key, regency] of this.instance.writeSet) {
      if (regency < oldest) {
        oldest = regency;
        oldestKey = key;
      }
    }
    if (oldestKey !== null) this.instance.writeSet.delete(oldestKey);
  }

  private rememberValue(value: InstanceValue): void {
    const values = this.instance.values;
    if (values.has(value.key) || values.size >= limits.writeSetMax * 2) return;
    values.set(value.key, value);
  }

  private onWrite(from: ReplicaId, message: Write): void {
    if (this.view.mode === 'crash') return this.drop(DropReason.SCHEMA);
    this.recordWrite(from, message.regency, digestKey(message.digest));
  }

  private recordWrite(from: ReplicaId, regency: number, key: string): void {
    let votes = this.instance.writes.get(regency);
    if (votes === undefined) {
      votes = new Map();
      this.instance.writes.set(regency, votes);
    }
    const previous = votes.get(from);
    if (previous !== undefined) return this.drop(previous === key ? DropReason.DUPLICATE : DropReason.CONFLICTING_VOTE);
    votes.set(from, key);
    this.checkWriteQuorum(regency, key);
  }

  private checkWriteQuorum(regency: number, key: string): void {
    const instance = this.instance;
    if (regency !== this.regency || this.syncedRegency !== regency || instance.sentAccept.has(regency)) return;
    const value = instance.values.get(key);
    if (value === undefined) return;
    let count = 0;
    for (const voted of instance.writes.get(regency)?.values() ?? []) if (voted === key) count++;
    if (count >= this.quorums.write) this.acceptValue(regency, value);
  }

  private acceptValue(regency: number, value: InstanceValue): void {
    if (!this.mayVote()) return;
    const instance = this.instance;
    instance.sentAccept.add(regency);
    instance.acceptedRegency = regency;
    instance.acceptedKey = value.key;
    this.persistOut.push({ kind: 'accept', cid: instance.cid, regency, batch: value.bytes });
    const accept = this.signedAccept(regency, value.digest);
    this.messagesOut.push({ to: 'others', message: accept });
    this.recordAccept(this.me, regency, value.key, accept.signature);
  }

  private signedAccept(regency: number, digest: Bytes): Accept {
    const view = this.view.number;
    const cid = this.instance.cid;
    const signature = this.crypto.sign(acceptSigningPayload(view, cid, regency, digest));
    return { type: MessageType.ACCEPT, view, cid, regency, digest, signature };
  }

  private onAccept(from: ReplicaId, message: Accept): void {
    const payload = acceptSigningPayload(message.view, message.cid, message.regency, message.digest);
    if (!this.crypto.verifyReplica(from, payload, message.signature)) return this.drop(DropReason.BAD_SIGNATURE);
    this.recordAccept(from, message.regency, digestKey(message.digest), message.signature);
  }

  private recordAccept(from: ReplicaId, regency: number, key: string, signature: Bytes): void {
    const instance = this.instance;
    let votes = instance.accepts.get(regency);
    if (votes === undefined) {
      votes = new Map();
      instance.accepts.set(regency, votes);
    }
    const previous = votes.get(from);
    if (previous !== undefined) {
      return this.drop(previous.key === key ? DropReason.DUPLICATE : DropReason.CONFLICTING_VOTE);
    }
    votes.set(from, { key, signature });
    this.checkAcceptQuorum(regency, key);
  }

  private checkAcceptQuorum(regency: number, key: string): void {
    const instance = this.instance;
    const value = instance.values.get(key);
    if (value === undefined) return;
    const matching: Vote[] = [];
    for (const [replica, vote] of instance.accepts.get(regency) ?? []) {
      if (vote.key === key) matching.push({ replica, signature: vote.signature });
    }
    if (matching.length < this.quorums.accept) return;
    matching.sort((a, b) => a.replica - b.replica);
    const votes = matching.slice(0, this.quorums.accept);
    this.decide({ cid: instance.cid, regency, batch: value.bytes, votes }, value.requests);
  }

  // ---------------------------------------------------------------------------------------------
  // Decisions.

  /** The digest of a decision's batch if its certificate holds, else null. */
  private verifiedDecisionDigest(decision: Decision): Bytes | null {
    // The view that ordered the instance signed its certificate, with its own quorum.
    const era = this.eraOf(decision.cid);
    if (era === null) return null;
    const view = era.membership.view;
    const quorum = view === this.view ? this.quorums.accept : quorumsFor(view.members.length, view.f, view.mode).accept;
    if (decision.votes.length < quorum) return null;
    const digest = this.crypto.digest(decision.batch);
    const payload = acceptSigningPayload(view.number, decision.cid, decision.regency, digest);
    const signers = new Set<ReplicaId>();
    for (const vote of decision.votes) {
      if (!view.members.includes(vote.replica) || signers.has(vote.replica)) return null;
      if (!this.crypto.verifyReplica(vote.replica, payload, vote.signature)) return null;
      signers.add(vote.replica);
    }
    return digest;
  }

  /** A decision whose certificate was checked: apply it now if it is next, keep it if it is ahead. */
  private offerDecision(decision: Decision): void {
    if (decision.cid < this.instance.cid) return;
    if (decision.cid > this.instance.cid) {
      if (this.futureDecisions.size < limits.instancesAheadMax) this.futureDecisions.set(decision.cid, decision);
      return;
    }
    const value = this.validValue(decision.batch);
    // A certificate for an invalid batch needs more than f faulty replicas; refuse it rather than crash.
    if (value === null) return this.drop(DropReason.BAD_BATCH);
    this.decide(decision, value.requests);
  }

  private decide(decision: Decision, requests: readonly ClientRequest[]): void {
    if (this.config.batchFillPercent > 0) {
      this.lastDecisionTick = this.nowTick;
      const clients = new Set<string>();
      for (const request of requests) clients.add(request.clientId);
      let recent = clients.size;
      for (const clientId of this.lastBatchClients) if (!clients.has(clientId)) recent++;
      this.recentClients = recent;
      this.lastBatchClients = clients;
    }
    invariant(decision.cid === this.instance.cid, 'decisions are applied in cid order');
    if (this.awaitingStateTransfer) {
      // The service is about to be replaced by a checkpoint: executing anything now would be lost, or
      // worse, leave the core ahead of the installed state. The decision waits, certified, for after.
      if (this.futureDecisions.size < limits.instancesAheadMax) this.futureDecisions.set(decision.cid, decision);
      return;
    }
    this.persistOut.push({ kind: 'decision', decision });
    const applied = this.applyDecision(decision, requests);
    this.deliveriesOut.push({
      decision,
      requests,
      ...(applied.checkpoint ? { checkpoint: true, views: [...this.views] } : {}),
      ...(applied.reconfigurationResults.size > 0 ? { reconfigurationResults: applied.reconfigurationResults } : {}),
      ...(applied.membership !== null ? { membership: applied.membership } : {}),
    });
    if (decision.regency === this.regency && this.syncedRegency === this.regency) {
      this.failedRegencies = 0;
      this.changeStartedTick = this.nowTick;
    }
    this.lastProgressTick = this.nowTick;
    this.openInstance(decision.cid + 1);
  }

  /**
   * The part of deciding that restoring from the log repeats: the clients' sequence numbers, the retained
   * window, the reconfigurations it carries, and whether a checkpoint is due after it.
   */
  private applyDecision(
    decision: Decision,
    requests: readonly ClientRequest[],
  ): { readonly checkpoint: boolean; readonly reconfigurationResults: Map<number, Bytes>; readonly membership: Membership | null } {
    for (const request of requests) {
      this.clients.record(request.clientId, request.seq);
      this.pending.remove(request.clientId, request.seq);
    }
    const reconfiguration = this.reconfigure(requests);
    const accountedBytes = decision.batch.length + limits.decisionRetainedOverheadBytes;
    this.retained.set(decision.cid, decision);
    this.retainedBytes += accountedBytes;
    while (this.retained.size > this.config.decisionsRetainedMax || this.retainedBytes > limits.decisionsRetainedBytesMax) {
      const oldest = this.retained.entries().next();
      if (oldest.done) break;
      this.retained.delete(oldest.value[0]);
      this.retainedBytes -= oldest.value[1].batch.length + limits.decisionRetainedOverheadBytes;
    }
    this.lastDecidedCid = decision.cid;
    this.bytesSinceCheckpoint += accountedBytes;
    // A reconfiguration always gets a checkpoint: a replica that joins with the new view installs one
    // that its members attest, and that carries the membership it joins.
    const due =
      reconfiguration.membership !== null ||
      decision.cid - this.checkpointCid >= this.config.checkpointPeriodInstances ||
      this.bytesSinceCheckpoint >= this.config.checkpointPeriodBytes;
    if (due) {
      this.checkpointCid = decision.cid;
      this.bytesSinceCheckpoint = 0;
    }
    if (reconfiguration.membership !== null) this.installMembership(reconfiguration.membership, decision.cid + 1);
    return { checkpoint: due, ...reconfiguration };
  }

  /**
   * The batch's reconfiguration requests, in order: each is checked against the membership as it stands
   * before this instance; the first valid one takes effect after the instance, and any later one in the
   * same batch is refused (it names a view that is no longer current). Deterministic, so every replica
   * answers and changes the same way.
   */
  private reconfigure(requests: readonly ClientRequest[]): { reconfigurationResults: Map<number, Bytes>; membership: Membership | null } {
    const reconfigurationResults = new Map<number, Bytes>();
    let membership: Membership | null = null;
    for (let index = 0; index < requests.length; index++) {
      const request = requests[index] as ClientRequest;
      if (request.kind !== RequestKind.RECONFIGURATION) continue;
      const verdict = this.judgeReconfiguration(request.operation, membership);
      if (verdict.ok) membership = verdict.membership;
      reconfigurationResults.set(
        index,
        encodeReconfigurationResult(
          verdict.ok
            ? { accepted: true, view: describeView(verdict.membership) }
            : { accepted: false, reason: verdict.reason.slice(0, limits.reconfigurationReasonLengthMax) },
        ),
      );
    }
    return { reconfigurationResults, membership };
  }

  /** One reconfiguration request's verdict; `decided` is a change already decided in the same instance. */
  private judgeReconfiguration(operation: Bytes, decided: Membership | null): ReconfigurationVerdict {
    const decoded = decodeSignedReconfiguration(operation);
    // validValue admitted only decodable requests; a restored log holds only what was admitted.
    if (!decoded.ok) return { ok: false, reason: `malformed: ${decoded.reason}` };
    const { reconfiguration, signature } = decoded.value;
    if (this.crypto.verifyViewManager?.(reconfigurationSigningPayload(reconfiguration), signature) !== true) {
      return { ok: false, reason: 'not signed by the View Manager this cluster was configured with' };
    }
    if (decided !== null) return { ok: false, reason: `stale: view ${decided.view.number} was decided in the same instance; submit again from it` };
    return applyReconfiguration(this.membership, reconfiguration);
  }

  /**
   * From instance `firstCid` on, `next` orders: its members vote, with its quorums and keys. What belonged
   * to the old view's leader change is dropped (it restarts in the new view if it must); peers that left
   * are forgotten. A replica that is no longer a member stops voting for good.
   */
  private installMembership(next: Membership, firstCid: number): void {
    const previous = this.membership;
    // What this replica already said in the old view goes to the old view's members: "others" is resolved
    // now, before it would mean the new members (who drop old-view messages) and miss those who leave.
    if (this.messagesOut.some((out) => out.to === 'others')) {
      const oldOthers = previous.view.members.filter((id) => id !== this.me);
      this.messagesOut = this.messagesOut.flatMap((out) => (out.to === 'others' ? oldOthers.map((to) => ({ to, message: out.message })) : [out]));
    }
    // Members that leave hear no more of this view (heartbeats go to members only): give them the
    // decision that removed them, so that one which had not decided it yet learns it and stops.
    const removing = this.restoring ? undefined : this.retained.get(firstCid - 1);
    if (removing !== undefined) {
      for (const id of previous.view.members) {
        if (id === this.me || next.view.members.includes(id)) continue;
        this.messagesOut.push({ to: id, message: { type: MessageType.DECISION, view: previous.view.number, decision: removing } });
      }
    }
    this.membership = next;
    this.views.push({ membership: next, firstCid });
    if (this.views.length > limits.viewEraHistoryMax) this.views.shift();
    this.viewInfo = new ViewInfo(next.view);
    this.quorums = this.viewInfo.quorums;
    this.crypto.useMembers?.(this.knownMembers());
    this.stopTargets.clear();
    this.stopData.clear();
    this.stopDataValues.clear();
    this.myStopData = null;
    this.syncSent = null;
    this.myStopTarget = this.regency;
    for (const peer of [...this.peerCid.keys()]) if (!this.viewInfo.isMember(peer)) this.peerCid.delete(peer);
    for (const peer of [...this.peerRegency.keys()]) if (!this.viewInfo.isMember(peer)) this.peerRegency.delete(peer);
    this.prunedBy.clear();
    this.lastLeaderContactTick = this.nowTick;
    // Removed only if it was a member before: a replica that joins may stand, for a while, at a checkpoint
    // of a view from before it was added, and catches up to the one that adds it.
    if (!this.viewInfo.isMember(this.me) && previous.view.members.includes(this.me)) this.removedAtCid ??= firstCid - 1;
  }

  /** Stand at a checkpoint: decided up to its instance, with its clients' sequence numbers and membership. */
  private applyBase(base: CheckpointBase): void {
    invariant(base.cid > this.lastDecidedCid, 'a checkpoint moves the replica forward');
    if (base.views !== undefined && base.views.length > 0) {
      const eras = base.views.slice(-limits.viewEraHistoryMax);
      const current = eras[eras.length - 1] as ViewEra;
      this.views = eras.slice(0, -1);
      this.installMembership(current.membership, current.firstCid);
      // The checkpoint says whether this replica was removed: it was a member of one of its views and is
      // not of the last. Absent from all of them, it joins in a later view than the checkpoint's.
      const wasMember = eras.some((era) => era.membership.view.members.includes(this.me));
      this.removedAtCid = !this.viewInfo.isMember(this.me) && wasMember ? current.firstCid - 1 : null;
    }
    this.clients.clear();
    for (const [clientId, seq] of base.clientSeqs) this.clients.record(clientId, seq);
    const decided: ClientRequest[] = [];
    for (const entry of this.pending.values()) {
      if (entry.request.seq <= this.clients.lastDecided(entry.request.clientId)) decided.push(entry.request);
    }
    for (const request of decided) this.pending.remove(request.clientId, request.seq);
    // Decisions before the checkpoint are covered by it; peers that need them need the checkpoint too.
    this.retained.clear();
    this.retainedBytes = 0;
    for (const cid of [...this.futureDecisions.keys()]) if (cid <= base.cid) this.futureDecisions.delete(cid);
    this.lastDecidedCid = base.cid;
    this.checkpointCid = base.cid;
    this.bytesSinceCheckpoint = 0;
    this.instance = new Instance(base.cid + 1);
  }

  private oldestRetainedCid(): number {
    const oldest = this.retained.keys().next();
    return oldest.done ? -1 : oldest.value;
  }

  private openInstance(cid: number): void {
    this.instance = new Instance(cid);
    this.futureDecisions.delete(cid - 1);
    const next = this.futureDecisions.get(cid);
    if (next !== undefined) {
      this.futureDecisions.delete(cid);
      this.offerDecision(next);
      return;
    }
    const start = this.regencyStart;
    if (
      start !== null &&
      start.regency === this.regency &&
      this.syncedRegency === this.regency &&
      start.cid === cid &&
      start.batch.length > 0
    ) {
      this.acceptProposal(this.regency, start.batch);
    }
    this.drainFuture();
    this.maybePropose();
  }

  private onDecisionRequest(from: ReplicaId, message: DecisionRequest): void {
    const served = this.catchUpServed.get(from);
    if (served !== undefined && served.tick === this.nowTick) {
      if (served.answers >= limits.catchUpAnswersPerTickMax) return this.drop(DropReason.RATE_LIMITED);
      served.answers++;
    } else {
      this.catchUpServed.set(from, { tick: this.nowTick, answers: 1 });
    }
    const oldest = this.oldestRetainedCid();
    if (message.fromCid <= this.lastDecidedCid && (oldest === -1 || message.fromCid < oldest)) {
      const pruned: DecisionsPruned = {
        type: MessageType.DECISIONS_PRUNED,
        view: this.view.number,
        oldestRetainedCid: oldest,
        checkpointCid: this.checkpointCid,
      };
      this.messagesOut.push({ to: from, message: pruned });
      return;
    }
    const last = Math.min(this.lastDecidedCid, message.fromCid + limits.decisionsPerFetchMax - 1);
    let bytes = 0;
    for (let cid = message.fromCid; cid <= last && bytes < limits.catchUpAnswerBytesMax; cid++) {
      const decision = this.retained.get(cid);
      if (decision === undefined) continue;
      bytes += decision.batch.length;
      const view = this.eraOf(cid)?.membership.view.number ?? this.view.number;
      const reply: DecisionMessage = { type: MessageType.DECISION, view, decision };
      this.messagesOut.push({ to: from, message: reply });
    }
  }

  private onDecision(from: ReplicaId, message: DecisionMessage): void {
    const decision = message.decision;
    if (decision.cid === this.lastDecidedCid && !this.retained.has(decision.cid)) {
      if (this.verifiedDecisionDigest(decision) === null) return this.drop(DropReason.BAD_CERTIFICATE);
      this.retainBaseCertificate(decision);
      return;
    }
    if (decision.cid < this.instance.cid) return this.drop(DropReason.STALE_INSTANCE);
    if (decision.cid > this.instance.cid + limits.instancesAheadMax) return this.drop(DropReason.TOO_FAR_AHEAD);
    if (this.verifiedDecisionDigest(decision) === null) return this.drop(DropReason.BAD_CERTIFICATE);
    this.notePeerAt(from, decision.cid + 1);
    this.offerDecision(decision);
    // Pipelined catch-up: a lagging replica asks for the next range as soon as it used up the last one,
    // so that it outruns a busy cluster instead of falling further behind between timer ticks.
    if (this.catchUpExhaustedAt >= 0 && this.instance.cid >= this.catchUpExhaustedAt) this.maybeCatchUp();
  }

  /**
   * A peer no longer keeps the decisions we need. One peer could lie to send us into a needless state
   * transfer, so only f+1 of them (crash: 1) saying so for our open instance count.
   */
  private onDecisionsPruned(from: ReplicaId, message: DecisionsPruned): void {
    if (this.awaitingStateTransfer) return;
    if (message.oldestRetainedCid !== -1 && message.oldestRetainedCid <= this.instance.cid) return this.drop(DropReason.STALE_INSTANCE);
    this.prunedBy.set(from, this.instance.cid);
    let agreeing = 0;
    for (const cid of this.prunedBy.values()) if (cid === this.instance.cid) agreeing++;
    if (agreeing < this.quorums.includesCorrect) {
      // Ask the next peer straight away rather than wait for the catch-up timer.
      this.maybeCatchUp();
      return;
    }
    this.needStateTransfer();
  }

  private needStateTransfer(): void {
    this.awaitingStateTransfer = true;
    this.catchUpExhaustedAt = -1;
    this.stateTransferOut = { minCid: this.instance.cid };
  }

  /**
   * May this replica vote in its open instance? Always, unless a reconfiguration removed it, or it lost its
   * disk and is not yet past what it forgot.
   */
  private mayVote(): boolean {
    if (this.removedAtCid !== null || !this.viewInfo.isMember(this.me)) return false;
    if (this.amnesiaFloor === null) return true;
    if (this.instance.cid <= this.amnesiaFloor) return false;
    this.amnesiaFloor = null;
    return true;
  }

  private lagInstances(): number {
    const cids = [...this.peerCid.values()].sort((a, b) => b - a);
    const evidence = cids[this.quorums.includesCorrect - 1];
    return evidence === undefined ? 0 : Math.max(0, evidence - this.instance.cid);
  }

  private peersAhead(): ReplicaId[] {
    const ahead: ReplicaId[] = [];
    for (const [peer, cid] of this.peerCid) if (cid > this.instance.cid) ahead.push(peer);
    return ahead;
  }

  /** The certificate of the instance a checkpoint put us at: what our STOPDATA and SYNC must show. */
  private retainBaseCertificate(decision: Decision): void {
    const rest = [...this.retained];
    this.retained.clear();
    this.retained.set(decision.cid, decision);
    for (const [cid, d] of rest) this.retained.set(cid, d);
    this.retainedBytes += decision.batch.length + limits.decisionRetainedOverheadBytes;
  }

  private maybeCatchUp(): void {
    this.lastCatchUpTick = this.nowTick;
    if (this.awaitingStateTransfer) return;
    if (this.lastDecidedCid >= 0 && !this.retained.has(this.lastDecidedCid)) {
      const others = this.view.members.filter((m) => m !== this.me);
      const peer = others[this.catchUpRotation++ % others.length] as ReplicaId;
      this.messagesOut.push({ to: peer, message: { type: MessageType.DECISION_REQUEST, view: this.view.number, fromCid: this.lastDecidedCid } });
    }
    const ahead = this.peersAhead();
    // Only believe we are behind when enough replicas say so that one of them is correct.
    if (ahead.length < this.quorums.includesCorrect) {
      this.catchUpExhaustedAt = -1;
      return;
    }
    // More than two checkpoint periods behind: the peers' newest checkpoint is ahead of us, and
    // installing it beats replaying (and first fetching) every decision since.
    if (this.instance.cid >= this.lagRuleResumesAtCid && this.lagInstances() > 2 * this.config.checkpointPeriodInstances) {
      return this.needStateTransfer();
    }
    ahead.sort((a, b) => a - b);
    const peer = ahead[this.catchUpRotation++ % ahead.length] as ReplicaId;
    const request: DecisionRequest = {
      type: MessageType.DECISION_REQUEST,
      view: this.view.number,
      fromCid: this.instance.cid,
    };
    this.catchUpExhaustedAt = this.instance.cid + limits.decisionsPerFetchMax;
    this.messagesOut.push({ to: peer, message: request });
  }

  // ---------------------------------------------------------------------------------------------
  // Timers: request timers, leader silence, heartbeats, retransmission.

  private regencyTimeoutTicks(): number {
    const factor = Math.min(2 ** this.failedRegencies, limits.regencyTimeoutBackoffMax);
    return this.config.regencyTimeoutTicks * factor;
  }

  private checkRequestTimers(): void {
    const toForward: ClientRequest[] = [];
    const expired = [];
    for (const entry of this.pending.values()) {
      if (this.nowTick - entry.timerStartTick < this.config.requestTimeoutTicks) break;
      expired.push(entry);
    }
    let stop = false;
    for (const entry of expired) {
      // A request its client signed badly must not cost a leader its regency.
      if (!this.keepIfSignatureGood(entry)) continue;
      if (entry.stage === 0 && this.me !== this.leader) {
        toForward.push(entry.request);
        this.pending.restartTimer(entry, this.nowTick, 1);
      } else {
        stop = true;
      }
    }
    for (const requests of fitting(toForward, limits.requestsPerMessageMax, this.config.batchBytesMax)) {
      const forward: Forward = { type: MessageType.FORWARD, view: this.view.number, requests };
      this.messagesOut.push({ to: this.leader, message: forward });
    }
    if (stop) this.sendStop(this.regency + 1);
  }

  private checkLeaderSilence(): void {
    if (this.me === this.leader) return;
    if (this.nowTick - this.lastLeaderContactTick > this.config.leaderSilenceTimeoutTicks) {
      this.sendStop(this.regency + 1);
    }
  }

  /**
   * Every replica says where it is (synchronized regency, last decided cid) every heartbeat interval.
   * The leader's heartbeat proves it alive; everyone's lets a replica that missed a leader change or some
   * decisions find out from f+1 peers, even when no request is flowing.
   */
  private maybeHeartbeat(): void {
    if (this.nowTick - this.lastHeartbeatTick < this.config.heartbeatIntervalTicks) return;
    this.lastHeartbeatTick = this.nowTick;
    const heartbeat: Heartbeat = {
      type: MessageType.HEARTBEAT,
      view: this.view.number,
      regency: this.syncedRegency,
      lastDecidedCid: this.lastDecidedCid,
    };
    this.messagesOut.push({ to: 'others', message: heartbeat });
  }

  /**
   * After a lost disk: fix the floor once n - f peers were heard. If some peer stays silent (it crashed),
   * settle after a while for n - 2f of them (at least one): that still includes a correct replica that
   * accepted the predecessor of any forgotten vote as long as no replica heard from is Byzantine, so for
   * that window the amnesic replica counts as the one fault; without it, one crash more would leave the
   * cluster without the quorums it needs.
   */
  private maybeFixAmnesiaFloor(): void {
    if (this.amnesiaFloor !== Infinity) return;
    const heard = this.peerCid.size;
    const waited = this.nowTick >= 2 * this.config.leaderSilenceTimeoutTicks;
    const n = this.view.members.length;
    if (heard < this.quorums.collect && !(waited && heard >= Math.max(1, n - 2 * this.view.f))) return;
    let highest = -1;
    for (const cid of this.peerCid.values()) highest = Math.max(highest, cid);
    // peerCid holds open instances (last decided + 1): + 1 more makes the claim's last decided + 2.
    this.amnesiaFloor = highest + 1;
  }

  private onHeartbeat(from: ReplicaId, message: Heartbeat): void {
    this.notePeerAt(from, message.lastDecidedCid + 1);
    this.maybeFixAmnesiaFloor();
    if (message.regency > (this.peerRegency.get(from) ?? -1)) this.peerRegency.set(from, message.regency);
    if (from === this.leader && message.regency === this.regency && this.syncedRegency === this.regency) {
      this.lastLeaderContactTick = this.nowTick;
    }
  }

  /**
   * f+1 peers (crash mode: 1) synchronized a regency above ours: one correct replica did, so it was really
   * installed. Install it too; the STOPDATA we send makes its leader send us the SYNC again.
   */
  private maybeFollowRegency(): void {
    const claims: number[] = [];
    for (const regency of this.peerRegency.values()) if (regency > this.regency) claims.push(regency);
    if (claims.length < this.quorums.includesCorrect) return;
    claims.sort((a, b) => b - a);
    this.installRegency(claims[this.quorums.includesCorrect - 1] as number);
  }

  /** Messages get lost; send again what this replica said in the step that is not finished. */
  private retransmit(): void {
    this.lastRetransmitTick = this.nowTick;
    const view = this.view.number;
    if (this.myStopTarget > this.regency) {
      const stop: Stop = { type: MessageType.STOP, view, regency: this.myStopTarget, requests: [] };
      this.messagesOut.push({ to: 'others', message: stop });
    }
    if (!this.mayVote()) return;
    if (this.syncedRegency < this.regency) {
      // A replica restored in the middle of a leader change rebuilds the STOPDATA it had sent.
      this.myStopData ??= this.makeStopData(this.regency);
      if (this.me === this.leader) this.onStopDataVerified(this.me, this.myStopData);
      else this.messagesOut.push({ to: this.leader, message: this.myStopData });
      return;
    }
    if (this.nowTick - this.lastProgressTick < this.config.retransmitTicks) return;
    const instance = this.instance;
    const proposed = instance.proposals.get(this.regency);
    const value = proposed === undefined ? undefined : instance.values.get(proposed);
    if (value === undefined) return;
    if (this.me === this.leader) {
      if (this.syncSent !== null && this.syncSent.regency === this.regency && this.syncSent.cid === instance.cid) {
        this.messagesOut.push({ to: 'others', message: this.syncSent });
      } else {
        const propose: Propose = { type: MessageType.PROPOSE, view, cid: instance.cid, regency: this.regency, batch: value.bytes };
        this.messagesOut.push({ to: 'others', message: propose });
      }
    }
    if (this.view.mode === 'bft') {
      const write: Write = { type: MessageType.WRITE, view, cid: instance.cid, regency: this.regency, digest: value.digest };
      this.messagesOut.push({ to: 'others', message: write });
    }
    if (instance.sentAccept.has(this.regency) && instance.acceptedKey !== null) {
      const accepted = instance.values.get(instance.acceptedKey);
      if (accepted !== undefined) {
        this.messagesOut.push({ to: 'others', message: this.signedAccept(this.regency, accepted.digest) });
      }
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Leader change: STOP → STOPDATA → SYNC.

  private sendStop(target: number): void {
    if (target <= this.myStopTarget || target <= this.regency) return;
    this.myStopTarget = target;
    this.stopTargets.set(this.me, target);
    this.changeStartedTick = this.nowTick;
    const stop: Stop = {
      type: MessageType.STOP,
      view: this.view.number,
      regency: target,
      requests: this.pending.oldest(limits.requestsPerMessageMax, this.config.batchBytesMax),
    };
    this.messagesOut.push({ to: 'others', message: stop });
    this.evaluateStops();
  }

  private onStop(from: ReplicaId, message: Stop): void {
    if (message.regency <= this.regency) return this.drop(DropReason.STALE_REGENCY);
    if (message.regency > (this.stopTargets.get(from) ?? -1)) this.stopTargets.set(from, message.regency);
    // The next leader must see requests the old one sat on.
    this.onForward({ type: MessageType.FORWARD, view: message.view, requests: message.requests });
    this.evaluateStops();
  }

  /**
   * A replica asking for regency t also gives up every regency below t, so a STOP for t counts for all
   * targets up to t. Join at the (f+1)-th highest target (one correct replica wants it); install at the
   * (2f+1)-th highest (crash mode: 1st and (f+1)-th).
   */
  private evaluateStops(): void {
    const targets: number[] = [];
    for (const target of this.stopTargets.values()) if (target > this.regency) targets.push(target);
    targets.sort((a, b) => b - a);
    const join = targets[this.quorums.stopJoin - 1];
    if (join !== undefined && join > this.myStopTarget) return this.sendStop(join);
    const install = targets[this.quorums.stopInstall - 1];
    if (install !== undefined && install > this.regency) this.installRegency(install);
  }

  private installRegency(target: number): void {
    this.regency = target;
    this.myStopTarget = Math.max(this.myStopTarget, target);
    this.leaderChanges++;
    this.persistOut.push({ kind: 'regency', regency: target });
    for (const [replica, wanted] of this.stopTargets) if (wanted <= target) this.stopTargets.delete(replica);
    this.changeStartedTick = this.nowTick;
    this.lastLeaderContactTick = this.nowTick;
    this.stopData.clear();
    this.stopDataValues.clear();
    this.syncSent = null;
    this.pending.restartAllTimers(this.nowTick);
    this.myStopData = null;
    if (this.mayVote()) {
      this.myStopData = this.makeStopData(target);
      if (this.me === this.leader) this.onStopDataVerified(this.me, this.myStopData);
      else this.messagesOut.push({ to: this.leader, message: this.myStopData });
    }
    this.drainFuture();
  }

  private makeStopData(regency: number): StopData {
    const instance = this.instance;
    const digestOf = (key: string): Bytes => {
      const value = instance.values.get(key);
      invariant(value !== undefined, 'a replica writes and accepts only values it holds');
      return value.digest;
    };
    const writeSet = [...instance.writeSet]
      .sort((a, b) => a[1] - b[1] || (a[0] < b[0] ? -1 : 1))
      .map(([key, written]) => ({ regency: written, digest: digestOf(key) }));
    const collect: Collect = {
      replica: this.me,
      view: this.view.number,
      regency,
      cid: instance.cid,
      acceptedRegency: instance.acceptedRegency,
      acceptedDigest: instance.acceptedKey === null ? null : digestOf(instance.acceptedKey),
      writeSet,
    };
    // The accepted value first, then the most recently written ones, within a bound on bytes.
    const byRecency = [...instance.writeSet].sort((a, b) => b[1] - a[1]).map(([key]) => key);
    const keys = new Set(instance.acceptedKey === null ? byRecency : [instance.acceptedKey, ...byRecency]);
    const values: Bytes[] = [];
    let valuesBytes = 0;
    for (const key of keys) {
      const bytes = instance.values.get(key)?.bytes ?? emptyBytes;
      if (valuesBytes + bytes.length > limits.stopDataValuesBytesMax) break;
      values.push(bytes);
      valuesBytes += bytes.length;
    }
    return {
      type: MessageType.STOPDATA,
      view: this.view.number,
      regency,
      collect: { collect, signature: this.crypto.sign(collectSigningPayload(collect)) },
      lastDecision: this.retained.get(instance.cid - 1) ?? null,
      values,
    };
  }

  /** Why a signed collect cannot count for installing `regency`, or null. BFT-SMaRt PR #121's first two holes. */
  private invalidCollect(signed: SignedCollect, regency: number): DropReasonCode | null {
    const collect = signed.collect;
    if (!this.viewInfo.isMember(collect.replica)) return DropReason.COLLECT_NOT_MEMBER;
    if (collect.regency !== regency || collect.view !== this.view.number) return DropReason.COLLECT_WRONG_REGENCY;
    if (!this.crypto.verifyReplica(collect.replica, collectSigningPayload(collect), signed.signature)) {
      return DropReason.BAD_COLLECT;
    }
    // Values are accepted and written only in regencies before the one being installed.
    if (collect.acceptedRegency >= regency) return DropReason.BAD_COLLECT;
    if ((collect.acceptedRegency < 0) !== (collect.acceptedDigest === null)) return DropReason.BAD_COLLECT;
    const digests = new Set<string>();
    for (const written of collect.writeSet) {
      const key = digestKey(written.digest);
      if (written.regency >= regency || digests.has(key)) return DropReason.BAD_COLLECT;
      digests.add(key);
    }
    return null;
  }

  /** A decision proving that instance `cid - 1` is decided, as a STOPDATA or SYNC must carry. */
  private provesPredecessor(lastDecision: Decision | null, cid: number): boolean {
    if (cid === 0) return lastDecision === null;
    return lastDecision !== null && lastDecision.cid === cid - 1 && this.verifiedDecisionDigest(lastDecision) !== null;
  }

  private onStopData(from: ReplicaId, message: StopData): void {
    if (message.regency < this.regency) return this.drop(DropReason.STALE_REGENCY);
    if (message.regency > this.regency) return this.buffer(from, message);
    if (this.me !== this.leader) return this.drop(DropReason.MISDIRECTED);
    if (this.syncedRegency === this.regency) {
      // The sender missed our SYNC.
      if (this.syncSent !== null) this.messagesOut.push({ to: from, message: this.syncSent });
      return this.drop(DropReason.DUPLICATE);
    }
    if (message.collect.collect.replica !== from) return this.drop(DropReason.BAD_COLLECT);
    const reason = this.invalidCollect(message.collect, message.regency);
    if (reason !== null) return this.drop(reason);
    if (!this.provesPredecessor(message.lastDecision, message.collect.collect.cid)) {
      return this.drop(DropReason.BAD_CERTIFICATE);
    }
    this.notePeerAt(from, message.collect.collect.cid);
    this.onStopDataVerified(from, message);
  }

  private onStopDataVerified(from: ReplicaId, message: StopData): void {
    this.stopData.set(from, { signed: message.collect, lastDecision: message.lastDecision });
    for (const bytes of message.values) {
      if (this.stopDataValues.size >= (limits.writeSetMax + 1) * this.viewInfo.n) break;
      if (bytes.length > 0) this.stopDataValues.set(digestKey(this.crypto.digest(bytes)), bytes);
    }
    if (message.lastDecision !== null) this.offerDecision(message.lastDecision);
    this.tryBuildSync();
  }

  private static statesFor(collects: readonly SignedCollect[], cid: number): InstanceState[] {
    // A replica whose open instance is older than `cid` has written and accepted nothing in `cid`.
    return collects.map(({ collect }) => {
      if (collect.cid !== cid) return emptyInstanceState;
      const writeSet = new Map<string, number>();
      for (const written of collect.writeSet) writeSet.set(digestKey(written.digest), written.regency);
      return {
        acceptedRegency: collect.acceptedRegency,
        acceptedDigest: collect.acceptedDigest === null ? null : digestKey(collect.acceptedDigest),
        writeSet,
      };
    });
  }

  private tryBuildSync(): void {
    if (this.me !== this.leader || this.syncedRegency === this.regency) return;
    if (!this.mayVote()) return;
    if (this.stopData.size < this.quorums.collect) return;
    const received = [...this.stopData.entries()].sort((a, b) => a[0] - b[0]).map(([, data]) => data);
    let cid = 0;
    let lastDecision: Decision | null = null;
    for (const data of received) {
      if (data.signed.collect.cid > cid) {
        cid = data.signed.collect.cid;
        lastDecision = data.lastDecision;
      }
    }
    const collects = received.map((data) => data.signed);
    const choice = chooseValue(this.view.mode, ReplicaCore.statesFor(collects, cid), this.quorums);
    if (choice.kind === 'unsound') return;
    let batch = emptyBytes;
    if (choice.kind === 'bound') {
      const bound = this.stopDataValues.get(choice.digest) ?? this.instance.values.get(choice.digest)?.bytes;
      if (bound === undefined) return;
      batch = bound;
    } else if (this.instance.cid === cid) {
      const requests = this.buildBatch();
      if (requests.length > 0) batch = this.encodeProposal(requests);
    }
    const sync: Sync = {
      type: MessageType.SYNC,
      view: this.view.number,
      regency: this.regency,
      cid,
      collects,
      lastDecision,
      batch,
    };
    this.syncSent = sync;
    this.messagesOut.push({ to: 'others', message: sync });
    this.completeSync(sync);
  }

  private onSync(from: ReplicaId, message: Sync): void {
    if (from !== this.viewInfo.leaderOf(message.regency)) return this.drop(DropReason.NOT_FROM_LEADER);
    if (message.regency < this.regency) return this.drop(DropReason.STALE_REGENCY);
    if (message.regency === this.regency && this.syncedRegency === this.regency) return this.drop(DropReason.DUPLICATE);
    const reason = this.invalidSync(message);
    if (reason !== null) return this.drop(reason);
    this.notePeerAt(from, message.cid);
    // A valid SYNC shows that enough replicas installed its regency; follow even if our STOPs were lost.
    if (message.regency > this.regency) this.installRegency(message.regency);
    this.completeSync(message);
  }

  /** Every receiver re-checks the leader's work: the third hole of BFT-SMaRt PR #121 included. */
  private invalidSync(message: Sync): DropReasonCode | null {
    if (message.collects.length < this.quorums.collect) return DropReason.BAD_SYNC;
    const replicas = new Set<ReplicaId>();
    let cid = 0;
    for (const signed of message.collects) {
      const reason = this.invalidCollect(signed, message.regency);
      if (reason !== null) return reason;
      if (replicas.has(signed.collect.replica)) return DropReason.BAD_SYNC;
      replicas.add(signed.collect.replica);
      cid = Math.max(cid, signed.collect.cid);
    }
    if (message.cid !== cid) return DropReason.BAD_SYNC;
    if (!this.provesPredecessor(message.lastDecision, cid)) return DropReason.BAD_CERTIFICATE;
    const states = ReplicaCore.statesFor(message.collects, cid);
    const key = message.batch.length === 0 ? null : digestKey(this.crypto.digest(message.batch));
    if (!syncValueAllowed(this.view.mode, states, this.quorums, key)) return DropReason.BAD_SYNC;
    return null;
  }

  private completeSync(sync: Sync): void {
    this.syncedRegency = sync.regency;
    this.regencyStart = { regency: sync.regency, cid: sync.cid, batch: sync.batch };
    this.persistOut.push({ kind: 'synced', regency: sync.regency, cid: sync.cid, batch: sync.batch });
    this.lastLeaderContactTick = this.nowTick;
    this.changeStartedTick = this.nowTick;
    this.lastProgressTick = this.nowTick;
    this.myStopData = null;
    if (sync.lastDecision !== null) this.offerDecision(sync.lastDecision);
    if (this.instance.cid === sync.cid && sync.batch.length > 0 && !this.instance.proposals.has(sync.regency)) {
      this.acceptProposal(sync.regency, sync.batch);
    }
    this.drainFuture();
    this.maybePropose();
  }

  // ---------------------------------------------------------------------------------------------
  // Restart.

  /** Rebuild from persisted records: the replica comes back having said exactly what it said before. */
  private restore(records: readonly PersistRecord[]): void {
    this.restoring = true;
    try {
      this.restoreRecords(records);
    } finally {
      this.restoring = false;
    }
  }

  private restoreRecords(records: readonly PersistRecord[]): void {
    const votes: PersistRecord[] = [];
    for (const record of records) {
      switch (record.kind) {
        case 'decision': {
          const decoded = decodeBatch(record.decision.batch);
          invariant(decoded.ok, 'a persisted decision holds a valid batch');
          // The log may still hold decisions that the checkpoint restored from already covers.
          if (record.decision.cid <= this.lastDecidedCid) {
            if (record.decision.cid === this.lastDecidedCid && !this.retained.has(record.decision.cid)) this.retainBaseCertificate(record.decision);
            break;
          }
          invariant(record.decision.cid === this.lastDecidedCid + 1, 'the log continues where the state stands');
          const applied = this.applyDecision(record.decision, decoded.batch.requests);
          if (applied.checkpoint) {
            this.restoredCheckpoints.push(record.decision.cid);
            this.restoredViews.set(record.decision.cid, [...this.views]);
          }
          if (applied.reconfigurationResults.size > 0) this.restoredAnswers.set(record.decision.cid, applied.reconfigurationResults);
          if (applied.membership !== null) this.restoredMemberships.set(record.decision.cid, applied.membership);
          break;
        }
        case 'regency':
          this.regency = Math.max(this.regency, record.regency);
          break;
        case 'synced':
          if (record.regency >= this.syncedRegency) {
            this.syncedRegency = record.regency;
            this.regencyStart = { regency: record.regency, cid: record.cid, batch: record.batch };
          }
          break;
        case 'write':
        case 'accept':
          votes.push(record);
          break;
      }
    }
    this.myStopTarget = this.regency;
    this.instance = new Instance(this.lastDecidedCid + 1);
    for (const record of votes) {
      if ((record.kind !== 'write' && record.kind !== 'accept') || record.cid !== this.instance.cid) continue;
      const digest = this.crypto.digest(record.batch);
      const decoded = decodeBatch(record.batch);
      invariant(decoded.ok, 'a persisted vote holds a valid batch');
      const value: InstanceValue = { bytes: record.batch, digest, key: digestKey(digest), requests: decoded.batch.requests };
      this.rememberValue(value);
      this.instance.proposals.set(record.regency, value.key);
      if (record.kind === 'write') {
        this.instance.writeSet.set(value.key, Math.max(record.regency, this.instance.writeSet.get(value.key) ?? -1));
      } else {
        this.instance.sentAccept.add(record.regency);
        if (record.regency >= this.instance.acceptedRegency) {
          this.instance.acceptedRegency = record.regency;
          this.instance.acceptedKey = value.key;
        }
      }
    }
  }
}

export { requestBytes };
