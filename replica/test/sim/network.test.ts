import { describe, expect, it } from 'vitest';
import { SimNetwork, type NetworkFaults } from './network.ts';
import { Rng } from './prng.ts';
import { Scheduler } from './scheduler.ts';

interface Delivery {
  timeMs: number;
  from: number;
  to: number;
  payload: string;
}

function harness(seed: number, faults: Partial<NetworkFaults> = {}) {
  const scheduler = new Scheduler();
  const deliveries: Delivery[] = [];
  const network = new SimNetwork<number>(new Rng(seed).fork('network'), scheduler, (from, to, bytes) => {
    deliveries.push({ timeMs: scheduler.now(), from, to, payload: new TextDecoder().decode(bytes) });
  });
  network.setFaults(faults);
  const send = (from: number, to: number, payload: string): void =>
    network.send(from, to, new TextEncoder().encode(payload));
  return { scheduler, network, deliveries, send };
}

/** A busy all-to-all exchange with every fault on; returns the delivery trace. */
function chatter(seed: number): Delivery[] {
  const { scheduler, network, deliveries, send } = harness(seed, {
    lossRate: 0.1,
    duplicateRate: 0.1,
    delayMsMin: 0,
    delayMsMax: 20,
  });
  const rng = new Rng(seed).fork('workload');
  for (let i = 0; i < 2_000; i++) {
    scheduler.at(i, () => send(rng.int(0, 3), rng.int(0, 3), `m${i}`));
  }
  scheduler.at(500, () => network.partition([[0, 1], [2, 3]]));
  scheduler.at(1_000, () => network.heal());
  scheduler.runUntil(5_000);
  return deliveries;
}

function checkConservation(network: SimNetwork<number>): void {
  const stats = network.stats();
  const dropped = stats.dropped.loss + stats.dropped.partition + stats.dropped.filter;
  expect(stats.sent + stats.duplicated).toBe(stats.delivered + dropped + stats.inFlight);
}

describe('SimNetwork', () => {
  it('reproduces the identical delivery trace from the same seed, and a different one from another seed', () => {
    const first = chatter(31);
    expect(first.length).toBeGreaterThan(1_000);
    expect(chatter(31)).toEqual(first);
    expect(chatter(32)).not.toEqual(first);
  });

  it('delivers with delays within the configured bounds, and reorders', () => {
    const { scheduler, deliveries, send } = harness(1, { delayMsMin: 3, delayMsMax: 9 });
    for (let i = 0; i < 1_000; i++) send(0, 1, String(i));
    scheduler.runUntil(100);
    expect(deliveries).toHaveLength(1_000);
    for (const delivery of deliveries) {
      expect(delivery.timeMs).toBeGreaterThanOrEqual(3);
      expect(delivery.timeMs).toBeLessThanOrEqual(9);
    }
    const order = deliveries.map((delivery) => Number(delivery.payload));
    expect(order).not.toEqual([...order].sort((left, right) => left - right));
    expect(new Set(deliveries.map((delivery) => delivery.timeMs)).size).toBe(7);
  });

  it('uses the defaults: no loss, no duplication, 1–5 ms', () => {
    const { network } = harness(1);
    expect(network.faults()).toEqual({ lossRate: 0, duplicateRate: 0, delayMsMin: 1, delayMsMax: 5 });
  });

  it('loses close to the configured rate over 20k messages', () => {
    const { scheduler, network, deliveries, send } = harness(7, { lossRate: 0.2 });
    for (let i = 0; i < 20_000; i++) send(i % 4, (i + 1) % 4, 'x');
    scheduler.runUntil(1_000);
    const stats = network.stats();
    // Expected 4 000 lost, standard deviation ~57; the seed is fixed, so this is exact on every run.
    expect(stats.dropped.loss).toBeGreaterThan(3_700);
    expect(stats.dropped.loss).toBeLessThan(4_300);
    expect(deliveries).toHaveLength(20_000 - stats.dropped.loss);
    expect(stats).toMatchObject({ sent: 20_000, delivered: deliveries.length, inFlight: 0 });
    checkConservation(network);
  });

  it('duplicates close to the configured rate, each copy with its own delay', () => {
    const { scheduler, network, deliveries, send } = harness(9, { duplicateRate: 0.25, delayMsMin: 0, delayMsMax: 50 });
    for (let i = 0; i < 4_000; i++) send(0, 1, `m${i}`);
    scheduler.runUntil(1_000);
    const stats = network.stats();
    expect(stats.duplicated).toBeGreaterThan(850); // expected 1 000, deviation ~27
    expect(stats.duplicated).toBeLessThan(1_150);
    expect(deliveries).toHaveLength(4_000 + stats.duplicated);
    const copies = new Map<string, number[]>();
    for (const delivery of deliveries) copies.set(delivery.payload, [...(copies.get(delivery.payload) ?? []), delivery.timeMs]);
    const duplicated = [...copies.values()].filter((times) => times.length === 2);
    expect(duplicated).toHaveLength(stats.duplicated);
    expect(duplicated.some(([first, second]) => first !== second)).toBe(true);
    checkConservation(network);
  });

  it('delivers messages to oneself within 0–1 ms, never lost, even when isolated', () => {
    const { scheduler, network, deliveries, send } = harness(3, { lossRate: 1, delayMsMin: 50, delayMsMax: 60 });
    network.isolate(2);
    for (let i = 0; i < 100; i++) send(2, 2, 'self');
    send(2, 1, 'other');
    scheduler.runUntil(1);
    expect(deliveries).toHaveLength(100);
    expect(deliveries.every((delivery) => delivery.timeMs <= 1 && delivery.to === 2)).toBe(true);
    scheduler.runUntil(1_000);
    expect(deliveries).toHaveLength(100);
  });

  it('blocks messages across partition groups and allows them within a group', () => {
    const { scheduler, network, deliveries, send } = harness(4);
    network.partition([[0, 1], [2, 3]]);
    expect(network.canReach(0, 1)).toBe(true);
    expect(network.canReach(1, 2)).toBe(false);
    expect(network.canReach(4, 0)).toBe(false); // 4 is in no group
    send(0, 1, 'within-a');
    send(3, 2, 'within-b');
    send(0, 2, 'across');
    send(3, 1, 'across');
    send(4, 0, 'ungrouped');
    send(0, 4, 'ungrouped');
    scheduler.runUntil(100);
    expect(deliveries.map((delivery) => delivery.payload).sort()).toEqual(['within-a', 'within-b']);
    expect(network.stats().dropped.partition).toBe(4);
  });

  it('drops a message in flight when a partition starts, even if it heals before the delivery time', () => {
    const { scheduler, network, deliveries, send } = harness(5, { delayMsMin: 10, delayMsMax: 10 });
    send(0, 1, 'severed');
    send(0, 2, 'same-side');
    scheduler.at(5, () => network.partition([[0, 2], [1]]));
    scheduler.at(7, () => network.heal());
    scheduler.runUntil(100);
    expect(deliveries.map((delivery) => delivery.payload)).toEqual(['same-side']);
    expect(network.stats().dropped.partition).toBe(1);
    checkConservation(network);
  });

  it('checks the link again at delivery time', () => {
    const { scheduler, network, deliveries, send } = harness(5, { delayMsMin: 10, delayMsMax: 10 });
    send(0, 1, 'late');
    scheduler.runUntil(5);
    network.isolate(1);
    scheduler.runUntil(100);
    expect(deliveries).toHaveLength(0);
  });

  it('isolates a node both ways', () => {
    const { scheduler, network, deliveries, send } = harness(6);
    network.isolate(1);
    send(0, 1, 'to');
    send(1, 0, 'from');
    send(0, 2, 'others');
    scheduler.runUntil(100);
    expect(deliveries.map((delivery) => delivery.payload)).toEqual(['others']);
  });

  it('cuts and restores single directed links', () => {
    const { scheduler, network, deliveries, send } = harness(6);
    network.cut(0, 1);
    expect(network.canReach(0, 1)).toBe(false);
    expect(network.canReach(1, 0)).toBe(true);
    send(0, 1, 'cut');
    send(1, 0, 'reverse');
    scheduler.runUntil(100);
    network.restore(0, 1);
    send(0, 1, 'restored');
    scheduler.runUntil(200);
    expect(deliveries.map((delivery) => delivery.payload)).toEqual(['reverse', 'restored']);
  });

  it('heal() restores every partition, isolation and cut', () => {
    const { scheduler, network, deliveries, send } = harness(8);
    network.partition([[0], [1]]);
    network.isolate(2);
    network.cut(3, 0);
    network.heal();
    send(0, 1, 'a');
    send(2, 3, 'b');
    send(3, 0, 'c');
    scheduler.runUntil(100);
    expect(deliveries.map((delivery) => delivery.payload).sort()).toEqual(['a', 'b', 'c']);
  });

  it('rejects a node in two groups and invalid fault settings, leaving the settings unchanged', () => {
    const { network } = harness(1);
    expect(() => network.partition([[0, 1], [1, 2]])).toThrow(/node 1 is in groups 0 and 1/);
    expect(() => network.setFaults({ lossRate: 1.5 })).toThrow(RangeError);
    expect(() => network.setFaults({ duplicateRate: -0.1 })).toThrow(RangeError);
    expect(() => network.setFaults({ delayMsMin: 6 })).toThrow(/delayMsMin \(6\) exceeds delayMsMax \(5\)/);
    expect(() => network.setFaults({ delayMsMax: 2.5 })).toThrow(RangeError);
    expect(() => network.setFaults({ lossRate: Number.NaN })).toThrow(RangeError);
    expect(network.faults()).toEqual({ lossRate: 0, duplicateRate: 0, delayMsMin: 1, delayMsMax: 5 });
    network.setFaults({ delayMsMin: 6, delayMsMax: 8 });
    expect(network.faults()).toMatchObject({ delayMsMin: 6, delayMsMax: 8 });
  });

  it('lets a filter drop, replace or pass messages at send time', () => {
    const { scheduler, network, deliveries, send } = harness(2);
    network.setFilter((from, to, bytes) => {
      if (to === 1) return null;
      if (from === 2) return new TextEncoder().encode('forged');
      return new TextDecoder().decode(bytes) === 'keep' ? undefined : bytes;
    });
    send(0, 1, 'dropped');
    send(2, 0, 'original');
    send(0, 3, 'keep');
    scheduler.runUntil(100);
    expect(deliveries.map((delivery) => delivery.payload).sort()).toEqual(['forged', 'keep']);
    expect(network.stats().dropped.filter).toBe(1);
    network.setFilter(null);
    send(0, 1, 'unfiltered');
    scheduler.runUntil(200);
    expect(deliveries.at(-1)?.payload).toBe('unfiltered');
  });

  it('copies bytes at send, so neither the sender nor one receiver can change what others get', () => {
    const scheduler = new Scheduler();
    const received: number[][] = [];
    const buffers: Uint8Array[] = [];
    const network = new SimNetwork<string>(new Rng(1), scheduler, (_from, _to, bytes) => {
      received.push([...bytes]);
      buffers.push(bytes);
      bytes[0] = 99;
    });
    network.setFaults({ duplicateRate: 1 });
    const buffer = new Uint8Array([1, 2, 3]);
    network.send('a', 'b', buffer);
    buffer[0] = 42;
    scheduler.runUntil(100);
    expect(received).toEqual([
      [1, 2, 3],
      [1, 2, 3],
    ]);
    expect(buffers[0]).not.toBe(buffers[1]);
  });
});
