// The key-value client applications use: put, get, delete, compare-and-set and scans over the replicated
// key-value service (service/kv.ts), with string or byte values. Under it, one BftClient per session and
// a ClientMux, so that every session of one process shares the TLS links of its certificate (replicas
// answer each session on the connection its requests came on). connection.ts opens one from a
// connection file and a key folder.
//
// A session is the BftClient id `<certificate client id>/<session>`: the replicas keep the sequence numbers
// of each id, so a session name is used by one client instance only, once. Requests of one session run
// in the order they were made; use several sessions for independent streams of requests.

import { randomUUID } from 'node:crypto';
import { limits } from '../constants.ts';
import type { View } from '../core/view.ts';
import { BftError } from '../errors.ts';
import type { ViewDescription } from '../protocol/reconfiguration.ts';
import { type KvOperation, type KvResult, decodeKvResult, encodeKvOperation } from '../service/kv-operations.ts';
import { BftClient, type ClientTimeouts, type RequestSigner } from './client.ts';
import { ClientMux } from './mux.ts';
import type { ClientTransport } from './transport.ts';

/** A value as the caller gives it: text is stored as its UTF-8 bytes. */
export type KvValue = string | Uint8Array;

/**
 * How a read is answered. `ordered`: through consensus, linearizable. `unordered`: without consensus,
 * from more than (n+f)/2 matching replies, falling back to ordered when they do not match; faster, and
 * it may miss a write that completed a moment ago.
 */
export type KvConsistency = 'ordered' | 'unordered';

export interface KvReadOptions {
  /** Default 'ordered'. */
  readonly consistency?: KvConsistency;
}

export interface KvEntryBytes {
  readonly key: string;
  readonly value: Uint8Array;
}

export interface KvScanResult {
  readonly entries: readonly KvEntryBytes[];
  /** The first key of the range that was not returned (the limit or the result size bound): scan on from it. Null when done. */
  readonly next: string | null;
}

export interface KvCompareAndSetResult {
  readonly swapped: boolean;
  /** When not swapped: the value that failed the comparison (null: the key was absent). Null when swapped. */
  readonly current: Uint8Array | null;
}

export interface KvClientOptions {
  /**
   * The client id in the TLS certificate the transport presents (subject `CN=client-<identity>`): the
   * replicas accept only `<identity>` and `<identity>/<session>` on its connections.
   */
  readonly identity: string;
  /** The view to start in; the client moves to newer views by itself. */
  readonly view: View;
  /** Connections to the view's replicas, shared by every session and closed with the first client. */
  readonly transport: ClientTransport;
  /** Signs every request (Ed25519, the key the replicas know for `identity`); needed when the cluster requires signed requests. */
  readonly signer?: RequestSigner;
  /** This client's session name; default a random UUID. Never reuse one (see the top of this file). */
  readonly session?: string;
  readonly timeouts?: ClientTimeouts;
  /** Ordered requests of one session in flight at once (1 to limits.clientInFlightMax). Default 1. */
  readonly inFlightMax?: number;
  /** Called once for every newer view any session moved to. */
  readonly onViewChanged?: (view: ViewDescription) => void;
}

const sessionPattern = new RegExp(`^[A-Za-z0-9._:-]{1,${limits.clientSessionLengthMax}}$`);

/**
 * The BftClient id of a session of the certificate client `identity`: `<identity>/<session>`, which the
 * replicas accept on that certificate's connections (protocol/client-id.ts).
 */
export function sessionClientId(identity: string, session: string): string {
  if (!sessionPattern.test(session)) {
    throw new BftError(
      'BFT_ERR_CONFIG_INVALID',
      `session ${JSON.stringify(session)} is not allowed: use 1 to ${limits.clientSessionLengthMax} characters of A-Z, a-z, 0-9, '.', '_', ':' or '-' (or leave it out for a random one)`,
    );
  }
  const clientId = `${identity}/${session}`;
  if (identity.length === 0 || identity.includes('/') || clientId.length > limits.clientIdLengthMax) {
    throw new BftError(
      'BFT_ERR_CONFIG_INVALID',
      `client id ${JSON.stringify(clientId)} is not allowed: the certificate's client id must be non-empty without '/', and the whole id at most ${limits.clientIdLengthMax} characters`,
    );
  }
  return clientId;
}

const utf8 = new TextEncoder();
const strictUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** The text of a value read as bytes; BFT_ERR_KV_VALUE_NOT_TEXT when it is not valid UTF-8. */
export function kvValueText(value: Uint8Array): string {
  try {
    return strictUtf8.decode(value);
  } catch (cause) {
    throw new BftError('BFT_ERR_KV_VALUE_NOT_TEXT', `a value of ${value.length} bytes is not valid UTF-8; read it as bytes`, { cause });
  }
}

function valueBytes(value: KvValue, what: string): Uint8Array {
  if (typeof value === 'string') return utf8.encode(value);
  if (value instanceof Uint8Array) return value;
  throw new BftError('BFT_ERR_KV_OPERATION_INVALID', `${what} must be a string or a Uint8Array, got ${typeof value}`);
}

function viewOf(description: ViewDescription): View {
  return { number: description.number, mode: description.mode, f: description.f, members: description.members.map((m) => m.id) };
}

/** What every session of one KvClient family shares: the links, the newest view, the options. */
class Shared {
  readonly mux: ClientMux;
  readonly options: KvClientOptions;
  readonly sessions = new Set<KvClient>();
  view: View;
  closed = false;

  constructor(options: KvClientOptions) {
    this.options = options;
    this.mux = new ClientMux(options.transport);
    this.view = options.view;
  }

  /** A session moved to a newer view: f+1 of its members vouched for it, so the other sessions follow at once. */
  viewChanged(description: ViewDescription, from: KvClient): void {
    if (description.number <= this.view.number) return;
    this.view = viewOf(description);
    for (const session of this.sessions) if (session !== from) session.bftClient.useView(description);
    this.options.onViewChanged?.(description);
  }
}

export class KvClient {
  /** The session's BftClient id: `<identity>/<session>`. */
  readonly clientId: string;
  readonly identity: string;
  /** @internal The BftClient of this session (its stats() help diagnose). */
  readonly bftClient: BftClient;
  private readonly shared: Shared;
  private readonly owner: boolean;

  /** A client of its own session over `options.transport`; close() closes the transport and every session made from it. */
  static create(options: KvClientOptions): KvClient {
    try {
      return new KvClient(new Shared(options), options.session ?? randomUUID(), true);
    } catch (error) {
      // The transport was handed over to this client: nobody else would stop its links redialling.
      void options.transport.close();
      throw error;
    }
  }

  private constructor(shared: Shared, session: string, owner: boolean) {
    this.shared = shared;
    this.owner = owner;
    this.identity = shared.options.identity;
    this.clientId = sessionClientId(this.identity, session);
    for (const other of shared.sessions) {
      if (other.clientId === this.clientId) {
        throw new BftError('BFT_ERR_CONFIG_INVALID', `session ${JSON.stringify(session)} is already open on this client; every session needs its own name`);
      }
    }
    const { options } = shared;
    this.bftClient = new BftClient({
      clientId: this.clientId,
      view: shared.view,
      transport: shared.mux.session(this.clientId),
      ...(options.signer === undefined ? {} : { signer: options.signer }),
      ...(options.timeouts === undefined ? {} : { timeouts: options.timeouts }),
      ...(options.inFlightMax === undefined ? {} : { inFlightMax: options.inFlightMax }),
      onViewChanged: (view) => shared.viewChanged(view, this),
    });
    shared.sessions.add(this);
  }

  /** The newest view any session of this client moved to. */
  get view(): View {
    return this.shared.view;
  }

  /**
   * Another session over the same connections (and the same signing key), starting in the newest view;
   * its requests are ordered independently of this one's. Closed by its own close() or by the first client's.
   */
  session(name?: string): KvClient {
    if (this.shared.closed) throw new BftError('BFT_ERR_CLIENT_CLOSED', 'the key-value client was closed; open a new one');
    return new KvClient(this.shared, name ?? randomUUID(), false);
  }

  /** Writes `value` under `key`; `existed` says whether the key held a value before. */
  async put(key: string, value: KvValue): Promise<{ readonly existed: boolean }> {
    const result = await this.call({ type: 'put', key, value: valueBytes(value, 'value') }, 'ordered');
    return { existed: expectType(result, 'written', 'put').existed };
  }

  /** The value under `key` as bytes, or null when the key is absent. */
  async get(key: string, options: KvReadOptions = {}): Promise<Uint8Array | null> {
    const result = await this.call({ type: 'get', key }, options.consistency ?? 'ordered');
    return expectType(result, 'value', 'get').value;
  }

  /** The value under `key` as text, or null when the key is absent; BFT_ERR_KV_VALUE_NOT_TEXT if it is not UTF-8. */
  async getText(key: string, options: KvReadOptions = {}): Promise<string | null> {
    const value = await this.get(key, options);
    return value === null ? null : kvValueText(value);
  }

  /** Removes `key`; `existed` says whether it held a value. */
  async delete(key: string): Promise<{ readonly existed: boolean }> {
    const result = await this.call({ type: 'delete', key }, 'ordered');
    return { existed: expectType(result, 'written', 'delete').existed };
  }

  /** Sets `value` only if `key` holds exactly `expected` (null: only if the key is absent). */
  async compareAndSet(key: string, expected: KvValue | null, value: KvValue): Promise<KvCompareAndSetResult> {
    const operation: KvOperation = {
      type: 'compareAndSet',
      key,
      expected: expected === null ? null : valueBytes(expected, 'expected'),
      value: valueBytes(value, 'value'),
    };
    const result = expectType(await this.call(operation, 'ordered'), 'compareAndSet', 'compareAndSet');
    return { swapped: result.swapped, current: result.current };
  }

  /**
   * Keys in [fromKey, toKey) in code point order (toKey null or absent: to the last key), at most `limit`
   * (1 to limits.kvRangeEntriesMax). A result may stop early at its size bound: continue from `next`.
   */
  async scan(fromKey: string, toKey: string | null = null, limit: number = limits.kvScanEntriesDefault, options: KvReadOptions = {}): Promise<KvScanResult> {
    const result = await this.call({ type: 'range', startKey: fromKey, endKey: toKey, limit }, options.consistency ?? 'ordered');
    const range = expectType(result, 'range', 'scan');
    return { entries: range.entries.map((entry) => ({ key: entry.key, value: entry.value })), next: range.next };
  }

  /**
   * Closes this session (its outstanding calls reject with BFT_ERR_CLIENT_CLOSED). The client that
   * create() returned also closes every other session and the connections.
   */
  async close(): Promise<void> {
    if (!this.owner) {
      this.shared.sessions.delete(this);
      await this.bftClient.close();
      return;
    }
    this.shared.closed = true;
    const sessions = [...this.shared.sessions];
    this.shared.sessions.clear();
    await Promise.all(sessions.map((session) => session.bftClient.close()));
    await this.shared.mux.close();
  }

  private async call(operation: KvOperation, consistency: KvConsistency): Promise<KvResult> {
    if (consistency !== 'ordered' && consistency !== 'unordered') {
      throw new BftError('BFT_ERR_CONFIG_INVALID', `consistency is 'ordered' or 'unordered', got ${JSON.stringify(consistency)}`);
    }
    // Throws BFT_ERR_KV_OPERATION_INVALID for keys and values the replicas would refuse, before a seq is spent.
    const encoded = encodeKvOperation(operation);
    const bytes = consistency === 'ordered' ? await this.bftClient.invokeOrdered(encoded) : await this.bftClient.invokeUnordered(encoded);
    const decoded = decodeKvResult(bytes);
    if (!decoded.ok) {
      throw new BftError('BFT_ERR_KV_RESULT_INVALID', `${operation.type} was answered with ${bytes.length} bytes that are not a key-value result (${decoded.message}); check that the cluster runs the key-value service`);
    }
    const result = decoded.value;
    if (result.type === 'error') {
      if (result.code === 'STORE_FULL') throw new BftError('BFT_ERR_KV_STORE_FULL', `${operation.type} ${JSON.stringify(operationKey(operation))}: ${result.message}`);
      throw new BftError('BFT_ERR_KV_REFUSED', `${operation.type} ${JSON.stringify(operationKey(operation))} was refused (${result.code}): ${result.message}`);
    }
    return result;
  }
}

function operationKey(operation: KvOperation): string {
  return operation.type === 'range' ? operation.startKey : operation.key;
}

function expectType<T extends KvResult['type']>(result: KvResult, type: T, operation: string): Extract<KvResult, { type: T }> {
  if (result.type !== type) {
    throw new BftError('BFT_ERR_KV_RESULT_INVALID', `${operation} was answered with a ${result.type} result, not ${type}; check that the cluster runs the key-value service`);
  }
  return result as Extract<KvResult, { type: T }>;
}
