// Named scenarios with disk faults on the timed simulator: checkpoints, lost disks, damaged disks,
// crashes part way through a write, and state transfer against Byzantine chunk servers. Each asserts
// that no checker fired and that the expected recovery happened.
import { describe, expect, it } from 'vitest';
import { Executor } from '../../src/service/executor.ts';
import { behaviours } from './byzantine.ts';
import { concatBytes } from './disk.ts';
import { reproduceCommand, runSeed } from './run.ts';
import { AppendLogService, Simulation, type SimulationOptions, simRepliesPerClientMax } from './simulation.ts';

const livenessMs = 60_000;
const checkpoints = { periodInstances: 4, periodBytes: 1024 * 1024, decisionsRetainedMax: 16 } as const;

function simulate(options: Partial<SimulationOptions> & { seed: number }): Simulation {
  return new Simulation({
    replicas: 4,
    mode: 'bft',
    clients: 3,
    requestsPerClient: 14,
    checkpoints,
    // Results of about 600 B: a reply cache of a few KiB, so that checkpoints span several chunks.
    operationPadBytes: 600,
    ...options,
  });
}

/** Run until every client is done and every correct replica caught up; no checker may have fired. */
function finish(sim: Simulation): void {
  sim.runUntil(sim.scheduler.now() + livenessMs, true, true);
  if (sim.violations.length === 0) sim.checkLiveness();
  if (sim.violations.length === 0) sim.checkCaughtUp();
  if (sim.violations.length === 0) sim.checkFinalStates();
  expect(sim.violations).toEqual([]);
}

function lastDecided(sim: Simulation, id: number): number {
  return sim.replicaStatus(id)?.lastDecidedCid ?? -2;
}

/** Polls every 10 ms from `fromMs` until `condition` holds, then runs `action` once. */
function when(sim: Simulation, fromMs: number, condition: () => boolean, action: () => void): void {
  const poll = (): void => {
    if (condition()) action();
    else sim.scheduler.after(10, poll);
  };
  sim.scheduler.at(fromMs, poll);
}

/** Lets the cluster decide well past the retained window, then loses replica `id`'s disk. */
function wipeLate(sim: Simulation, id: number, atMs = 1500): void {
  sim.scheduler.at(200, () => sim.crash(id));
  sim.scheduler.at(atMs, () => sim.wipe(id));
}

describe('scenario: a replica loses its disk', () => {
  it('comes back amnesic, catches up by state transfer, and ends with the state of the others', () => {
    const sim = simulate({ seed: 101 });
    wipeLate(sim, 3);
    sim.runUntil(1500);
    // While it was down the others went more than two checkpoint periods ahead.
    expect(lastDecided(sim, 0)).toBeGreaterThan(2 * checkpoints.periodInstances);
    finish(sim);
    const transfer = sim.replicaDisk(3)?.transfer;
    expect(transfer?.fetchesInstalled).toBe(1);
    expect(lastDecided(sim, 3)).toBe(lastDecided(sim, 0));
    expect(sim.result().disk.stateTransfersInstalled).toBeGreaterThanOrEqual(1);
  });
});

describe('scenario: Byzantine replicas against state transfer', () => {
  it('a replica serving corrupted chunks is blamed, and the chunk is fetched again from another', () => {
    // r0 (the first attester asked) corrupts every chunk it serves; consensus-wise it is honest.
    const sim = simulate({ seed: 102, byzantine: [{ id: 0, behaviour: behaviours['bad-chunks'], label: 'bad-chunks' }] });
    wipeLate(sim, 3);
    finish(sim);
    const transfer = sim.replicaDisk(3)?.transfer;
    expect(transfer?.fetchesInstalled).toBe(1);
    expect(transfer?.badChunksByReplica[0]).toBeGreaterThanOrEqual(1);
    expect(transfer?.drops['bad_chunk']).toBeGreaterThanOrEqual(1);
  });

  it('a forged manifest, validly self-signed, never gathers f+1 attesters; the attested one is installed', () => {
    const sim = simulate({ seed: 103, byzantine: [{ id: 1, behaviour: behaviours['forged-manifest'], label: 'forged-manifest' }] });
    wipeLate(sim, 3);
    finish(sim);
    const transfer = sim.replicaDisk(3)?.transfer;
    expect(transfer?.fetchesInstalled).toBe(1);
    expect(transfer?.badOffersByReplica[1]).toBeGreaterThanOrEqual(1);
  });

  it('an offer of a checkpoint the offerer does not have is never chosen', () => {
    const sim = simulate({ seed: 104, byzantine: [{ id: 2, behaviour: behaviours['phantom-offer'], label: 'phantom-offer' }] });
    wipeLate(sim, 3);
    finish(sim);
    expect(sim.replicaDisk(3)?.transfer?.fetchesInstalled).toBe(1);
  });

  it('the checkers catch a broken rule: trusting one attester lets a forger\'s state be installed', () => {
    const caught: number[] = [];
    for (let seed = 120; seed < 140 && caught.length === 0; seed++) {
      const sim = simulate({
        seed,
        byzantine: [{ id: 0, behaviour: behaviours['forged-manifest'], label: 'forged-manifest' }],
        stateTransferQuorumOverride: 1,
      });
      wipeLate(sim, 3);
      sim.runUntil(sim.scheduler.now() + livenessMs, true, true);
      if (sim.violations.some((v) => v.kind === 'checkpoint-state')) caught.push(seed);
    }
    expect(caught.length).toBe(1);
  });
});

describe('scenario: a damaged disk', () => {
  it('a flipped bit in the middle of the log refuses the start; the operator wipes it and it recovers', () => {
    const sim = simulate({ seed: 106 });
    let refusal: string | undefined;
    when(sim, 100, () => (sim.replicaDisk(2)?.disk.log.length ?? 0) >= 3, () => {
      sim.crash(2);
      expect(sim.flipBit(2, 'log')).toBe(true);
      sim.scheduler.after(100, () => {
        sim.restart(2);
        expect(sim.isCrashed(2)).toBe(true);
        refusal = sim.replicaDisk(2)?.refusedStart?.code;
      });
    });
    sim.runUntil(1000);
    expect(refusal).toBe('BFT_ERR_WAL_CORRUPT');
    finish(sim);
    expect(sim.result().disk.wipes).toBe(1);
    expect(lastDecided(sim, 2)).toBe(lastDecided(sim, 0));
  });

  it('a flipped bit in the newest checkpoint refuses the start with BFT_ERR_CHECKPOINT_CORRUPT', () => {
    const sim = simulate({ seed: 107 });
    sim.scheduler.at(900, () => {
      sim.crash(1);
      const newest = sim.replicaDisk(1)?.disk.checkpoints.at(-1);
      expect(newest).toBeDefined();
      if (newest) newest.bytes[3] = (newest.bytes[3] as number) ^ 0x10;
    });
    sim.scheduler.at(1000, () => sim.restart(1));
    sim.runUntil(1050);
    expect(sim.replicaDisk(1)?.refusedStart?.code).toBe('BFT_ERR_CHECKPOINT_CORRUPT');
    finish(sim);
    expect(lastDecided(sim, 1)).toBe(lastDecided(sim, 0));
  });

  it('a crash part way through persisting a Ready keeps a prefix; the replica restarts and catches up', () => {
    let torn = 0;
    for (const seed of [108, 109, 110]) {
      const sim = simulate({ seed });
      sim.scheduler.at(300, () => sim.crashDuringNextPersist(2));
      sim.scheduler.at(900, () => sim.restart(2));
      finish(sim);
      torn += sim.result().disk.tornCrashes;
      expect(lastDecided(sim, 2)).toBe(lastDecided(sim, 0));
    }
    expect(torn).toBe(3);
  });

  it('a restart after checkpoints starts from the newest one and replays only the log after it', () => {
    const sim = simulate({ seed: 111 });
    sim.scheduler.at(1200, () => sim.crash(3));
    sim.runUntil(1300);
    const disk = sim.replicaDisk(3)?.disk;
    const newest = disk?.checkpoints.at(-1)?.manifest.cid ?? -1;
    expect(newest).toBeGreaterThanOrEqual(checkpoints.periodInstances - 1);
    const logged = (disk?.log ?? []).flatMap((entry) => (entry.record.kind === 'decision' ? [entry.record.decision.cid] : []));
    expect(Math.min(...logged)).toBe(newest);
    sim.restart(3);
    expect(lastDecided(sim, 3)).toBe(Math.max(...logged));
    finish(sim);
  });
});

describe('checkpoints the simulator takes', () => {
  it('install through the real streamed API (service and reply cache) into the same state', async () => {
    const sim = simulate({ seed: 112 });
    finish(sim);
    const checkpoint = sim.replicaDisk(0)?.disk.checkpoints.at(-1);
    if (checkpoint === undefined) throw new Error('no checkpoint was taken');
    const parts = new Map<string, Uint8Array>();
    let offset = 0;
    for (const part of checkpoint.manifest.parts) {
      parts.set(part.name, checkpoint.bytes.subarray(offset, offset + part.bytes));
      offset += part.bytes;
    }
    // Pieces cut at odd places: readers must not care where.
    async function* cut(bytes: Uint8Array | undefined): AsyncGenerator<Uint8Array> {
      if (bytes === undefined) return;
      for (let at = 0; at < bytes.length; at += 7) yield bytes.slice(at, at + 7);
    }
    const service = new AppendLogService();
    const executor = new Executor(service, simRepliesPerClientMax);
    await service.installSnapshot(cut(parts.get('service')));
    await executor.installReplies(cut(parts.get('replies')));
    expect(concatBytes(service.snapshot())).toEqual(parts.get('service'));
    expect(concatBytes(executor.snapshotReplies())).toEqual(parts.get('replies'));
  });
});

describe('random schedules with disk faults', () => {
  it('no violation in 60 seeds of BFT n=4 and n=7 with Byzantine replicas, nor 40 of crash mode n=3', () => {
    const failed: string[] = [];
    const runs = [
      ...Array.from({ length: 60 }, (_, i) => ({ seed: i + 1, replicas: 4, mode: 'bft' as const, byzantine: true, diskFaults: true })),
      ...Array.from({ length: 60 }, (_, i) => ({ seed: i + 1, replicas: 7, mode: 'bft' as const, byzantine: true, diskFaults: true })),
      ...Array.from({ length: 40 }, (_, i) => ({ seed: i + 1, replicas: 3, mode: 'crash' as const, byzantine: false, diskFaults: true })),
    ];
    for (const options of runs) {
      const violations = runSeed(options).violations;
      if (violations.length > 0) failed.push(`${reproduceCommand(options)}: ${violations[0]?.kind} ${violations[0]?.detail}`);
    }
    expect(failed).toEqual([]);
  });
});
