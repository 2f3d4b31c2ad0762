// The operator as its own OS process on the host, for cluster tests: like a Deployment's pod, but one a
// test can kill -9, restart with the same identity, and start with a crash injected.

import { type ChildProcess, spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { inject } from 'vitest';
import { killAfterWritesVariable } from '../kube/fault-injection.ts';

const operatorMain = fileURLToPath(new URL('../main.ts', import.meta.url));

export interface OperatorProcessOptions {
  readonly namespace: string;
  /** The leader identity: the same one across restarts retakes its own lease at once. */
  readonly identity: string;
  /** The log file's name in the test cluster's state folder. */
  readonly logName: string;
  /** SIGKILL itself after this many reconciliation writes. */
  readonly killAfterWrites?: number;
}

export class OperatorProcess {
  readonly child: ChildProcess;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  constructor(options: OperatorProcessOptions) {
    const log = createWriteStream(join(inject('clusterStateDir'), options.logName), { flags: 'a' });
    this.child = spawn(process.execPath, [operatorMain], {
      env: {
        ...process.env,
        KUBECONFIG: inject('clusterKubeconfig'),
        POD_NAMESPACE: options.namespace,
        WATCH_NAMESPACE: options.namespace,
        ADMIN_HOST: '127.0.0.1',
        ADMIN_PORT: '0',
        POD_NAME: options.identity,
        LOG_LEVEL: 'debug',
        ...(options.killAfterWrites === undefined ? {} : { [killAfterWritesVariable]: String(options.killAfterWrites) }),
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child.stdout?.pipe(log, { end: false });
    this.child.stderr?.pipe(log, { end: false });
    this.exited = new Promise((resolve) => this.child.once('exit', (code, signal) => resolve({ code, signal })));
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    if (!this.running) return;
    this.child.kill(signal);
    await this.exited;
  }
}
