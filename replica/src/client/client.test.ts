import { generateKeyPairSync, hash, sign, verify } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { limits } from '../constants.ts';
import type { View } from '../core/view.ts';
import { BftError } from '../errors.ts';
import { decodeMessage, encodeMessage, requestSigningPayload } from '../protocol/codec.ts';
import { type Busy, type ClientRequest, type Message, MessageType, type Reply, type ReplyDigest } from '../protocol/messages.ts';
import { BftClient, type BftClientOptions, ClientDropReason, unorderedSeqFirst } from './client.ts';
import type { ClientTransport } from './transport.ts';

const utf8 = new TextEncoder();
const text = new TextDecoder();
const bytes = (s: string) => utf8.encode(s);

const bft4: View = { number: 0, mode: 'bft', f: 1, members: [0, 1, 2, 3] };
const crash3: View = { number: 0, mode: 'crash', f: 1, members: [0, 1, 2] };

/** What a scripted replica does with one copy of a request. */
type Answer = { readonly result: string; readonly view?: number; readonly asDigest?: boolean } | 'busy' | 'silent';
/** `wantsDigest`: this copy asked for a REPLY_DIGEST (a script honours it by answering with asDigest). */
type Script = (replicaId: number, request: ClientRequest, copy: number, wantsDigest: boolean) => Answer;

const silent: Script = () => 'silent';
const correct: Script = (_replica, request) => ({ result: `ok:${text.decode(request.operation)}` });
/** Correct replicas that answer by digest when asked to, as real ones do. */
const correctByDigest: Script = (_replica, request, _copy, wantsDigest) => ({ result: `ok:${text.decode(request.operation)}`, asDigest: wantsDigest });

interface Received {
  readonly replicaId: number;
  readonly request: ClientRequest;
  readonly wantsDigest: boolean;
  readonly atMs: number;
}

const everyScriptedCluster: ScriptedReplicas[] = [];
const scriptedSendsMax = 10_000;

/**
 * The replicas, as seen through the ClientTransport seam: every send is decoded with the real codec and
 * answered (a microtask later, as from a network) as the test's script says.
 */
class ScriptedReplicas implements ClientTransport {
  script: Script;
  readonly received: Received[] = [];
  /** Anything the client sent that is not a valid REQUEST or VIEW_REQUEST: must stay empty. */
  readonly malformed: string[] = [];
  /** VIEW_REQUESTs, by replica asked. */
  readonly viewRequests: number[] = [];
  /** The endpoints the client moved to (setReplicas), newest last. */
  readonly replicaSets: number[][] = [];
  closed = false;
  private handler: ((replicaId: number, payload: Uint8Array) => void) | null = null;
  private readonly startMs = Date.now();

  constructor(script: Script) {
    this.script = script;
    everyScriptedCluster.push(this);
  }

  send(replicaId: number, payload: Uint8Array): void {
    const decoded = decodeMessage(payload);
    if (decoded.ok && decoded.message.type === MessageType.VIEW_REQUEST) {
      this.viewRequests.push(replicaId);
      return;
    }
    if (!decoded.ok || decoded.message.type !== MessageType.REQUEST) {
      this.malformed.push(decoded.ok ? `type ${decoded.message.type}` : decoded.detail);
      return;
    }
    const request = decoded.message.request;
    // A client that sends in answer to replies would loop forever on microtasks; stop answering instead,
    // so that such a bug fails the test's counts rather than hanging it.
    if (this.received.length >= scriptedSendsMax) {
      if (this.malformed.length === 0) this.malformed.push(`more than ${scriptedSendsMax} sends`);
      return;
    }
    const copy = this.received.filter((r) => r.replicaId === replicaId && r.request.seq === request.seq).length + 1;
    const wantsDigest = decoded.message.replyWithDigest === true;
    this.received.push({ replicaId, request, wantsDigest, atMs: Date.now() - this.startMs });
    const answer = this.script(replicaId, request, copy, wantsDigest);
    if (answer === 'silent') return;
    queueMicrotask(() => {
      if (answer === 'busy') this.busy(replicaId, request.clientId, request.seq);
      else if (answer.asDigest === true) this.replyDigest(replicaId, request.clientId, request.seq, answer.result, answer.view);
      else this.reply(replicaId, request.clientId, request.seq, answer.result, answer.view);
    });
  }

  onMessage(handler: (replicaId: number, payload: Uint8Array) => void): void {
    this.handler = handler;
  }

  setReplicas(replicas: readonly { id: number }[]): void {
    this.replicaSets.push(replicas.map((r) => r.id));
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  deliver(replicaId: number, message: Message | Uint8Array): void {
    const payload = message instanceof Uint8Array ? message : encodeMessage(message);
    this.handler?.(replicaId, payload);
  }

  reply(replicaId: number, clientId: string, seq: number, result: string, view = 0): void {
    const reply: Reply = { type: MessageType.REPLY, view, clientId, seq, result: bytes(result) };
    this.deliver(replicaId, reply);
  }

  replyDigest(replicaId: number, clientId: string, seq: number, result: string, view = 0): void {
    const digest: ReplyDigest = { type: MessageType.REPLY_DIGEST, view, clientId, seq, resultDigest: hash('sha256', bytes(result), 'buffer') };
    this.deliver(replicaId, digest);
  }

  busy(replicaId: number, clientId: string, seq: number): void {
    const busy: Busy = { type: MessageType.BUSY, clientId, seq, reason: 'pending_full' };
    this.deliver(replicaId, busy);
  }

  seqsSent(): number[] {
    return [...new Set(this.received.map((r) => r.request.seq))];
  }

  copiesOf(seq: number): Received[] {
    return this.received.filter((r) => r.request.seq === seq);
  }
}

function makeClient(replicas: ScriptedReplicas, options: Partial<BftClientOptions> = {}): BftClient {
  return new BftClient({ clientId: 'alice', view: bft4, transport: replicas, ...options });
}

interface Tracked<T> {
  state: 'pending' | 'resolved' | 'rejected';
  value?: T;
  error?: unknown;
}

function track<T>(promise: Promise<T>): Tracked<T> {
  const tracked: Tracked<T> = { state: 'pending' };
  promise.then(
    (value) => Object.assign(tracked, { state: 'resolved', value }),
    (error: unknown) => Object.assign(tracked, { state: 'rejected', error }),
  );
  return tracked;
}

function codeOf(error: unknown): string | undefined {
  return error instanceof BftError ? error.code : undefined;
}

function resultOf(tracked: Tracked<Uint8Array>): string | undefined {
  return tracked.value === undefined ? undefined : text.decode(tracked.value);
}

/** Lets queued microtasks (replies, promise reactions) run without moving the clock. */
const settle = () => vi.advanceTimersByTimeAsync(0);

/** The value of a call that must settle without the clock moving: fails at once instead of hanging. */
async function settled<T>(promise: Promise<T>): Promise<T> {
  const tracked = track(promise);
  await settle();
  if (tracked.state === 'pending') throw new Error('the call is still pending, though the replicas answered');
  if (tracked.state === 'rejected') throw tracked.error;
  return tracked.value as T;
}

beforeEach(() => {
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date'] });
});

afterEach(() => {
  vi.useRealTimers();
  for (const replicas of everyScriptedCluster.splice(0)) expect(replicas.malformed).toEqual([]);
});

describe('ordered requests: how many matching replies decide', () => {
  it('in BFT (n=4, f=1) one lying replica cannot decide the result; the reply quorum of 3 matching replies does', async () => {
    const replicas = new ScriptedReplicas(silent);
    const client = makeClient(replicas);
    const call = track(client.invokeOrdered(bytes('x')));
    await settle();
    expect(replicas.copiesOf(1).map((r) => r.replicaId)).toEqual([0, 1, 2, 3]);

    replicas.reply(1, 'alice', 1, 'lie');
    replicas.reply(1, 'alice', 1, 'lie'); // the liar repeating itself still counts once
    replicas.reply(9, 'alice', 1, 'lie'); // nor can it borrow the voice of a non-member
    await settle();
    expect(call.state).toBe('pending');

    replicas.reply(2, 'alice', 1, 'right');
    await settle();
    expect(call.state).toBe('pending'); // one against one

    replicas.reply(3, 'alice', 1, 'right');
    await settle();
    expect(call.state).toBe('pending'); // f+1 would prove the value, but a later read could miss the write

    replicas.reply(0, 'alice', 1, 'right');
    await settle();
    expect(call.state).toBe('resolved');
    expect(resultOf(call)).toBe('right');
    expect(client.stats().dropped).toMatchObject({ [ClientDropReason.DUPLICATE]: 1, [ClientDropReason.NOT_MEMBER]: 1 });
    await client.close();
  });

  it('in crash mode a majority of replies decides (one is not enough: a read after it could miss the write)', async () => {
    const replicas = new ScriptedReplicas((replica, request) => (replica === 2 ? correct(replica, request, 1, false) : 'silent'));
    const client = makeClient(replicas, { view: crash3 });
    const call = track(client.invokeOrdered(bytes('x')));
    await settle();
    expect(call.state).toBe('pending');
    replicas.reply(0, 'alice', 1, 'ok:x');
    await settle();
    expect(resultOf(call)).toBe('ok:x');
    await client.close();
  });

  it('a request that replicas answered from their reply cache after a retransmission still needs the quorum', async () => {
    // Replica 0 answers at once; the other replies are lost the first time, so f+1 forms only after a
    // retransmission, which goes only to the replicas that have not replied.
    const replicas = new ScriptedReplicas((replica, request, copy) =>
      replica === 0 || copy >= 2 ? correct(replica, request, copy, false) : 'silent',
    );
    const client = makeClient(replicas, { timeouts: { retransmitMs: 100 } });
    const call = track(client.invokeOrdered(bytes('x')));
    await vi.advanceTimersByTimeAsync(99);
    expect(call.state).toBe('pending');
    expect(client.stats().sends).toBe(4);

    await vi.advanceTimersByTimeAsync(1);
    expect(call.state).toBe('resolved');
    expect(resultOf(call)).toBe('ok:x');
    expect(client.stats()).toMatchObject({ sends: 7, retransmissions: 1 });
    expect(replicas.copiesOf(1).filter((r) => r.replicaId === 0)).toHaveLength(1);
    await client.close();
  });
});

describe('replies by digest (one replica sends the result, the others its SHA-256)', () => {
  /** Short test results would not ask for digests by default (replyDigestsFromBytes). */
  const digestClient = (replicas: ScriptedReplicas, options: Partial<BftClientOptions> = {}) =>
    makeClient(replicas, { replyDigestsFromBytes: 0, ...options });

  /** The replica this request asked for the full result. */
  const fullReplierOf = (replicas: ScriptedReplicas, seq: number): number[] =>
    replicas.copiesOf(seq).filter((r) => !r.wantsDigest).map((r) => r.replicaId);

  it('asks exactly one replica for the result and completes on it plus matching digests', async () => {
    const replicas = new ScriptedReplicas(correctByDigest);
    const client = digestClient(replicas);
    expect(text.decode(await settled(client.invokeOrdered(bytes('x'))))).toBe('ok:x');
    expect(replicas.copiesOf(1)).toHaveLength(4);
    expect(fullReplierOf(replicas, 1)).toHaveLength(1);
    // The next request asks the same replica: it delivered.
    expect(text.decode(await settled(client.invokeOrdered(bytes('y'))))).toBe('ok:y');
    expect(fullReplierOf(replicas, 2)).toEqual(fullReplierOf(replicas, 1));
    expect(client.stats()).toMatchObject({ sends: 8, fullResultFetches: 0, retransmissions: 0 });
    await client.close();
  });

  it('when the chosen replica stays silent for fullResultWaitMs after a digest quorum, gets the result from the digest senders', async () => {
    let chosen = -1;
    const replicas = new ScriptedReplicas((replica, request, copy, wantsDigest) => {
      if (chosen === -1 && !wantsDigest) chosen = replica;
      return replica === chosen ? 'silent' : correctByDigest(replica, request, copy, wantsDigest);
    });
    const client = digestClient(replicas, { timeouts: { fullResultWaitMs: 20 } });
    const call = track(client.invokeOrdered(bytes('x')));
    await vi.advanceTimersByTimeAsync(19);
    expect(call.state).toBe('pending');
    await vi.advanceTimersByTimeAsync(1);
    expect(resultOf(call)).toBe('ok:x');
    // Four first copies, then the full request to all four: the silent one may only be slow.
    expect(client.stats()).toMatchObject({ fullResultFetches: 1, retransmissions: 0, sends: 8 });
    // The silent replica is not asked again; one that delivered the bytes is asked next time.
    const next = track(client.invokeOrdered(bytes('y')));
    await settle();
    expect(resultOf(next)).toBe('ok:y');
    expect(fullReplierOf(replicas, 2)).toHaveLength(1);
    expect(fullReplierOf(replicas, 2)).not.toContain(chosen);
    expect(client.stats().fullResultFetches).toBe(1);
    await client.close();
  });

  it('a chosen replica that lies in its result cannot decide it; the true bytes come from the digest senders', async () => {
    const replicas = new ScriptedReplicas((replica, request, copy, wantsDigest) =>
      !wantsDigest && copy === 1 ? { result: 'forged' } : correctByDigest(replica, request, copy, wantsDigest),
    );
    const client = digestClient(replicas);
    expect(text.decode(await settled(client.invokeOrdered(bytes('x'))))).toBe('ok:x');
    expect(client.stats().fullResultFetches).toBe(1);
    await client.close();
  });

  it('a replica that withholds the result loses the role for good, however fast its digests come', async () => {
    let withholder = -1;
    const replicas = new ScriptedReplicas((replica, request, copy, wantsDigest) => {
      if (withholder === -1 && !wantsDigest) withholder = replica;
      // It always answers at once, by digest, even when asked for the result.
      if (replica === withholder) return { result: `ok:${text.decode(request.operation)}`, asDigest: true };
      return correctByDigest(replica, request, copy, wantsDigest);
    });
    const client = digestClient(replicas);
    expect(text.decode(await settled(client.invokeOrdered(bytes('x'))))).toBe('ok:x');
    expect(client.stats().fullResultFetches).toBe(1);
    for (const operation of ['y', 'z']) expect(text.decode(await settled(client.invokeOrdered(bytes(operation))))).toBe(`ok:${operation}`);
    expect(fullReplierOf(replicas, 2)).not.toContain(withholder);
    expect(fullReplierOf(replicas, 3)).toEqual(fullReplierOf(replicas, 2));
    expect(client.stats().fullResultFetches).toBe(1);
    await client.close();
  });

  it('digests alone never decide: when every member answered by digest, the client asks them for the bytes', async () => {
    // Only digests, even when asked for the result the first time: as if the chosen replica were lost.
    const replicas = new ScriptedReplicas((replica, request, copy) =>
      copy === 1 ? { result: `ok:${text.decode(request.operation)}`, asDigest: true } : correct(replica, request, copy, false),
    );
    const client = digestClient(replicas, { timeouts: { retransmitMs: 100 } });
    const call = track(client.invokeOrdered(bytes('x')));
    await settle();
    // All four answered by digest: the client asked the three digest senders for the result at once.
    expect(resultOf(call)).toBe('ok:x');
    expect(client.stats()).toMatchObject({ fullResultFetches: 1, retransmissions: 0 });
    await client.close();
  });

  it('async invocations and unordered reads ask every replica for the full result, and a digest for them is dropped', async () => {
    const replicas = new ScriptedReplicas(correctByDigest);
    const client = digestClient(replicas);
    const seen: string[] = [];
    const call = client.invokeAsync(bytes('a'), (replicaId, result) => seen.push(`${replicaId}:${text.decode(result)}`));
    await settle();
    await settled(call.done);
    expect(text.decode(await settled(client.invokeUnordered(bytes('r'))))).toBe('ok:r');
    expect(replicas.received.every((r) => !r.wantsDigest)).toBe(true);
    expect(seen).toHaveLength(3);

    const detached = client.invokeAsync(bytes('b'), () => {});
    replicas.replyDigest(1, 'alice', detached.seq, 'ok:b');
    expect(client.stats().dropped).toMatchObject({ [ClientDropReason.UNEXPECTED_DIGEST]: 1 });
    await client.close();
  });

  it('asks for digests only while the previous result was at least replyDigestsFromBytes long', async () => {
    const replicas = new ScriptedReplicas((replica, request, copy, wantsDigest) => {
      const operation = text.decode(request.operation);
      return { result: operation === 'long' ? 'L'.repeat(4096) : `ok:${operation}`, asDigest: wantsDigest };
    });
    const client = makeClient(replicas);
    for (const operation of ['a', 'b', 'long', 'c']) await settled(client.invokeOrdered(bytes(operation)));
    const askedForDigests = (seq: number) => replicas.copiesOf(seq).some((r) => r.wantsDigest);
    // The first request knows no result yet; then 'ok:a' is short; then 4096 bytes are long enough.
    expect([1, 2, 3, 4].map(askedForDigests)).toEqual([true, false, false, true]);
    await client.close();
  });

  it('replyDigests: false asks every replica for the full result', async () => {
    const replicas = new ScriptedReplicas(correctByDigest);
    const client = digestClient(replicas, { replyDigests: false });
    expect(text.decode(await settled(client.invokeOrdered(bytes('x'))))).toBe('ok:x');
    expect(replicas.received.every((r) => !r.wantsDigest)).toBe(true);
    await client.close();
  });
});

describe('retransmission', () => {
  it('retransmits with exponential backoff up to retransmitMsMax while replies are lost', async () => {
    const replicas = new ScriptedReplicas(silent);
    const client = makeClient(replicas, { timeouts: { retransmitMs: 100, retransmitMsMax: 400 } });
    const call = track(client.invokeOrdered(bytes('x')));
    await vi.advanceTimersByTimeAsync(1600);
    const roundsAtMs = [...new Set(replicas.copiesOf(1).map((r) => r.atMs))];
    expect(roundsAtMs).toEqual([0, 100, 300, 700, 1100, 1500]);

    replicas.script = correct;
    await vi.advanceTimersByTimeAsync(400);
    expect(resultOf(call)).toBe('ok:x');
    await client.close();
  });

  it('BUSY only pushes the next retransmission later: four BUSYs never cause a send', async () => {
    const replicas = new ScriptedReplicas(() => 'busy');
    const client = makeClient(replicas, { timeouts: { retransmitMs: 100, retransmitMsMax: 800 } });
    const call = track(client.invokeOrdered(bytes('x')));
    await vi.advanceTimersByTimeAsync(3000);

    // Each round sends one copy to each of the 4 replicas; the BUSYs of a round double the interval once
    // and move the timer later (100 → 200 after the first round, then capped at 800).
    const roundsAtMs = [...new Set(replicas.copiesOf(1).map((r) => r.atMs))];
    expect(roundsAtMs).toEqual([0, 200, 1000, 1800, 2600]);
    const stats = client.stats();
    expect(stats.sends).toBe(4 * roundsAtMs.length);
    expect(stats.busyReceived).toBe(stats.sends);
    expect(stats.retransmissions).toBe(roundsAtMs.length - 1);

    replicas.script = correct;
    await vi.advanceTimersByTimeAsync(800);
    expect(resultOf(call)).toBe('ok:x');
    await client.close();
  });

  it('BUSYs arriving between rounds keep pushing the round back instead of bringing it forward', async () => {
    const replicas = new ScriptedReplicas(silent);
    const client = makeClient(replicas, { timeouts: { retransmitMs: 100, retransmitMsMax: 1000 } });
    void client.invokeOrdered(bytes('x')).catch(() => {});
    for (let atMs = 50; atMs <= 500; atMs += 50) {
      await vi.advanceTimersByTimeAsync(50);
      replicas.busy(atMs % 200 === 0 ? 1 : 2, 'alice', 1);
    }
    // One round only: the first BUSY doubled the interval to 200, and every later one moved the timer on.
    expect(client.stats().sends).toBe(4);
    await vi.advanceTimersByTimeAsync(200);
    expect(client.stats().sends).toBe(8);
    await client.close();
  });
});

describe('unordered requests', () => {
  it('resolve with a Byzantine majority of matching replies, without ordering anything', async () => {
    // n=4, f=1: 3 matching replies needed. Replica 3 lies; replica 2's first answer is lost.
    const replicas = new ScriptedReplicas((replica, _request, copy) =>
      replica === 3 ? { result: 'lie' } : replica === 2 && copy === 1 ? 'silent' : { result: 'read' },
    );
    const client = makeClient(replicas, { timeouts: { retransmitMs: 100 } });
    const call = track(client.invokeUnordered(bytes('get')));
    await vi.advanceTimersByTimeAsync(99);
    expect(call.state).toBe('pending'); // 2 against 1 is not enough, but a majority can still form
    await vi.advanceTimersByTimeAsync(1);
    expect(resultOf(call)).toBe('read');
    expect(replicas.received.every((r) => !r.request.ordered && r.request.seq >= unorderedSeqFirst)).toBe(true);
    expect(client.stats().unorderedFallbacks).toBe(0);
    await client.close();
  });

  it('fall back to an ordered request as soon as the replies disagree so that no majority can form', async () => {
    const replicas = new ScriptedReplicas((replica, request) =>
      request.ordered ? { result: 'ordered' } : { result: replica < 2 ? 'old' : 'new' },
    );
    const client = makeClient(replicas, { timeouts: { unorderedTimeoutMs: 60_000 } });
    expect(text.decode(await settled(client.invokeUnordered(bytes('get'))))).toBe('ordered');
    const ordered = replicas.received.filter((r) => r.request.ordered);
    expect(ordered.map((r) => r.request.seq)).toEqual([1, 1, 1, 1]);
    expect(text.decode(ordered[0]?.request.operation)).toBe('get');
    expect(client.stats().unorderedFallbacks).toBe(1);
    await client.close();
  });

  it('fall back to an ordered request after unorderedTimeoutMs without a majority', async () => {
    const replicas = new ScriptedReplicas((replica, request) =>
      request.ordered ? { result: 'ordered' } : replica < 2 ? { result: 'read' } : 'silent',
    );
    const client = makeClient(replicas, { timeouts: { unorderedTimeoutMs: 500 } });
    const call = track(client.invokeUnordered(bytes('get')));
    await vi.advanceTimersByTimeAsync(499);
    expect(call.state).toBe('pending');
    expect(replicas.received.some((r) => r.request.ordered)).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect(resultOf(call)).toBe('ordered');
    await client.close();
  });
});

describe('timeouts: the seq stays reserved and the request is retried in the background', () => {
  it('rejects the caller with BFT_ERR_CLIENT_TIMEOUT, keeps retransmitting, and lets no later request overtake it', async () => {
    const replicas = new ScriptedReplicas(silent);
    const client = makeClient(replicas, { timeouts: { retransmitMs: 100, retransmitMsMax: 200, orderedTimeoutMs: 1000 } });
    const first = track(client.invokeOrdered(bytes('one')));
    await vi.advanceTimersByTimeAsync(900);
    const second = track(client.invokeOrdered(bytes('two'))); // its own deadline is at 1900 ms

    await vi.advanceTimersByTimeAsync(100);
    expect(first.state).toBe('rejected');
    expect(codeOf(first.error)).toBe('BFT_ERR_CLIENT_TIMEOUT');
    expect(String(first.error)).toMatch(/may still execute/);
    expect(second.state).toBe('pending');
    expect(client.stats()).toMatchObject({ inFlight: 1, waiting: 1, detached: 1 });

    const copiesAtTimeout = replicas.copiesOf(1).length;
    await vi.advanceTimersByTimeAsync(300);
    expect(replicas.copiesOf(1).length).toBeGreaterThan(copiesAtTimeout);
    expect(replicas.seqsSent()).toEqual([1]);

    replicas.script = correct;
    await vi.advanceTimersByTimeAsync(200);
    expect(resultOf(second)).toBe('ok:two');
    expect(replicas.seqsSent()).toEqual([1, 2]);
    // Seq 2 left only after seq 1 was answered.
    const lastCopyOfFirst = Math.max(...replicas.copiesOf(1).map((r) => r.atMs));
    expect(Math.min(...replicas.copiesOf(2).map((r) => r.atMs))).toBeGreaterThanOrEqual(lastCopyOfFirst);
    expect(client.stats()).toMatchObject({ inFlight: 0, waiting: 0, detached: 0 });
    await client.close();
  });

  it('a request that timed out while waiting for a slot is still sent in its turn, keeping seqs gapless', async () => {
    const replicas = new ScriptedReplicas(silent);
    const client = makeClient(replicas, { timeouts: { orderedTimeoutMs: 1000 } });
    const first = track(client.invokeOrdered(bytes('one')));
    const second = track(client.invokeOrdered(bytes('two')));
    await vi.advanceTimersByTimeAsync(1000);
    expect(codeOf(first.error)).toBe('BFT_ERR_CLIENT_TIMEOUT');
    expect(codeOf(second.error)).toBe('BFT_ERR_CLIENT_TIMEOUT');
    expect(String(second.error)).toMatch(/will be sent/);

    replicas.script = correct;
    const third = track(client.invokeOrdered(bytes('three')));
    await vi.advanceTimersByTimeAsync(4000);
    expect(resultOf(third)).toBe('ok:three');
    expect(replicas.seqsSent()).toEqual([1, 2, 3]);
    await client.close();
  });
});

describe('bounds on outstanding requests', () => {
  it('keeps at most inFlightMax ordered requests in flight, queues up to waitingMax, and refuses beyond at once', async () => {
    const replicas = new ScriptedReplicas(silent);
    const client = makeClient(replicas, { inFlightMax: 2, waitingMax: 1 });
    const a = track(client.invokeOrdered(bytes('a')));
    const b = track(client.invokeOrdered(bytes('b')));
    const c = track(client.invokeOrdered(bytes('c')));
    const d = track(client.invokeOrdered(bytes('d')));
    await settle();
    expect(codeOf(d.error)).toBe('BFT_ERR_CLIENT_BUSY');
    expect(replicas.seqsSent()).toEqual([1, 2]);
    expect(client.stats()).toMatchObject({ inFlight: 2, waiting: 1 });

    for (const replica of [0, 1, 2]) replicas.reply(replica, 'alice', 2, 'b done');
    await settle();
    expect(resultOf(b)).toBe('b done');
    expect(replicas.seqsSent()).toEqual([1, 2, 3]); // c took the freed slot
    expect(client.stats()).toMatchObject({ inFlight: 2, waiting: 0 });
    expect([a.state, c.state]).toEqual(['pending', 'pending']);

    // The refused call consumed no seq: the next one waits as seq 4.
    const e = track(client.invokeOrdered(bytes('e')));
    for (const seq of [1, 3]) for (const replica of [1, 2, 3]) replicas.reply(replica, 'alice', seq, `${seq}`);
    await settle();
    expect([a.state, c.state, e.state]).toEqual(['resolved', 'resolved', 'pending']);
    expect(replicas.seqsSent()).toEqual([1, 2, 3, 4]);
    await client.close();
  });

  it('bounds unordered requests in flight by limits.clientUnorderedInFlightMax', async () => {
    const client = makeClient(new ScriptedReplicas(silent));
    const calls = Array.from({ length: limits.clientUnorderedInFlightMax + 1 }, () => track(client.invokeUnordered(bytes('r'))));
    await settle();
    expect(calls.filter((c) => c.state === 'rejected').map((c) => codeOf(c.error))).toEqual(['BFT_ERR_CLIENT_BUSY']);
    await client.close();
  });

  it('refuses an operation larger than the replicas accept without using a seq', async () => {
    const replicas = new ScriptedReplicas(correct);
    const client = makeClient(replicas);
    await expect(client.invokeOrdered(new Uint8Array(limits.operationBytesMax + 1))).rejects.toMatchObject({
      code: 'BFT_ERR_CLIENT_OPERATION_TOO_LARGE',
    });
    await settled(client.invokeOrdered(bytes('small')));
    expect(replicas.seqsSent()).toEqual([1]);
    await client.close();
  });
});

describe('sequence numbers', () => {
  it('ordered seqs are consecutive from firstSeq, sent in order, and unordered reads do not consume them', async () => {
    const replicas = new ScriptedReplicas(correct);
    const client = makeClient(replicas, { firstSeq: 7, inFlightMax: 4 });
    await settled(client.invokeOrdered(bytes('a')));
    await settled(client.invokeUnordered(bytes('r')));
    await settled(client.invokeOrdered(bytes('b')));
    await settled(Promise.all(['c', 'd', 'e', 'f', 'g'].map((op) => client.invokeOrdered(bytes(op)))));
    const orderedSeqs = replicas.received.filter((r) => r.request.ordered).map((r) => r.request.seq);
    expect([...new Set(orderedSeqs)]).toEqual([7, 8, 9, 10, 11, 12, 13]);
    // Every copy of a seq went out before the first copy of the next one.
    expect(orderedSeqs).toEqual([...orderedSeqs].sort((x, y) => x - y));
    await client.close();
  });
});

describe('close()', () => {
  it('rejects everything outstanding with BFT_ERR_CLIENT_CLOSED, leaves no timer, and closes the transport', async () => {
    const replicas = new ScriptedReplicas(silent);
    const client = makeClient(replicas, { waitingMax: 4, timeouts: { orderedTimeoutMs: 1000 } });
    const timedOut = track(client.invokeOrdered(bytes('one')));
    await vi.advanceTimersByTimeAsync(1000); // seq 1 now lives on in the background
    const waiting = track(client.invokeOrdered(bytes('two')));
    const read = track(client.invokeUnordered(bytes('r')));
    const async = client.invokeAsync(bytes('three'), () => {});
    const asyncDone = track(async.done);
    expect(vi.getTimerCount()).toBeGreaterThan(0);

    await client.close();
    await settle();
    expect(codeOf(timedOut.error)).toBe('BFT_ERR_CLIENT_TIMEOUT');
    for (const call of [waiting, read, asyncDone]) expect(codeOf(call.error)).toBe('BFT_ERR_CLIENT_CLOSED');
    expect(vi.getTimerCount()).toBe(0);
    expect(replicas.closed).toBe(true);
    expect(client.stats()).toMatchObject({ inFlight: 0, waiting: 0, unorderedInFlight: 0 });

    await expect(client.invokeOrdered(bytes('late'))).rejects.toMatchObject({ code: 'BFT_ERR_CLIENT_CLOSED' });
    expect(() => client.invokeAsync(bytes('late'), () => {})).toThrow(/BFT_ERR_CLIENT_CLOSED/);
    const sendsAtClose = client.stats().sends;
    replicas.reply(0, 'alice', 1, 'late reply');
    await vi.advanceTimersByTimeAsync(60_000);
    expect(client.stats().sends).toBe(sendsAtClose);
  });
});

describe('untrusted input from replicas', () => {
  it('ignores and counts by reason anything that is not a REPLY or BUSY for an outstanding request of this client', async () => {
    const replicas = new ScriptedReplicas(silent);
    const client = makeClient(replicas);
    const call = track(client.invokeOrdered(bytes('x')));
    await settle();

    replicas.deliver(0, new Uint8Array([0xc1, 0x00])); // never valid msgpack
    replicas.deliver(0, encodeMessage({ type: MessageType.REPLY, view: 0, clientId: 'alice', seq: 0, result: bytes('') }));
    replicas.deliver(0, new Uint8Array(limits.resultBytesMax + 4096));
    replicas.deliver(0, encodeMessage({ type: MessageType.REQUEST, request: { clientId: 'alice', seq: 1, ordered: true, operation: bytes('x'), signature: null } }));
    replicas.reply(0, 'bob', 1, 'for bob');
    replicas.reply(0, 'alice', 2, 'no such request');
    replicas.reply(0, 'alice', unorderedSeqFirst + 5, 'no such read');
    replicas.reply(4, 'alice', 1, 'not a member');
    replicas.reply(0, 'alice', 1, 'x');
    replicas.busy(0, 'alice', 1); // after its reply: a BUSY from the same replica is a duplicate
    expect(client.stats().dropped).toEqual({
      [ClientDropReason.UNDECODABLE]: 1,
      [ClientDropReason.SCHEMA]: 1,
      [ClientDropReason.FRAME_TOO_LARGE]: 1,
      [ClientDropReason.NOT_FOR_CLIENTS]: 1,
      [ClientDropReason.WRONG_CLIENT]: 1,
      [ClientDropReason.NOT_OUTSTANDING]: 2,
      [ClientDropReason.NOT_MEMBER]: 1,
      [ClientDropReason.DUPLICATE]: 1,
    });
    expect(call.state).toBe('pending');
    replicas.reply(3, 'alice', 1, 'x');
    replicas.reply(2, 'alice', 1, 'x');
    await settle();
    expect(resultOf(call)).toBe('x');
    await client.close();
  });
});

describe('newer views', () => {
  it('surfaces a newer view only when f+1 members report it, with the highest number they vouch for', async () => {
    const views: number[] = [];
    const replicas = new ScriptedReplicas(silent);
    const client = makeClient(replicas, { onNewerView: (viewNumber) => views.push(viewNumber) });
    void client.invokeOrdered(bytes('x')).catch(() => {});
    await settle();
    replicas.reply(1, 'alice', 1, 'x', 9); // one replica alone may be lying
    expect(views).toEqual([]);
    replicas.reply(2, 'alice', 1, 'x', 5);
    expect(views).toEqual([5]);
    replicas.reply(9, 'alice', 1, 'x', 9); // a non-member does not vouch
    replicas.reply(3, 'alice', 1, 'x', 9);
    expect(views).toEqual([5, 9]);
    // Each time, the client asked its members for the view.
    expect(new Set(replicas.viewRequests)).toEqual(new Set([0, 1, 2, 3]));
    await client.close();
  });

  it('moves to a view that f+1 members describe alike, and sends what is in flight to its new members', async () => {
    const changed: number[] = [];
    const replicas = new ScriptedReplicas(silent);
    const client = makeClient(replicas, { onViewChanged: (view) => changed.push(view.number) });
    const pending = client.invokeOrdered(bytes('x'));
    await settle();
    const member = (id: number) => ({ id, host: `replica-${id}.demo`, port: 7000, adminPort: 8000, publicKey: new Uint8Array(32).fill(id) });
    const next = { number: 1, mode: 'bft' as const, f: 1, members: [1, 2, 3, 4].map(member) };
    const liar = { ...next, members: [1, 2, 3, 9].map(member) };
    replicas.reply(1, 'alice', 1, 'x', 1);
    replicas.reply(2, 'alice', 1, 'x', 1);
    replicas.deliver(0, { type: MessageType.VIEW_REPLY, clientId: 'alice', view: liar });
    replicas.deliver(1, { type: MessageType.VIEW_REPLY, clientId: 'alice', view: next });
    expect(changed).toEqual([]);
    replicas.deliver(2, { type: MessageType.VIEW_REPLY, clientId: 'alice', view: next });
    expect(changed).toEqual([1]);
    expect(client.view).toEqual({ number: 1, mode: 'bft', f: 1, members: [1, 2, 3, 4] });
    expect(replicas.replicaSets.at(-1)).toEqual([1, 2, 3, 4]);
    // The request in flight went to the new member 4 at once; 1 and 2 had answered already and still count.
    expect(replicas.received.filter((r) => r.replicaId === 4).map((r) => r.request.seq)).toEqual([1]);
    replicas.reply(0, 'alice', 1, 'x', 1); // no longer a member
    replicas.reply(4, 'alice', 1, 'x', 1);
    expect(text.decode(await pending)).toBe('x');
    await client.close();
  });

  it('in crash mode one member is enough', async () => {
    const views: number[] = [];
    const replicas = new ScriptedReplicas((_replica, request) => ({ result: text.decode(request.operation), view: 3 }));
    const client = makeClient(replicas, { view: crash3, onNewerView: (viewNumber) => views.push(viewNumber) });
    await settled(client.invokeOrdered(bytes('x')));
    expect(views).toEqual([3]);
    await client.close();
  });
});

describe('a view with fewer members', () => {
  it('completes a request whose replies already make a quorum of the new view', async () => {
    const replicas = new ScriptedReplicas(silent);
    const client = makeClient(replicas, { view: { number: 0, mode: 'bft', f: 2, members: [0, 1, 2, 3, 4, 5, 6] } });
    const pending = client.invokeOrdered(bytes('x'));
    await settle();
    // Four replies: short of the 5 that 7 replicas need, but 3 are enough among 4.
    for (const id of [3, 4, 5, 6]) replicas.reply(id, 'alice', 1, 'x', 1);
    const member = (id: number) => ({ id, host: `replica-${id}.demo`, port: 7000, adminPort: 8000, publicKey: new Uint8Array(32).fill(id) });
    client.useView({ number: 1, mode: 'bft', f: 1, members: [3, 4, 5, 6].map(member) });
    expect(text.decode(await settled(pending))).toBe('x');
    await client.close();
  });
});

describe('invokeAsync', () => {
  it('hands over every first reply as it comes and resolves done at the ordered quorum', async () => {
    const replicas = new ScriptedReplicas(silent);
    const client = makeClient(replicas);
    const seen: string[] = [];
    const call = client.invokeAsync(bytes('x'), (replicaId, result) => seen.push(`${replicaId}:${text.decode(result)}`));
    const done = track(call.done);
    expect(call.seq).toBe(1);
    replicas.reply(1, 'alice', 1, 'lie');
    replicas.reply(2, 'alice', 1, 'right');
    replicas.reply(2, 'alice', 1, 'right');
    await settle();
    expect(seen).toEqual(['1:lie', '2:right']);
    expect(done.state).toBe('pending');
    replicas.reply(0, 'alice', 1, 'right');
    await settle();
    expect(done.state).toBe('pending');
    replicas.reply(3, 'alice', 1, 'right');
    await settle();
    expect(done.state).toBe('resolved');
    expect(seen).toEqual(['1:lie', '2:right', '0:right', '3:right']);
    await client.close();
  });

  it('cancel() stops the callbacks, but the request keeps its seq until the replicas answer it', async () => {
    const replicas = new ScriptedReplicas(silent);
    const client = makeClient(replicas, { timeouts: { retransmitMs: 100 } });
    const seen: number[] = [];
    const call = client.invokeAsync(bytes('x'), (replicaId) => seen.push(replicaId));
    const next = track(client.invokeOrdered(bytes('y')));
    replicas.reply(0, 'alice', 1, 'r');
    call.cancel();
    expect(codeOf(await call.done.catch((error: unknown) => error))).toBe('BFT_ERR_CLIENT_CANCELLED');
    expect(client.stats()).toMatchObject({ inFlight: 1, waiting: 1, detached: 1 });

    await vi.advanceTimersByTimeAsync(100);
    expect(replicas.copiesOf(1).map((r) => r.replicaId)).toEqual([0, 1, 2, 3, 1, 2, 3]); // still retransmitted
    expect(replicas.seqsSent()).toEqual([1]);

    replicas.reply(1, 'alice', 1, 'r');
    replicas.reply(2, 'alice', 1, 'r'); // the quorum for seq 1 forms after the cancel
    await settle();
    expect(seen).toEqual([0]);
    expect(client.stats()).toMatchObject({ inFlight: 1, waiting: 0, detached: 0 });
    replicas.script = correct;
    await vi.advanceTimersByTimeAsync(200);
    expect(resultOf(next)).toBe('ok:y');
    expect(replicas.seqsSent()).toEqual([1, 2]);
    await client.close();
  });
});

describe('signed requests', () => {
  it('signs every request with the signer, and the signature verifies with real Ed25519 over requestSigningPayload', async () => {
    const { publicKey, privateKey } = generateKeyPairSync('ed25519');
    const replicas = new ScriptedReplicas((_replica, request) => {
      const valid =
        request.signature !== null && verify(null, requestSigningPayload(request), publicKey, request.signature);
      return { result: valid ? 'valid' : 'invalid' };
    });
    const client = makeClient(replicas, { signer: { sign: (payload) => sign(null, payload, privateKey) } });
    expect(text.decode(await settled(client.invokeOrdered(bytes('w'))))).toBe('valid');
    expect(text.decode(await settled(client.invokeUnordered(bytes('r'))))).toBe('valid');
    expect(replicas.received.every((r) => r.request.signature?.length === 64)).toBe(true);
    await client.close();
  });
});

describe('options', () => {
  it('refuses options beyond the limits with BFT_ERR_CONFIG_INVALID, and an unusable view with BFT_ERR_VIEW_INVALID', () => {
    const transport = new ScriptedReplicas(silent);
    const base = { clientId: 'alice', view: bft4, transport };
    expect(() => new BftClient({ ...base, inFlightMax: limits.clientInFlightMax + 1 })).toThrow(/BFT_ERR_CONFIG_INVALID/);
    expect(() => new BftClient({ ...base, waitingMax: limits.clientWaitingMax + 1 })).toThrow(/BFT_ERR_CONFIG_INVALID/);
    expect(() => new BftClient({ ...base, firstSeq: 0 })).toThrow(/BFT_ERR_CONFIG_INVALID/);
    expect(() => new BftClient({ ...base, clientId: '' })).toThrow(/BFT_ERR_CONFIG_INVALID/);
    expect(() => new BftClient({ ...base, timeouts: { retransmitMs: 500, retransmitMsMax: 100 } })).toThrow(
      /BFT_ERR_CONFIG_INVALID/,
    );
    expect(() => new BftClient({ ...base, view: { ...bft4, f: 2 } })).toThrow(/BFT_ERR_VIEW_INVALID/);
  });
});
