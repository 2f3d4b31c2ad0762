// The validation boundary: every value decoded from the network passes one of these schemas before any
// other code reads it (TigerBeetle's validate-and-drop). A value that fails is dropped with a reason that
// metrics count; nothing here throws on bad input.
//
// Schemas check shape and bounds only: what needs state (membership, regency, quorums, signatures) is the
// core's job. Every array and byte field has a cap from constants.ts, so a validated message is bounded.

import { z } from 'zod';
import { limits } from '../constants.ts';
import {
  type Accept,
  type Batch,
  type Busy,
  type ViewReply,
  type ViewRequest,
  BusyReason,
  type ClientRequest,
  type Collect,
  type Decision,
  type DecisionMessage,
  type DecisionRequest,
  type DecisionsPruned,
  type CheckpointRequest,
  type CheckpointOffer,
  type CheckpointOfferMessage,
  type ChunkRequest,
  type Chunk,
  type Forward,
  type Heartbeat,
  type Message,
  MessageType,
  RequestKind,
  type MessageTypeCode,
  type Propose,
  type Reply,
  type ReplyDigest,
  resultDigestBytes,
  type RequestMessage,
  type SignedCollect,
  type Stop,
  type StopData,
  type Sync,
  type Vote,
  type Write,
  type WrittenValue,
} from './messages.ts';
import { DropReason, type DropReasonCode } from './reasons.ts';
import { viewDescriptionSchema } from './reconfiguration.ts';

export interface Rejection {
  readonly ok: false;
  readonly reason: DropReasonCode;
  /** At most 200 characters, for logs: metrics count the reason, never the detail (it echoes peer input). */
  readonly detail: string;
}

export type MessageResult = { readonly ok: true; readonly message: Message } | Rejection;
export type BatchResult = { readonly ok: true; readonly batch: Batch } | Rejection;

// --- Field schemas -----------------------------------------------------------------------------------

// z.int() already restricts to the safe integer range.
const nonNegativeInteger = z.int().min(0);
/** Instance numbers where "none yet" is -1 (last decided cid, accepted regency). */
const integerOrMinusOne = z.int().min(-1);
const sequenceNumber = z.int().min(1);
const replicaId = nonNegativeInteger;

/**
 * A byte field of bounded length. One custom check instead of instanceof + two refinements: this runs
 * several times per message on the hot path. msgpackr decodes bin as Buffer, a Uint8Array subclass.
 */
function bytes(lengthMin: number, lengthMax: number) {
  return z.custom<Uint8Array>(
    (value) => value instanceof Uint8Array && value.length >= lengthMin && value.length <= lengthMax,
    { error: `expected ${lengthMin}..${lengthMax} bytes` },
  );
}

const digestBytes = bytes(1, limits.digestBytesMax);
const signatureBytes = bytes(1, limits.signatureBytesMax);
/** An encoded Batch is a msgpack map, never empty. */
const batchBytes = bytes(1, limits.batchBytesMax);
const clientId = z.string().min(1).max(limits.clientIdLengthMax);

// --- Nested types ------------------------------------------------------------------------------------

export const clientRequestSchema = z.object({
  clientId,
  seq: sequenceNumber,
  ordered: z.boolean(),
  operation: bytes(0, limits.operationBytesMax),
  signature: signatureBytes.nullable(),
  kind: z.literal(RequestKind.RECONFIGURATION).optional(),
});

export const batchSchema = z.object({
  requests: z.array(clientRequestSchema).max(limits.batchRequestsMax),
});

export const voteSchema = z.object({
  replica: replicaId,
  signature: signatureBytes,
});

export const decisionSchema = z.object({
  cid: nonNegativeInteger,
  regency: nonNegativeInteger,
  batch: batchBytes,
  votes: z.array(voteSchema).max(limits.membersMax),
});

export const writtenValueSchema = z.object({
  regency: nonNegativeInteger,
  digest: digestBytes,
});

export const collectSchema = z.object({
  replica: replicaId,
  view: nonNegativeInteger,
  regency: nonNegativeInteger,
  cid: nonNegativeInteger,
  acceptedRegency: integerOrMinusOne,
  acceptedDigest: digestBytes.nullable(),
  writeSet: z.array(writtenValueSchema).max(limits.writeSetMax),
});

export const signedCollectSchema = z.object({
  collect: collectSchema,
  signature: signatureBytes,
});

const forwardedRequests = z.array(clientRequestSchema).max(limits.requestsPerMessageMax);

// --- Messages ----------------------------------------------------------------------------------------

export const proposeSchema = z.object({
  type: z.literal(MessageType.PROPOSE),
  view: nonNegativeInteger,
  cid: nonNegativeInteger,
  regency: nonNegativeInteger,
  batch: batchBytes,
});

export const writeSchema = z.object({
  type: z.literal(MessageType.WRITE),
  view: nonNegativeInteger,
  cid: nonNegativeInteger,
  regency: nonNegativeInteger,
  digest: digestBytes,
});

export const acceptSchema = z.object({
  type: z.literal(MessageType.ACCEPT),
  view: nonNegativeInteger,
  cid: nonNegativeInteger,
  regency: nonNegativeInteger,
  digest: digestBytes,
  signature: signatureBytes,
});

export const forwardSchema = z.object({
  type: z.literal(MessageType.FORWARD),
  view: nonNegativeInteger,
  requests: forwardedRequests,
});

export const stopSchema = z.object({
  type: z.literal(MessageType.STOP),
  view: nonNegativeInteger,
  regency: nonNegativeInteger,
  requests: forwardedRequests,
});

export const stopDataSchema = z.object({
  type: z.literal(MessageType.STOPDATA),
  view: nonNegativeInteger,
  regency: nonNegativeInteger,
  collect: signedCollectSchema,
  lastDecision: decisionSchema.nullable(),
  // One value per written regency plus the accepted one.
  values: z.array(batchBytes).max(limits.writeSetMax + 1),
});

export const syncSchema = z.object({
  type: z.literal(MessageType.SYNC),
  view: nonNegativeInteger,
  regency: nonNegativeInteger,
  cid: nonNegativeInteger,
  collects: z.array(signedCollectSchema).max(limits.membersMax),
  lastDecision: decisionSchema.nullable(),
  // Empty when no value is bound and the new leader had nothing to propose yet.
  batch: bytes(0, limits.batchBytesMax),
});

export const heartbeatSchema = z.object({
  type: z.literal(MessageType.HEARTBEAT),
  view: nonNegativeInteger,
  regency: nonNegativeInteger,
  // Cids start at 0, so a leader that has decided nothing yet reports -1.
  lastDecidedCid: integerOrMinusOne,
});

export const decisionRequestSchema = z.object({
  type: z.literal(MessageType.DECISION_REQUEST),
  view: nonNegativeInteger,
  fromCid: nonNegativeInteger,
});

export const decisionMessageSchema = z.object({
  type: z.literal(MessageType.DECISION),
  view: nonNegativeInteger,
  decision: decisionSchema,
});

export const decisionsPrunedSchema = z.object({
  type: z.literal(MessageType.DECISIONS_PRUNED),
  view: nonNegativeInteger,
  oldestRetainedCid: integerOrMinusOne,
  checkpointCid: integerOrMinusOne,
});

export const checkpointRequestSchema = z.object({
  type: z.literal(MessageType.CHECKPOINT_REQUEST),
  view: nonNegativeInteger,
  minCid: nonNegativeInteger,
});

/** 32 bytes per chunk hash; the count must match totalBytes / chunkBytes, which the state-transfer module checks. */
const chunkHashBytes = 32;

export const checkpointOfferSchema = z.object({
  cid: nonNegativeInteger,
  viewNumber: nonNegativeInteger,
  parts: z.array(z.object({ code: z.int().min(1).max(3), bytes: nonNegativeInteger })).min(1).max(3),
  totalBytes: nonNegativeInteger,
  chunkBytes: z.int().min(limits.checkpointChunkBytesMin).max(limits.checkpointChunkBytesMax),
  chunkHashes: bytes(0, limits.checkpointChunksMax * chunkHashBytes).refine((hashes) => hashes.length % chunkHashBytes === 0, {
    error: `chunk hashes must be a multiple of ${chunkHashBytes} bytes`,
  }),
  signature: signatureBytes,
});

export const checkpointOfferMessageSchema = z.object({
  type: z.literal(MessageType.CHECKPOINT_OFFER),
  view: nonNegativeInteger,
  offers: z.array(checkpointOfferSchema).max(limits.checkpointKeepMax),
});

export const chunkRequestSchema = z.object({
  type: z.literal(MessageType.CHUNK_REQUEST),
  view: nonNegativeInteger,
  cid: nonNegativeInteger,
  index: z.int().min(0).max(limits.checkpointChunksMax - 1),
});

export const chunkSchema = z.object({
  type: z.literal(MessageType.CHUNK),
  view: nonNegativeInteger,
  cid: nonNegativeInteger,
  index: z.int().min(0).max(limits.checkpointChunksMax - 1),
  bytes: bytes(0, limits.checkpointChunkBytesMax),
});

export const requestMessageSchema = z.object({
  type: z.literal(MessageType.REQUEST),
  request: clientRequestSchema,
  replyWithDigest: z.boolean().optional(),
});

export const replySchema = z.object({
  type: z.literal(MessageType.REPLY),
  view: nonNegativeInteger,
  clientId,
  seq: sequenceNumber,
  result: bytes(0, limits.resultBytesMax),
});

export const replyDigestSchema = z.object({
  type: z.literal(MessageType.REPLY_DIGEST),
  view: nonNegativeInteger,
  clientId,
  seq: sequenceNumber,
  resultDigest: bytes(resultDigestBytes, resultDigestBytes),
});

export const busySchema = z.object({
  type: z.literal(MessageType.BUSY),
  clientId,
  seq: sequenceNumber,
  reason: z.enum(BusyReason),
});

export const viewRequestSchema = z.object({
  type: z.literal(MessageType.VIEW_REQUEST),
  clientId,
});

export const viewReplySchema = z.object({
  type: z.literal(MessageType.VIEW_REPLY),
  clientId,
  view: viewDescriptionSchema,
});

// --- Schemas and types must not drift --------------------------------------------------------------
// Each check fails `npm run typecheck` when a schema and its type in messages.ts disagree in either
// direction: a field missing, added, or of another type. (Readonly is the only difference allowed.)

type DeepReadonly<T> = T extends Uint8Array
  ? T
  : T extends readonly (infer Element)[]
    ? readonly DeepReadonly<Element>[]
    : T extends object
      ? { readonly [Key in keyof T]: DeepReadonly<T[Key]> }
      : T;
type SameShape<Schema extends z.ZodType, Type> = [DeepReadonly<z.output<Schema>>] extends [Type]
  ? [Type] extends [DeepReadonly<z.output<Schema>>]
    ? true
    : false
  : false;
type Expect<Condition extends true> = Condition;

export type SchemasMatchTypes = [
  Expect<SameShape<typeof clientRequestSchema, ClientRequest>>,
  Expect<SameShape<typeof batchSchema, Batch>>,
  Expect<SameShape<typeof voteSchema, Vote>>,
  Expect<SameShape<typeof decisionSchema, Decision>>,
  Expect<SameShape<typeof writtenValueSchema, WrittenValue>>,
  Expect<SameShape<typeof collectSchema, Collect>>,
  Expect<SameShape<typeof signedCollectSchema, SignedCollect>>,
  Expect<SameShape<typeof proposeSchema, Propose>>,
  Expect<SameShape<typeof writeSchema, Write>>,
  Expect<SameShape<typeof acceptSchema, Accept>>,
  Expect<SameShape<typeof forwardSchema, Forward>>,
  Expect<SameShape<typeof stopSchema, Stop>>,
  Expect<SameShape<typeof stopDataSchema, StopData>>,
  Expect<SameShape<typeof syncSchema, Sync>>,
  Expect<SameShape<typeof heartbeatSchema, Heartbeat>>,
  Expect<SameShape<typeof decisionRequestSchema, DecisionRequest>>,
  Expect<SameShape<typeof decisionMessageSchema, DecisionMessage>>,
  Expect<SameShape<typeof decisionsPrunedSchema, DecisionsPruned>>,
  Expect<SameShape<typeof checkpointRequestSchema, CheckpointRequest>>,
  Expect<SameShape<typeof checkpointOfferSchema, CheckpointOffer>>,
  Expect<SameShape<typeof checkpointOfferMessageSchema, CheckpointOfferMessage>>,
  Expect<SameShape<typeof chunkRequestSchema, ChunkRequest>>,
  Expect<SameShape<typeof chunkSchema, Chunk>>,
  Expect<SameShape<typeof requestMessageSchema, RequestMessage>>,
  Expect<SameShape<typeof replySchema, Reply>>,
  Expect<SameShape<typeof replyDigestSchema, ReplyDigest>>,
  Expect<SameShape<typeof busySchema, Busy>>,
  Expect<SameShape<typeof viewRequestSchema, ViewRequest>>,
  Expect<SameShape<typeof viewReplySchema, ViewReply>>,
];

type MessageOfType<Code extends MessageTypeCode> = Extract<Message, { readonly type: Code }>;

// The mapped type makes this exhaustive: a code added to MessageType without a schema fails typecheck.
const schemaByTypeCode: { readonly [Code in MessageTypeCode]: z.ZodType<MessageOfType<Code>> } = {
  [MessageType.PROPOSE]: proposeSchema,
  [MessageType.WRITE]: writeSchema,
  [MessageType.ACCEPT]: acceptSchema,
  [MessageType.FORWARD]: forwardSchema,
  [MessageType.STOP]: stopSchema,
  [MessageType.STOPDATA]: stopDataSchema,
  [MessageType.SYNC]: syncSchema,
  [MessageType.HEARTBEAT]: heartbeatSchema,
  [MessageType.DECISION_REQUEST]: decisionRequestSchema,
  [MessageType.DECISION]: decisionMessageSchema,
  [MessageType.DECISIONS_PRUNED]: decisionsPrunedSchema,
  [MessageType.CHECKPOINT_REQUEST]: checkpointRequestSchema,
  [MessageType.CHECKPOINT_OFFER]: checkpointOfferMessageSchema,
  [MessageType.CHUNK_REQUEST]: chunkRequestSchema,
  [MessageType.CHUNK]: chunkSchema,
  [MessageType.REQUEST]: requestMessageSchema,
  [MessageType.REPLY]: replySchema,
  [MessageType.REPLY_DIGEST]: replyDigestSchema,
  [MessageType.BUSY]: busySchema,
  [MessageType.VIEW_REQUEST]: viewRequestSchema,
  [MessageType.VIEW_REPLY]: viewReplySchema,
};

// A Map, not the object above: the type code is attacker-chosen and must not reach a property lookup.
const schemaByType = new Map<number, { readonly name: string; readonly schema: z.ZodType<Message> }>(
  Object.entries(MessageType).map(([name, code]) => [code, { name, schema: schemaByTypeCode[code] }]),
);

// --- Entry points ------------------------------------------------------------------------------------

const detailLengthMax = 200;

function schemaRejection(where: string, error: z.ZodError): Rejection {
  const issue = error.issues[0];
  const path = issue === undefined || issue.path.length === 0 ? '' : `.${issue.path.map(String).join('.')}`;
  const detail = `${where}${path}: ${issue?.message ?? 'invalid'}`;
  return { ok: false, reason: DropReason.SCHEMA, detail: detail.slice(0, detailLengthMax) };
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof Uint8Array);
}

/**
 * Checks an untrusted decoded value and returns a fresh, fully typed message (unknown keys dropped,
 * nested objects rebuilt, so nothing of the input's prototype chain survives), or the reason to drop it.
 */
export function validateMessage(value: unknown): MessageResult {
  if (!isRecord(value)) return { ok: false, reason: DropReason.SCHEMA, detail: 'message: expected a map' };
  const type = value['type'];
  const entry = typeof type === 'number' ? schemaByType.get(type) : undefined;
  if (entry === undefined) {
    const shown = typeof type === 'number' ? String(type) : `a ${type === null ? 'null' : typeof type}`;
    return { ok: false, reason: DropReason.UNKNOWN_TYPE, detail: `message type ${shown} is not known` };
  }
  const parsed = entry.schema.safeParse(value);
  return parsed.success ? { ok: true, message: parsed.data } : schemaRejection(entry.name, parsed.error);
}

/** As validateMessage, for a decoded batch (the value of one consensus instance). */
export function validateBatch(value: unknown): BatchResult {
  const parsed = batchSchema.safeParse(value);
  return parsed.success ? { ok: true, batch: parsed.data } : schemaRejection('batch', parsed.error);
}
