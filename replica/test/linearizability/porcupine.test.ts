import { spawn, spawnSync } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Rng } from '../sim/prng.ts';
import {
  checkHistory,
  checkerSource,
  ensureChecker,
  HistoryRecorder,
  LincheckError,
  serializeHistory,
  type CheckOptions,
  type CheckResult,
  type HistoryEvent,
} from './porcupine.ts';

// The first run on a machine builds lincheck (downloading Porcupine from the Go module proxy).
const coldBuildMs = 300_000;

// Histories written by hand: times are small integers, intervals closed; `null` = never returned.
function at(callNs: number, returnNs: number | null) {
  return { callNs: BigInt(callNs), returnNs: returnNs === null ? null : BigInt(returnNs) };
}
function put(clientId: string, key: string, value: string, callNs: number, returnNs: number | null): HistoryEvent {
  return { clientId, kind: 'put', key, value, ...at(callNs, returnNs) };
}
function del(clientId: string, key: string, callNs: number, returnNs: number | null): HistoryEvent {
  return { clientId, kind: 'delete', key, ...at(callNs, returnNs) };
}
function get(clientId: string, key: string, output: string | null, callNs: number, returnNs: number): HistoryEvent {
  return { clientId, kind: 'get', key, output, ...at(callNs, returnNs) };
}
function cas(
  clientId: string,
  key: string,
  expected: string | null,
  value: string,
  output: boolean | null,
  callNs: number,
  returnNs: number | null,
): HistoryEvent {
  const base = { clientId, kind: 'cas' as const, key, expected, value, ...at(callNs, returnNs) };
  return output === null ? base : { ...base, output };
}

const producedFiles: string[] = [];
async function check(history: readonly HistoryEvent[], options?: CheckOptions): Promise<CheckResult> {
  const result = await checkHistory(history, options);
  if (result.visualization !== undefined) producedFiles.push(result.visualization);
  if (result.historyFile !== undefined) producedFiles.push(result.historyFile);
  return result;
}

let checker: string;
beforeAll(async () => {
  const started = performance.now();
  checker = await ensureChecker();
  console.log(`lincheck ready in ${(performance.now() - started).toFixed(0)} ms: ${checker}`);
}, coldBuildMs);

afterAll(async () => {
  await Promise.all(producedFiles.map((file) => rm(file, { force: true })));
});

describe('ensureChecker', () => {
  it('keeps the binary in the cache under the Porcupine version and a hash of the Go sources', async () => {
    const { porcupineVersion, sourceHash } = await checkerSource();
    expect(porcupineVersion).toMatch(/^v\d+\.\d+\.\d+$/);
    expect(sourceHash).toMatch(/^[0-9a-f]{16}$/);
    expect(checker).toMatch(new RegExp(`/bin/lincheck-${porcupineVersion}-${sourceHash}/lincheck$`));
    expect(checker.startsWith(fileURLToPath(new URL('../../..', import.meta.url)))).toBe(false);
    expect(await ensureChecker()).toBe(checker);
  });

  it(
    'lets concurrent processes build into an empty cache, each getting a whole binary, no partial file left',
    async () => {
      const cacheDir = await mkdtemp(join(tmpdir(), 'lincheck-cache-'));
      try {
        const moduleUrl = new URL('./porcupine.ts', import.meta.url).href;
        const script = `const { ensureChecker } = await import(${JSON.stringify(moduleUrl)});
          const { spawnSync } = await import('node:child_process');
          const path = await ensureChecker();
          const run = spawnSync(path, ['-'], { input: '[]', encoding: 'utf8' });
          process.stdout.write(JSON.stringify({ path, status: run.status, stdout: run.stdout }));`;
        const builder = () =>
          new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
            const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
              env: { ...process.env, BFTKUBE_CACHE_DIR: cacheDir },
            });
            let stdout = '';
            let stderr = '';
            child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
            child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
            child.on('close', (code) => resolve({ code, stdout, stderr }));
          });
        const results = await Promise.all([builder(), builder(), builder()]);
        const reports = results.map((result) => {
          expect(result.code, result.stderr).toBe(0);
          return JSON.parse(result.stdout) as { path: string; status: number; stdout: string };
        });
        for (const report of reports) {
          expect(report.path).toBe(reports[0]!.path);
          expect(report.path.startsWith(cacheDir)).toBe(true);
          expect(report.status).toBe(0);
          expect(JSON.parse(report.stdout)).toMatchObject({ result: 'ok', operations: 0 });
        }
        const binDirs = await readdir(join(cacheDir, 'bin'));
        expect(binDirs).toHaveLength(1);
        expect(await readdir(join(cacheDir, 'bin', binDirs[0]!))).toEqual(['lincheck']);
      } finally {
        await rm(cacheDir, { recursive: true, force: true });
      }
    },
    coldBuildMs,
  );
});

describe('checkHistory', () => {
  it('accepts a linearizable history of concurrent operations on several keys', async () => {
    const history = [
      put('c0', 'x', '1', 0, 10),
      get('c1', 'x', null, 1, 3), // overlaps the put: may precede it
      get('c2', 'x', '1', 2, 5), // overlaps the put: may follow it
      get('c1', 'x', '1', 6, 8),
      put('c0', 'y', 'a', 11, 20),
      get('c1', 'y', 'a', 12, 13),
      del('c2', 'y', 14, 16),
      get('c1', 'y', null, 17, 18),
      put('c2', 'y', 'b', 19, 30),
      get('c1', 'y', 'b', 19, 21), // overlaps the put of b: may follow it
    ];
    const result = await check(history);
    expect(result).toMatchObject({ result: 'ok', operations: 10, partitions: 2, neverReturned: 0 });
    expect(result.visualization).toBeUndefined();
  });

  it('finds a stale read after an acknowledged write illegal and draws the violation', async () => {
    const history = [put('c0', 'x', '1', 0, 10), get('c1', 'x', null, 11, 12), put('c2', 'y', 'other', 0, 12)];
    const result = await check(history);
    expect(result).toMatchObject({ result: 'illegal', operations: 3, partitions: 2 });
    const page = await readFile(result.visualization!, 'utf8');
    const data = /const data = (\{.*\})\s*$/m.exec(page)?.[1];
    expect(data).toBeDefined();
    const drawn = JSON.parse(data!) as { Partitions: { History: { Description: string; Metadata: string }[] }[] };
    expect(drawn.Partitions[0]!.History).toContainEqual(
      expect.objectContaining({ Description: 'get("x") -> absent', Metadata: 'c1' }),
    );
    const rerun = JSON.parse(await readFile(result.historyFile!, 'utf8')) as unknown[];
    expect(rerun).toHaveLength(3);
  });

  it('finds a read of an older value after another client read the newer one illegal', async () => {
    // The put is still open, but once c1 has seen 1, c2 starting later must not see the past.
    const history = [put('c0', 'x', '1', 0, 100), get('c1', 'x', '1', 2, 5), get('c2', 'x', null, 6, 7)];
    expect((await check(history)).result).toBe('illegal');
  });

  it('finds a lost acknowledged write illegal', async () => {
    const overwritten = [
      put('c0', 'x', '1', 0, 10),
      put('c1', 'x', '2', 11, 20),
      get('c2', 'x', '1', 21, 22), // 2 was acknowledged and then lost
    ];
    expect((await check(overwritten)).result).toBe('illegal');
    const vanished = [put('c0', 'x', '1', 0, 10), get('c1', 'x', '1', 11, 12), get('c1', 'x', null, 13, 14)];
    expect((await check(vanished)).result).toBe('illegal');
  });

  it('accepts never-returned puts whichever way later reads saw them', async () => {
    const prefix = [put('c0', 'x', '1', 0, 5), put('c1', 'x', '2', 6, null)];
    const neverSeen = [...prefix, get('c2', 'x', '1', 10, 11), get('c2', 'x', '1', 12, 13)];
    const seen = [...prefix, get('c2', 'x', '2', 10, 11), get('c2', 'x', '2', 12, 13)];
    const seenLate = [...prefix, get('c2', 'x', '1', 10, 11), get('c2', 'x', '2', 1_000, 1_001)];
    for (const history of [neverSeen, seen, seenLate]) {
      expect(await check(history)).toMatchObject({ result: 'ok', operations: 4, neverReturned: 1 });
    }
  });

  it('finds a never-returned put that was seen and then unseen illegal', async () => {
    // Unknown means "took effect at most once, at one point", not "anything goes".
    const history = [
      put('c0', 'x', '1', 0, 5),
      put('c1', 'x', '2', 6, null),
      get('c2', 'x', '2', 10, 11),
      get('c2', 'x', '1', 12, 13),
    ];
    expect((await check(history)).result).toBe('illegal');
  });

  it('lets never-returned deletes and compare-and-sets take effect or not', async () => {
    const prefix = [put('c0', 'x', 'a', 0, 5), del('c1', 'x', 6, null), cas('c2', 'x', 'a', 'b', null, 7, null)];
    for (const outcome of [null, 'a', 'b']) {
      expect((await check([...prefix, get('c3', 'x', outcome, 20, 21)])).result).toBe('ok');
    }
    // The cas needs a before it: it cannot have swapped after the delete took effect.
    const impossible = [...prefix, get('c3', 'x', null, 20, 21), get('c3', 'x', 'b', 22, 23)];
    expect((await check(impossible)).result).toBe('illegal');
  });

  it('drops gets that never returned: they change nothing and constrain nothing', async () => {
    const openGet: HistoryEvent = { clientId: 'c1', kind: 'get', key: 'x', ...at(1, null) };
    const result = await check([put('c0', 'x', '1', 0, 5), openGet, get('c2', 'x', '1', 6, 7)]);
    expect(result).toMatchObject({ result: 'ok', operations: 2, neverReturned: 1 });
  });

  const casCases: [string, CheckResult['result'], HistoryEvent[]][] = [
    [
      'a sequence of swaps, failed swaps, delete and swap-from-absent',
      'ok',
      [
        cas('c0', 'x', null, 'a', true, 0, 1),
        cas('c0', 'x', 'a', 'b', true, 2, 3),
        cas('c1', 'x', 'a', 'c', false, 4, 5),
        get('c1', 'x', 'b', 6, 7),
        cas('c1', 'x', null, 'c', false, 8, 9),
        del('c0', 'x', 10, 11),
        cas('c1', 'x', null, 'd', true, 12, 13),
        get('c0', 'x', 'd', 14, 15),
      ],
    ],
    ['a failed swap-from-absent on an absent key', 'illegal', [cas('c0', 'x', null, 'a', false, 0, 1)]],
    [
      'a successful swap whose expected value was not there',
      'illegal',
      [put('c0', 'x', 'a', 0, 1), cas('c1', 'x', 'z', 'b', true, 2, 3)],
    ],
    [
      'a failed swap whose expected value was there',
      'illegal',
      [put('c0', 'x', 'a', 0, 1), cas('c1', 'x', 'a', 'b', false, 2, 3)],
    ],
    [
      'a swap that did not happen though reported done',
      'illegal',
      [put('c0', 'x', 'a', 0, 1), cas('c1', 'x', 'a', 'b', true, 2, 3), get('c0', 'x', 'a', 4, 5)],
    ],
    [
      'two concurrent swaps from the same value, one winning',
      'ok',
      [put('c0', 'x', 'a', 0, 1), cas('c1', 'x', 'a', 'b', true, 2, 10), cas('c2', 'x', 'a', 'c', false, 3, 9)],
    ],
    [
      'two concurrent swaps from the same value, both winning',
      'illegal',
      [put('c0', 'x', 'a', 0, 1), cas('c1', 'x', 'a', 'b', true, 2, 10), cas('c2', 'x', 'a', 'c', true, 3, 9)],
    ],
  ];
  it.each(casCases)('compare-and-set: %s is %s', async (_name, expected, history) => {
    expect((await check(history)).result).toBe(expected);
  });

  it('rejects a malformed history with a coded error that says what is wrong', async () => {
    const missingOutput: HistoryEvent = { clientId: 'c0', kind: 'get', key: 'x', ...at(0, 1) };
    const failure = await checkHistory([missingOutput]).catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(LincheckError);
    expect((failure as LincheckError).code).toBe('BFT_ERR_LINCHECK_CHECK');
    expect((failure as LincheckError).message).toContain('event 0: output of a returned get is missing');
    const backwards = await checkHistory([put('c0', 'x', '1', 10, 5)]).catch((error: unknown) => error);
    expect((backwards as LincheckError).message).toContain('returnNs 5 is before callNs 10');
  });

  it('answers unknown when the search runs out of time', async () => {
    // 24 fully concurrent writes and a read of a value nobody wrote: proving it illegal means
    // trying every subset of the writes (2^24 states), far more than 100 ms allows.
    const history = Array.from({ length: 24 }, (_, i) => put(`c${i}`, 'x', `v${i}`, 0, 100));
    history.push(get('reader', 'x', 'never-written', 101, 102));
    expect(await check(history, { timeoutMs: 100 })).toMatchObject({ result: 'unknown', stoppedBy: 'timeout' });
  });

  it('answers unknown when the search outgrows its memory bound', async () => {
    const history = Array.from({ length: 24 }, (_, i) => put(`c${i}`, 'x', `v${i}`, 0, 100));
    history.push(get('reader', 'x', 'never-written', 101, 102));
    const result = await check(history, { timeoutMs: 600_000, memoryBytesMax: 32 * 1024 ** 2 });
    expect(result).toMatchObject({ result: 'unknown', stoppedBy: 'memory' });
  });
});

describe('lincheck binary', () => {
  it('reads a history file and exits 0 when ok, 1 when illegal, 2 on bad input', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'lincheck-cli-'));
    try {
      const run = async (name: string, content: string) => {
        const file = join(dir, name);
        await writeFile(file, content);
        const outcome = spawnSync(checker, ['-visualization', join(dir, `${name}.html`), file], {
          encoding: 'utf8',
          timeout: 60_000,
        });
        return { status: outcome.status, report: JSON.parse(outcome.stdout) as Record<string, unknown> };
      };
      const ok = await run('ok.json', serializeHistory([put('c0', 'x', '1', 0, 1), get('c1', 'x', '1', 2, 3)]));
      expect(ok).toMatchObject({ status: 0, report: { result: 'ok', operations: 2 } });
      const illegal = await run('illegal.json', serializeHistory([put('c0', 'x', '1', 0, 1), get('c1', 'x', '2', 2, 3)]));
      expect(illegal).toMatchObject({ status: 1, report: { result: 'illegal', visualization: join(dir, 'illegal.json.html') } });
      expect((await readdir(dir)).sort()).toEqual(['illegal.json', 'illegal.json.html', 'ok.json']);
      const garbage = await run('garbage.json', '{"not": "an array"}');
      expect(garbage).toMatchObject({ status: 2, report: { result: 'error' } });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

// A linearizable history by construction: every operation takes effect at a point inside its
// interval (or, when it never returned, at some point after its call or not at all), and outputs
// are what a sequential map gives at those points.
function generateHistory(seed: number, options: { operations: number; keys: number; clients: number }): HistoryEvent[] {
  const rng = new Rng(seed).fork('lincheck-workload');
  type Planned = { event: HistoryEvent; effectNs: number | null };
  const planned: Planned[] = [];
  const clientClock = Array.from({ length: options.clients }, () => 0);
  const lastWritten = new Map<string, string>();
  for (let index = 0; index < options.operations; index++) {
    const client = index % options.clients;
    const clientId = `c${client}`;
    const key = `k${rng.int(0, options.keys - 1)}`;
    const callNs = clientClock[client]! + rng.int(1, 2_000);
    const returnNs = callNs + rng.int(100, 50_000);
    const neverReturned = rng.chance(0.01);
    // A client that timed out moves on at once; the lost request may still take effect much later.
    clientClock[client] = returnNs;
    const effectNs = neverReturned ? (rng.chance(0.5) ? callNs + rng.int(0, 200_000) : null) : rng.int(callNs, returnNs);
    const timing = { clientId, callNs: BigInt(callNs), returnNs: neverReturned ? null : BigInt(returnNs) };
    const draw = rng.int(0, 99);
    let event: HistoryEvent;
    if (draw < 40) {
      event = { ...timing, kind: 'get', key };
    } else if (draw < 70) {
      const value = `${key}:${index}`;
      lastWritten.set(key, value);
      event = { ...timing, kind: 'put', key, value };
    } else if (draw < 80) {
      event = { ...timing, kind: 'delete', key };
    } else {
      const expected = rng.chance(0.2) ? null : (lastWritten.get(key) ?? null);
      const value = `${key}:${index}`;
      lastWritten.set(key, value);
      event = { ...timing, kind: 'cas', key, expected, value };
    }
    planned.push({ event, effectNs });
  }
  const store = new Map<string, string>();
  const byEffect = planned.filter((p) => p.effectNs !== null).sort((a, b) => a.effectNs! - b.effectNs!);
  const outputs = new Map<HistoryEvent, string | null | boolean>();
  for (const { event } of byEffect) {
    switch (event.kind) {
      case 'get':
        outputs.set(event, store.get(event.key) ?? null);
        break;
      case 'put':
        store.set(event.key, event.value);
        break;
      case 'delete':
        store.delete(event.key);
        break;
      case 'cas': {
        const swapped = (store.get(event.key) ?? null) === event.expected;
        if (swapped) store.set(event.key, event.value);
        outputs.set(event, swapped);
        break;
      }
    }
  }
  return planned.map(({ event }) =>
    event.returnNs !== null && outputs.has(event) ? ({ ...event, output: outputs.get(event) } as HistoryEvent) : event,
  );
}

describe('checking at scale', () => {
  it('checks 10,000 operations over 50 keys from 20 clients, and finds one corrupted read in them', async () => {
    const history = generateHistory(20261125, { operations: 10_000, keys: 50, clients: 20 });
    const started = performance.now();
    const result = await check(history, { timeoutMs: 120_000 });
    const wallMs = performance.now() - started;
    console.log(
      `lincheck 10k ops: ${result.result}, ${result.operations} operations, ${result.partitions} partitions, ` +
        `${result.neverReturned} never returned, Porcupine ${result.elapsedMs} ms, checkHistory ${wallMs.toFixed(0)} ms`,
    );
    expect(result).toMatchObject({ result: 'ok', partitions: 50 });
    expect(result.neverReturned).toBeGreaterThan(0);

    const readIndex = history.findIndex((event, index) => index > 5_000 && event.kind === 'get' && event.returnNs !== null);
    const corrupted = history.with(readIndex, { ...history[readIndex]!, output: 'never-written' } as HistoryEvent);
    const startedIllegal = performance.now();
    const illegal = await check(corrupted, { timeoutMs: 120_000 });
    console.log(
      `lincheck 10k ops, one corrupted read: ${illegal.result}, Porcupine ${illegal.elapsedMs} ms, ` +
        `checkHistory ${(performance.now() - startedIllegal).toFixed(0)} ms`,
    );
    expect(illegal.result).toBe('illegal');
  });

  it('accepts a history recorded from concurrent clients of a linearizable in-memory store', async () => {
    // The store acts at one instant between request and answer, each hop a random delay: the
    // recorder's intervals must contain that instant for the checker to agree.
    const rng = new Rng(7).fork('recorded-store');
    const store = new Map<string, string>();
    const hop = () => new Promise<void>((resolve) => setTimeout(resolve, rng.int(0, 3)));
    const recorder = new HistoryRecorder();
    const client = async (clientId: string) => {
      for (let i = 0; i < 40; i++) {
        const key = `k${rng.int(0, 2)}`;
        if (rng.chance(0.5)) {
          const done = recorder.call(clientId, { kind: 'get', key });
          await hop();
          const value = store.get(key) ?? null;
          await hop();
          done(value);
        } else if (rng.chance(0.7)) {
          const done = recorder.call(clientId, { kind: 'put', key, value: `${clientId}-${i}` });
          await hop();
          store.set(key, `${clientId}-${i}`);
          await hop();
          done();
        } else {
          const expected = store.get(key) ?? null;
          const done = recorder.call(clientId, { kind: 'cas', key, expected, value: `${clientId}-cas-${i}` });
          await hop();
          const swapped = (store.get(key) ?? null) === expected;
          if (swapped) store.set(key, `${clientId}-cas-${i}`);
          await hop();
          if (rng.chance(0.1)) {
            done.unknown(); // the answer was lost on the way back
          } else {
            done(swapped);
          }
        }
      }
    };
    await Promise.all(['a', 'b', 'c', 'd', 'e'].map(client));
    const result = await check(recorder.history());
    expect(result).toMatchObject({ result: 'ok', operations: 200, partitions: 3 });
  });
});
