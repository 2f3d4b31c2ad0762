// Byzantine behaviours. A Byzantine replica runs the real core; what it sends passes through one of
// these. It holds only its own signing key, so it can lie about everything except other replicas'
// signatures, exactly like a compromised replica in the process.

import type { CoreCrypto } from '../../src/core/crypto.ts';
import { acceptSigningPayload, collectSigningPayload, decodeBatch, encodeBatch } from '../../src/protocol/codec.ts';
import { type Bytes, type Collect, MessageType, type ReplicaMessage, type StopData } from '../../src/protocol/messages.ts';
import type { Rng } from './prng.ts';

export const behaviourNames = ['silent', 'equivocate', 'replay', 'mutate', 'twins'] as const;
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

/** Twins are two honest cores under one identity; the duplication happens in the simulation itself. */
const honest: Behaviour = (_context, _to, message) => [message];

export const behaviours: Record<BehaviourName, Behaviour> = {
  silent,
  equivocate,
  replay,
  mutate,
  twins: honest,
};
