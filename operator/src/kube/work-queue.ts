// A per-key work queue, as controllers have them: a key added many times before it runs runs once; one
// key never runs twice at once (added while running, it runs again after); a failure retries with
// exponential backoff; a success may ask to run again after a delay. Bounded: at most keysMax keys wait.

export interface WorkQueueOptions {
  /** Keys handled at once (different keys only). */
  readonly concurrency: number;
  readonly retryBaseMs: number;
  readonly retryMaxMs: number;
  readonly keysMax: number;
  /** Timers, injectable for tests. */
  readonly setTimer?: (callback: () => void, delayMs: number) => unknown;
  readonly clearTimer?: (timer: unknown) => void;
}

/** What handling a key may ask for: nothing, or to run again after a delay. */
export type HandlerResult = { readonly requeueAfterMs?: number } | void;

export class WorkQueue {
  private readonly options: WorkQueueOptions;
  private readonly handler: (key: string) => Promise<HandlerResult>;
  private readonly ready: string[] = [];
  private readonly queued = new Set<string>();
  private readonly running = new Set<string>();
  /** Added while running: run again once it finishes. */
  private readonly dirty = new Set<string>();
  private readonly delayed = new Map<string, unknown>();
  private readonly failures = new Map<string, number>();
  private stopped = false;
  private dropped = 0;

  constructor(handler: (key: string) => Promise<HandlerResult>, options: WorkQueueOptions) {
    this.handler = handler;
    this.options = options;
  }

  /** Run `key` soon; a delay already scheduled for it is replaced by this sooner run. */
  add(key: string): void {
    if (this.stopped) return;
    const timer = this.delayed.get(key);
    if (timer !== undefined) {
      (this.options.clearTimer ?? clearTimeout)(timer as ReturnType<typeof setTimeout>);
      this.delayed.delete(key);
    }
    if (this.running.has(key)) {
      this.dirty.add(key);
      return;
    }
    if (this.queued.has(key)) return;
    if (this.queued.size + this.delayed.size >= this.options.keysMax) {
      this.dropped++;
      return;
    }
    this.queued.add(key);
    this.ready.push(key);
    this.pump();
  }

  /** Run `key` after `delayMs`, unless it is added (sooner) before that. */
  addAfter(key: string, delayMs: number): void {
    if (this.stopped || this.delayed.has(key) || this.queued.has(key)) return;
    const timer = (this.options.setTimer ?? ((callback, ms) => setTimeout(callback, ms).unref()))(() => {
      this.delayed.delete(key);
      this.add(key);
    }, delayMs);
    this.delayed.set(key, timer);
  }

  stats(): { readonly waiting: number; readonly running: number; readonly delayed: number; readonly dropped: number } {
    return { waiting: this.ready.length, running: this.running.size, delayed: this.delayed.size, dropped: this.dropped };
  }

  stop(): void {
    this.stopped = true;
    for (const timer of this.delayed.values()) (this.options.clearTimer ?? clearTimeout)(timer as ReturnType<typeof setTimeout>);
    this.delayed.clear();
    this.ready.length = 0;
    this.queued.clear();
  }

  private pump(): void {
    while (!this.stopped && this.running.size < this.options.concurrency && this.ready.length > 0) {
      const key = this.ready.shift() as string;
      this.queued.delete(key);
      this.running.add(key);
      void this.run(key);
    }
  }

  private async run(key: string): Promise<void> {
    let retryMs: number | null = null;
    let requeueAfterMs: number | undefined;
    try {
      const result = await this.handler(key);
      this.failures.delete(key);
      requeueAfterMs = result?.requeueAfterMs;
    } catch {
      const failures = (this.failures.get(key) ?? 0) + 1;
      this.failures.set(key, failures);
      retryMs = Math.min(this.options.retryMaxMs, this.options.retryBaseMs * 2 ** Math.min(failures - 1, 20));
    }
    this.running.delete(key);
    if (this.dirty.delete(key)) this.add(key);
    else if (retryMs !== null) this.addAfter(key, retryMs);
    else if (requeueAfterMs !== undefined && requeueAfterMs > 0) this.addAfter(key, requeueAfterMs);
    this.pump();
  }
}
