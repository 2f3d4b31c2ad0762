import { describe, expect, it } from 'vitest';
import { Rng } from './prng.ts';
import { Scheduler, type EventId } from './scheduler.ts';

describe('Scheduler', () => {
  it('runs events by time, and events at equal times in insertion order', () => {
    const scheduler = new Scheduler();
    const trace: string[] = [];
    scheduler.at(10, () => trace.push('a@10'));
    scheduler.at(5, () => trace.push('b@5'));
    scheduler.at(10, () => trace.push('c@10'));
    scheduler.at(0, () => trace.push('d@0'));
    scheduler.at(5, () => trace.push('e@5'));
    scheduler.at(10, () => trace.push('f@10'));
    expect(scheduler.pendingCount()).toBe(6);
    expect(scheduler.nextTime()).toBe(0);
    while (scheduler.step());
    expect(trace).toEqual(['d@0', 'b@5', 'e@5', 'a@10', 'c@10', 'f@10']);
    expect(scheduler.now()).toBe(10);
    expect(scheduler.step()).toBe(false);
    expect(scheduler.nextTime()).toBeUndefined();
  });

  it('after() is relative to now, and events scheduled for now run after those already due', () => {
    const scheduler = new Scheduler();
    const trace: string[] = [];
    scheduler.at(3, () => {
      trace.push(`first@${scheduler.now()}`);
      scheduler.after(0, () => trace.push(`nested@${scheduler.now()}`));
      scheduler.after(2, () => trace.push(`later@${scheduler.now()}`));
    });
    scheduler.at(3, () => trace.push(`second@${scheduler.now()}`));
    scheduler.runUntil(100);
    expect(trace).toEqual(['first@3', 'second@3', 'nested@3', 'later@5']);
    expect(scheduler.now()).toBe(100);
  });

  it('keeps FIFO order among many equal times under heap churn', () => {
    const scheduler = new Scheduler();
    const rng = new Rng(1);
    const expected: Array<[number, number]> = [];
    const trace: Array<[number, number]> = [];
    for (let i = 0; i < 20_000; i++) {
      const timeMs = rng.int(0, 50);
      expected.push([timeMs, i]);
      scheduler.at(timeMs, () => trace.push([timeMs, i]));
    }
    scheduler.runUntil(50);
    expected.sort((left, right) => left[0] - right[0] || left[1] - right[1]);
    expect(trace).toEqual(expected);
  });

  it('rejects times in the past and invalid delays', () => {
    const scheduler = new Scheduler();
    scheduler.runUntil(10);
    expect(() => scheduler.at(9, () => {})).toThrow(/before now/);
    expect(() => scheduler.after(-1, () => {})).toThrow(RangeError);
    expect(() => scheduler.at(Number.NaN, () => {})).toThrow(RangeError);
    expect(() => scheduler.runUntil(5)).toThrow(/before now/);
  });

  it('cancels pending events, and cancelling twice or after running is harmless', () => {
    const scheduler = new Scheduler();
    const trace: string[] = [];
    const a = scheduler.at(1, () => trace.push('a'));
    const b = scheduler.at(2, () => trace.push('b'));
    scheduler.at(3, () => trace.push('c'));
    expect(scheduler.cancel(b)).toBe(true);
    expect(scheduler.cancel(b)).toBe(false);
    expect(scheduler.pendingCount()).toBe(2);
    scheduler.runUntil(10);
    expect(trace).toEqual(['a', 'c']);
    expect(scheduler.cancel(a)).toBe(false);
    expect(scheduler.pendingCount()).toBe(0);
  });

  it('cancelling the earliest event leaves the next one first', () => {
    const scheduler = new Scheduler();
    const trace: string[] = [];
    const first = scheduler.at(1, () => trace.push('first'));
    scheduler.at(2, () => trace.push('second'));
    scheduler.cancel(first);
    expect(scheduler.nextTime()).toBe(2);
    expect(scheduler.step()).toBe(true);
    expect(trace).toEqual(['second']);
    expect(scheduler.now()).toBe(2);
  });

  it('survives timer re-arming at scale (compaction) with the same order as without cancels', () => {
    const scheduler = new Scheduler();
    const trace: number[] = [];
    const timers: EventId[] = [];
    for (let i = 0; i < 10_000; i++) timers.push(scheduler.at(1_000 + i, () => trace.push(i)));
    // Re-arm every timer many times, as a replica resets its view-change timeout on each message.
    for (let round = 0; round < 20; round++) {
      for (let i = 0; i < timers.length; i++) {
        scheduler.cancel(timers[i]!);
        timers[i] = scheduler.at(1_000 + round + i, () => trace.push(i));
      }
    }
    expect(scheduler.pendingCount()).toBe(10_000);
    scheduler.runUntil(100_000);
    expect(trace).toEqual(Array.from({ length: 10_000 }, (_, i) => i));
  });

  it('runs a million events quickly', () => {
    const scheduler = new Scheduler();
    const rng = new Rng(2);
    let ran = 0;
    let lastTimeMs = 0;
    let ordered = true;
    const action = (): void => {
      ran++;
      if (scheduler.now() < lastTimeMs) ordered = false;
      lastTimeMs = scheduler.now();
      if (ran + scheduler.pendingCount() < 1_000_000) scheduler.after(rng.int(0, 100), action);
    };
    for (let i = 0; i < 1000; i++) scheduler.after(rng.int(0, 100), action);
    const result = scheduler.runUntil(10_000_000, { eventsMax: 2_000_000 });
    expect(result).toEqual({ stopped: false, eventsRun: 1_000_000 });
    expect(ran).toBe(1_000_000);
    expect(ordered).toBe(true);
  });

  it('runUntil runs only events due by the given time, then sets now to it', () => {
    const scheduler = new Scheduler();
    const trace: number[] = [];
    for (const timeMs of [5, 10, 15]) scheduler.at(timeMs, () => trace.push(timeMs));
    expect(scheduler.runUntil(10)).toEqual({ stopped: false, eventsRun: 2 });
    expect(trace).toEqual([5, 10]);
    expect(scheduler.now()).toBe(10);
    expect(scheduler.pendingCount()).toBe(1);
  });

  it('runUntil stops as soon as stop() holds, checked after each event', () => {
    const scheduler = new Scheduler();
    let count = 0;
    for (let timeMs = 1; timeMs <= 10; timeMs++) scheduler.at(timeMs, () => count++);
    const result = scheduler.runUntil(100, { stop: () => count === 4 });
    expect(result).toEqual({ stopped: true, eventsRun: 4 });
    expect(scheduler.now()).toBe(4);
    expect(scheduler.pendingCount()).toBe(6);
    expect(scheduler.runUntil(100)).toEqual({ stopped: false, eventsRun: 6 });
  });

  it('runUntil throws a clear error when eventsMax is exceeded', () => {
    const scheduler = new Scheduler();
    const loop = (): void => {
      scheduler.after(0, loop);
    };
    scheduler.at(7, loop);
    expect(() => scheduler.runUntil(1_000, { eventsMax: 500 })).toThrow(/more than eventsMax=500 events before 1000 ms/);
    expect(scheduler.now()).toBe(7);

    // Exactly eventsMax events due is within the bound.
    const bounded = new Scheduler();
    for (let i = 0; i < 3; i++) bounded.at(i, () => {});
    expect(bounded.runUntil(10, { eventsMax: 3 })).toEqual({ stopped: false, eventsRun: 3 });
  });

  it('removes an event before running it, so an action that throws does not run again', () => {
    const scheduler = new Scheduler();
    let calls = 0;
    scheduler.at(1, () => {
      calls++;
      throw new Error('boom');
    });
    expect(() => scheduler.runUntil(5)).toThrow('boom');
    expect(scheduler.pendingCount()).toBe(0);
    scheduler.runUntil(5);
    expect(calls).toBe(1);
  });
});
