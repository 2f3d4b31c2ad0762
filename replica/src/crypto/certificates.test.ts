import { X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { PeerCertificate } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type CertificateAndKey,
  createClusterCa,
  issueClientCertificate,
  issueReplicaCertificate,
  peerIdentity,
  readTlsMaterial,
  writeLocalKeyDirectory,
} from './certificates.ts';

const serverAuth = '1.3.6.1.5.5.7.3.1';
const clientAuth = '1.3.6.1.5.5.7.3.2';
let ca: CertificateAndKey;

beforeAll(async () => {
  ca = await createClusterCa({ clusterName: 'alpha', validityDays: 30 });
});

describe('createClusterCa', () => {
  it('makes a self-signed P-256 CA for the cluster that may sign leaves only', () => {
    const certificate = new X509Certificate(ca.certPem);
    expect(certificate.ca).toBe(true);
    expect(certificate.subject).toContain('O=alpha');
    expect(certificate.verify(certificate.publicKey)).toBe(true);
    expect(certificate.publicKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    expect(ca.keyPem).toContain('BEGIN PRIVATE KEY');
  });

  it('refuses a cluster name that cannot be an organisation, with a stable code', async () => {
    await expect(createClusterCa({ clusterName: 'a,b=c', validityDays: 1 })).rejects.toMatchObject({ code: 'BFT_ERR_KEYS_INVALID' });
    await expect(createClusterCa({ clusterName: 'alpha', validityDays: 0 })).rejects.toMatchObject({ code: 'BFT_ERR_KEYS_INVALID' });
  });
});

describe('issueReplicaCertificate', () => {
  it('names replica-<id> of the cluster, with its DNS names and addresses, for server and client auth', async () => {
    const leaf = await issueReplicaCertificate(ca, {
      clusterName: 'alpha',
      replicaId: 3,
      dnsNames: ['alpha-3.alpha.default.svc', 'localhost'],
      ipAddresses: ['127.0.0.4'],
      validityDays: 30,
    });
    const certificate = new X509Certificate(leaf.certPem);
    const authority = new X509Certificate(ca.certPem);
    expect(certificate.subject.split('\n').sort()).toEqual(['CN=replica-3', 'O=alpha']);
    expect(certificate.checkIssued(authority)).toBe(true);
    expect(certificate.verify(authority.publicKey)).toBe(true);
    expect(certificate.ca).toBe(false);
    expect(certificate.subjectAltName).toBe('DNS:alpha-3.alpha.default.svc, DNS:localhost, IP Address:127.0.0.4');
    expect([...(certificate.keyUsage ?? [])].sort()).toEqual([serverAuth, clientAuth]);
    expect(certificate.checkHost('alpha-3.alpha.default.svc')).toBe('alpha-3.alpha.default.svc');
    expect(certificate.checkIP('127.0.0.4')).toBe('127.0.0.4');
    expect(certificate.checkIP('127.0.0.5')).toBeUndefined();
  });

  it('refuses a negative or fractional id, a non-address, and a certificate with no name to verify', async () => {
    const base = { clusterName: 'alpha', dnsNames: ['localhost'], ipAddresses: [], validityDays: 1 };
    for (const replicaId of [-1, 1.5, Number.NaN]) {
      await expect(issueReplicaCertificate(ca, { ...base, replicaId })).rejects.toMatchObject({ code: 'BFT_ERR_KEYS_INVALID' });
    }
    await expect(issueReplicaCertificate(ca, { ...base, replicaId: 0, ipAddresses: ['localhost'] })).rejects.toMatchObject({
      code: 'BFT_ERR_KEYS_INVALID',
    });
    await expect(issueReplicaCertificate(ca, { ...base, replicaId: 0, dnsNames: ['bad name'] })).rejects.toMatchObject({
      code: 'BFT_ERR_KEYS_INVALID',
    });
    await expect(issueReplicaCertificate(ca, { ...base, replicaId: 0, dnsNames: [] })).rejects.toMatchObject({
      code: 'BFT_ERR_KEYS_INVALID',
    });
  });
});

describe('issueClientCertificate', () => {
  it('names client-<id> for client auth only', async () => {
    const leaf = await issueClientCertificate(ca, { clusterName: 'alpha', clientId: 'bench.client_7-a', validityDays: 30 });
    const certificate = new X509Certificate(leaf.certPem);
    expect(certificate.subject.split('\n').sort()).toEqual(['CN=client-bench.client_7-a', 'O=alpha']);
    expect(certificate.keyUsage).toEqual([clientAuth]);
    expect(certificate.verify(new X509Certificate(ca.certPem).publicKey)).toBe(true);
  });

  it.each(['', 'a'.repeat(65), 'has space', 'slash/inside', 'ünïcode', 'comma,'])('refuses the client id %j', async (clientId) => {
    await expect(issueClientCertificate(ca, { clusterName: 'alpha', clientId, validityDays: 1 })).rejects.toMatchObject({
      code: 'BFT_ERR_KEYS_INVALID',
    });
  });
});

describe('peerIdentity', () => {
  const withSubject = (subject: unknown): PeerCertificate => ({ subject }) as unknown as PeerCertificate;

  it.each([
    ['replica-0', { kind: 'replica', id: 0 }],
    ['replica-17', { kind: 'replica', id: 17 }],
    ['client-alice', { kind: 'client', id: 'alice' }],
    ['client-a.b_c-d', { kind: 'client', id: 'a.b_c-d' }],
  ])('reads %s', (commonName, identity) => {
    expect(peerIdentity(withSubject({ CN: commonName, O: 'alpha' }))).toEqual(identity);
  });

  it.each([
    'replica-', 'replica-01', 'replica--1', 'replica-1.5', 'replica-1 ', ' replica-1', 'replica-0x1', 'replica-99999999999',
    'Replica-1', 'client-', 'client-a b', `client-${'x'.repeat(65)}`, 'client-a/../b', 'admin', '',
  ])('refuses the common name %j', (commonName) => {
    expect(peerIdentity(withSubject({ CN: commonName }))).toBeNull();
  });

  it('refuses a missing certificate, a subject without CN, and a subject with two CNs', () => {
    expect(peerIdentity({} as PeerCertificate)).toBeNull();
    expect(peerIdentity(null)).toBeNull();
    expect(peerIdentity(withSubject({ O: 'alpha' }))).toBeNull();
    expect(peerIdentity(withSubject({ CN: ['replica-1', 'replica-2'] }))).toBeNull();
  });
});

describe('writeLocalKeyDirectory and readTlsMaterial', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'bftkube-keys-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('writes the CA and every leaf with private keys readable by the owner only', async () => {
    await writeLocalKeyDirectory({
      dir,
      clusterName: 'local',
      replicas: [0, 1].map((id) => ({ id, dnsNames: ['localhost'], ipAddresses: [`127.0.0.${id + 1}`] })),
      clients: ['alice'],
    });
    for (const name of ['ca', 'replica-0', 'replica-1', 'client-alice']) {
      expect((await stat(join(dir, `${name}.key`))).mode & 0o777).toBe(0o600);
      expect((await stat(join(dir, `${name}.crt`))).isFile()).toBe(true);
    }
    const material = await readTlsMaterial(dir, 'replica-1');
    const certificate = new X509Certificate(material.certPem);
    expect(certificate.subject).toContain('CN=replica-1');
    expect(certificate.verify(new X509Certificate(material.caPem).publicKey)).toBe(true);
    expect(material.keyPem).toContain('BEGIN PRIVATE KEY');
  });

  it('keeps the existing CA when run again, so that earlier certificates stay valid', async () => {
    const caBefore = await readFile(join(dir, 'ca.crt'), 'utf8');
    await writeLocalKeyDirectory({ dir, clusterName: 'local', replicas: [], clients: ['bob'] });
    expect(await readFile(join(dir, 'ca.crt'), 'utf8')).toBe(caBefore);
    const bob = await readTlsMaterial(dir, 'client-bob');
    expect(new X509Certificate(bob.certPem).verify(new X509Certificate(caBefore).publicKey)).toBe(true);
  });

  it('refuses to mix clusters in one directory', async () => {
    await expect(writeLocalKeyDirectory({ dir, clusterName: 'other', replicas: [], clients: ['carol'] })).rejects.toMatchObject({
      code: 'BFT_ERR_KEYS_INVALID',
    });
  });

  it('reads only replica-<id> or client-<id> names, and says how to create missing keys', async () => {
    await expect(readTlsMaterial(dir, '../ca')).rejects.toMatchObject({ code: 'BFT_ERR_KEYS_INVALID' });
    await expect(readTlsMaterial(dir, 'ca')).rejects.toMatchObject({ code: 'BFT_ERR_KEYS_INVALID' });
    await expect(readTlsMaterial(dir, 'replica-9')).rejects.toThrow(/bftkube keys/);
  });
});
