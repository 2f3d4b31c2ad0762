import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { WorkQueue } from './work-queue.ts';

const options = { concurrency: 2, retryBaseMs: 100, retryMaxMs: 1_000, keysMax: 3 } as const;

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

describe('WorkQueue', () => {
  it('runs a key added many times once, and never one key twice at once', async () => {
    const runs: string[] = [];
    let release: () => void = () => {};
    const queue = new WorkQueue(async (key) => {
      runs.push(key);
      if (key === 'a' && runs.filter((k) => k === 'a').length === 1) await new Promise<void>((resolve) => (release = resolve));
    }, options);
    queue.add('a');
    queue.add('a');
    queue.add('b');
    await vi.advanceTimersByTimeAsync(0);
    expect(runs).toEqual(['a', 'b']);
    // Added while running: once more afterwards, not in parallel.
    queue.add('a');
    queue.add('a');
    await vi.advanceTimersByTimeAsync(0);
    expect(runs).toEqual(['a', 'b']);
    release();
    await vi.advanceTimersByTimeAsync(0);
    expect(runs).toEqual(['a', 'b', 'a']);
  });

  it('retries a failing key with exponential backoff up to the bound, and requeues after a delay on request', async () => {
    const times: number[] = [];
    const queue = new WorkQueue(async () => {
      times.push(Date.now());
      throw new Error('fails');
    }, options);
    const start = Date.now();
    queue.add('x');
    await vi.advanceTimersByTimeAsync(5_000);
    const gaps = times.slice(1).map((t, i) => t - (times[i] as number));
    expect(times[0]).toBe(start);
    expect(gaps.slice(0, 5)).toEqual([100, 200, 400, 800, 1_000]);
    queue.stop();

    const runs: number[] = [];
    const requeuing = new WorkQueue(async () => {
      runs.push(Date.now());
      return { requeueAfterMs: 250 };
    }, options);
    requeuing.add('y');
    await vi.advanceTimersByTimeAsync(600);
    expect(runs.length).toBe(3);
    requeuing.stop();
  });

  it('holds at most keysMax keys and counts the ones it drops', () => {
    const queue = new WorkQueue(() => new Promise(() => {}), { ...options, concurrency: 1 });
    for (const key of ['a', 'b', 'c', 'd', 'e']) queue.add(key);
    // One runs; three wait; one is dropped.
    expect(queue.stats()).toMatchObject({ running: 1, waiting: 3, dropped: 1 });
  });
});
