// Errors with stable codes, in the manner of fastify's FST_ERR_*: the code never changes meaning,
// the message says what to do.

export const errorCodes = {
  BFT_ERR_CONFIG_INVALID: 'the configuration is invalid',
  BFT_ERR_VIEW_INVALID: 'the view does not satisfy the fault model',
  BFT_ERR_INVARIANT: 'an internal invariant was violated (a bug in bftkube)',
  BFT_ERR_RESTORE_INVALID: 'the persisted state cannot be restored',
  BFT_ERR_KEYS_INVALID: 'the TLS key material is missing or invalid',
  BFT_ERR_TRANSPORT_LISTEN: 'the transport cannot listen on its address',
  BFT_ERR_SNAPSHOT_INVALID: 'a service snapshot is corrupt or not in the expected format',
  BFT_ERR_KV_OPERATION_INVALID: 'a key-value operation is outside what replicas accept',
  BFT_ERR_KV_REFUSED: 'the key-value service refused the operation (its reason follows); fix the operation, e.g. send writes ordered',
  BFT_ERR_KV_STORE_FULL: 'the key-value store is at its size bound; delete keys before writing more',
  BFT_ERR_KV_RESULT_INVALID:
    'a quorum of replicas answered with something that is not a key-value result: check that the cluster runs the key-value service',
  BFT_ERR_KV_VALUE_NOT_TEXT: 'the value is not valid UTF-8 text; read it as bytes instead',
  BFT_ERR_CONNECTION_INVALID:
    "the connection file (client.json) is missing, too large or malformed; take it from the cluster's ConfigMap <cluster>-config (key client.json) or the folder of `bftkube local`",
  BFT_ERR_SIGNING_KEY_INVALID: 'an Ed25519 signing or verification key is malformed or of another type',
  BFT_ERR_OVERLOADED: 'the component is at its bound and sheds load; retry later or lower the offered load',
  BFT_ERR_WORKER_FAILED: 'a worker thread died; its in-flight work was abandoned and may be retried',
  BFT_ERR_CLOSED: 'the component was closed and accepts no more work',
  BFT_ERR_CLIENT_TIMEOUT: 'a client request got no quorum of matching replies in time',
  BFT_ERR_CLIENT_BUSY: 'the client has as many requests outstanding and waiting as it allows',
  BFT_ERR_CLIENT_CLOSED: 'the client was closed',
  BFT_ERR_CLIENT_CANCELLED: 'the caller cancelled its wait for a request',
  BFT_ERR_CLIENT_OPERATION_TOO_LARGE: 'a client operation is larger than the replicas accept',
  BFT_ERR_CLIENT_SEQ_EXHAUSTED: 'a client id ran out of sequence numbers',
  BFT_ERR_PROTOCOL: 'a peer answered with something the protocol does not allow; it may be faulty',
  BFT_ERR_RECONFIGURATION_REFUSED:
    'the replicas refused a reconfiguration (the reason says why: a stale fromView, a reused id, an f the new size cannot tolerate); fix the request and submit it again',
  BFT_ERR_WAL_CORRUPT:
    'the write-ahead log is damaged before its tail; move the data directory away and let the replica recover by state transfer',
  BFT_ERR_WAL_IO: 'the write-ahead log could not read, write or sync its files; check the disk, then restart the replica',
  BFT_ERR_CHECKPOINT_CORRUPT:
    'a stored checkpoint is damaged; delete that checkpoint folder (or the data directory) and let the replica recover by state transfer',
  BFT_ERR_CHECKPOINT_IO: 'the checkpoint store could not read, write or sync its files; check the disk, then retry or restart the replica',
  BFT_ERR_CHECKPOINT_MISSING: 'the checkpoint store holds no such checkpoint, part or chunk (it may have been pruned); ask for a newer one',
  BFT_ERR_CHECKPOINT_STALE: 'the checkpoint is not newer than the latest one stored; checkpoints are only added in instance order',
  BFT_ERR_CHECKPOINT_MANIFEST_INVALID: 'a checkpoint manifest is malformed or inconsistent; obtain one that f+1 replicas attest',
  BFT_ERR_CHECKPOINT_TRANSFER_FAILED:
    'a state transfer could not get a chunk matching its manifest within its attempts; retry the state transfer later or from other replicas',
  BFT_ERR_STATE_TRANSFER_NO_QUORUM:
    'no checkpoint was attested by enough replicas in time; check that f+1 replicas (crash mode: 1) are up, reachable and hold a checkpoint, then retry',
  BFT_ERR_STATE_TRANSFER_BUSY: 'a state transfer is already running; wait for it to finish before starting another',
  BFT_ERR_STATE_TRANSFER_ABORTED: 'the state transfer was aborted by its caller; nothing was installed',
  BFT_ERR_SERVICE_FAILED:
    'the service threw while executing, or its worker died: the state is no longer trustworthy; fix the service, then restart the replica (it recovers from its log or its peers)',
  BFT_ERR_DATA_DIR_LOCKED:
    'another replica process is using the data directory; stop it first (two processes on one log would corrupt it)',
} as const;

export type ErrorCode = keyof typeof errorCodes;

export class BftError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(`${code}: ${message}`, options);
    this.name = 'BftError';
    this.code = code;
  }
}

/** Our own invariants only; untrusted input is validated and dropped, never asserted. */
export function invariant(condition: unknown, message: string): asserts condition {
  if (!condition) throw new BftError('BFT_ERR_INVARIANT', message);
}
