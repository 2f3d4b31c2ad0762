// Length-prefixed frames on a byte stream: a 4-byte big-endian length, then that many bytes.
// The decoder is a pure parser (no I/O) in the manner of nats.js; the writer coalesces every frame
// written in one event-loop turn into one socket write and bounds what it holds for a slow peer.

export const frameHeaderBytes = 4;

export type FrameErrorReason = 'frame_length_zero' | 'frame_too_large' | 'decoder_failed';

/** Why a stream stopped being decodable; after one, the decoder refuses everything and the connection must close. */
export interface FrameError {
  readonly error: FrameErrorReason;
  readonly detail: string;
}

export function isFrameError(result: Uint8Array[] | FrameError): result is FrameError {
  return !Array.isArray(result);
}

export function encodeFrame(payload: Uint8Array): Uint8Array {
  const frame = new Uint8Array(frameHeaderBytes + payload.byteLength);
  new DataView(frame.buffer).setUint32(0, payload.byteLength, false);
  frame.set(payload, frameHeaderBytes);
  return frame;
}

/**
 * Splits a byte stream into frames. Linear in the bytes pushed: chunks are kept as received with an
 * offset into the first, and each frame is copied once into its own buffer (or returned as is when it
 * is exactly one chunk); nothing already received is ever concatenated again.
 */
export class FrameDecoder {
  private readonly frameBytesMax: number;
  private readonly chunks: Uint8Array[] = [];
  private firstChunkIndex = 0;
  private firstChunkOffset = 0;
  private bufferedBytes = 0;
  /** The length of the frame being assembled once its header has been read, else -1. */
  private frameBytes = -1;
  private failure: FrameError | null = null;

  constructor(frameBytesMax: number) {
    if (!Number.isInteger(frameBytesMax) || frameBytesMax < 1 || frameBytesMax > 0xffff_ffff) {
      throw new RangeError(`frameBytesMax must be an integer from 1 to 2^32-1, got ${frameBytesMax}`);
    }
    this.frameBytesMax = frameBytesMax;
  }

  /** Bytes received but not yet returned as a frame (at most one frame and a header). */
  get pendingBytes(): number {
    return this.bufferedBytes;
  }

  push(chunk: Uint8Array): Uint8Array[] | FrameError {
    if (this.failure !== null) return { error: 'decoder_failed', detail: `decoder stopped after: ${this.failure.detail}` };
    const frames: Uint8Array[] = [];
    if (chunk.byteLength > 0) {
      this.chunks.push(chunk);
      this.bufferedBytes += chunk.byteLength;
    }
    for (;;) {
      if (this.frameBytes < 0) {
        if (this.bufferedBytes < frameHeaderBytes) break;
        const header = this.take(frameHeaderBytes, false);
        const declared = new DataView(header.buffer, header.byteOffset, frameHeaderBytes).getUint32(0, false);
        if (declared === 0) return this.fail({ error: 'frame_length_zero', detail: 'a frame declared length 0' });
        if (declared > this.frameBytesMax) {
          return this.fail({
            error: 'frame_too_large',
            detail: `a frame declared ${declared} bytes, more than the ${this.frameBytesMax} allowed`,
          });
        }
        this.frameBytes = declared;
      }
      if (this.bufferedBytes < this.frameBytes) break;
      frames.push(this.take(this.frameBytes, true));
      this.frameBytes = -1;
    }
    this.compact();
    return frames;
  }

  private fail(error: FrameError): FrameError {
    this.failure = error;
    this.chunks.length = 0;
    this.firstChunkIndex = 0;
    this.firstChunkOffset = 0;
    this.bufferedBytes = 0;
    return error;
  }

  /**
   * Removes `count` buffered bytes (the caller checked they are there) and returns them. A frame
   * (`owned`) is a view only when it is a whole chunk: a frame kept by the layers above (messages for a
   * later instance, a cached reply) must not pin the much larger socket chunk it arrived in.
   */
  private take(count: number, owned: boolean): Uint8Array {
    const first = this.chunks[this.firstChunkIndex];
    if (first === undefined) throw new RangeError('FrameDecoder.take past the buffered bytes');
    const availableInFirst = first.byteLength - this.firstChunkOffset;
    const wholeChunk = this.firstChunkOffset === 0 && count === first.byteLength;
    if (availableInFirst >= count && (!owned || wholeChunk)) {
      // A plain Uint8Array view whatever the chunk's class (sockets deliver Buffers): callers get one type.
      const view = new Uint8Array(first.buffer, first.byteOffset + this.firstChunkOffset, count);
      this.advance(count);
      return view;
    }
    // Buffer.allocUnsafe takes small frames from Node's 8 KiB pool: a fresh ArrayBuffer per small frame
    // costs more than the copy, and a kept frame then pins at most one pool slab.
    const pooled = owned ? Buffer.allocUnsafe(count) : null;
    const out = pooled === null ? new Uint8Array(count) : new Uint8Array(pooled.buffer, pooled.byteOffset, count);
    let written = 0;
    while (written < count) {
      const chunk = this.chunks[this.firstChunkIndex];
      if (chunk === undefined) throw new RangeError('FrameDecoder.take past the buffered bytes');
      const n = Math.min(chunk.byteLength - this.firstChunkOffset, count - written);
      out.set(chunk.subarray(this.firstChunkOffset, this.firstChunkOffset + n), written);
      written += n;
      this.advance(n);
    }
    return out;
  }

  private advance(count: number): void {
    this.bufferedBytes -= count;
    this.firstChunkOffset += count;
    const first = this.chunks[this.firstChunkIndex];
    if (first !== undefined && this.firstChunkOffset === first.byteLength) {
      this.chunks[this.firstChunkIndex] = EMPTY;
      this.firstChunkIndex += 1;
      this.firstChunkOffset = 0;
    }
  }

  // Consumed chunks are released in bulk, so that dropping them costs O(1) per chunk overall.
  private compact(): void {
    if (this.firstChunkIndex === 0) return;
    if (this.firstChunkIndex === this.chunks.length) {
      this.chunks.length = 0;
      this.firstChunkIndex = 0;
    } else if (this.firstChunkIndex >= 64 && this.firstChunkIndex * 2 >= this.chunks.length) {
      this.chunks.splice(0, this.firstChunkIndex);
      this.firstChunkIndex = 0;
    }
  }
}

const EMPTY = new Uint8Array(0);

/** What a FrameWriter writes to: a net.Socket or tls.TLSSocket. */
export interface FrameSink {
  write(data: Uint8Array): boolean;
  once(event: 'drain', listener: () => void): unknown;
  removeListener(event: 'drain', listener: () => void): unknown;
  readonly destroyed: boolean;
}

export interface FrameWriterCounters {
  framesOut: number;
  bytesOut: number;
  socketWrites: number;
  /** Frames dropped because the writer held its maximum; the caller labels them `queue_full`. */
  framesDroppedQueueFull: number;
}

export function newFrameWriterCounters(): FrameWriterCounters {
  return { framesOut: 0, bytesOut: 0, socketWrites: 0, framesDroppedQueueFull: 0 };
}

/**
 * Queues frames for one peer and writes them coalesced: every frame written in one event-loop turn
 * goes out in ONE socket write on the next setImmediate. While the socket pushes back (write returned
 * false) or there is no socket, frames wait, up to `queuedBytesMax` encoded bytes:
 * - with a socket under backpressure, a frame that does not fit is dropped (the newest): the ones
 *   queued before it keep their order, and consensus retransmits what still matters;
 * - with no socket (disconnected, reconnecting), the oldest frames are dropped to make room: after a
 *   reconnect the peer most needs our latest messages (current regency and instance), while old ones
 *   concern instances it has likely decided or will fetch by state transfer.
 */
export class FrameWriter {
  private readonly queuedBytesMax: number;
  private readonly counters: FrameWriterCounters;
  private sink: FrameSink | null = null;
  private queue: Uint8Array[] = [];
  private queueHead = 0;
  private queuedBytes = 0;
  private flushScheduled: NodeJS.Immediate | null = null;
  private waitingForDrain = false;
  private readonly onDrain = (): void => {
    this.waitingForDrain = false;
    this.flush();
  };

  constructor(options: { queuedBytesMax: number; counters?: FrameWriterCounters }) {
    this.queuedBytesMax = options.queuedBytesMax;
    this.counters = options.counters ?? newFrameWriterCounters();
  }

  /** Encoded bytes (headers included) waiting to be handed to a socket. */
  get pendingBytes(): number {
    return this.queuedBytes;
  }

  get pendingFrames(): number {
    return this.queue.length - this.queueHead;
  }

  /** Starts writing to a connected socket; what was queued while detached goes out first. */
  attach(sink: FrameSink): void {
    this.detach();
    this.sink = sink;
    if (this.pendingFrames > 0) this.scheduleFlush();
  }

  /** Stops writing to the current socket (it closed); frames keep queueing for the next one. */
  detach(): void {
    if (this.sink !== null && this.waitingForDrain) this.sink.removeListener('drain', this.onDrain);
    this.sink = null;
    this.waitingForDrain = false;
  }

  /** Queues one frame; false when it was dropped (and counted) because the queue is full. */
  write(payload: Uint8Array): boolean {
    const frameBytes = frameHeaderBytes + payload.byteLength;
    if (this.queuedBytes + frameBytes > this.queuedBytesMax) {
      if (this.sink !== null || frameBytes > this.queuedBytesMax) {
        this.counters.framesDroppedQueueFull += 1;
        return false;
      }
      while (this.queuedBytes + frameBytes > this.queuedBytesMax) this.dropOldest();
    }
    this.queue.push(payload);
    this.queuedBytes += frameBytes;
    if (this.sink !== null && !this.waitingForDrain) this.scheduleFlush();
    return true;
  }

  /** Drops everything queued and cancels the pending flush: no timer is left behind. */
  close(): void {
    this.detach();
    if (this.flushScheduled !== null) clearImmediate(this.flushScheduled);
    this.flushScheduled = null;
    this.queue = [];
    this.queueHead = 0;
    this.queuedBytes = 0;
  }

  private dropOldest(): void {
    const oldest = this.queue[this.queueHead];
    if (oldest === undefined) return;
    this.queue[this.queueHead] = EMPTY;
    this.queueHead += 1;
    this.queuedBytes -= frameHeaderBytes + oldest.byteLength;
    this.counters.framesDroppedQueueFull += 1;
    if (this.queueHead >= 1024 && this.queueHead * 2 >= this.queue.length) {
      this.queue = this.queue.slice(this.queueHead);
      this.queueHead = 0;
    }
  }

  private scheduleFlush(): void {
    if (this.flushScheduled !== null) return;
    this.flushScheduled = setImmediate(() => {
      this.flushScheduled = null;
      this.flush();
    });
  }

  private flush(): void {
    const sink = this.sink;
    const frames = this.pendingFrames;
    if (sink === null || this.waitingForDrain || frames === 0) return;
    if (sink.destroyed) return;
    // One buffer for the whole turn: headers and payloads copied once, one write, one TLS record run.
    const out = Buffer.allocUnsafe(this.queuedBytes);
    let offset = 0;
    for (let i = this.queueHead; i < this.queue.length; i++) {
      const payload = this.queue[i] as Uint8Array;
      out.writeUInt32BE(payload.byteLength, offset);
      out.set(payload, offset + frameHeaderBytes);
      offset += frameHeaderBytes + payload.byteLength;
    }
    this.counters.framesOut += frames;
    this.counters.bytesOut += out.byteLength;
    this.counters.socketWrites += 1;
    this.queue = [];
    this.queueHead = 0;
    this.queuedBytes = 0;
    if (!sink.write(out)) {
      this.waitingForDrain = true;
      sink.once('drain', this.onDrain);
    }
  }
}
