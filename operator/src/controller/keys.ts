// Key material for a cluster, made once and kept in Secrets: a cluster CA, a TLS certificate and an
// Ed25519 signing key per replica (named by its DNS names), client identities for applications and for
// the operator, and the View Manager's key. The secret data uses the file names replicas read.

import { createHash } from 'node:crypto';
import { type CertificateAndKey, createClusterCa, issueClientCertificate, issueReplicaCertificate } from '../../../replica/src/crypto/certificates.ts';
import { generateSigningKeyPair } from '../../../replica/src/crypto/ed25519.ts';
import { secretKeyFiles } from '../../../replica/src/client/connection.ts';
import { limits } from '../../../replica/src/constants.ts';
import { replicaDnsNames } from '../specs/names.ts';

/** Secret data keys. */
/**
 * Secret data keys: the layout the client library reads a mounted client Secret in (one definition, so
 * that the operator and applications agree), plus the CA's key, which only the CA Secret holds.
 */
export const keyFiles = { ...secretKeyFiles, caKey: 'ca.key' } as const;

export type SecretData = Record<string, string>;

export async function newClusterCa(clusterName: string): Promise<SecretData> {
  const ca = await createClusterCa({ clusterName, validityDays: limits.certificateValidityDaysMax });
  return { [keyFiles.caCert]: ca.certPem, [keyFiles.caKey]: ca.keyPem };
}

export function caOf(data: SecretData): CertificateAndKey {
  return { certPem: data[keyFiles.caCert] ?? '', keyPem: data[keyFiles.caKey] ?? '' };
}

function signingKeyData(): SecretData {
  const pair = generateSigningKeyPair();
  return { [keyFiles.signingKey]: pair.privateKeyPem, [keyFiles.signingPublic]: Buffer.from(pair.publicKeyRaw).toString('base64') };
}

/** Replica `id`'s TLS certificate for its DNS names, and its signing key. */
export async function newReplicaKeys(ca: CertificateAndKey, cluster: string, namespace: string, id: number): Promise<SecretData> {
  const leaf = await issueReplicaCertificate(ca, {
    clusterName: cluster,
    replicaId: id,
    dnsNames: replicaDnsNames(cluster, namespace, id),
    ipAddresses: [],
    validityDays: limits.certificateValidityDaysMax,
  });
  return { [keyFiles.caCert]: ca.certPem, [keyFiles.tlsCert]: leaf.certPem, [keyFiles.tlsKey]: leaf.keyPem, ...signingKeyData() };
}

/** A client identity (certificate `client-<clientId>`) with a signing key, for signed requests. */
export async function newClientKeys(ca: CertificateAndKey, cluster: string, clientId: string): Promise<SecretData> {
  const leaf = await issueClientCertificate(ca, { clusterName: cluster, clientId, validityDays: limits.certificateValidityDaysMax });
  return { [keyFiles.caCert]: ca.certPem, [keyFiles.tlsCert]: leaf.certPem, [keyFiles.tlsKey]: leaf.keyPem, [keyFiles.clientId]: clientId, ...signingKeyData() };
}

export function newViewManagerKey(): SecretData {
  return signingKeyData();
}

/** public-keys.json as replicas read it (replica/src/server/keys.ts). */
export function publicKeysFile(replicas: ReadonlyMap<number, string>, clients: ReadonlyMap<string, string>, viewManager: string): string {
  const sorted = <K>(map: ReadonlyMap<K, string>) => [...map].sort((a, b) => String(a[0]).localeCompare(String(b[0]), 'en', { numeric: true }));
  return `${JSON.stringify(
    {
      replicas: Object.fromEntries(sorted(replicas).map(([id, key]) => [String(id), key])),
      clients: Object.fromEntries(sorted(clients)),
      viewManager,
    },
    null,
    2,
  )}\n`;
}

/** A short, stable hash of some texts: what a pod annotation carries so that a change rolls it. */
export function hashOf(...parts: readonly string[]): string {
  const hash = createHash('sha256');
  for (const part of parts) hash.update(part).update('\0');
  return hash.digest('hex').slice(0, 16);
}
