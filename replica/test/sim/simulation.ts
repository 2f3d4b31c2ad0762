// The seeded simulation: n replicas running the real core over a simulated network, disk and clock,
// clients with outstanding requests, Byzantine replicas, and checkers that look at every delivery.
// One seed reproduces a run exactly: all randomness comes from the Rng, all time from the Scheduler.

import { createHash } from 'node:crypto';
import { makeCoreConfig } from '../../src/core/config.ts';
import { digestKey } from '../../src/core/crypto.ts';
import type { Quorums, FaultMode } from '../../src/core/quorum.ts';
import { maxFaults, quorumsFor } from '../../src/core/quorum.ts';
import type { Delivery, PersistRecord } from '../../src/core/ready.ts';
import type { BftError } from '../../src/errors.ts';
import { Executor } from '../../src/service/executor.ts';
import type { OrderedOperation, Service } from '../../src/service/service.ts';
import { type CheckpointBase, ReplicaCore, type ViewEra } from '../../src/core/replica.ts';
import type { View } from '../../src/core/view.ts';
import { acceptSigningPayload, decodeBatch, decodeMessage, encodeMessage, requestSigningPayload } from '../../src/protocol/codec.ts';
import {
  type ClientRequest,
  type Decision,
  MessageType,
  RequestKind,
  type Message,
  type ReplicaMessage,
  isClientMessage,
  isStateTransferMessage,
} from '../../src/protocol/messages.ts';
import { decodeViewPart, encodeViewPart } from '../../src/runtime/checkpointer.ts';
import { type Membership, describeView, genesisMembership } from '../../src/core/reconfiguration.ts';
import {
  type Reconfiguration,
  type SignedReconfiguration,
  decodeReconfigurationResult,
  encodeReconfigurationResult,
  encodeSignedReconfiguration,
  reconfigurationSigningPayload,
} from '../../src/protocol/reconfiguration.ts';
import { limits } from '../../src/constants.ts';
import { type Behaviour, type ByzantineContext, historyMax } from './byzantine.ts';
import { SimKeys } from './crypto.ts';
import { type CheckpointPart, type SimCheckpoint, SimDisk, buildCheckpoint, concatBytes } from './disk.ts';
import { SimNetwork } from './network.ts';
import { Rng } from './prng.ts';
import { type EventId, Scheduler } from './scheduler.ts';
import { SimStateTransfer, type SimStateTransferStats } from './state-transfer.ts';

export type Address = number | string;

export interface Violation {
  readonly kind:
    | 'agreement'
    | 'validity'
    | 'double-execution'
    | 'certificate'
    | 'client-answer'
    | 'vote-not-durable'
    /** A checkpoint taken or installed is not the state correct replicas had at its instance. */
    | 'checkpoint-state'
    /** At the end, a correct replica's state is not the state of its last decided instance. */
    | 'state'
    /** Two correct replicas disagree on the membership after an instance. */
    | 'view-agreement'
    /** A reconfiguration the View Manager did not sign, or for a stale view, was applied. */
    | 'reconfiguration'
    | 'liveness';
  readonly atMs: number;
  readonly detail: string;
}

export interface ByzantineAssignment {
  readonly id: number;
  readonly behaviour: Behaviour;
  /** Run a second honest core under the same identity (twins). */
  readonly twin?: boolean;
  readonly label: string;
}

export interface SimulationOptions {
  readonly seed: number;
  readonly replicas: number;
  readonly mode: FaultMode;
  readonly f?: number;
  readonly clients: number;
  readonly requestsPerClient: number;
  readonly signedRequests?: boolean;
  /** CoreConfig.batchFillPercent of every replica (default 0). */
  readonly batchFillPercent?: number;
  /**
   * With signed requests: a Byzantine client that keeps sending requests with bad signatures, straight to
   * the replicas. None of them may be ordered, and the other clients must still finish.
   */
  readonly forgingClient?: boolean;
  readonly byzantine?: readonly ByzantineAssignment[];
  /** Only for the test that proves the checkers catch a broken protocol. */
  readonly quorumsOverride?: Quorums;
  readonly tickMs?: number;
  readonly traceLinesMax?: number;
  /** The core's checkpoint schedule and retained window; by default the core's, which never checkpoints in a run this short. */
  readonly checkpoints?: SimCheckpointConfig;
  /** Padding in every operation (and so in every result), so that checkpoints span several chunks. */
  readonly operationPadBytes?: number;
  /** An operator wipes and restarts a replica that refused to start, this long after (default 300 ms). */
  readonly operatorWipeDelayMs?: number;
  /** Attesters a state transfer needs; only for the test that proves the checkers catch a broken rule. */
  readonly stateTransferQuorumOverride?: number;
  /**
   * Replicas a reconfiguration may add, with the ids after the genesis view's; they run once a decided
   * reconfiguration lists them (as an operator starts them), and members it removes are stopped.
   */
  readonly spareReplicas?: number;
  /** Replicas accept any View Manager signature: only for the test that proves the checkers catch it. */
  readonly brokenViewManagerCheck?: boolean;
}

export interface SimCheckpointConfig {
  readonly periodInstances: number;
  readonly periodBytes: number;
  readonly decisionsRetainedMax: number;
}

/** Timeouts for the simulator, in ticks of `tickMs` (10 ms): short, so that runs see many leader changes. */
export const simTiming = {
  requestTimeoutTicks: 40,
  heartbeatIntervalTicks: 10,
  leaderSilenceTimeoutTicks: 60,
  regencyTimeoutTicks: 40,
  retransmitTicks: 15,
  catchUpIntervalTicks: 5,
} as const;

const clientRetransmitMs = 400;
const clientBusyBackoffMs = 100;

const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder();

const operatorWipeDelayMsDefault = 300;
/** Replies each replica keeps per client (the executor's reply cache). */
export const simRepliesPerClientMax = 8;

function sha256(bytes: Uint8Array): Uint8Array {
  return createHash('sha256').update(bytes).digest();
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.from(a.buffer, a.byteOffset, a.length).equals(b);
}

/** The View Manager's client id in the simulator. */
const viewManagerClientId = 'vm';
const forgingClientId = 'forger';

/** One request of the simulated View Manager: what it sends, given the newest view, and what must happen. */
export interface ReconfigurationStep {
  readonly label: string;
  /** Built when its turn comes; null when nothing sensible can be asked of that view (skipped). */
  build(current: Membership, lastAccepted: SignedReconfiguration | null, sign: (reconfiguration: Reconfiguration) => SignedReconfiguration): { signed: SignedReconfiguration; expect: 'accepted' | 'refused' } | null;
}

/** The memberships a checkpoint keeps: its last part. */
function viewsOf(checkpoint: SimCheckpoint): ViewEra[] {
  const viewPart = checkpoint.manifest.parts.at(-1);
  if (viewPart?.name !== 'view') return [];
  return decodeViewPart(checkpoint.bytes.subarray(checkpoint.bytes.length - viewPart.bytes));
}

/** A membership's identity: two are the same only if every member, address, key and f agree. */
function membershipKey(membership: Membership): string {
  const described = encodeReconfigurationResult({ accepted: true, view: describeView(membership) });
  return `${Buffer.from(described).toString('base64')}/${membership.highestIdEver}`;
}

/** How long the simulated operator takes to start a replica a reconfiguration added, or stop one it removed. */
const operatorReactionMs = { min: 20, max: 300 } as const;

interface ReplicaState {
  readonly service: AppendLogService;
  readonly executor: Executor;
}

function freshState(): ReplicaState {
  const service = new AppendLogService();
  return { service, executor: new Executor(service, simRepliesPerClientMax) };
}

/** One replica incarnation: the core, its disk, and the service it executes. */
class SimReplica {
  readonly id: number;
  readonly correct: boolean;
  readonly isTwin: boolean;
  core: ReplicaCore | null = null;
  /** The write-ahead log (fsync: every record of a Ready is durable before its messages leave) and the checkpoints. */
  readonly disk = new SimDisk();
  /** kind/cid/regency of every durable vote, to check that no vote leaves before it is on disk. */
  readonly durableVotes = new Set<string>();
  state: ReplicaState = freshState();
  transfer: SimStateTransfer | null = null;
  /** The next Ready with records is cut short by a crash: a prefix of its records reaches the disk. */
  crashDuringNextPersist = false;
  /** Why the last start was refused (damaged disk), until the operator wipes it. */
  refusedStart: BftError | null = null;
  wipeScheduled = false;
  incarnation = 0;
  readonly history: ReplicaMessage[] = [];
  readonly byzantine: ByzantineAssignment | undefined;
  /** The view it is configured with: the genesis view, or for a replica a reconfiguration added, the view it joined. */
  startView: View | null = null;
  /** A spare that no reconfiguration has added yet, or a member one removed: the operator keeps it down. */
  idle = false;

  constructor(id: number, byzantine: ByzantineAssignment | undefined, isTwin: boolean) {
    this.id = id;
    this.byzantine = byzantine;
    this.correct = byzantine === undefined;
    this.isTwin = isTwin;
  }

  get name(): string {
    return this.isTwin ? `r${this.id}'` : `r${this.id}`;
  }

  get executor(): Executor {
    return this.state.executor;
  }

  remember(message: ReplicaMessage): void {
    this.history.push(message);
    if (this.history.length > historyMax) this.history.shift();
  }
}

/** The replicated service of the simulation: an append-only log; each result names the op's position. */
export class AppendLogService implements Service {
  private length = 0;
  executeOrdered(operations: readonly OrderedOperation[]): Uint8Array[] {
    return operations.map((op) => utf8.encode(`${++this.length}:${fromUtf8.decode(op.operation)}`));
  }
  executeUnordered(): Uint8Array {
    return utf8.encode(`${this.length}`);
  }
  *snapshot(): Generator<Uint8Array> {
    yield utf8.encode(`${this.length}`);
  }
  async installSnapshot(pieces: AsyncIterable<Uint8Array>): Promise<void> {
    const decoder = new TextDecoder();
    let text = '';
    for await (const piece of pieces) text += decoder.decode(piece, { stream: true });
    this.length = Number(text + decoder.decode());
  }
}

interface Outstanding {
  readonly request: ClientRequest;
  readonly bytes: Uint8Array;
  readonly replies: Map<number, string>;
  /** The one retransmission timer of this request: every path reschedules it, none adds another. */
  retransmitTimer: EventId | null;
}

class SimClient {
  readonly id: string;
  seq = 0;
  completed = 0;
  outstanding: Outstanding | null = null;

  constructor(id: string) {
    this.id = id;
  }
}

export interface SimulationResult {
  readonly seed: number;
  readonly violations: readonly Violation[];
  readonly trace: readonly string[];
  readonly decidedInstances: number;
  readonly completedRequests: number;
  readonly leaderChanges: number;
  readonly simulatedMs: number;
  readonly droppedByReason: Readonly<Record<string, number>>;
  readonly disk: DiskFaultStats;
  /** The View Manager's requests applied and refused, and the views the run went through after genesis. */
  readonly reconfigurations: { readonly accepted: number; readonly refused: number; readonly views: number };
  /** Requests the forging client sent (SimulationOptions.forgingClient). */
  readonly forgedRequests: number;
}

/** What the disk and state-transfer side of a run did, for the summary. */
export interface DiskFaultStats {
  checkpointsTaken: number;
  tornCrashes: number;
  bitsFlipped: number;
  refusedStarts: number;
  wipes: number;
  stateTransfersStarted: number;
  stateTransfersInstalled: number;
  stateTransfersFailed: number;
  badChunksDetected: number;
  badOffersDetected: number;
}

function emptyDiskStats(): DiskFaultStats {
  return {
    checkpointsTaken: 0,
    tornCrashes: 0,
    bitsFlipped: 0,
    refusedStarts: 0,
    wipes: 0,
    stateTransfersStarted: 0,
    stateTransfersInstalled: 0,
    stateTransfersFailed: 0,
    badChunksDetected: 0,
    badOffersDetected: 0,
  };
}

export class Simulation {
  readonly options: SimulationOptions;
  readonly rng: Rng;
  readonly scheduler = new Scheduler();
  readonly network: SimNetwork<Address>;
  readonly view: View;
  readonly quorums: Quorums;
  readonly keys: SimKeys;
  readonly tickMs: number;
  readonly violations: Violation[] = [];
  private readonly slots = new Map<number, SimReplica[]>();
  private readonly clients = new Map<string, SimClient>();
  private readonly trace: string[] = [];
  private readonly traceLinesMax: number;
  private readonly byzantineRng: Rng;
  private readonly diskRng: Rng;
  /** cid → digest key, from the first correct replica that decided it. */
  private readonly decided = new Map<number, string>();
  /**
   * The memberships in the order they took effect, each from the first correct replica that applied it,
   * with the first instance it ordered: every correct replica must apply the same ones at the same place.
   */
  private readonly eras: Array<{ readonly era: ViewEra; readonly key: string; readonly quorums: Quorums }> = [];
  /** Instances after which a correct replica kept its view. */
  private readonly unchangedAfter = new Set<number>();
  /** The View Manager's requests: what it expects of each (by clientId/seq), to check the verdicts. */
  private readonly reconfigurations = new Map<string, { readonly expect: 'accepted' | 'refused' | 'either'; readonly label: string }>();
  /** cid → that decision with its requests: what correct replicas executed, to rebuild their state at any instance. */
  private readonly decidedDeliveries = new Map<number, Delivery>();
  /** cid → the state bytes (checkpoint parts) correct replicas have after executing it. */
  private readonly correctStates = new Map<number, Uint8Array>();
  private readonly diskStats = emptyDiskStats();
  /** Transfer statistics of incarnations that are gone. */
  private readonly retiredTransfers: SimStateTransferStats[] = [];
  /** clientId/seq → operation the client issued. */
  private readonly issued = new Map<string, string>();
  private forgedRequests = 0;
  /** Position in the replicated log → the request a client was told was executed there. */
  private readonly answeredPositions = new Map<string, string>();
  private readonly codecDrops: Record<string, number> = {};
  /** The View Manager's requests, one at a time in order; each built when its turn comes. */
  private readonly viewManagerQueue: ReconfigurationStep[] = [];
  private viewManagerBusy = false;
  private readonly viewManager = new SimClient(viewManagerClientId);
  /** The last request the View Manager had accepted, for replaying it. */
  private lastAccepted: SignedReconfiguration | null = null;
  private reconfigurationVerdicts = { accepted: 0, refused: 0 };
  private readonly pendingSigned = new Map<number, SignedReconfiguration>();

  constructor(options: SimulationOptions) {
    this.options = options;
    this.rng = new Rng(options.seed >>> 0);
    this.byzantineRng = this.rng.fork('byzantine');
    this.diskRng = this.rng.fork('disk');
    this.keys = new SimKeys(this.rng.fork('keys'));
    this.tickMs = options.tickMs ?? 10;
    this.traceLinesMax = options.traceLinesMax ?? 4000;
    const members = Array.from({ length: options.replicas }, (_, i) => i);
    this.view = { number: 0, mode: options.mode, f: options.f ?? maxFaults(options.replicas, options.mode), members };
    this.quorums = options.quorumsOverride ?? quorumsFor(options.replicas, this.view.f, options.mode);
    this.network = new SimNetwork<Address>(this.rng.fork('network'), this.scheduler, (from, to, bytes) =>
      this.deliver(from, to, bytes),
    );
    const genesis = genesisMembership(this.view);
    this.eras.push({ era: { membership: genesis, firstCid: 0 }, key: membershipKey(genesis), quorums: this.quorums });
    for (const id of members) {
      const byzantine = options.byzantine?.find((b) => b.id === id);
      const nodes = [new SimReplica(id, byzantine, false)];
      if (byzantine?.twin) nodes.push(new SimReplica(id, byzantine, true));
      this.slots.set(id, nodes);
      for (const node of nodes) this.start(node);
    }
    for (let id = options.replicas; id < options.replicas + (options.spareReplicas ?? 0); id++) {
      const spare = new SimReplica(id, undefined, false);
      spare.idle = true;
      this.slots.set(id, [spare]);
    }
    if (options.forgingClient === true && options.signedRequests === true) {
      const forger = this.rng.fork('forging-client');
      this.scheduler.after(forger.int(0, 100), () => this.forgeRequest(forger, 1));
    }
    for (let i = 0; i < options.clients; i++) {
      const client = new SimClient(`c${i}`);
      this.clients.set(client.id, client);
      // Stagger client starts so that batches of different sizes form.
      this.scheduler.after(this.rng.int(0, 50), () => this.issueNext(client));
    }
  }

  // -------------------------------------------------------------------------------------------
  // Trace and checkers.

  log(line: string): void {
    this.trace.push(`${String(this.scheduler.now()).padStart(7)}ms ${line}`);
    if (this.trace.length > this.traceLinesMax) this.trace.splice(0, this.trace.length - this.traceLinesMax);
  }

  private violation(kind: Violation['kind'], detail: string): void {
    this.violations.push({ kind, atMs: this.scheduler.now(), detail });
    this.log(`VIOLATION ${kind}: ${detail}`);
  }

  /** The membership that ordered instance `cid`, as the replicas applied it, with its quorums. */
  private eraOf(cid: number): { readonly era: ViewEra; readonly quorums: Quorums } {
    for (let i = this.eras.length - 1; i >= 0; i--) {
      const entry = this.eras[i] as (typeof this.eras)[number];
      if (entry.era.firstCid <= cid) return entry;
    }
    return this.eras[0] as (typeof this.eras)[number];
  }

  /** Does `decision` carry a quorum of valid, distinct signatures of the view that ordered its instance? */
  private certificateProves(node: SimReplica, decision: Decision): boolean {
    const { era, quorums } = this.eraOf(decision.cid);
    const view = era.membership.view;
    const payload = acceptSigningPayload(view.number, decision.cid, decision.regency, sha256(decision.batch));
    const signers = new Set(decision.votes.map((v) => v.replica));
    const verifier = this.keys.cryptoFor(node.id);
    const valid = decision.votes.filter((v) => view.members.includes(v.replica) && verifier.verifyReplica(v.replica, payload, v.signature));
    return signers.size === decision.votes.length && valid.length === decision.votes.length && valid.length >= quorums.accept;
  }

  /**
   * DESIGN §6: every correct replica applies the same reconfigurations after the same instances. The
   * first correct replica to apply one records it; the others must match it.
   */
  private checkMembership(node: SimReplica, delivery: Delivery): void {
    const cid = delivery.decision.cid;
    const recorded = this.eras.find((entry) => entry.era.firstCid === cid + 1 && entry.era.firstCid > 0);
    if (delivery.membership === undefined) {
      if (recorded !== undefined) this.violation('view-agreement', `${node.name} did not change the view after cid ${cid}; another correct replica moved to view ${recorded.era.membership.view.number}`);
      else this.unchangedAfter.add(cid);
      return;
    }
    if (this.unchangedAfter.has(cid)) {
      this.violation('view-agreement', `${node.name} changed the view after cid ${cid}; another correct replica did not`);
      return;
    }
    const key = membershipKey(delivery.membership);
    if (recorded !== undefined) {
      if (recorded.key !== key) this.violation('view-agreement', `${node.name} applied another membership after cid ${cid} than a correct replica before it`);
      return;
    }
    const last = this.eras[this.eras.length - 1] as (typeof this.eras)[number];
    if (cid + 1 <= last.era.firstCid || delivery.membership.view.number !== last.era.membership.view.number + 1) {
      this.violation('view-agreement', `${node.name} moved to view ${delivery.membership.view.number} after cid ${cid}; the last view was ${last.era.membership.view.number} from cid ${last.era.firstCid}`);
      return;
    }
    const view = delivery.membership.view;
    this.eras.push({ era: { membership: delivery.membership, firstCid: cid + 1 }, key, quorums: quorumsFor(view.members.length, view.f, view.mode) });
    this.log(`view ${view.number} from cid ${cid + 1}: [${view.members.join(',')}] f=${view.f}`);
    this.followMembership(last.era.membership, delivery.membership);
  }

  /** The operator: starts the replicas a reconfiguration added, and stops the ones it removed. */
  private followMembership(previous: Membership, next: Membership): void {
    for (const id of next.view.members) {
      if (previous.view.members.includes(id)) continue;
      for (const node of this.slots.get(id) ?? []) {
        if (!node.idle) continue;
        node.idle = false;
        node.startView = next.view;
        this.scheduler.after(this.rng.int(operatorReactionMs.min, operatorReactionMs.max), () => {
          if (node.core === null && !node.idle && this.start(node)) this.log(`operator: started ${node.name}, added in view ${next.view.number}`);
        });
      }
    }
    for (const id of previous.view.members) {
      if (next.view.members.includes(id)) continue;
      this.scheduler.after(this.rng.int(operatorReactionMs.min, operatorReactionMs.max), () => {
        for (const node of this.slots.get(id) ?? []) {
          node.idle = true;
          if (node.core !== null) this.log(`operator: stopped ${node.name}, removed in view ${next.view.number}`);
          node.core = null;
        }
      });
    }
  }

  private checkDelivery(node: SimReplica, delivery: Delivery): void {
    const { decision, requests } = delivery;
    const digest = sha256(decision.batch);
    const key = digestKey(digest);
    // The certificate must prove the decision to a third party, independently of the core.
    if (!this.certificateProves(node, decision)) {
      this.violation('certificate', `${node.name} delivered cid ${decision.cid} without a valid certificate`);
    }
    this.checkMembership(node, delivery);
    const decoded = decodeBatch(decision.batch);
    if (!decoded.ok || decoded.batch.requests.length !== requests.length) {
      this.violation('validity', `${node.name} delivered requests that are not the decided batch at cid ${decision.cid}`);
    }
    const first = this.decided.get(decision.cid);
    if (first === undefined) {
      this.decided.set(decision.cid, key);
      this.decidedDeliveries.set(decision.cid, delivery);
    } else if (first !== key) {
      this.violation('agreement', `cid ${decision.cid}: ${node.name} decided ${key.slice(0, 12)}, another correct replica ${first.slice(0, 12)}`);
    }
    for (const request of requests) {
      if (request.clientId === forgingClientId) {
        this.violation('validity', `cid ${decision.cid} orders ${request.clientId}/${request.seq}, whose signature is bad`);
        continue;
      }
      const issued = this.issued.get(`${request.clientId}/${request.seq}`);
      // The View Manager's operations are binary; they are kept as latin1 text, byte for byte.
      const operation = request.kind === RequestKind.RECONFIGURATION ? Buffer.from(request.operation).toString('latin1') : fromUtf8.decode(request.operation);
      if (issued === undefined || issued !== operation) {
        this.violation('validity', `cid ${decision.cid} orders ${request.clientId}/${request.seq}, which no client issued`);
      }
    }
  }

  /** A certificate a correct replica shows to others (catch-up, leader change) must convince a third party. */
  private checkCertificatesSent(node: SimReplica, message: ReplicaMessage): void {
    const decision =
      message.type === MessageType.DECISION
        ? message.decision
        : message.type === MessageType.STOPDATA || message.type === MessageType.SYNC
          ? message.lastDecision
          : null;
    if (decision === null) return;
    if (!this.certificateProves(node, decision)) {
      this.violation('certificate', `${node.name} sent a certificate for cid ${decision.cid} that does not prove it`);
    }
  }

  /** DESIGN §2: a replica persists the WRITE or ACCEPT it is about to send before sending it. */
  private checkVoteDurable(node: SimReplica, message: ReplicaMessage): void {
    if (message.type !== MessageType.WRITE && message.type !== MessageType.ACCEPT) return;
    const kind = message.type === MessageType.WRITE ? 'write' : 'accept';
    if (!node.durableVotes.has(`${kind}/${message.cid}/${message.regency}`)) {
      this.violation('vote-not-durable', `${node.name} sent ${kind.toUpperCase()} cid ${message.cid} regency ${message.regency} before persisting it`);
    }
  }

  // -------------------------------------------------------------------------------------------
  // Replicas.

  private configFor(node: SimReplica) {
    const checkpoints = this.options.checkpoints;
    return makeCoreConfig(node.id, node.startView ?? this.view, {
      ...simTiming,
      batchRequestsMax: 8,
      clientInFlightMax: 4,
      requireSignedRequests: this.options.signedRequests ?? false,
      batchFillPercent: this.options.batchFillPercent ?? 0,
      ...(checkpoints
        ? {
            checkpointPeriodInstances: checkpoints.periodInstances,
            checkpointPeriodBytes: checkpoints.periodBytes,
            decisionsRetainedMax: checkpoints.decisionsRetainedMax,
          }
        : {}),
    });
  }

  // -------------------------------------------------------------------------------------------
  // Replicated state: checkpoints of it, and what it must be.

  /** The parts of a checkpoint of `state` after instance `cid`: the real streamed snapshots, gathered, and the memberships. */
  private stateParts(state: ReplicaState, cid: number): CheckpointPart[] {
    return [
      { name: 'service', bytes: concatBytes(state.service.snapshot()) },
      { name: 'replies', bytes: concatBytes(state.executor.snapshotReplies()) },
      { name: 'view', bytes: encodeViewPart(this.erasAfter(cid)) },
    ];
  }

  /** The memberships as correct replicas remember them after instance `cid` (what its checkpoint keeps). */
  private erasAfter(cid: number): ViewEra[] {
    return this.eras.filter((entry) => entry.era.firstCid <= cid + 1).map((entry) => entry.era).slice(-limits.viewEraHistoryMax);
  }

  private stateBytes(state: ReplicaState, cid: number): Uint8Array {
    return concatBytes(this.stateParts(state, cid).map((part) => part.bytes));
  }

  /**
   * The state correct replicas have after instance `cid`, rebuilt by executing what they decided from
   * the start; or why it cannot be (an instance no correct replica delivered, which no checkpoint of a
   * correct replica can cover).
   */
  private rebuildState(cid: number): ReplicaState | string {
    const state = freshState();
    for (let c = 0; c <= cid; c++) {
      const delivery = this.decidedDeliveries.get(c);
      if (delivery === undefined) return `no correct replica delivered instance ${c}`;
      const problem = state.executor.outOfOrder(delivery.requests);
      if (problem !== null) return `instance ${c} would execute ${problem}`;
      state.executor.execute(delivery);
    }
    return state;
  }

  private correctStateBytes(cid: number): Uint8Array | string {
    const known = this.correctStates.get(cid);
    if (known !== undefined) return known;
    const state = this.rebuildState(cid);
    if (typeof state === 'string') return state;
    const bytes = this.stateBytes(state, cid);
    this.correctStates.set(cid, bytes);
    return bytes;
  }

  /** Checks that `bytes`, the state of a checkpoint of `cid` on `node`, is what correct replicas had there. */
  private checkCheckpointState(node: SimReplica, cid: number, bytes: Uint8Array, what: string): boolean {
    if (!node.correct) return true;
    const expected = this.correctStateBytes(cid);
    if (typeof expected === 'string') {
      this.violation('checkpoint-state', `${node.name} ${what} checkpoint ${cid}, but ${expected}`);
      return false;
    }
    if (!equalBytes(expected, bytes)) {
      this.violation('checkpoint-state', `${node.name} ${what} checkpoint ${cid} (${bytes.length} B) that differs from the correct state (${expected.length} B)`);
      return false;
    }
    return true;
  }

  /** Delivery.checkpoint: the state after `cid` goes to the disk as a checkpoint; the log forgets what it covers. */
  private takeCheckpoint(node: SimReplica, cid: number): void {
    const views = this.erasAfter(cid);
    const checkpoint = buildCheckpoint(cid, views.at(-1)?.membership.view.number ?? 0, this.stateParts(node.state, cid), node.id);
    this.checkCheckpointState(node, cid, checkpoint.bytes, 'took');
    node.disk.addCheckpoint(checkpoint);
    this.diskStats.checkpointsTaken++;
  }

  /**
   * The state of a verified checkpoint (own, at start; or fetched) as a fresh service and executor. The
   * real install is asynchronous (streamed pieces), which a synchronous simulator cannot await: the sim
   * rebuilds the state by executing what correct replicas decided up to the checkpoint's instance, and
   * requires the checkpoint's bytes to be exactly that state's snapshot (so the bytes installed are
   * the state, and the checker above is the install's proof). installs-through-the-real-API is tested
   * on the same bytes in disk-faults.test.ts.
   */
  private stateOf(node: SimReplica, checkpoint: SimCheckpoint, what: string): ReplicaState | null {
    const cid = checkpoint.manifest.cid;
    if (!this.checkCheckpointState(node, cid, checkpoint.bytes, what)) return null;
    const state = this.rebuildState(cid);
    if (typeof state === 'string') {
      // A Byzantine replica's own checkpoint: nothing correct vouches for it; it starts empty.
      this.log(`${node.name} cannot rebuild checkpoint ${cid}: ${state}`);
      return null;
    }
    return state;
  }

  /** Final check: every correct replica's state is the state of its last decided instance. */
  checkFinalStates(): void {
    for (const nodes of this.slots.values()) {
      for (const node of nodes) {
        const status = node.core?.status();
        if (!node.correct || status === undefined || status.lastDecidedCid < 0 || status.awaitingStateTransfer) continue;
        const expected = this.correctStateBytes(status.lastDecidedCid);
        if (typeof expected === 'string') {
          this.violation('state', `${node.name} decided up to ${status.lastDecidedCid}, but ${expected}`);
        } else if (!equalBytes(expected, this.stateBytes(node.state, status.lastDecidedCid))) {
          this.violation('state', `${node.name}'s state after instance ${status.lastDecidedCid} differs from the correct one`);
        }
      }
    }
  }

  /** Starts an incarnation from what the disk holds; false when the disk refuses (damage), as the real storage does. */
  private start(node: SimReplica): boolean {
    node.incarnation++;
    node.crashDuringNextPersist = false;
    this.retireTransfer(node);
    const opened = node.disk.open();
    if (!opened.ok) {
      node.core = null;
      node.refusedStart = opened.error;
      this.diskStats.refusedStarts++;
      this.log(`${node.name} refuses to start: ${opened.error.code} ${opened.error.message}`);
      this.scheduleOperatorWipe(node);
      return false;
    }
    node.refusedStart = null;
    if (opened.truncatedTail) this.log(`${node.name} cut a damaged last log record off`);
    node.state = freshState();
    let base: CheckpointBase | undefined;
    const checkpoint = opened.checkpoint;
    if (checkpoint !== null) {
      const state = this.stateOf(node, checkpoint, 'restarts from');
      if (state === null) {
        // Already a violation (correct replica) or a Byzantine one with nothing to vouch for it: stay down.
        node.core = null;
        return false;
      }
      node.state = state;
      base = { cid: checkpoint.manifest.cid, clientSeqs: state.executor.clientSeqs(), views: viewsOf(checkpoint) };
    }
    const crypto = this.keys.cryptoFor(node.id);
    const core = new ReplicaCore(this.configFor(node), this.options.brokenViewManagerCheck ? { ...crypto, verifyViewManager: () => true } : crypto, {
      ...(base ? { base } : {}),
      ...(opened.records.length > 0 ? { restore: opened.records } : {}),
      ...(node.disk.amnesic ? { amnesic: true } : {}),
      ...(this.options.quorumsOverride ? { quorumsOverride: this.options.quorumsOverride } : {}),
    });
    node.core = core;
    const incarnation = node.incarnation;
    node.transfer = this.makeTransfer(node, incarnation);
    // Replay the durable log after the checkpoint into the service, as the process does on start, and
    // take the checkpoints the schedule met there that a crash kept from being taken.
    const missedCheckpoints = new Set(core.restoredCheckpointCids);
    let next = base === undefined ? 0 : base.cid + 1;
    for (const record of opened.records) {
      if (record.kind !== 'decision' || record.decision.cid !== next) continue;
      next++;
      const decoded = decodeBatch(record.decision.batch);
      if (!decoded.ok) continue;
      const answers = core.restoredReconfigurationResults(record.decision.cid);
      const membership = core.restoredMembershipAfter(record.decision.cid);
      const delivery: Delivery = {
        decision: record.decision,
        requests: decoded.batch.requests,
        ...(answers === undefined ? {} : { reconfigurationResults: answers }),
        ...(membership === undefined ? {} : { membership }),
      };
      // A decision made durable by a crash mid-Ready was never delivered: check it like any delivery.
      if (node.correct) this.checkDelivery(node, delivery);
      this.execute(node, delivery, false);
      if (missedCheckpoints.has(record.decision.cid) && node.disk.checkpoint(record.decision.cid) === undefined) {
        this.takeCheckpoint(node, record.decision.cid);
      }
    }
    const tick = (): void => {
      if (node.core === null || node.incarnation !== incarnation) return;
      node.core.tick();
      this.flush(node);
      this.scheduler.after(this.tickMs, tick);
    };
    this.scheduler.after(this.rng.int(1, this.tickMs), tick);
    return true;
  }

  private makeTransfer(node: SimReplica, incarnation: number): SimStateTransfer {
    const crypto = this.keys.cryptoFor(node.id);
    const alive = () => node.core !== null && node.incarnation === incarnation;
    const sim = this;
    return new SimStateTransfer({
      me: node.id,
      // The view the replica is in now: whom it asks and serves, and how many must attest.
      get view() {
        return node.core?.view ?? node.startView ?? sim.view;
      },
      get quorum() {
        const view = node.core?.view ?? node.startView ?? sim.view;
        return sim.options.stateTransferQuorumOverride ?? quorumsFor(view.members.length, view.f, view.mode).includesCorrect;
      },
      now: () => this.scheduler.now(),
      after: (delayMs, action) => {
        this.scheduler.after(delayMs, () => {
          if (!alive()) return;
          action();
          this.flush(node);
        });
      },
      send: (to, message) => this.send(node, to, message, encodeMessage(message)),
      sign: (payload) => crypto.sign(payload),
      verify: (replica, payload, signature) => crypto.verifyReplica(replica, payload, signature),
      checkpoints: () => node.disk.checkpoints,
      fetched: (checkpoint, attesters) => this.installFetched(node, checkpoint, attesters),
      failed: () => node.core?.stateTransferFailed(),
      log: (line) => this.log(line.replace(`r${node.id} `, `${node.name} `)),
    });
  }

  /** A fetched checkpoint, every chunk matching a manifest the quorum attests: persist, install, tell the core. */
  private installFetched(node: SimReplica, checkpoint: SimCheckpoint, attesters: readonly number[]): void {
    const core = node.core;
    if (core === null) return;
    const cid = checkpoint.manifest.cid;
    // Into the store first, as the real state transfer does: a crash after this restarts from it.
    node.disk.addCheckpoint(checkpoint);
    const state = this.stateOf(node, checkpoint, 'installed');
    if (state === null) {
      core.stateTransferFailed();
      return;
    }
    node.state = state;
    core.installCheckpoint({ cid, clientSeqs: state.executor.clientSeqs(), views: viewsOf(checkpoint) });
    this.log(`${node.name} installed checkpoint ${cid} (attested by ${attesters.map((a) => `r${a}`).join(' ')})`);
  }

  private retireTransfer(node: SimReplica): void {
    if (node.transfer !== null) this.retiredTransfers.push(node.transfer.stats());
    node.transfer = null;
  }

  private scheduleOperatorWipe(node: SimReplica): void {
    if (node.wipeScheduled) return;
    node.wipeScheduled = true;
    this.scheduler.after(this.options.operatorWipeDelayMs ?? operatorWipeDelayMsDefault, () => {
      node.wipeScheduled = false;
      this.log(`operator: ${node.name} refused to start; wiping its disk and starting it again`);
      this.wipeNode(node);
    });
  }

  crash(id: number): void {
    for (const node of this.slots.get(id) ?? []) {
      if (node.core === null) continue;
      node.core = null;
      node.crashDuringNextPersist = false;
      this.log(`crash ${node.name}`);
    }
  }

  restart(id: number): void {
    for (const node of this.slots.get(id) ?? []) {
      node.crashDuringNextPersist = false;
      if (node.core !== null || node.wipeScheduled || node.idle) continue;
      const summary = `${node.disk.log.length} log records, checkpoints [${node.disk.checkpoints.map((c) => c.manifest.cid).join(',')}]`;
      if (this.start(node)) this.log(`restart ${node.name} from ${summary}${node.disk.amnesic ? ' (amnesic)' : ''}`);
    }
  }

  /** The disk is lost: the replica starts again with nothing, knowing that it forgot (amnesic). */
  wipe(id: number): void {
    for (const node of this.slots.get(id) ?? []) this.wipeNode(node);
  }

  private wipeNode(node: SimReplica): void {
    if (node.idle) return;
    if (node.core !== null) this.log(`crash ${node.name}`);
    node.core = null;
    node.disk.wipe();
    node.durableVotes.clear();
    this.diskStats.wipes++;
    this.log(`wipe ${node.name}: empty disk, amnesic`);
    this.start(node);
  }

  /** The next Ready with records crashes the replica part way through persisting it. */
  crashDuringNextPersist(id: number): void {
    for (const node of this.slots.get(id) ?? []) if (node.core !== null) node.crashDuringNextPersist = true;
  }

  /** Flips a bit on a replica's disk: in a log record that is not the last, or in a checkpoint. */
  flipBit(id: number, where: 'log' | 'checkpoint'): boolean {
    let flipped = false;
    for (const node of this.slots.get(id) ?? []) {
      const what = where === 'log' ? node.disk.flipLogBit(this.diskRng) : node.disk.flipCheckpointBit(this.diskRng);
      this.log(`${node.name}: ${what === null ? `nothing to flip in its ${where}` : `flipped a bit in ${what}`}`);
      if (what !== null) {
        flipped = true;
        this.diskStats.bitsFlipped++;
      }
    }
    return flipped;
  }

  /** What the tests look at: one replica's disk, refusal and state transfer. */
  replicaDisk(id: number): { disk: SimDisk; refusedStart: BftError | null; transfer: SimStateTransferStats | null } | null {
    const node = this.slots.get(id)?.[0];
    if (node === undefined) return null;
    return { disk: node.disk, refusedStart: node.refusedStart, transfer: node.transfer?.stats() ?? null };
  }

  /** Every correct replica is up, not fetching a checkpoint, and at the highest instance any of them decided. */
  allCaughtUp(): boolean {
    let highest = -1;
    const cids: number[] = [];
    for (const nodes of this.slots.values()) {
      for (const node of nodes) {
        if (!node.correct || node.idle) continue;
        const status = node.core?.status();
        if (status === undefined || status.awaitingStateTransfer) return false;
        cids.push(status.lastDecidedCid);
        highest = Math.max(highest, status.lastDecidedCid);
      }
    }
    return cids.every((cid) => cid === highest);
  }

  /** Liveness of the replicas themselves: after the run, every correct one caught up (wiped ones included). */
  checkCaughtUp(): void {
    if (this.allCaughtUp()) return;
    const states: string[] = [];
    for (const nodes of this.slots.values()) {
      for (const node of nodes) {
        if (!node.correct || node.idle) continue;
        const status = node.core?.status();
        states.push(
          status === undefined
            ? `${node.name} down${node.refusedStart ? ` (refused: ${node.refusedStart.code})` : ''}`
            : `${node.name} at ${status.lastDecidedCid}${status.awaitingStateTransfer ? ' awaiting a checkpoint' : ''}${status.amnesiaFloorCid !== null ? ` amnesic (floor ${status.amnesiaFloorCid})` : ''}`,
        );
      }
    }
    this.violation('liveness', `correct replicas did not all catch up: ${states.join(', ')}`);
  }

  /** Cut every link between replicas of different groups, both ways; clients still reach everyone. */
  splitReplicas(groups: readonly (readonly number[])[]): void {
    const groupOf = new Map<number, number>();
    groups.forEach((group, index) => {
      for (const id of group) groupOf.set(id, index);
    });
    for (const a of this.view.members) {
      for (const b of this.view.members) {
        if (a !== b && groupOf.get(a) !== groupOf.get(b)) this.network.cut(a, b);
      }
    }
    this.log(`split ${groups.map((g) => `[${g.join(',')}]`).join(' | ')}`);
  }

  isCrashed(id: number): boolean {
    return (this.slots.get(id) ?? []).every((node) => node.core === null);
  }

  replicaStatus(id: number) {
    return this.slots.get(id)?.[0]?.core?.status() ?? null;
  }

  private deliver(from: Address, to: Address, bytes: Uint8Array): void {
    if (typeof to === 'string') return this.clientReceive(to, from, bytes);
    for (const node of this.slots.get(to) ?? []) {
      const core = node.core;
      if (core === null) continue;
      const decoded = decodeMessage(bytes);
      if (!decoded.ok) {
        this.codecDrops[decoded.reason] = (this.codecDrops[decoded.reason] ?? 0) + 1;
        continue;
      }
      const message = decoded.message;
      if (message.type === MessageType.REQUEST) {
        if (typeof from === 'string') core.receiveRequest(from, message.request);
      } else if (typeof from === 'number' && !isClientMessage(message)) {
        if (!node.correct) node.remember(message);
        // State-transfer messages are the state-transfer module's, as the driver routes them.
        if (isStateTransferMessage(message)) node.transfer?.receive(from, message);
        else core.step(from, message);
      }
      this.flush(node);
    }
  }

  private send(from: SimReplica, to: number, message: ReplicaMessage, encoded: Uint8Array): void {
    if (from.byzantine === undefined) return this.network.send(from.id, to, encoded);
    const context: ByzantineContext = {
      id: from.id,
      rng: this.byzantineRng,
      crypto: this.keys.cryptoFor(from.id),
      history: from.history,
      signedRequests: this.options.signedRequests ?? false,
      checkpoint: (cid) => from.disk.checkpoint(cid),
      lastDecidedCid: () => from.core?.status().lastDecidedCid ?? -1,
    };
    for (const out of from.byzantine.behaviour(context, to, message)) {
      this.network.send(from.id, to, out === message ? encoded : encodeMessage(out));
    }
  }

  private flush(node: SimReplica): void {
    const core = node.core;
    if (core === null) return;
    while (core.hasReady()) {
      const ready = core.ready();
      if (node.crashDuringNextPersist && ready.persist.length > 0) {
        // Power lost part way: a prefix is durable, the record being written is torn (the WAL cuts it
        // off at open), and nothing of this Ready was sent or executed.
        const durable = this.diskRng.int(0, ready.persist.length);
        this.persist(node, ready.persist.slice(0, durable));
        node.core = null;
        node.crashDuringNextPersist = false;
        this.diskStats.tornCrashes++;
        this.log(
          `crash ${node.name} while persisting: ${durable} of ${ready.persist.length} records durable` +
            `${durable < ready.persist.length ? ', the next one torn' : ''}; none of its ${ready.messages.length} messages sent`,
        );
        return;
      }
      this.persist(node, ready.persist);
      for (const out of ready.messages) {
        const encoded = encodeMessage(out.message);
        if (node.correct) {
          this.checkVoteDurable(node, out.message);
          this.checkCertificatesSent(node, out.message);
        }
        if (!node.correct) node.remember(out.message);
        if (out.message.type === MessageType.SYNC) {
          this.log(`${node.name} SYNC regency ${out.message.regency} cid ${out.message.cid} (${out.message.batch.length} B)`);
        } else if (out.message.type === MessageType.STOP && out.message.requests.length > 0) {
          this.log(`${node.name} STOP → regency ${out.message.regency}`);
        }
        if (out.to === 'others') {
          // The members of the view the replica is in now (the core resolved old-view ones itself).
          for (const member of core.view.members) if (member !== node.id) this.send(node, member, out.message, encoded);
        } else {
          this.send(node, out.to, out.message, encoded);
        }
      }
      for (const delivery of ready.deliveries) {
        if (node.correct) this.checkDelivery(node, delivery);
        this.log(
          `${node.name} decide cid ${delivery.decision.cid} regency ${delivery.decision.regency} ` +
            `${digestKey(sha256(delivery.decision.batch)).slice(0, 8)} [${delivery.requests.map((r) => `${r.clientId}/${r.seq}`).join(' ')}]`,
        );
        this.execute(node, delivery, true);
        if (delivery.checkpoint === true) this.takeCheckpoint(node, delivery.decision.cid);
      }
      for (const notice of ready.notices) {
        if (notice.kind === 'cached-reply') {
          const result = node.executor.cachedReply(notice.clientId, notice.seq);
          if (result !== undefined) this.sendReply(node, notice.clientId, notice.seq, result);
        } else {
          const busy: Message = { type: MessageType.BUSY, clientId: notice.clientId, seq: notice.seq, reason: notice.reason };
          this.network.send(node.id, notice.clientId, encodeMessage(busy));
        }
      }
      if (ready.stateTransfer !== null) node.transfer?.start(ready.stateTransfer.minCid);
      core.advance();
    }
    if (node.disk.amnesic && core.status().amnesiaFloorCid === null) {
      node.disk.amnesic = false;
      this.log(`${node.name} is past every instance it may have voted in before its disk was lost`);
    }
  }

  private persist(node: SimReplica, records: readonly PersistRecord[]): void {
    node.disk.append(records);
    for (const record of records) {
      if (record.kind === 'write' || record.kind === 'accept') node.durableVotes.add(`${record.kind}/${record.cid}/${record.regency}`);
    }
  }

  private execute(node: SimReplica, delivery: Delivery, reply: boolean): void {
    // The executor refuses a second execution by assertion; report it as a finding instead.
    const problem = node.executor.outOfOrder(delivery.requests);
    if (problem !== null) {
      if (node.correct) this.violation('double-execution', `${node.name} was handed ${problem}`);
      return;
    }
    for (const executed of node.executor.execute(delivery)) {
      if (reply) this.sendReply(node, executed.clientId, executed.seq, executed.result);
    }
  }

  private sendReply(node: SimReplica, clientId: string, seq: number, result: Uint8Array): void {
    const reply: Message = { type: MessageType.REPLY, view: node.core?.view.number ?? this.view.number, clientId, seq, result };
    this.network.send(node.id, clientId, encodeMessage(reply));
  }

  // -------------------------------------------------------------------------------------------
  // The View Manager.

  /** Queue a request of the View Manager; it is built and sent once the ones before it have verdicts. */
  reconfigure(step: ReconfigurationStep): void {
    this.viewManagerQueue.push(step);
    this.nextReconfiguration();
  }

  get reconfigurationResults(): { readonly accepted: number; readonly refused: number } {
    return { ...this.reconfigurationVerdicts };
  }

  private nextReconfiguration(): void {
    if (this.viewManagerBusy) return;
    const step = this.viewManagerQueue.shift();
    if (step === undefined) return;
    const current = (this.eras[this.eras.length - 1] as (typeof this.eras)[number]).era.membership;
    const built = step.build(current, this.lastAccepted, (reconfiguration) => ({
      reconfiguration,
      signature: this.keys.signViewManager(reconfigurationSigningPayload(reconfiguration)),
    }));
    if (built === null) {
      this.log(`vm: ${step.label}: nothing to ask of view ${current.view.number}`);
      this.nextReconfiguration();
      return;
    }
    this.viewManagerBusy = true;
    const client = this.viewManager;
    client.seq++;
    const unsigned: ClientRequest = {
      clientId: client.id,
      seq: client.seq,
      ordered: true,
      operation: encodeSignedReconfiguration(built.signed),
      signature: null,
      kind: RequestKind.RECONFIGURATION,
    };
    // Where clients must sign their requests, so does the View Manager's client (besides its own signature inside).
    const request = this.options.signedRequests ? { ...unsigned, signature: this.keys.signClient(client.id, requestSigningPayload(unsigned)) } : unsigned;
    this.reconfigurations.set(`${client.id}/${client.seq}`, { expect: built.expect, label: step.label });
    this.issued.set(`${client.id}/${client.seq}`, Buffer.from(request.operation).toString('latin1'));
    this.pendingSigned.set(client.seq, built.signed);
    this.log(`vm: ${step.label} from view ${built.signed.reconfiguration.fromView} (seq ${client.seq})`);
    client.outstanding = { request, bytes: encodeMessage({ type: MessageType.REQUEST, request }), replies: new Map(), retransmitTimer: null };
    this.sendRequest(client);
  }

  /** The verdict on the View Manager's request, agreed by a quorum: check it against what must happen. */
  private onReconfigurationVerdict(seq: number, result: Uint8Array): void {
    const verdict = decodeReconfigurationResult(result);
    const expectation = this.reconfigurations.get(`${viewManagerClientId}/${seq}`);
    const signed = this.pendingSigned.get(seq);
    this.pendingSigned.delete(seq);
    if (verdict === null) {
      this.violation('reconfiguration', `the View Manager's request ${seq} was answered with something that is not a verdict`);
    } else if (verdict.accepted) {
      this.reconfigurationVerdicts.accepted++;
      if (signed !== undefined) this.lastAccepted = signed;
      this.log(`vm: ${expectation?.label}: accepted, view ${verdict.view.number}`);
      if (expectation?.expect === 'refused') this.violation('reconfiguration', `${expectation.label} was applied (view ${verdict.view.number}); it must be refused`);
    } else {
      this.reconfigurationVerdicts.refused++;
      this.log(`vm: ${expectation?.label}: refused: ${verdict.reason}`);
      if (expectation?.expect === 'accepted') this.violation('reconfiguration', `${expectation.label} was refused: ${verdict.reason}`);
    }
    this.viewManagerBusy = false;
    this.scheduler.after(this.rng.int(0, 50), () => this.nextReconfiguration());
  }

  /** The View Manager has no request left to be answered. */
  viewManagerDone(): boolean {
    return !this.viewManagerBusy && this.viewManagerQueue.length === 0;
  }

  // -------------------------------------------------------------------------------------------
  // Clients.

  /** The forging client's next request: to most replicas, the same sequence number a few times over. */
  private forgeRequest(rng: Rng, seq: number): void {
    const request: ClientRequest = { clientId: forgingClientId, seq, ordered: true, operation: utf8.encode(`forged:${seq}`), signature: rng.bytes(32) };
    const bytes = encodeMessage({ type: MessageType.REQUEST, request });
    for (const [id, nodes] of this.slots) {
      if (nodes.some((node) => !node.idle) && rng.chance(0.8)) this.network.send(forgingClientId, id, bytes);
    }
    this.forgedRequests++;
    this.scheduler.after(rng.int(20, 300), () => this.forgeRequest(rng, rng.chance(0.4) ? seq + 1 : seq));
  }

  private issueNext(client: SimClient): void {
    if (client.completed >= this.options.requestsPerClient) return;
    client.seq++;
    const pad = this.options.operationPadBytes ?? 0;
    const operation = `${client.id}:${client.seq}${pad > 0 ? `:${'.'.repeat(pad)}` : ''}`;
    this.issued.set(`${client.id}/${client.seq}`, operation);
    const unsigned: ClientRequest = { clientId: client.id, seq: client.seq, ordered: true, operation: utf8.encode(operation), signature: null };
    const request = this.options.signedRequests
      ? { ...unsigned, signature: this.keys.signClient(client.id, requestSigningPayload(unsigned)) }
      : unsigned;
    const bytes = encodeMessage({ type: MessageType.REQUEST, request });
    client.outstanding = { request, bytes, replies: new Map(), retransmitTimer: null };
    this.sendRequest(client);
  }

  private sendRequest(client: SimClient): void {
    const outstanding = client.outstanding;
    if (outstanding === null) return;
    // To every replica that may be a member: the clients follow reconfigurations (the real client learns
    // the view from its replies; that is tested on its own).
    for (const [id, nodes] of this.slots) if (nodes.some((node) => !node.idle)) this.network.send(client.id, id, outstanding.bytes);
    this.scheduleRetransmit(client, outstanding, clientRetransmitMs);
  }

  private scheduleRetransmit(client: SimClient, outstanding: Outstanding, delayMs: number): void {
    if (outstanding.retransmitTimer !== null) this.scheduler.cancel(outstanding.retransmitTimer);
    outstanding.retransmitTimer = this.scheduler.after(delayMs, () => {
      outstanding.retransmitTimer = null;
      if (client.outstanding === outstanding) this.sendRequest(client);
    });
  }

  private clientReceive(clientId: string, from: Address, bytes: Uint8Array): void {
    const client = clientId === viewManagerClientId ? this.viewManager : this.clients.get(clientId);
    const outstanding = client?.outstanding;
    if (client === undefined || outstanding === null || outstanding === undefined || typeof from !== 'number') return;
    const decoded = decodeMessage(bytes);
    if (!decoded.ok) return;
    const message = decoded.message;
    if (message.type === MessageType.BUSY && message.seq === outstanding.request.seq) {
      // Back off: the next retransmission waits at least this long, and BUSY never triggers one itself.
      this.scheduleRetransmit(client, outstanding, Math.max(clientBusyBackoffMs, clientRetransmitMs));
      return;
    }
    if (message.type !== MessageType.REPLY || message.seq !== outstanding.request.seq || message.clientId !== clientId) return;
    // Compared as text; a verdict (msgpack) survives a latin1 round trip byte for byte.
    const result = client === this.viewManager ? Buffer.from(message.result).toString('latin1') : fromUtf8.decode(message.result);
    outstanding.replies.set(from, result);
    // A quorum of matching replies from the members of a view the replicas went through.
    const proven = this.eras.some(({ era, quorums }) => {
      let matching = 0;
      for (const [replica, r] of outstanding.replies) if (r === result && era.membership.view.members.includes(replica)) matching++;
      return matching >= quorums.orderedReply;
    });
    if (!proven) return;
    if (client === this.viewManager) {
      if (outstanding.retransmitTimer !== null) this.scheduler.cancel(outstanding.retransmitTimer);
      client.outstanding = null;
      this.onReconfigurationVerdict(outstanding.request.seq, message.result);
      return;
    }
    // Accepted: the answer names a log position; no two requests may ever be told the same one.
    const [position, operation] = [result.slice(0, result.indexOf(':')), result.slice(result.indexOf(':') + 1)];
    const expected = `${clientId}/${outstanding.request.seq}`;
    const issued = this.issued.get(expected);
    if (operation !== issued) this.violation('client-answer', `${expected} was answered with ${result.slice(0, 80)}`);
    const earlier = this.answeredPositions.get(position);
    if (earlier !== undefined && earlier !== expected) {
      this.violation('client-answer', `position ${position} answered to both ${earlier} and ${expected}`);
    }
    this.answeredPositions.set(position, expected);
    if (outstanding.retransmitTimer !== null) this.scheduler.cancel(outstanding.retransmitTimer);
    client.outstanding = null;
    client.completed++;
    this.log(`${clientId} completed seq ${outstanding.request.seq} at position ${position}`);
    this.scheduler.after(this.rng.int(0, 20), () => this.issueNext(client));
  }

  allClientsDone(): boolean {
    for (const client of this.clients.values()) if (client.completed < this.options.requestsPerClient) return false;
    return this.viewManagerDone();
  }

  checkLiveness(): void {
    if (!this.viewManagerDone()) this.violation('liveness', `the View Manager's request ${this.viewManager.seq} got no verdict`);
    for (const client of this.clients.values()) {
      if (client.completed < this.options.requestsPerClient) {
        const replies = client.outstanding ? [...client.outstanding.replies].map(([r, v]) => `r${r}=${v}`).join(' ') : '';
        this.violation('liveness', `${client.id} finished ${client.completed}/${this.options.requestsPerClient}; waiting on seq ${client.seq} (replies: ${replies || 'none'})`);
      }
    }
  }

  /** Runs until `timeMs`, a violation, or (when asked) every client is done and, if asked too, every correct replica caught up. */
  runUntil(timeMs: number, stopWhenClientsDone = false, andCaughtUp = false): void {
    this.scheduler.runUntil(timeMs, {
      stop: () =>
        this.violations.length > 0 || (stopWhenClientsDone && this.allClientsDone() && (!andCaughtUp || this.allCaughtUp())),
      eventsMax: 20_000_000,
    });
  }

  result(): SimulationResult {
    const dropped: Record<string, number> = { ...this.codecDrops };
    let leaderChanges = 0;
    for (const nodes of this.slots.values()) {
      for (const node of nodes) {
        const status = node.core?.status();
        if (!status || !node.correct) continue;
        leaderChanges = Math.max(leaderChanges, status.leaderChanges);
        for (const [reason, count] of Object.entries(status.dropped)) dropped[reason] = (dropped[reason] ?? 0) + (count ?? 0);
      }
    }
    let completed = 0;
    for (const client of this.clients.values()) completed += client.completed;
    const disk = { ...this.diskStats };
    const transfers = [...this.retiredTransfers];
    for (const nodes of this.slots.values()) for (const node of nodes) if (node.transfer !== null) transfers.push(node.transfer.stats());
    for (const stats of transfers) {
      disk.stateTransfersStarted += stats.fetchesStarted;
      disk.stateTransfersInstalled += stats.fetchesInstalled;
      disk.stateTransfersFailed += stats.fetchesFailed;
      for (const count of Object.values(stats.badChunksByReplica)) disk.badChunksDetected += count;
      for (const count of Object.values(stats.badOffersByReplica)) disk.badOffersDetected += count;
    }
    return {
      seed: this.options.seed,
      violations: this.violations,
      trace: this.trace,
      decidedInstances: this.decided.size,
      completedRequests: completed,
      leaderChanges,
      simulatedMs: this.scheduler.now(),
      droppedByReason: dropped,
      disk,
      reconfigurations: { ...this.reconfigurationVerdicts, views: this.eras.length - 1 },
      forgedRequests: this.forgedRequests,
    };
  }
}
