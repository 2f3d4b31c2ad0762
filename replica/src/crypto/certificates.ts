// The cluster's X.509 material: one ECDSA P-256 CA per cluster, a leaf per replica (`replica-<id>`,
// server and client auth, SAN with its DNS names and addresses) and per client (`client-<id>`, client
// auth only). The operator issues the same shapes in pods; locally `bftkube keys` calls this module.

import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { webcrypto } from 'node:crypto';
import { chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { limits } from '../constants.ts';
import { BftError } from '../errors.ts';
import {
  clientCommonNameOf,
  identityFromCommonName,
  isValidClientId,
  isValidReplicaId,
  replicaCommonNameOf,
} from '../transport/identity.ts';

export { peerIdentity } from '../transport/identity.ts';
export type { PeerIdentity } from '../transport/identity.ts';

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;

// Node's webcrypto, not whatever global a test environment installs; the library types it as the DOM's Crypto.
x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

export interface CertificateAndKey {
  readonly certPem: string;
  readonly keyPem: string;
}

export interface TlsMaterial {
  readonly caPem: string;
  readonly certPem: string;
  readonly keyPem: string;
}

const keyAlgorithm = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const signingAlgorithm = { name: 'ECDSA', hash: 'SHA-256' } as const;
const clusterNamePattern = new RegExp(`^[A-Za-z0-9._-]{1,${limits.clusterNameLengthMax}}$`);
// RFC 1123 labels; a leading '*.' is not offered: every replica has its own name.
const dnsNamePattern = /^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;
// Certificates start a little in the past so that a peer whose clock is slightly behind accepts them.
const clockSkewAllowanceMs = 5 * 60 * 1000;
const dayMs = 24 * 60 * 60 * 1000;

function invalid(message: string, cause?: unknown): BftError {
  return new BftError('BFT_ERR_KEYS_INVALID', message, cause === undefined ? undefined : { cause });
}

function checkClusterName(clusterName: string): void {
  if (!clusterNamePattern.test(clusterName)) {
    throw invalid(
      `cluster name ${JSON.stringify(clusterName)} is not allowed: use 1 to ${limits.clusterNameLengthMax} characters of A-Z, a-z, 0-9, '.', '_' or '-'`,
    );
  }
}

function checkValidityDays(validityDays: number): void {
  if (!Number.isInteger(validityDays) || validityDays < 1 || validityDays > limits.certificateValidityDaysMax) {
    throw invalid(`validityDays must be an integer from 1 to ${limits.certificateValidityDaysMax}, got ${validityDays}`);
  }
}

function validityPeriod(validityDays: number): { notBefore: Date; notAfter: Date } {
  const now = Date.now();
  return { notBefore: new Date(now - clockSkewAllowanceMs), notAfter: new Date(now + validityDays * dayMs) };
}

async function generateKeys(): Promise<CryptoKeyPair> {
  return (await webcrypto.subtle.generateKey(keyAlgorithm, true, ['sign', 'verify'])) as CryptoKeyPair;
}

async function privateKeyPem(key: CryptoKey): Promise<string> {
  const pkcs8 = await webcrypto.subtle.exportKey('pkcs8', key);
  return x509.PemConverter.encode(pkcs8, 'PRIVATE KEY');
}

function subjectName(commonName: string, clusterName: string): x509.JsonName {
  return [{ CN: [commonName] }, { O: [clusterName] }];
}

export async function createClusterCa(options: { clusterName: string; validityDays: number }): Promise<CertificateAndKey> {
  checkClusterName(options.clusterName);
  checkValidityDays(options.validityDays);
  const keys = await generateKeys();
  const certificate = await x509.X509CertificateGenerator.createSelfSigned({
    name: subjectName(`${options.clusterName} CA`, options.clusterName),
    keys,
    signingAlgorithm,
    ...validityPeriod(options.validityDays),
    extensions: [
      // pathLength 0: the CA signs leaves only, never another CA.
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { certPem: certificate.toString('pem'), keyPem: await privateKeyPem(keys.privateKey) };
}

interface LoadedCa {
  readonly certificate: x509.X509Certificate;
  readonly signingKey: CryptoKey;
}

async function loadCa(ca: CertificateAndKey): Promise<LoadedCa> {
  try {
    const certificate = new x509.X509Certificate(ca.certPem);
    const der = x509.PemConverter.decodeFirst(ca.keyPem);
    const signingKey = await webcrypto.subtle.importKey('pkcs8', der, keyAlgorithm, false, ['sign']);
    return { certificate, signingKey: signingKey as CryptoKey };
  } catch (error) {
    throw invalid('the CA certificate or key cannot be read: pass the PEM that createClusterCa returned', error);
  }
}

async function issueLeaf(
  ca: CertificateAndKey,
  options: {
    commonName: string;
    clusterName: string;
    validityDays: number;
    extendedKeyUsages: string[];
    subjectAlternativeNames: x509.JsonGeneralName[];
  },
): Promise<CertificateAndKey> {
  checkClusterName(options.clusterName);
  checkValidityDays(options.validityDays);
  const { certificate: caCertificate, signingKey } = await loadCa(ca);
  const caKeyId = caCertificate.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId;
  const keys = await generateKeys();
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(false, undefined, true),
    // ECDHE key exchange needs only digitalSignature from an ECDSA leaf; keyEncipherment is for RSA.
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
    new x509.ExtendedKeyUsageExtension(options.extendedKeyUsages, false),
    await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
  ];
  if (caKeyId !== undefined) extensions.push(new x509.AuthorityKeyIdentifierExtension(caKeyId));
  if (options.subjectAlternativeNames.length > 0) {
    extensions.push(new x509.SubjectAlternativeNameExtension(options.subjectAlternativeNames, false));
  }
  const certificate = await x509.X509CertificateGenerator.create({
    subject: subjectName(options.commonName, options.clusterName),
    issuer: caCertificate.subject,
    publicKey: keys.publicKey,
    signingKey,
    signingAlgorithm,
    ...validityPeriod(options.validityDays),
    extensions,
  });
  return { certPem: certificate.toString('pem'), keyPem: await privateKeyPem(keys.privateKey) };
}

export async function issueReplicaCertificate(
  ca: CertificateAndKey,
  options: { clusterName: string; replicaId: number; dnsNames: string[]; ipAddresses: string[]; validityDays: number },
): Promise<CertificateAndKey> {
  if (!isValidReplicaId(options.replicaId)) {
    throw invalid(`replica id must be an integer from 0 to ${limits.replicaIdMax}, got ${options.replicaId}`);
  }
  for (const name of options.dnsNames) {
    if (!dnsNamePattern.test(name)) throw invalid(`${JSON.stringify(name)} is not a DNS name (give addresses in ipAddresses)`);
  }
  for (const address of options.ipAddresses) {
    if (isIP(address) === 0) throw invalid(`${JSON.stringify(address)} is not an IPv4 or IPv6 address`);
  }
  if (options.dnsNames.length + options.ipAddresses.length === 0) {
    throw invalid(`replica ${options.replicaId} needs at least one DNS name or IP address: peers verify the name they dial`);
  }
  return issueLeaf(ca, {
    commonName: replicaCommonNameOf(options.replicaId),
    clusterName: options.clusterName,
    validityDays: options.validityDays,
    // Replicas are servers to everyone and clients of each other.
    extendedKeyUsages: [x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth],
    subjectAlternativeNames: [
      ...options.dnsNames.map((value) => ({ type: 'dns' as const, value })),
      ...options.ipAddresses.map((value) => ({ type: 'ip' as const, value })),
    ],
  });
}

export async function issueClientCertificate(
  ca: CertificateAndKey,
  options: { clusterName: string; clientId: string; validityDays: number },
): Promise<CertificateAndKey> {
  if (!isValidClientId(options.clientId)) {
    throw invalid(
      `client id ${JSON.stringify(options.clientId)} is not allowed: use 1 to ${limits.certificateClientIdLengthMax} characters of A-Z, a-z, 0-9, '.', '_' or '-'`,
    );
  }
  return issueLeaf(ca, {
    commonName: clientCommonNameOf(options.clientId),
    clusterName: options.clusterName,
    validityDays: options.validityDays,
    extendedKeyUsages: [x509.ExtendedKeyUsage.clientAuth],
    subjectAlternativeNames: [],
  });
}

async function readIfPresent(path: string): Promise<string | null> {
  try {
    return await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw invalid(`cannot read ${path}`, error);
  }
}

// Write to a temporary name, then rename: a crash never leaves a half-written key under the real name.
async function writeFileAtomically(path: string, contents: string, mode: number): Promise<void> {
  const temporary = `${path}.tmp-${process.pid}`;
  await writeFile(temporary, contents, { mode });
  await chmod(temporary, mode);
  await rename(temporary, path);
}

/**
 * Writes a local cluster's key directory: `ca.crt`, `ca.key`, `replica-<id>.crt/.key` and
 * `client-<id>.crt/.key` (keys mode 0600). An existing CA in the directory is kept and signs the new
 * leaves, so that adding a replica or a client later does not invalidate the others.
 */
export async function writeLocalKeyDirectory(options: {
  dir: string;
  clusterName: string;
  replicas: { id: number; dnsNames: string[]; ipAddresses: string[] }[];
  clients: string[];
}): Promise<void> {
  checkClusterName(options.clusterName);
  const validityDays = limits.certificateValidityDaysMax;
  await mkdir(options.dir, { recursive: true, mode: 0o700 });
  const caCertPath = join(options.dir, 'ca.crt');
  const caKeyPath = join(options.dir, 'ca.key');
  const existingCert = await readIfPresent(caCertPath);
  const existingKey = await readIfPresent(caKeyPath);
  let ca: CertificateAndKey;
  if (existingCert !== null && existingKey !== null) {
    ca = { certPem: existingCert, keyPem: existingKey };
    const { certificate } = await loadCa(ca);
    const organisation = certificate.subjectName.getField('O')[0];
    if (organisation !== options.clusterName) {
      throw invalid(
        `${options.dir} holds the CA of cluster ${JSON.stringify(organisation)}, not ${JSON.stringify(options.clusterName)}: use another directory or the same cluster name`,
      );
    }
  } else if (existingCert !== null || existingKey !== null) {
    throw invalid(`${options.dir} has only one of ca.crt and ca.key: restore the other, or remove both to start a new CA`);
  } else {
    ca = await createClusterCa({ clusterName: options.clusterName, validityDays });
    await writeFileAtomically(caKeyPath, ca.keyPem, 0o600);
    await writeFileAtomically(caCertPath, ca.certPem, 0o644);
  }
  for (const replica of options.replicas) {
    const leaf = await issueReplicaCertificate(ca, {
      clusterName: options.clusterName,
      replicaId: replica.id,
      dnsNames: replica.dnsNames,
      ipAddresses: replica.ipAddresses,
      validityDays,
    });
    const name = replicaCommonNameOf(replica.id);
    await writeFileAtomically(join(options.dir, `${name}.key`), leaf.keyPem, 0o600);
    await writeFileAtomically(join(options.dir, `${name}.crt`), leaf.certPem, 0o644);
  }
  for (const clientId of options.clients) {
    const leaf = await issueClientCertificate(ca, { clusterName: options.clusterName, clientId, validityDays });
    const name = clientCommonNameOf(clientId);
    await writeFileAtomically(join(options.dir, `${name}.key`), leaf.keyPem, 0o600);
    await writeFileAtomically(join(options.dir, `${name}.crt`), leaf.certPem, 0o644);
  }
}

/** The CA, certificate and key of `name` (`replica-<id>` or `client-<id>`) from a key directory. */
export async function readTlsMaterial(dir: string, name: string): Promise<TlsMaterial> {
  // The name becomes a file name: only our two exact forms, so it can never walk out of the directory.
  if (identityFromCommonName(name) === null) {
    throw invalid(`${JSON.stringify(name)} is not a key name: use replica-<id> or client-<id>`);
  }
  const read = async (file: string): Promise<string> => {
    const contents = await readIfPresent(join(dir, file));
    if (contents === null) {
      throw invalid(`${join(dir, file)} does not exist: create the key directory with \`bftkube keys\``);
    }
    return contents;
  };
  return { caPem: await read('ca.crt'), certPem: await read(`${name}.crt`), keyPem: await read(`${name}.key`) };
}
