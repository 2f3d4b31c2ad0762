// Named scenarios on the timed simulator: each sets up one fault on purpose, runs the real cores, and
// asserts both safety (no checker fired) and the expected recovery.
import { describe, expect, it } from 'vitest';
import { decodeMessage } from '../../src/protocol/codec.ts';
import { MessageType } from '../../src/protocol/messages.ts';
import { DropReason } from '../../src/protocol/reasons.ts';
import { behaviours } from './byzantine.ts';
import { reproduceCommand, runSeed } from './run.ts';
import { Simulation, type SimulationOptions } from './simulation.ts';

const livenessMs = 60_000;

function simulate(options: Partial<SimulationOptions> & { seed: number }): Simulation {
  return new Simulation({ replicas: 4, mode: 'bft', clients: 3, requestsPerClient: 8, ...options });
}

/** Run until every client is done (or the bound), then a little longer so laggards catch up. */
function finish(sim: Simulation): void {
  sim.runUntil(sim.scheduler.now() + livenessMs, true);
  if (sim.violations.length === 0) sim.checkLiveness();
  sim.runUntil(sim.scheduler.now() + 2000);
  expect(sim.violations).toEqual([]);
}

function lastDecided(sim: Simulation, id: number): number {
  return sim.replicaStatus(id)?.lastDecidedCid ?? -2;
}

describe('scenario: leader crash mid-instance', () => {
  it('a new leader finishes the instance the crashed leader proposed to only one replica', () => {
    for (const seed of [1, 2, 3]) {
      const sim = simulate({ seed });
      let crashed = false;
      sim.network.setFilter((from, to, bytes) => {
        if (from !== 0 || crashed) return undefined;
        const decoded = decodeMessage(bytes);
        if (!decoded.ok || decoded.message.type !== MessageType.PROPOSE || decoded.message.cid !== 3) return undefined;
        // r0 gets its PROPOSE for cid 3 out to r1 only, then dies.
        if (to === 1) return undefined;
        crashed = true;
        sim.scheduler.after(0, () => sim.crash(0));
        return null;
      });
      finish(sim);
      expect(crashed).toBe(true);
      for (const id of [1, 2, 3]) {
        expect(sim.replicaStatus(id)?.regency).toBeGreaterThanOrEqual(1);
        expect(lastDecided(sim, id)).toBeGreaterThanOrEqual(3);
      }
    }
  });
});

describe('scenario: leader equivocation', () => {
  it('an equivocating leader cannot split the correct replicas, and is replaced', () => {
    let conflicting = 0;
    for (const seed of [11, 12, 13, 14]) {
      const sim = simulate({ seed, byzantine: [{ id: 0, behaviour: behaviours.equivocate, label: 'equivocate' }] });
      finish(sim);
      for (const id of [1, 2, 3]) conflicting += sim.replicaStatus(id)?.dropped[DropReason.CONFLICTING_VOTE] ?? 0;
      expect(sim.replicaStatus(1)?.leaderChanges).toBeGreaterThanOrEqual(1);
    }
    // The equivocation reached the correct replicas and was seen for what it is.
    expect(conflicting).toBeGreaterThan(0);
  });
});

describe('scenario: partitioned leader', () => {
  it('the majority side elects a new leader; the old one catches up after the partition heals', () => {
    const sim = simulate({ seed: 21, requestsPerClient: 12 });
    sim.scheduler.at(300, () => sim.splitReplicas([[0], [1, 2, 3]]));
    sim.runUntil(3000);
    const duringPartition = lastDecided(sim, 1);
    expect(sim.replicaStatus(1)?.regency).toBeGreaterThanOrEqual(1);
    expect(duringPartition).toBeGreaterThan(lastDecided(sim, 0));
    sim.network.heal();
    finish(sim);
    expect(lastDecided(sim, 0)).toBe(lastDecided(sim, 1));
  });
});

describe('scenario: twins', () => {
  it('two replicas with one identity (the leader\'s) do not break agreement', () => {
    for (const seed of [31, 32, 33, 34, 35]) {
      const twinId = seed % 4;
      const sim = simulate({ seed, byzantine: [{ id: twinId, behaviour: behaviours.twins, twin: true, label: 'twins' }] });
      finish(sim);
    }
  });
});

describe('scenario: crash mode with f crashed', () => {
  it('n=3, f=1: the leader stays down and the other two go on', () => {
    const sim = simulate({ seed: 41, replicas: 3, mode: 'crash' });
    sim.scheduler.at(200, () => sim.crash(0));
    finish(sim);
    expect(sim.isCrashed(0)).toBe(true);
    expect(lastDecided(sim, 1)).toBe(lastDecided(sim, 2));
  });
  it('n=5, f=2: two replicas, the first leader among them, stay down', () => {
    const sim = simulate({ seed: 42, replicas: 5, mode: 'crash' });
    sim.scheduler.at(150, () => sim.crash(0));
    sim.scheduler.at(400, () => sim.crash(3));
    finish(sim);
    expect(lastDecided(sim, 1)).toBeGreaterThan(0);
  });
});

describe('scenario: restart from persisted votes', () => {
  it('a replica killed between its votes comes back without contradicting them, and catches up', () => {
    for (const seed of [51, 52, 53]) {
      const sim = simulate({ seed, requestsPerClient: 12 });
      let kills = 0;
      sim.network.setFilter((from, _to, bytes) => {
        const decoded = decodeMessage(bytes);
        // Kill r2 right after it sent an ACCEPT, at three different instances.
        if (from === 2 && decoded.ok && decoded.message.type === MessageType.ACCEPT && decoded.message.cid % 4 === 1 && kills < 3) {
          kills++;
          sim.scheduler.after(0, () => sim.crash(2));
          sim.scheduler.after(150, () => sim.restart(2));
        }
        return undefined;
      });
      finish(sim);
      expect(kills).toBeGreaterThan(0);
      expect(lastDecided(sim, 2)).toBe(lastDecided(sim, 1));
    }
  });
});

describe('the checkers catch a broken protocol', () => {
  it('quorums one smaller let an equivocating leader split the replicas, and agreement fires', () => {
    const found: string[] = [];
    for (let seed = 1; seed <= 40 && found.length === 0; seed++) {
      const options = { seed, replicas: 4, mode: 'bft' as const, byzantine: true, behaviours: ['equivocate' as const], brokenQuorum: true };
      const result = runSeed(options);
      if (result.violations.some((v) => v.kind === 'agreement')) found.push(reproduceCommand(options));
    }
    expect(found.length).toBe(1);
  });
});

describe('scenario: a client forging signatures', () => {
  it('none of its requests is ordered, and the honest clients finish without a leader change', () => {
    for (const seed of [1, 2, 3]) {
      const sim = simulate({ seed, signedRequests: true, forgingClient: true });
      finish(sim);
      const result = sim.result();
      expect(result.forgedRequests).toBeGreaterThan(3);
      // The leader drops them at once, the followers when their timers run out.
      expect(result.droppedByReason[DropReason.BAD_SIGNATURE] ?? 0).toBeGreaterThan(result.forgedRequests / 2);
      expect(result.leaderChanges).toBe(0);
    }
  });
});
