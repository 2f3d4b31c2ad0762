// Runs lincheck (./lincheck, Go, on Porcupine) over recorded histories. The binary is built once
// per Porcupine version and source hash into the bftkube cache, outside the repository.

import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { access, constants, mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { homedir, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { serializeHistory, type HistoryEvent } from './history.ts';

export {
  HistoryRecorder,
  historyLimits,
  serializeHistory,
  type Completion,
  type HistoryEvent,
  type KvOperation,
  type KvOperationKind,
  type KvOutputOf,
} from './history.ts';

export const lincheckLimits = {
  /** Default bound on one check; Porcupine answers "unknown" when it runs out. */
  checkTimeoutMsDefault: 60_000,
  /** Default bound on the heap of Porcupine's search (its memo of visited states is unbounded). */
  checkerMemoryBytesMaxDefault: 2 * 1024 ** 3,
  /** Beyond the check's own passes, for reading and parsing the history and writing the visualization. */
  checkGraceMs: 60_000,
  /** A cold build downloads Porcupine and compiles it; a warm one takes about a second. */
  buildTimeoutMs: 600_000,
  /** lincheck prints one small JSON object; anything bigger is a bug. */
  checkerStdoutBytesMax: 64 * 1024,
  /** Kept for error messages (go build or lincheck diagnostics). */
  diagnosticsBytesMax: 64 * 1024,
} as const;

const lincheckErrorCodes = {
  BFT_ERR_GO_MISSING: 'the Go toolchain is not installed',
  BFT_ERR_LINCHECK_BUILD: 'building the linearizability checker failed',
  BFT_ERR_LINCHECK_CHECK: 'the linearizability checker could not check the history',
} as const;

export type LincheckErrorCode = keyof typeof lincheckErrorCodes;

/** Failures of the checker itself (never a verdict on the history: that is CheckResult). */
export class LincheckError extends Error {
  readonly code: LincheckErrorCode;
  constructor(code: LincheckErrorCode, message: string, options?: { cause?: unknown }) {
    super(`${code}: ${message}`, options);
    this.name = 'LincheckError';
    this.code = code;
  }
}

export interface CheckResult {
  /** "unknown": Porcupine ran out of time without finding a violation. */
  readonly result: 'ok' | 'illegal' | 'unknown';
  /** Operations checked (never-returned gets are left out: they constrain nothing). */
  readonly operations: number;
  /** Keys: the model is partitioned by key. */
  readonly partitions: number;
  readonly neverReturned: number;
  /** Time Porcupine spent checking, without parsing (and without drawing an illegal history). */
  readonly elapsedMs: number;
  /** When unknown: what ran out. */
  readonly stoppedBy?: 'timeout' | 'memory';
  /** When illegal: an HTML page showing the longest linearizations and where they fail. */
  readonly visualization?: string;
  /** When illegal: the history as lincheck read it, to rerun `lincheck <file>`. */
  readonly historyFile?: string;
}

export interface CheckOptions {
  /**
   * Bound on Porcupine's search (default lincheckLimits.checkTimeoutMsDefault). An illegal history
   * is searched a second time to draw it, with the same bound.
   */
  readonly timeoutMs?: number;
  /** Bound on the search's heap (default lincheckLimits.checkerMemoryBytesMaxDefault). */
  readonly memoryBytesMax?: number;
  /** Where to write the visualization of an illegal history (default: a new file in the temp dir). */
  readonly visualizationPath?: string;
}

const checkerSourceDir = fileURLToPath(new URL('./lincheck/', import.meta.url));
const porcupineModule = 'github.com/anishathalye/porcupine';

export interface CheckerSource {
  readonly porcupineVersion: string;
  /** First 16 hex digits of SHA-256 over go.mod, go.sum and every .go file. */
  readonly sourceHash: string;
}

export async function checkerSource(): Promise<CheckerSource> {
  const goMod = await readFile(join(checkerSourceDir, 'go.mod'), 'utf8');
  const version = new RegExp(`^\\s*(?:require\\s+)?${porcupineModule.replaceAll('.', '\\.')}\\s+(v\\S+)`, 'm').exec(goMod)?.[1];
  if (version === undefined) {
    throw new LincheckError('BFT_ERR_LINCHECK_BUILD', `${checkerSourceDir}go.mod does not require ${porcupineModule}`);
  }
  const names = (await readdir(checkerSourceDir))
    .filter((name) => name === 'go.mod' || name === 'go.sum' || name.endsWith('.go'))
    .sort();
  const hash = createHash('sha256');
  for (const name of names) {
    hash.update(`${name}\0`);
    hash.update(await readFile(join(checkerSourceDir, name)));
    hash.update('\0');
  }
  return { porcupineVersion: version, sourceHash: hash.digest('hex').slice(0, 16) };
}

function cacheDir(): string {
  return process.env['BFTKUBE_CACHE_DIR'] || join(homedir(), '.cache', 'bftkube');
}

async function isExecutable(path: string): Promise<boolean> {
  try {
    await access(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

interface ProcessOutcome {
  readonly exitCode: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly timedOut: boolean;
}

/** Runs a program to completion with bounded output and time. Rejects only if it cannot start. */
function runProcess(
  command: string,
  args: readonly string[],
  options: { cwd?: string; env?: NodeJS.ProcessEnv; stdin?: string; timeoutMs: number; stdoutBytesMax: number },
): Promise<ProcessOutcome> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: options.cwd, env: options.env, stdio: ['pipe', 'pipe', 'pipe'] });
    const collect = (limit: number) => {
      const chunks: Buffer[] = [];
      let bytes = 0;
      return {
        push(chunk: Buffer): void {
          if (bytes >= limit) return;
          chunks.push(chunk.subarray(0, limit - bytes));
          bytes += Math.min(chunk.length, limit - bytes);
        },
        text: (): string => Buffer.concat(chunks).toString('utf8'),
      };
    };
    const stdout = collect(options.stdoutBytesMax);
    const stderr = collect(lincheckLimits.diagnosticsBytesMax);
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, options.timeoutMs);
    child.stdout.on('data', (chunk: Buffer) => stdout.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => stderr.push(chunk));
    // A child that exits before reading all of stdin closes the pipe: its exit status tells why.
    child.stdin.on('error', () => {});
    child.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.on('close', (exitCode, signal) => {
      clearTimeout(timer);
      resolve({ exitCode, signal, stdout: stdout.text(), stderr: stderr.text(), timedOut });
    });
    child.stdin.end(options.stdin ?? '');
  });
}

async function buildChecker(target: string): Promise<void> {
  await mkdir(dirname(target), { recursive: true });
  // Built beside the target and renamed into place: rename is atomic, so a concurrent test worker
  // sees either no binary or a whole one, and two workers building at once both succeed.
  const partial = `${target}.${process.pid}.${randomBytes(6).toString('hex')}.partial`;
  const env = {
    ...process.env,
    // A toolchain line in a dependency must never turn into a download.
    GOTOOLCHAIN: 'local',
    CGO_ENABLED: '0',
  };
  // -mod=readonly: go.mod and go.sum in the repository are complete and must never be rewritten
  // by a test run, whatever GOFLAGS says.
  const args = ['build', '-mod=readonly', '-trimpath', '-buildvcs=false', '-o', partial, '.'];
  let outcome: ProcessOutcome;
  try {
    outcome = await runProcess('go', args, {
      cwd: checkerSourceDir,
      env,
      timeoutMs: lincheckLimits.buildTimeoutMs,
      stdoutBytesMax: lincheckLimits.diagnosticsBytesMax,
    });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new LincheckError(
        'BFT_ERR_GO_MISSING',
        'the linearizability checker is built with Go: install Go >= 1.26 and put `go` on the PATH',
        { cause: error },
      );
    }
    throw new LincheckError('BFT_ERR_LINCHECK_BUILD', `could not start go build in ${checkerSourceDir}`, { cause: error });
  }
  if (outcome.exitCode !== 0) {
    await rm(partial, { force: true });
    const why = outcome.timedOut ? `timed out after ${lincheckLimits.buildTimeoutMs} ms` : `exited with ${outcome.exitCode ?? outcome.signal}`;
    throw new LincheckError(
      'BFT_ERR_LINCHECK_BUILD',
      `go ${args.join(' ')} in ${checkerSourceDir} ${why}; check that the Go module proxy is reachable (Porcupine is fetched from it on the first build):\n${outcome.stderr}${outcome.stdout}`,
    );
  }
  await rename(partial, target);
}

let checkerPath: Promise<string> | undefined;

/**
 * The path of the lincheck binary, building it on first use into
 * `${BFTKUBE_CACHE_DIR ?? ~/.cache/bftkube}/bin/lincheck-<porcupine version>-<source hash>/lincheck`.
 */
export function ensureChecker(): Promise<string> {
  checkerPath ??= (async () => {
    const { porcupineVersion, sourceHash } = await checkerSource();
    const target = join(cacheDir(), 'bin', `lincheck-${porcupineVersion}-${sourceHash}`, 'lincheck');
    if (!(await isExecutable(target))) await buildChecker(target);
    return target;
  })();
  // A failed build is not remembered: the next call tries again (say, once the proxy is back).
  checkerPath.catch(() => {
    checkerPath = undefined;
  });
  return checkerPath;
}

function parseReport(stdout: string): Record<string, unknown> | undefined {
  try {
    const parsed: unknown = JSON.parse(stdout);
    return typeof parsed === 'object' && parsed !== null ? (parsed as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

const verdictByExitCode = new Map<number, CheckResult['result']>([
  [0, 'ok'],
  [1, 'illegal'],
  [3, 'unknown'],
]);

/** Checks a history for linearizability against a key-value store partitioned by key. */
export async function checkHistory(history: readonly HistoryEvent[], options: CheckOptions = {}): Promise<CheckResult> {
  const timeoutMs = options.timeoutMs ?? lincheckLimits.checkTimeoutMsDefault;
  const memoryBytesMax = options.memoryBytesMax ?? lincheckLimits.checkerMemoryBytesMaxDefault;
  if (!Number.isInteger(timeoutMs) || timeoutMs <= 0) {
    throw new RangeError(`timeoutMs must be a positive integer, not ${timeoutMs}`);
  }
  if (!Number.isSafeInteger(memoryBytesMax) || memoryBytesMax <= 0) {
    throw new RangeError(`memoryBytesMax must be a positive integer, not ${memoryBytesMax}`);
  }
  const checker = await ensureChecker();
  const input = serializeHistory(history);
  const args = [`-timeout=${timeoutMs}ms`, `-memory-max=${memoryBytesMax}`];
  if (options.visualizationPath !== undefined) args.push(`-visualization=${options.visualizationPath}`);
  args.push('-');
  const processTimeoutMs = 2 * timeoutMs + lincheckLimits.checkGraceMs;
  let outcome: ProcessOutcome;
  try {
    outcome = await runProcess(checker, args, {
      stdin: input,
      timeoutMs: processTimeoutMs,
      stdoutBytesMax: lincheckLimits.checkerStdoutBytesMax,
    });
  } catch (error) {
    throw new LincheckError('BFT_ERR_LINCHECK_CHECK', `could not run ${checker}`, { cause: error });
  }
  const report = parseReport(outcome.stdout);
  const verdict = outcome.exitCode === null ? undefined : verdictByExitCode.get(outcome.exitCode);
  if (verdict === undefined || report === undefined || report['result'] !== verdict) {
    const reason =
      typeof report?.['error'] === 'string'
        ? report['error']
        : outcome.timedOut
          ? `it was still running ${processTimeoutMs} ms later`
          : `it exited with ${outcome.exitCode ?? outcome.signal}: ${outcome.stderr}${outcome.stdout}`;
    throw new LincheckError('BFT_ERR_LINCHECK_CHECK', `${checker} could not check the history: ${reason}`);
  }
  const number = (field: string): number => {
    const value = report[field];
    if (typeof value !== 'number') {
      throw new LincheckError('BFT_ERR_LINCHECK_CHECK', `${checker} reported no number for ${field}: ${outcome.stdout}`);
    }
    return value;
  };
  const result: CheckResult = {
    result: verdict,
    operations: number('operations'),
    partitions: number('partitions'),
    neverReturned: number('neverReturned'),
    elapsedMs: number('elapsedMs'),
  };
  if (verdict === 'unknown') {
    const stoppedBy = report['stoppedBy'];
    return stoppedBy === 'timeout' || stoppedBy === 'memory' ? { ...result, stoppedBy } : result;
  }
  if (verdict !== 'illegal') return result;
  const visualization = typeof report['visualization'] === 'string' ? report['visualization'] : undefined;
  const historyFile = `${visualization?.replace(/\.html$/, '') ?? join(tmpdir(), `lincheck-${randomBytes(6).toString('hex')}`)}.history.json`;
  await writeFile(historyFile, input);
  return visualization === undefined ? { ...result, historyFile } : { ...result, visualization, historyFile };
}
