// Kubernetes events (events.k8s.io/v1) on a BftCluster, with reasons: what `kubectl describe` and
// `kubectl events` show. Best effort: an event that cannot be written is logged, never fatal.

import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { apiVersion, kind } from '../api/bftcluster.ts';
import type { ClusterRef } from '../specs/names.ts';
import { paths } from './paths.ts';
import type { KubeRest } from './rest.ts';

export function eventRecorder(rest: Pick<KubeRest, 'post'>, instance: string, logger?: Logger) {
  return (cluster: ClusterRef, type: 'Normal' | 'Warning', reason: string, message: string): void => {
    const now = new Date().toISOString().replace(/Z$/, '000Z');
    void rest
      .post(paths.events(cluster.namespace), {
        apiVersion: 'events.k8s.io/v1',
        kind: 'Event',
        // Named like client-go's: the object's name and a unique suffix (generateName would need a name ending in an alphanumeric).
        metadata: { name: `${cluster.name}.${Date.now().toString(16)}${randomBytes(4).toString('hex')}`, namespace: cluster.namespace },
        eventTime: now,
        reportingController: 'bftkube.dev/operator',
        reportingInstance: instance,
        action: reason,
        reason,
        type,
        note: message.slice(0, 1024),
        regarding: { apiVersion, kind, name: cluster.name, namespace: cluster.namespace, uid: cluster.uid },
      })
      .catch((error: unknown) => logger?.warn({ err: error, reason }, 'an event could not be recorded'));
  };
}
