// Every bound in the replica, in one place. A limit that is not here is a bug.
// Configuration may lower a limit, never raise it past these maxima (checked in core/config.ts).

const mebibyte = 1024 * 1024;
/** A proposed batch, in bytes. */
const batchBytesMax = 4 * mebibyte;

export const limits = {
  /**
   * Largest encoded message accepted from the network, before decoding. The largest a correct replica
   * builds is a STOPDATA: its last decision (one batch) and the values it wrote (at most two batches' worth).
   */
  messageBytesMax: 3 * batchBytesMax + mebibyte,
  /** Largest client operation (request payload). */
  operationBytesMax: 1024 * 1024,
  /** Longest client id (taken from the client's certificate in the real transport). */
  clientIdLengthMax: 128,
  /** Largest signature or digest carried in a message (Ed25519 signatures are 64 bytes, SHA-256 digests 32). */
  signatureBytesMax: 128,
  digestBytesMax: 64,
  /** A proposed batch: requests and bytes. */
  batchRequestsMax: 4096,
  batchBytesMax,
  /** Bytes of written values one STOPDATA carries (the accepted value first, then the latest written). */
  stopDataValuesBytesMax: 2 * batchBytesMax,
  /** Requests waiting to be ordered, over all clients; beyond it clients get BUSY. */
  pendingRequestsMax: 50_000,
  /** Requests one client may have waiting at once; beyond it that client gets BUSY. */
  clientInFlightMax: 64,
  /** Clients whose sequence numbers the replicated state tracks. */
  clientsMax: 100_000,
  /** Messages whose signatures the replica verifies at once (the verify stage); beyond, input is shed. */
  verifyingMessagesMax: 4096,
  /** Requests carried in one FORWARD or STOP message. */
  requestsPerMessageMax: 1024,
  /** How far ahead of the open instance a message may be and still be kept for later. */
  instancesAheadMax: 32,
  /** Messages kept for instances or regencies not reached yet. */
  futureMessagesMax: 8192,
  /** Distinct values one replica has written in one instance (one per regency at most). */
  writeSetMax: 16,
  /** Decided instances kept in memory to help lagging replicas catch up without a checkpoint. */
  decisionsRetainedMax: 512,
  /** Decisions sent in answer to one catch-up request. */
  decisionsPerFetchMax: 16,
  /** Members of a view. */
  membersMax: 64,
  /** Leader-change timeouts double with each failed regency up to this factor. */
  regencyTimeoutBackoffMax: 64,
  /** Largest result of one operation, carried in a REPLY. */
  resultBytesMax: 1024 * 1024,
  /** Containers nested in one decoded message or batch; the deepest message (SYNC) needs 6. */
  messageNestingDepthMax: 16,
  /** Keys in one map of a decoded message; the largest object has 7, the rest is room for new fields. */
  messageMapEntriesMax: 32,
} as const;

export type Limits = typeof limits;
