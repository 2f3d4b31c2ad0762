import { limits } from '../constants.ts';
import { BftError } from '../errors.ts';
import type { Member } from '../protocol/reconfiguration.ts';
import type { View, ReplicaId } from './view.ts';
import { invalidView } from './view.ts';

/**
 * Tunables of the core, in ticks (the driver decides how long a tick is; the replica process uses 10 ms)
 * and in counts. Limits here may be lowered from constants.ts, never raised.
 */
export interface CoreConfig {
  readonly me: ReplicaId;
  /** The genesis view: where a replica without a checkpoint or log starts. */
  readonly view: View;
  /**
   * The genesis members' addresses and keys, one per member of `view`: part of the replicated state from
   * the start, so that a reconfiguration can tell every replica about new members the same way. Tests and
   * the simulator may leave it out (placeholders are used).
   */
  readonly members?: readonly Member[];
  readonly batchRequestsMax: number;
  readonly batchBytesMax: number;
  /**
   * Batch filling: right after a decision, a leader holding fewer requests than this percentage of the
   * clients seen in the last two batches waits for more, until the next tick at most. Fewer, fuller
   * instances cost less CPU per request (most of a replica's work is per instance); a lone client never
   * waits. 0 proposes at once, as Mod-SMaRt does.
   */
  readonly batchFillPercent: number;
  readonly clientInFlightMax: number;
  readonly pendingRequestsMax: number;
  readonly requireSignedRequests: boolean;
  /** A request pending this long is forwarded to the leader; twice as long, and a leader change starts. */
  readonly requestTimeoutTicks: number;
  /** An idle leader sends a heartbeat this often. */
  readonly heartbeatIntervalTicks: number;
  /** A follower that hears nothing from the leader for this long starts a leader change. */
  readonly leaderSilenceTimeoutTicks: number;
  /** A leader change that has not completed after this long (doubled per failed attempt) moves to the next. */
  readonly regencyTimeoutTicks: number;
  /** Own messages of an open instance or leader change are sent again after this long without progress. */
  readonly retransmitTicks: number;
  /** A lagging replica asks for missing decisions at most this often. */
  readonly catchUpIntervalTicks: number;
  /** Decisions kept in memory for lagging peers (at most limits.decisionsRetainedMax). */
  readonly decisionsRetainedMax: number;
  /** A checkpoint is taken once this many instances were decided since the last one, */
  readonly checkpointPeriodInstances: number;
  /** or once the decided batches since the last one add up to this many bytes, whichever comes first. */
  readonly checkpointPeriodBytes: number;
}

export const defaultTimingTicks = {
  requestTimeoutTicks: 200,
  heartbeatIntervalTicks: 50,
  leaderSilenceTimeoutTicks: 300,
  regencyTimeoutTicks: 200,
  retransmitTicks: 50,
  catchUpIntervalTicks: 10,
} as const;

/**
 * Both well inside the window of decisions every replica keeps for lagging peers (limits.decisionsRetained*),
 * so that a replica that installs the older of two attested checkpoints still finds every later decision.
 */
export const defaultCheckpointPeriod = {
  checkpointPeriodInstances: 10_000,
  checkpointPeriodBytes: 16 * 1024 * 1024,
} as const;

export function makeCoreConfig(
  me: ReplicaId,
  view: View,
  overrides: Partial<Omit<CoreConfig, 'me' | 'view'>> = {},
): CoreConfig {
  const config: CoreConfig = {
    me,
    view,
    batchRequestsMax: 1024,
    batchBytesMax: 1024 * 1024,
    batchFillPercent: 0,
    clientInFlightMax: 16,
    pendingRequestsMax: limits.pendingRequestsMax,
    requireSignedRequests: false,
    decisionsRetainedMax: limits.decisionsRetainedMax,
    ...defaultCheckpointPeriod,
    ...defaultTimingTicks,
    ...overrides,
  };
  const reason = invalidCoreConfig(config);
  if (reason !== null) throw new BftError('BFT_ERR_CONFIG_INVALID', `${reason}; fix the replica configuration`);
  return config;
}

function withinRange(value: number, min: number, max: number): boolean {
  return Number.isSafeInteger(value) && value >= min && value <= max;
}

export function invalidCoreConfig(config: CoreConfig): string | null {
  const viewReason = invalidView(config.view);
  if (viewReason !== null) return `view: ${viewReason}`;
  if (!config.view.members.includes(config.me)) return `me (${config.me}) is not a member of the view`;
  if (config.members !== undefined) {
    const ids = new Set(config.members.map((member) => member.id));
    if (ids.size !== config.members.length || config.view.members.some((id) => !ids.has(id)) || ids.size !== config.view.members.length) {
      return 'members must describe each member of the view exactly once';
    }
  }
  const bounded: Array<[keyof CoreConfig, number, number]> = [
    ['batchRequestsMax', 1, limits.batchRequestsMax],
    ['batchBytesMax', 1024, limits.batchBytesMax],
    ['batchFillPercent', 0, 100],
    ['clientInFlightMax', 1, limits.clientInFlightMax],
    ['pendingRequestsMax', 1, limits.pendingRequestsMax],
    ['requestTimeoutTicks', 1, 1_000_000],
    ['heartbeatIntervalTicks', 1, 1_000_000],
    ['leaderSilenceTimeoutTicks', 2, 1_000_000],
    ['regencyTimeoutTicks', 1, 1_000_000],
    ['retransmitTicks', 1, 1_000_000],
    ['catchUpIntervalTicks', 1, 1_000_000],
    ['decisionsRetainedMax', 8, limits.decisionsRetainedMax],
    // At least four periods stay in the window: whichever of its last two checkpoints a lagging replica
    // installs, the decisions after it are still there to catch up with.
    ['checkpointPeriodInstances', 1, Math.floor(config.decisionsRetainedMax / 4)],
    ['checkpointPeriodBytes', 1, Math.floor(limits.decisionsRetainedBytesMax / 4)],
  ];
  for (const [field, min, max] of bounded) {
    if (!withinRange(config[field] as number, min, max)) return `${field} must be an integer in [${min}, ${max}]`;
  }
  if (config.leaderSilenceTimeoutTicks <= config.heartbeatIntervalTicks) {
    return 'leaderSilenceTimeoutTicks must exceed heartbeatIntervalTicks, or a live leader looks dead';
  }
  return null;
}
