// Requests waiting to be ordered, and the per-client sequence numbers already decided.
// Insertion order of the map is timer order: an entry whose timer restarts is moved to the end, so the
// request timer only ever looks at the front.

import type { ClientRequest } from '../protocol/messages.ts';

export interface PendingEntry {
  readonly request: ClientRequest;
  readonly bytes: number;
  /** Tick at which the entry's current timer started. */
  timerStartTick: number;
  /** 0: waiting; 1: forwarded to the leader once already. */
  stage: 0 | 1;
  /**
   * False while the request's signature is unchecked: it came straight from its client, whose authenticated
   * channel proves who sent it, so the signature is checked only before the request is passed on.
   */
  signatureChecked: boolean;
}

export function requestKey(clientId: string, seq: number): string {
  return `${clientId}\u0000${seq}`;
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** The same request down to its last byte, signature included. */
export function sameRequest(a: ClientRequest, b: ClientRequest): boolean {
  return (
    a.clientId === b.clientId &&
    a.seq === b.seq &&
    a.ordered === b.ordered &&
    a.kind === b.kind &&
    bytesEqual(a.operation, b.operation) &&
    (a.signature === null ? b.signature === null : b.signature !== null && bytesEqual(a.signature, b.signature))
  );
}

/** Approximate wire size of a request, for batch byte limits. */
export function requestBytes(request: ClientRequest): number {
  // Covers msgpack's map keys and headers (about 55 bytes per request).
  return request.operation.length + request.clientId.length + (request.signature?.length ?? 0) + 64;
}

export class PendingRequests {
  private readonly entries = new Map<string, PendingEntry>();
  private readonly perClient = new Map<string, number>();

  get size(): number {
    return this.entries.size;
  }

  has(clientId: string, seq: number): boolean {
    return this.entries.has(requestKey(clientId, seq));
  }

  get(clientId: string, seq: number): PendingEntry | undefined {
    return this.entries.get(requestKey(clientId, seq));
  }

  countFor(clientId: string): number {
    return this.perClient.get(clientId) ?? 0;
  }

  add(request: ClientRequest, nowTick: number, signatureChecked: boolean): void {
    const key = requestKey(request.clientId, request.seq);
    if (this.entries.has(key)) return;
    this.entries.set(key, { request, bytes: requestBytes(request), timerStartTick: nowTick, stage: 0, signatureChecked });
    this.perClient.set(request.clientId, this.countFor(request.clientId) + 1);
  }

  remove(clientId: string, seq: number): void {
    const key = requestKey(clientId, seq);
    if (!this.entries.delete(key)) return;
    const count = this.countFor(clientId) - 1;
    if (count <= 0) this.perClient.delete(clientId);
    else this.perClient.set(clientId, count);
  }

  /** Entries in timer order (oldest timer first). */
  values(): IterableIterator<PendingEntry> {
    return this.entries.values();
  }

  /** Restart an entry's timer and move it to the back. */
  restartTimer(entry: PendingEntry, nowTick: number, stage: 0 | 1): void {
    const key = requestKey(entry.request.clientId, entry.request.seq);
    this.entries.delete(key);
    entry.timerStartTick = nowTick;
    entry.stage = stage;
    this.entries.set(key, entry);
  }

  restartAllTimers(nowTick: number): void {
    for (const entry of this.entries.values()) {
      entry.timerStartTick = nowTick;
      entry.stage = 0;
    }
  }

  /** The oldest requests, as many as fit in `countMax` and `bytesMax`. */
  oldest(countMax: number, bytesMax: number): ClientRequest[] {
    return fitting([...this.entries.values()].map((e) => e.request), countMax, bytesMax)[0] ?? [];
  }
}

/**
 * The highest decided sequence number of each client: replicated state, changed only by decisions, so
 * batch validity is the same function of the same state on every correct replica.
 */
export class ClientTable {
  private readonly decidedSeq = new Map<string, number>();

  get size(): number {
    return this.decidedSeq.size;
  }

  lastDecided(clientId: string): number {
    return this.decidedSeq.get(clientId) ?? 0;
  }

  knows(clientId: string): boolean {
    return this.decidedSeq.has(clientId);
  }

  record(clientId: string, seq: number): void {
    this.decidedSeq.set(clientId, seq);
  }

  clear(): void {
    this.decidedSeq.clear();
  }
}

/** Split requests into consecutive groups of at most `countMax` requests and `bytesMax` bytes each. */
export function fitting(requests: readonly ClientRequest[], countMax: number, bytesMax: number): ClientRequest[][] {
  const groups: ClientRequest[][] = [];
  let group: ClientRequest[] = [];
  let bytes = 0;
  for (const request of requests) {
    const size = requestBytes(request);
    if (group.length > 0 && (group.length >= countMax || bytes + size > bytesMax)) {
      groups.push(group);
      group = [];
      bytes = 0;
    }
    group.push(request);
    bytes += size;
  }
  if (group.length > 0) groups.push(group);
  return groups;
}
