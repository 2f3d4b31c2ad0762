// Where the records of each Ready become durable before its messages leave. The write-ahead log with
// fsync, group commit and torn-tail recovery is the durability issue's; until then the process runs
// with durability "none".

import type { PersistRecord } from '../core/ready.ts';

export interface Storage {
  /** Resolves once the records are as durable as the storage's policy makes them. */
  append(records: readonly PersistRecord[]): Promise<void> | void;
  /** Everything appended by earlier incarnations, in order. */
  load(): Promise<readonly PersistRecord[]>;
  close(): Promise<void>;
}

/**
 * Durability "none": nothing is kept, because nothing kept in this process's memory could outlive it.
 * A replica restarted with it comes back empty and must catch up from its peers.
 */
export class VolatileStorage implements Storage {
  append(_records: readonly PersistRecord[]): void {}

  async load(): Promise<readonly PersistRecord[]> {
    return [];
  }

  async close(): Promise<void> {}
}
