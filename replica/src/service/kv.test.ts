import { createHash } from 'node:crypto';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Packr } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import { limits } from '../constants.ts';
import { BftError } from '../errors.ts';
import { Rng } from '../../test/sim/prng.ts';
import { KvService, SortedMap, compareKeys } from './kv.ts';
import { asAsyncPieces, concatPieces } from './pieces.ts';
import {
  type KvOperation,
  type KvResult,
  KvErrorCode,
  decodeKvOperation,
  decodeKvResult,
  encodeKvOperation,
  encodeKvResult,
} from './kv-operations.ts';

const context = { cid: 1, regency: 0 };
const text = new TextEncoder();
const bytes = (value: string): Uint8Array => text.encode(value);

function run(service: KvService, operation: KvOperation): KvResult {
  const [result] = service.executeOrdered([{ clientId: 'c', seq: 1, operation: encodeKvOperation(operation) }], context);
  const decoded = decodeKvResult(result as Uint8Array);
  if (!decoded.ok) throw new Error(decoded.message);
  return decoded.value;
}

function runRaw(service: KvService, operation: Uint8Array): KvResult {
  const [result] = service.executeOrdered([{ clientId: 'c', seq: 1, operation }], context);
  const decoded = decodeKvResult(result as Uint8Array);
  if (!decoded.ok) throw new Error(decoded.message);
  return decoded.value;
}

function query(service: KvService, operation: KvOperation): KvResult {
  const decoded = decodeKvResult(service.executeUnordered(encodeKvOperation(operation)));
  if (!decoded.ok) throw new Error(decoded.message);
  return decoded.value;
}

function rangeKeys(result: KvResult): string[] {
  if (result.type !== 'range') throw new Error(`expected a range result, got ${result.type}`);
  return result.entries.map((entry) => entry.key);
}

function withKeys(keys: readonly string[]): KvService {
  const service = new KvService();
  for (const key of keys) run(service, { type: 'put', key, value: bytes(`v-${key}`) });
  return service;
}

/** Recomputes the trailing SHA-256, so that a test can corrupt the structure behind a valid checksum. */
function resealed(snapshot: Uint8Array): Uint8Array {
  const copy = snapshot.slice();
  const bodyEnd = copy.length - 32;
  copy.set(createHash('sha256').update(copy.subarray(0, bodyEnd)).digest(), bodyEnd);
  return copy;
}

/** A service holding `keys`, each with a value of `valueBytes`. */
function stateOf(keys: readonly string[], valueBytes: number): KvService {
  const service = new KvService();
  for (const key of keys) run(service, { type: 'put', key, value: new Uint8Array(valueBytes).fill(key.length) });
  return service;
}

/** The concatenated snapshot. */
function snapshotOf(service: KvService): Uint8Array {
  return concatPieces(service.snapshot());
}

/** Installs `snapshot` cut into pieces of `pieceBytes` (the whole at once by default). */
async function install(service: KvService, snapshot: Uint8Array, pieceBytes = snapshot.length): Promise<void> {
  const pieces: Uint8Array[] = [];
  for (let start = 0; start < snapshot.length; start += Math.max(1, pieceBytes)) pieces.push(snapshot.subarray(start, start + pieceBytes));
  await service.installSnapshot(asAsyncPieces(pieces));
}

async function expectSnapshotInvalid(service: KvService, snapshot: Uint8Array, reason: RegExp): Promise<void> {
  try {
    await install(service, snapshot);
  } catch (error) {
    expect(error).toBeInstanceOf(BftError);
    expect((error as BftError).code).toBe('BFT_ERR_SNAPSHOT_INVALID');
    expect((error as BftError).message).toMatch(reason);
    return;
  }
  throw new Error('installSnapshot accepted a corrupt snapshot');
}

describe('KvService point operations', () => {
  it('put reports whether the key existed, get returns the latest value, delete removes it', () => {
    const service = new KvService();
    expect(run(service, { type: 'get', key: 'a' })).toEqual({ type: 'value', value: null });
    expect(run(service, { type: 'put', key: 'a', value: bytes('1') })).toEqual({ type: 'written', existed: false });
    expect(run(service, { type: 'put', key: 'a', value: bytes('2') })).toEqual({ type: 'written', existed: true });
    expect(run(service, { type: 'get', key: 'a' })).toEqual({ type: 'value', value: bytes('2') });
    expect(run(service, { type: 'delete', key: 'a' })).toEqual({ type: 'written', existed: true });
    expect(run(service, { type: 'delete', key: 'a' })).toEqual({ type: 'written', existed: false });
    expect(run(service, { type: 'get', key: 'a' })).toEqual({ type: 'value', value: null });
    expect(service.statistics()).toEqual({ keys: 0, stateBytes: 0 });
  });

  it('stores empty values as present, distinct from absent keys', () => {
    const service = new KvService();
    run(service, { type: 'put', key: 'empty', value: new Uint8Array(0) });
    expect(run(service, { type: 'get', key: 'empty' })).toEqual({ type: 'value', value: new Uint8Array(0) });
    expect(run(service, { type: 'compareAndSet', key: 'empty', expected: null, value: bytes('x') })).toEqual({
      type: 'compareAndSet',
      swapped: false,
      current: new Uint8Array(0),
    });
  });

  it('executes a batch in order, one result per operation', () => {
    const service = new KvService();
    const operations: KvOperation[] = [
      { type: 'put', key: 'k', value: bytes('1') },
      { type: 'get', key: 'k' },
      { type: 'delete', key: 'k' },
      { type: 'get', key: 'k' },
    ];
    const results = service.executeOrdered(
      operations.map((operation, i) => ({ clientId: 'c', seq: i + 1, operation: encodeKvOperation(operation) })),
      context,
    );
    expect(results.map((result) => decodeKvResult(result))).toEqual([
      { ok: true, value: { type: 'written', existed: false } },
      { ok: true, value: { type: 'value', value: bytes('1') } },
      { ok: true, value: { type: 'written', existed: true } },
      { ok: true, value: { type: 'value', value: null } },
    ]);
  });
});

describe('KvService compare-and-set', () => {
  it('with expected null sets only an absent key, and reports the current value otherwise', () => {
    const service = new KvService();
    expect(run(service, { type: 'compareAndSet', key: 'k', expected: null, value: bytes('1') })).toEqual({
      type: 'compareAndSet',
      swapped: true,
      current: null,
    });
    expect(run(service, { type: 'compareAndSet', key: 'k', expected: null, value: bytes('2') })).toEqual({
      type: 'compareAndSet',
      swapped: false,
      current: bytes('1'),
    });
    expect(run(service, { type: 'get', key: 'k' })).toEqual({ type: 'value', value: bytes('1') });
  });

  it('sets when the current value equals expected byte for byte, and not when it differs', () => {
    const service = withKeys([]);
    run(service, { type: 'put', key: 'k', value: bytes('old') });
    expect(run(service, { type: 'compareAndSet', key: 'k', expected: bytes('ol'), value: bytes('x') })).toEqual({
      type: 'compareAndSet',
      swapped: false,
      current: bytes('old'),
    });
    expect(run(service, { type: 'compareAndSet', key: 'k', expected: bytes('old'), value: bytes('new') })).toEqual({
      type: 'compareAndSet',
      swapped: true,
      current: null,
    });
    expect(run(service, { type: 'get', key: 'k' })).toEqual({ type: 'value', value: bytes('new') });
  });

  it('fails on an absent key when a value is expected', () => {
    const service = new KvService();
    expect(run(service, { type: 'compareAndSet', key: 'k', expected: bytes('x'), value: bytes('y') })).toEqual({
      type: 'compareAndSet',
      swapped: false,
      current: null,
    });
    expect(service.statistics().keys).toBe(0);
  });
});

describe('KvService range', () => {
  const keys = ['a', 'b', 'ba', 'bb', 'c', 'd'];

  it('includes the start key and excludes the end key', () => {
    const service = withKeys(keys);
    expect(rangeKeys(run(service, { type: 'range', startKey: 'b', endKey: 'c', limit: 100 }))).toEqual(['b', 'ba', 'bb']);
    expect(rangeKeys(run(service, { type: 'range', startKey: 'ba', endKey: 'd', limit: 100 }))).toEqual(['ba', 'bb', 'c']);
  });

  it('starts between keys at the next key, and runs to the last key when endKey is null', () => {
    const service = withKeys(keys);
    expect(rangeKeys(run(service, { type: 'range', startKey: 'b0', endKey: null, limit: 100 }))).toEqual(['ba', 'bb', 'c', 'd']);
    expect(rangeKeys(run(service, { type: 'range', startKey: '', endKey: null, limit: 100 }))).toEqual(keys);
  });

  it('is empty when start is not below end, or nothing lies between', () => {
    const service = withKeys(keys);
    expect(run(service, { type: 'range', startKey: 'c', endKey: 'c', limit: 10 })).toEqual({ type: 'range', entries: [], next: null });
    expect(run(service, { type: 'range', startKey: 'd', endKey: 'a', limit: 10 })).toEqual({ type: 'range', entries: [], next: null });
    expect(run(service, { type: 'range', startKey: 'e', endKey: null, limit: 10 })).toEqual({ type: 'range', entries: [], next: null });
  });

  it('stops at the limit and names the next key, which continues the scan exactly', () => {
    const service = withKeys(keys);
    const first = run(service, { type: 'range', startKey: 'a', endKey: 'd', limit: 2 });
    expect(rangeKeys(first)).toEqual(['a', 'b']);
    expect(first.type === 'range' && first.next).toBe('ba');
    const second = run(service, { type: 'range', startKey: 'ba', endKey: 'd', limit: 2 });
    expect(rangeKeys(second)).toEqual(['ba', 'bb']);
    const third = run(service, { type: 'range', startKey: 'c', endKey: 'd', limit: 2 });
    expect(rangeKeys(third)).toEqual(['c']);
    expect(third.type === 'range' && third.next).toBe(null);
  });

  it('reports no next key when the limit is met exactly at the end of the range', () => {
    const service = withKeys(keys);
    const result = run(service, { type: 'range', startKey: 'c', endKey: null, limit: 2 });
    expect(rangeKeys(result)).toEqual(['c', 'd']);
    expect(result.type === 'range' && result.next).toBe(null);
  });

  it('stops before the result bound and names the next key', () => {
    const service = new KvService();
    const big = new Uint8Array(limits.kvValueBytesMax).fill(7);
    for (const key of ['k1', 'k2', 'k3', 'k4', 'k5']) run(service, { type: 'put', key, value: big });
    const result = run(service, { type: 'range', startKey: '', endKey: null, limit: 100 });
    const returned = rangeKeys(result);
    expect(returned.length).toBeGreaterThan(0);
    expect(returned.length).toBeLessThan(5);
    expect(result.type === 'range' && result.next).toBe(`k${returned.length + 1}`);
    expect(encodeKvResult(result).length).toBeLessThanOrEqual(limits.resultBytesMax);
  });

  it('orders keys by code point (UTF-8 byte order), not by UTF-16 code unit', () => {
    // U+FFFF sorts before U+1F600 by code point, after it by UTF-16 code unit (0xD83D < 0xFFFF).
    const keysInCodePointOrder = ['A', 'z', 'é', '\u{FFFF}', '\u{1F600}'];
    const service = withKeys([...keysInCodePointOrder].reverse());
    expect(rangeKeys(run(service, { type: 'range', startKey: '', endKey: null, limit: 100 }))).toEqual(keysInCodePointOrder);
    const byUtf8Bytes = [...keysInCodePointOrder].sort((a, b) => Buffer.compare(bytes(a), bytes(b)));
    expect(byUtf8Bytes).toEqual(keysInCodePointOrder);
    expect(rangeKeys(run(service, { type: 'range', startKey: '\u{FFFF}', endKey: '\u{1F600}', limit: 100 }))).toEqual(['\u{FFFF}']);
  });
});

describe('KvService read-only requests', () => {
  it('answers get and range without consensus', () => {
    const service = withKeys(['a', 'b']);
    expect(query(service, { type: 'get', key: 'a' })).toEqual({ type: 'value', value: bytes('v-a') });
    expect(rangeKeys(query(service, { type: 'range', startKey: '', endKey: null, limit: 10 }))).toEqual(['a', 'b']);
  });

  it('refuses writes with NOT_READ_ONLY and leaves the state unchanged', () => {
    const service = withKeys(['a']);
    const before = snapshotOf(service);
    const writes: KvOperation[] = [
      { type: 'put', key: 'b', value: bytes('1') },
      { type: 'delete', key: 'a' },
      { type: 'compareAndSet', key: 'a', expected: bytes('v-a'), value: bytes('2') },
    ];
    for (const write of writes) {
      const result = query(service, write);
      expect(result.type === 'error' && result.code).toBe(KvErrorCode.NOT_READ_ONLY);
    }
    expect(snapshotOf(service)).toEqual(before);
  });
});

describe('KvService state bound', () => {
  it('answers STORE_FULL to a write past the bound and applies nothing, but allows shrinking writes', () => {
    const service = new KvService({ stateBytesMax: 1000 });
    run(service, { type: 'put', key: 'a', value: new Uint8Array(900) });
    const before = snapshotOf(service);
    const full = run(service, { type: 'put', key: 'b', value: new Uint8Array(100) });
    expect(full.type === 'error' && full.code).toBe(KvErrorCode.STORE_FULL);
    const grow = run(service, { type: 'compareAndSet', key: 'a', expected: new Uint8Array(900), value: new Uint8Array(990) });
    expect(grow.type === 'error' && grow.code).toBe(KvErrorCode.STORE_FULL);
    expect(snapshotOf(service)).toEqual(before);
    expect(run(service, { type: 'put', key: 'a', value: new Uint8Array(10) })).toEqual({ type: 'written', existed: true });
    expect(run(service, { type: 'put', key: 'b', value: new Uint8Array(100) })).toEqual({ type: 'written', existed: false });
    expect(service.statistics().stateBytes).toBe(1 + 10 + 16 + 1 + 100 + 16);
  });
});

describe('KvService invalid operations', () => {
  const packr = new Packr({ useRecords: false, variableMapSize: true });
  const cases: Array<[string, Uint8Array]> = [
    ['unknown opcode', packr.pack([9, 'k'])],
    ['opcode 0', packr.pack([0, 'k'])],
    ['wrong arity', packr.pack([1, 'k', 'extra'])],
    ['empty array', Uint8Array.of(0x90)],
    ['a map instead of an array', packr.pack({ op: 1, key: 'k' })],
    ['key is bytes, not a string', packr.pack([1, bytes('k')])],
    ['empty key', packr.pack([1, ''])],
    ['key too long', packr.pack([1, 'k'.repeat(limits.kvKeyBytesMax + 1)])],
    ['value is a string', packr.pack([2, 'k', 'v'])],
    ['value too large', packr.pack([2, 'k', new Uint8Array(limits.kvValueBytesMax + 1)])],
    ['range limit 0', packr.pack([5, '', null, 0])],
    ['range limit too large', packr.pack([5, '', null, limits.kvRangeEntriesMax + 1])],
    ['range limit a float', packr.pack([5, '', null, 1.5])],
    ['invalid UTF-8 in a key', Uint8Array.of(0x92, 0x01, 0xa2, 0xc3, 0x28)],
    ['trailing bytes', Uint8Array.of(...packr.pack([1, 'k']), 0x00)],
    ['truncated', packr.pack([2, 'k', bytes('value')]).subarray(0, 6)],
    ['array claiming 2^32 - 1 elements', Uint8Array.of(0xdd, 0xff, 0xff, 0xff, 0xff, 0x01)],
    ['nested array', packr.pack([1, ['k']])],
    ['an extension type', Uint8Array.of(0x92, 0x01, 0xd4, 0x01, 0x00)],
    ['no bytes at all', new Uint8Array(0)],
  ];

  it.each(cases)('answers BAD_OPERATION to %s, and the state is unchanged', (_name, operation) => {
    const service = withKeys(['k']);
    const before = snapshotOf(service);
    const result = runRaw(service, operation);
    expect(result.type).toBe('error');
    expect(result.type === 'error' && result.code).toBe(KvErrorCode.BAD_OPERATION);
    expect(snapshotOf(service)).toEqual(before);
  });

  it('answers random bytes with identical results on every replica and never throws', () => {
    const rng = new Rng(20261125);
    const replicas = [new KvService(), new KvService()];
    const valid = packr.pack([4, 'key', null, bytes('value')]);
    for (let i = 0; i < 2000; i++) {
      // Half pure noise, half a valid operation with a few bytes mutated.
      const noise = rng.chance(0.5);
      const operation = noise ? new Uint8Array(rng.int(0, 40)) : valid.slice();
      if (noise) {
        for (let j = 0; j < operation.length; j++) operation[j] = rng.int(0, 255);
      } else {
        for (let m = rng.int(1, 3); m > 0; m--) operation[rng.int(0, operation.length - 1)] = rng.int(0, 255);
      }
      const results = replicas.map((replica) =>
        replica.executeOrdered([{ clientId: 'c', seq: i + 1, operation }], context)[0] as Uint8Array,
      );
      expect(results[0]).toEqual(results[1]);
      expect(decodeKvResult(results[0] as Uint8Array).ok).toBe(true);
    }
    expect(snapshotOf(replicas[0] as KvService)).toEqual(snapshotOf(replicas[1] as KvService));
  });

  it('refuses to encode an operation a replica would refuse, naming the problem', () => {
    expect(() => encodeKvOperation({ type: 'get', key: '' })).toThrow(/BFT_ERR_KV_OPERATION_INVALID: get: key must be 1 to 1024 UTF-8 bytes/);
    expect(() => encodeKvOperation({ type: 'range', startKey: '', endKey: null, limit: 0 })).toThrow(/limit/);
    expect(() => encodeKvOperation({ type: 'put', key: '\uD800', value: bytes('x') })).toThrow(/well-formed/);
  });
});

describe('key-value operation and result codec', () => {
  it('round-trips every operation', () => {
    const operations: KvOperation[] = [
      { type: 'get', key: 'k' },
      { type: 'put', key: 'ключ', value: bytes('v') },
      { type: 'delete', key: '\u{1F600}' },
      { type: 'compareAndSet', key: 'k', expected: null, value: new Uint8Array(0) },
      { type: 'compareAndSet', key: 'k', expected: bytes('a'), value: bytes('b') },
      { type: 'range', startKey: '', endKey: null, limit: 1 },
      { type: 'range', startKey: 'a', endKey: 'b', limit: limits.kvRangeEntriesMax },
    ];
    for (const operation of operations) {
      expect(decodeKvOperation(encodeKvOperation(operation))).toEqual({ ok: true, value: operation });
    }
  });

  it('round-trips every result', () => {
    const results: KvResult[] = [
      { type: 'value', value: null },
      { type: 'value', value: bytes('v') },
      { type: 'written', existed: true },
      { type: 'compareAndSet', swapped: false, current: bytes('c') },
      { type: 'range', entries: [{ key: 'a', value: bytes('1') }], next: 'b' },
      { type: 'range', entries: [], next: null },
      { type: 'error', code: KvErrorCode.STORE_FULL, message: 'full' },
    ];
    for (const result of results) expect(decodeKvResult(encodeKvResult(result))).toEqual({ ok: true, value: result });
  });

  it('refuses results a correct replica never sends, without throwing', () => {
    const packr = new Packr({ useRecords: false });
    expect(decodeKvResult(packr.pack([7, true])).ok).toBe(false);
    expect(decodeKvResult(packr.pack([0, 'NO_SUCH_CODE', 'x'])).ok).toBe(false);
    expect(decodeKvResult(packr.pack([1, new Uint8Array(limits.kvValueBytesMax + 1)])).ok).toBe(false);
    expect(decodeKvResult(packr.pack([4, [[['deep']]], null])).ok).toBe(false);
    expect(decodeKvResult(new Uint8Array(limits.resultBytesMax + 1)).ok).toBe(false);
  });
});

describe('KvService snapshots', () => {
  function shuffledBuild(seed: number, keys: readonly string[]): KvService {
    const rng = new Rng(seed);
    const service = new KvService();
    const order = rng.shuffle([...keys]);
    // Extra keys written and deleted, and values overwritten, so that history differs beyond order.
    for (const key of order) {
      run(service, { type: 'put', key, value: bytes(`stale-${seed}`) });
      if (rng.chance(0.3)) run(service, { type: 'put', key: `${key}~tmp`, value: bytes('x') });
    }
    for (const key of rng.shuffle([...keys])) run(service, { type: 'put', key, value: bytes(`v-${key}`) });
    for (const key of order) run(service, { type: 'delete', key: `${key}~tmp` });
    return service;
  }

  it('gives the same bytes for the same state whatever the order of the writes', () => {
    const keys = Array.from({ length: 3000 }, (_, i) => `key-${(i * 7919) % 3001}-${i % 3 === 0 ? 'é' : ''}`);
    const a = snapshotOf(shuffledBuild(1, keys));
    const b = snapshotOf(shuffledBuild(2, keys));
    const c = snapshotOf(withKeys(keys));
    expect(Buffer.from(a).equals(b)).toBe(true);
    expect(Buffer.from(a).equals(c)).toBe(true);
  });

  it('differs when the state differs in one value byte', () => {
    const service = withKeys(['a', 'b']);
    const before = snapshotOf(service);
    run(service, { type: 'put', key: 'b', value: bytes('v-c') });
    expect(Buffer.from(before).equals(snapshotOf(service))).toBe(false);
  });

  it('round-trips: an installed snapshot answers the same and snapshots to the same bytes', async () => {
    const keys = Array.from({ length: 5000 }, (_, i) => `k${i}`);
    const source = withKeys(keys);
    run(source, { type: 'put', key: '\u{1F600}', value: new Uint8Array(0) });
    run(source, { type: 'put', key: '\u{FFFF}', value: bytes('bmp') });
    const snapshot = snapshotOf(source);
    const target = withKeys(['only-in-target']);
    await install(target, snapshot);
    expect(Buffer.from(snapshotOf(target)).equals(snapshot)).toBe(true);
    expect(target.statistics()).toEqual(source.statistics());
    expect(run(target, { type: 'get', key: 'only-in-target' })).toEqual({ type: 'value', value: null });
    expect(run(target, { type: 'get', key: 'k4321' })).toEqual({ type: 'value', value: bytes('v-k4321') });
    expect(run(target, { type: 'range', startKey: 'k10', endKey: 'k11', limit: 100 })).toEqual(
      run(source, { type: 'range', startKey: 'k10', endKey: 'k11', limit: 100 }),
    );
    // The installed tree keeps working for writes and deletes.
    for (const key of keys.slice(0, 2500)) run(target, { type: 'delete', key });
    for (const key of keys.slice(0, 2500)) run(source, { type: 'delete', key });
    expect(Buffer.from(snapshotOf(target)).equals(snapshotOf(source))).toBe(true);
  });

  it('is the state at the call, not at the read: writes and deletes after it do not reach it', async () => {
    const keys = Array.from({ length: 5000 }, (_, i) => `key-${i}`);
    const service = stateOf(keys, 40);
    const expected = snapshotOf(stateOf(keys, 40));
    const pieces = service.snapshot();
    for (let i = 0; i < 5000; i += 2) run(service, { type: 'delete', key: `key-${i}` });
    for (let i = 0; i < 3000; i++) run(service, { type: 'put', key: `new-${i}`, value: bytes('x'.repeat(100)) });
    run(service, { type: 'put', key: 'key-1', value: bytes('changed') });
    expect(Buffer.from(concatPieces([...pieces])).equals(expected)).toBe(true);
    expect(service.statistics().keys).toBe(2500 + 3000);
    expect(query(service, { type: 'get', key: 'key-1' })).toEqual({ type: 'value', value: bytes('changed') });
  });

  it('round-trips an empty state', async () => {
    const target = withKeys(['x']);
    await install(target, snapshotOf(new KvService()));
    expect(target.statistics()).toEqual({ keys: 0, stateBytes: 0 });
  });

  it('installs equal from a small snapshot cut at every byte, and from one-byte pieces', async () => {
    const source = withKeys(['a', 'b\u00e9', '\u{1F600}']);
    const snapshot = snapshotOf(source);
    for (let cut = 1; cut < snapshot.length; cut++) {
      const target = withKeys(['other']);
      await target.installSnapshot(asAsyncPieces([snapshot.subarray(0, cut), new Uint8Array(0), snapshot.subarray(cut)]));
      expect(Buffer.from(snapshotOf(target)).equals(snapshot)).toBe(true);
    }
    const target = new KvService();
    await install(target, snapshot, 1);
    expect(Buffer.from(snapshotOf(target)).equals(snapshot)).toBe(true);
    expect(target.statistics()).toEqual(source.statistics());
  });

  it('cuts its snapshot into pieces of at most snapshotPieceBytesMax, whatever the value sizes', () => {
    const service = new KvService();
    for (let i = 0; i < 12; i++) run(service, { type: 'put', key: `big-${i}`, value: new Uint8Array(limits.kvValueBytesMax).fill(i) });
    const pieces = [...service.snapshot()];
    expect(pieces.length).toBeGreaterThan(2);
    for (const piece of pieces) expect(piece.length).toBeLessThanOrEqual(limits.snapshotPieceBytesMax);
  });

  it('streams a 64 MiB state out and in without holding the snapshot whole (heap growth measured)', async () => {
    // gc() makes the measurement about what is retained, not about when V8 chooses to collect.
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const valueBytes = 4096;
    const entries = (64 * 1024 * 1024) / valueBytes;
    const keys = Array.from({ length: entries }, (_, i) => `key-${String(i).padStart(8, '0')}`);
    const source = stateOf(keys, valueBytes);
    const memory = () => {
      const usage = process.memoryUsage();
      return usage.heapUsed + usage.arrayBuffers;
    };
    gc();
    const baseline = memory();
    let peak = 0;
    let pieces = 0;
    async function* sampled(): AsyncGenerator<Uint8Array> {
      for (const piece of source.snapshot()) {
        pieces++;
        if (pieces % 8 === 0) {
          gc();
          peak = Math.max(peak, memory() - baseline);
        }
        yield piece;
      }
    }
    const target = new KvService();
    await target.installSnapshot(sampled());
    gc();
    const installed = memory() - baseline;
    expect(target.statistics()).toEqual(source.statistics());
    // The new state itself is ~64 MiB of values plus its keys and tree; a snapshot held whole would add
    // another 64 MiB on top of that. Generous bound: the installed state plus 24 MiB.
    expect(pieces).toBeGreaterThanOrEqual(64);
    expect(peak).toBeLessThan(installed + 24 * 1024 * 1024);
    console.log(`64 MiB state: ${pieces} pieces, peak growth ${(peak / 2 ** 20).toFixed(1)} MiB, installed state ${(installed / 2 ** 20).toFixed(1)} MiB`);
  });

  describe('refuses a corrupt snapshot with BFT_ERR_SNAPSHOT_INVALID and keeps its state', () => {
    const good = snapshotOf(withKeys(['a', 'b', 'c']));
    // Layout: magic (8) | count (4) | entries: keyLength (2) key valueLength (4) value | sha256 (32)
    const firstEntry = 12;
    const corruptions: Array<[string, RegExp, () => Uint8Array]> = [
      ['a flipped value byte', /checksum mismatch/, () => {
        const copy = good.slice();
        const valueOffset = firstEntry + 2 + 1 + 4;
        copy[valueOffset] = (copy[valueOffset] as number) ^ 0x01;
        return copy;
      }],
      ['a truncated tail', /checksum is truncated/, () => good.subarray(0, good.length - 1)],
      ['too few bytes for a header', /only 10 bytes/, () => good.subarray(0, 10)],
      ['too few bytes for the first entry', /entry 0 is truncated/, () => good.subarray(0, 20)],
      ['a bad magic', /bad magic/, () => {
        const copy = good.slice();
        copy[0] = 0;
        return resealed(copy);
      }],
      // The fourth entry is read from the checksum's bytes.
      ['a count larger than its entries', /entry 3 (is truncated|has a key of)/, () => {
        const copy = good.slice();
        new DataView(copy.buffer).setUint32(8, 4);
        return resealed(copy);
      }],
      // The third entry is read as the checksum.
      ['a count smaller than its entries', /checksum mismatch/, () => {
        const copy = good.slice();
        new DataView(copy.buffer).setUint32(8, 2);
        return resealed(copy);
      }],
      ['keys out of order', /out of key order/, () => {
        const copy = good.slice();
        copy[firstEntry + 2] = 0x64; // 'a' → 'd', which is after 'b'
        return resealed(copy);
      }],
      ['a repeated key', /out of key order or repeats a key/, () => {
        const copy = good.slice();
        copy[firstEntry + 2] = 0x62; // 'a' → 'b'
        return resealed(copy);
      }],
      ['a key that is not UTF-8', /not UTF\-8/, () => {
        const copy = good.slice();
        copy[firstEntry + 2] = 0x80;
        return resealed(copy);
      }],
      ['an empty key', /key of 0 bytes/, () => {
        const copy = good.slice();
        new DataView(copy.buffer).setUint16(firstEntry, 0);
        return resealed(copy);
      }],
      ['a value length past the end', /entry 0 is truncated/, () => {
        const copy = good.slice();
        new DataView(copy.buffer).setUint32(firstEntry + 3, 1000);
        return resealed(copy);
      }],
    ];

    it.each(corruptions)('%s', async (_name, reason, corrupt) => {
      const service = withKeys(['keep-me']);
      const before = snapshotOf(service);
      await expectSnapshotInvalid(service, corrupt(), reason);
      expect(Buffer.from(snapshotOf(service)).equals(before)).toBe(true);
      expect(run(service, { type: 'get', key: 'keep-me' })).toEqual({ type: 'value', value: bytes('v-keep-me') });
    });

    it('a snapshot over the state bound', async () => {
      const service = new KvService({ stateBytesMax: 30 });
      await expectSnapshotInvalid(service, good, /more than the state bound of 30 bytes/);
      expect(service.statistics().keys).toBe(0);
    });
  });
});

describe('SortedMap', () => {
  it('agrees with a reference model through random inserts, overwrites, deletes and scans', () => {
    const rng = new Rng(7);
    const map = new SortedMap();
    const model = new Map<string, Uint8Array>();
    // A small key space, so that deletes hit often and nodes merge and borrow at every level.
    // Some keys end in characters where UTF-16 and code point order disagree, to exercise the key remap.
    const endings = ['', 'é', '\u{D7FF}', '\u{E000}', '\u{FFFF}', '\u{1F600}', '\u{10FFFF}'];
    const keySpace = Array.from({ length: 7000 }, (_, i) => `k${i % 1000}${endings[Math.floor(i / 1000)] ?? ''}`);
    for (let step = 0; step < 60_000; step++) {
      const key = rng.pick(keySpace);
      // Grow for a while, then shrink, then grow again.
      const phase = Math.floor(step / 15_000) % 2;
      if (rng.chance(phase === 0 ? 0.7 : 0.3)) {
        const value = Uint8Array.of(step & 0xff);
        expect(map.set(key, value)).toEqual(model.get(key));
        model.set(key, value);
      } else {
        expect(map.delete(key)).toEqual(model.get(key));
        model.delete(key);
      }
      if (step % 5000 === 0) map.checkStructure();
      expect(map.size).toBe(model.size);
    }
    map.checkStructure();
    const sorted = [...model.keys()].sort(compareKeys);
    expect([...map.entries()].map((entry) => entry.key)).toEqual(sorted);
    for (let i = 0; i < 200; i++) {
      const start = rng.pick(keySpace);
      const end = rng.pick(keySpace);
      const expected = sorted.filter((key) => compareKeys(key, start) >= 0 && compareKeys(key, end) < 0);
      expect([...map.entries(start, end)].map((entry) => entry.key)).toEqual(expected);
    }
    for (const key of keySpace) map.delete(key);
    map.checkStructure();
    expect(map.size).toBe(0);
  });

  it('keeps every frozen version as it was through later inserts, overwrites, deletes, splits and merges', () => {
    const rng = new Rng(11);
    const map = new SortedMap();
    const model = new Map<string, Uint8Array>();
    const frozen: Array<{ version: ReturnType<SortedMap['freeze']>; expected: Array<[string, number]> }> = [];
    const keySpace = Array.from({ length: 3000 }, (_, i) => `k${String(i).padStart(4, '0')}`);
    const entriesOf = (version: ReturnType<SortedMap['freeze']>): Array<[string, number]> =>
      [...version.leaves()].flatMap((leaf) => leaf.keys.map((key, i): [string, number] => [key, (leaf.values[i] as Uint8Array)[0] as number]));
    for (let step = 0; step < 40_000; step++) {
      if (step % 4000 === 0) {
        frozen.push({ version: map.freeze(), expected: [...model].sort(([a], [b]) => compareKeys(a, b)).map(([key, value]) => [key, value[0] as number]) });
      }
      const key = rng.pick(keySpace);
      if (rng.chance(Math.floor(step / 10_000) % 2 === 0 ? 0.75 : 0.25)) {
        const value = Uint8Array.of(step & 0xff);
        map.set(key, value);
        model.set(key, value);
      } else {
        expect(map.delete(key)).toEqual(model.get(key));
        model.delete(key);
      }
    }
    map.checkStructure();
    expect([...map.entries()].map((entry) => entry.key)).toEqual([...model.keys()].sort(compareKeys));
    expect(frozen.length).toBe(10);
    for (const { version, expected } of frozen) {
      expect(version.size).toBe(expected.length);
      expect(entriesOf(version)).toEqual(expected);
    }
  });

  it.each([0, 1, 63, 64, 65, 128, 129, 4095, 4097, 70_000])('builds a valid tree from %i sorted entries', (count) => {
    const keys = Array.from({ length: count }, (_, i) => `k${String(i).padStart(6, '0')}`);
    const map = SortedMap.fromSorted(keys, keys.map(() => new Uint8Array(0)));
    map.checkStructure();
    expect(map.size).toBe(count);
    if (count > 0) {
      expect(map.get(keys[count - 1] as string)).toEqual(new Uint8Array(0));
      map.delete(keys[0] as string);
      map.set('a', new Uint8Array(0));
      map.checkStructure();
    }
  });
});
