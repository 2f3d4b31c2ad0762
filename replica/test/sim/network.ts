// A simulated network between replicas (DESIGN §9): loss, delay, reordering, duplication and
// partitions, every choice drawn from the Rng it is given and every delivery an event on the
// Scheduler, so a seed reproduces the exact delivery trace.
//
// Links are directed: cut(a, b) stops a → b only, which lets scenarios build asymmetric faults
// (a replica that hears but is not heard); cut both directions for a symmetric cut. partition()
// and isolate() are always symmetric.
//
// A link is checked when a message is sent and again when it would arrive: a message in flight
// across a link that goes down is lost even if the link comes back before its delivery time, as a
// packet already dropped by a broken switch does not reappear when the switch is repaired.

import type { Rng } from './prng.ts';
import type { Scheduler } from './scheduler.ts';

export interface NetworkFaults {
  /** Probability that a message (or a duplicate copy) is dropped, in [0, 1]. */
  lossRate: number;
  /** Probability that a delivered message is delivered a second time, with its own delay, in [0, 1]. */
  duplicateRate: number;
  /** Delivery delay bounds in whole simulated milliseconds, inclusive. */
  delayMsMin: number;
  delayMsMax: number;
}

export interface NetworkStats {
  /** Calls to send(). */
  sent: number;
  /** Calls made to `deliver`. */
  delivered: number;
  /** Extra copies scheduled by duplication. */
  duplicated: number;
  dropped: {
    /** Random loss. */
    loss: number;
    /** Blocked by a partition, isolation or cut, at send time or while in flight. */
    partition: number;
    /** The filter returned null. */
    filter: number;
  };
  /** Copies scheduled and not yet delivered or dropped; sent + duplicated = delivered + all dropped + inFlight. */
  inFlight: number;
}

/** Interceptor applied at send time: null drops the message, bytes replace it, undefined passes it through. */
export type NetworkFilter<NodeId> = (from: NodeId, to: NodeId, bytes: Uint8Array) => Uint8Array | null | undefined;

export const networkFaultsDefault: Readonly<NetworkFaults> = Object.freeze({
  lossRate: 0,
  duplicateRate: 0,
  delayMsMin: 1,
  delayMsMax: 5,
});

interface InFlight<NodeId> {
  readonly from: NodeId;
  readonly to: NodeId;
  readonly bytes: Uint8Array;
  /** Set when the link went down while this copy was in flight. */
  severed: boolean;
}

function validateFaults(faults: NetworkFaults): void {
  for (const name of ['lossRate', 'duplicateRate'] as const) {
    const value = faults[name];
    if (!(value >= 0 && value <= 1)) throw new RangeError(`SimNetwork: ${name} must be in [0, 1], got ${value}`);
  }
  for (const name of ['delayMsMin', 'delayMsMax'] as const) {
    const value = faults[name];
    if (!Number.isSafeInteger(value) || value < 0) {
      throw new RangeError(`SimNetwork: ${name} must be a non-negative integer, got ${value}`);
    }
  }
  if (faults.delayMsMin > faults.delayMsMax) {
    throw new RangeError(`SimNetwork: delayMsMin (${faults.delayMsMin}) exceeds delayMsMax (${faults.delayMsMax})`);
  }
}

export class SimNetwork<NodeId extends string | number> {
  readonly #rng: Rng;
  readonly #scheduler: Scheduler;
  readonly #deliver: (from: NodeId, to: NodeId, bytes: Uint8Array) => void;
  #faults: NetworkFaults = { ...networkFaultsDefault };
  #filter: NetworkFilter<NodeId> | null = null;
  /** Group index of each node while a partition is in force; null when there is none. */
  #groupOf: Map<NodeId, number> | null = null;
  readonly #isolated = new Set<NodeId>();
  /** Directed cuts: from → set of destinations it cannot reach. */
  readonly #cuts = new Map<NodeId, Set<NodeId>>();
  // Kept so that a link going down can sever what is already on it; insertion order keeps that
  // scan deterministic.
  readonly #inFlight = new Set<InFlight<NodeId>>();
  readonly #stats: NetworkStats = {
    sent: 0,
    delivered: 0,
    duplicated: 0,
    dropped: { loss: 0, partition: 0, filter: 0 },
    inFlight: 0,
  };

  constructor(rng: Rng, scheduler: Scheduler, deliver: (from: NodeId, to: NodeId, bytes: Uint8Array) => void) {
    this.#rng = rng;
    this.#scheduler = scheduler;
    this.#deliver = deliver;
  }

  /**
   * Sends a copy of `bytes` (the caller may reuse its buffer; each delivered copy is a fresh buffer).
   * A message to oneself bypasses loss, duplication and links, and arrives after 0–1 ms; the filter
   * still sees it.
   */
  send(from: NodeId, to: NodeId, bytes: Uint8Array): void {
    this.#stats.sent++;
    let payload = bytes;
    if (this.#filter !== null) {
      const replaced = this.#filter(from, to, bytes);
      if (replaced === null) {
        this.#stats.dropped.filter++;
        return;
      }
      if (replaced !== undefined) payload = replaced;
    }
    if (from === to) {
      this.#schedule(from, to, payload, this.#rng.int(0, 1));
      return;
    }
    if (!this.canReach(from, to)) {
      this.#stats.dropped.partition++;
      return;
    }
    // Every draw is made whatever the rates, so changing a rate does not shift the rest of the stream.
    const lost = this.#rng.chance(this.#faults.lossRate);
    const duplicate = this.#rng.chance(this.#faults.duplicateRate);
    const delayMs = this.#rng.int(this.#faults.delayMsMin, this.#faults.delayMsMax);
    if (lost) {
      this.#stats.dropped.loss++;
      return;
    }
    this.#schedule(from, to, payload, delayMs);
    if (duplicate) {
      this.#stats.duplicated++;
      this.#schedule(from, to, payload, this.#rng.int(this.#faults.delayMsMin, this.#faults.delayMsMax));
    }
  }

  /** Updates some or all fault settings; the result is validated as a whole and nothing changes on error. */
  setFaults(faults: Partial<NetworkFaults>): void {
    const merged: NetworkFaults = { ...this.#faults, ...faults };
    validateFaults(merged);
    this.#faults = merged;
  }

  faults(): Readonly<NetworkFaults> {
    return { ...this.#faults };
  }

  setFilter(filter: NetworkFilter<NodeId> | null): void {
    this.#filter = filter;
  }

  /**
   * Replaces any previous partition: nodes in different groups cannot talk, and a node in no group
   * can talk to nobody but itself. Cuts and isolations stay in force.
   */
  partition(groups: NodeId[][]): void {
    const groupOf = new Map<NodeId, number>();
    groups.forEach((group, index) => {
      for (const node of group) {
        const previous = groupOf.get(node);
        if (previous !== undefined && previous !== index) {
          throw new RangeError(`SimNetwork.partition: node ${String(node)} is in groups ${previous} and ${index}`);
        }
        groupOf.set(node, index);
      }
    });
    this.#groupOf = groupOf;
    this.#severInFlight();
  }

  /** The node can reach nobody and nobody can reach it, until heal(). */
  isolate(node: NodeId): void {
    this.#isolated.add(node);
    this.#severInFlight();
  }

  /** Cuts the directed link from → to. */
  cut(from: NodeId, to: NodeId): void {
    let destinations = this.#cuts.get(from);
    if (destinations === undefined) {
      destinations = new Set();
      this.#cuts.set(from, destinations);
    }
    destinations.add(to);
    this.#severInFlight();
  }

  /** Restores the directed link from → to cut by cut(); partitions and isolations still apply. */
  restore(from: NodeId, to: NodeId): void {
    const destinations = this.#cuts.get(from);
    if (destinations === undefined) return;
    destinations.delete(to);
    if (destinations.size === 0) this.#cuts.delete(from);
  }

  /** Removes every partition, isolation and cut. Messages already severed stay lost. */
  heal(): void {
    this.#groupOf = null;
    this.#isolated.clear();
    this.#cuts.clear();
  }

  /** Whether a message sent now from → to would pass the partitions and cuts (loss aside). */
  canReach(from: NodeId, to: NodeId): boolean {
    if (from === to) return true;
    if (this.#isolated.has(from) || this.#isolated.has(to)) return false;
    if (this.#groupOf !== null) {
      const fromGroup = this.#groupOf.get(from);
      if (fromGroup === undefined || fromGroup !== this.#groupOf.get(to)) return false;
    }
    return this.#cuts.get(from)?.has(to) !== true;
  }

  stats(): NetworkStats {
    return { ...this.#stats, dropped: { ...this.#stats.dropped }, inFlight: this.#inFlight.size };
  }

  #schedule(from: NodeId, to: NodeId, bytes: Uint8Array, delayMs: number): void {
    const message: InFlight<NodeId> = { from, to, bytes: bytes.slice(), severed: false };
    this.#inFlight.add(message);
    this.#scheduler.after(delayMs, () => this.#arrive(message));
  }

  #arrive(message: InFlight<NodeId>): void {
    this.#inFlight.delete(message);
    if (message.severed || !this.canReach(message.from, message.to)) {
      this.#stats.dropped.partition++;
      return;
    }
    this.#stats.delivered++;
    this.#deliver(message.from, message.to, message.bytes);
  }

  #severInFlight(): void {
    for (const message of this.#inFlight) {
      if (!message.severed && !this.canReach(message.from, message.to)) message.severed = true;
    }
  }
}
