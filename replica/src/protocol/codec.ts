// The wire codec: plain msgpack (maps with string keys, arrays, bin, str, integers, nil, booleans), no
// msgpackr records or extensions, so that any msgpack implementation can speak to a replica.
//
// Decoding untrusted bytes goes: size check → structural scan → msgpackr → schema. The scan is ours
// because msgpackr decodes every extension it knows (records, Error, RegExp, Set, typed arrays, bigints,
// dates) whatever the options, builds whatever array length a header claims, recurses without a bound,
// and on trailing bytes JSON-stringifies the whole decoded value into its error message. The scan refuses
// all of that in one pass over the tokens without allocating, so msgpackr only ever sees a single, plain,
// bounded value.

import { Packr } from 'msgpackr';
import { limits } from '../constants.ts';
import type { Batch, Bytes, ClientRequest, Collect, Message } from './messages.ts';
import { DropReason } from './reasons.ts';
import { type BatchResult, type MessageResult, type Rejection, validateBatch, validateMessage } from './validate.ts';

export { plainMsgpackOptions } from './msgpack-options.ts';
import { plainMsgpackOptions } from './msgpack-options.ts';

const packr = new Packr(plainMsgpackOptions);

// --- Structural scan ---------------------------------------------------------------------------------

/** No array in any message or batch is longer than this, so a longer header is refused before decoding. */
const arrayLengthMax = Math.max(
  limits.batchRequestsMax,
  limits.requestsPerMessageMax,
  limits.membersMax,
  limits.writeSetMax + 1,
);

// Values still expected in each open container, and whether it is a map (then the even-numbered ones
// are keys). Preallocated: decoding is synchronous, so one scan runs at a time.
const valuesRemainingAtDepth = new Int32Array(limits.messageNestingDepthMax + 1);
const isMapAtDepth = new Uint8Array(limits.messageNestingDepthMax + 1);

const extensionType = -1;
const neverUsed = -2;
/**
 * For each token from 0xc0: how many bytes follow it before any payload (the length field or the fixed
 * value), or extensionType / neverUsed.
 */
const headerBytesFromC0 = [
  0, neverUsed, 0, 0, // nil, (never used), false, true
  1, 2, 4, // bin 8/16/32
  extensionType, extensionType, extensionType, // ext 8/16/32
  4, 8, // float 32/64
  1, 2, 4, 8, // uint 8/16/32/64
  1, 2, 4, 8, // int 8/16/32/64
  extensionType, extensionType, extensionType, extensionType, extensionType, // fixext 1/2/4/8/16
  1, 2, 4, // str 8/16/32
  2, 4, // array 16/32
  2, 4, // map 16/32
];

function undecodable(detail: string): Rejection {
  return { ok: false, reason: DropReason.UNDECODABLE, detail };
}

/** Well-formed msgpack that no schema could accept: refused before it is built in memory. */
function tooLarge(detail: string): Rejection {
  return { ok: false, reason: DropReason.SCHEMA, detail };
}

/**
 * Why bytes are not exactly one plain, bounded msgpack value, or null when they are. Malformed input is
 * UNDECODABLE; well-formed input whose containers exceed what any schema allows is SCHEMA, as it would be
 * after decoding.
 */
export function wireFormatProblem(bytes: Uint8Array): Rejection | null {
  const end = bytes.length;
  let position = 0;
  let depth = 0;
  valuesRemainingAtDepth[0] = 1;
  isMapAtDepth[0] = 0;
  for (;;) {
    let remaining = valuesRemainingAtDepth[depth] as number;
    while (remaining === 0) {
      if (depth === 0) return position === end ? null : undecodable(`${end - position} bytes after the value`);
      depth -= 1;
      remaining = valuesRemainingAtDepth[depth] as number;
    }
    if (position >= end) return undecodable('truncated');
    const isKey = isMapAtDepth[depth] === 1 && remaining % 2 === 0;
    valuesRemainingAtDepth[depth] = remaining - 1;
    const token = bytes[position] as number;
    position += 1;
    if (isKey && !((token >= 0xa0 && token <= 0xbf) || (token >= 0xd9 && token <= 0xdb))) {
      return undecodable('map key is not a string');
    }

    let containerLength = 0;
    let containerIsMap = false;
    if (token <= 0x7f || token >= 0xe0) {
      continue; // fixint
    } else if (token <= 0x8f) {
      containerLength = token & 0x0f;
      containerIsMap = true;
    } else if (token <= 0x9f) {
      containerLength = token & 0x0f;
    } else if (token <= 0xbf) {
      position += token & 0x1f; // fixstr
    } else {
      const headerBytes = headerBytesFromC0[token - 0xc0] as number;
      if (headerBytes === extensionType) {
        return undecodable(`extension type (0x${token.toString(16)}) is not part of the wire format`);
      }
      if (headerBytes === neverUsed) return undecodable('byte 0xc1 is never used in msgpack');
      if (position + headerBytes > end) return undecodable('truncated');
      if ((token >= 0xc4 && token <= 0xc6) || (token >= 0xd9 && token <= 0xdb)) {
        position += headerBytes + readLength(bytes, position, headerBytes); // bin, str
      } else if (token >= 0xdc) {
        containerLength = readLength(bytes, position, headerBytes); // array 16/32, map 16/32
        containerIsMap = token >= 0xde;
        position += headerBytes;
      } else {
        position += headerBytes; // nil, booleans, numbers
      }
    }
    if (position > end) return undecodable('truncated');
    if (containerLength > 0) {
      if (containerIsMap ? containerLength > limits.messageMapEntriesMax : containerLength > arrayLengthMax) {
        return tooLarge(`${containerIsMap ? 'map' : 'array'} of ${containerLength} entries`);
      }
      if (depth === limits.messageNestingDepthMax) return tooLarge('nested too deeply');
      depth += 1;
      valuesRemainingAtDepth[depth] = containerIsMap ? containerLength * 2 : containerLength;
      isMapAtDepth[depth] = containerIsMap ? 1 : 0;
    }
  }
}

/** A big-endian length field of 1, 2 or 4 bytes. */
function readLength(bytes: Uint8Array, position: number, lengthBytes: number): number {
  const first = bytes[position] as number;
  if (lengthBytes === 1) return first;
  const second = bytes[position + 1] as number;
  if (lengthBytes === 2) return (first << 8) | second;
  // Multiplied, not shifted: a 32-bit shift would go negative above 2^31.
  return first * 0x1000000 + ((second << 16) | ((bytes[position + 2] as number) << 8) | (bytes[position + 3] as number));
}

// --- Decoding ----------------------------------------------------------------------------------------

type Decoded = { readonly ok: true; readonly value: unknown } | Rejection;

function decodePlain(bytes: Uint8Array, bytesMax: number): Decoded {
  if (bytes.length > bytesMax) {
    return { ok: false, reason: DropReason.FRAME_TOO_LARGE, detail: `${bytes.length} bytes, at most ${bytesMax}` };
  }
  const problem = wireFormatProblem(bytes);
  if (problem !== null) return problem;
  try {
    return { ok: true, value: packr.unpack(bytes) as unknown };
  } catch (error) {
    // The scan should leave msgpackr nothing to throw on; if it does, the input is still only dropped.
    return undecodable((error instanceof Error ? error.message : 'decoder failed').slice(0, 200));
  }
}

/** Decodes and validates one message from the network. Never throws. */
export function decodeMessage(bytes: Uint8Array): MessageResult {
  const decoded = decodePlain(bytes, limits.messageBytesMax);
  return decoded.ok ? validateMessage(decoded.value) : decoded;
}

/** Decodes and validates a batch (the bytes of a PROPOSE, SYNC, STOPDATA value or decision). Never throws. */
export function decodeBatch(bytes: Uint8Array): BatchResult {
  const decoded = decodePlain(bytes, limits.batchBytesMax);
  return decoded.ok ? validateBatch(decoded.value) : decoded;
}

// --- Encoding ----------------------------------------------------------------------------------------
// Encoding trusts its input (our own messages) and does not check limits: a sender that may exceed
// messageBytesMax (FORWARD, STOP, SYNC, STOPDATA can) must split or bound its messages before encoding.

export function encodeMessage(message: Message): Uint8Array {
  return packr.pack(message);
}

/** The digest of a batch is the hash of exactly these bytes, so encode once and keep them. */
export function encodeBatch(batch: Batch): Uint8Array {
  return packr.pack(batch);
}

// --- Signing payloads --------------------------------------------------------------------------------
// Arrays, not maps, so the bytes do not depend on key order; a distinct tag first, so that a signature
// made for one purpose never verifies for another (msgpack is self-delimiting, so two payloads with
// different tags differ). Bump a tag's version whenever its layout changes.

export const signingDomain = {
  ACCEPT: 'bftkube/accept/v1',
  COLLECT: 'bftkube/collect/v1',
  REQUEST: 'bftkube/request/v1',
} as const;

export function acceptSigningPayload(view: number, cid: number, regency: number, digest: Bytes): Uint8Array {
  return packr.pack([signingDomain.ACCEPT, view, cid, regency, digest]);
}

export function collectSigningPayload(collect: Collect): Uint8Array {
  const writeSet = collect.writeSet.map((written) => [written.regency, written.digest]);
  return packr.pack([
    signingDomain.COLLECT,
    collect.replica,
    collect.view,
    collect.regency,
    collect.cid,
    collect.acceptedRegency,
    collect.acceptedDigest,
    writeSet,
  ]);
}

/** Everything in the request but its signature. */
export function requestSigningPayload(request: ClientRequest): Uint8Array {
  const fields = [signingDomain.REQUEST, request.clientId, request.seq, request.ordered, request.operation];
  return packr.pack(request.kind === undefined ? fields : [...fields, request.kind]);
}
