// Discrete-event time for the simulator. Simulated milliseconds pass only when an event runs, so a
// run takes as long as its events, not as long as the timeouts it exercises.
//
// Determinism rests on one rule: events run in order of (time, insertion sequence), so two events
// due at the same millisecond always run in the order they were scheduled.

/** Opaque handle for cancel(); numbers are never reused within one Scheduler. */
export type EventId = number & { readonly __brand: 'EventId' };

export interface RunUntilOptions {
  /** Checked after each event; when it returns true the run stops and `now()` stays at that event's time. */
  stop?: () => boolean;
  /** Most events this call may run; one more event due by `timeMs` is an error (a runaway loop). */
  eventsMax?: number;
}

export interface RunUntilResult {
  /** True when `stop()` ended the run before `timeMs`. */
  stopped: boolean;
  eventsRun: number;
}

/** The bound runUntil() applies when the caller gives none: far above a real run (~10^6 events), far below forever. */
export const runUntilEventsMaxDefault = 50_000_000;

interface ScheduledEvent {
  readonly timeMs: number;
  readonly sequence: number;
  action: (() => void) | null; // null once cancelled; removed lazily when it reaches the top of the heap
}

// Lazy cancellation leaves dead entries in the heap; consensus timers are re-armed constantly, so
// compact once the dead outnumber the live (amortised O(1) per cancel, memory bounded by 2x + slack).
const compactionDeadMin = 1024;

function earlier(left: ScheduledEvent, right: ScheduledEvent): boolean {
  return left.timeMs < right.timeMs || (left.timeMs === right.timeMs && left.sequence < right.sequence);
}

export class Scheduler {
  #nowMs = 0;
  #sequenceNext = 0;
  readonly #heap: ScheduledEvent[] = [];
  readonly #pending = new Map<number, ScheduledEvent>();

  now(): number {
    return this.#nowMs;
  }

  /** Schedules `action` at an absolute simulated time, which must not be in the past. */
  at(timeMs: number, action: () => void): EventId {
    if (!Number.isFinite(timeMs)) throw new RangeError(`Scheduler.at: time must be finite, got ${timeMs}`);
    if (timeMs < this.#nowMs) {
      throw new RangeError(`Scheduler.at: time ${timeMs} ms is before now (${this.#nowMs} ms)`);
    }
    const event: ScheduledEvent = { timeMs, sequence: this.#sequenceNext++, action };
    this.#pending.set(event.sequence, event);
    this.#push(event);
    return event.sequence as EventId;
  }

  after(delayMs: number, action: () => void): EventId {
    if (!(delayMs >= 0)) throw new RangeError(`Scheduler.after: delay must be >= 0, got ${delayMs}`);
    return this.at(this.#nowMs + delayMs, action);
  }

  /** Returns false when the event already ran or was cancelled, so a stale timer handle is harmless. */
  cancel(id: EventId): boolean {
    const event = this.#pending.get(id);
    if (event === undefined) return false;
    this.#pending.delete(id);
    event.action = null;
    const deadCount = this.#heap.length - this.#pending.size;
    if (deadCount >= compactionDeadMin && deadCount > this.#pending.size) this.#compact();
    return true;
  }

  pendingCount(): number {
    return this.#pending.size;
  }

  /** Time of the earliest pending event, or undefined when none is pending. */
  nextTime(): number | undefined {
    return this.#peekLive()?.timeMs;
  }

  /** Runs the earliest pending event, advancing now() to its time; false when nothing is pending. */
  step(): boolean {
    const event = this.#peekLive();
    if (event === undefined) return false;
    this.#pop();
    this.#pending.delete(event.sequence);
    const action = event.action!;
    event.action = null;
    this.#nowMs = event.timeMs;
    action();
    return true;
  }

  /**
   * Runs every event due at or before `timeMs` in order, including events those events schedule,
   * then sets now() to `timeMs`. Stops early (leaving now() at the last event's time) when `stop()`
   * returns true.
   */
  runUntil(timeMs: number, options: RunUntilOptions = {}): RunUntilResult {
    if (!Number.isFinite(timeMs)) throw new RangeError(`Scheduler.runUntil: time must be finite, got ${timeMs}`);
    if (timeMs < this.#nowMs) {
      throw new RangeError(`Scheduler.runUntil: time ${timeMs} ms is before now (${this.#nowMs} ms)`);
    }
    const eventsMax = options.eventsMax ?? runUntilEventsMaxDefault;
    if (!(eventsMax >= 0)) throw new RangeError(`Scheduler.runUntil: eventsMax must be >= 0, got ${eventsMax}`);
    const stop = options.stop;
    let eventsRun = 0;
    for (;;) {
      const event = this.#peekLive();
      if (event === undefined || event.timeMs > timeMs) break;
      if (eventsRun >= eventsMax) {
        throw new Error(
          `Scheduler.runUntil: more than eventsMax=${eventsMax} events before ${timeMs} ms ` +
            `(now ${this.#nowMs} ms, ${this.#pending.size} pending): a runaway loop, or raise eventsMax`,
        );
      }
      this.step();
      eventsRun++;
      if (stop !== undefined && stop()) return { stopped: true, eventsRun };
    }
    this.#nowMs = timeMs;
    return { stopped: false, eventsRun };
  }

  #peekLive(): ScheduledEvent | undefined {
    for (;;) {
      const top = this.#heap[0];
      if (top === undefined || top.action !== null) return top;
      this.#pop();
    }
  }

  #compact(): void {
    const heap = this.#heap;
    let liveCount = 0;
    for (const event of heap) if (event.action !== null) heap[liveCount++] = event;
    heap.length = liveCount;
    for (let i = (liveCount >>> 1) - 1; i >= 0; i--) this.#siftDown(i);
  }

  #push(event: ScheduledEvent): void {
    const heap = this.#heap;
    let index = heap.length;
    heap.push(event);
    while (index > 0) {
      const parentIndex = (index - 1) >>> 1;
      const parent = heap[parentIndex]!;
      if (!earlier(event, parent)) break;
      heap[index] = parent;
      index = parentIndex;
    }
    heap[index] = event;
  }

  #pop(): void {
    const heap = this.#heap;
    const last = heap.pop();
    if (last === undefined || heap.length === 0) return;
    heap[0] = last;
    this.#siftDown(0);
  }

  #siftDown(start: number): void {
    const heap = this.#heap;
    const length = heap.length;
    const event = heap[start]!;
    let index = start;
    for (;;) {
      const leftIndex = 2 * index + 1;
      if (leftIndex >= length) break;
      const rightIndex = leftIndex + 1;
      let childIndex = leftIndex;
      let child = heap[leftIndex]!;
      if (rightIndex < length) {
        const right = heap[rightIndex]!;
        if (earlier(right, child)) {
          childIndex = rightIndex;
          child = right;
        }
      }
      if (!earlier(child, event)) break;
      heap[index] = child;
      index = childIndex;
    }
    heap[index] = event;
  }
}
