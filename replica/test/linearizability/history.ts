// Histories of a replicated key-value store, recorded by test clients and checked by lincheck
// (Porcupine). Times come from the monotonic clock, process.hrtime.bigint(): on Linux it is
// CLOCK_MONOTONIC, shared by every process on the machine, so histories recorded by several
// processes may be concatenated and checked together.

/** An operation a test client invokes. `expected: null` in a cas requires the key to be absent. */
export type KvOperation =
  | { readonly kind: 'put'; readonly key: string; readonly value: string }
  | { readonly kind: 'get'; readonly key: string }
  | { readonly kind: 'delete'; readonly key: string }
  | { readonly kind: 'cas'; readonly key: string; readonly expected: string | null; readonly value: string };

export type KvOperationKind = KvOperation['kind'];

/** What an operation returns: get → the value read (null: absent); cas → whether it swapped. */
export type KvOutputOf<Op extends KvOperation> = Op extends { kind: 'get' }
  ? string | null
  : Op extends { kind: 'cas' }
    ? boolean
    : void;

interface EventTiming {
  /** The client that invoked the operation (the protocol's clientId). */
  readonly clientId: string;
  /** Monotonic nanoseconds just before the request left the client. */
  readonly callNs: bigint;
  /**
   * Monotonic nanoseconds when the client had the answer; null when it never had one (timed out,
   * killed): the operation may or may not have taken effect.
   */
  readonly returnNs: bigint | null;
}

/** One operation of a history. `output` is present exactly when `returnNs` is not null. */
export type HistoryEvent = EventTiming &
  (
    | { readonly kind: 'put'; readonly key: string; readonly value: string }
    | { readonly kind: 'delete'; readonly key: string }
    | { readonly kind: 'get'; readonly key: string; readonly output?: string | null }
    | {
        readonly kind: 'cas';
        readonly key: string;
        readonly expected: string | null;
        readonly value: string;
        readonly output?: boolean;
      }
  );

/** Ends one recorded operation: `done(output)` when it returned, `done.unknown()` when it never will. */
export interface Completion<Output> {
  (output: Output): void;
  unknown(): void;
}

export const historyLimits = {
  /** Operations one recorder keeps; a test that needs more should check in parts. */
  recorderEventsMax: 2_000_000,
} as const;

type MutableEvent = { -readonly [K in keyof HistoryEvent]: HistoryEvent[K] } & {
  output?: string | null | boolean;
};

/**
 * Records what test clients do. Take the completion right before sending the request and call it
 * as soon as the answer is in hand, so that each interval contains the moment the cluster acted:
 *
 *   const done = recorder.call('c1', { kind: 'put', key: 'k', value: 'v' });
 *   try { await client.put('k', 'v'); done(); } catch { done.unknown(); }
 *
 * An operation still open when `history()` is taken (its client was killed) counts as never
 * returned. Only a definite failure (the cluster refused the request before ordering it) may be
 * left out of the history; anything that might have been executed must be recorded as unknown.
 */
export class HistoryRecorder {
  readonly #events: MutableEvent[] = [];
  readonly #eventsMax: number;

  constructor(options: { eventsMax?: number } = {}) {
    this.#eventsMax = options.eventsMax ?? historyLimits.recorderEventsMax;
  }

  get size(): number {
    return this.#events.length;
  }

  call<Op extends KvOperation>(clientId: string, op: Op): Completion<KvOutputOf<Op>> {
    if (this.#events.length >= this.#eventsMax) {
      throw new RangeError(`the history holds ${this.#eventsMax} operations already: check it and start a new recorder`);
    }
    const event = { ...op, clientId, callNs: 0n, returnNs: null } as MutableEvent;
    this.#events.push(event);
    let settled = false;
    const settle = (): void => {
      if (settled) throw new Error(`operation ${describe(op)} of client ${clientId} was completed twice`);
      settled = true;
    };
    const done = ((output: KvOutputOf<Op>): void => {
      const returnNs = process.hrtime.bigint();
      settle();
      event.returnNs = returnNs;
      if (op.kind === 'get') {
        if (output !== null && typeof output !== 'string') throw new TypeError('a get returns a string or null');
        event.output = output;
      } else if (op.kind === 'cas') {
        if (typeof output !== 'boolean') throw new TypeError('a cas returns true or false');
        event.output = output;
      }
    }) as Completion<KvOutputOf<Op>>;
    done.unknown = (): void => settle();
    // Last, so that the interval starts as close to the send as we can get.
    event.callNs = process.hrtime.bigint();
    return done;
  }

  /** A copy of what was recorded so far, open operations as never returned. */
  history(): HistoryEvent[] {
    return this.#events.map((event) => ({ ...event }) as HistoryEvent);
  }
}

function describe(op: KvOperation): string {
  return `${op.kind}(${JSON.stringify(op.key)})`;
}

/** JSON as lincheck reads it: timestamps as decimal strings, since they outgrow 2^53. */
export function serializeHistory(history: readonly HistoryEvent[]): string {
  return JSON.stringify(history, (_key, value: unknown) => (typeof value === 'bigint' ? value.toString() : value));
}
