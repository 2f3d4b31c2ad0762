import { describe, expect, it } from 'vitest';
import { maxFaults, quorumsFor } from './quorum.ts';

// DESIGN §2: thresholds of BFT-SMaRt, checked for the view sizes we support.
describe('quorums of a BFT view (n ≥ 3f+1)', () => {
  const cases = [
    { n: 4, f: 1, accept: 3, stopInstall: 3, collect: 3, unordered: 3 },
    { n: 5, f: 1, accept: 4, stopInstall: 3, collect: 4, unordered: 4 },
    { n: 7, f: 2, accept: 5, stopInstall: 5, collect: 5, unordered: 5 },
    { n: 10, f: 3, accept: 7, stopInstall: 7, collect: 7, unordered: 7 },
  ];
  for (const c of cases) {
    it(`n=${c.n}: f=${c.f}, WRITE/ACCEPT need more than (n+f)/2 = ${c.accept}`, () => {
      expect(maxFaults(c.n, 'bft')).toBe(c.f);
      const q = quorumsFor(c.n, c.f, 'bft');
      expect(q.write).toBe(c.accept);
      expect(q.accept).toBe(c.accept);
      expect(q.stopJoin).toBe(c.f + 1);
      expect(q.stopInstall).toBe(c.stopInstall);
      expect(q.collect).toBe(c.collect);
      expect(q.orderedReply).toBe(c.unordered);
      expect(q.unorderedReply).toBe(c.unordered);
      // An acknowledged write and any later read quorum share a correct replica.
      expect(q.orderedReply + q.unorderedReply - c.n).toBeGreaterThanOrEqual(c.f + 1);
      expect(q.includesCorrect).toBe(c.f + 1);
    });
    it(`n=${c.n}: any two decision quorums share a correct replica, and so do a decision quorum and a collect`, () => {
      const q = quorumsFor(c.n, c.f, 'bft');
      expect(2 * q.accept - c.n).toBeGreaterThan(c.f);
      expect(q.accept + q.collect - c.n).toBeGreaterThan(c.f);
      // A decision quorum is reachable with f replicas silent.
      expect(q.accept).toBeLessThanOrEqual(c.n - c.f);
      expect(q.collect).toBeLessThanOrEqual(c.n - c.f);
    });
  }
});

describe('quorums of a crash-fault view (n ≥ 2f+1)', () => {
  for (const c of [
    { n: 3, f: 1, majority: 2 },
    { n: 5, f: 2, majority: 3 },
  ]) {
    it(`n=${c.n}: f=${c.f}, no WRITE phase, ACCEPT needs a majority of ${c.majority}`, () => {
      expect(maxFaults(c.n, 'crash')).toBe(c.f);
      const q = quorumsFor(c.n, c.f, 'crash');
      expect(q.write).toBe(0);
      expect(q.accept).toBe(c.majority);
      expect(q.stopJoin).toBe(1);
      expect(q.stopInstall).toBe(c.f + 1);
      expect(q.collect).toBe(c.majority);
      expect(q.orderedReply).toBe(c.majority);
      expect(q.orderedReply + q.unorderedReply).toBeGreaterThan(c.n);
      expect(2 * q.accept).toBeGreaterThan(c.n);
      expect(q.accept).toBeLessThanOrEqual(c.n - c.f);
    });
  }
});

describe('fault tolerance of a view size', () => {
  it('never mixes the BFT and crash thresholds', () => {
    for (let n = 1; n <= 16; n++) {
      expect(3 * maxFaults(n, 'bft') + 1).toBeLessThanOrEqual(n);
      expect(2 * maxFaults(n, 'crash') + 1).toBeLessThanOrEqual(n);
      expect(quorumsFor(n, maxFaults(n, 'bft'), 'bft').accept).toBeGreaterThanOrEqual(
        quorumsFor(n, maxFaults(n, 'crash'), 'crash').accept,
      );
    }
  });
});
