import { afterEach, describe, expect, it } from 'vitest';
import { limits } from '../constants.ts';
import { BftError } from '../errors.ts';
import { Signer, generateSigningKeyPair } from './ed25519.ts';
import { type VerifyItem, VerifyPool } from './verify-pool.ts';

const utf8 = new TextEncoder();
const signers = Array.from({ length: 3 }, () => new Signer(generateSigningKeyPair().privateKeyPem));

function validItem(signerIndex: number, text: string): VerifyItem {
  const signer = signers[signerIndex] as Signer;
  const payload = utf8.encode(text);
  return { keyId: `r${signerIndex}`, publicKeyRaw: signer.publicKeyRaw, payload, signature: signer.sign(payload) };
}

/** Deterministic shuffle (a fixed LCG), so a failure reproduces. */
function shuffled<T>(values: readonly T[], seed: number): T[] {
  const out = [...values];
  let state = seed >>> 0;
  for (let i = out.length - 1; i > 0; i--) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    const j = state % (i + 1);
    [out[i], out[j]] = [out[j] as T, out[i] as T];
  }
  return out;
}

async function rejection(promise: Promise<unknown>): Promise<BftError> {
  try {
    await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(BftError);
    return error as BftError;
  }
  throw new Error('expected a rejection');
}

const pools: VerifyPool[] = [];
function pool(options: ConstructorParameters<typeof VerifyPool>[0]): VerifyPool {
  const created = new VerifyPool(options);
  pools.push(created);
  return created;
}

afterEach(async () => {
  await Promise.all(pools.splice(0).map((p) => p.close()));
});

describe('VerifyPool: Ed25519 verification on worker threads', () => {
  it('answers a shuffled mix of valid and invalid items correctly and in order, over concurrent calls', async () => {
    const verifier = pool({ workers: 2 });
    const cases: Array<{ item: VerifyItem; valid: boolean }> = [];
    for (let i = 0; i < 60; i++) {
      const item = validItem(i % 3, `payload ${i}`);
      switch (i % 6) {
        case 0:
          cases.push({ item: { ...item, payload: utf8.encode(`tampered ${i}`) }, valid: false });
          break;
        case 1: // another signer's key under this keyId: the cached key must not be reused blindly
          cases.push({ item: { ...item, publicKeyRaw: (signers[(i + 1) % 3] as Signer).publicKeyRaw }, valid: false });
          break;
        case 2:
          cases.push({ item: { ...item, signature: item.signature.subarray(0, 63) }, valid: false });
          break;
        case 3:
          cases.push({ item: { ...item, publicKeyRaw: new Uint8Array(31) }, valid: false });
          break;
        default:
          cases.push({ item, valid: true });
      }
    }
    const mixed = shuffled(cases, 42);
    const calls = [mixed.slice(0, 1), mixed.slice(1, 17), mixed.slice(17)];
    const answers = await Promise.all(calls.map((call) => verifier.verify(call.map((c) => c.item))));
    expect(answers).toEqual(calls.map((call) => call.map((c) => c.valid)));
    expect(await verifier.verify([])).toEqual([]);
    expect(verifier.stats()).toMatchObject({ itemsVerified: 60, queuedItems: 0, callsInFlight: 0 });
  });

  it('refuses at once with BFT_ERR_OVERLOADED beyond its queue bound, and accepts again once drained', async () => {
    const verifier = pool({ workers: 1, queuedItemsMax: 10 });
    const first = verifier.verify(Array.from({ length: 8 }, (_, i) => validItem(0, `a${i}`)));
    const refused = await rejection(verifier.verify(Array.from({ length: 3 }, (_, i) => validItem(1, `b${i}`))));
    expect(refused.code).toBe('BFT_ERR_OVERLOADED');
    expect(verifier.stats()).toMatchObject({ queuedItems: 8, callsOverloaded: 1 });
    expect(await first).toEqual(Array.from({ length: 8 }, () => true));
    expect(await verifier.verify(Array.from({ length: 10 }, (_, i) => validItem(2, `c${i}`)))).toEqual(
      Array.from({ length: 10 }, () => true),
    );
  });

  it('replaces a worker that crashed; its callers get BFT_ERR_WORKER_FAILED and later calls succeed', async () => {
    const verifier = pool({ workers: 1 });
    await verifier.whenWorkersOnline();
    verifier.crashWorkerForTest(0);
    // Queued behind the crash, so the worker dies with this call in flight.
    const failed = await rejection(verifier.verify([validItem(0, 'x'), validItem(1, 'y')]));
    expect(failed.code).toBe('BFT_ERR_WORKER_FAILED');
    expect(failed.cause).toBeInstanceOf(Error);
    expect(verifier.stats()).toMatchObject({ workerDeaths: 1, workersReplaced: 1, callsFailed: 1, queuedItems: 0 });
    expect(await verifier.verify([validItem(0, 'x'), { ...validItem(1, 'y'), payload: utf8.encode('z') }])).toEqual([
      true,
      false,
    ]);
    expect(verifier.stats().workers).toBe(1);
  });

  it('close() rejects calls in flight with BFT_ERR_CLOSED and refuses new ones', async () => {
    const verifier = pool({ workers: 2 });
    const inFlight = rejection(verifier.verify(Array.from({ length: 64 }, (_, i) => validItem(0, `p${i}`))));
    await verifier.close();
    expect((await inFlight).code).toBe('BFT_ERR_CLOSED');
    expect((await rejection(verifier.verify([validItem(0, 'q')]))).code).toBe('BFT_ERR_CLOSED');
    expect(verifier.stats().workers).toBe(0);
  });

  it('refuses worker counts and queue bounds outside its limits with BFT_ERR_CONFIG_INVALID', () => {
    for (const options of [{ workers: 0 }, { workers: limits.verifyWorkersMax + 1 }, { queuedItemsMax: 0 }, { queuedItemsMax: limits.verifyQueuedItemsMax + 1 }, { workers: 1.5 }]) {
      let thrown: unknown;
      try {
        pool(options);
      } catch (error) {
        thrown = error;
      }
      expect((thrown as BftError).code).toBe('BFT_ERR_CONFIG_INVALID');
    }
  });
});
