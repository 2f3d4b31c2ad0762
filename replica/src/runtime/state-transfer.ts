// State transfer (DESIGN §5, issue 5): a replica that recovers, lags or joins fetches the newest
// checkpoint that enough replicas attest, chunk by chunk from several of them, and installs it into its
// checkpoint store; every replica also serves its own checkpoints to the others.
//
// Trust: an offer counts only if its sender (taken from TLS by the driver, never from the message) is a
// member of the view and signed the manifest's digest; a manifest is chosen only once f+1 members
// (crash mode: 1) attest the very same digest, so at least one correct replica vouches for every chunk
// hash in it. Each chunk is then checked against that manifest as it arrives, and a bad one is blamed on
// the replica that sent it and fetched again from another. A Byzantine replica can slow a transfer down
// but neither corrupt it nor stop it while f+1 correct replicas serve.
//
// Memory: a fetch holds at most `parallel` chunks (the store's install() asks for that many at once);
// serving holds at most limits.stateTransferChunkReadsMax chunks, whatever the peers ask.

import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import { limits } from '../constants.ts';
import { BftError, invariant } from '../errors.ts';
import { LogLimiter } from '../log-limiter.ts';
import type { ReplicaId, View } from '../core/view.ts';
import { quorumsFor } from '../core/quorum.ts';
import {
  MessageType,
  type CheckpointOffer,
  type CheckpointOfferMessage,
  type Chunk,
  type ChunkRequest,
  type CheckpointRequest,
  type StateTransferMessage,
} from '../protocol/messages.ts';
import { DropReason, type DropReasonCode } from '../protocol/reasons.ts';
import {
  checkpointPartNames,
  manifestDigest,
  validateManifest,
  type CheckpointPartName,
  type CheckpointStore,
  type FetchChunk,
  type Manifest,
} from '../storage/checkpoint-store.ts';
import { bytesEqual } from '../bytes.ts';

// --- Attestations and offers ----------------------------------------------------------------------------

const attestationDomain = new TextEncoder().encode('bftkube/checkpoint-attestation/v1');
const digestBytes = 32;
const chunkHashBytes = 32;

/**
 * What a replica signs to attest a checkpoint: a domain tag, then the manifest's digest. The tag keeps
 * the signature from ever verifying as an ACCEPT, a collect or a request (those payloads are msgpack
 * arrays, whose first byte is never this tag's 'b'), and the digest has a fixed length, so the
 * concatenation is unambiguous.
 */
export function attestationPayload(digest: Uint8Array): Uint8Array {
  invariant(digest.length === digestBytes, `a manifest digest has ${digestBytes} bytes, not ${digest.length}`);
  const payload = new Uint8Array(attestationDomain.length + digestBytes);
  payload.set(attestationDomain, 0);
  payload.set(digest, attestationDomain.length);
  return payload;
}

/** Part codes on the wire (messages.ts: 1 service, 2 replies, 3 view): the manifest's order, counted from 1. */
function partCode(name: CheckpointPartName): number {
  return checkpointPartNames.indexOf(name) + 1;
}

/** A manifest as it travels, with the sender's signature over attestationPayload(manifestDigest(manifest)). */
export function offerOf(manifest: Manifest, signature: Uint8Array): CheckpointOffer {
  const chunkHashes = new Uint8Array(manifest.chunkHashes.length * chunkHashBytes);
  manifest.chunkHashes.forEach((hash, index) => chunkHashes.set(hash, index * chunkHashBytes));
  return {
    cid: manifest.cid,
    viewNumber: manifest.viewNumber,
    parts: manifest.parts.map((part) => ({ code: partCode(part.name), bytes: part.bytes })),
    totalBytes: manifest.totalBytes,
    chunkBytes: manifest.chunkBytes,
    chunkHashes,
    signature,
  };
}

export type ManifestCheck = ReturnType<typeof validateManifest>;

/**
 * The manifest an offer from `createdBy` describes, validated (part codes, sizes, hash count). Never
 * throws. The signature is not checked here: it needs the sender's key (see StateTransfer). The hashes
 * are copied, so a kept manifest does not pin the frame it arrived in.
 */
export function manifestOf(offer: CheckpointOffer, createdBy: ReplicaId): ManifestCheck {
  const parts: { name: CheckpointPartName; bytes: number }[] = [];
  for (const part of offer.parts) {
    const name = checkpointPartNames[part.code - 1];
    if (name === undefined) return { ok: false, detail: `unknown part code ${part.code}` };
    parts.push({ name, bytes: part.bytes });
  }
  if (offer.chunkHashes.length % chunkHashBytes !== 0) {
    return { ok: false, detail: `chunk hashes of ${offer.chunkHashes.length} bytes, not a multiple of ${chunkHashBytes}` };
  }
  const count = offer.chunkHashes.length / chunkHashBytes;
  if (count > limits.checkpointChunksMax) return { ok: false, detail: `${count} chunks, more than checkpointChunksMax` };
  const copy = new Uint8Array(offer.chunkHashes);
  const chunkHashes: Uint8Array[] = [];
  for (let index = 0; index < count; index++) {
    chunkHashes.push(copy.subarray(index * chunkHashBytes, (index + 1) * chunkHashBytes));
  }
  return validateManifest({
    version: 1,
    cid: offer.cid,
    viewNumber: offer.viewNumber,
    parts,
    totalBytes: offer.totalBytes,
    chunkBytes: offer.chunkBytes,
    chunkHashes,
    createdBy,
  });
}

// --- Options and status ---------------------------------------------------------------------------------

export interface StateTransferOptions {
  readonly me: ReplicaId;
  /** Members (whose offers count and who are asked) and n, f, mode: the attestation quorum is f+1 (crash: 1). */
  readonly view: View;
  /** Serves our checkpoints; install() writes fetched ones. */
  readonly store: CheckpointStore;
  /** The driver encodes and sends; it must not throw (a link that is down queues or drops). */
  send(to: ReplicaId, message: StateTransferMessage): void;
  /** Ed25519 with this replica's key. */
  sign(payload: Uint8Array): Uint8Array;
  /** Whether `signature` is replica `replica`'s on `payload`; false (or a throw) for an unknown replica. */
  verify(replica: ReplicaId, payload: Uint8Array, signature: Uint8Array): boolean | Promise<boolean>;
  readonly logger?: Logger;
  /** Chunks fetched at once (memory: about this many chunks). Default limits.checkpointInstallParallelDefault. */
  readonly parallel?: number;
  /** One attempt at one chunk from one replica fails after this long. Default limits.checkpointChunkFetchTimeoutMsDefault. */
  readonly attemptTimeoutMs?: number;
  /** A fetch fails if no checkpoint has its quorum of attestations within this long. Default limits.stateTransferOfferWaitMsDefault. */
  readonly offerWaitMs?: number;
  /** A fetch re-asks for offers this often while it has no quorum. Default limits.stateTransferOfferRetryMs. */
  readonly offerRetryMs?: number;
}

export type StateTransferState = 'idle' | 'collecting-offers' | 'fetching' | 'installed' | 'failed';

export interface StateTransferStatus {
  readonly state: StateTransferState;
  /** The fetch's lower bound on the instance, while or since it ran; null before the first fetch. */
  readonly minCid: number | null;
  /** The chosen checkpoint's instance, once a quorum attests one. */
  readonly cid: number | null;
  /** Members whose signed offer of the chosen manifest counted (at least the quorum). */
  readonly attesters: readonly ReplicaId[];
  readonly chunksTotal: number;
  /** Chunks verified and written into the store (from the store's own progress). */
  readonly chunksInstalled: number;
  readonly bytesTotal: number;
  /** Bytes of good chunks received in this transfer. */
  readonly bytesFetched: number;
  /** Replicas that delivered at least one good chunk in this transfer, ascending. */
  readonly sources: readonly ReplicaId[];
  readonly chunksBySource: Readonly<Record<ReplicaId, number>>;
  /** Since this module started: chunks that did not match the attested manifest, by sender. */
  readonly badChunksByReplica: Readonly<Record<ReplicaId, number>>;
  /** Since this module started: offers refused (bad signature, invalid or conflicting manifest), by sender. */
  readonly badOffersByReplica: Readonly<Record<ReplicaId, number>>;
  /** Wall-clock start of the current or last fetch (ms since the epoch), or null. */
  readonly startedAtMs: number | null;
  /** How long the last fetch took, or the current one has taken so far. */
  readonly durationMs: number | null;
  readonly lastError: { readonly code: string; readonly message: string } | null;
  readonly serving: {
    readonly offersAnswered: number;
    readonly chunksServed: number;
    /** Chunk requests answered with empty bytes (pruned, unknown or damaged checkpoint). */
    readonly chunksMissing: number;
    readonly chunkReadsInFlight: number;
  };
  /** Every input dropped, by reason, since this module started. */
  readonly drops: Readonly<Record<string, number>>;
}

// --- The module -----------------------------------------------------------------------------------------

interface VerifiedOffer {
  readonly cid: number;
  /** Hex of manifestDigest(manifest). */
  readonly digest: string;
  readonly manifest: Manifest;
}

interface PendingChunk {
  readonly expectedHash: Uint8Array;
  readonly expectedBytes: number;
  resolve(bytes: Uint8Array): void;
  reject(error: Error): void;
}

/** What one fetch knows; replaced by the next fetch, so nothing outlives it but counters. */
interface Transfer {
  readonly minCid: number;
  readonly startedAtMs: number;
  state: StateTransferState;
  finishedAtMs: number | null;
  /** Per member: the digests (hex) of its verified offers, newest first, at most stateTransferOffersPerPeerMax. */
  readonly offersBySender: Map<ReplicaId, { cid: number; digest: string }[]>;
  /** Manifests by digest (hex), shared by the senders that attest the same one. */
  readonly manifests: Map<string, Manifest>;
  /** Per member: how many offer messages it has sent us, so a late verification never overwrites a newer one. */
  readonly offerSequence: Map<ReplicaId, number>;
  /** Per member: an offer message waiting for its sender's previous one to be verified (the newest only). */
  readonly offerWaiting: Map<ReplicaId, { message: CheckpointOfferMessage; sequence: number }>;
  readonly offerVerifying: Set<ReplicaId>;
  chosen: { manifest: Manifest; digest: string } | null;
  /** Attesters of the chosen digest: whom chunks are asked from. */
  readonly sources: ReplicaId[];
  /** Sources that sent a bad chunk in this transfer: asked again only when no other source is left. */
  readonly blamed: Set<ReplicaId>;
  readonly pending: Map<string, PendingChunk>;
  readonly chunksBySource: Map<ReplicaId, number>;
  bytesFetched: number;
  error: BftError | null;
  /** Wakes the waiting fetch when a quorum appears (or the transfer stops). */
  wake: () => void;
}

function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString('hex');
}

function sha256(bytes: Uint8Array): Uint8Array {
  return createHash('sha256').update(bytes).digest();
}

function pendingKey(from: ReplicaId, cid: number, index: number): string {
  return `${from}:${cid}:${index}`;
}

function checkOption(name: string, value: number | undefined, min: number, max: number, fallback: number): number {
  if (value === undefined) return fallback;
  if (!(Number.isSafeInteger(value) && value >= min && value <= max)) {
    throw new BftError('BFT_ERR_CONFIG_INVALID', `state transfer: ${name} must be an integer in ${min}..${max}, not ${value}`);
  }
  return value;
}

function errorCodeOf(error: unknown): string {
  return error instanceof BftError ? error.code : 'BFT_ERR_INVARIANT';
}

/** Both roles of state transfer for one replica: serving our checkpoints, and fetching one. */
export class StateTransfer {
  private readonly options: StateTransferOptions;
  private readonly parallel: number;
  private readonly attemptTimeoutMs: number;
  private readonly offerWaitMs: number;
  private readonly offerRetryMs: number;
  private readonly logLimiter = new LogLimiter();
  private view: View;
  private members: ReadonlySet<ReplicaId>;
  private quorum: number;
  private closed = false;
  private transfer: Transfer | null = null;

  // Serving.
  /** Our signed offer per checkpoint instance: signing and concatenating hashes once per checkpoint. */
  private readonly offerCache = new Map<number, CheckpointOffer>();
  private readonly lastOfferAnswerMs = new Map<ReplicaId, number>();
  private readonly chunkReadsByPeer = new Map<ReplicaId, number>();
  private chunkReadsInFlight = 0;
  private offersAnswered = 0;
  private chunksServed = 0;
  private chunksMissing = 0;

  // Blame and drops, since start.
  private readonly badChunks = new Map<ReplicaId, number>();
  private readonly badOffers = new Map<ReplicaId, number>();
  private readonly drops = new Map<string, number>();

  constructor(options: StateTransferOptions) {
    this.options = options;
    const { checkpointInstallParallelMax, checkpointInstallParallelDefault } = limits;
    this.parallel = checkOption('parallel', options.parallel, 1, checkpointInstallParallelMax, checkpointInstallParallelDefault);
    this.attemptTimeoutMs = checkOption(
      'attemptTimeoutMs',
      options.attemptTimeoutMs,
      1,
      limits.checkpointChunkFetchTimeoutMsMax,
      limits.checkpointChunkFetchTimeoutMsDefault,
    );
    const { stateTransferOfferWaitMsMax, stateTransferOfferWaitMsDefault, stateTransferOfferRetryMs } = limits;
    this.offerWaitMs = checkOption('offerWaitMs', options.offerWaitMs, 1, stateTransferOfferWaitMsMax, stateTransferOfferWaitMsDefault);
    this.offerRetryMs = checkOption('offerRetryMs', options.offerRetryMs, 1, stateTransferOfferWaitMsMax, stateTransferOfferRetryMs);
    this.view = options.view;
    this.members = new Set(options.view.members);
    this.quorum = quorumsFor(options.view.members.length, options.view.f, options.view.mode).includesCorrect;
  }

  /**
   * A new view (reconfiguration): whom we ask and serve, and the quorum, from now on. Offers already
   * counted stay counted only if their sender is still a member.
   */
  setView(view: View): void {
    this.view = view;
    this.members = new Set(view.members);
    this.quorum = quorumsFor(view.members.length, view.f, view.mode).includesCorrect;
    const transfer = this.transfer;
    if (transfer === null) return;
    for (const sender of [...transfer.offersBySender.keys()]) {
      if (!this.members.has(sender)) transfer.offersBySender.delete(sender);
    }
    for (let i = transfer.sources.length - 1; i >= 0; i--) {
      if (!this.members.has(transfer.sources[i] as ReplicaId)) transfer.sources.splice(i, 1);
    }
  }

  /** A state-transfer message from `from` (authenticated by the transport, schema-checked by the codec). */
  receive(from: ReplicaId, message: StateTransferMessage): void {
    if (this.closed) return;
    if (from === this.options.me || !this.members.has(from)) return this.drop(DropReason.NOT_MEMBER, from, 'not a member of the view');
    switch (message.type) {
      case MessageType.CHECKPOINT_REQUEST:
        return this.onCheckpointRequest(from, message);
      case MessageType.CHECKPOINT_OFFER:
        return this.onCheckpointOffer(from, message);
      case MessageType.CHUNK_REQUEST:
        return this.onChunkRequest(from, message);
      case MessageType.CHUNK:
        return this.onChunk(from, message);
    }
  }

  /**
   * Fetches and installs (into the store) the newest checkpoint with cid ≥ minCid, and newer than the
   * store's latest, that enough replicas attest; resolves with its manifest. Fails with
   * BFT_ERR_STATE_TRANSFER_NO_QUORUM when no such checkpoint is attested within offerWaitMs,
   * BFT_ERR_CHECKPOINT_TRANSFER_FAILED when a chunk has no good copy, BFT_ERR_STATE_TRANSFER_ABORTED on
   * `signal`, BFT_ERR_CLOSED on close(); nothing is installed then.
   */
  async fetch(minCid: number, signal?: AbortSignal): Promise<Manifest> {
    invariant(Number.isSafeInteger(minCid) && minCid >= 0, `a state transfer's minCid is a non-negative integer, not ${minCid}`);
    if (this.closed) throw new BftError('BFT_ERR_CLOSED', 'state transfer is closed; create a new one to fetch');
    const running = this.transfer;
    if (running !== null && (running.state === 'collecting-offers' || running.state === 'fetching')) {
      throw new BftError('BFT_ERR_STATE_TRANSFER_BUSY', `a state transfer from instance ${running.minCid} is already running; await it`);
    }
    const latest = this.options.store.latest();
    const transfer: Transfer = {
      minCid: Math.max(minCid, latest === null ? 0 : latest.cid + 1),
      startedAtMs: Date.now(),
      state: 'collecting-offers',
      finishedAtMs: null,
      offersBySender: new Map(),
      manifests: new Map(),
      offerSequence: new Map(),
      offerWaiting: new Map(),
      offerVerifying: new Set(),
      chosen: null,
      sources: [],
      blamed: new Set(),
      pending: new Map(),
      chunksBySource: new Map(),
      bytesFetched: 0,
      error: null,
      wake: () => undefined,
    };
    this.transfer = transfer;
    const onAbort = () => {
      const cause: unknown = signal?.reason;
      this.stop(transfer, new BftError('BFT_ERR_STATE_TRANSFER_ABORTED', 'the caller aborted the state transfer', { cause }));
    };
    if (signal?.aborted === true) onAbort();
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      const chosen = await this.collectOffers(transfer);
      transfer.state = 'fetching';
      const { manifest } = chosen;
      this.options.logger?.info(
        { cid: manifest.cid, chunks: manifest.chunkHashes.length, totalBytes: manifest.totalBytes, attesters: transfer.sources },
        'state transfer: a quorum attests a checkpoint; fetching it',
      );
      const fetchChunk: FetchChunk = (index, attempt, attemptSignal) => this.fetchChunk(transfer, index, attempt, attemptSignal);
      await this.options.store.install(manifest, fetchChunk, { parallel: this.parallel, attemptTimeoutMs: this.attemptTimeoutMs });
      // Published: an abort or close that came during the last write is too late to undo it, so it is ignored.
      transfer.error = null;
      transfer.state = 'installed';
      transfer.finishedAtMs = Date.now();
      this.options.logger?.info(
        { cid: manifest.cid, sources: this.sortedSources(transfer), durationMs: transfer.finishedAtMs - transfer.startedAtMs },
        'state transfer: checkpoint installed',
      );
      return manifest;
    } catch (error) {
      const failure = transfer.error ?? error;
      transfer.state = 'failed';
      transfer.finishedAtMs = Date.now();
      transfer.error ??=
        failure instanceof BftError ? failure : new BftError('BFT_ERR_CHECKPOINT_IO', 'state transfer failed', { cause: failure });
      this.options.logger?.warn({ minCid: transfer.minCid, err: transfer.error }, 'state transfer: failed');
      throw transfer.error;
    } finally {
      signal?.removeEventListener('abort', onAbort);
      this.rejectPending(transfer, new BftError('BFT_ERR_CLOSED', 'the state transfer ended'));
      transfer.wake = () => undefined;
    }
  }

  status(): StateTransferStatus {
    const transfer = this.transfer;
    const install = this.options.store.stats().install;
    const chosen = transfer?.chosen?.manifest ?? null;
    const chunksInstalled =
      transfer !== null && chosen !== null && install !== null && install.cid === chosen.cid ? install.chunksInstalled : 0;
    const end = transfer?.finishedAtMs ?? Date.now();
    return {
      state: transfer?.state ?? 'idle',
      minCid: transfer?.minCid ?? null,
      cid: chosen?.cid ?? null,
      attesters: transfer === null ? [] : [...transfer.sources].sort((a, b) => a - b),
      chunksTotal: chosen?.chunkHashes.length ?? 0,
      chunksInstalled,
      bytesTotal: chosen?.totalBytes ?? 0,
      bytesFetched: transfer?.bytesFetched ?? 0,
      sources: transfer === null ? [] : this.sortedSources(transfer),
      chunksBySource: transfer === null ? {} : Object.fromEntries(transfer.chunksBySource),
      badChunksByReplica: Object.fromEntries(this.badChunks),
      badOffersByReplica: Object.fromEntries(this.badOffers),
      startedAtMs: transfer?.startedAtMs ?? null,
      durationMs: transfer === null ? null : end - transfer.startedAtMs,
      lastError: transfer?.error ? { code: transfer.error.code, message: transfer.error.message } : null,
      serving: {
        offersAnswered: this.offersAnswered,
        chunksServed: this.chunksServed,
        chunksMissing: this.chunksMissing,
        chunkReadsInFlight: this.chunkReadsInFlight,
      },
      drops: Object.fromEntries(this.drops),
    };
  }

  /** Stops serving and fails a fetch in progress with BFT_ERR_CLOSED. Reads in flight finish unanswered. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    const transfer = this.transfer;
    if (transfer !== null) this.stop(transfer, new BftError('BFT_ERR_CLOSED', 'state transfer was closed during a fetch'));
    this.offerCache.clear();
  }

  // --- Serving ---

  private onCheckpointRequest(from: ReplicaId, message: CheckpointRequest): void {
    // Answers are up to a few MiB (every chunk hash): a peer asking in a loop gets one per interval.
    // A monotonic clock, so that a wall-clock step back cannot silence a peer.
    const now = performance.now();
    const last = this.lastOfferAnswerMs.get(from);
    if (last !== undefined && now - last < limits.stateTransferOfferAnswerIntervalMs) return this.drop(DropReason.RATE_LIMITED, from);
    this.lastOfferAnswerMs.set(from, now);
    const manifests = this.options.store.list();
    // Forget signatures of pruned checkpoints: the cache holds at most what the store keeps.
    for (const cid of this.offerCache.keys()) {
      if (!manifests.some((manifest) => manifest.cid === cid)) this.offerCache.delete(cid);
    }
    const offers: CheckpointOffer[] = [];
    let hashBytes = 0;
    // Newest first while choosing, so the byte bound leaves out the oldest; sent newest last.
    for (let i = manifests.length - 1; i >= 0; i--) {
      const manifest = manifests[i] as Manifest;
      if (manifest.cid < message.minCid) break;
      hashBytes += manifest.chunkHashes.length * chunkHashBytes;
      if (hashBytes > limits.stateTransferOfferHashBytesMax && offers.length > 0) break;
      offers.unshift(this.signedOffer(manifest));
    }
    this.offersAnswered += 1;
    this.options.send(from, { type: MessageType.CHECKPOINT_OFFER, view: this.view.number, offers });
  }

  private signedOffer(manifest: Manifest): CheckpointOffer {
    let offer = this.offerCache.get(manifest.cid);
    if (offer === undefined) {
      offer = offerOf(manifest, this.options.sign(attestationPayload(manifestDigest(manifest))));
      this.offerCache.set(manifest.cid, offer);
    }
    return offer;
  }

  private onChunkRequest(from: ReplicaId, message: ChunkRequest): void {
    const { cid, index } = message;
    const manifest = this.options.store.list().find((candidate) => candidate.cid === cid);
    if (manifest === undefined || index >= manifest.chunkHashes.length) return this.answerChunk(from, cid, index, new Uint8Array(0));
    const byPeer = this.chunkReadsByPeer.get(from) ?? 0;
    if (byPeer >= limits.stateTransferChunkReadsPerPeerMax || this.chunkReadsInFlight >= limits.stateTransferChunkReadsMax) {
      return this.drop(DropReason.SERVING_FULL, from);
    }
    this.chunkReadsByPeer.set(from, byPeer + 1);
    this.chunkReadsInFlight += 1;
    this.options.store
      .readChunk(cid, index)
      .catch((error: unknown) => {
        // Pruned meanwhile, or damaged on our disk: the asker tries another replica.
        if (errorCodeOf(error) !== 'BFT_ERR_CHECKPOINT_MISSING') {
          this.options.logger?.error({ cid, index, err: error }, 'state transfer: cannot serve a chunk of our own checkpoint');
        }
        return new Uint8Array(0);
      })
      .then((bytes) => {
        const left = (this.chunkReadsByPeer.get(from) ?? 1) - 1;
        if (left === 0) this.chunkReadsByPeer.delete(from);
        else this.chunkReadsByPeer.set(from, left);
        this.chunkReadsInFlight -= 1;
        if (!this.closed) this.answerChunk(from, cid, index, bytes);
      })
      .catch((error: unknown) => this.options.logger?.error({ err: error }, 'state transfer: sending a chunk failed'));
  }

  private answerChunk(from: ReplicaId, cid: number, index: number, bytes: Uint8Array): void {
    if (bytes.length === 0) this.chunksMissing += 1;
    else this.chunksServed += 1;
    this.options.send(from, { type: MessageType.CHUNK, view: this.view.number, cid, index, bytes });
  }

  // --- Fetching: offers ---

  private onCheckpointOffer(from: ReplicaId, message: CheckpointOfferMessage): void {
    const transfer = this.transfer;
    if (transfer === null || (transfer.state !== 'collecting-offers' && transfer.state !== 'fetching')) {
      return this.drop(DropReason.UNSOLICITED, from);
    }
    const sequence = (transfer.offerSequence.get(from) ?? 0) + 1;
    transfer.offerSequence.set(from, sequence);
    // One verification per sender at a time; of what arrives meanwhile only the newest waits.
    if (transfer.offerVerifying.has(from)) {
      transfer.offerWaiting.set(from, { message, sequence });
      return;
    }
    this.verifyOffers(transfer, from, message, sequence);
  }

  private verifyOffers(transfer: Transfer, from: ReplicaId, message: CheckpointOfferMessage, sequence: number): void {
    // Newest first; older than asked for is not wrong, only useless.
    const candidates = message.offers
      .filter((offer) => offer.cid >= transfer.minCid)
      .sort((a, b) => b.cid - a.cid)
      .slice(0, limits.stateTransferOffersPerPeerMax);
    const checks: { cid: number; digest: Uint8Array; manifest: Manifest; verdict: boolean | Promise<boolean> }[] = [];
    for (const offer of candidates) {
      const checked = manifestOf(offer, from);
      if (!checked.ok) {
        this.blameOffer(from, DropReason.BAD_MANIFEST, `its offer of instance ${offer.cid} is ${checked.detail}`);
        continue;
      }
      const digest = manifestDigest(checked.manifest);
      let verdict: boolean | Promise<boolean>;
      try {
        verdict = this.options.verify(from, attestationPayload(digest), offer.signature);
      } catch {
        verdict = false;
      }
      checks.push({ cid: offer.cid, digest, manifest: checked.manifest, verdict });
    }
    const apply = (verdicts: readonly boolean[]) => {
      const accepted: VerifiedOffer[] = [];
      checks.forEach((check, i) => {
        if (verdicts[i] === true) accepted.push({ cid: check.cid, digest: hex(check.digest), manifest: check.manifest });
        else this.blameOffer(from, DropReason.BAD_SIGNATURE, `its offer of instance ${check.cid} is not signed by it`);
      });
      if (this.transfer !== transfer || transfer.offerSequence.get(from) !== sequence) return;
      this.recordOffers(transfer, from, accepted);
    };
    if (checks.every((check) => typeof check.verdict === 'boolean')) {
      apply(checks.map((check) => check.verdict as boolean));
      return;
    }
    transfer.offerVerifying.add(from);
    Promise.all(checks.map((check) => Promise.resolve(check.verdict).catch(() => false)))
      .then(apply)
      .catch((error: unknown) => this.options.logger?.error({ err: error }, 'state transfer: recording offers failed'))
      .finally(() => {
        transfer.offerVerifying.delete(from);
        const waiting = transfer.offerWaiting.get(from);
        transfer.offerWaiting.delete(from);
        if (waiting !== undefined && this.transfer === transfer && !this.closed) {
          this.verifyOffers(transfer, from, waiting.message, waiting.sequence);
        }
      });
  }

  private recordOffers(transfer: Transfer, from: ReplicaId, accepted: readonly VerifiedOffer[]): void {
    if (!this.members.has(from)) return;
    const chosen = transfer.chosen;
    if (chosen !== null) {
      // Once chosen, offers only add sources (more replicas to spread chunks over) or reveal conflicts.
      for (const offer of accepted) {
        if (offer.cid !== chosen.manifest.cid) continue;
        if (offer.digest !== chosen.digest) this.blameConflict(from, chosen.manifest.cid);
        else if (!transfer.sources.includes(from)) transfer.sources.push(from);
      }
      return;
    }
    transfer.offersBySender.set(
      from,
      accepted.map(({ cid, digest }) => ({ cid, digest })),
    );
    for (const { digest, manifest } of accepted) {
      if (!transfer.manifests.has(digest)) transfer.manifests.set(digest, manifest);
    }
    this.forgetUnattestedManifests(transfer);
    this.choose(transfer);
  }

  /** Manifests no sender offers any more (it sent a newer answer) go, so memory follows the senders' latest answers. */
  private forgetUnattestedManifests(transfer: Transfer): void {
    const attested = new Set<string>();
    for (const offers of transfer.offersBySender.values()) for (const offer of offers) attested.add(offer.digest);
    if (transfer.chosen !== null) attested.add(transfer.chosen.digest);
    for (const digest of [...transfer.manifests.keys()]) if (!attested.has(digest)) transfer.manifests.delete(digest);
  }

  /** Picks the newest instance whose digest the quorum attests, if any; then the fetch goes on. */
  private choose(transfer: Transfer): void {
    const attesters = new Map<string, ReplicaId[]>();
    for (const [sender, offers] of transfer.offersBySender) {
      for (const offer of offers) {
        const list = attesters.get(offer.digest) ?? [];
        list.push(sender);
        attesters.set(offer.digest, list);
      }
    }
    let best: { digest: string; manifest: Manifest; senders: ReplicaId[] } | null = null;
    for (const [digest, senders] of attesters) {
      if (senders.length < this.quorum) continue;
      const manifest = transfer.manifests.get(digest);
      invariant(manifest !== undefined, 'an attested digest has its manifest');
      // Two digests for one instance, each with a quorum, would mean a correct replica at a different state:
      // impossible within f faults. The larger quorum is taken, and the conflict blamed below.
      if (
        best === null ||
        manifest.cid > best.manifest.cid ||
        (manifest.cid === best.manifest.cid && senders.length > best.senders.length)
      ) {
        best = { digest, manifest, senders };
      }
    }
    if (best === null) return;
    transfer.chosen = { manifest: best.manifest, digest: best.digest };
    transfer.sources.push(...best.senders.sort((a, b) => a - b));
    for (const [sender, offers] of transfer.offersBySender) {
      if (offers.some((offer) => offer.cid === best.manifest.cid && offer.digest !== best.digest)) {
        this.blameConflict(sender, best.manifest.cid);
      }
    }
    transfer.offersBySender.clear();
    this.forgetUnattestedManifests(transfer);
    transfer.wake();
  }

  private async collectOffers(transfer: Transfer): Promise<{ manifest: Manifest; digest: string }> {
    const ask = () => {
      for (const member of this.view.members) {
        if (member !== this.options.me) {
          this.options.send(member, { type: MessageType.CHECKPOINT_REQUEST, view: this.view.number, minCid: transfer.minCid });
        }
      }
    };
    let retry: NodeJS.Timeout | undefined;
    let deadline: NodeJS.Timeout | undefined;
    try {
      await new Promise<void>((resolve) => {
        transfer.wake = resolve;
        retry = setInterval(ask, this.offerRetryMs);
        deadline = setTimeout(() => {
          if (transfer.chosen === null) this.stop(transfer, this.noQuorumError(transfer));
        }, this.offerWaitMs);
        ask();
        if (transfer.chosen !== null || transfer.error !== null) resolve();
      });
    } finally {
      clearInterval(retry);
      clearTimeout(deadline);
    }
    if (transfer.error !== null) throw transfer.error;
    invariant(transfer.chosen !== null, 'offer collection ends with a choice or an error');
    return transfer.chosen;
  }

  private noQuorumError(transfer: Transfer): BftError {
    const seen: string[] = [];
    for (const [sender, offers] of transfer.offersBySender) {
      const described = offers.map((offer) => `${offer.cid} (digest ${offer.digest.slice(0, 8)}…)`);
      seen.push(`replica ${sender}: ${described.join(', ') || 'none'}`);
    }
    return new BftError(
      'BFT_ERR_STATE_TRANSFER_NO_QUORUM',
      `no checkpoint of instance ${transfer.minCid} or later is attested by ${this.quorum} replicas of view ` +
        `${this.view.number} within ${this.offerWaitMs} ms (valid offers: ${seen.join('; ') || 'none'}); ` +
        `check that at least ${this.quorum} other replicas are up, reachable and have taken a checkpoint, then retry`,
    );
  }

  // --- Fetching: chunks ---

  /**
   * install()'s fetcher: chunk `index` from an attesting replica, rotated by index and attempt so that
   * chunks come from several replicas at once; checked here so that a bad one is blamed on its sender.
   */
  private fetchChunk(transfer: Transfer, index: number, attempt: number, signal: AbortSignal): Promise<Uint8Array> {
    if (transfer.error !== null) return Promise.reject(transfer.error);
    const chosen = transfer.chosen;
    invariant(chosen !== null, 'chunks are fetched only once a manifest is chosen');
    const { manifest } = chosen;
    const unblamed = transfer.sources.filter((source) => !transfer.blamed.has(source));
    const candidates = unblamed.length > 0 ? unblamed : transfer.sources;
    const source = candidates[(index + attempt) % candidates.length];
    invariant(source !== undefined, 'a chosen manifest has at least one attester');
    const expectedHash = manifest.chunkHashes[index];
    invariant(expectedHash !== undefined, `chunk ${index} is in the manifest`);
    const expectedBytes = Math.min(manifest.chunkBytes, manifest.totalBytes - index * manifest.chunkBytes);
    const key = pendingKey(source, manifest.cid, index);
    return new Promise<Uint8Array>((resolve, reject) => {
      const finish = () => {
        if (transfer.pending.get(key) === pending) transfer.pending.delete(key);
        signal.removeEventListener('abort', onAbort);
      };
      const onAbort = () => {
        finish();
        reject(signal.reason instanceof Error ? signal.reason : new Error(`asking replica ${source} for chunk ${index} was abandoned`));
      };
      const pending: PendingChunk = {
        expectedHash,
        expectedBytes,
        resolve: (bytes) => {
          finish();
          resolve(bytes);
        },
        reject: (error) => {
          finish();
          reject(error);
        },
      };
      if (signal.aborted) return onAbort();
      signal.addEventListener('abort', onAbort, { once: true });
      transfer.pending.get(key)?.reject(new Error(`a newer request for chunk ${index} to replica ${source} replaced this one`));
      transfer.pending.set(key, pending);
      this.options.send(source, { type: MessageType.CHUNK_REQUEST, view: this.view.number, cid: manifest.cid, index });
    });
  }

  private onChunk(from: ReplicaId, message: Chunk): void {
    const transfer = this.transfer;
    const pending = transfer?.pending.get(pendingKey(from, message.cid, message.index));
    if (transfer === null || pending === undefined) return this.drop(DropReason.UNSOLICITED, from);
    if (message.bytes.length === 0) {
      pending.reject(new Error(`replica ${from} no longer has chunk ${message.index} of checkpoint ${message.cid}`));
      return;
    }
    if (message.bytes.length !== pending.expectedBytes || !bytesEqual(sha256(message.bytes), pending.expectedHash)) {
      this.badChunks.set(from, (this.badChunks.get(from) ?? 0) + 1);
      transfer.blamed.add(from);
      this.drop(DropReason.BAD_CHUNK, from, `chunk ${message.index} of checkpoint ${message.cid} does not match the attested manifest`);
      pending.reject(new Error(`replica ${from} sent a chunk ${message.index} that does not match the attested manifest`));
      return;
    }
    transfer.bytesFetched += message.bytes.length;
    transfer.chunksBySource.set(from, (transfer.chunksBySource.get(from) ?? 0) + 1);
    pending.resolve(message.bytes);
  }

  // --- Internals ---

  /** Ends a transfer with `error`: the waiting fetch wakes, chunk requests fail so install() gives up at once. */
  private stop(transfer: Transfer, error: BftError): void {
    if (transfer.error !== null || transfer.state === 'installed' || transfer.state === 'failed') return;
    transfer.error = error;
    this.rejectPending(transfer, error);
    transfer.wake();
  }

  private rejectPending(transfer: Transfer, error: Error): void {
    for (const pending of [...transfer.pending.values()]) pending.reject(error);
    transfer.pending.clear();
  }

  private sortedSources(transfer: Transfer): ReplicaId[] {
    return [...transfer.chunksBySource.keys()].sort((a, b) => a - b);
  }

  private blameOffer(from: ReplicaId, reason: DropReasonCode, detail: string): void {
    this.badOffers.set(from, (this.badOffers.get(from) ?? 0) + 1);
    this.drop(reason, from, detail);
  }

  private blameConflict(from: ReplicaId, cid: number): void {
    const detail = `it attests a manifest of instance ${cid} other than the one the quorum attests`;
    this.blameOffer(from, DropReason.CONFLICTING_MANIFEST, detail);
  }

  private drop(reason: DropReasonCode, from: ReplicaId, detail?: string): void {
    this.drops.set(reason, (this.drops.get(reason) ?? 0) + 1);
    if (detail === undefined || this.options.logger === undefined) return;
    const { log, suppressedBefore } = this.logLimiter.allow(`${from}:${reason}`);
    if (log) this.options.logger.warn({ from, reason, suppressedBefore }, `state transfer: dropped input from replica ${from}: ${detail}`);
  }
}
