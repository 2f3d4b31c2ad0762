// Many logical clients over one set of connections: the sessions `<id>/<n>` of one authenticated client
// share its TLS links (replicas send every session's replies to that client's connection), and this
// routes each reply to the session it names. One process, one set of sockets, coalesced writes.

import { limits } from '../constants.ts';
import { decodeMessage } from '../protocol/codec.ts';
import { type Message, MessageType } from '../protocol/messages.ts';
import type { ClientTransport } from './transport.ts';

export class ClientMux {
  private readonly shared: ClientTransport;
  private readonly sessions = new Map<string, (replicaId: number, payload: Uint8Array, decoded?: Message) => void>();
  private unrouted = 0;

  constructor(shared: ClientTransport) {
    this.shared = shared;
    shared.onMessage((replicaId, payload) => this.route(replicaId, payload));
  }

  get unroutedMessages(): number {
    return this.unrouted;
  }

  private route(replicaId: number, payload: Uint8Array): void {
    // Bounded before decoding, as the client itself does, so a hostile replica cannot make us parse megabytes.
    if (payload.length > limits.resultBytesMax + 1024) {
      this.unrouted++;
      return;
    }
    const decoded = decodeMessage(payload);
    const type = decoded.ok ? decoded.message.type : null;
    if (
      !decoded.ok ||
      (type !== MessageType.REPLY && type !== MessageType.REPLY_DIGEST && type !== MessageType.BUSY && type !== MessageType.VIEW_REPLY)
    ) {
      this.unrouted++;
      return;
    }
    const handler = this.sessions.get((decoded.message as { readonly clientId: string }).clientId);
    if (handler === undefined) {
      this.unrouted++;
      return;
    }
    // Decoded and validated once here; the session's client trusts this in-process hand-over.
    handler(replicaId, payload, decoded.message);
  }

  /** A ClientTransport for one session; closing it detaches the session, not the shared links. */
  session(clientId: string): ClientTransport {
    return {
      send: (replicaId, payload) => this.shared.send(replicaId, payload),
      onMessage: (handler) => {
        this.sessions.set(clientId, handler);
      },
      // Every session that moves to a new view asks for the same links; the shared transport keeps one each.
      setReplicas: (replicas) => this.shared.setReplicas?.(replicas),
      close: async () => {
        this.sessions.delete(clientId);
      },
    };
  }

  close(): Promise<void> {
    this.sessions.clear();
    return this.shared.close();
  }
}
