// Ed25519 keys, signing and verification (DESIGN §4). Keys are imported once and kept: importing a raw key
// into OpenSSL costs several times the verification itself.
//
// Signing and verifying go through libsodium (sodium-native) when it loads: on this project's machines it
// verifies in ~42 µs and signs in ~16 µs, against OpenSSL's ~96 µs and ~33 µs, and a replica verifies
// every ACCEPT and, with signed requests, every request. Without it (a platform with no prebuilt addon)
// OpenSSL does the work. Both follow RFC 8032 on every signature an honest signer makes; they differ only
// on crafted ones (libsodium also refuses a small-order R or key), so the replicas of one cluster should
// run on the same platform: a difference could cost liveness, never safety, since no decision is ever
// re-verified by the replicas that took it.

import { type KeyObject, createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify } from 'node:crypto';
import { createRequire } from 'node:module';
import { BftError } from '../errors.ts';

/** The part of sodium-native this module uses. */
interface SodiumBindings {
  crypto_sign_seed_keypair(publicKey: Buffer, secretKey: Buffer, seed: Buffer): void;
  crypto_sign_detached(signature: Buffer, message: Uint8Array, secretKey: Buffer): void;
  crypto_sign_verify_detached(signature: Uint8Array, message: Uint8Array, publicKey: Uint8Array): boolean;
}

function loadSodium(): SodiumBindings | null {
  if (process.env.BFTKUBE_ED25519_BACKEND === 'openssl') return null;
  try {
    return createRequire(import.meta.url)('sodium-native') as SodiumBindings;
  } catch {
    return null;
  }
}

const sodium = loadSodium();

/** Which library signs and verifies in this process; shown in /status. */
export const ed25519Backend: 'libsodium' | 'openssl' = sodium === null ? 'openssl' : 'libsodium';

/** An imported Ed25519 public key: its raw bytes for libsodium, its KeyObject for OpenSSL. */
export interface Ed25519PublicKey {
  readonly raw: Buffer;
  readonly keyObject: KeyObject;
}

export const ed25519PublicKeyBytes = 32;
export const ed25519SignatureBytes = 64;

/** DER SubjectPublicKeyInfo header for an Ed25519 key (RFC 8410): the raw 32 bytes follow it. */
const spkiPrefix = Uint8Array.from([0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00]);

export function generateSigningKeyPair(): { publicKeyRaw: Uint8Array; privateKeyPem: string } {
  const { publicKey, privateKey } = generateKeyPairSync('ed25519', {
    publicKeyEncoding: { type: 'spki', format: 'der' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });
  return { publicKeyRaw: new Uint8Array(publicKey.subarray(spkiPrefix.length)), privateKeyPem: privateKey };
}

/** Imports a raw 32-byte Ed25519 public key. Throws BFT_ERR_SIGNING_KEY_INVALID on any other length. */
export function publicKeyFromRaw(raw: Uint8Array): Ed25519PublicKey {
  if (raw.length !== ed25519PublicKeyBytes) {
    throw new BftError(
      'BFT_ERR_SIGNING_KEY_INVALID',
      `an Ed25519 public key has ${ed25519PublicKeyBytes} bytes, got ${raw.length}; check the configured key`,
    );
  }
  const der = new Uint8Array(spkiPrefix.length + ed25519PublicKeyBytes);
  der.set(spkiPrefix, 0);
  der.set(raw, spkiPrefix.length);
  try {
    const keyObject = createPublicKey({ key: Buffer.from(der.buffer), format: 'der', type: 'spki' });
    return { raw: Buffer.from(der.subarray(spkiPrefix.length)), keyObject };
  } catch (error) {
    throw new BftError('BFT_ERR_SIGNING_KEY_INVALID', 'the Ed25519 public key cannot be imported', { cause: error });
  }
}

/** The raw 32 bytes of an Ed25519 public key. Throws BFT_ERR_SIGNING_KEY_INVALID for any other key. */
export function rawFromPublicKey(key: KeyObject): Uint8Array {
  if (key.type !== 'public' || key.asymmetricKeyType !== 'ed25519') {
    throw new BftError(
      'BFT_ERR_SIGNING_KEY_INVALID',
      `expected an Ed25519 public key, got a ${key.type} ${key.asymmetricKeyType ?? 'secret'} key`,
    );
  }
  const der = key.export({ type: 'spki', format: 'der' });
  return new Uint8Array(der.subarray(spkiPrefix.length));
}

/** Signs with one private key, imported once. */
export class Signer {
  readonly publicKeyRaw: Uint8Array;
  readonly #privateKey: KeyObject;
  /** libsodium's 64-byte secret key (seed, then public key), or null when OpenSSL signs. */
  readonly #sodiumSecretKey: Buffer | null;

  constructor(privateKeyPem: string) {
    let privateKey: KeyObject;
    try {
      privateKey = createPrivateKey({ key: privateKeyPem, format: 'pem' });
    } catch (error) {
      throw new BftError(
        'BFT_ERR_SIGNING_KEY_INVALID',
        'the signing key is not a readable PEM private key; provide a PKCS#8 Ed25519 key',
        { cause: error },
      );
    }
    if (privateKey.asymmetricKeyType !== 'ed25519') {
      throw new BftError(
        'BFT_ERR_SIGNING_KEY_INVALID',
        `the signing key is ${privateKey.asymmetricKeyType ?? 'of unknown type'}, not Ed25519; provide an Ed25519 key`,
      );
    }
    this.#privateKey = privateKey;
    this.publicKeyRaw = rawFromPublicKey(createPublicKey(privateKey));
    this.#sodiumSecretKey = null;
    if (sodium !== null) {
      const seed = Buffer.from(privateKey.export({ format: 'jwk' }).d ?? '', 'base64url');
      const publicKey = Buffer.alloc(ed25519PublicKeyBytes);
      const secretKey = Buffer.alloc(64);
      sodium.crypto_sign_seed_keypair(publicKey, secretKey, seed);
      seed.fill(0);
      // Both libraries derive the key from the same seed; a mismatch would be a broken build, not bad input.
      if (!publicKey.equals(this.publicKeyRaw)) throw new BftError('BFT_ERR_SIGNING_KEY_INVALID', 'libsodium and OpenSSL derive different public keys from this signing key; report this as a bug');
      this.#sodiumSecretKey = secretKey;
    }
  }

  sign(payload: Uint8Array): Uint8Array {
    if (this.#sodiumSecretKey !== null && sodium !== null) {
      const signature = Buffer.alloc(ed25519SignatureBytes);
      sodium.crypto_sign_detached(signature, payload, this.#sodiumSecretKey);
      return signature;
    }
    // Ed25519 hashes internally: the algorithm argument must be null.
    return sign(null, payload, this.#privateKey);
  }
}

/**
 * Whether `signature` is `publicKey`'s Ed25519 signature on `payload`. Never throws: a signature or key
 * of the wrong size or type is simply not valid.
 */
export function verifySignature(publicKey: Ed25519PublicKey, payload: Uint8Array, signature: Uint8Array): boolean {
  if (signature.length !== ed25519SignatureBytes || publicKey.raw.length !== ed25519PublicKeyBytes) return false;
  try {
    if (sodium !== null) return sodium.crypto_sign_verify_detached(signature, payload, publicKey.raw);
    return verify(null, payload, publicKey.keyObject, signature);
  } catch {
    return false;
  }
}
