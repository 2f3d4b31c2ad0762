import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { lockstepTiming } from '../../test/sim/lockstep.ts';
import { makeCoreConfig } from '../core/config.ts';
import type { Delivery } from '../core/ready.ts';
import { ReplicaCore } from '../core/replica.ts';
import type { View } from '../core/view.ts';
import {
  acceptSigningPayload,
  collectSigningPayload,
  decodeMessage,
  encodeBatch,
  encodeMessage,
  requestSigningPayload,
} from '../protocol/codec.ts';
import {
  type Accept,
  type ClientRequest,
  type Collect,
  type Decision,
  type Message,
  MessageType,
  type ReplicaMessage,
  type SignedCollect,
} from '../protocol/messages.ts';
import { Signer, generateSigningKeyPair } from './ed25519.ts';
import { type MessageSender, ProcessCrypto } from './process-crypto.ts';
import { VerifyPool } from './verify-pool.ts';
import { expectCode } from '../../test/helpers.ts';

const utf8 = new TextEncoder();
const n = 4;
const replicaPems = Array.from({ length: n }, () => generateSigningKeyPair().privateKeyPem);
const replicaSigners = replicaPems.map((pem) => new Signer(pem));
const replicaPublicKeys = new Map(replicaSigners.map((signer, id) => [id, signer.publicKeyRaw] as const));
const clientPems = new Map(['alice', 'bob'].map((id) => [id, generateSigningKeyPair().privateKeyPem] as const));
const clientSigners = new Map([...clientPems].map(([id, pem]) => [id, new Signer(pem)] as const));
const clientPublicKey = (clientId: string): Uint8Array | undefined => clientSigners.get(clientId)?.publicKeyRaw;
const view: View = { number: 0, mode: 'bft', f: 1, members: [0, 1, 2, 3] };

function signedRequest(clientId: string, seq: number, operation: string | Uint8Array): ClientRequest {
  const unsigned: ClientRequest = {
    clientId,
    seq,
    ordered: true,
    operation: typeof operation === 'string' ? utf8.encode(operation) : operation,
    signature: null,
  };
  return { ...unsigned, signature: (clientSigners.get(clientId) as Signer).sign(requestSigningPayload(unsigned)) };
}

/** Through the real codec, as a message from the network would arrive. */
function received<T extends Message>(message: T): T {
  const decoded = decodeMessage(encodeMessage(message));
  if (!decoded.ok) throw new Error(`test message fails the schema: ${decoded.detail}`);
  return decoded.message as T;
}

let pool: VerifyPool;
beforeAll(async () => {
  pool = new VerifyPool({ workers: 2 });
  await pool.whenWorkersOnline();
});
afterAll(async () => {
  await pool.close();
});

// These tests prove what the pool path does, so every signature goes to the pool unless a test says otherwise.
function cryptoFor(
  me: number,
  options: { pool?: VerifyPool | null; verifiedCacheEntriesMax?: number; poolItemsMin?: number; requestKnown?: (request: ClientRequest) => boolean } = {},
): ProcessCrypto {
  return new ProcessCrypto({
    me,
    privateKeyPem: replicaPems[me] as string,
    replicaPublicKeys,
    clientPublicKey,
    poolItemsMin: options.poolItemsMin ?? 1,
    ...(options.requestKnown === undefined ? {} : { requestKnown: options.requestKnown }),
    ...(options.pool === null ? {} : { pool: options.pool ?? pool }),
    ...(options.verifiedCacheEntriesMax === undefined ? {} : { verifiedCacheEntriesMax: options.verifiedCacheEntriesMax }),
  });
}

// --- Real cores, real signatures: every message goes through prepare() before step(), as in the process ---

interface Envelope {
  readonly from: number;
  readonly to: number;
  readonly message: ReplicaMessage;
}

class PreparedCluster {
  readonly cryptos = new Map<number, ProcessCrypto>();
  readonly cores = new Map<number, ReplicaCore>();
  readonly deliveries = new Map<number, Delivery[]>();
  readonly stepped = new Set<number>();
  queue: Envelope[] = [];

  constructor() {
    for (const id of view.members) {
      // As in the process: what the core already holds from its client is not verified for it.
      const crypto = cryptoFor(id, { requestKnown: (request) => this.cores.get(id)?.knowsRequest(request) ?? false });
      this.cryptos.set(id, crypto);
      this.deliveries.set(id, []);
      const config = makeCoreConfig(id, view, { ...lockstepTiming, requireSignedRequests: true });
      this.cores.set(id, new ReplicaCore(config, crypto));
    }
  }

  crypto(id: number): ProcessCrypto {
    return this.cryptos.get(id) as ProcessCrypto;
  }

  collect(): void {
    for (const [id, core] of this.cores) {
      while (core.hasReady()) {
        const ready = core.ready();
        this.deliveries.get(id)?.push(...ready.deliveries);
        for (const out of ready.messages) {
          const targets = out.to === 'others' ? view.members.filter((m) => m !== id) : [out.to];
          for (const to of targets) this.queue.push({ from: id, to, message: received(out.message) });
        }
        core.advance();
      }
    }
  }

  async submit(request: ClientRequest, to: readonly number[]): Promise<void> {
    for (const id of to) {
      const message = received({ type: MessageType.REQUEST, request });
      await this.crypto(id).prepare({ kind: 'client', id: request.clientId }, message);
      this.cores.get(id)?.receiveRequest(request.clientId, message.request);
    }
    this.collect();
  }

  /** Delivers queued messages (prepare, then step) until none is left; `cut` replicas hear and say nothing. */
  async run(cut: ReadonlySet<number> = new Set()): Promise<void> {
    for (let steps = 0; steps < 10_000 && this.queue.length > 0; steps++) {
      const envelope = this.queue.shift() as Envelope;
      if (cut.has(envelope.from) || cut.has(envelope.to)) continue;
      await this.crypto(envelope.to).prepare({ kind: 'replica', id: envelope.from }, envelope.message);
      this.stepped.add(envelope.message.type);
      this.cores.get(envelope.to)?.step(envelope.from, envelope.message);
      this.collect();
    }
    expect(this.queue).toEqual([]);
  }

  async tickUntilDecided(cid: number, replicas: readonly number[], cut: ReadonlySet<number>): Promise<void> {
    for (let ticks = 0; ticks < 200; ticks++) {
      if (replicas.every((id) => (this.deliveries.get(id) ?? []).some((d) => d.decision.cid === cid))) return;
      for (const id of replicas) this.cores.get(id)?.tick();
      this.collect();
      await this.run(cut);
    }
    throw new Error(`instance ${cid} was not decided by ${replicas.join(', ')}`);
  }
}

describe('ProcessCrypto with real cores: the core verifies from the cache after prepare() (DESIGN §1, §4)', () => {
  it('a normal-case instance and a leader change after it check every signature as a cache hit', async () => {
    const cluster = new PreparedCluster();
    await cluster.submit(signedRequest('alice', 1, 'set x 1'), [0, 1, 2, 3]);
    await cluster.run();
    for (const id of view.members) expect(cluster.deliveries.get(id)?.map((d) => d.decision.cid)).toEqual([0]);
    expect(cluster.stepped).toEqual(new Set([MessageType.PROPOSE, MessageType.WRITE, MessageType.ACCEPT]));

    // Leader 0 falls silent; the others time out, STOP, send STOPDATA (with instance 0's certificate as
    // lastDecision) and SYNC, and decide instance 1 under leader 1.
    const cut = new Set([0]);
    await cluster.submit(signedRequest('bob', 1, 'set y 2'), [1, 2, 3]);
    await cluster.tickUntilDecided(1, [1, 2, 3], cut);
    for (const type of [MessageType.STOP, MessageType.STOPDATA, MessageType.SYNC]) expect(cluster.stepped).toContain(type);

    for (const id of [1, 2, 3]) {
      const stats = cluster.crypto(id).stats();
      // Only bob's request, which each got from bob himself: checked on the spot when its timer ran out,
      // before blaming the leader for it (ReplicaCore.receiveRequest).
      expect(stats.cacheMisses, `replica ${id}`).toBe(1);
      expect(stats.cacheHits, `replica ${id}`).toBeGreaterThan(0);
      expect(stats.preparedItemsOverloaded + stats.preparedItemsFailed + stats.prepareErrors).toBe(0);
    }
  });

  it('a DECISION for a replica that missed the instance: its certificate and requests are cache hits', async () => {
    const cluster = new PreparedCluster();
    await cluster.submit(signedRequest('alice', 1, 'set x 1'), [0, 1, 2]);
    await cluster.run(new Set([3]));
    const decision = cluster.deliveries.get(1)?.[0]?.decision as Decision;
    expect(decision.cid).toBe(0);

    const crypto = cryptoFor(3);
    const lagging = new ReplicaCore(makeCoreConfig(3, view, { ...lockstepTiming, requireSignedRequests: true }), crypto);
    const message = received({ type: MessageType.DECISION, view: 0, decision });
    await crypto.prepare({ kind: 'replica', id: 1 }, message);
    lagging.step(1, message);
    expect(lagging.ready().deliveries.map((d) => d.decision.cid)).toEqual([0]);
    // Three votes and one request signature.
    expect(crypto.stats()).toMatchObject({ cacheHits: 4, cacheMisses: 0, preparedItems: 4 });
  });
});

// --- Each message type, checked the way the core checks it ---

function accept(from: number, cid: number, digest: Uint8Array): Accept {
  const signature = (replicaSigners[from] as Signer).sign(acceptSigningPayload(0, cid, 0, digest));
  return { type: MessageType.ACCEPT, view: 0, cid, regency: 0, digest, signature };
}

function sha256(bytes: Uint8Array): Uint8Array {
  return createHash('sha256').update(bytes).digest();
}

function certificate(cid: number, requests: ClientRequest[], voters: readonly number[]): Decision {
  const batch = encodeBatch({ requests });
  const payload = acceptSigningPayload(0, cid, 0, sha256(batch));
  return {
    cid,
    regency: 0,
    batch,
    votes: voters.map((replica) => ({ replica, signature: (replicaSigners[replica] as Signer).sign(payload) })),
  };
}

function signedCollect(replica: number, regency: number, cid: number): SignedCollect {
  const collect: Collect = {
    replica,
    view: 0,
    regency,
    cid,
    acceptedRegency: 0,
    acceptedDigest: sha256(utf8.encode('value')),
    writeSet: [{ regency: 0, digest: sha256(utf8.encode('value')) }],
  };
  return { collect, signature: (replicaSigners[replica] as Signer).sign(collectSigningPayload(collect)) };
}

/** The checks the core makes on a message, as (replica | client, payload, signature). */
type Check = { replica: number; payload: Uint8Array; signature: Uint8Array } | { client: string; payload: Uint8Array; signature: Uint8Array };

function decisionChecks(decision: Decision): Check[] {
  const payload = acceptSigningPayload(0, decision.cid, decision.regency, sha256(decision.batch));
  return decision.votes.map((vote) => ({ replica: vote.replica, payload, signature: vote.signature }));
}

function requestChecks(requests: readonly ClientRequest[]): Check[] {
  return requests.map((r) => ({ client: r.clientId, payload: requestSigningPayload(r), signature: r.signature as Uint8Array }));
}

function collectCheck(signed: SignedCollect): Check {
  return { replica: signed.collect.replica, payload: collectSigningPayload(signed.collect), signature: signed.signature };
}

function runChecks(crypto: ProcessCrypto, checks: readonly Check[]): boolean[] {
  return checks.map((check) =>
    'replica' in check
      ? crypto.verifyReplica(check.replica, check.payload, check.signature)
      : crypto.verifyClient(check.client, check.payload, check.signature),
  );
}

describe('ProcessCrypto.prepare: every signature of every message type', () => {
  const requests = [signedRequest('alice', 1, 'a1'), signedRequest('bob', 1, new Uint8Array(1000).fill(7))];
  const batch = encodeBatch({ requests });
  const decision = certificate(4, requests, [0, 1, 2]);
  const digest = sha256(batch);
  const cases: Array<{ name: string; from: MessageSender; message: Message; checks: Check[] }> = [
    {
      name: 'ACCEPT',
      from: { kind: 'replica', id: 2 },
      message: accept(2, 5, digest),
      checks: [{ replica: 2, payload: acceptSigningPayload(0, 5, 0, digest), signature: accept(2, 5, digest).signature }],
    },
    {
      name: 'DECISION',
      from: { kind: 'replica', id: 1 },
      message: { type: MessageType.DECISION, view: 0, decision },
      checks: [...decisionChecks(decision), ...requestChecks(requests)],
    },
    {
      name: 'STOPDATA',
      from: { kind: 'replica', id: 3 },
      message: {
        type: MessageType.STOPDATA,
        view: 0,
        regency: 1,
        collect: signedCollect(3, 1, 5),
        lastDecision: decision,
        values: [],
      },
      checks: [collectCheck(signedCollect(3, 1, 5)), ...decisionChecks(decision), ...requestChecks(requests)],
    },
    {
      name: 'SYNC',
      from: { kind: 'replica', id: 1 },
      message: {
        type: MessageType.SYNC,
        view: 0,
        regency: 1,
        cid: 5,
        collects: [signedCollect(1, 1, 5), signedCollect(2, 1, 5), signedCollect(3, 1, 5)],
        lastDecision: decision,
        batch: encodeBatch({ requests: [signedRequest('alice', 2, 'a2')] }),
      },
      checks: [
        ...[1, 2, 3].map((r) => collectCheck(signedCollect(r, 1, 5))),
        ...decisionChecks(decision),
        ...requestChecks([...requests, signedRequest('alice', 2, 'a2')]),
      ],
    },
    {
      name: 'PROPOSE',
      from: { kind: 'replica', id: 0 },
      message: { type: MessageType.PROPOSE, view: 0, cid: 5, regency: 0, batch },
      checks: requestChecks(requests),
    },
    {
      name: 'FORWARD',
      from: { kind: 'replica', id: 2 },
      message: { type: MessageType.FORWARD, view: 0, requests },
      checks: requestChecks(requests),
    },
    {
      name: 'STOP',
      from: { kind: 'replica', id: 2 },
      message: { type: MessageType.STOP, view: 0, regency: 1, requests },
      checks: requestChecks(requests),
    },
  ];

  for (const { name, from, message, checks } of cases) {
    it(`${name}: after prepare() the core's checks are all cache hits`, async () => {
      const crypto = cryptoFor(0);
      await crypto.prepare(from, received(message));
      expect(crypto.stats()).toMatchObject({ preparedItems: checks.length, cacheEntries: checks.length });
      expect(runChecks(crypto, checks)).toEqual(checks.map(() => true));
      expect(crypto.stats()).toMatchObject({ cacheHits: checks.length, cacheMisses: 0 });
    });
  }

  it('REQUEST: prepare() verifies nothing (the core checks a client\'s own request only if it must)', async () => {
    const crypto = cryptoFor(0);
    await crypto.prepare({ kind: 'client', id: 'alice' }, received({ type: MessageType.REQUEST, request: requests[0] as ClientRequest }));
    expect(crypto.stats()).toMatchObject({ preparedItems: 0, preparedInline: 0, cacheEntries: 0 });
  });

  it('PROPOSE: requests the core already holds from their clients are not verified', async () => {
    const held = requests[0] as ClientRequest;
    const crypto = cryptoFor(0, { requestKnown: (request) => request.clientId === held.clientId && request.seq === held.seq });
    await crypto.prepare({ kind: 'replica', id: 0 }, received({ type: MessageType.PROPOSE, view: 0, cid: 5, regency: 0, batch }));
    expect(crypto.stats()).toMatchObject({ preparedItems: requests.length - 1 });
  });

  it('does not cache invalid signatures: the core then checks them itself and refuses them', async () => {
    const crypto = cryptoFor(0);
    const forged = { ...decision, votes: decision.votes.map((v) => (v.replica === 1 ? { ...v, signature: new Uint8Array(64).fill(9) } : v)) };
    const unknownClient: ClientRequest = { ...signedRequest('alice', 3, 'x'), clientId: 'mallory' };
    const tampered: ClientRequest = { ...signedRequest('bob', 2, 'y'), operation: utf8.encode('z') };
    await crypto.prepare({ kind: 'replica', id: 2 }, received({ type: MessageType.DECISION, view: 0, decision: forged }));
    await crypto.prepare({ kind: 'replica', id: 2 }, received({ type: MessageType.FORWARD, view: 0, requests: [unknownClient, tampered] }));
    // An ACCEPT signed by replica 2 but sent by replica 3: the core checks it against the sender.
    await crypto.prepare({ kind: 'replica', id: 3 }, received(accept(2, 5, digest)));
    expect(crypto.stats().cacheEntries).toBe(2 + 2); // the two good votes, the decision's two requests
    expect(runChecks(crypto, decisionChecks(forged))).toEqual([true, false, true]);
    expect(runChecks(crypto, requestChecks([unknownClient, tampered]))).toEqual([false, false]);
    expect(crypto.verifyReplica(3, acceptSigningPayload(0, 5, 0, digest), accept(2, 5, digest).signature)).toBe(false);
    expect(crypto.stats()).toMatchObject({ cacheHits: 2, cacheMisses: 3 });
  });

  it('resolves on hostile input (garbage batches, wrong lengths, unknown signers, unreadable messages)', async () => {
    const crypto = cryptoFor(0);
    const junk = [
      { type: MessageType.PROPOSE, view: 0, cid: 1, regency: 0, batch: utf8.encode('not msgpack at all') },
      { type: MessageType.ACCEPT, view: 0, cid: 1, regency: 0, digest, signature: new Uint8Array(3) },
      { type: MessageType.DECISION, view: 0, decision: { ...decision, batch: new Uint8Array([0xc1]), votes: [{ replica: 60, signature: new Uint8Array(64) }] } },
      { type: MessageType.SYNC, view: 0, regency: 1, cid: 0, collects: [signedCollect(1, 1, 0), signedCollect(1, 1, 0)], lastDecision: null, batch: new Uint8Array(0) },
    ] satisfies Message[];
    for (const message of junk) await crypto.prepare({ kind: 'replica', id: 1 }, received(message));
    await crypto.prepare({ kind: 'client', id: 'alice' }, received(accept(1, 1, digest)));
    await crypto.prepare({ kind: 'replica', id: 1 }, { type: MessageType.SYNC } as unknown as Message);
    await crypto.prepare({ kind: 'replica', id: 1 }, null as unknown as Message);
    // Only the one distinct valid collect of the SYNC went to the pool.
    expect(crypto.stats()).toMatchObject({ preparedItems: 1, cacheEntries: 1, prepareErrors: 2 });
  });

  it('on an overloaded pool, prepare() resolves and counts it, and the core still gets right answers', async () => {
    const small = new VerifyPool({ workers: 1, queuedItemsMax: 2 });
    try {
      const crypto = cryptoFor(0, { pool: small });
      const message = received({ type: MessageType.DECISION, view: 0, decision } satisfies Message);
      await crypto.prepare({ kind: 'replica', id: 1 }, message);
      expect(crypto.stats()).toMatchObject({ preparedItemsOverloaded: 5, cacheEntries: 0 });
      const checks = [...decisionChecks(decision), ...requestChecks(requests)];
      expect(runChecks(crypto, checks)).toEqual(checks.map(() => true));
      expect(crypto.stats()).toMatchObject({ cacheHits: 0, cacheMisses: 5 });
    } finally {
      await small.close();
    }
  });
});

describe('ProcessCrypto: the cache and the keys', () => {
  it('digest is SHA-256 and own signatures are known valid without a verification', () => {
    const crypto = cryptoFor(2, { pool: null });
    const bytes = utf8.encode('batch bytes');
    expect(Buffer.from(crypto.digest(bytes)).equals(sha256(bytes))).toBe(true);
    const payload = acceptSigningPayload(0, 9, 0, sha256(bytes));
    const signature = crypto.sign(payload);
    expect(cryptoFor(1, { pool: null }).verifyReplica(2, payload, signature)).toBe(true);
    expect(crypto.verifyReplica(2, payload, signature)).toBe(true);
    expect(crypto.verifyReplica(1, payload, signature)).toBe(false);
    expect(crypto.stats()).toMatchObject({ cacheHits: 1, cacheMisses: 1 });
  });

  it('stays within its entry bound, evicting the oldest first', () => {
    const crypto = cryptoFor(0, { pool: null, verifiedCacheEntriesMax: 8 });
    const signer = replicaSigners[1] as Signer;
    const signed = Array.from({ length: 20 }, (_, i) => {
      const payload = utf8.encode(`payload ${i}`);
      return { payload, signature: signer.sign(payload) };
    });
    for (const { payload, signature } of signed) {
      expect(crypto.verifyReplica(1, payload, signature)).toBe(true);
      expect(crypto.stats().cacheEntries).toBeLessThanOrEqual(8);
    }
    expect(crypto.stats()).toMatchObject({ cacheEntries: 8, cacheMisses: 20, cacheHits: 0 });
    const last = signed[19] as (typeof signed)[number];
    const first = signed[0] as (typeof signed)[number];
    expect(crypto.verifyReplica(1, last.payload, last.signature)).toBe(true);
    expect(crypto.verifyReplica(1, first.payload, first.signature)).toBe(true);
    expect(crypto.stats()).toMatchObject({ cacheHits: 1, cacheMisses: 21 });
  });

  it('leaves a message with fewer signatures than poolItemsMin to the core\'s thread, and pools larger ones', async () => {
    const crypto = cryptoFor(0, { poolItemsMin: 4 });
    const signer = cryptoFor(1);
    const digest = new Uint8Array(32).fill(7);
    const accept = {
      type: MessageType.ACCEPT,
      view: 0,
      cid: 3,
      regency: 0,
      digest,
      signature: signer.sign(acceptSigningPayload(0, 3, 0, digest)),
    } as const;
    expect(crypto.prepare({ kind: 'replica', id: 1 }, accept)).toBeUndefined();
    expect(crypto.stats()).toMatchObject({ preparedInline: 1, preparedItems: 0 });
    // The core still gets the right answer, on its own thread.
    expect(crypto.verifyReplica(1, acceptSigningPayload(0, 3, 0, digest), accept.signature)).toBe(true);
    expect(crypto.stats().cacheMisses).toBe(1);
  });

  it('a client that changed its key is not verified under the old one, even from the cache', () => {
    let aliceKey = (clientSigners.get('alice') as Signer).publicKeyRaw;
    const crypto = new ProcessCrypto({
      me: 0,
      privateKeyPem: replicaPems[0] as string,
      replicaPublicKeys,
      clientPublicKey: (id) => (id === 'alice' ? aliceKey : undefined),
    });
    const request = signedRequest('alice', 1, 'op');
    const payload = requestSigningPayload(request);
    expect(crypto.verifyClient('alice', payload, request.signature as Uint8Array)).toBe(true);
    aliceKey = (clientSigners.get('bob') as Signer).publicKeyRaw;
    expect(crypto.verifyClient('alice', payload, request.signature as Uint8Array)).toBe(false);
  });

  it('refuses a signing key that is not the one the view lists for this replica, and bad bounds', () => {
    expectCode(
      () => new ProcessCrypto({ me: 0, privateKeyPem: replicaPems[1] as string, replicaPublicKeys }),
      'BFT_ERR_SIGNING_KEY_INVALID',
    );
    expectCode(
      () => new ProcessCrypto({ me: 0, privateKeyPem: replicaPems[0] as string, replicaPublicKeys: new Map([[0, new Uint8Array(31)]]) }),
      'BFT_ERR_SIGNING_KEY_INVALID',
    );
    expectCode(() => cryptoFor(0, { verifiedCacheEntriesMax: 0 }), 'BFT_ERR_CONFIG_INVALID');
  });
});
