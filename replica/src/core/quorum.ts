// The one place where quorum sizes are computed from a view (DESIGN §2). Every threshold the protocol
// uses comes from here, so BFT and crash thresholds can never be mixed by accident.

export type FaultMode = 'bft' | 'crash';

export interface Quorums {
  /** Matching WRITEs needed before ACCEPT (BFT only). */
  readonly write: number;
  /** Matching signed ACCEPTs that decide an instance and form its certificate. */
  readonly accept: number;
  /** STOPs for a regency after which a replica joins the change itself. */
  readonly stopJoin: number;
  /** STOPs for a regency after which a replica installs it. */
  readonly stopInstall: number;
  /** Signed collects the new leader needs before it may send SYNC. */
  readonly collect: number;
  /**
   * Matching replies a client needs for an ordered request. f+1 (crash: 1) would already prove the value,
   * but the acknowledging replicas must overlap every unordered read's quorum in a correct replica
   * (|ordered| + |unordered| ≥ n+f+1; crash: > n), or a read right after an acknowledged write can miss
   * it: a test saw exactly that in crash mode with 1. So both use the same majority quorum.
   */
  readonly orderedReply: number;
  /** Matching replies a client needs for an unordered (read-only) request. */
  readonly unorderedReply: number;
  /** Any this many replicas include at least one correct replica (f+1; crash mode: 1). */
  readonly includesCorrect: number;
}

/** The largest f that n replicas tolerate in a fault mode. */
export function maxFaults(n: number, mode: FaultMode): number {
  return mode === 'bft' ? Math.floor((n - 1) / 3) : Math.floor((n - 1) / 2);
}

/** More than (n+f)/2 in BFT; more than n/2 in crash mode. */
function byzantineMajority(n: number, f: number): number {
  return Math.floor((n + f) / 2) + 1;
}

export function quorumsFor(n: number, f: number, mode: FaultMode): Quorums {
  if (mode === 'bft') {
    const majority = byzantineMajority(n, f);
    return {
      write: majority,
      accept: majority,
      stopJoin: f + 1,
      stopInstall: 2 * f + 1,
      collect: n - f,
      orderedReply: majority,
      unorderedReply: majority,
      includesCorrect: f + 1,
    };
  }
  const majority = Math.floor(n / 2) + 1;
  return {
    write: 0,
    accept: majority,
    stopJoin: 1,
    stopInstall: f + 1,
    collect: majority,
    orderedReply: majority,
    unorderedReply: majority,
    includesCorrect: 1,
  };
}
