import { X509Certificate, createPrivateKey, createPublicKey } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateSigningKeyPair } from '../../../replica/src/crypto/ed25519.ts';
import { loadPublicKeys } from '../../../replica/src/server/keys.ts';
import { replicaDnsNames } from '../specs/names.ts';
import { type SecretData, caOf, hashOf, keyFiles, newClientKeys, newClusterCa, newReplicaKeys, newViewManagerKey, publicKeysFile } from './keys.ts';

const clusterName = 'ledger';
const namespace = 'payments';

let directory = '';
let ca: SecretData;
let otherCa: SecretData;
let replica: SecretData;

beforeAll(async () => {
  directory = await mkdtemp(join(tmpdir(), 'bftkube-keys-'));
  ca = await newClusterCa(clusterName);
  otherCa = await newClusterCa(clusterName);
  replica = await newReplicaKeys(caOf(ca), clusterName, namespace, 2);
});

afterAll(async () => {
  await rm(directory, { recursive: true, force: true });
});

function certificate(data: SecretData, file: string = keyFiles.tlsCert): X509Certificate {
  return new X509Certificate(data[file]!);
}

/** The raw 32-byte Ed25519 public key of a PKCS#8 private key, base64. */
function rawPublicKeyOf(privateKeyPem: string): string {
  return Buffer.from(createPublicKey(privateKeyPem).export({ format: 'jwk' }).x!, 'base64url').toString('base64');
}

describe('newClusterCa', () => {
  it('makes a CA certificate with its private key', () => {
    const caCertificate = certificate(ca, keyFiles.caCert);
    expect(caCertificate.ca).toBe(true);
    expect(caCertificate.checkPrivateKey(createPrivateKey(ca[keyFiles.caKey]!))).toBe(true);
  });
});

describe('newReplicaKeys', () => {
  it('issues a certificate whose SAN holds exactly the replica’s DNS names', () => {
    const names = certificate(replica).subjectAltName?.split(', ');
    expect(names).toEqual(replicaDnsNames(clusterName, namespace, 2).map((name) => `DNS:${name}`));
  });

  it('issues a certificate named replica-<id> that chains to the cluster CA and to no other', () => {
    const leaf = certificate(replica);
    const caCertificate = certificate(ca, keyFiles.caCert);
    expect(leaf.subject).toContain('CN=replica-2');
    expect(leaf.ca).toBe(false);
    expect(leaf.checkIssued(caCertificate)).toBe(true);
    expect(leaf.verify(caCertificate.publicKey)).toBe(true);
    expect(leaf.verify(certificate(otherCa, keyFiles.caCert).publicKey)).toBe(false);
  });

  it('issues a certificate valid now', () => {
    const leaf = certificate(replica);
    expect(new Date(leaf.validFrom).getTime()).toBeLessThanOrEqual(Date.now());
    expect(new Date(leaf.validTo).getTime()).toBeGreaterThan(Date.now());
  });

  it('stores the CA certificate (not its key), the certificate’s own private key, and a signing key with its raw public key', () => {
    expect(replica[keyFiles.caCert]).toBe(ca[keyFiles.caCert]);
    expect(replica).not.toHaveProperty(keyFiles.caKey);
    expect(certificate(replica).checkPrivateKey(createPrivateKey(replica[keyFiles.tlsKey]!))).toBe(true);
    expect(replica[keyFiles.signingPublic]).toBe(rawPublicKeyOf(replica[keyFiles.signingKey]!));
  });

  it('gives each replica its own TLS and signing keys', async () => {
    const another = await newReplicaKeys(caOf(ca), clusterName, namespace, 3);
    expect(another[keyFiles.tlsKey]).not.toBe(replica[keyFiles.tlsKey]);
    expect(another[keyFiles.signingPublic]).not.toBe(replica[keyFiles.signingPublic]);
  });
});

describe('newClientKeys and newViewManagerKey', () => {
  it('issue a client certificate client-<id>, chained to the CA, with the client id and a signing key', async () => {
    const client = await newClientKeys(caOf(ca), clusterName, 'app');
    const leaf = certificate(client);
    expect(leaf.subject).toContain('CN=client-app');
    expect(leaf.verify(certificate(ca, keyFiles.caCert).publicKey)).toBe(true);
    expect(leaf.checkPrivateKey(createPrivateKey(client[keyFiles.tlsKey]!))).toBe(true);
    expect(client[keyFiles.clientId]).toBe('app');
    expect(client[keyFiles.signingPublic]).toBe(rawPublicKeyOf(client[keyFiles.signingKey]!));
  });

  it('make a View Manager signing key whose public half matches its private key', () => {
    const viewManager = newViewManagerKey();
    expect(viewManager[keyFiles.signingPublic]).toBe(rawPublicKeyOf(viewManager[keyFiles.signingKey]!));
  });
});

describe('publicKeysFile', () => {
  const keys = () => Buffer.from(generateSigningKeyPair().publicKeyRaw).toString('base64');
  const replicas = new Map([0, 2, 10].map((id) => [id, keys()]));
  const clients = new Map([
    ['app', keys()],
    ['admin', keys()],
  ]);
  const viewManager = keys();

  it('writes what the replica’s public-keys loader reads back: every replica, client and the View Manager', async () => {
    await mkdir(join(directory, 'signing'), { recursive: true });
    await writeFile(join(directory, 'signing', 'public-keys.json'), publicKeysFile(replicas, clients, viewManager));
    const loaded = await loadPublicKeys(directory);
    const base64 = (key: Uint8Array | undefined) => (key === undefined ? undefined : Buffer.from(key).toString('base64'));
    expect(new Map([...loaded.replicaPublicKeys].map(([id, key]) => [id, base64(key)]))).toEqual(replicas);
    expect(new Map([...loaded.clientPublicKeys].map(([id, key]) => [id, base64(key)]))).toEqual(clients);
    expect(base64(loaded.viewManagerPublicKey)).toBe(viewManager);
  });

  it('is the same text whatever order the maps were filled in, so that it rolls no pod by itself', () => {
    const reversed = <K>(map: ReadonlyMap<K, string>) => new Map([...map].reverse());
    expect(publicKeysFile(reversed(replicas), reversed(clients), viewManager)).toBe(publicKeysFile(replicas, clients, viewManager));
  });
});

describe('hashOf', () => {
  const parts = ['{"replicaId":1}', '{"replicas":{}}', '-----BEGIN CERTIFICATE-----'];

  it('is stable: the same parts give the same 16 hex digits', () => {
    expect(hashOf(...parts)).toMatch(/^[0-9a-f]{16}$/);
    expect(hashOf(...parts)).toBe(hashOf(...[...parts]));
  });

  it('changes when any one part changes', () => {
    const hash = hashOf(...parts);
    for (let i = 0; i < parts.length; i++) {
      const changed = parts.map((part, j) => (j === i ? `${part} ` : part));
      expect(hashOf(...changed), `part ${i}`).not.toBe(hash);
    }
  });

  it('tells parts apart: moving text across a boundary or adding an empty part changes it', () => {
    expect(hashOf('ab', 'c')).not.toBe(hashOf('a', 'bc'));
    expect(hashOf('a')).not.toBe(hashOf('a', ''));
    expect(hashOf('a', 'b')).not.toBe(hashOf('b', 'a'));
  });
});
