import type { Message } from '../protocol/messages.ts';

// The seam between the client library's logic and the network: the TLS implementation lives in
// replica/src/transport/; tests of client logic plug in scripted replicas through this same interface.

/** Where a replica listens. Host is a DNS name (re-resolved on every reconnect) or an IP address. */
export interface ReplicaEndpoint {
  readonly id: number;
  readonly host: string;
  readonly port: number;
  /**
   * Where to connect instead of resolving `host`, which still names the server the certificate must
   * match: for a caller that knows the address and cannot resolve the name (the operator, running
   * outside the cluster's DNS, dials replica pods at their pod IPs).
   */
  readonly address?: string;
}

export interface ClientTransport {
  /** Queue one encoded message for a replica; never throws, drops (and counts) when it cannot send. */
  send(replicaId: number, payload: Uint8Array): void;
  /**
   * The one handler for encoded messages from replicas; the replica id comes from its certificate. A
   * transport that already decoded and validated the message (ClientMux does, to route it) passes it as
   * `decoded`, so that it is not decoded twice.
   */
  onMessage(handler: (replicaId: number, payload: Uint8Array, decoded?: Message) => void): void;
  /** The replicas of a newer view: connect to new members, drop members that left. Optional for tests. */
  setReplicas?(replicas: readonly ReplicaEndpoint[]): void;
  close(): Promise<void>;
}
