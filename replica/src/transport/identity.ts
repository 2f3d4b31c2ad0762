// Who is at the other end of a connection. The answer comes from the peer's certificate (verified
// against the cluster CA during the TLS handshake), never from anything the peer sends afterwards.

import type { PeerCertificate } from 'node:tls';
import { limits } from '../constants.ts';

export type PeerIdentity =
  | { readonly kind: 'replica'; readonly id: number }
  | { readonly kind: 'client'; readonly id: string };

// Ids are written without leading zeros so that one replica has exactly one name.
const replicaCommonName = /^replica-(0|[1-9][0-9]{0,9})$/;
const clientId = new RegExp(`^[A-Za-z0-9._-]{1,${limits.certificateClientIdLengthMax}}$`);

export function isValidClientId(id: string): boolean {
  return clientId.test(id);
}

export function isValidReplicaId(id: number): boolean {
  return Number.isSafeInteger(id) && id >= 0 && id <= limits.replicaIdMax;
}

export function replicaCommonNameOf(id: number): string {
  return `replica-${id}`;
}

export function clientCommonNameOf(id: string): string {
  return `client-${id}`;
}

/** The identity a subject common name names, or null for anything that is not exactly one of our two forms. */
export function identityFromCommonName(commonName: string): PeerIdentity | null {
  const replica = replicaCommonName.exec(commonName);
  if (replica !== null) {
    const id = Number(replica[1]);
    return isValidReplicaId(id) ? { kind: 'replica', id } : null;
  }
  if (commonName.startsWith('client-')) {
    const id = commonName.slice('client-'.length);
    return isValidClientId(id) ? { kind: 'client', id } : null;
  }
  return null;
}

/**
 * The identity in a verified peer certificate: its subject must carry exactly one common name of the
 * form `replica-<id>` or `client-<id>`. Anything else (no certificate, several CNs, other forms) is null.
 */
export function peerIdentity(certificate: PeerCertificate | null | undefined): PeerIdentity | null {
  if (certificate === null || certificate === undefined) return null;
  // An absent certificate is an empty object; several CNs arrive as an array.
  const subject = (certificate as { subject?: unknown }).subject;
  if (typeof subject !== 'object' || subject === null) return null;
  const commonName = (subject as Record<string, unknown>)['CN'];
  if (typeof commonName !== 'string') return null;
  return identityFromCommonName(commonName);
}

export function formatIdentity(identity: PeerIdentity): string {
  return identity.kind === 'replica' ? replicaCommonNameOf(identity.id) : clientCommonNameOf(identity.id);
}
