// Executes decided batches on the service exactly once per (client, seq), and keeps each client's
// recent replies so that a re-sent request is answered from the cache instead of executed again.
// All of this is replicated state: it changes only with decisions, in the same way on every replica.

import { limits } from '../constants.ts';
import { invariant } from '../errors.ts';
import type { Delivery } from '../core/ready.ts';
import type { Bytes } from '../protocol/messages.ts';
import type { Service } from './service.ts';

export interface ExecutedReply {
  readonly clientId: string;
  readonly seq: number;
  readonly result: Bytes;
}

interface ClientReplies {
  lastSeq: number;
  /** seq → result for the last `repliesPerClientMax` executed requests. */
  readonly results: Map<number, Bytes>;
}

export class Executor {
  private readonly service: Service;
  private readonly repliesPerClientMax: number;
  private readonly clients = new Map<string, ClientReplies>();
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

  /** Execute one decided batch. The core delivers each client's requests once, in sequence order. */
  execute(delivery: Delivery): ExecutedReply[] {
    const { decision, requests } = delivery;
    const problem = this.outOfOrder(requests);
    invariant(problem === null, `requests execute once, in sequence order: ${problem}`);
    const results = this.service.executeOrdered(
      requests.map((r) => ({ clientId: r.clientId, seq: r.seq, operation: r.operation })),
      { cid: decision.cid, regency: decision.regency },
    );
    invariant(results.length === requests.length, 'the service returns one result per operation');
    const replies: ExecutedReply[] = [];
    requests.forEach((request, i) => {
      const result = results[i] as Bytes;
      let client = this.clients.get(request.clientId);
      if (client === undefined) {
        client = { lastSeq: 0, results: new Map() };
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
}
