import { generateKeyPairSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { Signer, generateSigningKeyPair, publicKeyFromRaw, rawFromPublicKey, verifySignature } from './ed25519.ts';
import { expectCode } from '../../test/helpers.ts';

const utf8 = new TextEncoder();

describe('Ed25519 keys and signatures (DESIGN §4)', () => {
  it('a signature verifies under the signer key, and the raw key survives an import/export round trip', () => {
    const pair = generateSigningKeyPair();
    expect(pair.publicKeyRaw.length).toBe(32);
    const signer = new Signer(pair.privateKeyPem);
    expect(Buffer.from(signer.publicKeyRaw).equals(pair.publicKeyRaw)).toBe(true);
    const publicKey = publicKeyFromRaw(pair.publicKeyRaw);
    expect(Buffer.from(rawFromPublicKey(publicKey)).equals(pair.publicKeyRaw)).toBe(true);

    const payload = utf8.encode('ACCEPT view 0 cid 7');
    const signature = signer.sign(payload);
    expect(signature.length).toBe(64);
    expect(verifySignature(publicKey, payload, signature)).toBe(true);
  });

  it('fails for a changed payload, a flipped signature bit, and another key', () => {
    const signer = new Signer(generateSigningKeyPair().privateKeyPem);
    const other = new Signer(generateSigningKeyPair().privateKeyPem);
    const payload = utf8.encode('payload');
    const signature = signer.sign(payload);
    const publicKey = publicKeyFromRaw(signer.publicKeyRaw);

    expect(verifySignature(publicKey, utf8.encode('payloaD'), signature)).toBe(false);
    const flipped = Uint8Array.from(signature);
    flipped[10] = (flipped[10] as number) ^ 1;
    expect(verifySignature(publicKey, payload, flipped)).toBe(false);
    expect(verifySignature(publicKeyFromRaw(other.publicKeyRaw), payload, signature)).toBe(false);
    expect(verifySignature(publicKey, payload, other.sign(payload))).toBe(false);
  });

  it('malformed signatures and keys of another type return false without throwing', () => {
    const signer = new Signer(generateSigningKeyPair().privateKeyPem);
    const publicKey = publicKeyFromRaw(signer.publicKeyRaw);
    const payload = utf8.encode('payload');
    const signature = signer.sign(payload);
    for (const length of [0, 1, 63, 65, 128]) {
      const wrong = new Uint8Array(length);
      wrong.set(signature.subarray(0, Math.min(length, 64)));
      expect(verifySignature(publicKey, payload, wrong)).toBe(false);
    }
    expect(verifySignature(publicKey, payload, new Uint8Array(64))).toBe(false);
    expect(verifySignature(publicKey, new Uint8Array(0), signature)).toBe(false);
    const ecKey = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey;
    expect(verifySignature(ecKey, payload, signature)).toBe(false);
    // 32 bytes that are no point on the curve import but never verify.
    expect(verifySignature(publicKeyFromRaw(new Uint8Array(32).fill(0xff)), payload, signature)).toBe(false);
  });

  it('refuses raw keys of the wrong length, non-Ed25519 keys and unreadable PEM with BFT_ERR_SIGNING_KEY_INVALID', () => {
    for (const length of [0, 31, 33, 64]) {
      expectCode(() => publicKeyFromRaw(new Uint8Array(length)), 'BFT_ERR_SIGNING_KEY_INVALID');
    }
    const ec = generateKeyPairSync('ec', {
      namedCurve: 'P-256',
      privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
      publicKeyEncoding: { type: 'spki', format: 'pem' },
    });
    expectCode(() => new Signer(ec.privateKey), 'BFT_ERR_SIGNING_KEY_INVALID');
    expectCode(() => new Signer('-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n'), 'BFT_ERR_SIGNING_KEY_INVALID');
    expectCode(() => rawFromPublicKey(generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey), 'BFT_ERR_SIGNING_KEY_INVALID');
  });
});
