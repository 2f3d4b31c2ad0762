import { describe, expect, it } from 'vitest';
import type { Delivery } from '../core/ready.ts';
import type { ClientRequest } from '../protocol/messages.ts';
import { Executor } from './executor.ts';
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
  snapshot() {
    return utf8.encode(this.log.join('\n'));
  }
  installSnapshot() {}
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

  it('refuses to execute a request twice (the core must never deliver one)', () => {
    const executor = new Executor(new CountingService());
    executor.execute(delivery(0, ['a', 1]));
    expect(() => executor.execute(delivery(1, ['a', 1]))).toThrow(/BFT_ERR_INVARIANT/);
  });
});
