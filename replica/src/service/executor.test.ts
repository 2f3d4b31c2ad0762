import { describe, expect, it } from 'vitest';
import type { Delivery } from '../core/ready.ts';
import type { ClientRequest } from '../protocol/messages.ts';
import { Executor } from './executor.ts';
import { asAsyncPieces, concatPieces } from './pieces.ts';
import type { OrderedOperation, Service } from './service.ts';

const utf8 = new TextEncoder();
const text = new TextDecoder();

class CountingService implements Service {
  readonly log: string[] = [];
  executeOrdered(operations: readonly OrderedOperation[]) {
    return operations.map((op) => {
      this.log.push(text.decode(op.operation));
      return utf8.encode(`${this.log.length}`);
    });
  }
  executeUnordered() {
    return utf8.encode(`${this.log.length}`);
  }
  *snapshot() {
    yield utf8.encode(this.log.join('\n'));
  }
  async installSnapshot() {}
}

/** Results depend only on the operation, so that histories in another order give the same cache. */
class EchoService extends CountingService {
  override executeOrdered(operations: readonly OrderedOperation[]) {
    return operations.map((op) => new Uint8Array(op.operation));
  }
}

function delivery(cid: number, ...requests: Array<[string, number]>): Delivery {
  const reqs: ClientRequest[] = requests.map(([clientId, seq]) => ({ clientId, seq, ordered: true, operation: utf8.encode(`${clientId}${seq}`), signature: null }));
  return { decision: { cid, regency: 0, batch: new Uint8Array(1), votes: [] }, requests: reqs };
}

describe('executor', () => {
  it('executes in order and answers re-sent requests from the cache', () => {
    const service = new CountingService();
    const executor = new Executor(service, 2);
    const replies = executor.execute(delivery(0, ['a', 1], ['b', 1], ['a', 2]));
    expect(replies.map((r) => text.decode(r.result))).toEqual(['1', '2', '3']);
    expect(text.decode(executor.cachedReply('a', 1) as Uint8Array)).toBe('1');
    expect(executor.lastExecuted('a')).toBe(2);
    executor.execute(delivery(1, ['a', 3]));
    // Only the last two replies of a client are kept.
    expect(executor.cachedReply('a', 1)).toBeUndefined();
    expect(text.decode(executor.cachedReply('a', 3) as Uint8Array)).toBe('4');
    expect(service.log).toEqual(['a1', 'b1', 'a2', 'a3']);
  });

  it('answers reconfiguration requests with the results the core gave, and the service sees only the rest', () => {
    const service = new CountingService();
    const executor = new Executor(service, 2);
    const batch = delivery(0, ['a', 1], ['vm', 1], ['b', 1]);
    const replies = executor.execute({ ...batch, reconfigurationResults: new Map([[1, utf8.encode('view 1')]]) });
    expect(replies.map((r) => `${r.clientId}:${text.decode(r.result)}`)).toEqual(['a:1', 'vm:view 1', 'b:2']);
    expect(service.log).toEqual(['a1', 'b1']);
    expect(text.decode(executor.cachedReply('vm', 1) as Uint8Array)).toBe('view 1');
    expect(executor.lastExecuted('vm')).toBe(1);
  });

  it('refuses to execute a request twice (the core must never deliver one)', () => {
    const executor = new Executor(new CountingService());
    executor.execute(delivery(0, ['a', 1]));
    expect(() => executor.execute(delivery(1, ['a', 1]))).toThrow(/BFT_ERR_INVARIANT/);
  });

  function filledExecutor(repliesPerClientMax = 4): Executor {
    const executor = new Executor(new EchoService(), repliesPerClientMax);
    let cid = 0;
    // Clients inserted out of id order, one with a non-ASCII id.
    for (const [clientId, count] of [['zed', 6], ['amy', 2], ['émile', 3], ['bob', 1]] as const) {
      for (let seq = 1; seq <= count; seq++) executor.execute(delivery(cid++, [clientId, seq]));
    }
    return executor;
  }

  function cut(bytes: Uint8Array, size: number): Uint8Array[] {
    const pieces: Uint8Array[] = [];
    for (let i = 0; i < bytes.length; i += size) pieces.push(bytes.subarray(i, i + size));
    return pieces;
  }

  it('snapshots its reply cache deterministically and installs it from pieces cut anywhere', async () => {
    const source = filledExecutor();
    const snapshot = concatPieces(source.snapshotReplies());
    // Another executor with the same history in another client order gives the same bytes.
    const other = new Executor(new EchoService(), 4);
    let cid = 0;
    for (const [clientId, count] of [['bob', 1], ['émile', 3], ['amy', 2], ['zed', 6]] as const) {
      for (let seq = 1; seq <= count; seq++) other.execute(delivery(cid++, [clientId, seq]));
    }
    expect(Buffer.from(concatPieces(other.snapshotReplies())).equals(snapshot)).toBe(true);
    for (const size of [1, 2, 3, 7, 64, snapshot.length]) {
      const target = new Executor(new CountingService(), 4);
      target.execute(delivery(0, ['stranger', 1]));
      await target.installReplies(asAsyncPieces(cut(snapshot, size)));
      expect(Buffer.from(concatPieces(target.snapshotReplies())).equals(snapshot)).toBe(true);
      expect(new Map(target.clientSeqs())).toEqual(new Map([['zed', 6], ['amy', 2], ['émile', 3], ['bob', 1]]));
      expect(target.cachedReply('zed', 6)).toEqual(source.cachedReply('zed', 6));
      expect(target.cachedReply('zed', 2)).toBeUndefined();
      expect(target.lastExecuted('stranger')).toBe(0);
      // Execution continues from the installed sequence numbers.
      expect(() => target.execute(delivery(9, ['amy', 2]))).toThrow(/BFT_ERR_INVARIANT/);
      target.execute(delivery(9, ['amy', 3]));
    }
  });

  it('keeps only the replies its own bound allows when installing from a replica that keeps more', async () => {
    const snapshot = concatPieces(filledExecutor(4).snapshotReplies());
    const target = new Executor(new CountingService(), 2);
    await target.installReplies(asAsyncPieces([snapshot]));
    expect(target.cachedReply('zed', 4)).toBeUndefined();
    expect(target.cachedReply('zed', 5)).toBeDefined();
    expect(target.cachedReply('zed', 6)).toBeDefined();
  });

  it.each([
    ['a flipped byte', (s: Uint8Array) => { const c = s.slice(); c[20] = (c[20] as number) ^ 1; return c; }, /checksum mismatch|out of id order|not UTF-8|seq/],
    ['a missing last byte', (s: Uint8Array) => s.subarray(0, s.length - 1), /checksum is truncated/],
    ['an extra byte', (s: Uint8Array) => Uint8Array.of(...s, 0), /bytes after the checksum/],
    ['a bad magic', (s: Uint8Array) => { const c = s.slice(); c[0] = 0; return c; }, /bad magic/],
    ['nothing', () => new Uint8Array(0), /header is truncated/],
  ])('refuses a corrupt reply cache (%s) and keeps its own', async (_name, corrupt, reason) => {
    const snapshot = concatPieces(filledExecutor().snapshotReplies());
    const target = new Executor(new CountingService(), 4);
    target.execute(delivery(0, ['keep', 1]));
    const before = concatPieces(target.snapshotReplies());
    await expect(target.installReplies(asAsyncPieces(cut(corrupt(snapshot), 5)))).rejects.toThrow(reason);
    await expect(target.installReplies(asAsyncPieces([corrupt(snapshot)]))).rejects.toMatchObject({ code: 'BFT_ERR_SNAPSHOT_INVALID' });
    expect(Buffer.from(concatPieces(target.snapshotReplies())).equals(before)).toBe(true);
  });
});
