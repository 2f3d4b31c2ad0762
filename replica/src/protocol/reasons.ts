// Why an input was dropped. Every drop is counted under one of these, so an operator can see a
// misbehaving peer in metrics instead of a crashed replica.

export const DropReason = {
  // The codec and the schema (protocol/validate.ts).
  FRAME_TOO_LARGE: 'frame_too_large',
  UNDECODABLE: 'undecodable',
  UNKNOWN_TYPE: 'unknown_type',
  SCHEMA: 'schema',
  // The core: who sent it and when.
  NOT_MEMBER: 'not_member',
  WRONG_VIEW: 'wrong_view',
  NOT_FROM_LEADER: 'not_from_leader',
  STALE_REGENCY: 'stale_regency',
  STALE_INSTANCE: 'stale_instance',
  TOO_FAR_AHEAD: 'too_far_ahead',
  FUTURE_BUFFER_FULL: 'future_buffer_full',
  DUPLICATE: 'duplicate',
  CONFLICTING_VOTE: 'conflicting_vote',
  // The core: what it says.
  BAD_SIGNATURE: 'bad_signature',
  BAD_BATCH: 'bad_batch',
  BAD_REQUEST: 'bad_request',
  BAD_CERTIFICATE: 'bad_certificate',
  BAD_COLLECT: 'bad_collect',
  COLLECT_WRONG_REGENCY: 'collect_wrong_regency',
  COLLECT_NOT_MEMBER: 'collect_not_member',
  BAD_SYNC: 'bad_sync',
  DIGEST_MISMATCH: 'digest_mismatch',
  WRONG_CLIENT: 'wrong_client',
  MISDIRECTED: 'misdirected',
  RATE_LIMITED: 'rate_limited',
  // State transfer (runtime/state-transfer.ts).
  /** An answer (offer, chunk) to nothing we asked that peer for. */
  UNSOLICITED: 'unsolicited',
  /** A checkpoint offer whose manifest is inconsistent (sizes, hash count, part codes). */
  BAD_MANIFEST: 'bad_manifest',
  /** A validly signed offer for the chosen instance whose manifest differs from the one the quorum attests. */
  CONFLICTING_MANIFEST: 'conflicting_manifest',
  /** A chunk whose bytes do not match the attested manifest's hash. */
  BAD_CHUNK: 'bad_chunk',
  /** A chunk request beyond our bounds on chunk reads in flight (per peer or in total). */
  SERVING_FULL: 'serving_full',
} as const;

export type DropReasonCode = (typeof DropReason)[keyof typeof DropReason];

