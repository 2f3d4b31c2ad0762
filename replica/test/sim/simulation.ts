// The seeded simulation: n replicas running the real core over a simulated network, disk and clock,
// clients with outstanding requests, Byzantine replicas, and checkers that look at every delivery.
// One seed reproduces a run exactly: all randomness comes from the Rng, all time from the Scheduler.

import { createHash } from 'node:crypto';
import { makeCoreConfig } from '../../src/core/config.ts';
import { digestKey } from '../../src/core/crypto.ts';
import type { Quorums, FaultMode } from '../../src/core/quorum.ts';
import { maxFaults, quorumsFor } from '../../src/core/quorum.ts';
import type { Delivery, PersistRecord } from '../../src/core/ready.ts';
import { Executor } from '../../src/service/executor.ts';
import type { OrderedOperation, Service } from '../../src/service/service.ts';
import { ReplicaCore } from '../../src/core/replica.ts';
import type { View } from '../../src/core/view.ts';
import { acceptSigningPayload, decodeBatch, decodeMessage, encodeMessage, requestSigningPayload } from '../../src/protocol/codec.ts';
import { type ClientRequest, MessageType, type Message, type ReplicaMessage } from '../../src/protocol/messages.ts';
import { type Behaviour, type ByzantineContext, historyMax } from './byzantine.ts';
import { SimKeys } from './crypto.ts';
import { SimNetwork } from './network.ts';
import { Rng } from './prng.ts';
import { type EventId, Scheduler } from './scheduler.ts';

export type Address = number | string;

export interface Violation {
  readonly kind:
    | 'agreement'
    | 'validity'
    | 'double-execution'
    | 'certificate'
    | 'client-answer'
    | 'vote-not-durable'
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
  readonly byzantine?: readonly ByzantineAssignment[];
  /** Only for the test that proves the checkers catch a broken protocol. */
  readonly quorumsOverride?: Quorums;
  readonly tickMs?: number;
  readonly traceLinesMax?: number;
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

function sha256(bytes: Uint8Array): Uint8Array {
  return createHash('sha256').update(bytes).digest();
}

/** One replica incarnation: the core, its disk, and the service it executes. */
class SimReplica {
  readonly id: number;
  readonly correct: boolean;
  readonly isTwin: boolean;
  core: ReplicaCore | null = null;
  /** Records persisted so far; the simulated disk syncs every record (fsync policy). */
  readonly disk: PersistRecord[] = [];
  /** kind/cid/regency of every durable vote, to check that no vote leaves before it is on disk. */
  readonly durableVotes = new Set<string>();
  executor = new Executor(new AppendLogService(), 8);
  incarnation = 0;
  readonly history: ReplicaMessage[] = [];
  readonly byzantine: ByzantineAssignment | undefined;

  constructor(id: number, byzantine: ByzantineAssignment | undefined, isTwin: boolean) {
    this.id = id;
    this.byzantine = byzantine;
    this.correct = byzantine === undefined;
    this.isTwin = isTwin;
  }

  get name(): string {
    return this.isTwin ? `r${this.id}'` : `r${this.id}`;
  }

  resetService(): void {
    this.executor = new Executor(new AppendLogService(), 8);
  }

  remember(message: ReplicaMessage): void {
    this.history.push(message);
    if (this.history.length > historyMax) this.history.shift();
  }
}

/** The replicated service of the simulation: an append-only log; each result names the op's position. */
class AppendLogService implements Service {
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
  /** cid → digest key, from the first correct replica that decided it. */
  private readonly decided = new Map<number, string>();
  /** clientId/seq → operation the client issued. */
  private readonly issued = new Map<string, string>();
  /** Position in the replicated log → the request a client was told was executed there. */
  private readonly answeredPositions = new Map<string, string>();
  private readonly codecDrops: Record<string, number> = {};

  constructor(options: SimulationOptions) {
    this.options = options;
    this.rng = new Rng(options.seed >>> 0);
    this.byzantineRng = this.rng.fork('byzantine');
    this.keys = new SimKeys(this.rng.fork('keys'));
    this.tickMs = options.tickMs ?? 10;
    this.traceLinesMax = options.traceLinesMax ?? 4000;
    const members = Array.from({ length: options.replicas }, (_, i) => i);
    this.view = { number: 0, mode: options.mode, f: options.f ?? maxFaults(options.replicas, options.mode), members };
    this.quorums = options.quorumsOverride ?? quorumsFor(options.replicas, this.view.f, options.mode);
    this.network = new SimNetwork<Address>(this.rng.fork('network'), this.scheduler, (from, to, bytes) =>
      this.deliver(from, to, bytes),
    );
    for (const id of members) {
      const byzantine = options.byzantine?.find((b) => b.id === id);
      const nodes = [new SimReplica(id, byzantine, false)];
      if (byzantine?.twin) nodes.push(new SimReplica(id, byzantine, true));
      this.slots.set(id, nodes);
      for (const node of nodes) this.start(node);
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

  private checkDelivery(node: SimReplica, delivery: Delivery): void {
    const { decision, requests } = delivery;
    const digest = sha256(decision.batch);
    const key = digestKey(digest);
    // The certificate must prove the decision to a third party, independently of the core.
    const payload = acceptSigningPayload(this.view.number, decision.cid, decision.regency, digest);
    const signers = new Set(decision.votes.map((v) => v.replica));
    const verifier = this.keys.cryptoFor(node.id);
    const validVotes = decision.votes.filter((v) => verifier.verifyReplica(v.replica, payload, v.signature));
    if (signers.size !== decision.votes.length || validVotes.length < this.quorums.accept) {
      this.violation('certificate', `${node.name} delivered cid ${decision.cid} without a valid certificate`);
    }
    const decoded = decodeBatch(decision.batch);
    if (!decoded.ok || decoded.batch.requests.length !== requests.length) {
      this.violation('validity', `${node.name} delivered requests that are not the decided batch at cid ${decision.cid}`);
    }
    const first = this.decided.get(decision.cid);
    if (first === undefined) this.decided.set(decision.cid, key);
    else if (first !== key) {
      this.violation('agreement', `cid ${decision.cid}: ${node.name} decided ${key.slice(0, 12)}, another correct replica ${first.slice(0, 12)}`);
    }
    for (const request of requests) {
      const issued = this.issued.get(`${request.clientId}/${request.seq}`);
      if (issued === undefined || issued !== fromUtf8.decode(request.operation)) {
        this.violation('validity', `cid ${decision.cid} orders ${request.clientId}/${request.seq}, which no client issued`);
      }
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

  private configFor(id: number) {
    return makeCoreConfig(id, this.view, {
      ...simTiming,
      batchRequestsMax: 8,
      clientInFlightMax: 4,
      requireSignedRequests: this.options.signedRequests ?? false,
    });
  }

  private start(node: SimReplica): void {
    node.incarnation++;
    node.resetService();
    const restore = node.disk.length > 0 ? node.disk : undefined;
    node.core = new ReplicaCore(this.configFor(node.id), this.keys.cryptoFor(node.id), {
      ...(restore ? { restore } : {}),
      ...(this.options.quorumsOverride ? { quorumsOverride: this.options.quorumsOverride } : {}),
    });
    // Replay the durable log into a fresh service, as the process does on start.
    for (const record of node.disk) {
      if (record.kind !== 'decision') continue;
      const decoded = decodeBatch(record.decision.batch);
      if (decoded.ok) this.execute(node, { decision: record.decision, requests: decoded.batch.requests }, false);
    }
    const incarnation = node.incarnation;
    const tick = (): void => {
      if (node.core === null || node.incarnation !== incarnation) return;
      node.core.tick();
      this.flush(node);
      this.scheduler.after(this.tickMs, tick);
    };
    this.scheduler.after(this.rng.int(1, this.tickMs), tick);
  }

  crash(id: number): void {
    for (const node of this.slots.get(id) ?? []) {
      if (node.core === null) continue;
      node.core = null;
      this.log(`crash ${node.name}`);
    }
  }

  restart(id: number): void {
    for (const node of this.slots.get(id) ?? []) {
      if (node.core !== null) continue;
      this.start(node);
      this.log(`restart ${node.name} from ${node.disk.length} persisted records`);
    }
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
      } else if (typeof from === 'number' && message.type !== MessageType.REPLY && message.type !== MessageType.BUSY) {
        if (!node.correct) node.remember(message);
        core.step(from, message);
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
      node.disk.push(...ready.persist);
      for (const record of ready.persist) {
        if (record.kind === 'write' || record.kind === 'accept') node.durableVotes.add(`${record.kind}/${record.cid}/${record.regency}`);
      }
      for (const out of ready.messages) {
        const encoded = encodeMessage(out.message);
        if (node.correct) this.checkVoteDurable(node, out.message);
        if (!node.correct) node.remember(out.message);
        if (out.message.type === MessageType.SYNC) {
          this.log(`${node.name} SYNC regency ${out.message.regency} cid ${out.message.cid} (${out.message.batch.length} B)`);
        } else if (out.message.type === MessageType.STOP && out.message.requests.length > 0) {
          this.log(`${node.name} STOP → regency ${out.message.regency}`);
        }
        if (out.to === 'others') {
          for (const member of this.view.members) if (member !== node.id) this.send(node, member, out.message, encoded);
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
      core.advance();
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
    const reply: Message = { type: MessageType.REPLY, view: this.view.number, clientId, seq, result };
    this.network.send(node.id, clientId, encodeMessage(reply));
  }

  // -------------------------------------------------------------------------------------------
  // Clients.

  private issueNext(client: SimClient): void {
    if (client.completed >= this.options.requestsPerClient) return;
    client.seq++;
    const operation = `${client.id}:${client.seq}`;
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
    for (const member of this.view.members) this.network.send(client.id, member, outstanding.bytes);
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
    const client = this.clients.get(clientId);
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
    const result = fromUtf8.decode(message.result);
    outstanding.replies.set(from, result);
    let matching = 0;
    for (const r of outstanding.replies.values()) if (r === result) matching++;
    if (matching < this.quorums.orderedReply) return;
    // Accepted: the answer names a log position; no two requests may ever be told the same one.
    const [position, operation] = [result.slice(0, result.indexOf(':')), result.slice(result.indexOf(':') + 1)];
    const expected = `${clientId}:${outstanding.request.seq}`;
    if (operation !== expected) this.violation('client-answer', `${expected} was answered with ${result}`);
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
    return true;
  }

  checkLiveness(): void {
    for (const client of this.clients.values()) {
      if (client.completed < this.options.requestsPerClient) {
        const replies = client.outstanding ? [...client.outstanding.replies].map(([r, v]) => `r${r}=${v}`).join(' ') : '';
        this.violation('liveness', `${client.id} finished ${client.completed}/${this.options.requestsPerClient}; waiting on seq ${client.seq} (replies: ${replies || 'none'})`);
      }
    }
  }

  runUntil(timeMs: number, stopWhenClientsDone = false): void {
    this.scheduler.runUntil(timeMs, {
      stop: () => this.violations.length > 0 || (stopWhenClientsDone && this.allClientsDone()),
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
    return {
      seed: this.options.seed,
      violations: this.violations,
      trace: this.trace,
      decidedInstances: this.decided.size,
      completedRequests: completed,
      leaderChanges,
      simulatedMs: this.scheduler.now(),
      droppedByReason: dropped,
    };
  }
}
