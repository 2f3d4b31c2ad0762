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
  /** Matching replies a client needs for an ordered request. */
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
      orderedReply: f + 1,
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
    orderedReply: 1,
    unorderedReply: majority,
    includesCorrect: 1,
  };
}
