// The replica's structured logs (DESIGN §7): one JSON object per line on stdout (or the given
// destination), with the replica id and the view number on every line, ISO timestamps and level names.
//
// Per consensus instance, log through a child logger, so that every line about the instance carries
// its cid and can be followed across replicas with one filter (`jq 'select(.cid == 42)'`):
//
//   const instanceLog = logger.child({ cid });
//   instanceLog.info({ regency, batchRequests }, 'decided');
//   // {"level":"info","time":"…","replica":0,"view":3,"cid":42,"regency":1,"batchRequests":7,"msg":"decided"}
//
// The view number is fixed when the logger is created: after a reconfiguration installs a new view,
// create a new root logger with createLogger (children are cheap to recreate) rather than adding a
// `view` binding to a child, which would repeat the key in every line.

import { pino } from 'pino';

export const logLevels = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof logLevels)[number];

export interface LoggerOptions {
  readonly replicaId: number;
  readonly viewNumber: number;
  /** One of logLevels; default info. */
  readonly level?: string;
  /** Default: stdout, written asynchronously by pino. */
  readonly destination?: pino.DestinationStream;
}

export function createLogger(options: LoggerOptions): pino.Logger {
  const settings: pino.LoggerOptions = {
    level: options.level ?? 'info',
    base: { replica: options.replicaId, view: options.viewNumber },
    timestamp: pino.stdTimeFunctions.isoTime,
    // Level names rather than numbers, for readers that are not pino (kubectl logs, log pipelines).
    formatters: { level: (label) => ({ level: label }) },
  };
  return options.destination === undefined ? pino(settings) : pino(settings, options.destination);
}
