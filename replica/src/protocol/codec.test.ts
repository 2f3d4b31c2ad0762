import { describe, expect, it } from 'vitest';
import { Packr } from 'msgpackr';
import { limits } from '../constants.ts';
import {
  acceptSigningPayload,
  collectSigningPayload,
  decodeBatch,
  decodeMessage,
  encodeBatch,
  encodeMessage,
  requestSigningPayload,
  signingDomain,
} from './codec.ts';
import {
  type Batch,
  BusyReason,
  type ClientRequest,
  type Collect,
  type Decision,
  type Message,
  MessageType,
  type SignedCollect,
} from './messages.ts';
import { DropReason } from './reasons.ts';
import { validateBatch, validateMessage } from './validate.ts';
import { mulberry32 } from '../../test/helpers.ts';

// --- Fixtures ----------------------------------------------------------------------------------------

function bytesOf(length: number, fill = 0xab): Uint8Array {
  const bytes = new Uint8Array(length);
  for (let i = 0; i < length; i += 1) bytes[i] = (fill + i * 31) & 0xff;
  return bytes;
}

const digest = bytesOf(32, 1);
const otherDigest = bytesOf(32, 2);
const signature = bytesOf(64, 3);

function request(seq: number, operationBytes = 24): ClientRequest {
  return {
    clientId: `client-${seq % 7}`,
    seq,
    ordered: seq % 3 !== 0,
    operation: bytesOf(operationBytes, seq),
    signature: seq % 2 === 0 ? signature : null,
  };
}

const batchValue: Batch = { requests: [request(1), request(2), request(3)] };
const encodedBatch = encodeBatch(batchValue);

const collect: Collect = {
  replica: 2,
  view: 1,
  regency: 4,
  cid: 17,
  acceptedRegency: 3,
  acceptedDigest: digest,
  writeSet: [
    { regency: 2, digest: otherDigest },
    { regency: 3, digest },
  ],
};
const signedCollect: SignedCollect = { collect, signature };
const decision: Decision = {
  cid: 16,
  regency: 3,
  batch: encodedBatch,
  votes: [0, 1, 2].map((replica) => ({ replica, signature })),
};

/** One realistic instance of every message type. */
const samples = {
  PROPOSE: { type: MessageType.PROPOSE, view: 1, cid: 17, regency: 3, batch: encodedBatch },
  WRITE: { type: MessageType.WRITE, view: 1, cid: 17, regency: 3, digest },
  ACCEPT: { type: MessageType.ACCEPT, view: 1, cid: 17, regency: 3, digest, signature },
  FORWARD: { type: MessageType.FORWARD, view: 1, requests: [request(4), request(5)] },
  STOP: { type: MessageType.STOP, view: 1, regency: 4, requests: [request(6)] },
  STOPDATA: {
    type: MessageType.STOPDATA,
    view: 1,
    regency: 4,
    collect: signedCollect,
    lastDecision: decision,
    values: [encodedBatch, encodedBatch],
  },
  SYNC: {
    type: MessageType.SYNC,
    view: 1,
    regency: 4,
    cid: 17,
    collects: [
      signedCollect,
      { collect: { ...collect, replica: 3, acceptedRegency: -1, acceptedDigest: null, writeSet: [] }, signature },
    ],
    lastDecision: decision,
    batch: encodedBatch,
  },
  HEARTBEAT: { type: MessageType.HEARTBEAT, view: 1, regency: 3, lastDecidedCid: 16 },
  DECISION_REQUEST: { type: MessageType.DECISION_REQUEST, view: 1, fromCid: 9 },
  DECISION: { type: MessageType.DECISION, view: 1, decision },
  DECISIONS_PRUNED: { type: MessageType.DECISIONS_PRUNED, view: 1, oldestRetainedCid: 120, checkpointCid: 99 },
  CHECKPOINT_REQUEST: { type: MessageType.CHECKPOINT_REQUEST, view: 1, minCid: 0 },
  CHECKPOINT_OFFER: {
    type: MessageType.CHECKPOINT_OFFER,
    view: 1,
    offers: [
      {
        cid: 99,
        viewNumber: 1,
        parts: [
          { code: 1, bytes: 5000 },
          { code: 2, bytes: 300 },
          { code: 3, bytes: 100 },
        ],
        totalBytes: 5400,
        chunkBytes: 4096,
        chunkHashes: bytesOf(64),
        signature,
      },
    ],
  },
  CHUNK_REQUEST: { type: MessageType.CHUNK_REQUEST, view: 1, cid: 99, index: 1 },
  CHUNK: { type: MessageType.CHUNK, view: 1, cid: 99, index: 1, bytes: bytesOf(1304) },
  REQUEST: { type: MessageType.REQUEST, request: request(8) },
  REPLY: { type: MessageType.REPLY, view: 1, clientId: 'client-1', seq: 8, result: bytesOf(40) },
  REPLY_DIGEST: { type: MessageType.REPLY_DIGEST, view: 1, clientId: 'client-1', seq: 8, resultDigest: bytesOf(32) },
  BUSY: { type: MessageType.BUSY, clientId: 'client-1', seq: 9, reason: BusyReason.CLIENT_IN_FLIGHT_FULL },
  VIEW_REQUEST: { type: MessageType.VIEW_REQUEST, clientId: 'client-1/2' },
  VIEW_REPLY: {
    type: MessageType.VIEW_REPLY,
    clientId: 'client-1/2',
    view: { number: 3, mode: 'bft', f: 1, members: [0, 1, 2, 3].map((id) => ({ id, host: `replica-${id}.demo`, port: 7000, adminPort: 8000, publicKey: new Uint8Array(32).fill(id) })) },
  },
} satisfies Record<keyof typeof MessageType, Message>;
const sampleEntries: [string, Message][] = Object.entries(samples);

/** Bytes as hex, so that Buffer and Uint8Array compare equal and failures print readably. */
function plain(value: unknown): unknown {
  if (value instanceof Uint8Array) return `bytes:${Buffer.from(value).toString('hex')}`;
  if (Array.isArray(value)) return value.map(plain);
  if (typeof value === 'object' && value !== null) {
    return Object.fromEntries(Object.entries(value).map(([key, field]) => [key, plain(field)]));
  }
  return value;
}

/** A copy of `value` with the field at `path` replaced (or removed, for undefined). */
function withField(value: unknown, path: readonly (string | number)[], replacement: unknown): unknown {
  if (path.length === 0) return replacement;
  const [head, ...rest] = path as [string | number, ...(string | number)[]];
  const copy = (Array.isArray(value) ? [...value] : { ...(value as object) }) as Record<string | number, unknown>;
  if (rest.length === 0 && replacement === undefined) delete copy[head];
  else copy[head] = withField(copy[head], rest, replacement);
  return copy;
}

/** Paths of every leaf (non-container field), arrays included as leaves too. */
function leafPaths(value: unknown, path: (string | number)[] = []): (string | number)[][] {
  if (value instanceof Uint8Array || typeof value !== 'object' || value === null) return [path];
  const own = Array.isArray(value) ? [path] : [];
  const entries: [string | number, unknown][] = Array.isArray(value)
    ? value.map((item, index) => [index, item])
    : Object.entries(value);
  // The top-level type is the dispatch key, tested on its own.
  const fields = entries.filter(([key]) => path.length > 0 || key !== 'type');
  return [...own, ...fields.flatMap(([key, field]) => leafPaths(field, [...path, key]))];
}

function fieldAt(value: unknown, path: readonly (string | number)[]): unknown {
  return path.reduce<unknown>((node, key) => (node as Record<string | number, unknown>)[key], value);
}

function expectRejected(result: ReturnType<typeof decodeMessage>, reason: string): void {
  expect(result.ok ? 'accepted' : result.reason, result.ok ? '' : result.detail).toBe(reason);
}

function expectAccepted(result: ReturnType<typeof decodeMessage>): void {
  expect(result.ok ? 'accepted' : `${result.reason}: ${result.detail}`).toBe('accepted');
}

function many<T>(count: number, item: (index: number) => T): T[] {
  return Array.from({ length: count }, (_, index) => item(index));
}

const nullableFields = new Set(['signature', 'acceptedDigest', 'lastDecision']);
const minusOneAllowed = new Set(['acceptedRegency', 'lastDecidedCid', 'oldestRetainedCid', 'checkpointCid']);

// --- Round trips -------------------------------------------------------------------------------------

describe('round trip', () => {
  it.each(sampleEntries)('%s decodes to what was encoded', (_name, message) => {
    const result = decodeMessage(encodeMessage(message));
    expectAccepted(result);
    expect(result.ok && plain(result.message)).toEqual(plain(message));
  });

  it('covers every message type', () => {
    expect(sampleEntries.map(([, message]) => message.type).sort((a, b) => a - b)).toEqual(
      Object.values(MessageType).sort((a, b) => a - b),
    );
  });

  it('a batch decodes to what was encoded', () => {
    const result = decodeBatch(encodedBatch);
    expect(result.ok && plain(result.batch)).toEqual(plain(batchValue));
  });

  it('an empty batch, nulls and -1 survive', () => {
    expect(decodeBatch(encodeBatch({ requests: [] }))).toEqual({ ok: true, batch: { requests: [] } });
    const heartbeat = { type: MessageType.HEARTBEAT, view: 0, regency: 0, lastDecidedCid: -1 } as const;
    expect(decodeMessage(encodeMessage(heartbeat))).toEqual({ ok: true, message: heartbeat });
  });

  it('encodes plain msgpack that a stock decoder reads', () => {
    const stock = new Packr({ useRecords: false, mapsAsObjects: true });
    const decoded: unknown = stock.unpack(Buffer.from(encodeMessage(samples.WRITE)));
    expect(plain(decoded)).toEqual(plain(samples.WRITE));
  });

  it('decodes what a stock encoder writes (map16 headers everywhere)', () => {
    const stock = new Packr({ useRecords: false });
    for (const [, message] of sampleEntries) {
      const result = decodeMessage(stock.pack(message));
      expect(result.ok && plain(result.message)).toEqual(plain(message));
    }
  });

  it('decoded bytes are views of the frame (so frames must never be reused: the transport hands over owned frames)', () => {
    const frame = Buffer.from(encodeMessage(samples.ACCEPT));
    const result = decodeMessage(frame);
    expect(result.ok && plain(result.message)).toEqual(plain(samples.ACCEPT));
    const signature = result.ok && result.message.type === MessageType.ACCEPT ? result.message.signature : null;
    expect(signature?.buffer).toBe(frame.buffer);
  });

  it('accepts integers as other encoders write them: uint64, int64 and integral floats', () => {
    // {type: 8 (uint64), view: 1 (int64), regency: 2.0 (float64), lastDecidedCid: -1 (int64)}
    const header = Buffer.from([0x84]);
    const key = (name: string) => Buffer.concat([Buffer.from([0xa0 | name.length]), Buffer.from(name)]);
    const number = (token: number, write: (buffer: Buffer) => void) => {
      const buffer = Buffer.alloc(9);
      buffer[0] = token;
      write(buffer);
      return buffer;
    };
    const uint64 = (value: number) => number(0xcf, (buffer) => buffer.writeBigUInt64BE(BigInt(value), 1));
    const int64 = (value: number) => number(0xd3, (buffer) => buffer.writeBigInt64BE(BigInt(value), 1));
    const float64 = (value: number) => number(0xcb, (buffer) => buffer.writeDoubleBE(value, 1));
    const frame = (regency: Buffer) =>
      Buffer.concat([
        ...[header, key('type'), uint64(8), key('view'), int64(1)],
        ...[key('regency'), regency, key('lastDecidedCid'), int64(-1)],
      ]);
    expect(decodeMessage(frame(float64(2)))).toEqual({
      ok: true,
      message: { type: MessageType.HEARTBEAT, view: 1, regency: 2, lastDecidedCid: -1 },
    });
    expect(decodeMessage(frame(uint64(Number.MAX_SAFE_INTEGER))).ok).toBe(true);
    expectRejected(decodeMessage(frame(uint64(Number.MAX_SAFE_INTEGER + 1))), DropReason.SCHEMA);
    expectRejected(decodeMessage(frame(float64(2.5))), DropReason.SCHEMA);
  });
});

// --- Validation --------------------------------------------------------------------------------------

describe('validateMessage', () => {
  it.each([null, undefined, 5, 'WRITE', true, [], [2], new Uint8Array(4)])('refuses a non-map: %s', (value) => {
    expect(validateMessage(value)).toMatchObject({ ok: false, reason: DropReason.SCHEMA });
  });

  it.each([undefined, null, 0, 16, 31, 38, 255, -1, 1.5, Number.NaN, '2', [2], { type: 2 }])(
    'refuses an unknown type: %s',
    (type) => {
      expect(validateMessage({ ...samples.WRITE, type })).toMatchObject({ ok: false, reason: DropReason.UNKNOWN_TYPE });
    },
  );

  it('refuses type codes that name Object.prototype members', () => {
    for (const type of ['constructor', '__proto__', 'toString', 'hasOwnProperty']) {
      expect(validateMessage({ type })).toMatchObject({ ok: false, reason: DropReason.UNKNOWN_TYPE });
    }
  });

  it('names the path of the first bad field', () => {
    const tooLong = [{ regency: 1, digest: new Uint8Array(65) }];
    const sync = withField(samples.SYNC, ['collects', 1, 'collect', 'writeSet'], tooLong);
    expect(validateMessage(sync)).toEqual({
      ok: false,
      reason: DropReason.SCHEMA,
      detail: `SYNC.collects.1.collect.writeSet.0.digest: expected 1..${limits.digestBytesMax} bytes`,
    });
  });

  describe.each(sampleEntries)('%s', (_name, message) => {
    const paths = leafPaths(message);

    it('refuses a wrong type in every field', () => {
      for (const path of paths) {
        const sampleField = fieldAt(message, path);
        const key = String(path[path.length - 1]);
        const wrong: unknown[] = [{}, [7]];
        if (typeof sampleField !== 'string') wrong.push('seven');
        if (!nullableFields.has(key)) wrong.push(null, undefined);
        if (sampleField === null) wrong.push(7, true, undefined);
        else if (typeof sampleField === 'number') {
          wrong.push(1.5, minusOneAllowed.has(key) ? -2 : -1, 2 ** 53, Number.NaN, Infinity, '1', true, bytesOf(1));
        }
        else if (typeof sampleField === 'string') wrong.push(7, bytesOf(3), true);
        else if (typeof sampleField === 'boolean') wrong.push(0, 1, 'true');
        else if (sampleField instanceof Uint8Array) wrong.push(7, [1, 2, 3], new Uint16Array(4), 'abcd');
        else if (Array.isArray(sampleField)) wrong.push(bytesOf(2), 3, { 0: sampleField[0], length: 1 });
        else wrong.push(7, bytesOf(2));
        for (const value of wrong) {
          const mutated = withField(message, path, value);
          const where = `${path.join('.')} = ${String(value)}`;
          expect(validateMessage(mutated), where).toMatchObject({ ok: false, reason: DropReason.SCHEMA });
          // The same through the wire, where undefined and NaN take their msgpack forms. (Any typed array
          // goes on the wire as bin, so a Uint16Array arrives as valid bytes: only validateMessage sees it.)
          if (value instanceof Uint16Array) continue;
          const viaWire = decodeMessage(encodeMessage(mutated as Message));
          expect(viaWire, `${where} via the wire`).toMatchObject({ ok: false, reason: DropReason.SCHEMA });
        }
      }
    });

    it('strips unknown keys and returns fresh objects', () => {
      const withExtras = { ...message, extra: 'x', constructor: 'y', prototype: { polluted: true } };
      const result = validateMessage(withExtras);
      expect(result.ok).toBe(true);
      if (!result.ok) return;
      expect(Object.keys(result.message).sort()).toEqual(Object.keys(message).sort());
      expect(result.message).not.toBe(withExtras);
      expect(Object.getPrototypeOf(result.message)).toBe(Object.prototype);
    });
  });

  it('bounds integers: safe, non-negative, -1 only where "none" is meant, seq from 1', () => {
    const accepts = (value: unknown) => validateMessage(value).ok;
    expect(accepts({ ...samples.WRITE, cid: Number.MAX_SAFE_INTEGER })).toBe(true);
    expect(accepts({ ...samples.WRITE, cid: Number.MAX_SAFE_INTEGER + 1 })).toBe(false);
    expect(accepts({ ...samples.WRITE, cid: 0, view: 0, regency: 0 })).toBe(true);
    for (const field of ['view', 'cid', 'regency']) expect(accepts({ ...samples.WRITE, [field]: -1 })).toBe(false);
    expect(accepts({ ...samples.HEARTBEAT, lastDecidedCid: -1 })).toBe(true);
    expect(accepts({ ...samples.HEARTBEAT, lastDecidedCid: -2 })).toBe(false);
    expect(accepts(withField(samples.SYNC, ['collects', 0, 'collect', 'acceptedRegency'], -1))).toBe(true);
    expect(accepts(withField(samples.SYNC, ['collects', 0, 'collect', 'acceptedRegency'], -2))).toBe(false);
    expect(accepts(withField(samples.SYNC, ['collects', 0, 'collect', 'replica'], -1))).toBe(false);
    expect(accepts(withField(samples.DECISION, ['decision', 'votes', 0, 'replica'], -1))).toBe(false);
    expect(accepts({ ...samples.DECISION_REQUEST, fromCid: -1 })).toBe(false);
    expect(accepts(withField(samples.REQUEST, ['request', 'seq'], 1))).toBe(true);
    expect(accepts(withField(samples.REQUEST, ['request', 'seq'], 0))).toBe(false);
    expect(accepts({ ...samples.REPLY, seq: 0 })).toBe(false);
    expect(accepts({ ...samples.BUSY, seq: 0 })).toBe(false);
  });

  it('accepts only the known BUSY reasons', () => {
    for (const reason of Object.values(BusyReason)) expect(validateMessage({ ...samples.BUSY, reason }).ok).toBe(true);
    for (const reason of ['', 'busy', 'PENDING_FULL', 0]) {
      expect(validateMessage({ ...samples.BUSY, reason }).ok).toBe(false);
    }
  });

  it('validateBatch refuses what is not a batch', () => {
    expect(validateBatch(batchValue).ok).toBe(true);
    for (const value of [null, [], {}, { requests: {} }, { requests: [{}] }, samples.PROPOSE]) {
      expect(validateBatch(value)).toMatchObject({ ok: false, reason: DropReason.SCHEMA });
    }
  });
});

// --- Limits ------------------------------------------------------------------------------------------

describe('limits', () => {
  /** `message` with the field at `path` set to `make(size)` decodes at `limit` and is dropped at `limit + 1`. */
  function expectLimit(
    limit: number,
    message: Message,
    path: readonly (string | number)[],
    make: (size: number) => unknown,
  ): void {
    const build = (size: number) => encodeMessage(withField(message, path, make(size)) as Message);
    expectAccepted(decodeMessage(build(limit)));
    expectRejected(decodeMessage(build(limit + 1)), DropReason.SCHEMA);
  }
  const collectPath = ['collects', 0, 'collect'];
  const requestOf = (count: number) => many(count, (index) => request(index + 1, 4));

  it('digest: 1 to digestBytesMax bytes', () => {
    expectLimit(limits.digestBytesMax, samples.WRITE, ['digest'], bytesOf);
    expectLimit(limits.digestBytesMax, samples.SYNC, [...collectPath, 'acceptedDigest'], bytesOf);
    expectLimit(limits.digestBytesMax, samples.SYNC, [...collectPath, 'writeSet', 1, 'digest'], bytesOf);
    expectRejected(decodeMessage(encodeMessage({ ...samples.ACCEPT, digest: new Uint8Array(0) })), DropReason.SCHEMA);
  });

  it('signature: 1 to signatureBytesMax bytes, wherever it appears', () => {
    expectLimit(limits.signatureBytesMax, samples.ACCEPT, ['signature'], bytesOf);
    expectLimit(limits.signatureBytesMax, samples.REQUEST, ['request', 'signature'], bytesOf);
    expectLimit(limits.signatureBytesMax, samples.DECISION, ['decision', 'votes', 2, 'signature'], bytesOf);
    expectLimit(limits.signatureBytesMax, samples.STOPDATA, ['collect', 'signature'], bytesOf);
    const unsigned = { ...samples.ACCEPT, signature: new Uint8Array(0) };
    expectRejected(decodeMessage(encodeMessage(unsigned)), DropReason.SCHEMA);
  });

  it('operation: up to operationBytesMax bytes, empty allowed', () => {
    expectLimit(limits.operationBytesMax, samples.REQUEST, ['request', 'operation'], bytesOf);
    expectLimit(limits.operationBytesMax, samples.STOP, ['requests', 0, 'operation'], bytesOf);
    const empty = withField(samples.REQUEST, ['request', 'operation'], new Uint8Array(0)) as Message;
    expectAccepted(decodeMessage(encodeMessage(empty)));
  });

  it('reply result: up to resultBytesMax bytes', () => {
    expectLimit(limits.resultBytesMax, samples.REPLY, ['result'], bytesOf);
  });

  it('clientId: 1 to clientIdLengthMax characters', () => {
    expectLimit(limits.clientIdLengthMax, samples.REQUEST, ['request', 'clientId'], (size) => 'c'.repeat(size));
    expectLimit(limits.clientIdLengthMax, samples.REPLY, ['clientId'], (size) => 'é'.repeat(size));
    expectLimit(limits.clientIdLengthMax, samples.BUSY, ['clientId'], (size) => 'c'.repeat(size));
    expectRejected(decodeMessage(encodeMessage({ ...samples.BUSY, clientId: '' })), DropReason.SCHEMA);
  });

  it('batch bytes: up to batchBytesMax in PROPOSE, SYNC, STOPDATA values and decisions', () => {
    const large = bytesOf(limits.batchBytesMax + 1);
    const ofSize = (size: number) => large.subarray(0, size);
    const withoutDecision = (message: Message) => ({ ...message, lastDecision: null }) as Message;
    expectLimit(limits.batchBytesMax, samples.PROPOSE, ['batch'], ofSize);
    expectLimit(limits.batchBytesMax, withoutDecision(samples.SYNC), ['batch'], ofSize);
    expectLimit(limits.batchBytesMax, withoutDecision(samples.STOPDATA), ['values', 1], ofSize);
    expectLimit(limits.batchBytesMax, samples.DECISION, ['decision', 'batch'], ofSize);
    expectRejected(decodeMessage(encodeMessage({ ...samples.PROPOSE, batch: new Uint8Array(0) })), DropReason.SCHEMA);
  });

  it('requests per FORWARD and STOP: up to requestsPerMessageMax', () => {
    expectLimit(limits.requestsPerMessageMax, samples.FORWARD, ['requests'], requestOf);
    expectLimit(limits.requestsPerMessageMax, samples.STOP, ['requests'], requestOf);
  });

  it('votes and collects: up to membersMax', () => {
    const votes = (count: number) => many(count, (replica) => ({ replica, signature }));
    expectLimit(limits.membersMax, samples.DECISION, ['decision', 'votes'], votes);
    expectLimit(limits.membersMax, samples.SYNC, ['collects'], (count) => many(count, () => signedCollect));
  });

  it('write set: up to writeSetMax; STOPDATA values: up to writeSetMax + 1', () => {
    const writeSet = (count: number) => many(count, (regency) => ({ regency, digest }));
    expectLimit(limits.writeSetMax, samples.STOPDATA, ['collect', 'collect', 'writeSet'], writeSet);
    expectLimit(limits.writeSetMax, samples.SYNC, [...collectPath, 'writeSet'], writeSet);
    expectLimit(limits.writeSetMax + 1, samples.STOPDATA, ['values'], (count) => many(count, () => encodedBatch));
  });

  it('batch requests: up to batchRequestsMax', () => {
    const ofCount = (count: number) => encodeBatch({ requests: many(count, (index) => request(index + 1, 0)) });
    expect(decodeBatch(ofCount(limits.batchRequestsMax)).ok).toBe(true);
    expect(decodeBatch(ofCount(limits.batchRequestsMax + 1))).toMatchObject({ ok: false, reason: DropReason.SCHEMA });
  });

  /** Grows the last operation until the encoding is exactly `bytes` long. */
  function requestsEncodingTo(bytes: number, build: (requests: ClientRequest[]) => Uint8Array): Uint8Array {
    const count = Math.round(bytes / limits.operationBytesMax);
    const requests = many(count, (index) => request(index + 1, limits.operationBytesMax));
    let lastOperationBytes = limits.operationBytesMax;
    for (let attempt = 0; attempt < 4; attempt += 1) {
      requests[requests.length - 1] = request(requests.length, lastOperationBytes);
      const encoded = build(requests);
      if (encoded.length === bytes) return encoded;
      lastOperationBytes += bytes - encoded.length;
    }
    throw new Error(`cannot reach ${bytes} bytes`);
  }

  it('frame: messageBytesMax accepted, one more byte is FRAME_TOO_LARGE before decoding', () => {
    const atLimit = requestsEncodingTo(limits.messageBytesMax, (requests) =>
      encodeMessage({ type: MessageType.FORWARD, view: 1, requests }),
    );
    expectAccepted(decodeMessage(atLimit));
    const overLimit = requestsEncodingTo(limits.messageBytesMax + 1, (requests) =>
      encodeMessage({ type: MessageType.FORWARD, view: 1, requests }),
    );
    expectRejected(decodeMessage(overLimit), DropReason.FRAME_TOO_LARGE);
    expectRejected(decodeMessage(new Uint8Array(limits.messageBytesMax + 1).fill(0xc1)), DropReason.FRAME_TOO_LARGE);
  });

  it('batch: batchBytesMax accepted, one more byte is FRAME_TOO_LARGE', () => {
    const atLimit = requestsEncodingTo(limits.batchBytesMax, (requests) => encodeBatch({ requests }));
    expect(decodeBatch(atLimit).ok).toBe(true);
    const overLimit = requestsEncodingTo(limits.batchBytesMax + 1, (requests) => encodeBatch({ requests }));
    expect(decodeBatch(overLimit)).toMatchObject({ ok: false, reason: DropReason.FRAME_TOO_LARGE });
  });
});

// --- Wire format -------------------------------------------------------------------------------------

describe('replies by digest', () => {
  it('a REQUEST asking for a digest reply round-trips, and the flag is a boolean', () => {
    const asking: Message = { type: MessageType.REQUEST, request: request(8), replyWithDigest: true };
    const decoded = decodeMessage(encodeMessage(asking));
    expect(plain(decoded.ok && decoded.message)).toEqual(plain(asking));
    expectRejected(decodeMessage(new Packr({ useRecords: false }).pack({ ...asking, replyWithDigest: 1 })), DropReason.SCHEMA);
  });

  it('a REPLY_DIGEST carries exactly 32 bytes of digest', () => {
    for (const length of [0, 31, 33, 64]) {
      const digest = { ...samples.REPLY_DIGEST, resultDigest: bytesOf(length) };
      expectRejected(decodeMessage(new Packr({ useRecords: false }).pack(digest)), DropReason.SCHEMA);
    }
  });

  it("a REPLY ends with the result's bytes, which the service worker hands over as a view of the frame", () => {
    for (const length of [0, 1, 31, 32, 255, 256, 1024, 65_535, 65_536, 100_000]) {
      const result = Uint8Array.from({ length }, (_, i) => (i * 7 + 1) & 0xff);
      const frame = encodeMessage({ type: MessageType.REPLY, view: 3, clientId: 'client-1/7', seq: 12, result });
      expect(Buffer.from(frame.subarray(frame.length - length)).equals(Buffer.from(result))).toBe(true);
    }
  });
});

describe('wire format', () => {
  const write = encodeMessage(samples.WRITE);

  it('refuses empty input, every truncation and trailing bytes', () => {
    expectRejected(decodeMessage(new Uint8Array(0)), DropReason.UNDECODABLE);
    for (const [, message] of sampleEntries) {
      const encoded = encodeMessage(message);
      for (let length = 0; length < encoded.length; length += 1) {
        expectRejected(decodeMessage(encoded.subarray(0, length)), DropReason.UNDECODABLE);
      }
      expectRejected(decodeMessage(Buffer.concat([encoded, Buffer.from([0])])), DropReason.UNDECODABLE);
    }
  });

  it('refuses two values in one frame', () => {
    expectRejected(decodeMessage(Buffer.concat([write, write])), DropReason.UNDECODABLE);
    const twoBatches = Buffer.concat([encodedBatch, encodedBatch]);
    expect(decodeBatch(twoBatches)).toMatchObject({ ok: false, reason: DropReason.UNDECODABLE });
  });

  it('refuses msgpackr records and every extension type', () => {
    expectRejected(decodeMessage(new Packr({ useRecords: true }).pack(samples.WRITE)), DropReason.UNDECODABLE);
    const moreTypes = new Packr({ useRecords: false, moreTypes: true });
    const extensionValues = [new Date(0), new Set([1]), new Map([[1, 2]]), new Uint16Array(2), /a+/, 10n ** 30n];
    for (const value of extensionValues) {
      expectRejected(decodeMessage(moreTypes.pack({ ...samples.WRITE, digest: value })), DropReason.UNDECODABLE);
    }
    for (const token of [0xc7, 0xc8, 0xc9, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8]) {
      expectRejected(decodeMessage(Uint8Array.of(token, 0, 0, 0, 0, 0, 0, 0)), DropReason.UNDECODABLE);
    }
    expectRejected(decodeMessage(Uint8Array.of(0xc1)), DropReason.UNDECODABLE);
  });

  it('refuses maps with keys that are not strings', () => {
    const mapPackr = new Packr({ useRecords: false, mapsAsObjects: false });
    const numericKey = mapPackr.pack(new Map<unknown, unknown>([[1, 2], ['type', 2]]));
    expectRejected(decodeMessage(numericKey), DropReason.UNDECODABLE);
  });

  it('refuses containers larger or deeper than any message has, before building them', () => {
    // An array32 header claiming 4 billion entries, with nothing behind it.
    expectRejected(decodeMessage(Uint8Array.of(0xdd, 0xff, 0xff, 0xff, 0xff)), DropReason.SCHEMA);
    expectRejected(decodeMessage(Uint8Array.of(0xdf, 0xff, 0xff, 0xff, 0xff)), DropReason.SCHEMA);
    let nested: unknown = samples.WRITE;
    for (let depth = 0; depth < limits.messageNestingDepthMax; depth += 1) nested = [nested];
    const tooDeep = decodeMessage(encodeMessage(nested as Message));
    expect(tooDeep).toEqual({ ok: false, reason: DropReason.SCHEMA, detail: 'nested too deeply' });
    const extras = Object.fromEntries(many(limits.messageMapEntriesMax - 5, (i) => [`x${i}`, i]));
    expectAccepted(decodeMessage(encodeMessage({ ...samples.WRITE, ...extras })));
    const overfull = { ...samples.WRITE, ...extras, oneTooMany: 1 };
    expectRejected(decodeMessage(encodeMessage(overfull)), DropReason.SCHEMA);
  });

  it('strips __proto__ and other unknown keys, at every level, and pollutes nothing', () => {
    const hostile = JSON.parse(
      '{"__proto__": {"polluted": true, "type": 3}, "constructor": {"prototype": {"polluted": true}}, "extra": 1}',
    ) as Record<string, unknown>;
    const message = {
      ...hostile,
      ...samples.STOPDATA,
      collect: { ...hostile, ...signedCollect, collect: { ...hostile, ...collect } },
    } as unknown as Message;
    const encoded = encodeMessage(message);
    expect(Buffer.from(encoded).includes('__proto__')).toBe(true);
    const result = decodeMessage(encoded);
    expectAccepted(result);
    if (!result.ok) return;
    expect(plain(result.message)).toEqual(plain(samples.STOPDATA));
    const stopData = result.message as typeof samples.STOPDATA & { collect: SignedCollect };
    for (const object of [result.message, stopData.collect, stopData.collect.collect]) {
      expect(Object.getPrototypeOf(object)).toBe(Object.prototype);
      expect(Object.hasOwn(object, '__proto__') || Object.hasOwn(object, '__proto_')).toBe(false);
    }
    expect(({} as Record<string, unknown>)['polluted']).toBeUndefined();
  });

  it('fuzz: random, truncated, mutated and spliced frames never throw', () => {
    const random = mulberry32(0x5eed);
    const corpus = [...sampleEntries.map(([, message]) => encodeMessage(message)), encodedBatch];
    const pick = <T,>(items: readonly T[]): T => items[Math.floor(random() * items.length)] as T;
    const randomBytes = (length: number) => Uint8Array.from({ length }, () => Math.floor(random() * 256));
    const outcomes = new Map<string, number>();
    const reasons = new Set<string>(Object.values(DropReason));
    const inputCount = 24_000;
    for (let i = 0; i < inputCount; i += 1) {
      const base = pick(corpus);
      let input: Uint8Array;
      switch (i % 6) {
        case 0:
          input = randomBytes(Math.floor(random() * 300));
          break;
        case 1:
          input = base.subarray(0, Math.floor(random() * base.length));
          break;
        case 2:
        case 3: {
          input = Uint8Array.from(base);
          const mutations = 1 + Math.floor(random() * 3);
          for (let m = 0; m < mutations; m += 1) {
            input[Math.floor(random() * input.length)] = Math.floor(random() * 256);
          }
          break;
        }
        case 4: {
          const other = pick(corpus);
          const head = base.subarray(0, Math.floor(random() * base.length));
          input = Buffer.concat([head, other.subarray(Math.floor(random() * other.length))]);
          break;
        }
        default: {
          // Insert or delete a run, which shifts every length field after it.
          const at = Math.floor(random() * base.length);
          const run = randomBytes(1 + Math.floor(random() * 8));
          input = random() < 0.5
            ? Buffer.concat([base.subarray(0, at), run, base.subarray(at)])
            : Buffer.concat([base.subarray(0, at), base.subarray(Math.min(base.length, at + run.length))]);
        }
      }
      const result = (i % 12 === 11 ? decodeBatch : decodeMessage)(input);
      if (result.ok) {
        outcomes.set('ok', (outcomes.get('ok') ?? 0) + 1);
        // Whatever was accepted is a well-formed value: it re-encodes and decodes to itself.
        if ('message' in result) {
          const again = decodeMessage(encodeMessage(result.message));
          expect(again.ok && plain(again.message)).toEqual(plain(result.message));
        }
      } else {
        expect(reasons.has(result.reason)).toBe(true);
        expect(typeof result.detail).toBe('string');
        expect(result.detail.length).toBeLessThanOrEqual(200);
        outcomes.set(result.reason, (outcomes.get(result.reason) ?? 0) + 1);
      }
    }
    const total = [...outcomes.values()].reduce((sum, count) => sum + count, 0);
    expect(total).toBe(inputCount);
    // The mix exercises every stage: some inputs survive mutation, others fail each check.
    expect(outcomes.get('ok') ?? 0).toBeGreaterThan(100);
    expect(outcomes.get(DropReason.UNDECODABLE) ?? 0).toBeGreaterThan(1000);
    expect(outcomes.get(DropReason.SCHEMA) ?? 0).toBeGreaterThan(100);
    expect(outcomes.get(DropReason.UNKNOWN_TYPE) ?? 0).toBeGreaterThan(10);
  });
});

// --- Signing payloads --------------------------------------------------------------------------------

describe('signing payloads', () => {
  const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString('hex');

  it('are deterministic, whatever kind of byte array carries the digest', () => {
    const framed = Buffer.concat([Buffer.alloc(7), Buffer.from(digest), Buffer.alloc(5)]);
    const asView = framed.subarray(7, 7 + digest.length);
    const expected = hex(acceptSigningPayload(1, 17, 3, digest));
    for (const variant of [digest, Buffer.from(digest), asView, Uint8Array.from(digest)]) {
      expect(hex(acceptSigningPayload(1, 17, 3, variant))).toBe(expected);
    }
    expect(hex(collectSigningPayload(collect))).toBe(hex(collectSigningPayload(structuredClone(collect))));
    const signed = request(8);
    const copied = { ...signed, operation: Buffer.from(signed.operation) };
    expect(hex(requestSigningPayload(signed))).toBe(hex(requestSigningPayload(copied)));
  });

  it('do not depend on key order or unrelated fields', () => {
    const reordered: Collect = {
      writeSet: collect.writeSet.map(({ digest: d, regency }) => ({ digest: d, regency })),
      acceptedDigest: collect.acceptedDigest,
      acceptedRegency: collect.acceptedRegency,
      cid: collect.cid,
      regency: collect.regency,
      view: collect.view,
      replica: collect.replica,
    };
    expect(hex(collectSigningPayload(reordered))).toBe(hex(collectSigningPayload(collect)));
    const unsigned = { ...request(8), signature: null };
    expect(hex(requestSigningPayload(unsigned))).toBe(hex(requestSigningPayload({ ...unsigned, signature })));
  });

  it('change with every signed field', () => {
    const accept = hex(acceptSigningPayload(1, 17, 3, digest));
    for (const changed of [
      acceptSigningPayload(2, 17, 3, digest),
      acceptSigningPayload(1, 18, 3, digest),
      acceptSigningPayload(1, 17, 4, digest),
      acceptSigningPayload(1, 17, 3, otherDigest),
      acceptSigningPayload(17, 1, 3, digest),
    ]) {
      expect(hex(changed)).not.toBe(accept);
    }
    const base = hex(collectSigningPayload(collect));
    const collectVariants: Collect[] = [
      { ...collect, replica: 3 },
      { ...collect, view: 2 },
      { ...collect, regency: 5 },
      { ...collect, cid: 18 },
      { ...collect, acceptedRegency: -1 },
      { ...collect, acceptedDigest: null },
      { ...collect, acceptedDigest: otherDigest },
      { ...collect, writeSet: collect.writeSet.slice(1) },
      { ...collect, writeSet: [...collect.writeSet].reverse() },
    ];
    for (const variant of collectVariants) expect(hex(collectSigningPayload(variant))).not.toBe(base);
    const requestBase = request(8);
    const requestPayload = hex(requestSigningPayload(requestBase));
    for (const variant of [
      { ...requestBase, clientId: 'client-2' },
      { ...requestBase, seq: 9 },
      { ...requestBase, ordered: !requestBase.ordered },
      { ...requestBase, operation: bytesOf(24, 99) },
    ]) {
      expect(hex(requestSigningPayload(variant))).not.toBe(requestPayload);
    }
  });

  it('never coincide across domains', () => {
    const random = mulberry32(42);
    const integer = () => Math.floor(random() * 2 ** (random() < 0.5 ? 8 : 40));
    const randomDigest = () =>
      Uint8Array.from({ length: 1 + Math.floor(random() * 64) }, () => Math.floor(random() * 256));
    const stock = new Packr({ useRecords: false, mapsAsObjects: true });
    const seen = new Map<string, string>();
    for (let i = 0; i < 3000; i += 1) {
      const view = integer();
      const cid = integer();
      const regency = integer();
      const d = randomDigest();
      const payloads: [string, Uint8Array][] = [
        ['accept', acceptSigningPayload(view, cid, regency, d)],
        ['collect', collectSigningPayload({ ...collect, view, regency, cid, acceptedRegency: regency, acceptedDigest: d })],
        ['collect', collectSigningPayload({ ...collect, cid, acceptedDigest: null, writeSet: [{ regency, digest: d }] })],
        ['request', requestSigningPayload({ clientId: String(view), seq: cid + 1, ordered: true, operation: d, signature })],
      ];
      for (const [domain, payload] of payloads) {
        const key = hex(payload);
        const previous = seen.get(key);
        if (previous !== undefined) expect(previous).toBe(domain);
        seen.set(key, domain);
        const decoded = stock.unpack(Buffer.from(payload)) as unknown[];
        expect(decoded[0]).toBe(signingDomain[domain.toUpperCase() as keyof typeof signingDomain]);
      }
    }
    expect(new Set(Object.values(signingDomain)).size).toBe(Object.keys(signingDomain).length);
  });
});
