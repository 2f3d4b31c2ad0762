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
  /** Peer-triggered warnings: this many per peer per window reach the log; the rest are only counted. */
  logLimiterPerWindowMax: 5,
  logLimiterWindowMs: 60_000,
  logLimiterKeysMax: 1024,
  /**
   * Decided instances kept in memory to help lagging replicas catch up without a checkpoint, bounded by
   * count and by batch bytes: small decisions are a few hundred bytes, so a byte bound keeps many more.
   */
  decisionsRetainedMax: 100_000,
  decisionsRetainedBytesMax: 64 * mebibyte,
  /** What a retained decision costs beyond its batch (objects, votes and their signatures), for the bound above. */
  decisionRetainedOverheadBytes: 2048,
  /** Decisions sent in answer to one catch-up request. */
  decisionsPerFetchMax: 16,
  /** Batch bytes in one catch-up answer; it stops early rather than send a burst of huge batches. */
  catchUpAnswerBytesMax: 8 * mebibyte,
  /** Catch-up answers one peer gets per tick: enough to outrun the cluster, a bound on amplification. */
  catchUpAnswersPerTickMax: 4,
  /** Members of a view. */
  membersMax: 64,
  /** Operations in one reconfiguration request (adds, removes, a change of f). */
  reconfigurationOperationsMax: 16,
  /** An Ed25519 public key, raw. */
  replicaPublicKeyBytes: 32,
  /** An encoded signed reconfiguration request (a client operation of kind RECONFIGURATION). */
  reconfigurationBytesMax: 64 * 1024,
  reconfigurationNonceBytesMax: 64,
  /** A checkpoint's view part: viewEraHistoryMax memberships of membersMax members with their addresses and keys. */
  checkpointViewPartBytesMax: 1024 * 1024,
  /** Memberships a replica remembers (with the first instance each ordered), to check older views' certificates. */
  viewEraHistoryMax: 8,
  /** Why a reconfiguration was refused, as replicas answer it. */
  reconfigurationReasonLengthMax: 1024,
  /** Leader-change timeouts double with each failed regency up to this factor. */
  regencyTimeoutBackoffMax: 64,
  /** Largest result of one operation, carried in a REPLY. */
  resultBytesMax: 1024 * 1024,
  /** Containers nested in one decoded message or batch; the deepest message (SYNC) needs 6. */
  messageNestingDepthMax: 16,
  /** Keys in one map of a decoded message; the largest object has 7, the rest is room for new fields. */
  messageMapEntriesMax: 32,
  // The TLS transport (replica/src/transport) and the cluster's certificates (replica/src/crypto/certificates.ts).
  /** Characters of a client id in a certificate's subject (`client-<id>`, id of [A-Za-z0-9._-]). */
  certificateClientIdLengthMax: 64,
  /** Characters of a cluster name, which is the certificates' organisation (X.520 caps O at 64). */
  clusterNameLengthMax: 64,
  /** Lifetime of a certificate the local key tool issues. */
  certificateValidityDaysMax: 3650,
  /** Largest replica id a certificate may name. */
  replicaIdMax: 1_000_000,
  /** A TLS handshake (and the TCP connect before it) that takes longer is dropped. */
  tlsHandshakeTimeoutMs: 10_000,
  /** Client connections one replica holds at once; beyond it new ones are refused after the handshake. */
  clientConnectionsMax: 4096,
  /**
   * Connections of one client identity (certificate) at once: processes sharing a certificate each hold
   * one. Past it the identity's oldest connection is closed, as is one a restarted client left behind.
   */
  clientConnectionsPerIdentityMax: 64,
  /** A link to a replica that left the view stays usable this long, so that what is owed to it gets out. */
  retiredLinkGraceMs: 5_000,
  /**
   * service.thread auto: cores from which the service gets a worker thread of its own. Below, a replica's
   * main thread, the verification pool and its peers already contend for every core.
   */
  serviceWorkerCoresMin: 4,
  /** Client sessions whose reply connection a replica remembers; a forgotten one is answered on its identity's latest. */
  sessionRoutesMax: 65_536,
  /** Ordered requests a replica remembers it should answer by digest; a forgotten one gets its full reply. */
  digestReplyRequestsMax: 65_536,
  /** Connections still in their TLS handshake, over all peers; beyond it the server stops accepting. */
  handshakesPendingMax: 256,
  /** Encoded bytes waiting for one replica link (while disconnected or under backpressure); beyond it frames drop. */
  replicaLinkQueuedBytesMax: 64 * mebibyte,
  /** Encoded bytes waiting for one client connection; beyond it replies drop (the client re-sends). */
  clientLinkQueuedBytesMax: 4 * mebibyte,
  /** Reconnect backoff: the first retry waits about this long, doubling per failure up to the maximum. */
  reconnectDelayMinMs: 50,
  reconnectDelayMaxMs: 5_000,
  /** A peer that connects to us cuts our backoff toward it short, at most this often. */
  peerReturnRedialIntervalMinMs: 1_000,
  // The key-value service (replica/src/service/kv.ts).
  /** Longest key, in UTF-8 bytes. */
  kvKeyBytesMax: 1024,
  /**
   * Largest value. Small enough that a compare-and-set carrying two values fits in operationBytesMax,
   * and that one entry always fits in a range result.
   */
  kvValueBytesMax: 256 * 1024,
  /** Entries one range operation returns at most. */
  kvRangeEntriesMax: 10_000,
  /** Bytes of keys and values one range result carries at most (room for the envelope below resultBytesMax). */
  kvRangeResultBytesMax: 1024 * 1024 - 64 * 1024,
  /**
   * The state, counted as key and value bytes plus kvEntryOverheadBytes per entry (about the snapshot
   * size). Beyond it, writes that grow the state answer STORE_FULL.
   */
  kvStateBytesMax: 1024 * mebibyte,
  kvEntryOverheadBytes: 16,
  // The admin server (replica/src/server).
  /** Distinct values of one metric label fed by our own reason strings; beyond it they count as "other". */
  metricLabelValuesMax: 64,
  /** A replica configuration file larger than this is refused (it is a few kilobytes of JSON). */
  configFileBytesMax: 1024 * 1024,
  /** Verification worker threads in one pool. */
  verifyWorkersMax: 64,
  /**
   * Signatures handed to the verification pool and not yet answered; beyond it the pool refuses at once
   * (BFT_ERR_OVERLOADED) and the caller sheds load. Room for one full batch of signed requests and then
   * some: about a second of work for two workers at ~10k verifications/s each.
   */
  verifyQueuedItemsMax: 16_384,
  /** Public keys (as KeyObjects) each verification worker keeps; importing one costs several verifications. */
  verifyWorkerKeysCachedMax: 4096,
  /** Consecutive times a verification worker may die before it starts before the pool stops replacing it. */
  verifyWorkerStartFailuresMax: 5,
  /** Signatures already verified by the pool, kept so the core's synchronous checks are cache hits. */
  verifiedSignaturesCachedMax: 32_768,
  /** Client public keys (as KeyObjects) the replica's main thread keeps for synchronous verification. */
  clientKeysCachedMax: 4096,
  // The client library (replica/src/client).
  /** Ordered requests one client lets wait for an in-flight slot; beyond it calls fail with BFT_ERR_CLIENT_BUSY. */
  clientWaitingMax: 1024,
  /** Unordered (read-only) requests one client has outstanding at once. */
  clientUnorderedInFlightMax: 64,
  /** Ceiling of a client's retransmission backoff: a request is re-sent at least this often until answered. */
  clientRetransmitMsMax: 60_000,
  /** Longest a client lets a caller wait for an ordered or unordered result. */
  clientTimeoutMsMax: 3_600_000,
  // Connection files and key folders of applications (replica/src/client/connection.ts).
  /** A connection file (client.json) larger than this is refused: membersMax members with DNS names take about 20 KiB. */
  connectionFileBytesMax: 64 * 1024,
  /** One file of a client's key folder (a PEM certificate or key, client-id, signing.pub); larger is refused. */
  clientKeyFileBytesMax: 64 * 1024,
  /** Characters of a client session name, the part after `<certificate client id>/` (a UUID has 36). */
  clientSessionLengthMax: 63,
  /** Entries a key-value scan asks for when the caller does not say. */
  kvScanEntriesDefault: 100,
  // The write-ahead log (replica/src/storage/wal.ts).
  /** A segment file is rolled once the next record would take it past this size (configurable lower). */
  walSegmentBytesDefault: 64 * mebibyte,
  /** Largest segment size a configuration may ask for; recovery reads segments in bounded chunks anyway. */
  walSegmentBytesMax: 1024 * mebibyte,
  /** Smallest segment size a configuration may ask for (tests roll segments often with it). */
  walSegmentBytesMin: 4096,
  /**
   * Largest payload of one log record. The largest record is a decision: one batch and its certificate
   * (at most membersMax votes); the rest is room for the envelope.
   */
  walRecordBytesMax: batchBytesMax + mebibyte,
  /** Durability "batch": unsynced writes are fdatasync'd after at most this long (the default, and the ceiling). */
  walGroupCommitMsDefault: 5,
  walGroupCommitMsMax: 1_000,
  /** Appends waiting for the log writer, and their bytes; beyond either, append() refuses with BFT_ERR_OVERLOADED. */
  walQueuedAppendsMax: 4096,
  walQueuedBytesMax: 64 * mebibyte,
  /** Bytes one write + fdatasync carries at most (always at least one append, whatever its size). */
  walWriteGroupBytesMax: 16 * mebibyte,
  /** Recovery reads segment files in chunks of this size (grown only to hold one whole record). */
  walReadChunkBytes: mebibyte,
  // The checkpoint store (replica/src/storage/checkpoint-store.ts).
  /** A checkpoint's state is hashed, stored, served and fetched in chunks of this size (configurable within min..max). */
  checkpointChunkBytesDefault: mebibyte,
  checkpointChunkBytesMin: 4096,
  /** Small enough that one chunk travels in one message (messageBytesMax) with room to spare. */
  checkpointChunkBytesMax: 4 * mebibyte,
  /** Chunks in one checkpoint: 64 GiB of state at the default chunk size; bounds the manifest. */
  checkpointChunksMax: 65_536,
  /** Largest manifest file or message: checkpointChunksMax hashes of 32 bytes plus their encoding and the rest. */
  checkpointManifestBytesMax: 4 * mebibyte,
  /** Published checkpoints kept on disk (the default, and the most a configuration may ask for). */
  checkpointKeepDefault: 2,
  checkpointKeepMax: 16,
  /** Chunks one state transfer fetches at once; its memory is about this many chunks. */
  checkpointInstallParallelDefault: 4,
  checkpointInstallParallelMax: 16,
  /** Attempts at one chunk during a state transfer (each may ask another replica) before the transfer fails. */
  checkpointChunkAttemptsMax: 5,
  /** One attempt at one chunk that takes longer is abandoned and counts as failed (the default, and the ceiling). */
  checkpointChunkFetchTimeoutMsDefault: 30_000,
  checkpointChunkFetchTimeoutMsMax: 600_000,
  // State transfer (replica/src/runtime/state-transfer.ts).
  /** Chunk reads one peer may have us doing at once; beyond, its CHUNK_REQUESTs drop (it asks another replica). */
  stateTransferChunkReadsPerPeerMax: 8,
  /** Chunk reads for all peers at once: what serving holds in memory is at most this many chunks. */
  stateTransferChunkReadsMax: 16,
  /** A peer's CHECKPOINT_REQUESTs are answered at most once per this interval; the rest drop (answers are large). */
  stateTransferOfferAnswerIntervalMs: 100,
  /** Chunk-hash bytes in one CHECKPOINT_OFFER answer; older checkpoints are left out past it (fits messageBytesMax). */
  stateTransferOfferHashBytesMax: 8 * mebibyte,
  /** Offers kept per peer while collecting (its newest); the rest of its answer is ignored. */
  stateTransferOffersPerPeerMax: 4,
  /** A fetch re-asks every replica for offers this often until some checkpoint has its quorum. */
  stateTransferOfferRetryMs: 1_000,
  /** A fetch that finds no checkpoint attested by its quorum within this long fails (the default, and the ceiling). */
  stateTransferOfferWaitMsDefault: 30_000,
  stateTransferOfferWaitMsMax: 600_000,
  // The execute stage (replica/src/service/service-host.ts) and streamed snapshots (service.ts).
  /** Largest piece a service snapshot or the reply cache is cut into; a reader accepts pieces of any size. */
  snapshotPieceBytesMax: mebibyte,
  /** Snapshot pieces a service worker sends ahead of the consumer's acknowledgements (either direction). */
  snapshotPiecesAheadMax: 4,
  /** Decided batches handed to the execute stage and not yet executed; at the bound the driver waits. */
  executeQueueBatchesMax: 32,
  /** Unordered reads and cached-reply look-ups queued in the execute stage; beyond it reads are shed (BUSY). */
  executeQueueReadsMax: 4096,
  /** The throughput service's synthetic state (service/throughput.ts): up to what a checkpoint can hold. */
  throughputStateBytesMax: 64 * 1024 * mebibyte,
} as const;

export type Limits = typeof limits;

/**
 * Node flags every replica process starts with (the local cluster here; replica/Dockerfile and e2e/images.json
 * repeat them). A 16 MiB young generation: a replica allocates a message's worth of short-lived objects per
 * frame, and with the default one they were scavenged so often that survivors got promoted and collected again
 * in the old generation. Measured with npm run bench, 50 clients, 1 KiB: +7-10% ops/s, and a lower peak RSS.
 */
export const replicaNodeFlags: readonly string[] = ['--max-semi-space-size=16'];
