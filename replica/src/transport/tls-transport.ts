// The network under a replica and under a client: TLS 1.3 with mutual authentication against the
// cluster CA only, length-prefixed frames, coalesced writes. The peer's identity is read from its
// certificate after the handshake and handed up with every frame; frames themselves are opaque bytes
// here (decoding and validation happen above). Nothing a peer sends can throw out of this module:
// bad input closes that one connection and is counted.

import { isIP, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import * as tls from 'node:tls';
import type { Logger } from 'pino';
import type { ClientTransport, ReplicaEndpoint } from '../client/transport.ts';
import { limits } from '../constants.ts';
import { BftError } from '../errors.ts';
import { FrameDecoder, type FrameSink, FrameWriter, type FrameWriterCounters, isFrameError } from './frames.ts';
import { formatIdentity, type PeerIdentity, peerIdentity, replicaCommonNameOf } from './identity.ts';
import { LogLimiter } from '../log-limiter.ts';

/** Peer-triggered warnings, a few per peer per minute; the transport's counters see every event. */
const peerWarnings = new LogLimiter();

function warnLimited(logger: Logger | undefined, key: string, fields: Record<string, unknown>, message: string): void {
  if (logger === undefined) return;
  const { log, suppressedBefore } = peerWarnings.allow(key);
  if (!log) return;
  logger.warn(suppressedBefore > 0 ? { ...fields, suppressedBefore } : fields, message);
}

export interface TlsCredentials {
  readonly caPem: string;
  readonly certPem: string;
  readonly keyPem: string;
}

/** Why the transport dropped a frame or a connection; each is counted in `stats().drops`. */
export const TransportDropReason = {
  /** A frame did not fit in the bounded queue of its link. */
  QUEUE_FULL: 'queue_full',
  /** A frame for a client with no open connection, or for a replica we have no address for. */
  NO_CONNECTION: 'no_connection',
  /** A peer declared a frame longer than the limit: its connection is closed. */
  FRAME_TOO_LARGE: 'frame_too_large',
  /** A peer sent a frame of length 0: its connection is closed. */
  FRAME_MALFORMED: 'frame_malformed',
  /** A dial that did not reach the peer (refused, unreachable, name not resolved); the link retries. */
  DIAL_FAILED: 'dial_failed',
  /** A handshake (or the connect before it) did not finish in time. */
  HANDSHAKE_TIMEOUT: 'handshake_timeout',
  /** A handshake failed: unknown CA, no certificate, wrong protocol version, host name mismatch, … */
  HANDSHAKE_FAILED: 'handshake_failed',
  /** The server we dialled is not `replica-<the id we dialled>`. */
  WRONG_PEER: 'wrong_peer',
  /** A certificate from our CA whose subject names neither a replica nor a client (or names us). */
  UNKNOWN_PEER: 'unknown_peer',
  /** A client connection beyond `limits.clientConnectionsMax`. */
  CLIENT_LIMIT: 'client_limit',
  /** A TCP connection beyond the server's connection bound, refused before its handshake. */
  CONNECTION_LIMIT: 'connection_limit',
  /** Bytes from a replica on a link that only carries our frames to it (discarded). */
  UNEXPECTED_DATA: 'unexpected_data',
  /** A frame from a replica before the client registered its handler. */
  NO_HANDLER: 'no_handler',
} as const;

export type TransportDropReasonCode = (typeof TransportDropReason)[keyof typeof TransportDropReason];

export interface TransportStats {
  readonly framesIn: number;
  readonly bytesIn: number;
  /** Frames and bytes (headers included) handed to sockets. */
  readonly framesOut: number;
  readonly bytesOut: number;
  /** Calls to socket.write: coalescing makes this far smaller than framesOut. */
  readonly socketWrites: number;
  readonly drops: Readonly<Record<TransportDropReasonCode, number>>;
  /** Outbound handshakes completed, and those of them that replaced a lost connection. */
  readonly connects: number;
  readonly reconnects: number;
  /** Redials made at once, instead of after the backoff, because the peer had just connected to us. */
  readonly peerReturnRedials: number;
  /** Inbound connections admitted after their handshake. */
  readonly accepted: number;
  readonly connections: { readonly replicasOutbound: number; readonly replicasInbound: number; readonly clients: number };
}

class TransportCounters {
  framesIn = 0;
  bytesIn = 0;
  connects = 0;
  reconnects = 0;
  peerReturnRedials = 0;
  accepted = 0;
  readonly writer: FrameWriterCounters = { framesOut: 0, bytesOut: 0, socketWrites: 0, framesDroppedQueueFull: 0 };
  readonly drops: Record<TransportDropReasonCode, number> = Object.fromEntries(
    Object.values(TransportDropReason).map((reason) => [reason, 0]),
  ) as Record<TransportDropReasonCode, number>;

  drop(reason: TransportDropReasonCode): void {
    this.drops[reason] += 1;
  }

  snapshot(connections: TransportStats['connections']): TransportStats {
    return {
      framesIn: this.framesIn,
      bytesIn: this.bytesIn,
      framesOut: this.writer.framesOut,
      bytesOut: this.writer.bytesOut,
      socketWrites: this.writer.socketWrites,
      drops: { ...this.drops, [TransportDropReason.QUEUE_FULL]: this.drops.queue_full + this.writer.framesDroppedQueueFull },
      connects: this.connects,
      reconnects: this.reconnects,
      peerReturnRedials: this.peerReturnRedials,
      accepted: this.accepted,
      connections,
    };
  }
}

const keepAliveInitialDelayMs = 30_000;
// A connection must have lived this long before its loss resets the backoff; otherwise a server that
// accepts and then closes at once (full, or refusing us) would be redialled at the shortest delay forever.
const connectionStableMs = limits.reconnectDelayMaxMs;
// 2^16 times the minimum delay is already past the maximum; the cap keeps the exponent finite.
const backoffExponentMax = 16;

/**
 * Parses our CA, certificate and key once: redials reuse it, and bad PEM fails at construction with a
 * clear error instead of throwing from a redial timer.
 */
function secureContextOf(credentials: TlsCredentials): tls.SecureContext {
  try {
    return tls.createSecureContext({
      ca: credentials.caPem,
      cert: credentials.certPem,
      key: credentials.keyPem,
      minVersion: 'TLSv1.3',
    });
  } catch (error) {
    throw new BftError(
      'BFT_ERR_KEYS_INVALID',
      'the TLS CA, certificate or key cannot be used: pass the PEM files of one key directory (see `bftkube keys`)',
      { cause: error },
    );
  }
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * Reads frames from a socket into `deliver`; a malformed stream closes the socket and is counted.
 * Returns the 'data' listener.
 */
function frameReader(
  socket: tls.TLSSocket,
  frameBytesMax: number,
  counters: TransportCounters,
  deliver: (payload: Uint8Array) => void,
  onStreamError: (detail: string) => void,
): (chunk: Buffer) => void {
  const decoder = new FrameDecoder(frameBytesMax);
  return (chunk: Buffer) => {
    const result = decoder.push(chunk);
    if (isFrameError(result)) {
      if (result.error === 'frame_too_large') counters.drop(TransportDropReason.FRAME_TOO_LARGE);
      else if (result.error === 'frame_length_zero') counters.drop(TransportDropReason.FRAME_MALFORMED);
      // 'decoder_failed' is the same stream after its first error: already counted.
      if (result.error !== 'decoder_failed') onStreamError(result.detail);
      socket.destroy();
      return;
    }
    for (const payload of result) {
      counters.framesIn += 1;
      counters.bytesIn += payload.byteLength;
      deliver(payload);
      // A handler may stop the transport while frames of this chunk remain.
      if (socket.destroyed) return;
    }
  };
}

/**
 * One dialled connection to one replica, kept up for as long as the link exists: dial by name (Node
 * resolves it on every attempt), verify the chain, the host name and that the server is the replica we
 * meant, and redial with jittered exponential backoff after any failure. Frames queue in the writer
 * across reconnects.
 */
class OutboundLink {
  readonly endpoint: ReplicaEndpoint;
  readonly writer: FrameWriter;
  private readonly secureContext: tls.SecureContext;
  private readonly counters: TransportCounters;
  private readonly frameBytesMax: number;
  private readonly deliver: ((payload: Uint8Array) => void) | null;
  private readonly logger: Logger | undefined;
  private readonly localAddress: string | undefined;
  /** An address the peer was just seen at (its connection to us): the next dial goes there, once. */
  private addressHint: string | null = null;
  private socket: tls.TLSSocket | null = null;
  private connected = false;
  private everConnected = false;
  private connectedAtMs = 0;
  private attempt = 0;
  private redialTimer: NodeJS.Timeout | null = null;
  private lastEarlyRedialMs = Number.NEGATIVE_INFINITY;
  private stopped = false;
  private closed: Promise<void> = Promise.resolve();

  constructor(options: {
    endpoint: ReplicaEndpoint;
    secureContext: tls.SecureContext;
    counters: TransportCounters;
    queuedBytesMax: number;
    frameBytesMax: number;
    deliver: ((payload: Uint8Array) => void) | null;
    logger: Logger | undefined;
    localAddress?: string;
  }) {
    this.endpoint = options.endpoint;
    this.localAddress = options.localAddress;
    this.secureContext = options.secureContext;
    this.counters = options.counters;
    this.frameBytesMax = options.frameBytesMax;
    this.deliver = options.deliver;
    this.logger = options.logger;
    this.writer = new FrameWriter({ queuedBytesMax: options.queuedBytesMax, counters: options.counters.writer });
  }

  get isConnected(): boolean {
    return this.connected;
  }

  start(): void {
    this.dial();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.redialTimer !== null) clearTimeout(this.redialTimer);
    this.redialTimer = null;
    this.writer.close();
    this.socket?.destroy();
    await this.closed;
  }

  private dial(): void {
    this.redialTimer = null;
    if (this.stopped) return;
    const { id, host, port } = this.endpoint;
    // The hint replaces only the address: the server is still verified against the name we know it by.
    const address = this.addressHint ?? this.endpoint.address ?? host;
    this.addressHint = null;
    const expected = replicaCommonNameOf(id);
    let wrongPeer = false;
    let handshakeTimedOut = false;
    let tcpConnected = false;
    let secure = false;
    const socket = tls.connect({
      host: address,
      port,
      // SNI carries names only; for an address, verification matches the certificate's IP SANs.
      ...(isIP(host) === 0 ? { servername: host } : {}),
      ...(this.localAddress === undefined ? {} : { localAddress: this.localAddress }),
      secureContext: this.secureContext,
      minVersion: 'TLSv1.3',
      rejectUnauthorized: true,
      checkServerIdentity: (hostname, certificate) => {
        const mismatch = tls.checkServerIdentity(hostname, certificate);
        if (mismatch !== undefined) return mismatch;
        const identity = peerIdentity(certificate);
        if (identity?.kind !== 'replica' || identity.id !== id) {
          wrongPeer = true;
          return new Error(
            `${host}:${port} presented ${identity === null ? 'an unknown identity' : formatIdentity(identity)}, expected ${expected}`,
          );
        }
        return undefined;
      },
    });
    this.socket = socket;
    let markClosed = (): void => {};
    this.closed = new Promise((resolve) => {
      markClosed = resolve;
    });
    const handshakeTimer = setTimeout(() => {
      handshakeTimedOut = true;
      socket.destroy();
    }, limits.tlsHandshakeTimeoutMs);

    socket.once('connect', () => {
      tcpConnected = true;
    });
    socket.once('secureConnect', () => {
      clearTimeout(handshakeTimer);
      secure = true;
      this.connected = true;
      this.connectedAtMs = performance.now();
      this.counters.connects += 1;
      if (this.everConnected) this.counters.reconnects += 1;
      this.everConnected = true;
      socket.setNoDelay(true);
      socket.setKeepAlive(true, keepAliveInitialDelayMs);
      this.writer.attach(socket as FrameSink);
      this.logger?.debug({ peer: expected, host, port }, 'transport: connected');
    });
    if (this.deliver !== null) {
      const deliver = this.deliver;
      socket.on(
        'data',
        frameReader(socket, this.frameBytesMax, this.counters, deliver, (detail) =>
          warnLimited(this.logger, `malformed/${expected}`, { peer: expected, detail }, 'transport: closing a connection that sent a malformed frame'),
        ),
      );
    } else {
      socket.on('data', () => this.counters.drop(TransportDropReason.UNEXPECTED_DATA));
    }
    socket.on('error', (error) => {
      if (secure) {
        this.logger?.debug({ peer: expected, err: errorText(error) }, 'transport: connection error');
        return;
      }
      if (wrongPeer) {
        this.counters.drop(TransportDropReason.WRONG_PEER);
        warnLimited(this.logger, `wrong-peer/${expected}`, { peer: expected, host, port, err: errorText(error) }, 'transport: refused a server that is not the replica dialled');
      } else {
        this.counters.drop(tcpConnected ? TransportDropReason.HANDSHAKE_FAILED : TransportDropReason.DIAL_FAILED);
        this.logger?.debug({ peer: expected, host, port, err: errorText(error) }, 'transport: dial failed');
      }
    });
    socket.once('close', () => {
      clearTimeout(handshakeTimer);
      if (handshakeTimedOut) this.counters.drop(TransportDropReason.HANDSHAKE_TIMEOUT);
      if (this.socket === socket) {
        this.socket = null;
        this.writer.detach();
        if (this.connected && performance.now() - this.connectedAtMs >= connectionStableMs) this.attempt = 0;
        this.connected = false;
        this.scheduleRedial();
      }
      markClosed();
    });
  }

  /**
   * The peer just connected to us, so it is up: a redial waiting out a long backoff (grown while the
   * peer was down) goes now. Otherwise a replica that restarts would hear nothing from us, its leader
   * perhaps, for up to the backoff ceiling, longer than it waits before asking for a leader change.
   * At most once per limits.peerReturnRedialIntervalMinMs, so that a peer reconnecting in a loop cannot
   * make us dial in one.
   */
  peerReachedUs(remoteAddress: string | undefined): void {
    if (this.stopped || this.connected) return;
    const nowMs = performance.now();
    if (nowMs - this.lastEarlyRedialMs < limits.peerReturnRedialIntervalMinMs) return;
    this.lastEarlyRedialMs = nowMs;
    this.counters.peerReturnRedials += 1;
    this.attempt = 0;
    // A peer known by name may have come back at a new address that DNS caches do not show yet (a pod
    // recreated with a new IP): try the address it connected from. TLS still proves it is that replica.
    if (isIP(this.endpoint.host) === 0 && remoteAddress !== undefined && isIP(remoteAddress) !== 0) this.addressHint = remoteAddress;
    if (this.socket !== null) {
      // A dial in flight, perhaps to an address where nothing answers: give it up; its close redials.
      this.socket.destroy();
      return;
    }
    if (this.redialTimer !== null) clearTimeout(this.redialTimer);
    this.dial();
  }

  private scheduleRedial(): void {
    if (this.stopped || this.redialTimer !== null) return;
    if (this.addressHint !== null) {
      this.redialTimer = setTimeout(() => this.dial(), 0);
      return;
    }
    const ceilingMs = Math.min(limits.reconnectDelayMaxMs, limits.reconnectDelayMinMs * 2 ** this.attempt);
    this.attempt = Math.min(this.attempt + 1, backoffExponentMax);
    // Half fixed, half random: peers that lost each other at the same moment do not redial in lockstep.
    const delayMs = ceilingMs / 2 + Math.random() * (ceilingMs / 2);
    this.redialTimer = setTimeout(() => this.dial(), delayMs);
  }
}

/** An accepted connection: a replica delivering to us, or a client we also answer on. */
interface InboundConnection {
  readonly identity: PeerIdentity;
  /** Unique among this transport's connections, never reused: how a reply finds the connection its request came on. */
  readonly number: number;
  readonly socket: tls.TLSSocket;
  readonly writer: FrameWriter | null;
}

export interface TlsReplicaTransportOptions {
  readonly me: number;
  readonly listenHost: string;
  readonly listenPort: number;
  readonly tls: TlsCredentials;
  /** Every replica of the view, this one included (it is skipped); host is a DNS name or an address. */
  readonly replicas: readonly ReplicaEndpoint[];
  /** `connection` names the connection the frame came on (see sendToClient). */
  readonly onFrame: (from: PeerIdentity, payload: Uint8Array, connection: number) => void;
  readonly frameBytesMax?: number;
  readonly logger?: Logger;
  /**
   * The address outbound connections come from (the listen address, when it is a specific one): a peer
   * then sees this replica's connections come from where it listens, and can dial it back there.
   */
  readonly localAddress?: string;
}

/**
 * A replica's transport: one TLS server for replicas and clients, and one dialled link to every other
 * replica for the frames this replica sends. Each pair of replicas therefore has two connections, one per
 * direction; accepted replica connections only deliver. Clients connect in and are answered on the
 * connection their request came on: several processes may share one client certificate (with different
 * sessions), each on connections of its own.
 */
export class TlsReplicaTransport {
  private readonly options: TlsReplicaTransportOptions;
  private readonly frameBytesMax: number;
  private readonly counters = new TransportCounters();
  private readonly links = new Map<number, OutboundLink>();
  /** Links to replicas that left the view, kept for limits.retiredLinkGraceMs. */
  private readonly retiring = new Map<number, OutboundLink>();
  private readonly inboundReplicas = new Map<number, InboundConnection>();
  /** Client connections by number, and each client identity's connections, oldest first. */
  private readonly clientConnections = new Map<number, InboundConnection>();
  private readonly clients = new Map<string, InboundConnection[]>();
  private connectionsAccepted = 0;
  // Every accepted TCP connection, handshaking or admitted, so that stop() closes them all at once.
  private readonly rawSockets = new Set<Socket>();
  private server: tls.Server | null = null;
  private started = false;
  private stopping = false;
  private readonly secureContext: tls.SecureContext;

  constructor(options: TlsReplicaTransportOptions) {
    this.options = options;
    this.frameBytesMax = Math.min(options.frameBytesMax ?? limits.messageBytesMax, limits.messageBytesMax);
    this.secureContext = secureContextOf(options.tls);
    this.setReplicas(options.replicas);
  }

  /**
   * The replicas to send to, after a reconfiguration: links to new members are dialled, links to members
   * that left are closed (with what was queued for them), and a member whose address changed is redialled.
   */
  setReplicas(replicas: readonly ReplicaEndpoint[]): void {
    const wanted = new Map(replicas.filter((endpoint) => endpoint.id !== this.options.me).map((endpoint) => [endpoint.id, endpoint]));
    for (const [id, link] of [...this.links]) {
      const endpoint = wanted.get(id);
      if (endpoint !== undefined && endpoint.host === link.endpoint.host && endpoint.port === link.endpoint.port) continue;
      this.links.delete(id);
      // Still usable for a moment, so that what the last instances owe a departing member (its last
      // votes, the decision that removed it) reaches it; then closed.
      this.retiring.set(id, link);
      const timer = setTimeout(() => {
        if (this.retiring.get(id) === link) this.retiring.delete(id);
        void link.stop();
      }, limits.retiredLinkGraceMs);
      timer.unref();
    }
    for (const [id, endpoint] of wanted) {
      if (this.links.has(id)) continue;
      const link = new OutboundLink({
        endpoint,
        secureContext: this.secureContext,
        counters: this.counters,
        queuedBytesMax: limits.replicaLinkQueuedBytesMax,
        frameBytesMax: this.frameBytesMax,
        deliver: null,
        logger: this.options.logger,
        ...(this.options.localAddress === undefined ? {} : { localAddress: this.options.localAddress }),
      });
      this.links.set(id, link);
      if (this.started && !this.stopping) link.start();
    }
  }

  /** The address the server listens on (useful with listenPort 0). */
  address(): { host: string; port: number } {
    const address = this.server?.address();
    if (address === null || address === undefined || typeof address === 'string') {
      return { host: this.options.listenHost, port: this.options.listenPort };
    }
    return { host: address.address, port: address.port };
  }

  async start(): Promise<void> {
    const { tls: credentials, listenHost, listenPort } = this.options;
    const server = tls.createServer({
      ca: credentials.caPem,
      cert: credentials.certPem,
      key: credentials.keyPem,
      minVersion: 'TLSv1.3',
      requestCert: true,
      rejectUnauthorized: true,
      handshakeTimeout: limits.tlsHandshakeTimeoutMs,
    });
    // Admitted clients and replicas, plus room for handshakes in progress; beyond it Node refuses ('drop').
    server.maxConnections = limits.clientConnectionsMax + limits.membersMax + limits.handshakesPendingMax;
    server.on('connection', (raw: Socket) => {
      this.rawSockets.add(raw);
      raw.once('close', () => this.rawSockets.delete(raw));
    });
    server.on('drop', () => this.counters.drop(TransportDropReason.CONNECTION_LIMIT));
    server.on('tlsClientError', (error: NodeJS.ErrnoException, socket: tls.TLSSocket) => {
      // Node reports a failed or timed-out handshake here but leaves the socket open: close it ourselves.
      socket.destroy();
      this.counters.drop(
        error.code === 'ERR_TLS_HANDSHAKE_TIMEOUT' ? TransportDropReason.HANDSHAKE_TIMEOUT : TransportDropReason.HANDSHAKE_FAILED,
      );
      this.options.logger?.debug({ err: errorText(error) }, 'transport: inbound handshake failed');
    });
    server.on('secureConnection', (socket) => this.admit(socket));
    await new Promise<void>((resolve, reject) => {
      const onError = (error: Error): void => {
        server.close();
        reject(
          new BftError(
            'BFT_ERR_TRANSPORT_LISTEN',
            `cannot listen on ${listenHost}:${listenPort}: check that the address is local and the port is free`,
            { cause: error },
          ),
        );
      };
      server.once('error', onError);
      server.listen({ host: listenHost, port: listenPort }, () => {
        server.removeListener('error', onError);
        server.on('error', (error) => this.options.logger?.error({ err: errorText(error) }, 'transport: server error'));
        resolve();
      });
    });
    this.server = server;
    this.started = true;
    for (const link of this.links.values()) link.start();
  }

  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    const server = this.server;
    this.server = null;
    const serverClosed =
      server === null ? Promise.resolve() : new Promise<void>((resolve) => server.close(() => resolve()));
    for (const connection of [...this.clientConnections.values(), ...this.inboundReplicas.values()]) connection.socket.destroy();
    for (const raw of this.rawSockets) raw.destroy();
    for (const connection of this.clientConnections.values()) connection.writer?.close();
    await Promise.all([serverClosed, ...[...this.links.values(), ...this.retiring.values()].map((link) => link.stop())]);
  }

  /** Queues a frame for a replica; dropped and counted when its queue is full or it is not configured. */
  sendToReplica(id: number, payload: Uint8Array): void {
    const link = this.links.get(id) ?? this.retiring.get(id);
    if (link === undefined || this.stopping) {
      this.counters.drop(TransportDropReason.NO_CONNECTION);
      return;
    }
    link.writer.write(payload);
  }

  /**
   * Queues a frame for client `identity` on connection `connection` (from onFrame) if it is still open,
   * else on the client's latest connection; dropped and counted when it has none.
   */
  sendToClient(identity: string, payload: Uint8Array, connection?: number): void {
    const routed = connection === undefined ? undefined : this.clientConnections.get(connection);
    const chosen = routed !== undefined && routed.identity.id === identity ? routed : this.clients.get(identity)?.at(-1);
    if (chosen === undefined || chosen.writer === null) {
      this.counters.drop(TransportDropReason.NO_CONNECTION);
      return;
    }
    chosen.writer.write(payload);
  }

  stats(): TransportStats {
    let replicasOutbound = 0;
    for (const link of this.links.values()) if (link.isConnected) replicasOutbound += 1;
    return this.counters.snapshot({
      replicasOutbound,
      replicasInbound: this.inboundReplicas.size,
      clients: this.clientConnections.size,
    });
  }

  private admit(socket: tls.TLSSocket): void {
    socket.on('error', (error) => this.options.logger?.debug({ err: errorText(error) }, 'transport: inbound connection error'));
    if (this.stopping) {
      socket.destroy();
      return;
    }
    const identity = socket.authorized ? peerIdentity(socket.getPeerCertificate()) : null;
    if (identity === null || (identity.kind === 'replica' && identity.id === this.options.me)) {
      this.counters.drop(TransportDropReason.UNKNOWN_PEER);
      const subject = socket.getPeerCertificate()?.subject;
      warnLimited(this.options.logger, `no-peer/${socket.remoteAddress ?? ''}`, { subject }, 'transport: refused a certificate naming no peer');
      socket.destroy();
      return;
    }
    if (identity.kind === 'client' && this.clientConnections.size >= limits.clientConnectionsMax && !this.clients.has(identity.id)) {
      this.counters.drop(TransportDropReason.CLIENT_LIMIT);
      socket.destroy();
      return;
    }
    socket.setNoDelay(true);
    socket.setKeepAlive(true, keepAliveInitialDelayMs);
    const writer =
      identity.kind === 'client'
        ? new FrameWriter({ queuedBytesMax: limits.clientLinkQueuedBytesMax, counters: this.counters.writer })
        : null;
    this.connectionsAccepted += 1;
    const connection: InboundConnection = { identity, number: this.connectionsAccepted, socket, writer };
    let previous: InboundConnection | undefined;
    if (identity.kind === 'replica') {
      // The latest connection of a replica replaces the previous one: it restarted or lost it.
      previous = this.inboundReplicas.get(identity.id);
      this.inboundReplicas.set(identity.id, connection);
      this.links.get(identity.id)?.peerReachedUs(socket.remoteAddress);
    } else {
      const ofClient = this.clients.get(identity.id) ?? [];
      ofClient.push(connection);
      this.clients.set(identity.id, ofClient);
      this.clientConnections.set(connection.number, connection);
      // A client identity gets a few connections at once (processes sharing a certificate); past that, or
      // past the replica's total, its oldest goes: most likely one its process abandoned when it restarted.
      if (ofClient.length > limits.clientConnectionsPerIdentityMax || this.clientConnections.size > limits.clientConnectionsMax) previous = ofClient[0];
    }
    if (previous !== undefined) {
      this.forget(previous);
      previous.writer?.close();
      previous.socket.destroy();
    }
    writer?.attach(socket as FrameSink);
    this.counters.accepted += 1;
    const onFrame = this.options.onFrame;
    socket.on(
      'data',
      frameReader(socket, this.frameBytesMax, this.counters, (payload) => onFrame(identity, payload, connection.number), (detail) =>
        warnLimited(this.options.logger, `malformed/${formatIdentity(identity)}`, { peer: formatIdentity(identity), detail }, 'transport: closing a connection that sent a malformed frame'),
      ),
    );
    socket.once('close', () => {
      writer?.close();
      this.forget(connection);
    });
  }

  private forget(connection: InboundConnection): void {
    const { identity } = connection;
    if (identity.kind === 'replica') {
      if (this.inboundReplicas.get(identity.id) === connection) this.inboundReplicas.delete(identity.id);
      return;
    }
    this.clientConnections.delete(connection.number);
    const ofClient = this.clients.get(identity.id);
    const index = ofClient?.indexOf(connection) ?? -1;
    if (ofClient === undefined || index < 0) return;
    ofClient.splice(index, 1);
    if (ofClient.length === 0) this.clients.delete(identity.id);
  }
}

export interface TlsClientTransportOptions {
  readonly tls: TlsCredentials;
  readonly replicas: readonly ReplicaEndpoint[];
  readonly frameBytesMax?: number;
  readonly logger?: Logger;
}

/** A client's transport: one dialled link to every replica, which answers on the same connection. */
export class TlsClientTransport implements ClientTransport {
  private readonly counters = new TransportCounters();
  private readonly links = new Map<number, OutboundLink>();
  private handler: ((replicaId: number, payload: Uint8Array) => void) | null = null;
  private closing = false;
  private readonly frameBytesMax: number;
  private readonly secureContext: tls.SecureContext;
  private readonly logger: Logger | undefined;

  constructor(options: TlsClientTransportOptions) {
    this.frameBytesMax = Math.min(options.frameBytesMax ?? limits.messageBytesMax, limits.messageBytesMax);
    this.secureContext = secureContextOf(options.tls);
    this.logger = options.logger;
    this.setReplicas(options.replicas);
  }

  /** After the client learned a new view: dial new members, close links to members that left. */
  setReplicas(replicas: readonly ReplicaEndpoint[]): void {
    if (this.closing) return;
    const wanted = new Map(replicas.map((endpoint) => [endpoint.id, endpoint]));
    for (const [id, link] of [...this.links]) {
      const endpoint = wanted.get(id);
      if (endpoint !== undefined && endpoint.host === link.endpoint.host && endpoint.port === link.endpoint.port) continue;
      this.links.delete(id);
      void link.stop();
    }
    for (const [id, endpoint] of wanted) {
      if (this.links.has(id)) continue;
      const link = new OutboundLink({
        endpoint,
        secureContext: this.secureContext,
        counters: this.counters,
        queuedBytesMax: limits.replicaLinkQueuedBytesMax,
        frameBytesMax: this.frameBytesMax,
        // The link verified that the server is replica-<endpoint.id>: that is who the frame is from.
        deliver: (payload) => {
          if (this.handler === null) this.counters.drop(TransportDropReason.NO_HANDLER);
          else this.handler(endpoint.id, payload);
        },
        logger: this.logger,
      });
      this.links.set(id, link);
      link.start();
    }
  }

  send(replicaId: number, payload: Uint8Array): void {
    const link = this.links.get(replicaId);
    if (link === undefined || this.closing) {
      this.counters.drop(TransportDropReason.NO_CONNECTION);
      return;
    }
    link.writer.write(payload);
  }

  onMessage(handler: (replicaId: number, payload: Uint8Array) => void): void {
    this.handler = handler;
  }

  async close(): Promise<void> {
    this.closing = true;
    await Promise.all([...this.links.values()].map((link) => link.stop()));
  }

  stats(): TransportStats {
    let replicasOutbound = 0;
    for (const link of this.links.values()) if (link.isConnected) replicasOutbound += 1;
    return this.counters.snapshot({ replicasOutbound, replicasInbound: 0, clients: 0 });
  }
}
