// One randomized run per seed: a safety phase with network faults, crashes, restarts, partitions and
// Byzantine replicas, then a liveness phase in which the network heals and every crashed replica
// restarts (the Byzantine ones keep misbehaving): every client must then finish within a bound.
//
// With disk faults, the replicas also checkpoint often (every 4–10 instances, a retained window of 4–6
// periods), and the safety phase adds: crashes in the middle of persisting a Ready (a prefix durable,
// the next record torn), long crashes (the replica falls behind the retained window), and, on one
// replica only, lost disks: a plain wipe, or a flipped bit in its log or a checkpoint that makes it
// refuse to start until the operator wipes it. A wiped replica is amnesic until it is past what it
// forgot; it counts as a fault, so liveness is only required when Byzantine replicas plus the one
// that lost its disk are at most f (a quarter of such runs take f Byzantine replicas anyway and check
// safety alone). After the liveness phase every correct replica must have caught up, wiped ones by
// state transfer, and every correct replica's state must be exactly the state of its last instance.

import { type FaultMode, maxFaults, quorumsFor } from '../../src/core/quorum.ts';
import { type BehaviourName, behaviours, consensusBehaviourNames, behaviourNames } from './byzantine.ts';
import { Rng } from './prng.ts';
import { type ByzantineAssignment, type ReconfigurationStep, type SimCheckpointConfig, Simulation, type SimulationResult } from './simulation.ts';
import type { Membership } from '../../src/core/reconfiguration.ts';
import { type Reconfiguration, type ReconfigurationOperation, reconfigurationSigningPayload } from '../../src/protocol/reconfiguration.ts';

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
  /** Checkpoints, torn writes, flipped bits, wipes and state transfer (with Byzantine chunk servers). */
  readonly diskFaults?: boolean;
  /**
   * A View Manager adds and removes replicas during the safety phase, and sends requests that must be
   * refused: signed by another key, for a stale view, or replayed.
   */
  readonly reconfiguration?: boolean;
  /** Replicas accept any View Manager signature: only to prove the checkers catch it. */
  readonly brokenViewManagerCheck?: boolean;
}

type DiskFaultKind = 'torn-write' | 'long-crash' | 'wipe' | 'flip-log' | 'flip-checkpoint';

export const safetyPhaseMs = 4000;
/** After faults stop, every request must be answered within this much simulated time. */
export const livenessBoundMs = 120_000;

export function reproduceCommand(options: SeedOptions): string {
  const parts = [`npm run sim -- --seed ${options.seed} --replicas ${options.replicas} --mode ${options.mode}`];
  if (options.byzantine) parts.push('--byzantine');
  if (options.behaviours) parts.push(`--behaviours ${options.behaviours.join(',')}`);
  if (options.brokenQuorum) parts.push('--broken-quorum');
  if (options.diskFaults) parts.push('--disk-faults');
  if (options.reconfiguration) parts.push('--reconfiguration');
  return parts.join(' ');
}

const simAddress = { port: 1, adminPort: 1 } as const;
const simPublicKey = new Uint8Array(32);

/**
 * A request of the simulated View Manager, built against the newest view when its turn comes. Adds take
 * the next spare id; removals take a Byzantine member first, else a correct one the fault budget allows
 * to lose; f only ever grows, so the Byzantine replicas never exceed it.
 */
function reconfigurationStep(
  kind: 'add' | 'remove' | 'forged' | 'stale' | 'replay',
  genesisSize: number,
  spares: number,
  byzantineIds: readonly number[],
  rng: Rng,
  forge: (payload: Uint8Array) => Uint8Array,
): ReconfigurationStep {
  const nonce = () => Uint8Array.of(rng.int(0, 255), rng.int(0, 255), rng.int(0, 255));
  /** A valid change of `current`, or null when none fits. */
  const change = (current: Membership, want: 'add' | 'remove'): ReconfigurationOperation[] | null => {
    const view = current.view;
    if (want === 'add') {
      const id = Math.max(current.highestIdEver + 1, genesisSize);
      if (id >= genesisSize + spares) return null;
      const operations: ReconfigurationOperation[] = [{ kind: 'add', id, host: `r${id}`, ...simAddress, publicKey: simPublicKey }];
      const larger = maxFaults(view.members.length + 1, view.mode);
      if (larger > view.f && rng.chance(0.4)) operations.push({ kind: 'set-f', f: larger });
      return operations;
    }
    const byzantineMembers = view.members.filter((id) => byzantineIds.includes(id));
    const canLoseCorrect = view.members.length - 1 >= (view.mode === 'bft' ? 3 * view.f + 1 : 2 * view.f + 1);
    const candidates = byzantineMembers.length > 0 && canLoseCorrect ? byzantineMembers : canLoseCorrect ? view.members : [];
    if (candidates.length === 0) return null;
    return [{ kind: 'remove', id: rng.pick(candidates) }];
  };
  return {
    label: kind,
    build: (current, lastAccepted, sign) => {
      const fromView = current.view.number;
      switch (kind) {
        case 'add':
        case 'remove': {
          const operations = change(current, kind);
          return operations === null ? null : { signed: sign({ fromView, operations, epoch: 1, nonce: nonce() }), expect: 'accepted' };
        }
        case 'forged': {
          const operations = change(current, 'add') ?? change(current, 'remove');
          if (operations === null) return null;
          const reconfiguration: Reconfiguration = { fromView, operations, epoch: 1, nonce: nonce() };
          return { signed: { reconfiguration, signature: forge(reconfigurationSigningPayload(reconfiguration)) }, expect: 'refused' };
        }
        case 'stale': {
          const operations = change(current, 'add') ?? change(current, 'remove');
          if (operations === null) return null;
          const stale = fromView > 0 && rng.chance(0.7) ? fromView - 1 : fromView + rng.int(1, 3);
          return { signed: sign({ fromView: stale, operations, epoch: 1, nonce: nonce() }), expect: 'refused' };
        }
        case 'replay':
          // The same signed request again: its view is gone, so it must change nothing.
          return lastAccepted === null ? null : { signed: lastAccepted, expect: 'refused' };
      }
    },
  };
}

export function runSeed(options: SeedOptions): SimulationResult {
  const plan = new Rng(options.seed >>> 0).fork('plan');
  // A stream of its own, so that runs without disk faults draw exactly what they always drew.
  const diskPlan = new Rng(options.seed >>> 0).fork('disk-plan');
  // Its own stream, so that the draws above mean what they meant before batch filling existed.
  const batchPlan = new Rng(options.seed >>> 0).fork('batch-plan');
  const diskFaults = options.diskFaults === true;
  const n = options.replicas;
  const f = maxFaults(n, options.mode);
  const losesDisk = diskFaults && diskPlan.chance(0.6);
  const overBudget = losesDisk && options.byzantine && options.mode === 'bft' && diskPlan.chance(0.25);
  const byzantineCount = losesDisk && !overBudget ? f - 1 : f;
  const byzantine: ByzantineAssignment[] = [];
  if (options.byzantine && options.mode === 'bft') {
    const ids = plan.shuffle(Array.from({ length: n }, (_, i) => i)).slice(0, byzantineCount);
    const names = options.behaviours ?? (diskFaults ? behaviourNames : consensusBehaviourNames);
    for (const id of ids) {
      const name = plan.pick(names);
      byzantine.push({ id, behaviour: behaviours[name], twin: name === 'twins', label: name });
    }
  }
  const quorums = quorumsFor(n, f, options.mode);
  const spareReplicas = 3;
  let checkpoints: SimCheckpointConfig | undefined;
  if (diskFaults) {
    const periodInstances = diskPlan.int(4, 10);
    checkpoints = {
      periodInstances,
      periodBytes: diskPlan.chance(0.3) ? diskPlan.int(4_000, 40_000) : 1024 * 1024,
      decisionsRetainedMax: Math.max(8, periodInstances * diskPlan.int(4, 6)),
    };
  }
  const sim = new Simulation({
    seed: options.seed,
    replicas: n,
    mode: options.mode,
    clients: plan.int(2, 4),
    requestsPerClient: plan.int(4, 10) + (diskFaults ? diskPlan.int(0, 8) : 0),
    signedRequests: plan.chance(0.3),
    batchFillPercent: batchPlan.pick([0, 0, 50, 90, 100]),
    forgingClient: batchPlan.fork('forger').chance(0.5),
    byzantine,
    ...(options.reconfiguration ? { spareReplicas } : {}),
    ...(options.brokenViewManagerCheck ? { brokenViewManagerCheck: true } : {}),
    ...(checkpoints ? { checkpoints, operationPadBytes: diskPlan.pick([0, 40, 200, 600]) } : {}),
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
  if (checkpoints) {
    sim.log(
      `checkpoints every ${checkpoints.periodInstances} instances or ${checkpoints.periodBytes} B; ` +
        `${checkpoints.decisionsRetainedMax} decisions retained`,
    );
  }

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
  const expectLiveness = !overBudget;
  if (diskFaults) {
    const victim = losesDisk ? diskPlan.pick(correct) : null;
    if (victim !== null) sim.log(`r${victim} will lose its disk${overBudget ? ` (with ${byzantine.length} Byzantine: over the fault budget, safety only)` : ''}`);
    const kinds: DiskFaultKind[] = victim === null ? ['torn-write', 'long-crash'] : ['torn-write', 'long-crash', 'wipe', 'flip-log', 'flip-checkpoint'];
    const events = diskPlan.int(1, 4);
    for (let i = 0; i < events; i++) {
      const kind = diskPlan.pick(kinds);
      const destroys = kind === 'wipe' || kind === 'flip-log' || kind === 'flip-checkpoint';
      const id = destroys ? (victim as number) : diskPlan.pick(correct);
      const at = diskPlan.int(0, safetyPhaseMs - 200);
      const downMs = kind === 'long-crash' ? diskPlan.int(1500, 3500) : diskPlan.int(50, 1500);
      const back = Math.min(at + downMs, safetyPhaseMs - 1);
      sim.scheduler.at(at, () => {
        switch (kind) {
          case 'torn-write':
            return sim.crashDuringNextPersist(id);
          case 'long-crash':
          case 'wipe':
            return sim.crash(id);
          case 'flip-log':
          case 'flip-checkpoint':
            sim.crash(id);
            sim.flipBit(id, kind === 'flip-log' ? 'log' : 'checkpoint');
            return;
        }
      });
      sim.scheduler.at(back, () => (kind === 'wipe' ? sim.wipe(id) : sim.restart(id)));
    }
  }
  if (options.reconfiguration) {
    // A stream of its own, so that runs without reconfiguration draw exactly what they always drew.
    const reconfigurationPlan = new Rng(options.seed >>> 0).fork('reconfiguration-plan');
    const byzantineIds = byzantine.map((b) => b.id);
    const steps = reconfigurationPlan.int(2, 6);
    for (let i = 0; i < steps; i++) {
      const kind = reconfigurationPlan.pick(['add', 'add', 'remove', 'forged', 'stale', 'replay'] as const);
      const at = reconfigurationPlan.int(0, safetyPhaseMs - 400);
      const step = reconfigurationStep(kind, n, spareReplicas, byzantineIds, reconfigurationPlan.fork(`step-${i}`), (payload) => sim.keys.signClient('mallory', payload));
      sim.scheduler.at(at, () => sim.reconfigure(step));
    }
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
  if (!diskFaults && options.reconfiguration !== true) {
    sim.runUntil(safetyPhaseMs + livenessBoundMs, true);
    if (sim.violations.length === 0) sim.checkLiveness();
    if (sim.violations.length === 0) sim.checkFinalStates();
    return sim.result();
  }
  sim.runUntil(safetyPhaseMs + livenessBoundMs, true, expectLiveness);
  if (sim.violations.length === 0 && expectLiveness) sim.checkLiveness();
  if (sim.violations.length === 0 && expectLiveness) sim.checkCaughtUp();
  if (sim.violations.length === 0) sim.checkFinalStates();
  return sim.result();
}
