// Ordering a signed reconfiguration through the cluster, as its View Manager: the I/O edge of a
// membership change. A short-lived client with the operator's own identity (Secret <cluster>-operator-client)
// dials the members at their pod IPs, verified by their DNS names, so that it works from inside the
// cluster and from a process outside its DNS alike.

import { randomUUID } from 'node:crypto';
import { BftClient } from '../../../replica/src/client/client.ts';
import { ViewManager } from '../../../replica/src/client/view-manager.ts';
import { Signer } from '../../../replica/src/crypto/ed25519.ts';
import type { ReconfigurationOperation, ReconfigurationResult } from '../../../replica/src/protocol/reconfiguration.ts';
import { TlsClientTransport } from '../../../replica/src/transport/tls-transport.ts';

/** How long one submission may take before it is retried (with the same nonce) in a later pass. */
export const submitTimeoutMs = 20_000;

export interface SubmitRequest {
  readonly view: {
    readonly number: number;
    readonly mode: 'bft' | 'crash';
    readonly f: number;
    readonly members: readonly { readonly id: number; readonly host: string; readonly port: number; readonly address?: string }[];
  };
  /** The operator's client identity: the certificate's client id, its TLS material and its signing key. */
  readonly client: { readonly identity: string; readonly caPem: string; readonly certPem: string; readonly keyPem: string; readonly signingKeyPem: string };
  readonly viewManagerKeyPem: string;
  readonly operations: readonly ReconfigurationOperation[];
  readonly fromView: number;
  readonly epoch: number;
  readonly nonce: Uint8Array;
}

export type SubmitReconfiguration = (request: SubmitRequest) => Promise<ReconfigurationResult>;

export const submitReconfiguration: SubmitReconfiguration = async (request) => {
  const transport = new TlsClientTransport({
    tls: { caPem: request.client.caPem, certPem: request.client.certPem, keyPem: request.client.keyPem },
    replicas: request.view.members.map((m) => ({ id: m.id, host: m.host, port: m.port, ...(m.address === undefined ? {} : { address: m.address }) })),
  });
  const client = new BftClient({
    clientId: `${request.client.identity}/${randomUUID()}`,
    view: { number: request.view.number, mode: request.view.mode, f: request.view.f, members: request.view.members.map((m) => m.id) },
    transport,
    signer: new Signer(request.client.signingKeyPem),
    timeouts: { orderedTimeoutMs: submitTimeoutMs },
  });
  try {
    const viewManager = new ViewManager({ privateKeyPem: request.viewManagerKeyPem, client, epoch: request.epoch });
    return await viewManager.submit(viewManager.sign(request.fromView, request.operations, request.nonce));
  } finally {
    await client.close();
  }
};
