// The execute stage (DESIGN §1: "execute (the service, in its own worker)"): decided batches, read-only
// requests and reply-cache look-ups, executed one after another in call order, and checkpoint snapshots
// taken and installed between them as streams. Two implementations of one interface: WorkerServiceHost
// runs the service and the Executor on a worker thread, which decodes batches and encodes REPLY frames
// itself, so the main thread only forwards bytes; InlineServiceHost runs them on the calling thread
// (the simulator, tests, and a fallback).

import { Worker } from 'node:worker_threads';
import { limits } from '../constants.ts';
import { BftError, type ErrorCode, errorCodes } from '../errors.ts';
import type { Delivery } from '../core/ready.ts';
import { encodeMessage } from '../protocol/codec.ts';
import { type ClientRequest, MessageType } from '../protocol/messages.ts';
import type { Executor } from './executor.ts';
import type { ServiceSpec } from './load-service.ts';
import type { Service } from './service.ts';

/** An encoded REPLY frame and the client (session) id it answers. */
export interface EncodedReply {
  readonly clientId: string;
  readonly payload: Uint8Array;
  /**
   * For replies to ordered requests just executed: their seq and the result's bytes (a view into
   * `payload`), so that the replica can answer with a REPLY_DIGEST instead when the client asked for one.
   */
  readonly executed?: { readonly seq: number; readonly result: Uint8Array };
}

export interface SnapshotParts {
  readonly service: AsyncIterable<Uint8Array>;
  readonly replies: AsyncIterable<Uint8Array>;
}

export interface ServiceHostStats {
  /** Ordered requests executed since the host started (replayed ones included). */
  readonly executedRequests: number;
  /** Batches handed to execute() and not yet executed; at most limits.executeQueueBatchesMax. */
  readonly queuedBatches: number;
  /** Unordered reads and cached-reply look-ups not yet answered; at most limits.executeQueueReadsMax. */
  readonly queuedReads: number;
  /** Snapshot pieces received from the service and not yet taken by the consumer. */
  readonly snapshotPiecesBuffered: number;
  readonly snapshotsTaken: number;
  readonly installs: number;
  /** Where the service runs. */
  readonly thread: 'worker' | 'inline';
}

export interface ServiceHost {
  /**
   * Decided batches, executed in call order, each exactly once. Resolves with the encoded REPLY frame per
   * request. Rejects at once with BFT_ERR_OVERLOADED when limits.executeQueueBatchesMax batches are queued
   * (the caller waits for one to finish first), and with BFT_ERR_SERVICE_FAILED once the service failed.
   */
  execute(delivery: Delivery, viewNumber: number): Promise<readonly EncodedReply[]>;
  /**
   * Read-only request, ordered after every execute() called before it (so a read sees acknowledged
   * writes). Rejects at once with BFT_ERR_OVERLOADED beyond limits.executeQueueReadsMax queued reads.
   */
  executeUnordered(request: ClientRequest, viewNumber: number): Promise<EncodedReply>;
  /** The cached reply of an executed request, if still kept; bounded like executeUnordered. */
  cachedReply(clientId: string, seq: number, viewNumber: number): Promise<EncodedReply | undefined>;
  /**
   * The state after every execute() called before it, as the checkpoint parts `service` then `replies`.
   * Nothing else executes until both iterables are consumed (or the caller calls `return()` on them):
   * a caller that wants only one part must still return() the other.
   */
  snapshot(): Promise<SnapshotParts>;
  /**
   * Replace the whole state (service + reply cache) from the two parts, read in that order; resolves with
   * the clients' last executed seqs. A malformed service part rejects with BFT_ERR_SNAPSHOT_INVALID and
   * leaves the state as it was; a malformed reply part after a good service part leaves the state half
   * replaced, so the host fails (BFT_ERR_SERVICE_FAILED, onFatal) rather than execute on it.
   */
  install(parts: SnapshotParts): Promise<Array<[string, number]>>;
  stats(): ServiceHostStats;
  /** Stops the host; calls still pending reject with BFT_ERR_CLOSED. A worker host keeps the process alive until then. */
  close(): Promise<void>;
}

export function encodeReply(clientId: string, seq: number, viewNumber: number, result: Uint8Array): EncodedReply {
  return { clientId, payload: encodeMessage({ type: MessageType.REPLY, view: viewNumber, clientId, seq, result }) };
}

/**
 * A copy in an ArrayBuffer of its own, safe to transfer. Not slice(): on a Buffer (what msgpack and the
 * transport hand out) that is a view of a shared buffer, and transferring it would detach the original.
 */
export function ownedCopy(bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  return new Uint8Array(bytes);
}

function overloaded(what: string, max: number): BftError {
  return new BftError('BFT_ERR_OVERLOADED', `the execute stage holds ${max} queued ${what}, its bound; wait for one to finish or shed this one`);
}

function closedError(): BftError {
  return new BftError('BFT_ERR_CLOSED', 'the service host was closed');
}

// --- Inline -------------------------------------------------------------------------------------------------

/** A sync iterator handed out as an async one that reports when it is finished, exhausted or returned. */
class ReleasingPieces implements AsyncIterableIterator<Uint8Array> {
  private readonly source: Iterator<Uint8Array>;
  private readonly release: () => void;
  private finished = false;

  constructor(source: Iterable<Uint8Array>, release: () => void) {
    this.source = source[Symbol.iterator]();
    this.release = release;
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  async next(): Promise<IteratorResult<Uint8Array, undefined>> {
    if (this.finished) return { done: true, value: undefined };
    let result: IteratorResult<Uint8Array>;
    try {
      result = this.source.next();
    } catch (error) {
      this.finish();
      throw error;
    }
    if (result.done === true) {
      this.finish();
      return { done: true, value: undefined };
    }
    return { done: false, value: result.value };
  }

  async return(): Promise<IteratorResult<Uint8Array, undefined>> {
    if (!this.finished) this.source.return?.();
    this.finish();
    return { done: true, value: undefined };
  }

  private finish(): void {
    if (this.finished) return;
    this.finished = true;
    this.release();
  }
}

export class InlineServiceHost implements ServiceHost {
  private readonly service: Service;
  private readonly executor: Executor;
  /** Settles when every operation called so far has finished. */
  private tail: Promise<unknown> = Promise.resolve();
  private queuedBatches = 0;
  private queuedReads = 0;
  private snapshotsTaken = 0;
  private installs = 0;
  private failure: BftError | null = null;
  private closed = false;

  constructor(service: Service, executor: Executor) {
    this.service = service;
    this.executor = executor;
  }

  execute(delivery: Delivery, viewNumber: number): Promise<readonly EncodedReply[]> {
    const refused = this.refusal();
    if (refused !== null) return Promise.reject(refused);
    if (this.queuedBatches >= limits.executeQueueBatchesMax) return Promise.reject(overloaded('batches', limits.executeQueueBatchesMax));
    this.queuedBatches++;
    return this.enqueue(() => {
      this.queuedBatches--;
      let executed;
      try {
        executed = this.executor.execute(delivery);
      } catch (cause) {
        throw this.fail(cause);
      }
      return executed.map((reply) => ({
        ...encodeReply(reply.clientId, reply.seq, viewNumber, reply.result),
        executed: { seq: reply.seq, result: reply.result },
      }));
    });
  }

  executeUnordered(request: ClientRequest, viewNumber: number): Promise<EncodedReply> {
    return this.read(() => {
      let result: Uint8Array;
      try {
        result = this.service.executeUnordered(request.operation);
      } catch (cause) {
        throw this.fail(cause);
      }
      return encodeReply(request.clientId, request.seq, viewNumber, result);
    });
  }

  cachedReply(clientId: string, seq: number, viewNumber: number): Promise<EncodedReply | undefined> {
    return this.read(() => {
      const result = this.executor.cachedReply(clientId, seq);
      return result === undefined ? undefined : encodeReply(clientId, seq, viewNumber, result);
    });
  }

  snapshot(): Promise<SnapshotParts> {
    const refused = this.refusal();
    if (refused !== null) return Promise.reject(refused);
    return new Promise<SnapshotParts>((resolve, reject) => {
      this.enqueue(
        () =>
          new Promise<void>((released) => {
            let open = 2;
            const release = () => {
              if (--open === 0) released();
            };
            this.snapshotsTaken++;
            resolve({
              service: new ReleasingPieces(this.service.snapshot(), release),
              replies: new ReleasingPieces(this.executor.snapshotReplies(), release),
            });
            // A captured snapshot needs no pause: execution goes on while it is read.
            if (this.service.snapshotsAreIsolated === true) released();
          }),
      ).catch(reject);
    });
  }

  install(parts: SnapshotParts): Promise<Array<[string, number]>> {
    const refused = this.refusal();
    if (refused !== null) return Promise.reject(refused);
    return this.enqueue(async () => {
      try {
        await this.service.installSnapshot(parts.service);
      } catch (error) {
        await parts.replies[Symbol.asyncIterator]().return?.();
        throw error;
      }
      try {
        await this.executor.installReplies(parts.replies);
      } catch (cause) {
        throw this.fail(cause);
      }
      this.installs++;
      return this.executor.clientSeqs();
    });
  }

  stats(): ServiceHostStats {
    return {
      executedRequests: this.executor.executed,
      queuedBatches: this.queuedBatches,
      queuedReads: this.queuedReads,
      snapshotPiecesBuffered: 0,
      snapshotsTaken: this.snapshotsTaken,
      installs: this.installs,
      thread: 'inline',
    };
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  private read<T>(operation: () => T): Promise<T> {
    const refused = this.refusal();
    if (refused !== null) return Promise.reject(refused);
    if (this.queuedReads >= limits.executeQueueReadsMax) return Promise.reject(overloaded('reads', limits.executeQueueReadsMax));
    this.queuedReads++;
    return this.enqueue(() => {
      this.queuedReads--;
      return operation();
    });
  }

  private enqueue<T>(operation: () => T | Promise<T>): Promise<T> {
    const result = this.tail.then(() => {
      const refused = this.refusal();
      if (refused !== null) throw refused;
      return operation();
    });
    this.tail = result.catch(() => undefined);
    return result;
  }

  private refusal(): BftError | null {
    if (this.closed) return closedError();
    return this.failure;
  }

  /** The state can no longer be trusted: every later call is refused with the same error. */
  private fail(cause: unknown): BftError {
    this.failure ??= new BftError('BFT_ERR_SERVICE_FAILED', 'the service failed while executing; the replica must restart', { cause });
    return this.failure;
  }
}

// --- Worker -------------------------------------------------------------------------------------------------

export type SnapshotPartName = 'service' | 'replies';

/** Messages to the service worker (service-worker.ts). */
export type HostRequest =
  | {
      readonly kind: 'execute';
      readonly id: number;
      readonly cid: number;
      readonly regency: number;
      readonly viewNumber: number;
      readonly batch: Uint8Array;
      /** Delivery.reconfigurationResults, as pairs (a Map would be cloned the same). */
      readonly reconfigurationResults?: ReadonlyArray<readonly [number, Uint8Array]>;
    }
  | { readonly kind: 'unordered'; readonly id: number; readonly viewNumber: number; readonly clientId: string; readonly seq: number; readonly operation: Uint8Array }
  | { readonly kind: 'cached'; readonly id: number; readonly viewNumber: number; readonly clientId: string; readonly seq: number }
  | { readonly kind: 'snapshot'; readonly id: number }
  /** Credit: the worker may send this many more pieces of the part. */
  | { readonly kind: 'snapshot-pull'; readonly id: number; readonly part: SnapshotPartName; readonly pieces: number }
  | { readonly kind: 'snapshot-cancel'; readonly id: number; readonly part: SnapshotPartName }
  | { readonly kind: 'install'; readonly id: number }
  | { readonly kind: 'install-piece'; readonly id: number; readonly part: SnapshotPartName; readonly bytes: Uint8Array }
  | { readonly kind: 'install-end'; readonly id: number; readonly part: SnapshotPartName };

export interface ErrorReport {
  readonly code: string | null;
  readonly message: string;
  readonly stack: string | null;
}

/** Messages from the service worker. */
export type HostResponse =
  | { readonly kind: 'ready' }
  | { readonly kind: 'start-failed'; readonly error: ErrorReport }
  /**
   * Every REPLY frame of the batch back to back in `data`, `lengths[i]` bytes each; frame i answers seq
   * `seqs[i]` and its result is the frame's last `resultLengths[i]` bytes.
   */
  | {
      readonly kind: 'executed';
      readonly id: number;
      readonly clientIds: readonly string[];
      readonly data: Uint8Array;
      readonly lengths: Uint32Array;
      readonly seqs: Float64Array;
      readonly resultLengths: Uint32Array;
    }
  | { readonly kind: 'reply'; readonly id: number; readonly clientId: string; readonly payload: Uint8Array | null }
  | { readonly kind: 'snapshot-piece'; readonly id: number; readonly part: SnapshotPartName; readonly bytes: Uint8Array }
  | { readonly kind: 'snapshot-end'; readonly id: number; readonly part: SnapshotPartName; readonly error: ErrorReport | null }
  | { readonly kind: 'install-ack'; readonly id: number; readonly part: SnapshotPartName }
  | { readonly kind: 'installed'; readonly id: number; readonly clientSeqs: Array<[string, number]> }
  | { readonly kind: 'install-failed'; readonly id: number; readonly error: ErrorReport }
  | { readonly kind: 'fatal'; readonly error: ErrorReport };

export interface WorkerData {
  readonly service: ServiceSpec;
  readonly clientInFlightMax: number;
}

export function errorReport(error: unknown): ErrorReport {
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code;
    return { code: typeof code === 'string' ? code : null, message: error.message, stack: error.stack ?? null };
  }
  return { code: null, message: String(error), stack: null };
}

/** A BftError again on this side of the thread boundary, with its code when it had one of ours. */
function errorFrom(report: ErrorReport, fallback: ErrorCode, context: string): BftError {
  const code = report.code !== null && report.code in errorCodes ? (report.code as ErrorCode) : fallback;
  const prefix = `${code}: `;
  const message = report.message.startsWith(prefix) ? report.message.slice(prefix.length) : report.message;
  const cause = new Error(report.message);
  if (report.stack !== null) cause.stack = report.stack;
  return new BftError(code, `${context}: ${message}`, { cause });
}

interface PendingCall {
  readonly kind: 'batch' | 'read';
  readonly requests: number;
  readonly resolve: (value: never) => void;
  readonly reject: (error: BftError) => void;
}

/** One snapshot part as the consumer sees it: pieces arrive against credit, one more granted per piece taken. */
class ReceivedPart implements AsyncIterableIterator<Uint8Array> {
  readonly pieces: Uint8Array[] = [];
  ended = false;
  error: BftError | null = null;
  private started = false;
  private waiter: (() => void) | null = null;
  private readonly host: WorkerServiceHost;
  private readonly id: number;
  private readonly part: SnapshotPartName;

  constructor(host: WorkerServiceHost, id: number, part: SnapshotPartName) {
    this.host = host;
    this.id = id;
    this.part = part;
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  async next(): Promise<IteratorResult<Uint8Array, undefined>> {
    if (!this.started) {
      this.started = true;
      this.host.post({ kind: 'snapshot-pull', id: this.id, part: this.part, pieces: limits.snapshotPiecesAheadMax });
    }
    while (this.pieces.length === 0 && !this.ended && this.error === null) {
      await new Promise<void>((resolve) => {
        this.waiter = resolve;
      });
    }
    const piece = this.pieces.shift();
    if (piece !== undefined) {
      this.host.pieceTaken();
      if (!this.ended) this.host.post({ kind: 'snapshot-pull', id: this.id, part: this.part, pieces: 1 });
      return { done: false, value: piece };
    }
    if (this.error !== null) throw this.error;
    return { done: true, value: undefined };
  }

  async return(): Promise<IteratorResult<Uint8Array, undefined>> {
    if (!this.ended && this.error === null) {
      this.ended = true;
      this.host.post({ kind: 'snapshot-cancel', id: this.id, part: this.part });
      this.host.partFinished(this.id);
    }
    this.host.piecesDropped(this.pieces.length);
    this.pieces.length = 0;
    this.wake();
    return { done: true, value: undefined };
  }

  receive(piece: Uint8Array): void {
    this.pieces.push(piece);
    this.wake();
  }

  end(error: BftError | null): void {
    if (this.ended) return;
    if (error !== null && this.error === null) this.error = error;
    this.ended = true;
    this.host.partFinished(this.id);
    this.wake();
  }

  private wake(): void {
    const waiter = this.waiter;
    this.waiter = null;
    waiter?.();
  }
}

interface InstallSession {
  inFlight: number;
  finished: boolean;
  creditWaiter: (() => void) | null;
  readonly resolve: (seqs: Array<[string, number]>) => void;
  readonly reject: (error: BftError) => void;
}

const workerUrl = new URL('./service-worker.ts', import.meta.url);

export interface WorkerServiceHostOptions {
  readonly service: ServiceSpec;
  /** Replies kept per client in the reply cache (the configuration's clientInFlightMax). */
  readonly clientInFlightMax: number;
  /**
   * Called once when the worker died or the service threw: the state is no longer trustworthy and the
   * replica must stop. Every call pending then rejects with BFT_ERR_SERVICE_FAILED too.
   */
  readonly onFatal?: (error: BftError) => void;
}

export class WorkerServiceHost implements ServiceHost {
  private readonly worker: Worker;
  private readonly onFatal: ((error: BftError) => void) | undefined;
  private readonly calls = new Map<number, PendingCall>();
  private readonly snapshots = new Map<number, { service: ReceivedPart; replies: ReceivedPart }>();
  private readonly installSessions = new Map<number, InstallSession>();
  private nextId = 1;
  private queuedBatches = 0;
  private queuedReads = 0;
  private executedRequests = 0;
  private piecesBuffered = 0;
  private snapshotsTaken = 0;
  private installs = 0;
  private failure: BftError | null = null;
  private closed = false;

  private constructor(worker: Worker, onFatal: ((error: BftError) => void) | undefined) {
    this.worker = worker;
    this.onFatal = onFatal;
  }

  /** Starts the worker and loads the service in it; rejects (BFT_ERR_CONFIG_INVALID…) if it cannot. */
  static async start(options: WorkerServiceHostOptions): Promise<WorkerServiceHost> {
    const workerData: WorkerData = { service: options.service, clientInFlightMax: options.clientInFlightMax };
    const worker = new Worker(workerUrl, { name: 'bftkube-service', workerData });
    await new Promise<void>((resolve, reject) => {
      const onMessage = (message: HostResponse) => {
        if (message.kind === 'ready') {
          cleanup();
          resolve();
        } else if (message.kind === 'start-failed') {
          cleanup();
          void worker.terminate();
          reject(errorFrom(message.error, 'BFT_ERR_CONFIG_INVALID', 'the service could not be loaded in its worker'));
        }
      };
      const onError = (error: Error) => {
        cleanup();
        reject(new BftError('BFT_ERR_WORKER_FAILED', 'the service worker failed while starting; see the cause', { cause: error }));
      };
      const onExit = (exitCode: number) => {
        cleanup();
        reject(new BftError('BFT_ERR_WORKER_FAILED', `the service worker exited with code ${exitCode} while starting`));
      };
      const cleanup = () => {
        worker.off('message', onMessage);
        worker.off('error', onError);
        worker.off('exit', onExit);
      };
      worker.on('message', onMessage);
      worker.on('error', onError);
      worker.on('exit', onExit);
    });
    const host = new WorkerServiceHost(worker, options.onFatal);
    worker.on('message', (message: HostResponse) => host.onMessage(message));
    worker.on('error', (error) => host.fail(new BftError('BFT_ERR_SERVICE_FAILED', 'the service worker threw; the state is no longer trustworthy', { cause: error })));
    worker.on('exit', (exitCode) => host.fail(new BftError('BFT_ERR_SERVICE_FAILED', `the service worker exited with code ${exitCode}; the state is no longer trustworthy`)));
    // The worker stays referenced until close(), like a listening server: toggling ref()/unref() per call
    // cost about 11 µs per batch (measured, sequential batches of 10).
    return host;
  }

  execute(delivery: Delivery, viewNumber: number): Promise<readonly EncodedReply[]> {
    const refused = this.refusal();
    if (refused !== null) return Promise.reject(refused);
    if (this.queuedBatches >= limits.executeQueueBatchesMax) return Promise.reject(overloaded('batches', limits.executeQueueBatchesMax));
    const { decision } = delivery;
    // A copy the worker owns: the decision's batch is a view of a frame the core still keeps.
    const batch = ownedCopy(decision.batch);
    const id = this.nextId++;
    this.queuedBatches++;
    return this.call<readonly EncodedReply[]>(id, 'batch', delivery.requests.length, () =>
      this.post(
        {
          kind: 'execute',
          id,
          cid: decision.cid,
          regency: decision.regency,
          viewNumber,
          batch,
          ...(delivery.reconfigurationResults === undefined ? {} : { reconfigurationResults: [...delivery.reconfigurationResults] }),
        },
        [batch.buffer],
      ),
    );
  }

  executeUnordered(request: ClientRequest, viewNumber: number): Promise<EncodedReply> {
    const refused = this.readRefusal();
    if (refused !== null) return Promise.reject(refused);
    const operation = ownedCopy(request.operation);
    const id = this.nextId++;
    this.queuedReads++;
    return this.call<EncodedReply>(id, 'read', 0, () =>
      this.post({ kind: 'unordered', id, viewNumber, clientId: request.clientId, seq: request.seq, operation }, [operation.buffer]),
    );
  }

  cachedReply(clientId: string, seq: number, viewNumber: number): Promise<EncodedReply | undefined> {
    const refused = this.readRefusal();
    if (refused !== null) return Promise.reject(refused);
    const id = this.nextId++;
    this.queuedReads++;
    return this.call<EncodedReply | undefined>(id, 'read', 0, () => this.post({ kind: 'cached', id, viewNumber, clientId, seq }));
  }

  async snapshot(): Promise<SnapshotParts> {
    const refused = this.refusal();
    if (refused !== null) throw refused;
    const id = this.nextId++;
    const parts = { service: new ReceivedPart(this, id, 'service'), replies: new ReceivedPart(this, id, 'replies') };
    this.snapshots.set(id, parts);
    this.snapshotsTaken++;
    this.post({ kind: 'snapshot', id });
    return parts;
  }

  install(parts: SnapshotParts): Promise<Array<[string, number]>> {
    const refused = this.refusal();
    if (refused !== null) return Promise.reject(refused);
    const id = this.nextId++;
    const result = new Promise<Array<[string, number]>>((resolve, reject) => {
      this.installSessions.set(id, { inFlight: 0, finished: false, creditWaiter: null, resolve, reject });
    });
    this.post({ kind: 'install', id });
    void this.pumpInstall(id, parts);
    return result;
  }

  stats(): ServiceHostStats {
    return {
      executedRequests: this.executedRequests,
      queuedBatches: this.queuedBatches,
      queuedReads: this.queuedReads,
      snapshotPiecesBuffered: this.piecesBuffered,
      snapshotsTaken: this.snapshotsTaken,
      installs: this.installs,
      thread: 'worker',
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.failEverything(closedError());
    await this.worker.terminate();
  }

  /** @internal For ReceivedPart and the install pump. */
  post(request: HostRequest, transfer: ArrayBuffer[] = []): void {
    if (this.failure !== null || this.closed) return;
    this.worker.postMessage(request, transfer);
  }

  /** @internal A part ended or was returned: the snapshot is over once both are. */
  partFinished(id: number): void {
    const parts = this.snapshots.get(id);
    if (parts === undefined || !parts.service.ended || !parts.replies.ended) return;
    this.snapshots.delete(id);
  }

  /** @internal */
  pieceTaken(): void {
    this.piecesBuffered--;
  }

  /** @internal */
  piecesDropped(count: number): void {
    this.piecesBuffered -= count;
  }

  private call<T>(id: number, kind: PendingCall['kind'], requests: number, send: () => void): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.calls.set(id, { kind, requests, resolve: resolve as (value: never) => void, reject });
      send();
    });
  }

  private async pumpInstall(id: number, parts: SnapshotParts): Promise<void> {
    const session = this.installSessions.get(id);
    if (session === undefined) return;
    try {
      for (const part of ['service', 'replies'] as const) {
        for await (const piece of parts[part]) {
          while (session.inFlight >= limits.snapshotPiecesAheadMax && !session.finished) {
            await new Promise<void>((resolve) => {
              session.creditWaiter = resolve;
            });
          }
          if (session.finished) break;
          // A copy the worker owns: the caller may still hold (and hash) its piece.
          const bytes = ownedCopy(piece);
          session.inFlight++;
          this.post({ kind: 'install-piece', id, part, bytes }, [bytes.buffer]);
        }
        if (session.finished) break;
        this.post({ kind: 'install-end', id, part });
      }
    } catch (cause) {
      // The source failed (a disk error, a failed fetch): nothing more will come, and nothing was replaced
      // unless the service part was already whole, in which case the worker's install fails on the replies.
      this.post({ kind: 'install-end', id, part: 'service' });
      this.post({ kind: 'install-end', id, part: 'replies' });
      this.finishInstall(id, new BftError('BFT_ERR_SNAPSHOT_INVALID', 'the checkpoint being installed could not be read; see the cause', { cause }));
    } finally {
      // Whatever happened, release the sources the caller gave us.
      if (session.finished) {
        await parts.service[Symbol.asyncIterator]().return?.();
        await parts.replies[Symbol.asyncIterator]().return?.();
      }
    }
  }

  private finishInstall(id: number, outcome: BftError | Array<[string, number]>): void {
    const session = this.installSessions.get(id);
    if (session === undefined) return;
    this.installSessions.delete(id);
    session.finished = true;
    session.creditWaiter?.();
    if (outcome instanceof BftError) session.reject(outcome);
    else {
      this.installs++;
      session.resolve(outcome);
    }
  }

  private onMessage(message: HostResponse): void {
    switch (message.kind) {
      case 'executed': {
        const call = this.take(message.id);
        if (call === undefined) return;
        const replies: EncodedReply[] = new Array<EncodedReply>(message.clientIds.length);
        let offset = 0;
        for (let i = 0; i < message.clientIds.length; i++) {
          const length = message.lengths[i] as number;
          const payload = message.data.subarray(offset, offset + length);
          const result = payload.subarray(length - (message.resultLengths[i] as number));
          replies[i] = { clientId: message.clientIds[i] as string, payload, executed: { seq: message.seqs[i] as number, result } };
          offset += length;
        }
        this.executedRequests += replies.length;
        call.resolve(replies as never);
        return;
      }
      case 'reply': {
        const call = this.take(message.id);
        call?.resolve((message.payload === null ? undefined : { clientId: message.clientId, payload: message.payload }) as never);
        return;
      }
      case 'snapshot-piece': {
        const parts = this.snapshots.get(message.id);
        if (parts === undefined || parts[message.part].ended) return;
        this.piecesBuffered++;
        parts[message.part].receive(message.bytes);
        return;
      }
      case 'snapshot-end': {
        const parts = this.snapshots.get(message.id);
        if (parts === undefined) return;
        parts[message.part].end(message.error === null ? null : errorFrom(message.error, 'BFT_ERR_SERVICE_FAILED', 'the snapshot failed'));
        return;
      }
      case 'install-ack': {
        const session = this.installSessions.get(message.id);
        if (session === undefined) return;
        session.inFlight--;
        const waiter = session.creditWaiter;
        session.creditWaiter = null;
        waiter?.();
        return;
      }
      case 'installed':
        this.finishInstall(message.id, message.clientSeqs);
        return;
      case 'install-failed':
        this.finishInstall(message.id, errorFrom(message.error, 'BFT_ERR_SNAPSHOT_INVALID', 'the checkpoint was not installed'));
        return;
      case 'fatal':
        this.fail(errorFrom(message.error, 'BFT_ERR_SERVICE_FAILED', 'the service failed in its worker; the state is no longer trustworthy'));
        return;
      case 'ready':
      case 'start-failed':
        return;
    }
  }

  private take(id: number): PendingCall | undefined {
    const call = this.calls.get(id);
    if (call === undefined) return undefined;
    this.calls.delete(id);
    if (call.kind === 'batch') this.queuedBatches--;
    else this.queuedReads--;
    return call;
  }

  private readRefusal(): BftError | null {
    const refused = this.refusal();
    if (refused !== null) return refused;
    if (this.queuedReads >= limits.executeQueueReadsMax) return overloaded('reads', limits.executeQueueReadsMax);
    return null;
  }

  private refusal(): BftError | null {
    if (this.closed) return closedError();
    return this.failure;
  }

  private fail(error: BftError): void {
    if (this.failure !== null || this.closed) return;
    this.failure = error;
    this.failEverything(error);
    void this.worker.terminate();
    this.onFatal?.(error);
  }

  private failEverything(error: BftError): void {
    const calls = [...this.calls.keys()];
    for (const id of calls) this.take(id)?.reject(error);
    for (const parts of [...this.snapshots.values()]) {
      parts.service.end(error);
      parts.replies.end(error);
    }
    for (const id of [...this.installSessions.keys()]) this.finishInstall(id, error);
  }
}
