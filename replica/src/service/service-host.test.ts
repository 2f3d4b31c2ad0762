// The execute stage on a real worker thread (and inline, for comparison): order, exactly-once execution,
// streamed snapshots with backpressure, installs, and a failing service being fatal.
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { limits } from '../constants.ts';
import { BftError } from '../errors.ts';
import type { Delivery } from '../core/ready.ts';
import { decodeMessage, encodeBatch } from '../protocol/codec.ts';
import { type ClientRequest, MessageType } from '../protocol/messages.ts';
import { Executor } from './executor.ts';
import { AppendLogService } from './fixtures/append-log-service.ts';
import { KvService } from './kv.ts';
import { encodeKvOperation } from './kv-operations.ts';
import { concatPieces } from './pieces.ts';
import { type EncodedReply, InlineServiceHost, type ServiceHost, type SnapshotParts, WorkerServiceHost } from './service-host.ts';

const utf8 = new TextEncoder();
const text = new TextDecoder();
const appendLogModule = fileURLToPath(new URL('./fixtures/append-log-service.ts', import.meta.url));

const hosts: ServiceHost[] = [];
afterEach(async () => {
  await Promise.all(hosts.splice(0).map((host) => host.close()));
});

async function workerHost(service: { module?: string; config?: unknown }, onFatal?: (error: BftError) => void): Promise<WorkerServiceHost> {
  const host = await WorkerServiceHost.start({ service, clientInFlightMax: 8, ...(onFatal ? { onFatal } : {}) });
  hosts.push(host);
  return host;
}

function inlineKvHost(): InlineServiceHost {
  const service = new KvService();
  const host = new InlineServiceHost(service, new Executor(service, 8));
  hosts.push(host);
  return host;
}

function request(clientId: string, seq: number, operation: Uint8Array, ordered = true): ClientRequest {
  return { clientId, seq, ordered, operation, signature: null };
}

function delivery(cid: number, requests: ClientRequest[]): Delivery {
  return { decision: { cid, regency: 0, batch: encodeBatch({ requests }), votes: [] }, requests };
}

function decodeReply(reply: EncodedReply): { clientId: string; seq: number; view: number; result: string } {
  const decoded = decodeMessage(reply.payload);
  if (!decoded.ok || decoded.message.type !== MessageType.REPLY) throw new Error('not a REPLY frame');
  const message = decoded.message;
  expect(message.clientId).toBe(reply.clientId);
  return { clientId: message.clientId, seq: message.seq, view: message.view, result: text.decode(message.result) };
}

async function consume(pieces: AsyncIterable<Uint8Array>): Promise<Uint8Array[]> {
  const all: Uint8Array[] = [];
  for await (const piece of pieces) all.push(piece);
  return all;
}

/** Both parts, whole: for comparing states. */
async function snapshotBytes(host: ServiceHost): Promise<{ service: Uint8Array; replies: Uint8Array }> {
  const parts = await host.snapshot();
  return { service: concatPieces(await consume(parts.service)), replies: concatPieces(await consume(parts.replies)) };
}

/** 10k keys written by 20 clients in batches of 200. */
async function fillKv(host: ServiceHost): Promise<void> {
  const seqs = new Map<string, number>();
  const executions: Promise<unknown>[] = [];
  for (let cid = 0; cid < 50; cid++) {
    const requests: ClientRequest[] = [];
    for (let i = 0; i < 200; i++) {
      const key = cid * 200 + i;
      const clientId = `client-${key % 20}`;
      const seq = (seqs.get(clientId) ?? 0) + 1;
      seqs.set(clientId, seq);
      requests.push(request(clientId, seq, encodeKvOperation({ type: 'put', key: `key-${key}`, value: utf8.encode(`value-${key}`) })));
    }
    if (executions.length >= limits.executeQueueBatchesMax) await executions.shift();
    executions.push(host.execute(delivery(cid, requests), 1));
  }
  await Promise.all(executions);
}

describe('WorkerServiceHost', () => {
  it('executes batches in call order, each once, and answers a read after the writes called before it', async () => {
    const host = await workerHost({ module: appendLogModule });
    const executions = [1, 2, 3].map((cid) =>
      host.execute(delivery(cid, [request('alice', 2 * cid - 1, utf8.encode(`a${cid}`)), request('bob', cid, utf8.encode(`b${cid}`)), request('alice', 2 * cid, utf8.encode(`c${cid}`))]), 7),
    );
    // Not awaited: the read is queued behind the three batches all the same.
    const read = host.executeUnordered(request('carol', 1, utf8.encode('read'), false), 7);
    const replies = (await Promise.all(executions)).flat().map(decodeReply);
    expect(replies.map((r) => r.result)).toEqual(['1:a1', '2:b1', '3:c1', '4:a2', '5:b2', '6:c2', '7:a3', '8:b3', '9:c3']);
    expect(replies.map((r) => `${r.clientId}/${r.seq}`)).toEqual(['alice/1', 'bob/1', 'alice/2', 'alice/3', 'bob/2', 'alice/4', 'alice/5', 'bob/3', 'alice/6']);
    expect(new Set(replies.map((r) => r.view))).toEqual(new Set([7]));
    expect(decodeReply(await read)).toEqual({ clientId: 'carol', seq: 1, view: 7, result: 'length 9' });
    const cached = await host.cachedReply('bob', 2, 8);
    expect(cached && decodeReply(cached)).toEqual({ clientId: 'bob', seq: 2, view: 8, result: '5:b2' });
    expect(await host.cachedReply('bob', 9, 8)).toBeUndefined();
    expect(host.stats()).toMatchObject({ executedRequests: 9, queuedBatches: 0, queuedReads: 0, thread: 'worker' });
  });

  it('refuses a batch beyond executeQueueBatchesMax queued at once, and executes the rest', async () => {
    const host = await workerHost({ module: appendLogModule });
    const accepted: Promise<readonly EncodedReply[]>[] = [];
    for (let cid = 1; cid <= limits.executeQueueBatchesMax; cid++) accepted.push(host.execute(delivery(cid, [request('a', cid, utf8.encode(`${cid}`))]), 0));
    await expect(host.execute(delivery(99, [request('a', 99, utf8.encode('x'))]), 0)).rejects.toMatchObject({ code: 'BFT_ERR_OVERLOADED' });
    expect((await Promise.all(accepted)).length).toBe(limits.executeQueueBatchesMax);
    expect(host.stats().executedRequests).toBe(limits.executeQueueBatchesMax);
  });

  it('snapshots a 10k-key state that installs into another host as an identical state with identical client seqs', async () => {
    const source = await workerHost({ module: 'builtin:kv' });
    await fillKv(source);
    const before = await snapshotBytes(source);
    const target = await workerHost({ module: 'builtin:kv' });
    await target.execute(delivery(0, [request('stranger', 1, encodeKvOperation({ type: 'put', key: 'only-in-target', value: utf8.encode('x') }))]), 1);
    // The source's parts stream straight into the target, piece by piece through the main thread.
    const clientSeqs = await target.install(await source.snapshot());
    expect(new Map(clientSeqs)).toEqual(new Map(Array.from({ length: 20 }, (_, i) => [`client-${i}`, 500])));
    const after = await snapshotBytes(target);
    expect(Buffer.from(after.service).equals(before.service)).toBe(true);
    expect(Buffer.from(after.replies).equals(before.replies)).toBe(true);
    const read = decodeReply(await target.executeUnordered(request('reader', 1, encodeKvOperation({ type: 'get', key: 'key-4321' }), false), 1));
    expect(read.seq).toBe(1);
    // A re-sent request is answered from the installed reply cache, not executed again.
    const cached = await target.cachedReply('client-7', 500, 1);
    expect(cached).toBeDefined();
    const stranger = await target.cachedReply('stranger', 1, 1);
    expect(stranger).toBeUndefined();
    // The same state built inline gives the same bytes: the worker adds nothing of its own.
    const inline = inlineKvHost();
    await fillKv(inline);
    const inlineBytes = await snapshotBytes(inline);
    expect(Buffer.from(inlineBytes.service).equals(before.service)).toBe(true);
    expect(Buffer.from(inlineBytes.replies).equals(before.replies)).toBe(true);
  });

  it('holds executions back while a snapshot is read, and a snapshot shows only what was called before it', async () => {
    const host = await workerHost({ module: appendLogModule });
    await host.execute(delivery(1, [request('a', 1, utf8.encode('first'))]), 0);
    const parts = await host.snapshot();
    const later = host.execute(delivery(2, [request('a', 2, utf8.encode('second'))]), 0);
    let laterDone = false;
    void later.then(() => {
      laterDone = true;
    });
    const service = concatPieces(await consume(parts.service));
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(laterDone).toBe(false);
    expect(text.decode(service)).toBe('["first"]');
    await consume(parts.replies);
    expect(decodeReply(((await later)[0]) as EncodedReply).result).toBe('2:second');
  });

  it.each(['worker', 'inline'] as const)(
    'lets execution go on while an isolated (key-value) snapshot is read, which still shows only what was called before it (%s)',
    async (thread) => {
      const host = thread === 'worker' ? await workerHost({ module: 'builtin:kv' }) : inlineKvHost();
      await fillKv(host);
      const expected = await snapshotBytes(host);
      const parts = await host.snapshot();
      // Unread, the snapshot must not hold these back: they overwrite keys, and add a client and its reply.
      const later: ClientRequest[] = Array.from({ length: 300 }, (_, i) =>
        request('late', i + 1, encodeKvOperation({ type: 'put', key: `key-${i}`, value: utf8.encode('overwritten') })),
      );
      // And one from a client the snapshot's reply cache already holds.
      later.push(request('client-3', 501, encodeKvOperation({ type: 'delete', key: 'key-3' })));
      const replies = await host.execute(delivery(50, later), 1);
      expect(replies.length).toBe(301);
      const read = decodeReply(await host.executeUnordered(request('reader', 1, encodeKvOperation({ type: 'get', key: 'key-7' }), false), 1));
      expect(read.result).toContain('overwritten');
      const service = concatPieces(await consume(parts.service));
      const replyCache = concatPieces(await consume(parts.replies));
      expect(Buffer.from(service).equals(expected.service)).toBe(true);
      expect(Buffer.from(replyCache).equals(expected.replies)).toBe(true);
      expect(Buffer.from((await snapshotBytes(host)).service).equals(expected.service)).toBe(false);
    },
  );

  it('streams a snapshot against credit: the worker never runs more than snapshotPiecesAheadMax pieces ahead', async () => {
    const pieces = 60;
    const host = await workerHost({ module: appendLogModule, config: { snapshotPieces: pieces } });
    await host.execute(delivery(1, [request('a', 1, utf8.encode('x'))]), 0);
    const parts = await host.snapshot();
    const iterator = parts.service[Symbol.asyncIterator]();
    let taken = 0;
    let bufferedMax = 0;
    for (;;) {
      const next = await iterator.next();
      if (next.done === true) break;
      taken++;
      // A worker that ignored its credit would have sent everything by now.
      if (taken % 10 === 1) await new Promise((resolve) => setTimeout(resolve, 20));
      bufferedMax = Math.max(bufferedMax, host.stats().snapshotPiecesBuffered);
    }
    expect(taken).toBe(pieces + 1);
    expect(bufferedMax).toBeGreaterThan(0);
    expect(bufferedMax).toBeLessThanOrEqual(limits.snapshotPiecesAheadMax);
    // Returning the other part unread ends the snapshot, and execution goes on.
    await parts.replies[Symbol.asyncIterator]().return?.();
    const replies = await host.execute(delivery(2, [request('a', 2, utf8.encode('y'))]), 0);
    expect(decodeReply(replies[0] as EncodedReply).result).toBe('2:y');
  });

  it('refuses a corrupt checkpoint with BFT_ERR_SNAPSHOT_INVALID and keeps its state', async () => {
    const source = await workerHost({ module: 'builtin:kv' });
    await source.execute(delivery(1, [request('a', 1, encodeKvOperation({ type: 'put', key: 'k', value: utf8.encode('new') }))]), 0);
    const good = await snapshotBytes(source);
    const target = await workerHost({ module: 'builtin:kv' });
    await target.execute(delivery(1, [request('b', 1, encodeKvOperation({ type: 'put', key: 'k', value: utf8.encode('old') }))]), 0);
    const before = await snapshotBytes(target);
    const corrupt = good.service.slice();
    corrupt[corrupt.length - 40] = (corrupt[corrupt.length - 40] as number) ^ 1;
    async function* pieces(bytes: Uint8Array, size: number): AsyncGenerator<Uint8Array> {
      for (let i = 0; i < bytes.length; i += size) yield bytes.subarray(i, i + size);
    }
    const parts: SnapshotParts = { service: pieces(corrupt, 7), replies: pieces(good.replies, 7) };
    await expect(target.install(parts)).rejects.toMatchObject({ code: 'BFT_ERR_SNAPSHOT_INVALID' });
    const after = await snapshotBytes(target);
    expect(Buffer.from(after.service).equals(before.service)).toBe(true);
    expect(Buffer.from(after.replies).equals(before.replies)).toBe(true);
    // The same checkpoint whole, cut at other edges, installs.
    expect(await target.install({ service: pieces(good.service, 5), replies: pieces(good.replies, 3) })).toEqual([['a', 1]]);
  });

  it('treats a service that throws in execute as fatal: onFatal, the pending batch and every later call reject', async () => {
    const fatal: BftError[] = [];
    const host = await workerHost({ module: appendLogModule, config: { throwOn: 'boom' } }, (error) => fatal.push(error));
    await host.execute(delivery(1, [request('a', 1, utf8.encode('fine'))]), 0);
    const failing = host.execute(delivery(2, [request('a', 2, utf8.encode('boom'))]), 0);
    const queuedBehind = host.execute(delivery(3, [request('a', 3, utf8.encode('after'))]), 0);
    await expect(failing).rejects.toMatchObject({ code: 'BFT_ERR_SERVICE_FAILED' });
    await expect(queuedBehind).rejects.toMatchObject({ code: 'BFT_ERR_SERVICE_FAILED' });
    expect(fatal).toHaveLength(1);
    expect(fatal[0]?.message).toMatch(/asked to fail on boom/);
    await expect(host.executeUnordered(request('b', 1, utf8.encode('read'), false), 0)).rejects.toBeInstanceOf(BftError);
  });

  it('refuses to start with a service module that cannot be loaded', async () => {
    await expect(WorkerServiceHost.start({ service: { module: '/nonexistent/service.ts' }, clientInFlightMax: 8 })).rejects.toMatchObject({
      code: 'BFT_ERR_CONFIG_INVALID',
    });
  });
});

describe('InlineServiceHost', () => {
  it('executes in call order and fails for good once the service throws', async () => {
    const service = new AppendLogService({ throwOn: 'boom' });
    const host = new InlineServiceHost(service, new Executor(service, 8));
    const first = host.execute(delivery(1, [request('a', 1, utf8.encode('x'))]), 0);
    const read = host.executeUnordered(request('b', 1, utf8.encode('read'), false), 0);
    expect(decodeReply((await first)[0] as EncodedReply).result).toBe('1:x');
    expect(decodeReply(await read).result).toBe('length 1');
    await expect(host.execute(delivery(2, [request('a', 2, utf8.encode('boom'))]), 0)).rejects.toMatchObject({ code: 'BFT_ERR_SERVICE_FAILED' });
    await expect(host.execute(delivery(3, [request('a', 3, utf8.encode('y'))]), 0)).rejects.toMatchObject({ code: 'BFT_ERR_SERVICE_FAILED' });
  });

  it('installs from a worker host snapshot and answers the same reads', async () => {
    const source = await workerHost({ module: 'builtin:kv' });
    await fillKv(source);
    const target = inlineKvHost();
    const seqs = await target.install(await source.snapshot());
    expect(seqs).toHaveLength(20);
    const get = encodeKvOperation({ type: 'get', key: 'key-9999' });
    const fromSource = decodeReply(await source.executeUnordered(request('r', 1, get, false), 0));
    const fromTarget = decodeReply(await target.executeUnordered(request('r', 1, get, false), 0));
    expect(fromTarget).toEqual(fromSource);
    expect(fromTarget.result).toContain('value-9999');
  });
});
