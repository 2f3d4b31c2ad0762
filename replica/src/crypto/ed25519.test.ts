import { createPrivateKey, generateKeyPairSync, randomBytes, sign, verify } from 'node:crypto';
import { describe, expect, it, vi } from 'vitest';
import { Signer, ed25519Backend, generateSigningKeyPair, publicKeyFromRaw, rawFromPublicKey, verifySignature } from './ed25519.ts';
import { expectCode } from '../../test/helpers.ts';

const utf8 = new TextEncoder();

describe('Ed25519 keys and signatures (DESIGN §4)', () => {
  it('a signature verifies under the signer key, and the raw key survives an import/export round trip', () => {
    const pair = generateSigningKeyPair();
    expect(pair.publicKeyRaw.length).toBe(32);
    const signer = new Signer(pair.privateKeyPem);
    expect(Buffer.from(signer.publicKeyRaw).equals(pair.publicKeyRaw)).toBe(true);
    const publicKey = publicKeyFromRaw(pair.publicKeyRaw);
    expect(Buffer.from(rawFromPublicKey(publicKey.keyObject)).equals(pair.publicKeyRaw)).toBe(true);

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

  it('signs and verifies with libsodium on this platform, and OpenSSL agrees on every signature either makes', () => {
    // The fast path must really be the one in use: a silent fallback would only show as slower benchmarks.
    expect(ed25519Backend).toBe('libsodium');
    for (let round = 0; round < 20; round++) {
      const pair = generateSigningKeyPair();
      const signer = new Signer(pair.privateKeyPem);
      const publicKey = publicKeyFromRaw(pair.publicKeyRaw);
      const payload = randomBytes(round * 13);
      const ours = signer.sign(payload);
      // Ed25519 is deterministic: both libraries must produce the very same bytes.
      expect(Buffer.from(ours).equals(sign(null, payload, createPrivateKey(pair.privateKeyPem)))).toBe(true);
      expect(verify(null, payload, publicKey.keyObject, ours)).toBe(true);
      const tampered = Uint8Array.from(ours);
      tampered[round % 64] = (tampered[round % 64] as number) ^ (1 << round % 8);
      expect(verifySignature(publicKey, payload, tampered)).toBe(false);
      expect(verify(null, payload, publicKey.keyObject, tampered)).toBe(false);
    }
  });

  it('falls back to OpenSSL when told to, with the same answers', async () => {
    vi.stubEnv('BFTKUBE_ED25519_BACKEND', 'openssl');
    vi.resetModules();
    try {
      const openssl = await import('./ed25519.ts');
      expect(openssl.ed25519Backend).toBe('openssl');
      const pair = openssl.generateSigningKeyPair();
      const payload = utf8.encode('fallback');
      const signature = new openssl.Signer(pair.privateKeyPem).sign(payload);
      expect(Buffer.from(signature).equals(new Signer(pair.privateKeyPem).sign(payload))).toBe(true);
      expect(openssl.verifySignature(openssl.publicKeyFromRaw(pair.publicKeyRaw), payload, signature)).toBe(true);
      expect(openssl.verifySignature(openssl.publicKeyFromRaw(pair.publicKeyRaw), utf8.encode('other'), signature)).toBe(false);
    } finally {
      vi.unstubAllEnvs();
      vi.resetModules();
    }
  });
});
