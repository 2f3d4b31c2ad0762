// A lockstep cluster for scripted scenarios: real cores, real codec, and a network the test drives by
// hand (deliver these, drop those, inject that), in the manner of etcd raft's interaction tests. Where
// the timed simulator explores, this one pins a schedule down exactly.

import { type CoreConfig, makeCoreConfig } from '../../src/core/config.ts';
import { digestKey } from '../../src/core/crypto.ts';
import type { FaultMode } from '../../src/core/quorum.ts';
import { maxFaults } from '../../src/core/quorum.ts';
import type { Delivery, PersistRecord } from '../../src/core/ready.ts';
import { ReplicaCore } from '../../src/core/replica.ts';
import type { View } from '../../src/core/view.ts';
import { decodeMessage, encodeBatch, encodeMessage } from '../../src/protocol/codec.ts';
import type { Bytes, ClientRequest, ReplicaMessage } from '../../src/protocol/messages.ts';
import { SimKeys } from './crypto.ts';
import { Rng } from './prng.ts';

export interface Envelope {
  readonly from: number;
  readonly to: number;
  readonly message: ReplicaMessage;
}

/** Decide what happens to a queued message: deliver, drop, or keep it queued for later. */
export type Route = 'deliver' | 'drop' | 'hold';

/** Timing for scripted runs: only request timers fire unless a test ticks far on purpose. */
export const lockstepTiming = {
  requestTimeoutTicks: 4,
  heartbeatIntervalTicks: 500,
  leaderSilenceTimeoutTicks: 1000,
  regencyTimeoutTicks: 1000,
  retransmitTicks: 1000,
  catchUpIntervalTicks: 1000,
} as const;

const utf8 = new TextEncoder();

export function request(clientId: string, seq: number, operation: string): ClientRequest {
  return { clientId, seq, ordered: true, operation: utf8.encode(operation), signature: null };
}

export function batchOf(...requests: ClientRequest[]): Bytes {
  return encodeBatch({ requests });
}

export class LockstepCluster {
  readonly view: View;
  readonly keys = new SimKeys(new Rng(7).fork('keys'));
  readonly cores = new Map<number, ReplicaCore>();
  readonly disks = new Map<number, PersistRecord[]>();
  readonly deliveries = new Map<number, Delivery[]>();
  /** Messages sent and not yet delivered or dropped. */
  queue: Envelope[] = [];
  /** Every message any replica sent, in order. */
  readonly sent: Envelope[] = [];

  private readonly overrides: Partial<Omit<CoreConfig, 'me' | 'view'>>;
  /** The view each replica was started with (a joined replica's is the view it joined). */
  private readonly startViews = new Map<number, View>();

  constructor(n: number, mode: FaultMode = 'bft', overrides: Partial<Omit<CoreConfig, 'me' | 'view'>> = {}) {
    this.overrides = overrides;
    this.view = { number: 0, mode, f: maxFaults(n, mode), members: Array.from({ length: n }, (_, i) => i) };
    for (const id of this.view.members) {
      this.disks.set(id, []);
      this.deliveries.set(id, []);
      this.cores.set(id, this.makeCore(id));
    }
  }

  private makeCore(id: number, restore?: readonly PersistRecord[], amnesic = false, view: View = this.startViews.get(id) ?? this.view): ReplicaCore {
    this.startViews.set(id, view);
    const config = makeCoreConfig(id, view, { ...lockstepTiming, ...this.overrides });
    return new ReplicaCore(config, this.keys.cryptoFor(id), { ...(restore ? { restore } : {}), ...(amnesic ? { amnesic } : {}) });
  }

  /** Lose the process and the disk: the replica starts again with nothing, knowing that it forgot. */
  wipe(id: number): void {
    this.disks.set(id, []);
    this.deliveries.set(id, []);
    this.cores.set(id, this.makeCore(id, undefined, true));
  }

  /**
   * A replica that a reconfiguration added, started as one is: with the view it joins, its own keys and
   * an empty disk (so, amnesic).
   */
  join(id: number, view: View): void {
    this.disks.set(id, []);
    this.deliveries.set(id, []);
    this.cores.set(id, this.makeCore(id, undefined, true, view));
  }

  core(id: number): ReplicaCore {
    const core = this.cores.get(id);
    if (core === undefined) throw new Error(`replica ${id} is down`);
    return core;
  }

  /** Lose the process, keep the disk, start again from what was persisted. */
  restart(id: number): void {
    this.cores.set(id, this.makeCore(id, this.disks.get(id) ?? []));
  }

  /** Pull every core's Ready: persist, queue messages (through the real codec), record deliveries. */
  collect(): void {
    for (const [id, core] of this.cores) {
      while (core.hasReady()) {
        const ready = core.ready();
        this.disks.get(id)?.push(...ready.persist);
        this.deliveries.get(id)?.push(...ready.deliveries);
        for (const out of ready.messages) {
          // "Others" are the members of the sender's view, which a reconfiguration may have changed.
          const targets = out.to === 'others' ? core.view.members.filter((m) => m !== id) : [out.to];
          for (const to of targets) this.enqueue(id, to, out.message);
        }
        core.advance();
      }
    }
  }

  private enqueue(from: number, to: number, message: ReplicaMessage): void {
    const decoded = decodeMessage(encodeMessage(message));
    if (!decoded.ok) throw new Error(`replica ${from} sent a message our own codec rejects: ${decoded.detail}`);
    const envelope = { from, to, message: decoded.message as ReplicaMessage };
    this.queue.push(envelope);
    this.sent.push(envelope);
  }

  /** A message crafted by the test, as if a (Byzantine) replica had sent it. */
  inject(from: number, to: number, message: ReplicaMessage): void {
    const decoded = decodeMessage(encodeMessage(message));
    if (!decoded.ok) throw new Error(`injected message fails the schema: ${decoded.detail}`);
    this.core(to).step(from, decoded.message as ReplicaMessage);
    this.collect();
  }

  submit(request: ClientRequest, to: readonly number[]): void {
    for (const id of to) this.core(id).receiveRequest(request.clientId, request);
    this.collect();
  }

  tick(times = 1, ids: readonly number[] = [...this.cores.keys()]): void {
    for (let i = 0; i < times; i++) {
      for (const id of ids) this.cores.get(id)?.tick();
      this.collect();
    }
  }

  /** Route queued messages until nothing deliverable is left. Held messages stay queued. */
  run(route: (envelope: Envelope) => Route = () => 'deliver', stepsMax = 100_000): void {
    for (let steps = 0; steps < stepsMax; steps++) {
      const index = this.queue.findIndex((e) => route(e) !== 'hold');
      if (index < 0) return;
      const [envelope] = this.queue.splice(index, 1) as [Envelope];
      if (route(envelope) === 'drop') continue;
      this.cores.get(envelope.to)?.step(envelope.from, envelope.message);
      this.collect();
    }
    throw new Error('lockstep run did not settle');
  }

  decidedKeys(id: number): string[] {
    return (this.deliveries.get(id) ?? []).map((d) => digestKey(this.keys.cryptoFor(id).digest(d.decision.batch)));
  }

  digestKeyOf(batch: Bytes): string {
    return digestKey(this.keys.cryptoFor(0).digest(batch));
  }
}
