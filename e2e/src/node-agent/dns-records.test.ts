import { describe, expect, it } from 'vitest';
import { headlessRecords } from './dns-records.ts';

const service = (name: string, clusterIP: string, extra: Record<string, unknown> = {}) => ({
  metadata: { name, namespace: 'ns', uid: name }, spec: { clusterIP, selector: { app: 'peer' }, ...extra },
});
const pod = (name: string, ip: string | undefined, ready: boolean, extra: Record<string, unknown> = {}) => ({
  metadata: { name, namespace: 'ns', uid: name, labels: { app: 'peer' } },
  spec: { hostname: name, subdomain: 'peers' },
  status: { ...(ip ? { podIP: ip } : {}), conditions: [{ type: 'Ready', status: ready ? 'True' : 'False' }] },
  ...extra,
});

describe('headless Service DNS records', () => {
  it('names every ready selected pod under the Service and under its own hostname', () => {
    const lines = headlessRecords([service('peers', 'None')], [pod('peer-0', '127.21.1.1', true), pod('peer-1', '127.21.1.2', true)], 'cluster.local');
    expect(lines).toEqual([
      '127.21.1.1 peers.ns.svc.cluster.local',
      '127.21.1.1 peer-0.peers.ns.svc.cluster.local',
      '127.21.1.2 peers.ns.svc.cluster.local',
      '127.21.1.2 peer-1.peers.ns.svc.cluster.local',
    ]);
  });

  it('leaves out pods that are not ready, have no IP or are terminating, unless not-ready addresses are published', () => {
    const pods = [pod('a', '127.21.1.1', false), pod('b', undefined, true), pod('c', '127.21.1.3', true, {}), pod('d', '127.21.1.4', true)];
    (pods[2]!.metadata as Record<string, unknown>).deletionTimestamp = '2026-01-01T00:00:00Z';
    expect(headlessRecords([service('peers', 'None')], pods, 'cluster.local')).toEqual([
      '127.21.1.4 peers.ns.svc.cluster.local', '127.21.1.4 d.peers.ns.svc.cluster.local',
    ]);
    expect(headlessRecords([service('peers', 'None', { publishNotReadyAddresses: true })], [pods[0]!], 'cluster.local')).toContain('127.21.1.1 peers.ns.svc.cluster.local');
  });

  it('ignores Services with a cluster IP (the kubernetes plugin answers those)', () => {
    expect(headlessRecords([service('web', '10.96.0.12')], [pod('peer-0', '127.21.1.1', true)], 'cluster.local')).toEqual([]);
  });
});
