// Starting and stopping the control plane's processes. Every process runs in its own process group
// and is recorded by pid in processes.json, so `cluster:down` stops exactly what `cluster:up` started.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, openSync, closeSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export interface StartedProcess {
  name: string;
  pid: number;
  /** The executable, checked against /proc before signalling so a reused pid is never hit. */
  executable: string;
}

export const stopGraceMs = 10_000;
const stopPollMs = 100;

export function readProcesses(file: string): StartedProcess[] {
  if (!existsSync(file)) return [];
  return JSON.parse(readFileSync(file, 'utf8')) as StartedProcess[];
}

export function writeProcesses(file: string, processes: StartedProcess[]): void {
  writeFileSync(file, JSON.stringify(processes, null, 2) + '\n');
}

export interface StartOptions {
  name: string;
  executable: string;
  args: string[];
  logDir: string;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

export function startProcess(options: StartOptions): StartedProcess {
  mkdirSync(options.logDir, { recursive: true });
  const logFd = openSync(join(options.logDir, `${options.name}.log`), 'a');
  try {
    const child = spawn(options.executable, options.args, {
      detached: true,
      stdio: ['ignore', logFd, logFd],
      env: options.env ?? process.env,
      cwd: options.cwd,
    });
    if (child.pid === undefined) throw new Error(`BFT_ERR_PROCESS_START: ${options.name} did not start`);
    child.unref();
    return { name: options.name, pid: child.pid, executable: options.executable };
  } finally {
    closeSync(logFd);
  }
}

/** True while the pid is alive and still runs the executable we started (not a recycled pid). */
export function isOurs(started: StartedProcess): boolean {
  try {
    const commandLine = readFileSync(`/proc/${started.pid}/cmdline`, 'utf8');
    const stat = readFileSync(`/proc/${started.pid}/stat`, 'utf8');
    // A zombie has exited; only its parent's wait is missing.
    if (/^\d+ \(.*\) Z /.test(stat)) return false;
    return commandLine.split('\0').some((part) => part === started.executable || part.endsWith(started.executable));
  } catch {
    return false;
  }
}

function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    try { process.kill(pid, signal); } catch { /* already gone */ }
  }
}

/** SIGTERM, up to graceMs for the process to leave, then SIGKILL to its whole group. */
export async function stopProcess(started: StartedProcess, graceMs = stopGraceMs): Promise<void> {
  if (!isOurs(started)) return;
  signalGroup(started.pid, 'SIGTERM');
  const deadline = Date.now() + graceMs;
  while (Date.now() < deadline) {
    if (!isOurs(started)) break;
    await sleep(stopPollMs);
  }
  // The group may hold children that outlived the leader.
  signalGroup(started.pid, 'SIGKILL');
}

export interface WaitOptions {
  what: string;
  timeoutMs: number;
  intervalMs?: number;
  /** Give up early when the process we wait on has died. */
  process?: StartedProcess;
  logFile?: string;
}

export async function waitFor(options: WaitOptions, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + options.timeoutMs;
  let lastError: unknown;
  while (Date.now() < deadline) {
    try {
      if (await check()) return;
    } catch (error) {
      lastError = error;
    }
    if (options.process && !isOurs(options.process)) {
      throw new Error(`BFT_ERR_PROCESS_EXITED: ${options.what}: ${options.process.name} exited${logTail(options.logFile)}`, { cause: lastError });
    }
    await sleep(options.intervalMs ?? 250);
  }
  throw new Error(`BFT_ERR_WAIT_TIMEOUT: ${options.what} not reached in ${options.timeoutMs} ms${logTail(options.logFile)}`, { cause: lastError });
}

const logTailLines = 30;

function logTail(file: string | undefined): string {
  if (!file || !existsSync(file)) return '';
  const lines = readFileSync(file, 'utf8').trimEnd().split('\n');
  return `; last lines of ${file}:\n${lines.slice(-logTailLines).join('\n')}`;
}
