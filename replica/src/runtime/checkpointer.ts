// Checkpoints of the replicated state (DESIGN §5): the core's schedule says when, the service host
// streams what (its snapshot and the reply cache), the checkpoint store keeps it in verified chunks, and
// the write-ahead log forgets what the checkpoint covers. The same parts come back on a restart (from
// the replica's own store) and after a state transfer (from a checkpoint fetched into the store).

import { Packr } from 'msgpackr';
import { z } from 'zod';
import { limits } from '../constants.ts';
import type { Logger } from 'pino';
import type { Membership } from '../core/reconfiguration.ts';
import type { CheckpointBase, ViewEra } from '../core/replica.ts';
import { invalidView } from '../core/view.ts';
import { BftError, invariant } from '../errors.ts';
import { plainMsgpackOptions } from '../protocol/codec.ts';
import type { CheckpointStore, Manifest } from '../storage/checkpoint-store.ts';

/** The checkpoint side of the service host (service/service-host.ts). */
export interface CheckpointableHost {
  /** The state after every execution requested before this call, as the parts `service` then `replies`. */
  snapshot(): Promise<{ readonly service: AsyncIterable<Uint8Array>; readonly replies: AsyncIterable<Uint8Array> }>;
  /** Replace the state; resolves with each client's last executed sequence number. */
  install(parts: { readonly service: AsyncIterable<Uint8Array>; readonly replies: AsyncIterable<Uint8Array> }): Promise<Array<[string, number]>>;
}

/** The log's side: forget what a checkpoint covers. Absent with durability "none". */
export interface TruncatableLog {
  truncateBefore(decidedCid: number): Promise<unknown>;
}

export interface CheckpointerOptions {
  readonly me: number;
  /** The view number whose members attest the checkpoints written now (the store signs with it). */
  readonly viewNumber: () => number;
  readonly store: CheckpointStore;
  readonly host: CheckpointableHost;
  readonly log?: TruncatableLog;
  readonly logger?: Logger;
  /** Called after each checkpoint is published (metrics). */
  readonly onCheckpoint?: (manifest: Manifest, durationMs: number) => void;
  readonly now?: () => number;
}

export interface CheckpointerStatus {
  /** The newest checkpoint on disk, or null. */
  readonly latest: { readonly cid: number; readonly totalBytes: number; readonly chunks: number } | null;
  /** The checkpoint being written, or null. */
  readonly writing: number | null;
  readonly taken: number;
  readonly lastDurationMs: number | null;
  readonly failures: number;
}

const viewPacker = new Packr({ ...plainMsgpackOptions, copyBuffers: true });

/**
 * The view part of a checkpoint: the memberships the replicated state remembers, oldest first, the one
 * that orders the instance after the checkpoint last, each with its members' addresses and keys.
 */
export function encodeViewPart(views: readonly ViewEra[]): Uint8Array {
  return viewPacker.pack(
    views.map(({ membership, firstCid }) => ({
      firstCid,
      number: membership.view.number,
      mode: membership.view.mode,
      f: membership.view.f,
      members: membership.view.members.map((id) => membership.members.get(id)),
      highestIdEver: membership.highestIdEver,
    })),
  );
}

const memberSchema = z.object({
  id: z.int().min(0),
  host: z.string().min(1).max(253),
  port: z.int().min(1).max(65_535),
  adminPort: z.int().min(1).max(65_535),
  // Empty: a genesis member whose key the configuration did not give (tests, simulations).
  publicKey: z.custom<Uint8Array>((value) => value instanceof Uint8Array && (value.length === limits.replicaPublicKeyBytes || value.length === 0)),
});
const viewPartSchema = z
  .array(
    z.object({
      firstCid: z.int().min(0),
      number: z.int().min(0),
      mode: z.enum(['bft', 'crash']),
      f: z.int().min(0),
      members: z.array(memberSchema).min(1).max(limits.membersMax),
      highestIdEver: z.int().min(0),
    }),
  )
  .min(1)
  .max(limits.viewEraHistoryMax);

/** The memberships of a checkpoint's view part; throws BFT_ERR_CHECKPOINT_CORRUPT on anything else. */
export function decodeViewPart(bytes: Uint8Array): ViewEra[] {
  let parsed: z.infer<typeof viewPartSchema>;
  try {
    const value: unknown = viewPacker.unpack(bytes);
    // Checkpoints from before reconfiguration held the genesis view alone: nothing to restore from them.
    if (value !== null && typeof value === 'object' && !Array.isArray(value) && 'members' in value) return [];
    parsed = viewPartSchema.parse(value);
  } catch (cause) {
    throw new BftError('BFT_ERR_CHECKPOINT_CORRUPT', 'the view part of a checkpoint is malformed; let the replica recover from its peers', { cause });
  }
  return parsed.map((era) => {
    const view = { number: era.number, mode: era.mode, f: era.f, members: era.members.map((member) => member.id) };
    const problem = invalidView(view);
    if (problem !== null) throw new BftError('BFT_ERR_CHECKPOINT_CORRUPT', `the view part of a checkpoint holds an invalid view: ${problem}`);
    const membership: Membership = { view, members: new Map(era.members.map((member) => [member.id, member])), highestIdEver: era.highestIdEver };
    return { membership, firstCid: era.firstCid };
  });
}

export class Checkpointer {
  private readonly options: CheckpointerOptions;
  private readonly now: () => number;
  /** Checkpoints one at a time, in schedule order. */
  private tail: Promise<unknown> = Promise.resolve();
  private writing: number | null = null;
  private taken = 0;
  private failures = 0;
  private lastDurationMs: number | null = null;

  constructor(options: CheckpointerOptions) {
    this.options = options;
    this.now = options.now ?? (() => performance.now());
  }

  /**
   * Checkpoint the state of instance `cid`. Call it right after the host was asked to execute instance
   * `cid` and before it is asked for anything later: the host takes the snapshot in that order. A
   * failure is logged and counted, never fatal: the previous checkpoint and the log still cover the state.
   */
  take(cid: number, views: readonly ViewEra[]): Promise<Manifest | null> {
    const started = this.now();
    // Asked for now, synchronously, so that the host orders the snapshot right after instance cid.
    const parts = this.options.host.snapshot();
    const run = this.tail.then(async () => {
      this.writing = cid;
      try {
        const { service, replies } = await parts;
        const { store, me } = this.options;
        const manifest = await store.write(
          cid,
          // The view as of the instance (not of the moment the write runs): every replica names the same.
          views.at(-1)?.membership.view.number ?? this.options.viewNumber(),
          [
            { name: 'service', source: service },
            { name: 'replies', source: replies },
            { name: 'view', source: encodeViewPart(views) },
          ],
          me,
        );
        // The checkpoint is durable: the log before it is no longer needed to recover. The record of the
        // checkpoint's own instance stays: its certificate is what this replica's STOPDATA must show.
        if (this.options.log) await this.options.log.truncateBefore(cid);
        const durationMs = Math.round(this.now() - started);
        this.taken += 1;
        this.lastDurationMs = durationMs;
        this.options.logger?.info({ cid, totalBytes: manifest.totalBytes, chunks: manifest.chunkHashes.length, durationMs }, 'checkpoint taken');
        this.options.onCheckpoint?.(manifest, durationMs);
        return manifest;
      } catch (error) {
        this.failures += 1;
        // The snapshot streams must be drained or the host stays paused: consume and drop what is left.
        await drain(parts);
        this.options.logger?.error({ err: error, cid }, 'checkpoint failed; the log still covers the state');
        return null;
      } finally {
        this.writing = null;
      }
    });
    this.tail = run.catch(() => undefined);
    return run;
  }

  /** Load the newest checkpoint in the store into the host: the base the core starts from, or null if none. */
  async restoreLatest(): Promise<CheckpointBase | null> {
    const latest = this.options.store.latest();
    if (latest === null) return null;
    return this.installFromStore(latest);
  }

  /** Load checkpoint `manifest` (in the store: taken here, or fetched by state transfer) into the host. */
  async installFromStore(manifest: Manifest): Promise<CheckpointBase> {
    const { store, host } = this.options;
    invariant(manifest.parts[0]?.name === 'service', 'a checkpoint starts with the service part');
    try {
      const views = decodeViewPart(await concatPart(store.readPart(manifest.cid, 'view')));
      const clientSeqs = await host.install({ service: store.readPart(manifest.cid, 'service'), replies: store.readPart(manifest.cid, 'replies') });
      this.options.logger?.info({ cid: manifest.cid, totalBytes: manifest.totalBytes, clients: clientSeqs.length }, 'checkpoint installed into the service');
      return { cid: manifest.cid, clientSeqs, ...(views.length > 0 ? { views } : {}) };
    } catch (cause) {
      throw new BftError(
        'BFT_ERR_CHECKPOINT_CORRUPT',
        `checkpoint ${manifest.cid} in ${store.dir} could not be installed into the service; move the data directory away and let the replica recover from its peers`,
        { cause },
      );
    }
  }

  /** Wait for checkpoints being written (before closing the store). */
  async idle(): Promise<void> {
    await this.tail;
  }

  status(): CheckpointerStatus {
    const latest = this.options.store.latest();
    return {
      latest: latest === null ? null : { cid: latest.cid, totalBytes: latest.totalBytes, chunks: latest.chunkHashes.length },
      writing: this.writing,
      taken: this.taken,
      lastDurationMs: this.lastDurationMs,
      failures: this.failures,
    };
  }
}

/** A small part (the view part), whole. */
async function concatPart(pieces: AsyncIterable<Uint8Array>): Promise<Uint8Array> {
  const all: Uint8Array[] = [];
  let length = 0;
  for await (const piece of pieces) {
    length += piece.length;
    if (length > limits.checkpointViewPartBytesMax) throw new BftError('BFT_ERR_CHECKPOINT_CORRUPT', `the view part of a checkpoint exceeds ${limits.checkpointViewPartBytesMax} bytes`);
    all.push(piece);
  }
  const whole = new Uint8Array(length);
  let offset = 0;
  for (const piece of all) {
    whole.set(piece, offset);
    offset += piece.length;
  }
  return whole;
}

async function drain(parts: Promise<{ readonly service: AsyncIterable<Uint8Array>; readonly replies: AsyncIterable<Uint8Array> }>): Promise<void> {
  try {
    const { service, replies } = await parts;
    for await (const _piece of service);
    for await (const _piece of replies);
  } catch {
    // Nothing more to release.
  }
}
