// Ed25519 verification on worker threads (DESIGN §1: the verify stage; §4). One call goes to one worker
// in one message, its bytes packed into one transferred buffer, so the per-message cost is paid once per
// call, not per signature. The queue is bounded: beyond it a call is refused at once, so the caller sheds
// load instead of queueing without end.

import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { limits } from '../constants.ts';
import { BftError } from '../errors.ts';

export interface VerifyItem {
  /** Names the key in the workers' KeyObject caches; the same keyId with other bytes is re-imported. */
  readonly keyId: string;
  readonly publicKeyRaw: Uint8Array;
  readonly payload: Uint8Array;
  readonly signature: Uint8Array;
}

export interface VerifyPoolOptions {
  /** Worker threads; default availableParallelism(), at most limits.verifyWorkersMax. */
  readonly workers?: number;
  /** Items handed to workers and not yet answered; default and maximum limits.verifyQueuedItemsMax. */
  readonly queuedItemsMax?: number;
}

export interface VerifyPoolStats {
  /** Workers running or starting; fewer than configured only after repeated start failures. */
  readonly workers: number;
  readonly queuedItems: number;
  readonly callsInFlight: number;
  readonly itemsVerified: number;
  /** Calls refused with BFT_ERR_OVERLOADED. */
  readonly callsOverloaded: number;
  /** Calls rejected with BFT_ERR_WORKER_FAILED because their worker died. */
  readonly callsFailed: number;
  readonly workerDeaths: number;
  readonly workersReplaced: number;
}

// --- Messages between the pool and its workers (verify-worker.ts) ----------------------------------

export interface VerifyCall {
  readonly kind: 'verify';
  readonly callId: number;
  readonly keyIds: readonly string[];
  /** For each item, its public key, payload and signature, back to back. */
  readonly data: Uint8Array<ArrayBuffer>;
  /** Three lengths per item: public key, payload, signature. */
  readonly lengths: Uint32Array<ArrayBuffer>;
}

export type VerifyRequest = VerifyCall | { readonly kind: 'crash-for-test' };

export interface VerifyResponse {
  readonly callId: number;
  /** 1 where the item's signature is valid, else 0, in the order of the call's items. */
  readonly results: Uint8Array<ArrayBuffer>;
}

interface PendingCall {
  readonly items: number;
  readonly resolve: (results: boolean[]) => void;
  readonly reject: (error: BftError) => void;
}

interface Slot {
  readonly index: number;
  worker: Worker | null;
  /** False once the worker reported an error: it is about to exit, so nothing more is sent to it. */
  accepting: boolean;
  online: boolean;
  consecutiveStartFailures: number;
  queuedItems: number;
  readonly calls: Map<number, PendingCall>;
  lastError: unknown;
  /** Settles when the current worker comes online or exits. */
  started: Promise<void>;
}

const workerUrl = new URL('./verify-worker.ts', import.meta.url);

function optionInRange(name: string, value: number, max: number): number {
  if (!Number.isSafeInteger(value) || value < 1 || value > max) {
    throw new BftError('BFT_ERR_CONFIG_INVALID', `VerifyPool ${name} must be an integer from 1 to ${max}, got ${value}`);
  }
  return value;
}

export class VerifyPool {
  readonly #queuedItemsMax: number;
  readonly #slots: Slot[] = [];
  #queuedItems = 0;
  #nextCallId = 0;
  #closed = false;
  #itemsVerified = 0;
  #callsOverloaded = 0;
  #callsFailed = 0;
  #workerDeaths = 0;
  #workersReplaced = 0;

  constructor(options: VerifyPoolOptions = {}) {
    const workers = optionInRange(
      'workers',
      options.workers ?? Math.min(availableParallelism(), limits.verifyWorkersMax),
      limits.verifyWorkersMax,
    );
    this.#queuedItemsMax = optionInRange(
      'queuedItemsMax',
      options.queuedItemsMax ?? limits.verifyQueuedItemsMax,
      limits.verifyQueuedItemsMax,
    );
    for (let index = 0; index < workers; index++) {
      const slot: Slot = {
        index,
        worker: null,
        accepting: false,
        online: false,
        consecutiveStartFailures: 0,
        queuedItems: 0,
        calls: new Map(),
        lastError: undefined,
        started: Promise.resolve(),
      };
      this.#slots.push(slot);
      this.#start(slot);
    }
  }

  /**
   * Verifies every item; resolves to one boolean per item, in order. Rejects at once with
   * BFT_ERR_OVERLOADED when the items would take the queue past its bound, with BFT_ERR_WORKER_FAILED when
   * the worker died before answering, and with BFT_ERR_CLOSED after close().
   */
  verify(items: readonly VerifyItem[]): Promise<boolean[]> {
    if (this.#closed) return Promise.reject(new BftError('BFT_ERR_CLOSED', 'the verification pool is closed'));
    if (items.length === 0) return Promise.resolve([]);
    if (this.#queuedItems + items.length > this.#queuedItemsMax) {
      this.#callsOverloaded++;
      return Promise.reject(
        new BftError(
          'BFT_ERR_OVERLOADED',
          `the verification queue holds ${this.#queuedItems} of at most ${this.#queuedItemsMax} items; ` +
            `shed these ${items.length} or retry once it drains`,
        ),
      );
    }
    const slot = this.#leastLoaded();
    const worker = slot?.worker ?? null;
    if (slot === null || worker === null) {
      this.#callsFailed++;
      return Promise.reject(
        new BftError(
          'BFT_ERR_WORKER_FAILED',
          'no verification worker is running (they kept dying at start); see the cause and restart the replica',
          { cause: this.#slots.find((s) => s.lastError !== undefined)?.lastError },
        ),
      );
    }
    const call = packCall(this.#nextCallId++, items);
    return new Promise<boolean[]>((resolve, reject) => {
      slot.calls.set(call.callId, { items: items.length, resolve, reject });
      if (slot.queuedItems === 0) worker.ref();
      slot.queuedItems += items.length;
      this.#queuedItems += items.length;
      const request: VerifyRequest = call;
      worker.postMessage(request, [call.data.buffer, call.lengths.buffer]);
    });
  }

  /** Terminates every worker; calls still in flight reject with BFT_ERR_CLOSED. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const terminations: Promise<number>[] = [];
    for (const slot of this.#slots) {
      this.#failCalls(slot, new BftError('BFT_ERR_CLOSED', 'the verification pool was closed before answering'));
      if (slot.worker !== null) terminations.push(slot.worker.terminate());
      slot.worker = null;
      slot.accepting = false;
    }
    await Promise.all(terminations);
  }

  stats(): VerifyPoolStats {
    let callsInFlight = 0;
    let workers = 0;
    for (const slot of this.#slots) {
      callsInFlight += slot.calls.size;
      if (slot.worker !== null) workers++;
    }
    return {
      workers,
      queuedItems: this.#queuedItems,
      callsInFlight,
      itemsVerified: this.#itemsVerified,
      callsOverloaded: this.#callsOverloaded,
      callsFailed: this.#callsFailed,
      workerDeaths: this.#workerDeaths,
      workersReplaced: this.#workersReplaced,
    };
  }

  /** Test hook: makes worker `index` throw an uncaught error, as a bug in it would. */
  crashWorkerForTest(index: number): void {
    const request: VerifyRequest = { kind: 'crash-for-test' };
    this.#slots[index]?.worker?.postMessage(request);
  }

  /** Resolves once every worker has started (or died trying): for tests and startup probes. */
  async whenWorkersOnline(): Promise<void> {
    await Promise.all(this.#slots.map((slot) => slot.started));
  }

  #leastLoaded(): Slot | null {
    let best: Slot | null = null;
    for (const slot of this.#slots) {
      if (!slot.accepting) continue;
      if (best === null || slot.queuedItems < best.queuedItems) best = slot;
    }
    return best;
  }

  #start(slot: Slot): void {
    const worker = new Worker(workerUrl, { name: `bftkube-verify-${slot.index}` });
    slot.worker = worker;
    slot.accepting = true;
    slot.online = false;
    slot.started = new Promise<void>((resolve) => {
      worker.once('online', () => resolve());
      worker.once('exit', () => resolve());
    });
    // An idle pool must not keep the process alive; verify() refs the worker while it has work.
    worker.unref();
    worker.on('online', () => {
      if (slot.worker !== worker) return;
      slot.online = true;
      slot.consecutiveStartFailures = 0;
    });
    worker.on('message', (response: VerifyResponse) => this.#onResponse(slot, response));
    worker.on('error', (error) => {
      if (slot.worker !== worker) return;
      slot.lastError = error;
      slot.accepting = false;
    });
    worker.on('exit', (exitCode) => this.#onExit(slot, worker, exitCode));
  }

  #onResponse(slot: Slot, response: VerifyResponse): void {
    const call = slot.calls.get(response.callId);
    if (call === undefined) return;
    slot.calls.delete(response.callId);
    this.#release(slot, call.items);
    this.#itemsVerified += call.items;
    const results: boolean[] = new Array<boolean>(call.items);
    for (let i = 0; i < call.items; i++) results[i] = response.results[i] === 1;
    call.resolve(results);
  }

  #onExit(slot: Slot, worker: Worker, exitCode: number): void {
    if (slot.worker !== worker) return;
    slot.worker = null;
    slot.accepting = false;
    if (this.#closed) return;
    this.#workerDeaths++;
    const failed = slot.calls.size;
    this.#failCalls(
      slot,
      new BftError(
        'BFT_ERR_WORKER_FAILED',
        `verification worker ${slot.index} exited with code ${exitCode} before answering; retry the call`,
        { cause: slot.lastError },
      ),
    );
    this.#callsFailed += failed;
    if (!slot.online) slot.consecutiveStartFailures++;
    // A worker that cannot even start (a broken install) would otherwise be respawned forever.
    if (slot.consecutiveStartFailures >= limits.verifyWorkerStartFailuresMax) return;
    this.#workersReplaced++;
    this.#start(slot);
  }

  #failCalls(slot: Slot, error: BftError): void {
    const calls = [...slot.calls.values()];
    slot.calls.clear();
    for (const call of calls) {
      this.#release(slot, call.items);
      call.reject(error);
    }
  }

  #release(slot: Slot, items: number): void {
    slot.queuedItems -= items;
    this.#queuedItems -= items;
    if (slot.queuedItems === 0) slot.worker?.unref();
  }
}

function packCall(callId: number, items: readonly VerifyItem[]): VerifyCall {
  let total = 0;
  for (const item of items) total += item.publicKeyRaw.length + item.payload.length + item.signature.length;
  const data = new Uint8Array(total);
  const lengths = new Uint32Array(3 * items.length);
  const keyIds: string[] = new Array<string>(items.length);
  let position = 0;
  for (let i = 0; i < items.length; i++) {
    const item = items[i] as VerifyItem;
    keyIds[i] = item.keyId;
    data.set(item.publicKeyRaw, position);
    position += item.publicKeyRaw.length;
    data.set(item.payload, position);
    position += item.payload.length;
    data.set(item.signature, position);
    position += item.signature.length;
    lengths[3 * i] = item.publicKeyRaw.length;
    lengths[3 * i + 1] = item.payload.length;
    lengths[3 * i + 2] = item.signature.length;
  }
  return { kind: 'verify', callId, keyIds, data, lengths };
}
