// A verification worker of VerifyPool (verify-pool.ts). Runs under Node's type stripping: erasable syntax only.
// Its only peer is the pool on the main thread, so its messages are trusted; the bytes inside them are not,
// and verifySignature never throws on them.

import { parentPort } from 'node:worker_threads';
import { limits } from '../constants.ts';
import { type Ed25519PublicKey, ed25519PublicKeyBytes, publicKeyFromRaw, verifySignature } from './ed25519.ts';
import type { VerifyCall, VerifyRequest, VerifyResponse } from './verify-pool.ts';

interface CachedKey {
  readonly raw: Buffer;
  readonly key: Ed25519PublicKey;
}

// Map order is insertion order: the first entry is the oldest, evicted first.
const keys = new Map<string, CachedKey>();

/** The KeyObject for these raw bytes, imported once per keyId while the bytes stay the same. */
function keyFor(keyId: string, raw: Buffer): Ed25519PublicKey | null {
  const cached = keys.get(keyId);
  // A keyId whose bytes changed (a client re-keyed) must not verify under the old key.
  if (cached !== undefined && cached.raw.equals(raw)) return cached.key;
  if (raw.length !== ed25519PublicKeyBytes) return null;
  let key: Ed25519PublicKey;
  try {
    key = publicKeyFromRaw(raw);
  } catch {
    return null;
  }
  keys.delete(keyId);
  if (keys.size >= limits.verifyWorkerKeysCachedMax) {
    const oldest = keys.keys().next();
    if (oldest.done !== true) keys.delete(oldest.value);
  }
  keys.set(keyId, { raw: Buffer.from(raw), key });
  return key;
}

function verifyAll(request: VerifyCall): Uint8Array<ArrayBuffer> {
  const data = Buffer.from(request.data.buffer, request.data.byteOffset, request.data.byteLength);
  const results = new Uint8Array(request.keyIds.length);
  let position = 0;
  for (let i = 0; i < request.keyIds.length; i++) {
    const keyBytes = request.lengths[3 * i] as number;
    const payloadBytes = request.lengths[3 * i + 1] as number;
    const signatureBytes = request.lengths[3 * i + 2] as number;
    const raw = data.subarray(position, position + keyBytes);
    const payload = data.subarray(position + keyBytes, position + keyBytes + payloadBytes);
    const signature = data.subarray(position + keyBytes + payloadBytes, position + keyBytes + payloadBytes + signatureBytes);
    position += keyBytes + payloadBytes + signatureBytes;
    const key = keyFor(request.keyIds[i] as string, raw);
    results[i] = key !== null && verifySignature(key, payload, signature) ? 1 : 0;
  }
  return results;
}

const port = parentPort;
if (port === null) throw new Error('verify-worker.ts runs only as a worker thread of VerifyPool');

port.on('message', (request: VerifyRequest) => {
  if (request.kind === 'crash-for-test') throw new Error('verification worker crashed on request (test hook)');
  const results = verifyAll(request);
  const response: VerifyResponse = { callId: request.callId, results };
  port.postMessage(response, [results.buffer]);
});
