// The replica process's CoreCrypto (DESIGN §1, §4). The core checks signatures synchronously, one at a time,
// on the main thread; Ed25519 verification there would cap a replica at ~24k signatures/s on one core.
// So the driver calls prepare(message) first: it verifies in the worker pool every signature the core will
// check in that message and remembers the valid ones, and the core's own checks then are cache hits.
// A miss (not prepared, pool overloaded, or an input prepare did not foresee) is verified on the spot, so
// the cache changes only the speed, never the answer.

import { hash } from 'node:crypto';
import { limits } from '../constants.ts';
import type { CoreCrypto } from '../core/crypto.ts';
import { BftError } from '../errors.ts';
import { acceptSigningPayload, collectSigningPayload, decodeBatch, requestSigningPayload } from '../protocol/codec.ts';
import {
  type Bytes,
  type ClientRequest,
  type Decision,
  type Message,
  MessageType,
  type SignedCollect,
} from '../protocol/messages.ts';
import type { Member } from '../protocol/reconfiguration.ts';
import { type Ed25519PublicKey, Signer, ed25519PublicKeyBytes, ed25519SignatureBytes, publicKeyFromRaw, verifySignature } from './ed25519.ts';
import type { VerifyItem, VerifyPool } from './verify-pool.ts';

/** Who sent a message, as the transport authenticated it (never as the message claims). */
export type MessageSender = { readonly kind: 'replica'; readonly id: number } | { readonly kind: 'client'; readonly id: string };

export interface ProcessCryptoOptions {
  readonly me: number;
  readonly privateKeyPem: string;
  /** Raw 32-byte Ed25519 public keys of the replicas whose signatures count. */
  readonly replicaPublicKeys: ReadonlyMap<number, Uint8Array>;
  /** A client's raw Ed25519 public key, or undefined if the client is unknown (its signatures then fail). */
  readonly clientPublicKey?: (clientId: string) => Uint8Array | undefined;
  /** The View Manager's raw Ed25519 public key (genesis configuration); without it every reconfiguration is refused. */
  readonly viewManagerPublicKey?: Uint8Array;
  /** Without a pool, prepare() does nothing and every check runs on the calling thread. */
  readonly pool?: VerifyPool;
  /**
   * Whether the core already knows this very request (ReplicaCore.knowsRequest): it then checks no
   * signature for it, so neither does prepare().
   */
  readonly requestKnown?: (request: ClientRequest) => boolean;
  /** Default and maximum limits.verifiedSignaturesCachedMax. */
  readonly verifiedCacheEntriesMax?: number;
  /**
   * A message with fewer signatures to check than this is left to the core's own thread (default
   * poolItemsMinDefault); 1 sends everything to the pool.
   */
  readonly poolItemsMin?: number;
}

export const poolItemsMinDefault = 4;

export interface ProcessCryptoStats {
  /** Core checks answered from the cache of signatures the pool (or an earlier check) found valid. */
  readonly cacheHits: number;
  /** Core checks verified on the calling thread. */
  readonly cacheMisses: number;
  readonly cacheEntries: number;
  /** Signatures prepare() sent to the pool. */
  readonly preparedItems: number;
  /** Signatures prepare() left to the core's thread because the message had too few to be worth shipping. */
  readonly preparedInline: number;
  /** Signatures prepare() could not hand to the pool because it was at its bound. */
  readonly preparedItemsOverloaded: number;
  /** Signatures prepare() lost to a pool failure (a dead worker, a closed pool). */
  readonly preparedItemsFailed: number;
  /** prepare() calls that met an input they could not read; the core still checks it on its own. */
  readonly prepareErrors: number;
}

interface KnownKey {
  readonly raw: Uint8Array;
  readonly key: Ed25519PublicKey;
}

interface PreparedItem extends VerifyItem {
  readonly cacheKey: string;
}

/**
 * Payloads up to this size go into the cache key as they are; longer ones as their SHA-256. ACCEPT payloads
 * (the hot path, ~70 bytes) then cost no hashing, and a 1 MiB request operation does not become a 1 MiB key.
 */
const exactPayloadBytesMax = 128;
/**
 * Signatures per pool call from one prepare(): a batch of thousands of signed requests is spread over the
 * workers instead of loading one of them, while small messages still go in a single call.
 */
const preparedItemsPerCall = 256;

/**
 * The cache key of a valid (public key, payload, signature) triple. Fixed-size fields first and a marker
 * byte before the payload part make it unambiguous: two distinct triples share a key only if two payloads
 * of more than exactPayloadBytesMax bytes share a SHA-256 digest. It names the public key, not the signer's
 * id, so a signer whose key changed never hits an entry made under its old key.
 */
function cacheKey(publicKeyRaw: Uint8Array, payload: Bytes, signature: Bytes): string {
  const exact = payload.length <= exactPayloadBytesMax;
  const payloadPart = exact ? payload : hash('sha256', payload, 'buffer');
  const key = Buffer.allocUnsafe(ed25519PublicKeyBytes + ed25519SignatureBytes + 1 + payloadPart.length);
  key.set(publicKeyRaw, 0);
  key.set(signature, ed25519PublicKeyBytes);
  key[ed25519PublicKeyBytes + ed25519SignatureBytes] = exact ? 0 : 1;
  key.set(payloadPart, ed25519PublicKeyBytes + ed25519SignatureBytes + 1);
  return key.toString('latin1');
}

function entriesMax(value: number | undefined): number {
  const entries = value ?? limits.verifiedSignaturesCachedMax;
  if (!Number.isSafeInteger(entries) || entries < 1 || entries > limits.verifiedSignaturesCachedMax) {
    throw new BftError(
      'BFT_ERR_CONFIG_INVALID',
      `verifiedCacheEntriesMax must be an integer from 1 to ${limits.verifiedSignaturesCachedMax}, got ${entries}`,
    );
  }
  return entries;
}

export class ProcessCrypto implements CoreCrypto {
  readonly me: number;
  readonly #signer: Signer;
  readonly #replicaKeys = new Map<number, KnownKey>();
  readonly #clientPublicKey: ((clientId: string) => Uint8Array | undefined) | undefined;
  /** KeyObjects of clients seen lately, for checks on this thread; insertion order is age. */
  readonly #clientKeys = new Map<string, KnownKey>();
  readonly #pool: VerifyPool | undefined;
  readonly #viewManagerKey: KnownKey | null;
  readonly #verifiedMax: number;
  /** Keys of triples known to be valid; insertion order is age, the oldest is evicted first. */
  readonly #verified = new Set<string>();
  #cacheHits = 0;
  #cacheMisses = 0;
  #preparedItems = 0;
  #preparedInline = 0;
  readonly #poolItemsMin: number;
  readonly #requestKnown: (request: ClientRequest) => boolean;
  #preparedItemsOverloaded = 0;
  #preparedItemsFailed = 0;
  #prepareErrors = 0;

  constructor(options: ProcessCryptoOptions) {
    this.me = options.me;
    this.#signer = new Signer(options.privateKeyPem);
    for (const [replica, raw] of options.replicaPublicKeys) {
      try {
        this.#replicaKeys.set(replica, { raw: Uint8Array.from(raw), key: publicKeyFromRaw(raw) });
      } catch (error) {
        throw new BftError('BFT_ERR_SIGNING_KEY_INVALID', `the public key of replica ${replica} is invalid; fix the view's keys`, {
          cause: error,
        });
      }
    }
    const own = this.#replicaKeys.get(options.me);
    if (own !== undefined && !Buffer.from(own.raw).equals(this.#signer.publicKeyRaw)) {
      throw new BftError(
        'BFT_ERR_SIGNING_KEY_INVALID',
        `the signing key does not match the public key the view lists for replica ${options.me}; install the right key`,
      );
    }
    this.#clientPublicKey = options.clientPublicKey;
    this.#viewManagerKey = null;
    if (options.viewManagerPublicKey !== undefined) {
      try {
        this.#viewManagerKey = { raw: Uint8Array.from(options.viewManagerPublicKey), key: publicKeyFromRaw(options.viewManagerPublicKey) };
      } catch (error) {
        throw new BftError('BFT_ERR_SIGNING_KEY_INVALID', 'the View Manager public key is not an Ed25519 key; fix cluster.viewManagerPublicKey', { cause: error });
      }
    }
    this.#pool = options.pool;
    this.#verifiedMax = entriesMax(options.verifiedCacheEntriesMax);
    const poolItemsMin = options.poolItemsMin ?? poolItemsMinDefault;
    if (!Number.isSafeInteger(poolItemsMin) || poolItemsMin < 1 || poolItemsMin > limits.verifyQueuedItemsMax) {
      throw new BftError('BFT_ERR_CONFIG_INVALID', `poolItemsMin must be an integer from 1 to ${limits.verifyQueuedItemsMax}, got ${poolItemsMin}`);
    }
    this.#poolItemsMin = poolItemsMin;
    this.#requestKnown = options.requestKnown ?? (() => false);
  }

  digest(bytes: Bytes): Bytes {
    return hash('sha256', bytes, 'buffer');
  }

  sign(payload: Bytes): Bytes {
    const signature = this.#signer.sign(payload);
    // Own signatures come back to the core inside certificates, collects and SYNCs: known valid already.
    this.#remember(cacheKey(this.#signer.publicKeyRaw, payload, signature));
    return signature;
  }

  verifyReplica(replica: number, payload: Bytes, signature: Bytes): boolean {
    const known = this.#replicaKeys.get(replica);
    if (known === undefined || signature.length !== ed25519SignatureBytes) return false;
    const key = cacheKey(known.raw, payload, signature);
    if (this.#verified.has(key)) {
      this.#cacheHits++;
      return true;
    }
    this.#cacheMisses++;
    const valid = verifySignature(known.key, payload, signature);
    if (valid) this.#remember(key);
    return valid;
  }

  verifyViewManager(payload: Bytes, signature: Bytes): boolean {
    const known = this.#viewManagerKey;
    if (known === null || signature.length !== ed25519SignatureBytes) return false;
    return verifySignature(known.key, payload, signature);
  }

  /**
   * The keys that count from now on: those of every member the replicated state knows (the core passes
   * recent views' members too, whose certificates it still checks). Keys already imported are kept; a
   * member whose key is not valid Ed25519 gets none, so its signatures fail instead of the replica.
   */
  useMembers(members: ReadonlyMap<number, Member>): void {
    for (const [id, member] of members) {
      // An empty key is a placeholder of a configuration that gave none: the key loaded at start stands.
      if (member.publicKey.length === 0) continue;
      const known = this.#replicaKeys.get(id);
      if (known !== undefined && Buffer.from(known.raw).equals(member.publicKey)) continue;
      try {
        this.#replicaKeys.set(id, { raw: Uint8Array.from(member.publicKey), key: publicKeyFromRaw(member.publicKey) });
      } catch {
        this.#replicaKeys.delete(id);
      }
    }
  }

  /** Raw public key of replica `id` as last given, for modules that verify outside the core (state transfer). */
  replicaPublicKey(id: number): Uint8Array | undefined {
    return this.#replicaKeys.get(id)?.raw;
  }

  verifyClient(clientId: string, payload: Bytes, signature: Bytes): boolean {
    const raw = this.#clientPublicKey?.(clientId);
    if (raw === undefined || raw.length !== ed25519PublicKeyBytes || signature.length !== ed25519SignatureBytes) {
      return false;
    }
    const key = cacheKey(raw, payload, signature);
    if (this.#verified.has(key)) {
      this.#cacheHits++;
      return true;
    }
    this.#cacheMisses++;
    const publicKey = this.#clientKey(clientId, raw);
    const valid = publicKey !== null && verifySignature(publicKey, payload, signature);
    if (valid) this.#remember(key);
    return valid;
  }

  /**
   * Verifies in the pool every signature the core will check when it steps `message` from `from`, so that
   * those checks hit the cache. Always resolves: on overload or a pool failure the core just verifies on
   * its own thread. `message` must have passed decodeMessage (protocol/codec.ts).
   */
  prepare(from: MessageSender, message: Message): Promise<void> | undefined {
    const pool = this.#pool;
    if (pool === undefined) return undefined;
    const items: PreparedItem[] = [];
    try {
      new Preparation(
        (replica, payload, signature) => this.#replicaItem(replica, payload, signature),
        this.#clientPublicKey === undefined ? null : (request) => this.#clientItem(request),
        items,
      ).message(from, message);
    } catch {
      // Validated messages do not get here; whatever does is still checked, slowly, by the core.
      this.#prepareErrors++;
      return undefined;
    }
    // Shipping a signature or two to a worker costs more than checking them here (measured: the pool's
    // postMessage took ~9% of a replica's main thread for ACCEPTs alone); the core verifies on a miss.
    if (items.length < this.#poolItemsMin) {
      this.#preparedInline += items.length;
      return undefined;
    }
    const calls: Promise<void>[] = [];
    for (let start = 0; start < items.length; start += preparedItemsPerCall) {
      calls.push(this.#verifyInPool(pool, items.slice(start, start + preparedItemsPerCall)));
    }
    return Promise.all(calls).then(() => undefined);
  }

  stats(): ProcessCryptoStats {
    return {
      cacheHits: this.#cacheHits,
      cacheMisses: this.#cacheMisses,
      cacheEntries: this.#verified.size,
      preparedItems: this.#preparedItems,
      preparedInline: this.#preparedInline,
      preparedItemsOverloaded: this.#preparedItemsOverloaded,
      preparedItemsFailed: this.#preparedItemsFailed,
      prepareErrors: this.#prepareErrors,
    };
  }

  /** The pool item for a replica's signature, or null if it cannot be valid or is already known valid. */
  #replicaItem(replica: number, payload: Bytes, signature: Bytes): PreparedItem | null {
    const known = this.#replicaKeys.get(replica);
    if (known === undefined) return null;
    return this.#item(`r${replica}`, known.raw, payload, signature);
  }

  /** The pool item for a client's request signature, or null as for #replicaItem. */
  #clientItem(request: ClientRequest): PreparedItem | null {
    if (request.signature === null || this.#clientPublicKey === undefined || this.#requestKnown(request)) return null;
    const raw = this.#clientPublicKey(request.clientId);
    if (raw === undefined) return null;
    return this.#item(`c${request.clientId}`, raw, requestSigningPayload(request), request.signature);
  }

  #item(keyId: string, publicKeyRaw: Uint8Array, payload: Bytes, signature: Bytes): PreparedItem | null {
    if (publicKeyRaw.length !== ed25519PublicKeyBytes || signature.length !== ed25519SignatureBytes) return null;
    const key = cacheKey(publicKeyRaw, payload, signature);
    if (this.#verified.has(key)) return null;
    return { keyId, publicKeyRaw, payload, signature, cacheKey: key };
  }

  async #verifyInPool(pool: VerifyPool, items: readonly PreparedItem[]): Promise<void> {
    this.#preparedItems += items.length;
    let results: boolean[];
    try {
      results = await pool.verify(items);
    } catch (error) {
      if (error instanceof BftError && error.code === 'BFT_ERR_OVERLOADED') this.#preparedItemsOverloaded += items.length;
      else this.#preparedItemsFailed += items.length;
      return;
    }
    for (let i = 0; i < items.length; i++) {
      if (results[i] === true) this.#remember((items[i] as PreparedItem).cacheKey);
    }
  }

  #remember(key: string): void {
    if (this.#verified.has(key)) return;
    if (this.#verified.size >= this.#verifiedMax) {
      const oldest = this.#verified.values().next();
      if (oldest.done !== true) this.#verified.delete(oldest.value);
    }
    this.#verified.add(key);
  }

  #clientKey(clientId: string, raw: Uint8Array): Ed25519PublicKey | null {
    const cached = this.#clientKeys.get(clientId);
    if (cached !== undefined && Buffer.from(cached.raw.buffer, cached.raw.byteOffset, cached.raw.length).equals(raw)) {
      return cached.key;
    }
    let key: Ed25519PublicKey;
    try {
      key = publicKeyFromRaw(raw);
    } catch {
      return null;
    }
    this.#clientKeys.delete(clientId);
    if (this.#clientKeys.size >= limits.clientKeysCachedMax) {
      const oldest = this.#clientKeys.keys().next();
      if (oldest.done !== true) this.#clientKeys.delete(oldest.value);
    }
    this.#clientKeys.set(clientId, { raw: Uint8Array.from(raw), key });
    return key;
  }
}

/**
 * Walks one message the way the core will check it and collects the signatures to verify. Where the core
 * stops at the first repeated signer (certificates, SYNC collects), only each signer's first signature is
 * taken, so a hostile message cannot buy more pool work than the core itself would do.
 */
class Preparation {
  readonly #replicaItem: (replica: number, payload: Bytes, signature: Bytes) => PreparedItem | null;
  /** Null when no client keys are known: then batches need not even be decoded here. */
  readonly #clientItem: ((request: ClientRequest) => PreparedItem | null) | null;
  readonly #items: PreparedItem[];
  readonly #seen = new Set<string>();

  constructor(
    replicaItem: (replica: number, payload: Bytes, signature: Bytes) => PreparedItem | null,
    clientItem: ((request: ClientRequest) => PreparedItem | null) | null,
    items: PreparedItem[],
  ) {
    this.#replicaItem = replicaItem;
    this.#clientItem = clientItem;
    this.#items = items;
  }

  message(from: MessageSender, message: Message): void {
    switch (message.type) {
      case MessageType.ACCEPT:
        if (from.kind !== 'replica') return;
        return this.#add(
          this.#replicaItem(
            from.id,
            acceptSigningPayload(message.view, message.cid, message.regency, message.digest),
            message.signature,
          ),
        );
      case MessageType.DECISION:
        this.#decision(message.view, message.decision);
        return this.#batch(message.decision.batch);
      case MessageType.STOPDATA:
        // The core refuses a STOPDATA whose collect is not the sender's own before checking anything.
        if (from.kind !== 'replica' || message.collect.collect.replica !== from.id) return;
        this.#collect(message.collect);
        if (message.lastDecision !== null) {
          this.#decision(message.view, message.lastDecision);
          this.#batch(message.lastDecision.batch);
        }
        return;
      case MessageType.SYNC: {
        const replicas = new Set<number>();
        for (const signed of message.collects) {
          if (replicas.has(signed.collect.replica)) break;
          replicas.add(signed.collect.replica);
          this.#collect(signed);
        }
        if (message.lastDecision !== null) {
          this.#decision(message.view, message.lastDecision);
          this.#batch(message.lastDecision.batch);
        }
        return this.#batch(message.batch);
      }
      case MessageType.PROPOSE:
        return this.#batch(message.batch);
      case MessageType.FORWARD:
      case MessageType.STOP:
        return this.#requests(message.requests);
      case MessageType.REQUEST:
        // One signature is never worth a pool call, and a follower does not check it at all (ReplicaCore.receiveRequest).
      case MessageType.WRITE:
      case MessageType.HEARTBEAT:
      case MessageType.DECISION_REQUEST:
      case MessageType.REPLY:
      case MessageType.BUSY:
        return;
    }
  }

  /** The core checks a certificate's votes against the view it is in; a correct sender's view is the same. */
  #decision(view: number, decision: Decision): void {
    const payload = acceptSigningPayload(view, decision.cid, decision.regency, hash('sha256', decision.batch, 'buffer'));
    const signers = new Set<number>();
    for (const vote of decision.votes) {
      if (signers.has(vote.replica)) break;
      signers.add(vote.replica);
      this.#add(this.#replicaItem(vote.replica, payload, vote.signature));
    }
  }

  #collect(signed: SignedCollect): void {
    this.#add(this.#replicaItem(signed.collect.replica, collectSigningPayload(signed.collect), signed.signature));
  }

  #batch(bytes: Bytes): void {
    // Decoding a batch costs as much as the core's own decode of it; skip it when nothing would be found.
    if (bytes.length === 0 || this.#clientItem === null) return;
    const decoded = decodeBatch(bytes);
    if (decoded.ok) this.#requests(decoded.batch.requests);
  }

  #requests(requests: readonly ClientRequest[]): void {
    const clientItem = this.#clientItem;
    if (clientItem === null) return;
    for (const request of requests) this.#add(clientItem(request));
  }

  #add(item: PreparedItem | null): void {
    if (item === null || this.#seen.has(item.cacheKey)) return;
    this.#seen.add(item.cacheKey);
    this.#items.push(item);
  }
}
