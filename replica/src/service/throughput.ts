// The benchmark's service, after BFT-SMaRt's ThroughputLatencyServer: it does no work of its own and
// answers every operation with a reply of a configured size, so that a benchmark measures the
// replication path (ordering, crypto, transport) and not an application.

import { limits } from '../constants.ts';
import { BftError } from '../errors.ts';
import type { Bytes } from '../protocol/messages.ts';
import type { OrderedOperation, Service } from './service.ts';

/** The state is one count, as a float64. */
const snapshotBytes = 8;

export class ThroughputService implements Service {
  private readonly reply: Bytes;
  private executedOperations = 0;

  constructor(replyBytes: number) {
    if (!Number.isSafeInteger(replyBytes) || replyBytes < 0 || replyBytes > limits.resultBytesMax) {
      throw new BftError('BFT_ERR_CONFIG_INVALID', `replyBytes must be an integer in [0, ${limits.resultBytesMax}]; fix the benchmark options`);
    }
    this.reply = new Uint8Array(replyBytes);
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

  *snapshot(): Generator<Bytes, void, undefined> {
    const bytes = new Uint8Array(snapshotBytes);
    new DataView(bytes.buffer).setFloat64(0, this.executedOperations);
    yield bytes;
  }

  async installSnapshot(pieces: AsyncIterable<Bytes>): Promise<void> {
    const snapshot = new Uint8Array(snapshotBytes);
    let length = 0;
    for await (const piece of pieces) {
      // Refused as soon as it is too long, so that a huge stream is never buffered.
      if (length + piece.length > snapshotBytes) throw new BftError('BFT_ERR_SNAPSHOT_INVALID', 'a throughput-service snapshot is 8 bytes; this one is longer');
      snapshot.set(piece, length);
      length += piece.length;
    }
    if (length !== snapshotBytes) throw new BftError('BFT_ERR_SNAPSHOT_INVALID', `a throughput-service snapshot is 8 bytes; this one has ${length}`);
    this.executedOperations = new DataView(snapshot.buffer).getFloat64(0);
  }
}
