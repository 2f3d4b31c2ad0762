import { describe, expect, it } from 'vitest';
import { HistoryRecorder, serializeHistory, type HistoryEvent } from './history.ts';

describe('HistoryRecorder', () => {
  it('stamps each call before its return on the monotonic clock and keeps outputs by kind', async () => {
    const recorder = new HistoryRecorder();
    const before = process.hrtime.bigint();
    const put = recorder.call('c0', { kind: 'put', key: 'x', value: '1' });
    const get = recorder.call('c1', { kind: 'get', key: 'x' });
    await new Promise((resolve) => setTimeout(resolve, 2));
    put();
    get('1');
    const cas = recorder.call('c0', { kind: 'cas', key: 'x', expected: null, value: '2' });
    cas(false);
    const absent = recorder.call('c1', { kind: 'get', key: 'y' });
    absent(null);
    const after = process.hrtime.bigint();

    const history = recorder.history();
    expect(history.map((event) => event.kind)).toEqual(['put', 'get', 'cas', 'get']);
    for (const event of history) {
      expect(event.callNs).toBeGreaterThanOrEqual(before);
      expect(event.returnNs).not.toBeNull();
      expect(event.returnNs!).toBeGreaterThanOrEqual(event.callNs);
      expect(event.returnNs!).toBeLessThanOrEqual(after);
    }
    // put and get overlapped; the cas started after both returned.
    expect(history[1]!.callNs).toBeLessThanOrEqual(history[0]!.returnNs!);
    expect(history[2]!.callNs).toBeGreaterThanOrEqual(history[1]!.returnNs!);
    expect(history[0]).not.toHaveProperty('output');
    expect(history[1]).toMatchObject({ clientId: 'c1', key: 'x', output: '1' });
    expect(history[2]).toMatchObject({ expected: null, value: '2', output: false });
    expect(history[3]).toMatchObject({ key: 'y', output: null });
  });

  it('records operations that never returned, or are still open, with no return time and no output', () => {
    const recorder = new HistoryRecorder();
    recorder.call('c0', { kind: 'put', key: 'x', value: '1' }).unknown();
    recorder.call('c1', { kind: 'cas', key: 'x', expected: '1', value: '2' }); // its client was killed
    const history = recorder.history();
    expect(history).toHaveLength(2);
    for (const event of history) {
      expect(event.returnNs).toBeNull();
      expect(event).not.toHaveProperty('output');
    }
  });

  it('refuses to complete an operation twice, in either order', () => {
    const recorder = new HistoryRecorder();
    const done = recorder.call('c0', { kind: 'get', key: 'x' });
    done('1');
    expect(() => done('2')).toThrow(/completed twice/);
    const lost = recorder.call('c0', { kind: 'delete', key: 'x' });
    lost.unknown();
    expect(() => lost()).toThrow(/completed twice/);
    expect(recorder.history()[0]).toMatchObject({ output: '1' });
    expect(recorder.history()[1]!.returnNs).toBeNull();
  });

  it('hands out copies, so a test cannot rewrite what was recorded', () => {
    const recorder = new HistoryRecorder();
    recorder.call('c0', { kind: 'get', key: 'x' })('a');
    const first = recorder.history();
    (first[0] as { output?: string }).output = 'tampered';
    expect(recorder.history()[0]).toMatchObject({ output: 'a' });
  });

  it('stops at its bound instead of growing without end', () => {
    const recorder = new HistoryRecorder({ eventsMax: 2 });
    recorder.call('c0', { kind: 'get', key: 'x' });
    recorder.call('c0', { kind: 'get', key: 'x' });
    expect(() => recorder.call('c0', { kind: 'get', key: 'x' })).toThrow(RangeError);
    expect(recorder.size).toBe(2);
  });
});

describe('serializeHistory', () => {
  it('writes timestamps as decimal strings so that they survive beyond 2^53 ns', () => {
    const beyondDoubles = 2n ** 62n + 1n;
    const history: HistoryEvent[] = [
      { clientId: 'c0', kind: 'get', key: 'x', output: null, callNs: beyondDoubles, returnNs: beyondDoubles + 1n },
      { clientId: 'c1', kind: 'put', key: 'x', value: 'v', callNs: 5n, returnNs: null },
    ];
    const parsed = JSON.parse(serializeHistory(history)) as Record<string, unknown>[];
    expect(parsed[0]).toEqual({
      clientId: 'c0',
      kind: 'get',
      key: 'x',
      output: null,
      callNs: '4611686018427387905',
      returnNs: '4611686018427387906',
    });
    expect(parsed[1]).toMatchObject({ callNs: '5', returnNs: null });
  });
});
