// Crash injection for the operator's own tests: "kill the operator between any two steps". With
// BFTKUBE_OPERATOR_FAULT_KILL_AFTER_WRITES=N the process SIGKILLs itself right after its N-th successful
// write made by reconciliation: to the apiserver (lease renewals and events do not count) or to the
// cluster (a submitted reconfiguration), so a test can stop it after every single step of creating or
// scaling a cluster in turn. Unset, nothing is wrapped.

import type { KubeRest } from './rest.ts';

export const killAfterWritesVariable = 'BFTKUBE_OPERATOR_FAULT_KILL_AFTER_WRITES';

type Writes = Pick<KubeRest, 'get' | 'post' | 'put' | 'delete' | 'apply' | 'mergePatch'>;

/** The number of writes after which to die, from the environment; null when unset. */
export function killAfterWritesFrom(env: NodeJS.ProcessEnv): number | null {
  const raw = env[killAfterWritesVariable];
  if (raw === undefined || raw === '') return null;
  const count = Number(raw);
  if (!Number.isInteger(count) || count < 1) throw new Error(`BFT_ERR_CONFIG_INVALID: ${killAfterWritesVariable} must be a positive integer, not "${raw}"`);
  return count;
}

/** Counts writes across wrapped functions and kills the process after the N-th. */
export class WriteKiller {
  private writes = 0;
  private readonly writesMax: number;
  private readonly kill: () => void;

  constructor(writesMax: number, kill: () => void = () => process.kill(process.pid, 'SIGKILL')) {
    this.writesMax = writesMax;
    this.kill = kill;
  }

  /** `write`, with each successful call counted: the kill comes once it returned, before its caller goes on. */
  counted<A extends unknown[], R>(write: (...args: A) => Promise<R>): (...args: A) => Promise<R> {
    return async (...args: A) => {
      const result = await write(...args);
      this.writes += 1;
      if (this.writes >= this.writesMax) this.kill();
      return result;
    };
  }
}

export function killingAfterWrites<T extends Writes>(rest: T, writesMax: number | WriteKiller, kill?: () => void): T {
  const killer = writesMax instanceof WriteKiller ? writesMax : new WriteKiller(writesMax, kill);
  const counted = <A extends unknown[], R>(write: (...args: A) => Promise<R>) => killer.counted(write);
  return {
    ...rest,
    get: rest.get.bind(rest),
    post: counted(rest.post.bind(rest)),
    put: counted(rest.put.bind(rest)),
    delete: counted(rest.delete.bind(rest)),
    apply: counted(rest.apply.bind(rest)),
    mergePatch: counted(rest.mergePatch.bind(rest)),
  } as T;
}
