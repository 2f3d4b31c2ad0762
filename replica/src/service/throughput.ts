// The benchmark's service, after BFT-SMaRt's ThroughputLatencyServer: it does no work of its own and
// answers every operation with a reply of a configured size, so that a benchmark measures the
// replication path (ordering, crypto, transport) and not an application.
//
// For the state-transfer benchmark it can also stand for a service whose state lives outside the heap
// (a database on disk): `stateBytes` of state derived from the count of executed operations, streamed
// by its snapshot and checked, byte for byte, by its install, without ever being held in memory. What
// the benchmark then measures is the replica's own cost of moving a state of that size.

import { createCipheriv } from 'node:crypto';
import { limits } from '../constants.ts';
import { BftError } from '../errors.ts';
import type { Bytes } from '../protocol/messages.ts';
import type { OrderedOperation, Service } from './service.ts';

/** The snapshot's header: the count of executed operations, as a float64. */
const snapshotBytes = 8;

/**
 * The synthetic state after `count` operations: an AES-128-CTR keystream keyed by the count, which
 * any replica regenerates at memory speed. Each call yields pieces of at most snapshotPieceBytesMax.
 */
function* syntheticState(count: number, stateBytes: number): Generator<Uint8Array, void, undefined> {
  const key = Buffer.alloc(16);
  key.writeDoubleBE(count, 0);
  const cipher = createCipheriv('aes-128-ctr', key, Buffer.alloc(16));
  const zeros = Buffer.alloc(Math.min(stateBytes, limits.snapshotPieceBytesMax));
  for (let done = 0; done < stateBytes; ) {
    const length = Math.min(zeros.length, stateBytes - done);
    yield new Uint8Array(cipher.update(zeros.subarray(0, length)));
    done += length;
  }
}

export class ThroughputService implements Service {
  private readonly reply: Bytes;
  private readonly stateBytes: number;
  private executedOperations = 0;

  constructor(replyBytes: number, stateBytes = 0) {
    if (!Number.isSafeInteger(replyBytes) || replyBytes < 0 || replyBytes > limits.resultBytesMax) {
      throw new BftError('BFT_ERR_CONFIG_INVALID', `replyBytes must be an integer in [0, ${limits.resultBytesMax}]; fix the benchmark options`);
    }
    if (!Number.isSafeInteger(stateBytes) || stateBytes < 0 || stateBytes > limits.throughputStateBytesMax) {
      throw new BftError('BFT_ERR_CONFIG_INVALID', `stateBytes must be an integer in [0, ${limits.throughputStateBytesMax}]; fix the benchmark options`);
    }
    this.reply = new Uint8Array(replyBytes);
    this.stateBytes = stateBytes;
  }

  get executed(): number {
    return this.executedOperations;
  }

  executeOrdered(operations: readonly OrderedOperation[]): Bytes[] {
    this.executedOperations += operations.length;
    return operations.map(() => this.reply);
  }

  executeUnordered(): Bytes {
    return this.reply;
  }

  /** The state is a function of the count, which the snapshot reads at the call. */
  readonly snapshotsAreIsolated = true;

  snapshot(): Generator<Bytes, void, undefined> {
    return snapshotOf(this.executedOperations, this.stateBytes);
  }

  async installSnapshot(pieces: AsyncIterable<Bytes>): Promise<void> {
    const total = snapshotBytes + this.stateBytes;
    const header = new Uint8Array(snapshotBytes);
    let length = 0;
    let expected: Generator<Uint8Array, void, undefined> | null = null;
    let pending: Uint8Array = new Uint8Array(0);
    for await (const piece of pieces) {
      // Refused as soon as it is too long, so that a huge stream is never buffered.
      if (length + piece.length > total) throw invalid(`a throughput-service snapshot has ${total} bytes; this one is longer`);
      let offset = 0;
      if (length < snapshotBytes) {
        offset = Math.min(piece.length, snapshotBytes - length);
        header.set(piece.subarray(0, offset), length);
        if (length + offset === snapshotBytes) expected = syntheticState(new DataView(header.buffer).getFloat64(0), this.stateBytes);
      }
      // Compare the state part with what the count in the header generates, one piece at a time.
      for (let i = offset; i < piece.length; ) {
        if (pending.length === 0) pending = expected?.next().value ?? new Uint8Array(0);
        const span = Math.min(pending.length, piece.length - i);
        if (span === 0 || !Buffer.from(piece.buffer, piece.byteOffset + i, span).equals(Buffer.from(pending.buffer, pending.byteOffset, span))) {
          throw invalid('its state does not match the count it carries');
        }
        pending = pending.subarray(span);
        i += span;
      }
      length += piece.length;
    }
    if (length !== total) throw invalid(`a throughput-service snapshot has ${total} bytes; this one has ${length}`);
    this.executedOperations = new DataView(header.buffer).getFloat64(0);
  }
}

function* snapshotOf(count: number, stateBytes: number): Generator<Bytes, void, undefined> {
  const bytes = new Uint8Array(snapshotBytes);
  new DataView(bytes.buffer).setFloat64(0, count);
  yield bytes;
  yield* syntheticState(count, stateBytes);
}

function invalid(message: string): BftError {
  return new BftError('BFT_ERR_SNAPSHOT_INVALID', `${message}; the snapshot was not installed`);
}
