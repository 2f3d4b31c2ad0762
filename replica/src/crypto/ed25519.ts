// Ed25519 keys, signing and verification (DESIGN §4). Keys live as KeyObjects: importing a raw key costs
// several times the verification itself, so callers import once and keep the object.

import { type KeyObject, createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify } from 'node:crypto';
import { BftError } from '../errors.ts';

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
export function publicKeyFromRaw(raw: Uint8Array): KeyObject {
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
    return createPublicKey({ key: Buffer.from(der.buffer), format: 'der', type: 'spki' });
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
  }

  sign(payload: Uint8Array): Uint8Array {
    // Ed25519 hashes internally: the algorithm argument must be null.
    return sign(null, payload, this.#privateKey);
  }
}

/**
 * Whether `signature` is `publicKey`'s Ed25519 signature on `payload`. Never throws: a signature or key
 * of the wrong size or type is simply not valid.
 */
export function verifySignature(publicKey: KeyObject, payload: Uint8Array, signature: Uint8Array): boolean {
  if (signature.length !== ed25519SignatureBytes || publicKey.asymmetricKeyType !== 'ed25519') return false;
  try {
    return verify(null, payload, publicKey, signature);
  } catch {
    return false;
  }
}
