import { once } from 'node:events';
import * as net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import {
  encodeFrame,
  FrameDecoder,
  type FrameSink,
  FrameWriter,
  frameHeaderBytes,
  isFrameError,
  newFrameWriterCounters,
} from './frames.ts';

function frameOf(index: number, bytes: number): Uint8Array {
  const payload = new Uint8Array(bytes);
  for (let i = 0; i < bytes; i++) payload[i] = (index * 31 + i) & 0xff;
  if (bytes >= 4) new DataView(payload.buffer).setUint32(0, index, false);
  return payload;
}

// A small deterministic generator, so that a failing chunking reproduces.
function seeded(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state * 1664525 + 1013904223) >>> 0;
    return state / 2 ** 32;
  };
}

function concat(parts: Uint8Array[]): Uint8Array {
  return new Uint8Array(Buffer.concat(parts));
}

function decodeAll(decoder: FrameDecoder, chunks: Uint8Array[]): Uint8Array[] {
  const frames: Uint8Array[] = [];
  for (const chunk of chunks) {
    const result = decoder.push(chunk);
    if (isFrameError(result)) throw new Error(result.detail);
    frames.push(...result);
  }
  return frames;
}

describe('encodeFrame', () => {
  it('prefixes the payload with its length as 4 bytes big-endian', () => {
    expect([...encodeFrame(new Uint8Array([7, 8, 9]))]).toEqual([0, 0, 0, 3, 7, 8, 9]);
    expect([...encodeFrame(new Uint8Array(0x0102)).subarray(0, frameHeaderBytes)]).toEqual([0, 0, 1, 2]);
  });
});

describe('FrameDecoder', () => {
  it('returns the same frames in order however the stream is cut into chunks', () => {
    for (const seed of [1, 2, 3, 4, 5]) {
      const random = seeded(seed);
      const payloads = Array.from({ length: 200 }, (_, i) => frameOf(i, 1 + Math.floor(random() * 3000)));
      const stream = concat(payloads.map(encodeFrame));
      const chunks: Uint8Array[] = [];
      for (let offset = 0; offset < stream.byteLength; ) {
        const size = 1 + Math.floor(random() * 700);
        chunks.push(stream.subarray(offset, offset + size));
        offset += size;
      }
      const frames = decodeAll(new FrameDecoder(4096), chunks);
      // Compared frame by frame: a deep diff of 200 frames would take minutes to print.
      expect(frames.length).toBe(payloads.length);
      expect(frames.findIndex((frame, i) => !Buffer.from(frame).equals(payloads[i] as Uint8Array))).toBe(-1);
    }
  });

  it('returns frames that do not share memory with a larger chunk they arrived in', () => {
    const chunk = concat([encodeFrame(new Uint8Array([1, 2])), encodeFrame(new Uint8Array([3]))]);
    const frames = decodeAll(new FrameDecoder(16), [chunk]);
    chunk.fill(0);
    expect(frames).toEqual([new Uint8Array([1, 2]), new Uint8Array([3])]);
    expect(frames.every((frame) => frame.constructor === Uint8Array)).toBe(true);
  });

  it('decodes a stream pushed one byte at a time, keeping at most one frame buffered', () => {
    const payloads = [frameOf(0, 5), frameOf(1, 1), frameOf(2, 300)];
    const stream = concat(payloads.map(encodeFrame));
    const decoder = new FrameDecoder(1024);
    const frames: Uint8Array[] = [];
    for (const byte of stream) {
      const result = decoder.push(new Uint8Array([byte]));
      if (isFrameError(result)) throw new Error(result.detail);
      frames.push(...result);
      expect(decoder.pendingBytes).toBeLessThanOrEqual(frameHeaderBytes + 300);
    }
    expect(frames).toEqual(payloads);
    expect(decoder.pendingBytes).toBe(0);
  });

  it('assembles a 16 MiB frame from 64-byte chunks (linear: no re-concatenation of what was received)', () => {
    const payload = frameOf(9, 16 * 1024 * 1024);
    const stream = encodeFrame(payload);
    const decoder = new FrameDecoder(16 * 1024 * 1024);
    const frames: Uint8Array[] = [];
    for (let offset = 0; offset < stream.byteLength; offset += 64) {
      const result = decoder.push(stream.subarray(offset, offset + 64));
      if (isFrameError(result)) throw new Error(result.detail);
      frames.push(...result);
    }
    expect(frames.length).toBe(1);
    expect(Buffer.from(frames[0] as Uint8Array).equals(Buffer.from(payload))).toBe(true);
  });

  it('accepts a frame of exactly frameBytesMax and refuses one byte more, then refuses everything', () => {
    const decoder = new FrameDecoder(10);
    expect(decoder.push(encodeFrame(frameOf(1, 10)))).toEqual([frameOf(1, 10)]);
    const tooLarge = decoder.push(encodeFrame(frameOf(2, 11)));
    expect(tooLarge).toMatchObject({ error: 'frame_too_large' });
    expect(decoder.push(encodeFrame(frameOf(3, 1)))).toMatchObject({ error: 'decoder_failed' });
  });

  it('refuses a declared length of zero and everything after it', () => {
    const decoder = new FrameDecoder(10);
    expect(decoder.push(new Uint8Array([0, 0, 0, 1, 42, 0, 0]))).toEqual([new Uint8Array([42])]);
    expect(decoder.push(new Uint8Array([0, 0]))).toMatchObject({ error: 'frame_length_zero' });
    expect(decoder.push(encodeFrame(frameOf(3, 1)))).toMatchObject({ error: 'decoder_failed' });
    expect(decoder.pendingBytes).toBe(0);
  });

  it('refuses a length prefix of all ones (a garbage header) before any payload arrives', () => {
    const decoder = new FrameDecoder(1024 * 1024);
    expect(decoder.push(new Uint8Array([0xff, 0xff, 0xff, 0xff]))).toMatchObject({ error: 'frame_too_large' });
  });
});

describe('FrameWriter on a real loopback socket', () => {
  const closers: (() => void)[] = [];
  afterEach(() => {
    for (const close of closers.splice(0)) close();
  });

  /** A connected socket pair on 127.0.0.1: `sender` writes, `receiver` decodes. */
  async function socketPair(): Promise<{ sender: net.Socket; receiver: net.Socket; frames: Uint8Array[] }> {
    const server = net.createServer();
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const address = server.address() as net.AddressInfo;
    const accepted = once(server, 'connection') as Promise<[net.Socket]>;
    const sender = net.connect(address.port, '127.0.0.1');
    await once(sender, 'connect');
    const [receiver] = await accepted;
    const frames: Uint8Array[] = [];
    const decoder = new FrameDecoder(64 * 1024 * 1024);
    receiver.on('data', (chunk: Buffer) => {
      const result = decoder.push(chunk);
      if (isFrameError(result)) throw new Error(result.detail);
      // Copies as plain Uint8Arrays: the decoder hands out views of the socket's Buffers.
      for (const frame of result) frames.push(new Uint8Array(frame));
    });
    closers.push(() => {
      sender.destroy();
      receiver.destroy();
      server.close();
    });
    return { sender, receiver, frames };
  }

  async function until(condition: () => boolean): Promise<void> {
    const deadline = Date.now() + 15_000;
    while (!condition()) {
      if (Date.now() > deadline) throw new Error('timed out');
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  }

  it('turns 1,000 writes in one event-loop turn into one socket write', async () => {
    const { sender, frames } = await socketPair();
    const counters = newFrameWriterCounters();
    const writer = new FrameWriter({ queuedBytesMax: 1024 * 1024, counters });
    writer.attach(sender as FrameSink);
    const payloads = Array.from({ length: 1000 }, (_, i) => frameOf(i, 20));
    for (const payload of payloads) writer.write(payload);
    await until(() => frames.length === 1000);
    expect(frames).toEqual(payloads);
    expect(counters).toEqual({ framesOut: 1000, bytesOut: 1000 * 24, socketWrites: 1, framesDroppedQueueFull: 0 });
    writer.close();
  });

  it('under backpressure keeps queueing up to its bound, then drops the newest frames and counts them', async () => {
    const { sender, receiver, frames } = await socketPair();
    receiver.pause();
    const queuedBytesMax = 1024 * 1024;
    const counters = newFrameWriterCounters();
    const writer = new FrameWriter({ queuedBytesMax, counters });
    writer.attach(sender as FrameSink);
    const accepted: number[] = [];
    // One 64 KiB frame per turn until the kernel buffers fill, the socket pushes back and the queue fills.
    for (let i = 0; i < 10_000 && counters.framesDroppedQueueFull < 5; i++) {
      if (writer.write(frameOf(i, 64 * 1024))) accepted.push(i);
      expect(writer.pendingBytes).toBeLessThanOrEqual(queuedBytesMax);
      await new Promise((resolve) => setImmediate(resolve));
    }
    expect(counters.framesDroppedQueueFull).toBe(5);
    receiver.resume();
    await until(() => frames.length === accepted.length);
    expect(frames.map((frame) => new DataView(frame.buffer, frame.byteOffset).getUint32(0, false))).toEqual(accepted);
    writer.close();
  });

  it('while detached keeps the newest frames within its bound and sends them once attached', async () => {
    const { sender, frames } = await socketPair();
    const counters = newFrameWriterCounters();
    const frameBytes = frameHeaderBytes + 100;
    const writer = new FrameWriter({ queuedBytesMax: 3 * frameBytes, counters });
    for (let i = 0; i < 5; i++) expect(writer.write(frameOf(i, 100))).toBe(true);
    expect(counters.framesDroppedQueueFull).toBe(2);
    expect(writer.pendingFrames).toBe(3);
    writer.attach(sender as FrameSink);
    await until(() => frames.length === 3);
    expect(frames).toEqual([frameOf(2, 100), frameOf(3, 100), frameOf(4, 100)]);
    writer.close();
  });

  it('refuses a single frame larger than its whole bound, attached or not', () => {
    const counters = newFrameWriterCounters();
    const writer = new FrameWriter({ queuedBytesMax: 100, counters });
    expect(writer.write(new Uint8Array(97))).toBe(false);
    expect(writer.write(new Uint8Array(96))).toBe(true);
    expect(counters.framesDroppedQueueFull).toBe(1);
    writer.close();
  });
});
