// The key-value service's operations and results on the wire: msgpack arrays with a numeric code first.
//
//   operation                                   result
//   [1 GET, key]                                [1 VALUE, value | nil]
//   [2 PUT, key, value]                         [2 WRITTEN, existed]
//   [3 DELETE, key]                             [2 WRITTEN, existed]
//   [4 COMPARE_AND_SET, key, expected | nil,    [3 COMPARE_AND_SET, swapped, current | nil]
//      value]
//   [5 RANGE, startKey, endKey | nil, limit]    [4 RANGE, [[key, value], ...], next | nil]
//                                               [0 ERROR, code, message]
//
// Codes are fixed and never reused. Keys are msgpack str (well-formed UTF-8), values msgpack bin.
//
// Operation bytes come from clients and result bytes from replicas, either of which may be Byzantine, so
// decoding never throws and never trusts a length: a small reader of exactly the msgpack subset above
// (arrays, str, bin, integers, nil, booleans; no maps, floats or extensions) builds plain values, and zod
// schemas check their shape and bounds. Replicas must turn the same bytes into the same result, so error
// messages are ours, not a library's, and say nothing that differs between replicas.

import { Packr } from 'msgpackr';
import { z } from 'zod';
import { limits } from '../constants.ts';
import { BftError } from '../errors.ts';
import { plainMsgpackOptions } from '../protocol/codec.ts';
import type { Bytes } from '../protocol/messages.ts';

export const KvOpcode = {
  GET: 1,
  PUT: 2,
  DELETE: 3,
  COMPARE_AND_SET: 4,
  RANGE: 5,
} as const;

export const KvResultCode = {
  ERROR: 0,
  VALUE: 1,
  WRITTEN: 2,
  COMPARE_AND_SET: 3,
  RANGE: 4,
} as const;

export type KvOperation =
  | { readonly type: 'get'; readonly key: string }
  | { readonly type: 'put'; readonly key: string; readonly value: Bytes }
  | { readonly type: 'delete'; readonly key: string }
  /** Sets `value` only if the key holds exactly `expected` (null: only if the key is absent). */
  | { readonly type: 'compareAndSet'; readonly key: string; readonly expected: Bytes | null; readonly value: Bytes }
  /** Keys in [startKey, endKey) in key order (endKey null: to the last key), at most `limit` of them. */
  | { readonly type: 'range'; readonly startKey: string; readonly endKey: string | null; readonly limit: number };

export type KvOperationType = KvOperation['type'];

export interface KvEntry {
  readonly key: string;
  readonly value: Bytes;
}

export const KvErrorCode = {
  /** The operation bytes are not a valid operation; the message says which part. */
  BAD_OPERATION: 'BAD_OPERATION',
  /** A write sent as an unordered (read-only) request; send it ordered. */
  NOT_READ_ONLY: 'NOT_READ_ONLY',
  /** The write would take the state past kvStateBytesMax; delete keys first. */
  STORE_FULL: 'STORE_FULL',
} as const;

export type KvErrorCodeName = (typeof KvErrorCode)[keyof typeof KvErrorCode];

export type KvResult =
  | { readonly type: 'value'; readonly value: Bytes | null }
  /** put and delete: whether the key held a value before the operation. */
  | { readonly type: 'written'; readonly existed: boolean }
  /** `current` is the value that failed the comparison (null when the key was absent, or when swapped). */
  | { readonly type: 'compareAndSet'; readonly swapped: boolean; readonly current: Bytes | null }
  /**
   * `next` is the first key in the range that was not returned (because of `limit` or the result size
   * bound): continue from there. Null when the range is exhausted.
   */
  | { readonly type: 'range'; readonly entries: readonly KvEntry[]; readonly next: string | null }
  | { readonly type: 'error'; readonly code: KvErrorCodeName; readonly message: string };

export type KvDecoded<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly message: string };

/**
 * What one entry costs against the state and range-result bounds: its key and value bytes plus a fixed
 * overhead, so that many tiny entries are bounded too.
 */
export function kvEntryBytes(keyBytes: number, valueBytes: number): number {
  return keyBytes + valueBytes + limits.kvEntryOverheadBytes;
}

// --- Encoding ----------------------------------------------------------------------------------------

// Encode only (decoding is our own strict reader below), with the wire codec's plain msgpack options.
const packr = new Packr(plainMsgpackOptions);

/** Encodes an operation for a request; throws BFT_ERR_KV_OPERATION_INVALID if a replica would refuse it. */
export function encodeKvOperation(operation: KvOperation): Uint8Array {
  const tuple = operationTuple(operation);
  const checked = checkOperationTuple(tuple);
  if (!checked.ok) {
    throw new BftError('BFT_ERR_KV_OPERATION_INVALID', `${checked.message}; fix the operation before sending it`);
  }
  return packr.pack(tuple);
}

export function encodeKvResult(result: KvResult): Uint8Array {
  return packr.pack(resultTuple(result));
}

function operationTuple(operation: KvOperation): unknown[] {
  switch (operation.type) {
    case 'get':
      return [KvOpcode.GET, operation.key];
    case 'put':
      return [KvOpcode.PUT, operation.key, operation.value];
    case 'delete':
      return [KvOpcode.DELETE, operation.key];
    case 'compareAndSet':
      return [KvOpcode.COMPARE_AND_SET, operation.key, operation.expected, operation.value];
    case 'range':
      return [KvOpcode.RANGE, operation.startKey, operation.endKey, operation.limit];
  }
}

function resultTuple(result: KvResult): unknown[] {
  switch (result.type) {
    case 'value':
      return [KvResultCode.VALUE, result.value];
    case 'written':
      return [KvResultCode.WRITTEN, result.existed];
    case 'compareAndSet':
      return [KvResultCode.COMPARE_AND_SET, result.swapped, result.current];
    case 'range':
      return [KvResultCode.RANGE, result.entries.map((entry) => [entry.key, entry.value]), result.next];
    case 'error':
      return [KvResultCode.ERROR, result.code, result.message];
  }
}

// --- Schemas -----------------------------------------------------------------------------------------

/** UTF-8 length of a string without encoding it. Lone surrogates count as the 3 bytes of U+FFFD. */
export function utf8ByteLength(text: string): number {
  let bytes = text.length;
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    if (unit < 0x80) continue;
    if (unit < 0x800) bytes += 1;
    else if (unit >= 0xd800 && unit <= 0xdbff && i + 1 < text.length) {
      const low = text.charCodeAt(i + 1);
      if (low >= 0xdc00 && low <= 0xdfff) {
        i += 1; // a pair: 4 bytes for 2 units
        bytes += 2;
        continue;
      }
      bytes += 2;
    } else bytes += 2;
  }
  return bytes;
}

function keySchema(what: string, minBytes: number) {
  return z
    .string({ error: `${what} must be a string` })
    .refine((key) => key.isWellFormed(), { error: `${what} must be well-formed Unicode` })
    .refine((key) => {
      const length = utf8ByteLength(key);
      return length >= minBytes && length <= limits.kvKeyBytesMax;
    }, { error: `${what} must be ${minBytes} to ${limits.kvKeyBytesMax} UTF-8 bytes` });
}

function valueSchema(what: string) {
  return z
    .instanceof(Uint8Array, { error: `${what} must be bytes` })
    .refine((value) => value.length <= limits.kvValueBytesMax, {
      error: `${what} must be at most ${limits.kvValueBytesMax} bytes`,
    });
}

const key = keySchema('key', 1);

const operationSchemas = {
  [KvOpcode.GET]: { name: 'get', schema: z.tuple([z.literal(KvOpcode.GET), key]) },
  [KvOpcode.PUT]: { name: 'put', schema: z.tuple([z.literal(KvOpcode.PUT), key, valueSchema('value')]) },
  [KvOpcode.DELETE]: { name: 'delete', schema: z.tuple([z.literal(KvOpcode.DELETE), key]) },
  [KvOpcode.COMPARE_AND_SET]: {
    name: 'compareAndSet',
    schema: z.tuple([
      z.literal(KvOpcode.COMPARE_AND_SET),
      key,
      valueSchema('expected').nullable(),
      valueSchema('value'),
    ]),
  },
  [KvOpcode.RANGE]: {
    name: 'range',
    schema: z.tuple([
      z.literal(KvOpcode.RANGE),
      keySchema('startKey', 0),
      keySchema('endKey', 0).nullable(),
      z
        .number({ error: 'limit must be a number' })
        .int({ error: 'limit must be an integer' })
        .min(1, { error: `limit must be 1 to ${limits.kvRangeEntriesMax}` })
        .max(limits.kvRangeEntriesMax, { error: `limit must be 1 to ${limits.kvRangeEntriesMax}` }),
    ]),
  },
} as const;

const opcodeArity: Record<number, number> = {
  [KvOpcode.GET]: 2,
  [KvOpcode.PUT]: 3,
  [KvOpcode.DELETE]: 2,
  [KvOpcode.COMPARE_AND_SET]: 4,
  [KvOpcode.RANGE]: 4,
};

/** The first problem zod found, as a message of ours (custom messages on every check). */
function firstIssue(error: z.ZodError, prefix: string): string {
  const issue = error.issues[0];
  return `${prefix}: ${issue === undefined ? 'invalid' : issue.message}`;
}

function checkOperationTuple(tuple: unknown): KvDecoded<KvOperation> {
  if (!Array.isArray(tuple) || tuple.length === 0) return { ok: false, message: 'an operation is a non-empty array' };
  const opcode = tuple[0];
  if (typeof opcode !== 'number' || !Number.isSafeInteger(opcode)) return { ok: false, message: 'the opcode must be an integer' };
  if (!(opcode in operationSchemas)) return { ok: false, message: `unknown opcode ${opcode}` };
  const entry = operationSchemas[opcode as keyof typeof operationSchemas];
  const arity = opcodeArity[opcode] as number;
  if (tuple.length !== arity) return { ok: false, message: `${entry.name}: expected ${arity} fields, got ${tuple.length}` };
  const parsed = entry.schema.safeParse(tuple);
  if (!parsed.success) return { ok: false, message: firstIssue(parsed.error, entry.name) };
  const fields = parsed.data as readonly unknown[];
  switch (opcode) {
    case KvOpcode.GET:
      return { ok: true, value: { type: 'get', key: fields[1] as string } };
    case KvOpcode.PUT:
      return { ok: true, value: { type: 'put', key: fields[1] as string, value: fields[2] as Bytes } };
    case KvOpcode.DELETE:
      return { ok: true, value: { type: 'delete', key: fields[1] as string } };
    case KvOpcode.COMPARE_AND_SET:
      return {
        ok: true,
        value: {
          type: 'compareAndSet',
          key: fields[1] as string,
          expected: fields[2] as Bytes | null,
          value: fields[3] as Bytes,
        },
      };
    default:
      return {
        ok: true,
        value: {
          type: 'range',
          startKey: fields[1] as string,
          endKey: fields[2] as string | null,
          limit: fields[3] as number,
        },
      };
  }
}

// Results are checked for shape and the bounds a correct replica keeps, so a client never holds more
// than a correct replica could have sent.
const resultValue = z.instanceof(Uint8Array).refine((value) => value.length <= limits.kvValueBytesMax);
const resultKey = z.string().refine((text) => utf8ByteLength(text) <= limits.kvKeyBytesMax);
const resultSchema = z.union([
  z.tuple([z.literal(KvResultCode.VALUE), resultValue.nullable()]),
  z.tuple([z.literal(KvResultCode.WRITTEN), z.boolean()]),
  z.tuple([z.literal(KvResultCode.COMPARE_AND_SET), z.boolean(), resultValue.nullable()]),
  z.tuple([
    z.literal(KvResultCode.RANGE),
    z.array(z.tuple([resultKey, resultValue])).max(limits.kvRangeEntriesMax),
    resultKey.nullable(),
  ]),
  z.tuple([z.literal(KvResultCode.ERROR), z.enum(KvErrorCode), z.string().max(1024)]),
]);

// --- Decoding ----------------------------------------------------------------------------------------

/** Decodes and validates an operation from a request. Never throws; the message becomes an error result. */
export function decodeKvOperation(bytes: Uint8Array): KvDecoded<KvOperation> {
  if (bytes.length > limits.operationBytesMax) {
    return { ok: false, message: `an operation is at most ${limits.operationBytesMax} bytes` };
  }
  const read = readPlain(bytes, 1);
  if (!read.ok) return read;
  return checkOperationTuple(read.value);
}

/** Decodes and validates a result from a replica (which may be Byzantine). Never throws. */
export function decodeKvResult(bytes: Uint8Array): KvDecoded<KvResult> {
  if (bytes.length > limits.resultBytesMax) {
    return { ok: false, message: `a result is at most ${limits.resultBytesMax} bytes` };
  }
  const read = readPlain(bytes, 3);
  if (!read.ok) return read;
  const parsed = resultSchema.safeParse(read.value);
  if (!parsed.success) return { ok: false, message: 'not a key-value result' };
  const fields = parsed.data;
  switch (fields[0]) {
    case KvResultCode.VALUE:
      return { ok: true, value: { type: 'value', value: fields[1] } };
    case KvResultCode.WRITTEN:
      return { ok: true, value: { type: 'written', existed: fields[1] } };
    case KvResultCode.COMPARE_AND_SET:
      return { ok: true, value: { type: 'compareAndSet', swapped: fields[1], current: fields[2] } };
    case KvResultCode.RANGE:
      return {
        ok: true,
        value: { type: 'range', entries: fields[1].map(([key, value]) => ({ key, value })), next: fields[2] },
      };
    case KvResultCode.ERROR:
      return { ok: true, value: { type: 'error', code: fields[1], message: fields[2] } };
  }
}

type Plain = null | boolean | number | string | Uint8Array | Plain[];

class Undecodable extends Error {}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * Exactly one msgpack value of the subset we use, with arrays nested at most `depthMax` deep. Each
 * length is checked against the bytes that remain before anything is allocated for it.
 */
function readPlain(bytes: Uint8Array, depthMax: number): KvDecoded<Plain> {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let position = 0;

  const need = (count: number): void => {
    if (count > bytes.length - position) throw new Undecodable('truncated');
  };
  const readUint = (size: 1 | 2 | 4): number => {
    need(size);
    const value = size === 1 ? view.getUint8(position) : size === 2 ? view.getUint16(position) : view.getUint32(position);
    position += size;
    return value;
  };
  const readString = (length: number): string => {
    need(length);
    const slice = bytes.subarray(position, position + length);
    position += length;
    try {
      return strictUtf8.decode(slice);
    } catch {
      throw new Undecodable('a string is not valid UTF-8');
    }
  };
  const readBinary = (length: number): Uint8Array => {
    need(length);
    // A copy (Buffer's slice would be a view): a value kept in the state must not pin the request buffer.
    const copy = new Uint8Array(bytes.subarray(position, position + length));
    position += length;
    return copy;
  };
  const read64 = (signed: boolean): number => {
    need(8);
    const value = signed ? view.getBigInt64(position) : view.getBigUint64(position);
    position += 8;
    if (value > BigInt(Number.MAX_SAFE_INTEGER) || value < BigInt(Number.MIN_SAFE_INTEGER)) {
      throw new Undecodable('an integer is beyond 2^53');
    }
    return Number(value);
  };
  const readArray = (length: number, depth: number): Plain[] => {
    if (depth >= depthMax) throw new Undecodable('arrays nested too deeply');
    // Every element takes at least one byte, so a longer claim is a lie and allocates nothing.
    need(length);
    const items: Plain[] = [];
    for (let i = 0; i < length; i++) items.push(readValue(depth + 1));
    return items;
  };
  const readValue = (depth: number): Plain => {
    need(1);
    const token = bytes[position] as number;
    position += 1;
    if (token <= 0x7f) return token;
    if (token >= 0xe0) return token - 0x100;
    if (token >= 0x90 && token <= 0x9f) return readArray(token & 0x0f, depth);
    if (token >= 0xa0 && token <= 0xbf) return readString(token & 0x1f);
    switch (token) {
      case 0xc0:
        return null;
      case 0xc2:
        return false;
      case 0xc3:
        return true;
      case 0xc4:
        return readBinary(readUint(1));
      case 0xc5:
        return readBinary(readUint(2));
      case 0xc6:
        return readBinary(readUint(4));
      case 0xcc:
        return readUint(1);
      case 0xcd:
        return readUint(2);
      case 0xce:
        return readUint(4);
      case 0xcf:
        return read64(false);
      case 0xd0:
        need(1);
        position += 1;
        return view.getInt8(position - 1);
      case 0xd1:
        need(2);
        position += 2;
        return view.getInt16(position - 2);
      case 0xd2:
        need(4);
        position += 4;
        return view.getInt32(position - 4);
      case 0xd3:
        return read64(true);
      case 0xd9:
        return readString(readUint(1));
      case 0xda:
        return readString(readUint(2));
      case 0xdb:
        return readString(readUint(4));
      case 0xdc:
        return readArray(readUint(2), depth);
      case 0xdd:
        return readArray(readUint(4), depth);
      default:
        throw new Undecodable(`msgpack type 0x${token.toString(16)} is not used by the key-value service`);
    }
  };

  try {
    const value = readValue(0);
    if (position !== bytes.length) return { ok: false, message: `undecodable: ${bytes.length - position} bytes after the value` };
    return { ok: true, value };
  } catch (error) {
    if (error instanceof Undecodable) return { ok: false, message: `undecodable: ${error.message}` };
    // Only a stack overflow could get here, and depthMax rules it out; still, never throw on input.
    return { ok: false, message: 'undecodable' };
  }
}

/** For callers that build keys: whether `key` is one a replica accepts. */
export function kvKeyProblem(candidate: string): string | null {
  const parsed = key.safeParse(candidate);
  return parsed.success ? null : firstIssue(parsed.error, 'key');
}
