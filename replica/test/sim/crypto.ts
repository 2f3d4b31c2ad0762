// Simulated signatures: a keyed SHA-256 per replica. A Byzantine replica in the simulator only ever
// holds its own CoreCrypto, so it can no more forge another replica's signature than it could Ed25519's.

import { createHash } from 'node:crypto';
import type { CoreCrypto } from '../../src/core/crypto.ts';
import type { Bytes } from '../../src/protocol/messages.ts';
import type { Rng } from './prng.ts';

function keyedHash(secret: Bytes, payload: Bytes): Bytes {
  return createHash('sha256').update(secret).update(payload).digest();
}

function equalBytes(a: Bytes, b: Bytes): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

export class SimKeys {
  private readonly replicaSecrets = new Map<number, Bytes>();
  private readonly clientSecrets = new Map<string, Bytes>();
  private viewManager: Bytes | null = null;
  private readonly rng: Rng;

  constructor(rng: Rng) {
    this.rng = rng;
  }

  private replicaSecret(id: number): Bytes {
    let secret = this.replicaSecrets.get(id);
    if (secret === undefined) {
      secret = this.rng.bytes(32);
      this.replicaSecrets.set(id, secret);
    }
    return secret;
  }

  clientSecret(clientId: string): Bytes {
    let secret = this.clientSecrets.get(clientId);
    if (secret === undefined) {
      secret = this.rng.bytes(32);
      this.clientSecrets.set(clientId, secret);
    }
    return secret;
  }

  signClient(clientId: string, payload: Bytes): Bytes {
    return keyedHash(this.clientSecret(clientId), payload);
  }

  /** Drawn on first use, so that runs without reconfiguration draw the same keys as before it existed. */
  private viewManagerSecret(): Bytes {
    this.viewManager ??= this.rng.bytes(32);
    return this.viewManager;
  }

  signViewManager(payload: Bytes): Bytes {
    return keyedHash(this.viewManagerSecret(), payload);
  }

  /** The crypto one replica holds: its own signing key and everyone's verification. */
  cryptoFor(id: number): CoreCrypto {
    const own = this.replicaSecret(id);
    return {
      digest: (bytes) => createHash('sha256').update(bytes).digest(),
      sign: (payload) => keyedHash(own, payload),
      verifyReplica: (replica, payload, signature) =>
        equalBytes(keyedHash(this.replicaSecret(replica), payload), signature),
      verifyClient: (clientId, payload, signature) =>
        equalBytes(keyedHash(this.clientSecret(clientId), payload), signature),
      verifyViewManager: (payload, signature) => equalBytes(keyedHash(this.viewManagerSecret(), payload), signature),
    };
  }
}
