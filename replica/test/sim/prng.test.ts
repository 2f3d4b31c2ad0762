import { describe, expect, it } from 'vitest';
import { Rng } from './prng.ts';

function draws(rng: Rng, count: number): number[] {
  return Array.from({ length: count }, () => rng.uint32());
}

describe('Rng', () => {
  it('gives the same sequence for the same seed', () => {
    expect(draws(new Rng(42), 1000)).toEqual(draws(new Rng(42), 1000));
    const left = new Rng(7);
    const right = new Rng(7);
    expect([left.next(), left.int(-5, 5), left.chance(0.5), left.pick(['a', 'b', 'c']), [...left.bytes(7)]]).toEqual([
      right.next(),
      right.int(-5, 5),
      right.chance(0.5),
      right.pick(['a', 'b', 'c']),
      [...right.bytes(7)],
    ]);
  });

  it('pins the stream, so a change to the generator cannot silently change every recorded seed', () => {
    // Recorded from this implementation; if it must change, failing seeds recorded before no longer reproduce.
    expect(draws(new Rng(0), 4)).toMatchInlineSnapshot(`
      [
        4205396811,
        3543653536,
        1222415357,
        3047368389,
      ]
    `);
    expect(draws(new Rng(0).fork('network'), 2)).toMatchInlineSnapshot(`
      [
        1895346511,
        1308177476,
      ]
    `);
  });

  it('gives different sequences for different seeds, including adjacent ones', () => {
    const sequences = new Set<string>();
    for (let seed = 0; seed < 100; seed++) sequences.add(draws(new Rng(seed), 4).join(','));
    sequences.add(draws(new Rng(0xffffffff), 4).join(','));
    expect(sequences.size).toBe(101);
    // Adjacent seeds must not give correlated first draws (a failure of naive seeding).
    const firstDraws = Array.from({ length: 1000 }, (_, seed) => new Rng(seed).next());
    const mean = firstDraws.reduce((sum, value) => sum + value, 0) / firstDraws.length;
    expect(mean).toBeGreaterThan(0.45);
    expect(mean).toBeLessThan(0.55);
  });

  it('rejects seeds that are not 32-bit unsigned integers', () => {
    expect(() => new Rng(-1)).toThrow(RangeError);
    expect(() => new Rng(2 ** 32)).toThrow(RangeError);
    expect(() => new Rng(1.5)).toThrow(RangeError);
  });

  it('keeps next() in [0, 1)', () => {
    const rng = new Rng(3);
    let lowest = 1;
    let highest = 0;
    for (let i = 0; i < 100_000; i++) {
      const value = rng.next();
      lowest = Math.min(lowest, value);
      highest = Math.max(highest, value);
    }
    expect(lowest).toBeGreaterThanOrEqual(0);
    expect(lowest).toBeLessThan(0.001);
    expect(highest).toBeLessThan(1);
    expect(highest).toBeGreaterThan(0.999);
  });

  it('draws int() within inclusive bounds, hitting both ends, roughly uniformly over 100k draws', () => {
    const rng = new Rng(12345);
    const counts = new Array<number>(10).fill(0);
    let outOfBounds = 0;
    for (let i = 0; i < 100_000; i++) {
      const value = rng.int(3, 12);
      if (!Number.isInteger(value) || value < 3 || value > 12) outOfBounds++;
      else counts[value - 3]!++;
    }
    expect(outOfBounds).toBe(0);
    // Expected 10 000 each, standard deviation ~95: ±600 is over six deviations.
    for (const count of counts) {
      expect(count).toBeGreaterThan(9_400);
      expect(count).toBeLessThan(10_600);
    }
    let chiSquare = 0;
    for (const count of counts) chiSquare += (count - 10_000) ** 2 / 10_000;
    expect(chiSquare).toBeLessThan(30); // 9 degrees of freedom: p < 0.001 beyond ~27.9
  });

  it('handles degenerate and extreme int() ranges', () => {
    const rng = new Rng(1);
    expect(rng.int(5, 5)).toBe(5);
    const full = rng.int(0, 2 ** 32 - 1);
    expect(full >= 0 && full < 2 ** 32).toBe(true);
    const negative = rng.int(-(2 ** 31), 2 ** 31 - 1);
    expect(negative >= -(2 ** 31) && negative < 2 ** 31).toBe(true);
    expect(() => rng.int(2, 1)).toThrow(RangeError);
    expect(() => rng.int(0, 2 ** 32)).toThrow(RangeError);
    expect(() => rng.int(0.5, 2)).toThrow(RangeError);
  });

  it('chance() follows its probability and validates it', () => {
    const rng = new Rng(99);
    let hits = 0;
    for (let i = 0; i < 100_000; i++) if (rng.chance(0.3)) hits++;
    expect(hits).toBeGreaterThan(29_000); // expected 30 000, deviation ~145
    expect(hits).toBeLessThan(31_000);
    expect(rng.chance(0)).toBe(false);
    expect(rng.chance(1)).toBe(true);
    expect(() => rng.chance(1.01)).toThrow(RangeError);
    expect(() => rng.chance(Number.NaN)).toThrow(RangeError);
  });

  it('pick() returns members and throws on empty', () => {
    const rng = new Rng(5);
    const items = ['a', 'b', 'c'] as const;
    const seen = new Set<string>();
    for (let i = 0; i < 100; i++) seen.add(rng.pick(items));
    expect([...seen].sort()).toEqual(['a', 'b', 'c']);
    expect(() => rng.pick([])).toThrow(RangeError);
  });

  it('shuffle() permutes in place, deterministically, reaching every permutation', () => {
    const rng = new Rng(8);
    const items = [1, 2, 3, 4, 5, 6, 7, 8];
    const result = rng.shuffle(items);
    expect(result).toBe(items);
    expect([...items].sort()).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(new Rng(8).shuffle([1, 2, 3, 4, 5, 6, 7, 8])).toEqual(items);

    const permutations = new Map<string, number>();
    for (let i = 0; i < 24_000; i++) {
      const key = rng.shuffle([1, 2, 3, 4]).join('');
      permutations.set(key, (permutations.get(key) ?? 0) + 1);
    }
    expect(permutations.size).toBe(24);
    for (const count of permutations.values()) {
      expect(count).toBeGreaterThan(800); // expected 1000, deviation ~31
      expect(count).toBeLessThan(1200);
    }
  });

  it('bytes() gives the requested length, deterministically, with all byte values', () => {
    for (const length of [0, 1, 3, 4, 5, 17]) expect(new Rng(2).bytes(length)).toHaveLength(length);
    expect(new Rng(2).bytes(33)).toEqual(new Rng(2).bytes(33));
    const values = new Set(new Rng(2).bytes(10_000));
    expect(values.size).toBe(256);
    expect(() => new Rng(2).bytes(-1)).toThrow(RangeError);
  });

  it('fork() is deterministic, independent of the parent position, and does not advance the parent', () => {
    const parent = new Rng(2024);
    const advanced = new Rng(2024);
    draws(advanced, 537);
    expect(draws(parent.fork('network'), 100)).toEqual(draws(advanced.fork('network'), 100));

    // Drawing from a child leaves the parent's stream exactly as if no fork had happened.
    const untouched = new Rng(2024);
    const forking = new Rng(2024);
    const child = forking.fork('clock');
    draws(child, 50);
    expect(draws(forking, 100)).toEqual(draws(untouched, 100));
    expect(forking.fork('clock').seed).toBe(2024);
  });

  it('fork() streams differ from each other, from the parent, and by ancestry', () => {
    const root = new Rng(2024);
    const streams = [
      draws(new Rng(2024), 8),
      draws(root.fork('a'), 8),
      draws(root.fork('b'), 8),
      draws(root.fork(''), 8),
      draws(root.fork('a').fork('b'), 8),
      draws(root.fork('b').fork('a'), 8),
      draws(new Rng(2025).fork('a'), 8),
      draws(root.fork('replica-1'), 8),
      draws(root.fork('replica-2'), 8),
      draws(root.fork('ü'), 8),
    ];
    expect(new Set(streams.map((stream) => stream.join(','))).size).toBe(streams.length);

    // Children of one parent are uncorrelated: paired uniforms have a near-zero correlation.
    const left = root.fork('replica-1');
    const right = root.fork('replica-2');
    let sumProduct = 0;
    const count = 100_000;
    for (let i = 0; i < count; i++) sumProduct += (left.next() - 0.5) * (right.next() - 0.5);
    const correlation = sumProduct / count / (1 / 12);
    expect(Math.abs(correlation)).toBeLessThan(0.02); // deviation of the estimate ~0.003
  });
});
