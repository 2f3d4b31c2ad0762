// Byzantine behaviours. A Byzantine replica runs the real core; what it sends passes through one of
// these. It holds only its own signing key, so it can lie about everything except other replicas'
// signatures, exactly like a compromised replica in the process.

import type { CoreCrypto } from '../../src/core/crypto.ts';
import { acceptSigningPayload, collectSigningPayload, decodeBatch, encodeBatch } from '../../src/protocol/codec.ts';
import {
  type Bytes,
  type CheckpointOffer,
  type Collect,
  MessageType,
  type ReplicaMessage,
  type StopData,
} from '../../src/protocol/messages.ts';
import { attestationPayload, manifestOf, offerOf } from '../../src/runtime/state-transfer.ts';
import { manifestDigest } from '../../src/storage/checkpoint-store.ts';
import { type SimCheckpoint, buildCheckpoint } from './disk.ts';
import type { Rng } from './prng.ts';

/** Behaviours against consensus: drawn in every Byzantine run. */
export const consensusBehaviourNames = ['silent', 'equivocate', 'replay', 'mutate', 'twins', 'bad-signatures', 'false-view'] as const;
/** Behaviours against state transfer (honest in consensus): drawn too when runs have disk faults. */
export const stateTransferBehaviourNames = ['bad-chunks', 'forged-manifest', 'phantom-offer'] as const;
export const behaviourNames = [...consensusBehaviourNames, ...stateTransferBehaviourNames] as const;
export type BehaviourName = (typeof behaviourNames)[number];

export interface ByzantineContext {
  readonly id: number;
  readonly rng: Rng;
  /** This replica's own crypto: it can sign as itself, nobody else. */
  readonly crypto: CoreCrypto;
  /** Messages this replica sent or received, newest last, bounded. */
  readonly history: readonly ReplicaMessage[];
  /** Whether clients sign requests (then a forged request is caught; without, validity cannot hold). */
  readonly signedRequests: boolean;
  /** This replica's own checkpoint of instance `cid`, if it keeps one. */
  checkpoint(cid: number): SimCheckpoint | undefined;
  /** This replica's last decided instance (-1: none, or down). */
  lastDecidedCid(): number;
}

/** What a Byzantine replica sends to `to` instead of `message`: any number of messages. */
export type Behaviour = (context: ByzantineContext, to: number, message: ReplicaMessage) => ReplicaMessage[];

export const historyMax = 256;

function resignAccept(context: ByzantineContext, message: ReplicaMessage): ReplicaMessage {
  if (message.type !== MessageType.ACCEPT) return message;
  const payload = acceptSigningPayload(message.view, message.cid, message.regency, message.digest);
  return { ...message, signature: context.crypto.sign(payload) };
}

/** Another valid-looking batch with the same requests: reversed order, or one request fewer. */
function alternativeBatch(bytes: Bytes): Bytes | null {
  const decoded = decodeBatch(bytes);
  if (!decoded.ok) return null;
  const requests = [...decoded.batch.requests];
  if (requests.length >= 2) {
    const reversed = [...requests].reverse();
    const lastOfItsClient = requests.findLastIndex((r) => r.clientId === requests[0]?.clientId);
    // Dropping a client's last request keeps the batch valid; reversing may not (sequence order).
    return encodeBatch({ requests: lastOfItsClient > 0 ? requests.filter((_, i) => i !== lastOfItsClient) : reversed });
  }
  return null;
}

const equivocate: Behaviour = (context, to, message) => {
  const otherHalf = to % 2 === 1;
  if (!otherHalf) return [message];
  switch (message.type) {
    case MessageType.PROPOSE: {
      const batch = alternativeBatch(message.batch);
      return batch === null ? [] : [{ ...message, batch }];
    }
    case MessageType.WRITE:
      return [{ ...message, digest: context.rng.bytes(32) }];
    case MessageType.ACCEPT:
      return [resignAccept(context, { ...message, digest: context.rng.bytes(32) })];
    case MessageType.SYNC: {
      const batch = alternativeBatch(message.batch);
      return [batch === null ? message : { ...message, batch }];
    }
    default:
      return [message];
  }
};

const replay: Behaviour = (context, _to, message) => {
  const out = [message];
  if (context.history.length > 0 && context.rng.chance(0.3)) out.push(context.rng.pick(context.history));
  return out;
};

function shift(rng: Rng, value: number): number {
  return Math.max(0, value + (rng.chance(0.5) ? 1 : -1));
}

const mutate: Behaviour = (context, _to, message) => {
  const rng = context.rng;
  if (!rng.chance(0.4)) return [message];
  switch (message.type) {
    case MessageType.PROPOSE: {
      const field = rng.int(0, 2);
      if (field === 0) return [{ ...message, cid: shift(rng, message.cid) }];
      if (field === 1) return [{ ...message, regency: shift(rng, message.regency) }];
      if (!context.signedRequests) return [message];
      // Forge the content of a client's request: only signatures can catch this.
      const batch = Uint8Array.from(message.batch);
      const at = rng.int(0, batch.length - 1);
      batch[at] = (batch[at] as number) ^ (1 << rng.int(0, 7));
      return [{ ...message, batch }];
    }
    case MessageType.WRITE:
    case MessageType.ACCEPT: {
      const field = rng.int(0, 2);
      const mutated =
        field === 0
          ? { ...message, cid: shift(rng, message.cid) }
          : field === 1
            ? { ...message, regency: shift(rng, message.regency) }
            : { ...message, digest: rng.bytes(32) };
      return [resignAccept(context, mutated)];
    }
    case MessageType.STOPDATA:
      return [rng.chance(0.5) ? { ...message, regency: shift(rng, message.regency) } : lieInCollect(context, message)];
    case MessageType.STOP:
    case MessageType.SYNC:
      return [{ ...message, regency: shift(rng, message.regency) }];
    case MessageType.HEARTBEAT:
      return [{ ...message, lastDecidedCid: message.lastDecidedCid + rng.int(1, 40) }];
    case MessageType.DECISION:
      return [{ ...message, decision: { ...message.decision, cid: shift(rng, message.decision.cid) } }];
    default:
      return [message];
  }
};

/**
 * A collect is signed by its own author, so a Byzantine replica can claim any state: hide a value it
 * accepted, or claim it accepted (and wrote) a value it only saw others write, in the latest regency it could.
 */
function lieInCollect(context: ByzantineContext, message: StopData): StopData {
  const rng = context.rng;
  const real = message.collect.collect;
  const seen = context.history.flatMap((m) =>
    (m.type === MessageType.WRITE || m.type === MessageType.ACCEPT) && m.cid === real.cid ? [m.digest] : [],
  );
  const claimed = seen.length > 0 && rng.chance(0.7) ? rng.pick(seen) : null;
  const regency = Math.max(0, real.regency - rng.int(1, 2));
  const collect: Collect =
    claimed === null
      ? { ...real, acceptedRegency: -1, acceptedDigest: null, writeSet: [] }
      : { ...real, acceptedRegency: regency, acceptedDigest: claimed, writeSet: [{ regency, digest: claimed }] };
  const signature = context.crypto.sign(collectSigningPayload(collect));
  return { ...message, collect: { collect, signature } };
}

const silent: Behaviour = () => [];

/** Offers its real, honestly signed manifests (so it is chosen as a source), then serves corrupted chunks. */
const badChunks: Behaviour = (context, _to, message) => {
  if (message.type !== MessageType.CHUNK || message.bytes.length === 0) return [message];
  const bytes = Uint8Array.from(message.bytes);
  const at = context.rng.int(0, bytes.length - 1);
  bytes[at] = (bytes[at] as number) ^ (1 << context.rng.int(0, 7));
  return [{ ...message, bytes }];
};

/** Its own state with one byte changed: what a forger would want a lagging replica to install. */
function forgedCheckpoint(context: ByzantineContext, real: SimCheckpoint): SimCheckpoint {
  const bytes = Uint8Array.from(real.bytes);
  if (bytes.length > 0) {
    const at = real.manifest.cid % bytes.length;
    bytes[at] = (bytes[at] as number) ^ 0xff;
  }
  const parts = real.manifest.parts;
  let offset = 0;
  const sliced = parts.map((part) => {
    const slice = { name: part.name, bytes: bytes.subarray(offset, offset + part.bytes) };
    offset += part.bytes;
    return slice;
  });
  return buildCheckpoint(real.manifest.cid, real.manifest.viewNumber, sliced, context.id);
}

function signedOffer(context: ByzantineContext, checkpoint: SimCheckpoint): CheckpointOffer {
  return offerOf(checkpoint.manifest, context.crypto.sign(attestationPayload(manifestDigest(checkpoint.manifest))));
}

/** Offers a manifest of a forged state (its own digest, validly self-signed) and serves the forged chunks. */
const forgedManifest: Behaviour = (context, _to, message) => {
  if (message.type === MessageType.CHECKPOINT_OFFER) {
    const offers = message.offers.map((offer) => {
      const real = context.checkpoint(offer.cid);
      return real === undefined ? offer : signedOffer(context, forgedCheckpoint(context, real));
    });
    return [{ ...message, offers }];
  }
  if (message.type === MessageType.CHUNK) {
    const real = context.checkpoint(message.cid);
    if (real === undefined) return [message];
    const forged = forgedCheckpoint(context, real);
    const chunkBytes = forged.manifest.chunkBytes;
    return [{ ...message, bytes: forged.bytes.slice(message.index * chunkBytes, (message.index + 1) * chunkBytes) }];
  }
  return [message];
};

/** Also offers (validly signed) a checkpoint newer than any it has, and answers its chunks with noise. */
const phantomOffer: Behaviour = (context, _to, message) => {
  if (message.type === MessageType.CHECKPOINT_OFFER) {
    const newest = message.offers.at(-1);
    const template = newest === undefined ? undefined : manifestOf(newest, context.id);
    const cid = Math.max(newest?.cid ?? -1, context.lastDecidedCid()) + context.rng.int(1, 30);
    const parts = template?.ok ? template.manifest.parts : [{ name: 'service' as const, bytes: 4100 }];
    const phantom = buildCheckpoint(
      cid,
      message.view,
      parts.map((part) => ({ name: part.name, bytes: context.rng.bytes(part.bytes) })),
      context.id,
    );
    return [{ ...message, offers: [...message.offers, signedOffer(context, phantom)] }];
  }
  if (message.type === MessageType.CHUNK && message.bytes.length === 0) {
    return [{ ...message, bytes: context.rng.bytes(context.rng.int(1, 4096)) }];
  }
  return [message];
};

/**
 * Votes honestly, but with a broken signature on every ACCEPT (and certificate) it sends: its votes count
 * toward deciding, so every certificate they end up in must be repaired before it is shown to anyone.
 */
const badSignatures: Behaviour = (context, _to, message) => {
  const broken = (signature: Bytes): Bytes => {
    const copy = Uint8Array.from(signature);
    const at = context.rng.int(0, copy.length - 1);
    copy[at] = (copy[at] as number) ^ (1 << context.rng.int(0, 7));
    return copy;
  };
  if (message.type === MessageType.ACCEPT) return [{ ...message, signature: broken(message.signature) }];
  return [message];
};

/**
 * Claims a view the cluster is not in: a share of its messages name a later view (which others must
 * not act on before they decide it), and its heartbeats say it is in a later view and far ahead.
 */
const falseView: Behaviour = (context, _to, message) => {
  if (message.type === MessageType.HEARTBEAT) {
    return [{ ...message, view: message.view + context.rng.int(1, 3), lastDecidedCid: message.lastDecidedCid + context.rng.int(1, 60) }];
  }
  if (context.rng.chance(0.3)) return [{ ...message, view: message.view + context.rng.int(1, 3) }];
  return [message];
};

/** Twins are two honest cores under one identity; the duplication happens in the simulation itself. */
const honest: Behaviour = (_context, _to, message) => [message];

export const behaviours: Record<BehaviourName, Behaviour> = {
  silent,
  equivocate,
  replay,
  mutate,
  twins: honest,
  'bad-signatures': badSignatures,
  'false-view': falseView,
  'bad-chunks': badChunks,
  'forged-manifest': forgedManifest,
  'phantom-offer': phantomOffer,
};
