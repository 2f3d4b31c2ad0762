// The service worker of WorkerServiceHost (service-host.ts). Runs under Node's type stripping: erasable
// syntax only. It loads the service itself, owns the Executor, decodes decided batches and encodes REPLY
// frames, so that the main thread only moves bytes. Its only peer is the host on the main thread, so its
// messages are trusted (the batches in them were decided by the core, which validated them).
//
// Operations run one at a time in arrival order; an install, and the snapshot of a service whose snapshots
// are not isolated, hold the queue until they are finished, while their control messages (credit, pieces,
// cancel) are handled as they arrive. An isolated snapshot is captured in queue order and then streamed
// between the operations that follow it.

import { parentPort, workerData } from 'node:worker_threads';
import { BftError } from '../errors.ts';
import { Packr } from 'msgpackr';
import { encodeMessage, plainMsgpackOptions } from '../protocol/codec.ts';
import { type Batch, type ClientRequest, MessageType } from '../protocol/messages.ts';
import { Executor } from './executor.ts';
import { loadService } from './load-service.ts';
import type { Service } from './service.ts';
import { type HostRequest, type HostResponse, type SnapshotPartName, type WorkerData, errorReport, ownedCopy } from './service-host.ts';

const batchUnpacker = new Packr(plainMsgpackOptions);

const port = parentPort;
if (port === null) throw new Error('service-worker.ts runs only as the worker thread of WorkerServiceHost');

function send(response: HostResponse, transfer: ArrayBuffer[] = []): void {
  (port as NonNullable<typeof port>).postMessage(response, transfer);
}

/** The service can no longer be trusted: report, then end this thread (the host treats it as fatal). */
function fatal(error: unknown): never {
  send({ kind: 'fatal', error: errorReport(error) });
  process.exit(1);
}

function encodeReply(viewNumber: number, clientId: string, seq: number, result: Uint8Array): Uint8Array {
  return encodeMessage({ type: MessageType.REPLY, view: viewNumber, clientId, seq, result });
}


// --- Snapshots out ----------------------------------------------------------------------------------------

class OutgoingPart {
  credit = 0;
  done = false;
  private readonly iterator: Iterator<Uint8Array>;
  private readonly id: number;
  private readonly part: SnapshotPartName;

  constructor(id: number, part: SnapshotPartName, iterator: Iterator<Uint8Array>) {
    this.id = id;
    this.part = part;
    this.iterator = iterator;
  }

  /** Sends pieces while there is credit: the consumer acknowledges each, so at most `credit` travel at once. */
  pump(): void {
    while (!this.done && this.credit > 0) {
      let next: IteratorResult<Uint8Array>;
      try {
        next = this.iterator.next();
      } catch (error) {
        this.done = true;
        send({ kind: 'snapshot-end', id: this.id, part: this.part, error: errorReport(error) });
        return;
      }
      if (next.done === true) {
        this.done = true;
        send({ kind: 'snapshot-end', id: this.id, part: this.part, error: null });
        return;
      }
      if (next.value.length === 0) continue;
      this.credit--;
      const bytes = ownedCopy(next.value);
      send({ kind: 'snapshot-piece', id: this.id, part: this.part, bytes }, [bytes.buffer]);
    }
  }

  cancel(): void {
    if (this.done) return;
    this.done = true;
    this.iterator.return?.();
  }
}

interface SnapshotSession {
  /** Credit granted before the snapshot reached the head of the queue. */
  readonly earlyCredit: Record<SnapshotPartName, number>;
  readonly cancelled: Record<SnapshotPartName, boolean>;
  parts: Record<SnapshotPartName, OutgoingPart> | null;
  finished: (() => void) | null;
}

// --- Installs in --------------------------------------------------------------------------------------------

/** Pieces of one part as they arrive; each taken piece is acknowledged, which grants the host one more. */
class IncomingPart implements AsyncIterableIterator<Uint8Array> {
  private readonly pieces: Uint8Array[] = [];
  private ended = false;
  /** Once the reader stopped (finished or failed): later pieces are acknowledged and dropped. */
  private discarding = false;
  private waiter: (() => void) | null = null;
  private readonly id: number;
  private readonly part: SnapshotPartName;

  constructor(id: number, part: SnapshotPartName) {
    this.id = id;
    this.part = part;
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  async next(): Promise<IteratorResult<Uint8Array, undefined>> {
    while (this.pieces.length === 0 && !this.ended) {
      await new Promise<void>((resolve) => {
        this.waiter = resolve;
      });
    }
    const piece = this.pieces.shift();
    if (piece === undefined) return { done: true, value: undefined };
    send({ kind: 'install-ack', id: this.id, part: this.part });
    return { done: false, value: piece };
  }

  async return(): Promise<IteratorResult<Uint8Array, undefined>> {
    this.discard();
    return { done: true, value: undefined };
  }

  receive(piece: Uint8Array): void {
    if (this.discarding) {
      send({ kind: 'install-ack', id: this.id, part: this.part });
      return;
    }
    this.pieces.push(piece);
    this.wake();
  }

  end(): void {
    this.ended = true;
    this.wake();
  }

  /** The reader is done with this part: acknowledge what is left so that the host's pump is not stuck. */
  discard(): void {
    this.discarding = true;
    for (let i = 0; i < this.pieces.length; i++) send({ kind: 'install-ack', id: this.id, part: this.part });
    this.pieces.length = 0;
  }

  private wake(): void {
    const waiter = this.waiter;
    this.waiter = null;
    waiter?.();
  }
}

// --- The queue ------------------------------------------------------------------------------------------

const data = workerData as WorkerData;
let service: Service;
try {
  service = await loadService(data.service);
} catch (error) {
  send({ kind: 'start-failed', error: errorReport(error) });
  process.exit(1);
}
const executor = new Executor(service, data.clientInFlightMax);

type Operation = () => void | Promise<void>;
const queue: Operation[] = [];
let running = false;
const snapshots = new Map<number, SnapshotSession>();
const installs = new Map<number, Record<SnapshotPartName, IncomingPart>>();

function enqueue(operation: Operation): void {
  queue.push(operation);
  if (!running) void drain();
}

async function drain(): Promise<void> {
  running = true;
  try {
    for (let operation = queue.shift(); operation !== undefined; operation = queue.shift()) {
      const pending = operation();
      if (pending !== undefined) await pending;
    }
  } catch (error) {
    fatal(error);
  } finally {
    running = false;
  }
}

function execute(request: Extract<HostRequest, { kind: 'execute' }>): void {
  // These bytes passed the core's checks (size, structure, schema, sequence numbers) before they were
  // decided, and the log's before they were replayed: decoding them needs no second validation.
  let requests: readonly ClientRequest[];
  try {
    requests = (batchUnpacker.unpack(request.batch) as Batch).requests;
  } catch (error) {
    fatal(new BftError('BFT_ERR_INVARIANT', `decided batch of cid ${request.cid} does not decode; the core delivers only valid batches`, { cause: error }));
  }
  let replies;
  try {
    replies = executor.execute({
      decision: { cid: request.cid, regency: request.regency, batch: request.batch, votes: [] },
      requests,
      ...(request.reconfigurationResults === undefined ? {} : { reconfigurationResults: new Map(request.reconfigurationResults) }),
    });
  } catch (error) {
    fatal(new BftError('BFT_ERR_SERVICE_FAILED', `the service threw while executing cid ${request.cid}: ${error instanceof Error ? error.message : String(error)}`, { cause: error }));
  }
  // One buffer for every frame of the batch, transferred: the frames are views of the encoder's shared
  // buffer, so they cannot be transferred one by one, and one message costs less than one per frame.
  const frames: Uint8Array[] = new Array<Uint8Array>(replies.length);
  const clientIds: string[] = new Array<string>(replies.length);
  const lengths = new Uint32Array(replies.length);
  const seqs = new Float64Array(replies.length);
  const resultLengths = new Uint32Array(replies.length);
  let total = 0;
  for (let i = 0; i < replies.length; i++) {
    const reply = replies[i] as (typeof replies)[number];
    const frame = encodeReply(request.viewNumber, reply.clientId, reply.seq, reply.result);
    frames[i] = frame;
    clientIds[i] = reply.clientId;
    lengths[i] = frame.length;
    seqs[i] = reply.seq;
    // The result is the REPLY's last field, a msgpack bin: its bytes end the frame (codec.test.ts checks it).
    resultLengths[i] = reply.result.length;
    total += frame.length;
  }
  const all = new Uint8Array(total);
  let offset = 0;
  for (const frame of frames) {
    all.set(frame, offset);
    offset += frame.length;
  }
  send({ kind: 'executed', id: request.id, clientIds, data: all, lengths, seqs, resultLengths }, [
    all.buffer,
    lengths.buffer,
    seqs.buffer,
    resultLengths.buffer,
  ]);
}

function unordered(request: Extract<HostRequest, { kind: 'unordered' }>): void {
  let result: Uint8Array;
  try {
    result = service.executeUnordered(request.operation);
  } catch (error) {
    fatal(new BftError('BFT_ERR_SERVICE_FAILED', `the service threw on a read-only request: ${error instanceof Error ? error.message : String(error)}`, { cause: error }));
  }
  const payload = ownedCopy(encodeReply(request.viewNumber, request.clientId, request.seq, result));
  send({ kind: 'reply', id: request.id, clientId: request.clientId, payload }, [payload.buffer]);
}

function cached(request: Extract<HostRequest, { kind: 'cached' }>): void {
  const result = executor.cachedReply(request.clientId, request.seq);
  if (result === undefined) {
    send({ kind: 'reply', id: request.id, clientId: request.clientId, payload: null });
    return;
  }
  const payload = ownedCopy(encodeReply(request.viewNumber, request.clientId, request.seq, result));
  send({ kind: 'reply', id: request.id, clientId: request.clientId, payload }, [payload.buffer]);
}

function snapshot(id: number): Promise<void> {
  const session = snapshots.get(id) as SnapshotSession;
  return new Promise<void>((finished) => {
    session.finished = finished;
    session.parts = {
      service: new OutgoingPart(id, 'service', service.snapshot()[Symbol.iterator]()),
      replies: new OutgoingPart(id, 'replies', executor.snapshotReplies()),
    };
    for (const part of ['service', 'replies'] as const) {
      const outgoing = session.parts[part];
      if (session.cancelled[part]) outgoing.cancel();
      outgoing.credit = session.earlyCredit[part];
      outgoing.pump();
    }
    // A captured snapshot needs no pause: execution goes on while credit pulls its pieces.
    if (service.snapshotsAreIsolated === true) finished();
    settleSnapshot(id);
  });
}

function settleSnapshot(id: number): void {
  const session = snapshots.get(id);
  if (session?.parts == null || !session.parts.service.done || !session.parts.replies.done) return;
  snapshots.delete(id);
  session.finished?.();
}

function snapshotControl(request: Extract<HostRequest, { kind: 'snapshot-pull' | 'snapshot-cancel' }>): void {
  const session = snapshots.get(request.id);
  if (session === undefined) return;
  if (session.parts === null) {
    if (request.kind === 'snapshot-pull') session.earlyCredit[request.part] += request.pieces;
    else session.cancelled[request.part] = true;
    return;
  }
  const outgoing = session.parts[request.part];
  if (request.kind === 'snapshot-pull') {
    outgoing.credit += request.pieces;
    outgoing.pump();
  } else {
    outgoing.cancel();
  }
  settleSnapshot(request.id);
}

async function install(id: number): Promise<void> {
  const parts = installs.get(id) as Record<SnapshotPartName, IncomingPart>;
  try {
    await service.installSnapshot(parts.service);
  } catch (error) {
    parts.service.discard();
    parts.replies.discard();
    installs.delete(id);
    send({ kind: 'install-failed', id, error: errorReport(error) });
    return;
  }
  parts.service.discard();
  try {
    await executor.installReplies(parts.replies);
  } catch (error) {
    // The service already holds the new state and the reply cache the old one: nothing may execute on that.
    fatal(new BftError('BFT_ERR_SERVICE_FAILED', `the reply cache of a checkpoint could not be installed after its service state was: ${error instanceof Error ? error.message : String(error)}`, { cause: error }));
  }
  parts.replies.discard();
  installs.delete(id);
  send({ kind: 'installed', id, clientSeqs: executor.clientSeqs() });
}

port.on('message', (request: HostRequest) => {
  switch (request.kind) {
    case 'execute':
      return enqueue(() => execute(request));
    case 'unordered':
      return enqueue(() => unordered(request));
    case 'cached':
      return enqueue(() => cached(request));
    case 'snapshot':
      snapshots.set(request.id, { earlyCredit: { service: 0, replies: 0 }, cancelled: { service: false, replies: false }, parts: null, finished: null });
      return enqueue(() => snapshot(request.id));
    case 'snapshot-pull':
    case 'snapshot-cancel':
      return snapshotControl(request);
    case 'install':
      installs.set(request.id, { service: new IncomingPart(request.id, 'service'), replies: new IncomingPart(request.id, 'replies') });
      return enqueue(() => install(request.id));
    case 'install-piece': {
      const parts = installs.get(request.id);
      if (parts === undefined) return;
      // The host sends at most limits.snapshotPiecesAheadMax pieces before their acknowledgements.
      parts[request.part].receive(request.bytes);
      return;
    }
    case 'install-end':
      installs.get(request.id)?.[request.part].end();
      return;
  }
});

send({ kind: 'ready' });
