// The checkpoint store (DESIGN §5): the replicated state after instance `cid` (the service snapshot,
// the executor's reply cache and the view) on disk, in chunks that state transfer hashes, serves and
// fetches one at a time, so that memory stays bounded whatever the size of the state.
//
// Layout, one folder per checkpoint in `dir`:
//
//   checkpoint-<16-digit cid>/state.bin       the parts, concatenated in the order service, replies, view
//   checkpoint-<16-digit cid>/manifest.bin    [u32 BE CRC-32 of the rest][msgpack of the Manifest]
//
// Chunk i is bytes [i × chunkBytes, (i + 1) × chunkBytes) of state.bin, and a chunk may span two parts.
// One data file rather than a file per chunk: one descriptor and one fsync per checkpoint, and an
// installer writes each chunk at its offset in whatever order chunks arrive.
//
// A checkpoint is built in `checkpoint-<cid>.tmp/` and published by renaming the folder once its data
// and manifest are fsync'd: after a crash a folder either has its final name and is whole, or has a
// temporary name and is removed at open. Pruning renames a folder to `checkpoint-<cid>.deleting` before
// removing it, so that a crash part way never leaves a published folder without its manifest.
//
// Nothing read back is trusted: a manifest is CRC-checked and schema-checked at open, and every chunk
// is checked against its manifest hash each time it is read, so damage is reported where it is (file,
// chunk, byte offset) instead of being served to a peer or installed into the service.

import { createHash } from 'node:crypto';
import { mkdir, open, readdir, readFile, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { Packr } from 'msgpackr';
import type { Logger } from 'pino';
import { z } from 'zod';
import { limits } from '../constants.ts';
import { BftError, invariant } from '../errors.ts';
import type { ReplicaId } from '../core/view.ts';
import { syncDirectory } from './fs-sync.ts';
import { plainMsgpackOptions } from '../protocol/codec.ts';
import { bytesEqual } from '../bytes.ts';

// --- The manifest ----------------------------------------------------------------------------------------

/** The parts of a checkpoint, in the order they are concatenated (a fixed order keeps digests equal). */
export const checkpointPartNames = ['service', 'replies', 'view'] as const;
export type CheckpointPartName = (typeof checkpointPartNames)[number];

/** Codes of the part names in the manifest digest: fixed forever. */
const partNameCode = { service: 1, replies: 2, view: 3 } as const satisfies Record<CheckpointPartName, number>;

export interface ManifestPart {
  readonly name: CheckpointPartName;
  readonly bytes: number;
}

export interface Manifest {
  readonly version: 1;
  readonly cid: number;
  readonly viewNumber: number;
  readonly parts: readonly ManifestPart[];
  readonly totalBytes: number;
  readonly chunkBytes: number;
  /** SHA-256 of each chunk of the concatenated parts; the last chunk may be shorter than chunkBytes. */
  readonly chunkHashes: readonly Uint8Array[];
  /** Who built it. Not part of the digest: every correct replica at the same state signs the same digest. */
  readonly createdBy: ReplicaId;
}

const chunkHashBytes = 32;

const nonNegativeInteger = z.int().min(0);
const chunkHash = z.custom<Uint8Array>((value) => value instanceof Uint8Array && value.length === chunkHashBytes, {
  error: `expected a ${chunkHashBytes}-byte SHA-256 hash`,
});

const manifestSchema = z.strictObject({
  version: z.literal(1),
  cid: nonNegativeInteger,
  viewNumber: nonNegativeInteger,
  parts: z
    .array(z.strictObject({ name: z.enum(checkpointPartNames), bytes: nonNegativeInteger }))
    .min(1)
    .max(checkpointPartNames.length),
  totalBytes: nonNegativeInteger,
  chunkBytes: z.int().min(limits.checkpointChunkBytesMin).max(limits.checkpointChunkBytesMax),
  chunkHashes: z.array(chunkHash).max(limits.checkpointChunksMax),
  createdBy: z.int().min(0).max(limits.replicaIdMax),
});

function chunkCount(totalBytes: number, chunkBytes: number): number {
  return Math.ceil(totalBytes / chunkBytes);
}

/** Why parts are not a non-empty list of distinct names in the order service, replies, view, or null. */
function invalidPartOrder(names: readonly CheckpointPartName[]): string | null {
  let previous = 0;
  for (const name of names) {
    const code = partNameCode[name];
    if (code <= previous) return `parts must be distinct and in the order ${checkpointPartNames.join(', ')}`;
    previous = code;
  }
  return names.length === 0 ? 'a checkpoint has at least one part' : null;
}

type ManifestCheck = { readonly ok: true; readonly manifest: Manifest } | { readonly ok: false; readonly detail: string };

/** Validates a manifest from the disk or the network: its schema, and that its sizes and hashes agree. Never throws. */
export function validateManifest(value: unknown): ManifestCheck {
  const parsed = manifestSchema.safeParse(value);
  if (!parsed.success) return { ok: false, detail: `not a valid manifest (${parsed.error.message.slice(0, 300)})` };
  const manifest = parsed.data as Manifest;
  const order = invalidPartOrder(manifest.parts.map((part) => part.name));
  if (order !== null) return { ok: false, detail: order };
  const sum = manifest.parts.reduce((total, part) => total + part.bytes, 0);
  if (sum !== manifest.totalBytes) {
    return { ok: false, detail: `its parts add up to ${sum} bytes, not its totalBytes ${manifest.totalBytes}` };
  }
  const chunks = chunkCount(manifest.totalBytes, manifest.chunkBytes);
  if (chunks !== manifest.chunkHashes.length) {
    return {
      ok: false,
      detail:
        `${manifest.totalBytes} bytes in chunks of ${manifest.chunkBytes} make ${chunks} chunks, ` +
        `but it has ${manifest.chunkHashes.length} hashes`,
    };
  }
  return { ok: true, manifest };
}

// The wire codec's plain msgpack, with decoded byte fields copied (manifests come from disk).
const packr = new Packr({ ...plainMsgpackOptions, copyBuffers: true });

export function encodeManifest(manifest: Manifest): Uint8Array {
  const { version, cid, viewNumber, parts, totalBytes, chunkBytes, chunkHashes, createdBy } = manifest;
  return packr.pack({
    version,
    cid,
    viewNumber,
    parts: parts.map(({ name, bytes }) => ({ name, bytes })),
    totalBytes,
    chunkBytes,
    chunkHashes: chunkHashes.map((hash) => Buffer.from(hash.buffer, hash.byteOffset, hash.length)),
    createdBy,
  });
}

/** Decodes and validates a manifest (as received from a peer). Never throws. */
export function decodeManifest(bytes: Uint8Array): ManifestCheck {
  if (bytes.length > limits.checkpointManifestBytesMax) {
    return { ok: false, detail: `${bytes.length} bytes, more than checkpointManifestBytesMax (${limits.checkpointManifestBytesMax})` };
  }
  let value: unknown;
  try {
    value = packr.unpack(bytes) as unknown;
  } catch (error) {
    return { ok: false, detail: `not msgpack (${String(error instanceof Error ? error.message : error).slice(0, 120)})` };
  }
  return validateManifest(value);
}

const digestDomain = new TextEncoder().encode('bftkube checkpoint manifest v1\0');

function u32(value: number): Buffer {
  const bytes = Buffer.allocUnsafe(4);
  bytes.writeUInt32BE(value, 0);
  return bytes;
}

function u64(value: number): Buffer {
  const bytes = Buffer.allocUnsafe(8);
  bytes.writeUInt32BE(Math.floor(value / 2 ** 32), 0);
  bytes.writeUInt32BE(value >>> 0, 4);
  return bytes;
}

/**
 * SHA-256 over a fixed binary encoding of every field but createdBy: what f+1 replicas sign to attest a
 * checkpoint. Hand-written rather than msgpack so that it cannot change with an encoder's choices.
 */
export function manifestDigest(manifest: Manifest): Uint8Array {
  const hash = createHash('sha256');
  hash.update(digestDomain);
  hash.update(u32(manifest.version));
  hash.update(u64(manifest.cid));
  hash.update(u64(manifest.viewNumber));
  hash.update(u32(manifest.parts.length));
  for (const part of manifest.parts) {
    hash.update(Uint8Array.of(partNameCode[part.name]));
    hash.update(u64(part.bytes));
  }
  hash.update(u64(manifest.totalBytes));
  hash.update(u32(manifest.chunkBytes));
  hash.update(u32(manifest.chunkHashes.length));
  for (const chunk of manifest.chunkHashes) hash.update(chunk);
  return new Uint8Array(hash.digest());
}

function sha256(bytes: Uint8Array): Buffer {
  return createHash('sha256').update(bytes).digest();
}

// --- Files -----------------------------------------------------------------------------------------------

const dataFileName = 'state.bin';
const manifestFileName = 'manifest.bin';
const manifestChecksumBytes = 4;
const folderPattern = /^checkpoint-(\d{16})(\.tmp|\.deleting)?$/;

export function checkpointFolderName(cid: number): string {
  return `checkpoint-${String(cid).padStart(16, '0')}`;
}

function encodeManifestFile(manifest: Manifest): Buffer {
  const payload = encodeManifest(manifest);
  invariant(
    payload.length + manifestChecksumBytes <= limits.checkpointManifestBytesMax,
    `a manifest of ${manifest.chunkHashes.length} chunks fits checkpointManifestBytesMax`,
  );
  const file = Buffer.allocUnsafe(manifestChecksumBytes + payload.length);
  file.writeUInt32BE(crc32(payload), 0);
  file.set(payload, manifestChecksumBytes);
  return file;
}

function corrupt(what: string, cause?: unknown): BftError {
  return new BftError(
    'BFT_ERR_CHECKPOINT_CORRUPT',
    `${what}. Do not serve or install this checkpoint: delete its folder (or move the whole data directory ` +
      'away) and restart the replica; it then recovers its state by state transfer from its peers.',
    cause === undefined ? undefined : { cause },
  );
}

function ioError(what: string, cause: unknown): BftError {
  if (cause instanceof BftError) return cause;
  const code = (cause as { code?: unknown } | null)?.code;
  return new BftError('BFT_ERR_CHECKPOINT_IO', `${what}${typeof code === 'string' ? ` (${code})` : ''}`, { cause });
}

async function writeFully(handle: FileHandle, bytes: Uint8Array, position: number): Promise<void> {
  let written = 0;
  while (written < bytes.length) {
    const result = await handle.write(bytes, written, bytes.length - written, position + written);
    written += result.bytesWritten;
  }
}

/** Reads exactly `length` bytes at `position`, or fewer if the file ends first. */
async function readFully(handle: FileHandle, buffer: Buffer, length: number, position: number): Promise<number> {
  let filled = 0;
  while (filled < length) {
    const { bytesRead } = await handle.read(buffer, filled, length - filled, position + filled);
    if (bytesRead === 0) break;
    filled += bytesRead;
  }
  return filled;
}

/** Where a published checkpoint's manifest fails to validate or its data file has the wrong size, or null. */
async function checkPublished(folder: string, cid: number): Promise<{ manifest: Manifest } | { detail: string }> {
  const manifestPath = join(folder, manifestFileName);
  let file: Buffer;
  try {
    const size = (await stat(manifestPath)).size;
    if (size > limits.checkpointManifestBytesMax) return { detail: `${manifestPath} is ${size} bytes, more than any manifest` };
    file = await readFile(manifestPath);
  } catch (cause) {
    if ((cause as { code?: unknown }).code === 'ENOENT') return { detail: `${manifestPath} is missing` };
    throw cause;
  }
  if (file.length < manifestChecksumBytes) return { detail: `${manifestPath} is cut short (${file.length} bytes)` };
  const payload = file.subarray(manifestChecksumBytes);
  if (crc32(payload) !== file.readUInt32BE(0)) return { detail: `${manifestPath} fails its checksum` };
  const decoded = decodeManifest(payload);
  if (!decoded.ok) return { detail: `${manifestPath} is ${decoded.detail}` };
  if (decoded.manifest.cid !== cid) {
    return { detail: `${manifestPath} is for instance ${decoded.manifest.cid}, not ${cid} as its folder says` };
  }
  const dataPath = join(folder, dataFileName);
  let dataBytes: number;
  try {
    dataBytes = (await stat(dataPath)).size;
  } catch (cause) {
    if ((cause as { code?: unknown }).code === 'ENOENT') return { detail: `${dataPath} is missing` };
    throw cause;
  }
  if (dataBytes !== decoded.manifest.totalBytes) {
    return { detail: `${dataPath} is ${dataBytes} bytes but its manifest says ${decoded.manifest.totalBytes}` };
  }
  return { manifest: decoded.manifest };
}

// --- Streaming a state into chunks -------------------------------------------------------------------------

/**
 * Cuts a stream of pieces into chunks, hashing each and writing it at its offset. Two chunk buffers: one
 * fills while the other is written, so memory is two chunks whatever the state size. Pieces are copied,
 * so a source may reuse its buffer once the next piece is asked for.
 */
class ChunkWriter {
  readonly hashes: Buffer[] = [];
  private readonly handle: FileHandle;
  private readonly chunkBytes: number;
  private readonly buffers: [Buffer, Buffer];
  private current: 0 | 1 = 0;
  private filled = 0;
  private position = 0;
  private pending: Promise<void> = Promise.resolve();
  // A failed write is kept, not left rejected and unawaited while the source is read (an unhandled rejection).
  private failure: { readonly error: unknown } | null = null;

  constructor(handle: FileHandle, chunkBytes: number) {
    this.handle = handle;
    this.chunkBytes = chunkBytes;
    this.buffers = [Buffer.allocUnsafe(chunkBytes), Buffer.allocUnsafe(chunkBytes)];
  }

  get bytes(): number {
    return this.position + this.filled;
  }

  async add(piece: Uint8Array): Promise<void> {
    let offset = 0;
    while (offset < piece.length) {
      const length = Math.min(piece.length - offset, this.chunkBytes - this.filled);
      this.buffers[this.current].set(piece.subarray(offset, offset + length), this.filled);
      this.filled += length;
      offset += length;
      if (this.filled === this.chunkBytes) await this.flush();
    }
  }

  async finish(): Promise<void> {
    await this.flush();
    await this.pending;
    if (this.failure !== null) throw this.failure.error;
  }

  private async flush(): Promise<void> {
    if (this.filled === 0) return;
    if (this.hashes.length >= limits.checkpointChunksMax) {
      throw new BftError(
        'BFT_ERR_CONFIG_INVALID',
        `the state is larger than checkpointChunksMax (${limits.checkpointChunksMax}) chunks of ${this.chunkBytes} bytes; ` +
          `configure a larger checkpoint chunk size (at most ${limits.checkpointChunkBytesMax})`,
      );
    }
    const chunk = this.buffers[this.current].subarray(0, this.filled);
    this.hashes.push(sha256(chunk));
    // The other buffer's write: once it is done, that buffer is free to fill.
    await this.pending;
    if (this.failure !== null) throw this.failure.error;
    this.pending = writeFully(this.handle, chunk, this.position).catch((error: unknown) => {
      this.failure = { error };
    });
    this.position += this.filled;
    this.filled = 0;
    this.current = this.current === 0 ? 1 : 0;
  }
}

// --- The store -------------------------------------------------------------------------------------------

export interface CheckpointStoreOptions {
  readonly dir: string;
  /** Chunk size of the checkpoints this store writes. Default limits.checkpointChunkBytesDefault. */
  readonly chunkBytes?: number;
  /** Published checkpoints kept; older ones are deleted after each new one. Default limits.checkpointKeepDefault. */
  readonly keep?: number;
  readonly logger?: Logger;
}

export interface CheckpointPartSource {
  readonly name: CheckpointPartName;
  readonly source: AsyncIterable<Uint8Array> | Uint8Array;
}

export interface InstallOptions {
  /** Chunks fetched at once. Default limits.checkpointInstallParallelDefault, at most checkpointInstallParallelMax. */
  readonly parallel?: number;
  /** An attempt at a chunk that takes longer fails (and its signal aborts). Default limits.checkpointChunkFetchTimeoutMsDefault. */
  readonly attemptTimeoutMs?: number;
}

/**
 * Fetches chunk `index` of the manifest being installed. `attempt` counts from 0 for each index: ask a
 * different replica on each attempt. `signal` aborts when the attempt times out or the install fails.
 */
export type FetchChunk = (index: number, attempt: number, signal: AbortSignal) => Promise<Uint8Array>;

export interface InstallProgress {
  readonly cid: number;
  readonly state: 'running' | 'installed' | 'failed';
  readonly chunksTotal: number;
  readonly chunksInstalled: number;
  readonly retries: number;
  /** Attempts beyond the first, by chunk index, for the chunks that needed any (at most one entry per chunk). */
  readonly retriesByIndex: Readonly<Record<number, number>>;
}

interface MutableInstallProgress {
  cid: number;
  state: InstallProgress['state'];
  chunksTotal: number;
  chunksInstalled: number;
  retries: number;
  retriesByIndex: Record<number, number>;
}

export interface CheckpointStoreStats {
  /** Published checkpoints on disk now. */
  readonly checkpoints: number;
  /** State bytes written by write() and install(). */
  readonly bytesWritten: number;
  /** Chunks whose hash matched their manifest (when read back, or when fetched by install). */
  readonly chunksVerified: number;
  /** Chunks whose bytes did not match their manifest hash: on disk (read back) or from a peer (install). */
  readonly chunkMismatches: number;
  /** install(): attempts at a chunk that threw or timed out. */
  readonly chunkFetchFailures: number;
  /** install(): attempts beyond the first at some chunk. */
  readonly installRetries: number;
  /** Temporary folders of interrupted writes, installs or prunes removed at open. */
  readonly temporaryFoldersRemoved: number;
  readonly checkpointsPruned: number;
  /** The install in progress, or else the last one since open; null if none. */
  readonly install: InstallProgress | null;
}

function checkOptionalInteger(name: string, value: number | undefined, min: number, max: number): void {
  if (value !== undefined && !(Number.isSafeInteger(value) && value >= min && value <= max)) {
    throw new BftError('BFT_ERR_CONFIG_INVALID', `${name} must be an integer in ${min}..${max}, not ${value}`);
  }
}

export class CheckpointStore {
  readonly dir: string;
  readonly chunkBytes: number;
  readonly keep: number;
  private readonly logger: Logger | undefined;
  /** Published checkpoints, oldest first. */
  private readonly manifests: Manifest[];
  /** write(), install() and pruning, one at a time. */
  private tail: Promise<unknown> = Promise.resolve();
  private progress: MutableInstallProgress | null = null;
  private readonly counters = {
    bytesWritten: 0,
    chunksVerified: 0,
    chunkMismatches: 0,
    chunkFetchFailures: 0,
    installRetries: 0,
    temporaryFoldersRemoved: 0,
    checkpointsPruned: 0,
  };

  private constructor(options: CheckpointStoreOptions, manifests: Manifest[]) {
    this.dir = options.dir;
    this.chunkBytes = options.chunkBytes ?? limits.checkpointChunkBytesDefault;
    this.keep = options.keep ?? limits.checkpointKeepDefault;
    this.logger = options.logger;
    this.manifests = manifests;
  }

  /**
   * Opens (creating if needed) the store in `dir`. Temporary folders of an interrupted write, install or
   * prune are removed and reported; a published checkpoint that does not validate refuses the open with
   * BFT_ERR_CHECKPOINT_CORRUPT.
   */
  static async open(options: CheckpointStoreOptions): Promise<CheckpointStore> {
    checkOptionalInteger('chunkBytes', options.chunkBytes, limits.checkpointChunkBytesMin, limits.checkpointChunkBytesMax);
    checkOptionalInteger('keep', options.keep, 1, limits.checkpointKeepMax);
    const { dir } = options;
    const manifests: Manifest[] = [];
    let removed = 0;
    try {
      await mkdir(dir, { recursive: true });
      const names = (await readdir(dir)).sort();
      for (const name of names) {
        const match = folderPattern.exec(name);
        if (match === null) continue;
        const folder = join(dir, name);
        if (match[2] !== undefined) {
          await rm(folder, { recursive: true, force: true });
          removed += 1;
          options.logger?.warn({ folder }, 'checkpoint store: removed the remains of an interrupted write, install or prune');
          continue;
        }
        const cid = Number(match[1]);
        if (!Number.isSafeInteger(cid)) throw corrupt(`${folder} names an instance beyond 2^53`);
        const checked = await checkPublished(folder, cid);
        if ('detail' in checked) throw corrupt(`checkpoint ${folder} is damaged: ${checked.detail}`);
        manifests.push(checked.manifest);
      }
      if (removed > 0) await syncDirectory(dir);
    } catch (cause) {
      throw ioError(`cannot open the checkpoint store in ${dir}; check that it exists and is writable`, cause);
    }
    manifests.sort((a, b) => a.cid - b.cid);
    const store = new CheckpointStore(options, manifests);
    store.counters.temporaryFoldersRemoved = removed;
    return store;
  }

  /** The newest published checkpoint, or null. */
  latest(): Manifest | null {
    return this.manifests.at(-1) ?? null;
  }

  /** Published checkpoints, oldest first. */
  list(): Manifest[] {
    return [...this.manifests];
  }

  stats(): CheckpointStoreStats {
    const progress = this.progress;
    const install = progress === null ? null : { ...progress, retriesByIndex: { ...progress.retriesByIndex } };
    return { checkpoints: this.manifests.length, ...this.counters, install };
  }

  /**
   * Streams the parts (in the order service, replies, view; any of them may be left out) into a new
   * checkpoint for instance `cid`, publishes it atomically and prunes beyond `keep`. Memory: two chunks.
   */
  async write(cid: number, viewNumber: number, parts: readonly CheckpointPartSource[], createdBy: ReplicaId): Promise<Manifest> {
    invariant(Number.isSafeInteger(cid) && cid >= 0, `a checkpoint's cid is a non-negative integer, not ${cid}`);
    invariant(Number.isSafeInteger(viewNumber) && viewNumber >= 0, `a view number is a non-negative integer, not ${viewNumber}`);
    invariant(Number.isSafeInteger(createdBy) && createdBy >= 0 && createdBy <= limits.replicaIdMax, `replica id ${createdBy} is valid`);
    const order = invalidPartOrder(parts.map((part) => part.name));
    invariant(order === null, `checkpoint parts are valid: ${order}`);
    return this.serialize(async () => {
      this.refuseUnlessNewer(cid);
      const temporary = join(this.dir, `${checkpointFolderName(cid)}.tmp`);
      try {
        await rm(temporary, { recursive: true, force: true });
        await mkdir(temporary);
        const handle = await open(join(temporary, dataFileName), 'wx');
        const partSizes: ManifestPart[] = [];
        const writer = new ChunkWriter(handle, this.chunkBytes);
        try {
          for (const part of parts) {
            const start = writer.bytes;
            const pieces: AsyncIterable<Uint8Array> | Iterable<Uint8Array> =
              part.source instanceof Uint8Array ? [part.source] : part.source;
            for await (const piece of pieces) {
              invariant(piece instanceof Uint8Array, `the ${part.name} part yields Uint8Arrays`);
              await writer.add(piece);
            }
            partSizes.push({ name: part.name, bytes: writer.bytes - start });
          }
          await writer.finish();
          await handle.datasync();
        } finally {
          await handle.close();
        }
        const manifest: Manifest = {
          version: 1,
          cid,
          viewNumber,
          parts: partSizes,
          totalBytes: writer.bytes,
          chunkBytes: this.chunkBytes,
          chunkHashes: writer.hashes,
          createdBy,
        };
        await this.publish(temporary, manifest);
        this.counters.bytesWritten += manifest.totalBytes;
        return manifest;
      } catch (error) {
        await rm(temporary, { recursive: true, force: true }).catch(() => undefined);
        throw ioError(`cannot write checkpoint ${cid} into ${this.dir}; check the disk`, error);
      }
    });
  }

  /** Chunk `index` of checkpoint `cid`, checked against its manifest hash (BFT_ERR_CHECKPOINT_CORRUPT if not). */
  async readChunk(cid: number, index: number): Promise<Uint8Array> {
    const manifest = this.find(cid);
    if (!(Number.isSafeInteger(index) && index >= 0 && index < manifest.chunkHashes.length)) {
      throw new BftError('BFT_ERR_CHECKPOINT_MISSING', `checkpoint ${cid} has chunks 0..${manifest.chunkHashes.length - 1}, not ${index}`);
    }
    const path = join(this.dir, checkpointFolderName(cid), dataFileName);
    const handle = await this.openData(path, cid);
    try {
      return await this.readVerifiedChunk(handle, path, manifest, index);
    } finally {
      await handle.close();
    }
  }

  /**
   * Streams part `name` of checkpoint `cid`, each chunk checked against the manifest before any of its
   * bytes are yielded. Holds one chunk at a time; the data file stays open, so a prune meanwhile is harmless.
   */
  async *readPart(cid: number, name: CheckpointPartName): AsyncIterable<Uint8Array> {
    const manifest = this.find(cid);
    let start = 0;
    let bytes = -1;
    for (const part of manifest.parts) {
      if (part.name === name) {
        bytes = part.bytes;
        break;
      }
      start += part.bytes;
    }
    if (bytes < 0) throw new BftError('BFT_ERR_CHECKPOINT_MISSING', `checkpoint ${cid} has no ${name} part`);
    if (bytes === 0) return;
    const end = start + bytes;
    const path = join(this.dir, checkpointFolderName(cid), dataFileName);
    const handle = await this.openData(path, cid);
    try {
      const { chunkBytes } = manifest;
      for (let index = Math.floor(start / chunkBytes); index * chunkBytes < end; index++) {
        const chunk = await this.readVerifiedChunk(handle, path, manifest, index);
        const chunkStart = index * chunkBytes;
        yield chunk.subarray(Math.max(start, chunkStart) - chunkStart, Math.min(end, chunkStart + chunk.length) - chunkStart);
      }
    } finally {
      await handle.close();
    }
  }

  /**
   * State transfer: builds the checkpoint `manifest` describes from chunks fetched by `fetchChunk`,
   * checking each against the manifest, and publishes it like write(). A chunk that fails or does not
   * match is asked for again (attempt 1, 2, …) up to limits.checkpointChunkAttemptsMax times; then the
   * install fails with BFT_ERR_CHECKPOINT_TRANSFER_FAILED and nothing is published. Memory: about
   * `parallel` chunks.
   */
  async install(manifest: Manifest, fetchChunk: FetchChunk, options: InstallOptions = {}): Promise<void> {
    const checked = validateManifest(manifest);
    if (!checked.ok) throw new BftError('BFT_ERR_CHECKPOINT_MANIFEST_INVALID', `cannot install the manifest: it is ${checked.detail}`);
    checkOptionalInteger('parallel', options.parallel, 1, limits.checkpointInstallParallelMax);
    checkOptionalInteger('attemptTimeoutMs', options.attemptTimeoutMs, 1, limits.checkpointChunkFetchTimeoutMsMax);
    const parallel = options.parallel ?? limits.checkpointInstallParallelDefault;
    const attemptTimeoutMs = options.attemptTimeoutMs ?? limits.checkpointChunkFetchTimeoutMsDefault;
    const target = checked.manifest;
    return this.serialize(async () => {
      this.refuseUnlessNewer(target.cid);
      const temporary = join(this.dir, `${checkpointFolderName(target.cid)}.tmp`);
      const chunksTotal = target.chunkHashes.length;
      const progress: MutableInstallProgress = {
        cid: target.cid,
        state: 'running',
        chunksTotal,
        chunksInstalled: 0,
        retries: 0,
        retriesByIndex: {},
      };
      this.progress = progress;
      const abort = new AbortController();
      let failure: { readonly error: unknown } | null = null;
      try {
        await rm(temporary, { recursive: true, force: true });
        await mkdir(temporary);
        const handle = await open(join(temporary, dataFileName), 'wx');
        try {
          let next = 0;
          const worker = async (): Promise<void> => {
            while (failure === null && next < chunksTotal) {
              const index = next++;
              try {
                const chunk = await this.fetchVerifiedChunk(target, index, fetchChunk, attemptTimeoutMs, abort.signal, progress);
                if (chunk === null) return;
                await writeFully(handle, chunk, index * target.chunkBytes);
                progress.chunksInstalled += 1;
              } catch (error) {
                failure ??= { error };
                abort.abort(error);
              }
            }
          };
          await Promise.all(Array.from({ length: Math.min(parallel, Math.max(chunksTotal, 1)) }, worker));
          if (failure !== null) throw (failure as { readonly error: unknown }).error;
          await handle.datasync();
        } finally {
          await handle.close();
        }
        await this.publish(temporary, target);
        this.counters.bytesWritten += target.totalBytes;
        progress.state = 'installed';
      } catch (error) {
        progress.state = 'failed';
        await rm(temporary, { recursive: true, force: true }).catch(() => undefined);
        throw ioError(`cannot install checkpoint ${target.cid} into ${this.dir}; check the disk`, error);
      }
    });
  }

  // --- Internals ---

  private serialize<T>(task: () => Promise<T>): Promise<T> {
    const result = this.tail.then(task);
    this.tail = result.catch(() => undefined);
    return result;
  }

  private refuseUnlessNewer(cid: number): void {
    const latest = this.latest();
    if (latest !== null && cid <= latest.cid) {
      throw new BftError('BFT_ERR_CHECKPOINT_STALE', `checkpoint ${cid} is not newer than the stored checkpoint ${latest.cid}`);
    }
  }

  private find(cid: number): Manifest {
    const manifest = this.manifests.find((candidate) => candidate.cid === cid);
    if (manifest === undefined) {
      const held = this.manifests.map((candidate) => candidate.cid).join(', ') || 'none';
      throw new BftError('BFT_ERR_CHECKPOINT_MISSING', `no checkpoint for instance ${cid} in ${this.dir} (it holds: ${held})`);
    }
    return manifest;
  }

  private async openData(path: string, cid: number): Promise<FileHandle> {
    try {
      return await open(path, 'r');
    } catch (cause) {
      if ((cause as { code?: unknown }).code === 'ENOENT') {
        throw new BftError('BFT_ERR_CHECKPOINT_MISSING', `checkpoint ${cid} was pruned while it was being read`, { cause });
      }
      throw ioError(`cannot open ${path}`, cause);
    }
  }

  private async readVerifiedChunk(handle: FileHandle, path: string, manifest: Manifest, index: number): Promise<Buffer> {
    const offset = index * manifest.chunkBytes;
    const length = Math.min(manifest.chunkBytes, manifest.totalBytes - offset);
    const buffer = Buffer.allocUnsafe(length);
    let filled: number;
    try {
      filled = await readFully(handle, buffer, length, offset);
    } catch (cause) {
      throw ioError(`cannot read chunk ${index} of ${path}`, cause);
    }
    const where = `${path}: chunk ${index} (bytes ${offset}..${offset + length - 1})`;
    if (filled < length) {
      this.counters.chunkMismatches += 1;
      throw corrupt(`${where} is cut short: only ${filled} of its ${length} bytes are present`);
    }
    const chunk = buffer.subarray(0, length);
    const expected = manifest.chunkHashes[index];
    invariant(expected !== undefined, `checkpoint ${manifest.cid} has a hash for chunk ${index}`);
    if (!bytesEqual(sha256(chunk), expected)) {
      this.counters.chunkMismatches += 1;
      throw corrupt(`${where} does not match its SHA-256 in the manifest`);
    }
    this.counters.chunksVerified += 1;
    return chunk;
  }

  /** A chunk that matches the manifest, null once the install is aborted, or a BFT_ERR_CHECKPOINT_TRANSFER_FAILED. */
  private async fetchVerifiedChunk(
    manifest: Manifest,
    index: number,
    fetchChunk: FetchChunk,
    attemptTimeoutMs: number,
    installSignal: AbortSignal,
    progress: MutableInstallProgress,
  ): Promise<Uint8Array | null> {
    const expectedHash = manifest.chunkHashes[index];
    invariant(expectedHash !== undefined, `checkpoint ${manifest.cid} has a hash for chunk ${index}`);
    const expectedBytes = Math.min(manifest.chunkBytes, manifest.totalBytes - index * manifest.chunkBytes);
    const problems: string[] = [];
    for (let attempt = 0; attempt < limits.checkpointChunkAttemptsMax; attempt++) {
      if (installSignal.aborted) return null;
      if (attempt > 0) {
        this.counters.installRetries += 1;
        progress.retries += 1;
        progress.retriesByIndex[index] = attempt;
      }
      let chunk: unknown;
      try {
        chunk = await attemptOnce(fetchChunk, index, attempt, attemptTimeoutMs, installSignal);
      } catch (error) {
        if (installSignal.aborted) return null;
        this.counters.chunkFetchFailures += 1;
        problems.push(`attempt ${attempt} failed: ${String(error instanceof Error ? error.message : error).slice(0, 160)}`);
        continue;
      }
      if (!(chunk instanceof Uint8Array) || chunk.length !== expectedBytes || !bytesEqual(sha256(chunk), expectedHash)) {
        this.counters.chunkMismatches += 1;
        const size = chunk instanceof Uint8Array ? `${chunk.length} bytes` : 'not bytes';
        problems.push(`attempt ${attempt} did not match the manifest (${size}, ${expectedBytes} expected)`);
        continue;
      }
      this.counters.chunksVerified += 1;
      return chunk;
    }
    this.logger?.warn({ cid: manifest.cid, index, problems }, 'checkpoint store: state transfer gave up on a chunk');
    throw new BftError(
      'BFT_ERR_CHECKPOINT_TRANSFER_FAILED',
      `chunk ${index} of checkpoint ${manifest.cid}: no good copy in ${limits.checkpointChunkAttemptsMax} attempts ` +
        `(${problems.join('; ')}); ` +
        'nothing was installed: retry the state transfer, from other replicas if these keep failing',
    );
  }

  private async publish(temporary: string, manifest: Manifest): Promise<void> {
    const handle = await open(join(temporary, manifestFileName), 'wx');
    try {
      await writeFully(handle, encodeManifestFile(manifest), 0);
      await handle.datasync();
    } finally {
      await handle.close();
    }
    await syncDirectory(temporary);
    await rename(temporary, join(this.dir, checkpointFolderName(manifest.cid)));
    await syncDirectory(this.dir);
    this.manifests.push(manifest);
    const { cid, totalBytes } = manifest;
    this.logger?.info({ cid, totalBytes, chunks: manifest.chunkHashes.length }, 'checkpoint store: published');
    await this.prune();
  }

  /** Deletes the oldest checkpoints beyond `keep`, each renamed out of the published names first. */
  private async prune(): Promise<void> {
    while (this.manifests.length > this.keep) {
      const oldest = this.manifests.shift();
      invariant(oldest !== undefined, 'a store over its keep has a checkpoint to prune');
      const folder = join(this.dir, checkpointFolderName(oldest.cid));
      const doomed = `${folder}.deleting`;
      await rename(folder, doomed);
      await syncDirectory(this.dir);
      await rm(doomed, { recursive: true, force: true });
      this.counters.checkpointsPruned += 1;
    }
  }
}

/** One attempt at a chunk, failed after `timeoutMs` or when the install aborts; its signal tells the fetcher. */
async function attemptOnce(
  fetchChunk: FetchChunk,
  index: number,
  attempt: number,
  timeoutMs: number,
  installSignal: AbortSignal,
): Promise<unknown> {
  const controller = new AbortController();
  const onInstallAbort = () => controller.abort(installSignal.reason);
  installSignal.addEventListener('abort', onInstallAbort, { once: true });
  let timer: NodeJS.Timeout | undefined;
  try {
    const fetching = Promise.resolve().then(() => fetchChunk(index, attempt, controller.signal));
    // An abandoned attempt may still settle later: its outcome is ignored, never an unhandled rejection.
    fetching.catch(() => undefined);
    const stopped = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const error = new Error(`no answer within ${timeoutMs} ms`);
        controller.abort(error);
        reject(error);
      }, timeoutMs);
      controller.signal.addEventListener('abort', () => reject(controller.signal.reason), { once: true });
    });
    stopped.catch(() => undefined);
    return await Promise.race([fetching, stopped]);
  } finally {
    clearTimeout(timer);
    installSignal.removeEventListener('abort', onInstallAbort);
  }
}
