// One randomized run per seed: a safety phase with network faults, crashes, restarts, partitions and
// Byzantine replicas, then a liveness phase in which the network heals and every crashed replica
// restarts (the Byzantine ones keep misbehaving): every client must then finish within a bound.

import { type FaultMode, maxFaults, quorumsFor } from '../../src/core/quorum.ts';
import { type BehaviourName, behaviourNames, behaviours } from './byzantine.ts';
import { Rng } from './prng.ts';
import { type ByzantineAssignment, Simulation, type SimulationResult } from './simulation.ts';

export interface SeedOptions {
  readonly seed: number;
  readonly replicas: number;
  readonly mode: FaultMode;
  /** Byzantine replicas (BFT only): f of them, each with a behaviour drawn from the seed. */
  readonly byzantine: boolean;
  /** Restrict the behaviours drawn. */
  readonly behaviours?: readonly BehaviourName[];
  /** Make every quorum one smaller: only to prove the checkers catch a broken protocol. */
  readonly brokenQuorum?: boolean;
}

export const safetyPhaseMs = 4000;
/** After faults stop, every request must be answered within this much simulated time. */
export const livenessBoundMs = 120_000;

export function reproduceCommand(options: SeedOptions): string {
  const parts = [`npm run sim -- --seed ${options.seed} --replicas ${options.replicas} --mode ${options.mode}`];
  if (options.byzantine) parts.push('--byzantine');
  if (options.behaviours) parts.push(`--behaviours ${options.behaviours.join(',')}`);
  if (options.brokenQuorum) parts.push('--broken-quorum');
  return parts.join(' ');
}

export function runSeed(options: SeedOptions): SimulationResult {
  const plan = new Rng(options.seed >>> 0).fork('plan');
  const n = options.replicas;
  const f = maxFaults(n, options.mode);
  const byzantine: ByzantineAssignment[] = [];
  if (options.byzantine && options.mode === 'bft') {
    const ids = plan.shuffle(Array.from({ length: n }, (_, i) => i)).slice(0, f);
    const names = options.behaviours ?? behaviourNames;
    for (const id of ids) {
      const name = plan.pick(names);
      byzantine.push({ id, behaviour: behaviours[name], twin: name === 'twins', label: name });
    }
  }
  const quorums = quorumsFor(n, f, options.mode);
  const sim = new Simulation({
    seed: options.seed,
    replicas: n,
    mode: options.mode,
    clients: plan.int(2, 4),
    requestsPerClient: plan.int(4, 10),
    signedRequests: plan.chance(0.3),
    byzantine,
    ...(options.brokenQuorum
      ? {
          quorumsOverride: {
            ...quorums,
            write: Math.max(1, quorums.write - 1),
            accept: quorums.accept - 1,
            collect: quorums.collect - 1,
          },
        }
      : {}),
  });
  for (const b of byzantine) sim.log(`byzantine r${b.id}: ${b.label}`);

  sim.network.setFaults({
    lossRate: plan.chance(0.3) ? 0 : plan.next() * 0.15,
    duplicateRate: plan.next() * 0.05,
    delayMsMin: 1,
    delayMsMax: plan.int(3, 40),
  });
  const correct = Array.from({ length: n }, (_, i) => i).filter((id) => !byzantine.some((b) => b.id === id));
  const crashes = plan.int(0, 3);
  for (let i = 0; i < crashes; i++) {
    const id = plan.pick(correct);
    const at = plan.int(0, safetyPhaseMs - 200);
    const downMs = plan.int(50, 1500);
    sim.scheduler.at(at, () => sim.crash(id));
    sim.scheduler.at(Math.min(at + downMs, safetyPhaseMs - 1), () => sim.restart(id));
  }
  const partitions = plan.int(0, 2);
  for (let i = 0; i < partitions; i++) {
    const at = plan.int(0, safetyPhaseMs - 200);
    const untilMs = Math.min(at + plan.int(100, 1500), safetyPhaseMs - 1);
    const isolated = plan.chance(0.5) ? [0] : plan.shuffle(Array.from({ length: n }, (_, j) => j)).slice(0, plan.int(1, n - 1));
    sim.scheduler.at(at, () => {
      const rest = Array.from({ length: n }, (_, j) => j).filter((j) => !isolated.includes(j));
      sim.splitReplicas([isolated, rest]);
    });
    sim.scheduler.at(untilMs, () => {
      sim.network.heal();
      sim.log('heal');
    });
  }
  sim.scheduler.at(safetyPhaseMs, () => {
    sim.network.heal();
    sim.network.setFaults({ lossRate: 0, duplicateRate: 0, delayMsMin: 1, delayMsMax: 5 });
    for (let id = 0; id < n; id++) sim.restart(id);
    sim.log(`faults stop; liveness phase (bound ${livenessBoundMs} ms; quorums accept=${quorums.accept})`);
  });
  sim.runUntil(safetyPhaseMs + livenessBoundMs, true);
  if (sim.violations.length === 0) sim.checkLiveness();
  return sim.result();
}
