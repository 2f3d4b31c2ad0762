// npm run sim -- --seeds N [--first S] [--seed S] [--replicas 4,7] [--mode bft|crash] [--no-byzantine]
//                [--behaviours silent,equivocate,...] [--broken-quorum] [--disk-faults] [--reconfiguration] [--jobs J] [--trace]
// Runs seeded simulations across worker threads and prints a JSON summary. A failing seed prints the
// command that reproduces it and the end of its trace. Exit code 1 when any run found a violation.

import { availableParallelism } from 'node:os';
import { parseArgs } from 'node:util';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import type { FaultMode } from '../../src/core/quorum.ts';
import { type BehaviourName, behaviourNames } from './byzantine.ts';
import { type SeedOptions, reproduceCommand, runSeed } from './run.ts';
import type { DiskFaultStats } from './simulation.ts';

interface Job {
  readonly runs: readonly SeedOptions[];
  readonly traceLines: number;
}

interface RunReport {
  readonly options: SeedOptions;
  readonly violations: readonly { kind: string; atMs: number; detail: string }[];
  readonly trace: readonly string[];
  readonly decidedInstances: number;
  readonly leaderChanges: number;
  readonly forgedRequests: number;
  readonly disk: DiskFaultStats;
  readonly reconfigurations: { readonly accepted: number; readonly refused: number; readonly views: number };
  readonly wallMs: number;
}

function runJob(job: Job, report: (r: RunReport) => void): void {
  for (const options of job.runs) {
    const started = performance.now();
    const result = runSeed(options);
    report({
      options,
      violations: result.violations,
      trace: result.violations.length > 0 ? result.trace.slice(-job.traceLines) : [],
      decidedInstances: result.decidedInstances,
      leaderChanges: result.leaderChanges,
      forgedRequests: result.forgedRequests,
      disk: result.disk,
      reconfigurations: result.reconfigurations,
      wallMs: performance.now() - started,
    });
  }
}

if (!isMainThread) {
  runJob(workerData as Job, (r) => parentPort?.postMessage(r));
} else {
  await main();
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      seeds: { type: 'string', default: '100' },
      first: { type: 'string', default: '1' },
      seed: { type: 'string' },
      replicas: { type: 'string', default: '4,7' },
      mode: { type: 'string', default: 'bft' },
      byzantine: { type: 'boolean' },
      'no-byzantine': { type: 'boolean', default: false },
      behaviours: { type: 'string' },
      'broken-quorum': { type: 'boolean', default: false },
      'disk-faults': { type: 'boolean', default: false },
      reconfiguration: { type: 'boolean', default: false },
      jobs: { type: 'string', default: String(availableParallelism()) },
      trace: { type: 'boolean', default: false },
    },
  });
  const mode = values.mode as FaultMode;
  if (mode !== 'bft' && mode !== 'crash') throw new Error('--mode is bft or crash');
  const replicaCounts = values.replicas.split(',').map(Number);
  const behaviours = values.behaviours?.split(',') as BehaviourName[] | undefined;
  for (const b of behaviours ?? []) if (!behaviourNames.includes(b)) throw new Error(`unknown behaviour ${b}; known: ${behaviourNames.join(', ')}`);
  const byzantine = mode === 'bft' && !values['no-byzantine'];
  const seeds = values.seed !== undefined ? [Number(values.seed)] : range(Number(values.first), Number(values.seeds));
  const runs: SeedOptions[] = [];
  for (const seed of seeds) {
    for (const replicas of replicaCounts) {
      runs.push({
        seed,
        replicas,
        mode,
        byzantine,
        ...(behaviours ? { behaviours } : {}),
        ...(values['broken-quorum'] ? { brokenQuorum: true } : {}),
        ...(values['disk-faults'] ? { diskFaults: true } : {}),
        ...(values.reconfiguration ? { reconfiguration: true } : {}),
      });
    }
  }
  const traceLines = values.trace || values.seed !== undefined ? 4000 : 80;
  const jobs = Math.max(1, Math.min(Number(values.jobs), runs.length));
  const started = performance.now();
  const failures: RunReport[] = [];
  let done = 0;
  let instances = 0;
  let leaderChanges = 0;
  let forgedRequests = 0;
  const disk: Record<string, number> = {};
  const reconfigurations = { accepted: 0, refused: 0, views: 0 };
  let slowest = null as RunReport | null;
  const onReport = (r: RunReport): void => {
    done++;
    instances += r.decidedInstances;
    leaderChanges += r.leaderChanges;
    forgedRequests += r.forgedRequests;
    for (const [key, value] of Object.entries(r.disk)) disk[key] = (disk[key] ?? 0) + value;
    reconfigurations.accepted += r.reconfigurations.accepted;
    reconfigurations.refused += r.reconfigurations.refused;
    reconfigurations.views += r.reconfigurations.views;
    if (slowest === null || r.wallMs > slowest.wallMs) slowest = r;
    if (r.violations.length > 0) {
      failures.push(r);
      process.stderr.write(`\nFAIL seed ${r.options.seed} n=${r.options.replicas}: reproduce with\n  ${reproduceCommand(r.options)}\n`);
      process.stderr.write(`${r.trace.join('\n')}\n`);
      for (const v of r.violations) process.stderr.write(`  ${v.kind} at ${v.atMs} ms: ${v.detail}\n`);
    }
    if (done % 500 === 0) process.stderr.write(`${done}/${runs.length} runs, ${failures.length} failing\n`);
  };
  if (jobs === 1) {
    runJob({ runs, traceLines }, onReport);
  } else {
    await Promise.all(
      Array.from({ length: jobs }, (_, j) => {
        const share = runs.filter((_, i) => i % jobs === j);
        return new Promise<void>((resolve, reject) => {
          const worker = new Worker(new URL(import.meta.url), { workerData: { runs: share, traceLines } satisfies Job });
          worker.on('message', onReport);
          worker.on('error', reject);
          worker.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`worker exited with ${code}`))));
        });
      }),
    );
  }
  const summary = {
    runs: runs.length,
    seeds: seeds.length,
    replicas: replicaCounts,
    mode,
    byzantine,
    diskFaults: values['disk-faults'],
    failingRuns: failures.length,
    violations: failures.reduce((sum, r) => sum + r.violations.length, 0),
    failing: failures.slice(0, 20).map((r) => ({ command: reproduceCommand(r.options), first: r.violations[0] })),
    decidedInstances: instances,
    leaderChanges,
    // Requests with bad signatures sent straight to the replicas by a forging client (signed runs, half of them).
    forgedRequests,
    ...(values['disk-faults'] ? { disk } : {}),
    ...(values.reconfiguration ? { reconfiguration: true, reconfigurations } : {}),
    elapsedSeconds: Math.round((performance.now() - started) / 100) / 10,
    slowestRun: slowest === null ? null : { command: reproduceCommand(slowest.options), wallMs: Math.round(slowest.wallMs) },
    jobs,
  };
  process.stdout.write(`${JSON.stringify(summary, null, 2)}\n`);
  process.exitCode = failures.length > 0 ? 1 : 0;
}

function range(first: number, count: number): number[] {
  return Array.from({ length: count }, (_, i) => first + i);
}
