// Leader election on a coordination.k8s.io Lease: one operator instance reconciles at a time. The holder
// renews every renewMs; another instance takes over once the lease has not been renewed for its duration.
// Optimistic concurrency (resourceVersion) settles races: a conflict means someone else moved first.

import type { Logger } from 'pino';
import { paths } from './paths.ts';
import { type JsonObject, type KubeRest, isConflict, isNotFound } from './rest.ts';

export interface LeaseOptions {
  readonly rest: Pick<KubeRest, 'get' | 'post' | 'put'>;
  readonly namespace: string;
  readonly name: string;
  readonly identity: string;
  readonly durationSeconds: number;
  readonly renewMs: number;
  readonly onStartedLeading: () => void;
  readonly onStoppedLeading: () => void;
  readonly logger?: Logger;
}

function microTime(date: Date): string {
  return date.toISOString().replace(/Z$/, '000Z');
}

export class LeaderElection {
  private readonly options: LeaseOptions;
  private leading = false;
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;

  constructor(options: LeaseOptions) {
    this.options = options;
  }

  get isLeader(): boolean {
    return this.leading;
  }

  start(): void {
    void this.tick();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.setLeading(false);
  }

  /**
   * Stops, and if this instance held the lease, gives it up (empty holder) so that a standby takes over
   * at once instead of after the lease's duration: what a graceful shutdown or a rolling update wants.
   */
  async release(): Promise<void> {
    const wasLeading = this.leading;
    this.stop();
    if (!wasLeading) return;
    const { rest, namespace, name, identity } = this.options;
    try {
      const lease = await rest.get(paths.lease(namespace, name));
      if (lease.spec?.holderIdentity !== identity) return;
      await rest.put(paths.lease(namespace, name), { ...lease, spec: { ...lease.spec, holderIdentity: '', leaseDurationSeconds: 1, renewTime: microTime(new Date()) } });
    } catch (error) {
      // The lease then simply expires: the successor waits for its duration.
      this.options.logger?.warn({ err: error }, 'leader election: the lease could not be released');
    }
  }

  private async tick(): Promise<void> {
    if (this.stopped) return;
    try {
      this.setLeading(await this.tryAcquireOrRenew());
    } catch (error) {
      this.options.logger?.warn({ err: error }, 'leader election: the lease could not be read or written');
      // Not renewed: a leader that cannot reach the apiserver must stop before another takes over.
      this.setLeading(false);
    }
    if (!this.stopped) this.timer = setTimeout(() => void this.tick(), this.options.renewMs);
  }

  private async tryAcquireOrRenew(): Promise<boolean> {
    const { rest, namespace, name, identity, durationSeconds } = this.options;
    const now = new Date();
    let lease: JsonObject;
    try {
      lease = await rest.get(paths.lease(namespace, name));
    } catch (error) {
      if (!isNotFound(error)) throw error;
      try {
        await rest.post(paths.leases(namespace), {
          apiVersion: 'coordination.k8s.io/v1',
          kind: 'Lease',
          metadata: { name, namespace },
          spec: { holderIdentity: identity, leaseDurationSeconds: durationSeconds, acquireTime: microTime(now), renewTime: microTime(now), leaseTransitions: 0 },
        });
        return true;
      } catch (raced) {
        if (isConflict(raced)) return false;
        throw raced;
      }
    }
    const spec = (lease.spec ?? {}) as { holderIdentity?: string; renewTime?: string; leaseDurationSeconds?: number; leaseTransitions?: number; acquireTime?: string };
    const holder = spec.holderIdentity ?? '';
    const renewedAt = spec.renewTime === undefined ? 0 : Date.parse(spec.renewTime);
    const expired = now.getTime() > renewedAt + (spec.leaseDurationSeconds ?? durationSeconds) * 1000;
    if (holder !== identity && holder !== '' && !expired) return false;
    const takingOver = holder !== identity;
    try {
      await rest.put(paths.lease(namespace, name), {
        ...lease,
        spec: {
          ...spec,
          holderIdentity: identity,
          leaseDurationSeconds: durationSeconds,
          renewTime: microTime(now),
          ...(takingOver ? { acquireTime: microTime(now), leaseTransitions: (spec.leaseTransitions ?? 0) + 1 } : {}),
        },
      });
      return true;
    } catch (error) {
      if (isConflict(error)) return false;
      throw error;
    }
  }

  private setLeading(leading: boolean): void {
    if (leading === this.leading) return;
    this.leading = leading;
    this.options.logger?.info({ identity: this.options.identity }, leading ? 'leader election: leading' : 'leader election: not leading');
    if (leading) this.options.onStartedLeading();
    else this.options.onStoppedLeading();
  }
}
