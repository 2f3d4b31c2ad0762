import type { Bytes } from '../protocol/messages.ts';
import type { Member } from '../protocol/reconfiguration.ts';
import type { ReplicaId } from './view.ts';

/**
 * What the core needs from cryptography, injected so that the core stays pure. In the replica process
 * these are Ed25519 and SHA-256 with signatures pre-verified in a worker pool (verify then hits a cache);
 * in the simulator they are fast keyed hashes that a Byzantine replica cannot forge for another id.
 */
export interface CoreCrypto {
  /** Collision-resistant digest (SHA-256 in the process). */
  digest(bytes: Bytes): Bytes;
  /** Sign with this replica's own key. */
  sign(payload: Bytes): Bytes;
  /** Check a signature by a replica of the current view. */
  verifyReplica(replica: ReplicaId, payload: Bytes, signature: Bytes): boolean;
  /** Check a client's request signature (used only when the cluster requires signed requests). */
  verifyClient(clientId: string, payload: Bytes, signature: Bytes): boolean;
  /** Check the View Manager's signature on a reconfiguration; absent or false: no View Manager is configured. */
  verifyViewManager?(payload: Bytes, signature: Bytes): boolean;
  /**
   * The membership changed (or was restored): from now on verifyReplica checks against these members'
   * keys, which the replicated state carries. Called by the core before any message of the new view.
   */
  useMembers?(members: ReadonlyMap<ReplicaId, Member>): void;
}

const hexDigits = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));

/** Map key for a digest. Hand-rolled so that the core needs no Buffer. */
export function digestKey(digest: Bytes): string {
  let key = '';
  for (let i = 0; i < digest.length; i++) key += hexDigits[digest[i] as number];
  return key;
}
