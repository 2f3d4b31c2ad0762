// The wire form of reconfiguration (DESIGN §6). A View Manager's request travels as the operation of an
// ordered client request of kind RECONFIGURATION: the signed request below, msgpack-encoded. Replicas
// answer it with a ReconfigurationResult instead of a service result. Every byte is validated here, the
// same way as a message: a client (or a Byzantine leader, in a batch) chooses these bytes.

import { Packr } from 'msgpackr';
import { z } from 'zod';
import { limits } from '../constants.ts';
import type { Bytes } from './messages.ts';
import { wireFormatProblem } from './codec.ts';
import { plainMsgpackOptions } from './msgpack-options.ts';

/** Where a member listens (a DNS name or an address), and the key that checks its votes. */
export interface Member {
  readonly id: number;
  readonly host: string;
  readonly port: number;
  readonly adminPort: number;
  /** Ed25519 public key, raw (32 bytes). */
  readonly publicKey: Bytes;
}

export type ReconfigurationOperation =
  | { readonly kind: 'add'; readonly id: number; readonly host: string; readonly port: number; readonly adminPort: number; readonly publicKey: Bytes }
  | { readonly kind: 'remove'; readonly id: number }
  | { readonly kind: 'set-f'; readonly f: number };

/** What the View Manager signs. */
export interface Reconfiguration {
  /** The view it changes; a request for any other view is stale and refused. */
  readonly fromView: number;
  readonly operations: readonly ReconfigurationOperation[];
  /** The View Manager's epoch (the operator's leadership term), for its own bookkeeping and the logs. */
  readonly epoch: number;
  /** Makes every request distinct, so that two with the same content are told apart. */
  readonly nonce: Bytes;
}

export interface SignedReconfiguration {
  readonly reconfiguration: Reconfiguration;
  /** Ed25519 by the View Manager over reconfigurationSigningPayload(reconfiguration). */
  readonly signature: Bytes;
}

/** The view a reconfiguration produced, as replicas report it. */
export interface ViewDescription {
  readonly number: number;
  readonly mode: 'bft' | 'crash';
  readonly f: number;
  readonly members: readonly Member[];
}

/** A replica's answer to a reconfiguration request. */
export type ReconfigurationResult =
  | { readonly accepted: true; readonly view: ViewDescription }
  | { readonly accepted: false; readonly reason: string };

const packr = new Packr(plainMsgpackOptions);

function bytes(lengthMin: number, lengthMax: number) {
  return z.custom<Uint8Array>((value) => value instanceof Uint8Array && value.length >= lengthMin && value.length <= lengthMax, {
    error: `expected ${lengthMin}..${lengthMax} bytes`,
  });
}

const replicaId = z.int().min(0);
const port = z.int().min(1).max(65_535);
const host = z.string().min(1).max(253);
const publicKey = bytes(limits.replicaPublicKeyBytes, limits.replicaPublicKeyBytes);

// A reported member's key may be empty: a genesis member whose key the configuration did not give (tests).
const memberSchema = z.object({
  id: replicaId,
  host,
  port,
  adminPort: port,
  publicKey: z.custom<Uint8Array>((value) => value instanceof Uint8Array && (value.length === limits.replicaPublicKeyBytes || value.length === 0)),
});

const operationSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('add'), id: replicaId, host, port, adminPort: port, publicKey }),
  z.object({ kind: z.literal('remove'), id: replicaId }),
  z.object({ kind: z.literal('set-f'), f: z.int().min(0).max(limits.membersMax) }),
]);

const signedReconfigurationSchema = z.object({
  reconfiguration: z.object({
    fromView: z.int().min(0),
    operations: z.array(operationSchema).min(1).max(limits.reconfigurationOperationsMax),
    epoch: z.int().min(0),
    nonce: bytes(1, limits.reconfigurationNonceBytesMax),
  }),
  signature: bytes(1, limits.signatureBytesMax),
});

/** A view as replicas describe it to clients (VIEW_REPLY) and in reconfiguration results. */
export const viewDescriptionSchema = z.object({
  number: z.int().min(0),
  mode: z.enum(['bft', 'crash']),
  f: z.int().min(0),
  members: z.array(memberSchema).min(1).max(limits.membersMax),
});

const resultSchema = z.union([
  z.object({ accepted: z.literal(true), view: viewDescriptionSchema }),
  z.object({ accepted: z.literal(false), reason: z.string().max(limits.reconfigurationReasonLengthMax) }),
]);

/** Why bytes are not a signed reconfiguration request, or the request. Never throws. */
export function decodeSignedReconfiguration(encoded: Uint8Array): { readonly ok: true; readonly value: SignedReconfiguration } | { readonly ok: false; readonly reason: string } {
  if (encoded.length > limits.reconfigurationBytesMax) return { ok: false, reason: `${encoded.length} bytes, more than ${limits.reconfigurationBytesMax}` };
  const problem = wireFormatProblem(encoded);
  if (problem !== null) return { ok: false, reason: problem.detail };
  let value: unknown;
  try {
    value = packr.unpack(encoded);
  } catch (error) {
    return { ok: false, reason: (error instanceof Error ? error.message : 'undecodable').slice(0, 200) };
  }
  const parsed = signedReconfigurationSchema.safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    return { ok: false, reason: `${issue?.path.join('.') ?? ''}: ${issue?.message ?? 'invalid'}`.slice(0, 200) };
  }
  return { ok: true, value: parsed.data as SignedReconfiguration };
}

export function encodeSignedReconfiguration(signed: SignedReconfiguration): Uint8Array {
  return packr.pack(signed);
}

/** Arrays, not maps, with a tag of its own: a reconfiguration signature verifies for nothing else. */
export function reconfigurationSigningPayload(reconfiguration: Reconfiguration): Uint8Array {
  const operations = reconfiguration.operations.map((operation) => {
    switch (operation.kind) {
      case 'add':
        return ['add', operation.id, operation.host, operation.port, operation.adminPort, operation.publicKey];
      case 'remove':
        return ['remove', operation.id];
      case 'set-f':
        return ['set-f', operation.f];
    }
  });
  return packr.pack(['bftkube/reconfigure/v1', reconfiguration.fromView, operations, reconfiguration.epoch, reconfiguration.nonce]);
}

export function encodeReconfigurationResult(result: ReconfigurationResult): Uint8Array {
  return packr.pack(result);
}

/** A replica's answer decoded and checked; null if it is not one. Never throws. */
export function decodeReconfigurationResult(encoded: Uint8Array): ReconfigurationResult | null {
  if (encoded.length > limits.reconfigurationBytesMax * 4 || wireFormatProblem(encoded) !== null) return null;
  try {
    const parsed = resultSchema.safeParse(packr.unpack(encoded));
    return parsed.success ? (parsed.data as ReconfigurationResult) : null;
  } catch {
    return null;
  }
}
