// Crash injection for the operator's own tests: "kill the operator between any two steps". With
// BFTKUBE_OPERATOR_FAULT_KILL_AFTER_WRITES=N the process SIGKILLs itself right after its N-th successful
// write to the apiserver made by reconciliation (lease renewals and events do not count), so a test can
// stop it after every single step of creating a cluster in turn. Unset, nothing is wrapped.

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

export function killingAfterWrites<T extends Writes>(rest: T, writesMax: number, kill: () => void = () => process.kill(process.pid, 'SIGKILL')): T {
  let writes = 0;
  const counted =
    <A extends unknown[]>(write: (...args: A) => Promise<unknown>) =>
    async (...args: A) => {
      const result = await write(...args);
      writes += 1;
      if (writes >= writesMax) kill();
      return result;
    };
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
