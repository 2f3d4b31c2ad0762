// State transfer in the simulator: the decision rule of runtime/state-transfer.ts, deterministic, over the
// simulated network with the real wire messages (CHECKPOINT_REQUEST / CHECKPOINT_OFFER / CHUNK_REQUEST /
// CHUNK through the real codec), the real manifest checks and attestation payload, and the sim's keys.
//
// Fetching: ask every member for its checkpoints of instance ≥ minCid (again every offerRetryMs); an offer
// counts only if its manifest is valid and its sender signed the manifest's digest; choose the newest
// instance whose digest f+1 members attest (crash mode: 1); fetch its chunks, `parallel` at a time, each
// from an attester rotated by chunk and attempt, skipping attesters that sent a bad chunk while any other
// is left; check every chunk against the manifest's hash, and ask another attester on a bad, missing or
// late chunk, up to limits.checkpointChunkAttemptsMax attempts per chunk. Fails when no quorum appears
// within offerWaitMs, or a chunk has no good copy.
//
// Serving: answer offers (at most once per stateTransferOfferAnswerIntervalMs per peer) with our kept
// checkpoints, newest last; answer a chunk from our disk after checking it against our manifest (a damaged
// or pruned chunk is answered empty, so the asker tries another replica).

import { limits } from '../../src/constants.ts';
import type { View } from '../../src/core/view.ts';
import {
  type Bytes,
  type CheckpointOffer,
  type CheckpointOfferMessage,
  type Chunk,
  type ChunkRequest,
  type CheckpointRequest,
  MessageType,
  type StateTransferMessage,
} from '../../src/protocol/messages.ts';
import { DropReason, type DropReasonCode } from '../../src/protocol/reasons.ts';
import { attestationPayload, manifestOf, offerOf } from '../../src/runtime/state-transfer.ts';
import { type Manifest, manifestDigest } from '../../src/storage/checkpoint-store.ts';
import { type SimCheckpoint, concatBytes, readChunk, sha256 } from './disk.ts';

/** Simulated time bounds of one fetch: short, so that runs see transfers fail and start again. */
export const simStateTransferTiming = {
  offerRetryMs: 200,
  offerWaitMs: 3000,
  chunkAttemptTimeoutMs: 300,
  parallel: limits.checkpointInstallParallelDefault,
} as const;

export interface StateTransferHost {
  readonly me: number;
  readonly view: View;
  /** Attesters needed: f+1 (crash mode: 1). */
  readonly quorum: number;
  now(): number;
  /** Runs `action` after `delayMs` unless this incarnation of the replica is gone by then. */
  after(delayMs: number, action: () => void): void;
  send(to: number, message: StateTransferMessage): void;
  sign(payload: Bytes): Bytes;
  verify(replica: number, payload: Bytes, signature: Bytes): boolean;
  /** Our kept checkpoints, oldest first. */
  checkpoints(): readonly SimCheckpoint[];
  /** A fetch assembled checkpoint `checkpoint`, every chunk matching the manifest `attesters` signed. */
  fetched(checkpoint: SimCheckpoint, attesters: readonly number[]): void;
  /** A fetch failed: nothing was installed. */
  failed(reason: string): void;
  log(line: string): void;
}

interface Fetch {
  readonly minCid: number;
  readonly startedMs: number;
  readonly offersBySender: Map<number, { cid: number; digest: string }[]>;
  readonly manifests: Map<string, Manifest>;
  chosen: { manifest: Manifest; digest: string } | null;
  readonly sources: number[];
  readonly blamed: Set<number>;
  chunks: (Uint8Array | null)[];
  attempts: number[];
  /** `${source}:${index}` → the attempt it answers. */
  readonly pending: Map<string, number>;
  nextIndex: number;
  inFlight: number;
  done: boolean;
}

export interface SimStateTransferStats {
  readonly fetchesStarted: number;
  readonly fetchesInstalled: number;
  readonly fetchesFailed: number;
  readonly badChunksByReplica: Readonly<Record<number, number>>;
  readonly badOffersByReplica: Readonly<Record<number, number>>;
  readonly chunksServed: number;
  readonly chunksMissing: number;
  readonly drops: Readonly<Record<string, number>>;
}

function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString('hex');
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.from(a.buffer, a.byteOffset, a.length).equals(b);
}

export class SimStateTransfer {
  private readonly host: StateTransferHost;
  private fetch: Fetch | null = null;
  private readonly offerCache = new Map<number, { digest: string; offer: CheckpointOffer }>();
  private readonly lastOfferAnswerMs = new Map<number, number>();
  private fetchesStarted = 0;
  private fetchesInstalled = 0;
  private fetchesFailed = 0;
  private chunksServed = 0;
  private chunksMissing = 0;
  private readonly badChunks = new Map<number, number>();
  private readonly badOffers = new Map<number, number>();
  private readonly drops = new Map<string, number>();

  constructor(host: StateTransferHost) {
    this.host = host;
  }

  stats(): SimStateTransferStats {
    return {
      fetchesStarted: this.fetchesStarted,
      fetchesInstalled: this.fetchesInstalled,
      fetchesFailed: this.fetchesFailed,
      badChunksByReplica: Object.fromEntries(this.badChunks),
      badOffersByReplica: Object.fromEntries(this.badOffers),
      chunksServed: this.chunksServed,
      chunksMissing: this.chunksMissing,
      drops: Object.fromEntries(this.drops),
    };
  }

  receive(from: number, message: StateTransferMessage): void {
    if (from === this.host.me || !this.host.view.members.includes(from)) return this.drop(DropReason.NOT_MEMBER);
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

  /** Fetches the newest checkpoint of instance ≥ minCid that the quorum attests; the host hears how it ends. */
  start(minCid: number): void {
    const newest = this.host.checkpoints().at(-1);
    const fetch: Fetch = {
      minCid: Math.max(minCid, newest === undefined ? 0 : newest.manifest.cid + 1),
      startedMs: this.host.now(),
      offersBySender: new Map(),
      manifests: new Map(),
      chosen: null,
      sources: [],
      blamed: new Set(),
      chunks: [],
      attempts: [],
      pending: new Map(),
      nextIndex: 0,
      inFlight: 0,
      done: false,
    };
    this.fetch = fetch;
    this.fetchesStarted++;
    this.host.log(`r${this.host.me} state transfer: asks for a checkpoint of instance ≥ ${fetch.minCid}`);
    this.askOffers(fetch);
    this.host.after(simStateTransferTiming.offerWaitMs, () => {
      if (this.fetch === fetch && !fetch.done && fetch.chosen === null) {
        this.fail(fetch, `no checkpoint of instance ≥ ${fetch.minCid} attested by ${this.host.quorum} replicas within ${simStateTransferTiming.offerWaitMs} ms`);
      }
    });
  }

  // --- Serving -------------------------------------------------------------------------------------

  private onCheckpointRequest(from: number, message: CheckpointRequest): void {
    const now = this.host.now();
    const last = this.lastOfferAnswerMs.get(from);
    if (last !== undefined && now - last < limits.stateTransferOfferAnswerIntervalMs) return this.drop(DropReason.RATE_LIMITED);
    this.lastOfferAnswerMs.set(from, now);
    const kept = this.host.checkpoints();
    for (const cid of [...this.offerCache.keys()]) if (!kept.some((c) => c.manifest.cid === cid)) this.offerCache.delete(cid);
    const offers: CheckpointOffer[] = [];
    for (const checkpoint of kept) {
      if (checkpoint.manifest.cid >= message.minCid) offers.push(this.signedOffer(checkpoint.manifest));
    }
    const answer: CheckpointOfferMessage = { type: MessageType.CHECKPOINT_OFFER, view: this.host.view.number, offers };
    this.host.send(from, answer);
  }

  private signedOffer(manifest: Manifest): CheckpointOffer {
    let cached = this.offerCache.get(manifest.cid);
    if (cached === undefined) {
      const digest = manifestDigest(manifest);
      cached = { digest: hex(digest), offer: offerOf(manifest, this.host.sign(attestationPayload(digest))) };
      this.offerCache.set(manifest.cid, cached);
    }
    return cached.offer;
  }

  private onChunkRequest(from: number, message: ChunkRequest): void {
    const checkpoint = this.host.checkpoints().find((c) => c.manifest.cid === message.cid);
    // The store checks every chunk it reads against its manifest: a damaged one is not served.
    const bytes = checkpoint === undefined ? null : readChunk(checkpoint, message.index);
    if (bytes === null) this.chunksMissing++;
    else this.chunksServed++;
    const answer: Chunk = { type: MessageType.CHUNK, view: this.host.view.number, cid: message.cid, index: message.index, bytes: bytes ?? new Uint8Array(0) };
    this.host.send(from, answer);
  }

  // --- Fetching: offers -----------------------------------------------------------------------------

  private askOffers(fetch: Fetch): void {
    if (this.fetch !== fetch || fetch.done || fetch.chosen !== null) return;
    for (const member of this.host.view.members) {
      if (member !== this.host.me) this.host.send(member, { type: MessageType.CHECKPOINT_REQUEST, view: this.host.view.number, minCid: fetch.minCid });
    }
    this.host.after(simStateTransferTiming.offerRetryMs, () => this.askOffers(fetch));
  }

  private onCheckpointOffer(from: number, message: CheckpointOfferMessage): void {
    const fetch = this.fetch;
    if (fetch === null || fetch.done) return this.drop(DropReason.UNSOLICITED);
    const candidates = message.offers
      .filter((offer) => offer.cid >= fetch.minCid)
      .sort((a, b) => b.cid - a.cid)
      .slice(0, limits.stateTransferOffersPerPeerMax);
    const accepted: { cid: number; digest: string; manifest: Manifest }[] = [];
    for (const offer of candidates) {
      const checked = manifestOf(offer, from);
      if (!checked.ok) {
        this.blameOffer(from, DropReason.BAD_MANIFEST);
        continue;
      }
      const digest = manifestDigest(checked.manifest);
      if (!this.host.verify(from, attestationPayload(digest), offer.signature)) {
        this.blameOffer(from, DropReason.BAD_SIGNATURE);
        continue;
      }
      accepted.push({ cid: offer.cid, digest: hex(digest), manifest: checked.manifest });
    }
    const chosen = fetch.chosen;
    if (chosen !== null) {
      for (const offer of accepted) {
        if (offer.cid !== chosen.manifest.cid) continue;
        if (offer.digest !== chosen.digest) this.blameOffer(from, DropReason.CONFLICTING_MANIFEST);
        else if (!fetch.sources.includes(from)) fetch.sources.push(from);
      }
      return;
    }
    fetch.offersBySender.set(
      from,
      accepted.map(({ cid, digest }) => ({ cid, digest })),
    );
    for (const { digest, manifest } of accepted) if (!fetch.manifests.has(digest)) fetch.manifests.set(digest, manifest);
    this.choose(fetch);
  }

  /** The newest instance whose digest the quorum attests, if any; then chunks are fetched. */
  private choose(fetch: Fetch): void {
    const attesters = new Map<string, number[]>();
    for (const [sender, offers] of fetch.offersBySender) {
      for (const offer of offers) attesters.set(offer.digest, [...(attesters.get(offer.digest) ?? []), sender]);
    }
    let best: { digest: string; manifest: Manifest; senders: number[] } | null = null;
    for (const [digest, senders] of attesters) {
      if (senders.length < this.host.quorum) continue;
      const manifest = fetch.manifests.get(digest) as Manifest;
      if (best === null || manifest.cid > best.manifest.cid || (manifest.cid === best.manifest.cid && senders.length > best.senders.length)) {
        best = { digest, manifest, senders };
      }
    }
    if (best === null) return;
    fetch.chosen = { manifest: best.manifest, digest: best.digest };
    fetch.sources.push(...[...best.senders].sort((a, b) => a - b));
    for (const [sender, offers] of fetch.offersBySender) {
      if (offers.some((offer) => offer.cid === best.manifest.cid && offer.digest !== best.digest)) this.blameOffer(sender, DropReason.CONFLICTING_MANIFEST);
    }
    fetch.offersBySender.clear();
    fetch.manifests.clear();
    const count = best.manifest.chunkHashes.length;
    fetch.chunks = Array.from({ length: count }, () => null);
    fetch.attempts = Array.from({ length: count }, () => 0);
    this.host.log(
      `r${this.host.me} state transfer: checkpoint ${best.manifest.cid} (${count} chunks, ${best.manifest.totalBytes} B) attested by ${fetch.sources.map((s) => `r${s}`).join(' ')}`,
    );
    this.fillWindow(fetch);
  }

  // --- Fetching: chunks -----------------------------------------------------------------------------

  private fillWindow(fetch: Fetch): void {
    while (!fetch.done && fetch.inFlight < simStateTransferTiming.parallel && fetch.nextIndex < fetch.chunks.length) {
      const index = fetch.nextIndex++;
      fetch.inFlight++;
      this.requestChunk(fetch, index);
    }
    if (!fetch.done && fetch.inFlight === 0 && fetch.nextIndex >= fetch.chunks.length) this.complete(fetch);
  }

  private requestChunk(fetch: Fetch, index: number): void {
    const chosen = fetch.chosen as { manifest: Manifest };
    const attempt = fetch.attempts[index] as number;
    const unblamed = fetch.sources.filter((source) => !fetch.blamed.has(source));
    const candidates = unblamed.length > 0 ? unblamed : fetch.sources;
    const source = candidates[(index + attempt) % candidates.length] as number;
    const key = `${source}:${index}`;
    fetch.pending.set(key, attempt);
    this.host.send(source, { type: MessageType.CHUNK_REQUEST, view: this.host.view.number, cid: chosen.manifest.cid, index });
    this.host.after(simStateTransferTiming.chunkAttemptTimeoutMs, () => {
      if (this.fetch === fetch && !fetch.done && fetch.pending.get(key) === attempt && fetch.attempts[index] === attempt) {
        fetch.pending.delete(key);
        this.attemptFailed(fetch, index, `r${source} did not answer in time`);
      }
    });
  }

  private attemptFailed(fetch: Fetch, index: number, why: string): void {
    const attempts = (fetch.attempts[index] as number) + 1;
    fetch.attempts[index] = attempts;
    if (attempts >= limits.checkpointChunkAttemptsMax) {
      this.fail(fetch, `chunk ${index} has no good copy after ${attempts} attempts (last: ${why})`);
      return;
    }
    this.requestChunk(fetch, index);
  }

  private onChunk(from: number, message: Chunk): void {
    const fetch = this.fetch;
    const chosen = fetch?.chosen;
    const key = `${from}:${message.index}`;
    if (fetch === null || fetch.done || chosen === undefined || chosen === null || chosen.manifest.cid !== message.cid || !fetch.pending.has(key)) {
      return this.drop(DropReason.UNSOLICITED);
    }
    const attempt = fetch.pending.get(key) as number;
    fetch.pending.delete(key);
    if (attempt !== fetch.attempts[message.index] || fetch.chunks[message.index] !== null) return this.drop(DropReason.UNSOLICITED);
    const { manifest } = chosen;
    if (message.bytes.length === 0) return this.attemptFailed(fetch, message.index, `r${from} no longer has it`);
    const expectedBytes = Math.min(manifest.chunkBytes, manifest.totalBytes - message.index * manifest.chunkBytes);
    const expectedHash = manifest.chunkHashes[message.index] as Uint8Array;
    if (message.bytes.length !== expectedBytes || !equalBytes(sha256(message.bytes), expectedHash)) {
      this.badChunks.set(from, (this.badChunks.get(from) ?? 0) + 1);
      fetch.blamed.add(from);
      this.drop(DropReason.BAD_CHUNK);
      this.host.log(`r${this.host.me} state transfer: chunk ${message.index} from r${from} does not match the manifest`);
      return this.attemptFailed(fetch, message.index, `r${from} sent a bad copy`);
    }
    fetch.chunks[message.index] = new Uint8Array(message.bytes);
    fetch.inFlight--;
    this.fillWindow(fetch);
  }

  private complete(fetch: Fetch): void {
    fetch.done = true;
    const { manifest } = fetch.chosen as { manifest: Manifest };
    const bytes = concatBytes(fetch.chunks as Uint8Array[]);
    this.fetchesInstalled++;
    this.host.log(`r${this.host.me} state transfer: fetched checkpoint ${manifest.cid} in ${this.host.now() - fetch.startedMs} ms`);
    this.host.fetched({ manifest, bytes }, [...fetch.sources].sort((a, b) => a - b));
  }

  private fail(fetch: Fetch, reason: string): void {
    if (fetch.done) return;
    fetch.done = true;
    fetch.pending.clear();
    this.fetchesFailed++;
    this.host.log(`r${this.host.me} state transfer failed: ${reason}`);
    this.host.failed(reason);
  }

  private blameOffer(from: number, reason: DropReasonCode): void {
    this.badOffers.set(from, (this.badOffers.get(from) ?? 0) + 1);
    this.drop(reason);
  }

  private drop(reason: DropReasonCode): void {
    this.drops.set(reason, (this.drops.get(reason) ?? 0) + 1);
  }
}
