// Shared by the transport's tests: a cluster's certificates made by our own certificates.ts, loopback
// addresses nobody else is likely to use, and a bounded wait.

import { randomInt } from 'node:crypto';
import type { ReplicaEndpoint } from '../client/transport.ts';
import {
  type CertificateAndKey,
  createClusterCa,
  issueClientCertificate,
  issueReplicaCertificate,
} from '../crypto/certificates.ts';
import type { TlsCredentials } from './tls-transport.ts';

export const clusterName = 'transport-test';

/** A random 127.a.b.0/24 for one test file: any 127.x.y.z binds without setup, and files run in parallel. */
export function loopbackNetwork(): (host: number) => string {
  const a = randomInt(1, 255);
  const b = randomInt(1, 255);
  return (host) => `127.${a}.${b}.${host}`;
}

export function randomPort(): number {
  return randomInt(20_000, 60_000);
}

export interface TestCluster {
  readonly ca: CertificateAndKey;
  readonly replicas: ReadonlyMap<number, TlsCredentials>;
  readonly client: TlsCredentials;
  readonly address: (host: number) => string;
}

/** A CA, replicas 0..count-1 (replica i at address(i + 1), also named localhost), and client `alice`. */
export async function makeTestCluster(replicaCount: number): Promise<TestCluster> {
  const address = loopbackNetwork();
  const ca = await createClusterCa({ clusterName, validityDays: 1 });
  const replicas = new Map<number, TlsCredentials>();
  for (let id = 0; id < replicaCount; id++) {
    const leaf = await issueReplicaCertificate(ca, {
      clusterName,
      replicaId: id,
      dnsNames: ['localhost'],
      ipAddresses: [address(id + 1), '127.0.0.1'],
      validityDays: 1,
    });
    replicas.set(id, { caPem: ca.certPem, ...leaf });
  }
  const client = { caPem: ca.certPem, ...(await issueClientCertificate(ca, { clusterName, clientId: 'alice', validityDays: 1 })) };
  return { ca, replicas, client, address };
}

export function credentialsOf(cluster: TestCluster, id: number): TlsCredentials {
  const credentials = cluster.replicas.get(id);
  if (credentials === undefined) throw new Error(`no credentials for replica ${id}`);
  return credentials;
}

export function endpoints(cluster: TestCluster, port: number): ReplicaEndpoint[] {
  return [...cluster.replicas.keys()].map((id) => ({ id, host: cluster.address(id + 1), port }));
}

/** Polls until `condition` holds; fails after `timeoutMs` with `what` (a bound, not a timing assertion). */
export async function waitFor(what: string, condition: () => boolean, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

export function text(payload: Uint8Array): string {
  return Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength).toString('utf8');
}

export function bytes(value: string): Uint8Array {
  return new Uint8Array(Buffer.from(value, 'utf8'));
}
