// Which replica pod a rolling update replaces next, as a pure function of what the operator observed
// (DESIGN §8): one at a time, only while every replica is ready and none is catching up, followers
// before the leader, and the leader only once no replica lags behind it (replacing it forces a leader
// change, which must not wait on a replica that is still catching up).

export interface RollingReplica {
  readonly id: number;
  /** Its pod exists, is not being deleted, and is ready. */
  readonly ready: boolean;
  /** How long its pod has been ready, in milliseconds (0 when not ready). */
  readonly readyForMs: number;
  /** Its pod was made from an older manifest (image, configuration, resources, keys). */
  readonly outdated: boolean;
  /** What it reported: its last decided instance and whether it awaits state transfer; null when silent. */
  readonly report: { readonly lastDecidedCid: number; readonly catchingUp: boolean; readonly regency: number; readonly synchronized: boolean } | null;
}

export type RollingDecision =
  | { readonly action: 'none' }
  | { readonly action: 'wait'; readonly outdated: number; readonly reason: string }
  | { readonly action: 'replace'; readonly id: number; readonly outdated: number; readonly reason: string };

/**
 * Every pod must have been ready this long before the next is replaced (a Deployment's minReadySeconds):
 * a pod's Ready condition trails the replica by its probe period, and a replica that has just come back
 * may still be settling.
 */
export const rollingReadyForMsMin = 5_000;

/** A replica this many instances behind the most advanced one lags: the leader is not replaced while one does. */
export const rollingLagInstancesMax = 100;

export function planRollingUpdate(replicas: readonly RollingReplica[], leader: number | undefined): RollingDecision {
  const outdated = replicas.filter((r) => r.outdated);
  if (outdated.length === 0) return { action: 'none' };
  const notReady = replicas.filter((r) => !r.ready);
  if (notReady.length > 0) {
    return { action: 'wait', outdated: outdated.length, reason: `waiting for replica ${notReady.map((r) => r.id).join(', ')} to be ready before replacing the next` };
  }
  const settling = replicas.filter((r) => r.readyForMs < rollingReadyForMsMin);
  if (settling.length > 0) {
    return { action: 'wait', outdated: outdated.length, reason: `waiting for replica ${settling.map((r) => r.id).join(', ')} to stay ready ${rollingReadyForMsMin / 1000} s` };
  }
  const silent = replicas.filter((r) => r.report === null);
  if (silent.length > 0) return { action: 'wait', outdated: outdated.length, reason: `waiting for replica ${silent.map((r) => r.id).join(', ')} to report its state` };
  const catchingUp = replicas.filter((r) => r.report?.catchingUp === true);
  if (catchingUp.length > 0) return { action: 'wait', outdated: outdated.length, reason: `waiting for replica ${catchingUp.map((r) => r.id).join(', ')} to finish catching up` };
  const regencies = new Set(replicas.map((r) => r.report?.regency));
  if (regencies.size > 1 || replicas.some((r) => r.report?.synchronized === false)) {
    return { action: 'wait', outdated: outdated.length, reason: 'waiting for a leader change to finish' };
  }
  const follower = outdated.filter((r) => r.id !== leader).sort((a, b) => a.id - b.id)[0];
  if (follower !== undefined) return { action: 'replace', id: follower.id, outdated: outdated.length, reason: `replacing replica ${follower.id}` };
  const newest = Math.max(...replicas.map((r) => r.report?.lastDecidedCid ?? -1));
  const lagging = replicas.filter((r) => (r.report?.lastDecidedCid ?? -1) < newest - rollingLagInstancesMax);
  if (lagging.length > 0) {
    return { action: 'wait', outdated: outdated.length, reason: `the leader is replaced last, once replica ${lagging.map((r) => r.id).join(', ')} no longer lags` };
  }
  return { action: 'replace', id: leader as number, outdated: outdated.length, reason: `replacing the leader, replica ${leader}, last` };
}
