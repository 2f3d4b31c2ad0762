// Executes decided batches on the service exactly once per (client, seq), and keeps each client's
// recent replies so that a re-sent request is answered from the cache instead of executed again.
// All of this is replicated state: it changes only with decisions, in the same way on every replica.

import { isUtf8 } from 'node:buffer';
import { limits } from '../constants.ts';
import { BftError, invariant } from '../errors.ts';
import type { Delivery } from '../core/ready.ts';
import type { Bytes } from '../protocol/messages.ts';
import { compareKeys } from './kv.ts';
import { PieceReader, PieceWriter, snapshotHashBytes } from './pieces.ts';
import type { Service } from './service.ts';

// --- Reply-cache snapshot format -----------------------------------------------------------------------
// magic (8 bytes "bftrp\0\0\1") | client count (u32) | clients | SHA-256 of everything before it (32 bytes)
// client: id length (u16) | id (UTF-8) | last executed seq (u64) | result count (u16) | results
// result: seq (u64) | length (u32) | result bytes
// Clients ascend by id (code point order, which is UTF-8 byte order) and results by seq, so equal
// caches give equal bytes. Like the key-value snapshot, it can be cut anywhere and read as a stream.

const repliesMagic = Uint8Array.of(0x62, 0x66, 0x74, 0x72, 0x70, 0, 0, 1);

function repliesInvalid(message: string, cause?: unknown): BftError {
  return new BftError(
    'BFT_ERR_SNAPSHOT_INVALID',
    `reply cache: ${message}; it was not installed (fetch the checkpoint again from other replicas)`,
    cause === undefined ? undefined : { cause },
  );
}

export interface ExecutedReply {
  readonly clientId: string;
  readonly seq: number;
  readonly result: Bytes;
}

interface ClientReplies {
  /** The executor generation that created it; an older one is shared with a captured snapshot. */
  readonly generation: number;
  lastSeq: number;
  /** seq → result for the last `repliesPerClientMax` executed requests. */
  readonly results: Map<number, Bytes>;
}

export class Executor {
  private readonly service: Service;
  private readonly repliesPerClientMax: number;
  private readonly clients = new Map<string, ClientReplies>();
  /** Bumped by each reply-cache snapshot; entries of older generations are copied before they change. */
  private generation = 0;
  private executedRequests = 0;

  constructor(service: Service, repliesPerClientMax: number = limits.clientInFlightMax) {
    invariant(repliesPerClientMax >= 1 && repliesPerClientMax <= limits.clientInFlightMax, 'reply cache size within limits');
    this.service = service;
    this.repliesPerClientMax = repliesPerClientMax;
  }

  get executed(): number {
    return this.executedRequests;
  }

  lastExecuted(clientId: string): number {
    return this.clients.get(clientId)?.lastSeq ?? 0;
  }

  cachedReply(clientId: string, seq: number): Bytes | undefined {
    return this.clients.get(clientId)?.results.get(seq);
  }

  /** The first request of a batch that would run twice or out of sequence order, described; or null. */
  outOfOrder(requests: Delivery['requests']): string | null {
    const expected = new Map<string, number>();
    for (const request of requests) {
      const next = expected.get(request.clientId) ?? this.lastExecuted(request.clientId) + 1;
      if (request.seq !== next) return `${request.clientId}/${request.seq} where seq ${next} was due`;
      expected.set(request.clientId, next + 1);
    }
    return null;
  }

  /**
   * Execute one decided batch. The core delivers each client's requests once, in sequence order. The
   * replicas' own requests (reconfigurations) come with their results, which are recorded as replies like
   * any other; the service executes the rest.
   */
  execute(delivery: Pick<Delivery, 'decision' | 'requests' | 'reconfigurationResults'>): ExecutedReply[] {
    const { decision, requests } = delivery;
    const problem = this.outOfOrder(requests);
    invariant(problem === null, `requests execute once, in sequence order: ${problem}`);
    const answered = delivery.reconfigurationResults;
    const forService = answered === undefined || answered.size === 0 ? requests : requests.filter((_, i) => !answered.has(i));
    const serviceResults = this.service.executeOrdered(
      forService.map((r) => ({ clientId: r.clientId, seq: r.seq, operation: r.operation })),
      { cid: decision.cid, regency: decision.regency },
    );
    invariant(serviceResults.length === forService.length, 'the service returns one result per operation');
    let next = 0;
    const results = answered === undefined || answered.size === 0 ? serviceResults : requests.map((_, i) => answered.get(i) ?? (serviceResults[next++] as Bytes));
    const replies: ExecutedReply[] = [];
    requests.forEach((request, i) => {
      const result = results[i] as Bytes;
      let client = this.clients.get(request.clientId);
      if (client === undefined) {
        // The core orders no batch that takes the clients it tracks past clientsMax.
        invariant(this.clients.size < limits.clientsMax, 'the reply cache tracks at most clientsMax clients');
        client = { generation: this.generation, lastSeq: 0, results: new Map() };
        this.clients.set(request.clientId, client);
      } else if (client.generation !== this.generation) {
        // A snapshot being streamed still reads this entry as it was.
        client = { generation: this.generation, lastSeq: client.lastSeq, results: new Map(client.results) };
        this.clients.set(request.clientId, client);
      }
      client.lastSeq = request.seq;
      client.results.set(request.seq, result);
      client.results.delete(request.seq - this.repliesPerClientMax);
      replies.push({ clientId: request.clientId, seq: request.seq, result });
    });
    this.executedRequests += requests.length;
    return replies;
  }

  /** Each client's last executed seq: what the core needs to know after an install. */
  clientSeqs(): Array<[clientId: string, lastSeq: number]> {
    return [...this.clients].map(([clientId, client]) => [clientId, client.lastSeq]);
  }

  /**
   * The reply cache as it is at this call, as pieces of at most limits.snapshotPieceBytesMax, clients
   * sorted by id. Later executions do not change it: the entries are captured (O(clients)) and copied
   * on their next write.
   */
  snapshotReplies(): Generator<Bytes, void, undefined> {
    const captured = new Map(this.clients);
    this.generation += 1;
    return repliesSnapshotOf(captured);
  }

  /** Replaces the reply cache from a stream cut anywhere; a malformed one throws and changes nothing. */
  async installReplies(pieces: AsyncIterable<Bytes>): Promise<void> {
    const reader = new PieceReader(pieces);
    try {
      const clients = await this.readReplies(reader);
      this.clients.clear();
      for (const [id, client] of clients) this.clients.set(id, client);
    } catch (error) {
      await reader.cancel();
      if (error instanceof BftError) throw error;
      throw repliesInvalid('the stream failed', error);
    }
  }

  private async readReplies(reader: PieceReader): Promise<Map<string, ClientReplies>> {
    const need = async (count: number, what: string): Promise<void> => {
      if (reader.buffered < count && !(await reader.fill(count))) throw repliesInvalid(`${what} is truncated`);
    };
    await need(repliesMagic.length + 4, 'the header');
    const magic = reader.take(repliesMagic.length);
    if (!repliesMagic.every((byte, i) => magic[i] === byte)) throw repliesInvalid('not a reply cache of this format (bad magic)');
    const count = reader.takeU32();
    if (count > limits.clientsMax) throw repliesInvalid(`claims ${count} clients, more than ${limits.clientsMax}`);
    const clients = new Map<string, ClientReplies>();
    let previousId: Uint8Array | null = null;
    for (let i = 0; i < count; i++) {
      await need(2, `client ${i}`);
      const idLength = reader.takeU16();
      if (idLength < 1 || idLength > limits.clientIdLengthMax) throw repliesInvalid(`client ${i} has an id of ${idLength} bytes`);
      await need(idLength + 8 + 2, `client ${i}`);
      const idBytes = reader.takeCopy(idLength);
      if (!isUtf8(idBytes)) throw repliesInvalid(`client ${i} has an id that is not UTF-8`);
      if (previousId !== null && Buffer.compare(previousId, idBytes) >= 0) throw repliesInvalid(`client ${i} is out of id order or repeats an id`);
      previousId = idBytes;
      const lastSeq = reader.takeU64();
      if (lastSeq === null || lastSeq < 1) throw repliesInvalid(`client ${i} has last seq ${lastSeq ?? 'beyond 2^53'}`);
      const resultCount = reader.takeU16();
      if (resultCount > limits.clientInFlightMax) throw repliesInvalid(`client ${i} has ${resultCount} results, more than ${limits.clientInFlightMax}`);
      const results = new Map<number, Bytes>();
      let previousSeq = 0;
      for (let r = 0; r < resultCount; r++) {
        await need(8 + 4, `client ${i} result ${r}`);
        const seq = reader.takeU64();
        if (seq === null || seq <= previousSeq || seq > lastSeq || seq <= lastSeq - limits.clientInFlightMax) {
          throw repliesInvalid(`client ${i} result ${r} has seq ${seq ?? 'beyond 2^53'} outside (${Math.max(previousSeq, lastSeq - limits.clientInFlightMax)}, ${lastSeq}]`);
        }
        previousSeq = seq;
        const length = reader.takeU32();
        if (length > limits.resultBytesMax) throw repliesInvalid(`client ${i} result ${r} has ${length} bytes, more than ${limits.resultBytesMax}`);
        await need(length, `client ${i} result ${r}`);
        const result = reader.takeCopy(length);
        // A replica configured to keep fewer replies keeps the newest it would have kept itself.
        if (seq > lastSeq - this.repliesPerClientMax) results.set(seq, result);
      }
      clients.set(Buffer.from(idBytes).toString('utf8'), { generation: this.generation, lastSeq, results });
    }
    const digest = reader.digestConsumed();
    await need(snapshotHashBytes, 'the checksum');
    if (!digest.equals(reader.take(snapshotHashBytes))) throw repliesInvalid('checksum mismatch');
    if (!(await reader.atEnd())) throw repliesInvalid('bytes after the checksum');
    return clients;
  }
}

function* repliesSnapshotOf(clients: ReadonlyMap<string, ClientReplies>): Generator<Bytes, void, undefined> {
  const writer = new PieceWriter();
  writer.writeBytes(repliesMagic);
  writer.writeU32(clients.size);
  const ids = [...clients.keys()].sort(compareKeys);
  for (const id of ids) {
    const client = clients.get(id) as ClientReplies;
    const idBytes = Buffer.from(id, 'utf8');
    writer.writeU16(idBytes.length);
    writer.writeBytes(idBytes);
    writer.writeU64(client.lastSeq);
    const seqs = [...client.results.keys()].sort((a, b) => a - b);
    writer.writeU16(seqs.length);
    for (const seq of seqs) {
      const result = client.results.get(seq) as Bytes;
      writer.writeU64(seq);
      writer.writeU32(result.length);
      writer.writeBytes(result);
    }
    if (writer.sealed.length > 0) yield* writer.sealed.splice(0);
  }
  writer.writeDigest();
  writer.finish();
  yield* writer.sealed.splice(0);
}
