import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readConnectionFile } from '../client/connection.ts';
import { LocalCluster } from './local-cluster.ts';

describe('the connection file of a local cluster', () => {
  let root: string;
  let cluster: LocalCluster;
  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'bftkube-local-cluster-'));
    cluster = new LocalCluster({ dir: join(root, 'local'), replicas: 4, mode: 'bft', clients: ['app'], subnet: 250 });
    await cluster.prepare();
  });
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('names the genesis view after prepare()', async () => {
    expect(cluster.connectionFile).toBe(join(root, 'local', 'client.json'));
    expect(await readConnectionFile(cluster.connectionFile)).toEqual({
      cluster: 'local',
      view: { number: 0, mode: 'bft', f: 1, members: [0, 1, 2, 3].map((id) => ({ id, host: `127.0.250.${10 + id}`, port: 11000 })) },
    });
  });

  it('follows the views a reconfiguration makes, never going back to an older one', async () => {
    const member = (id: number) => ({ id, host: `127.0.250.${10 + id}`, port: 11000, adminPort: 12000, publicKey: new Uint8Array(32) });
    await cluster.addReplica(4, { number: 1, mode: 'bft', f: 1, members: [0, 1, 2, 3, 4].map(member) });
    expect((await readConnectionFile(cluster.connectionFile)).view.members.map((m) => m.id)).toEqual([0, 1, 2, 3, 4]);
    await cluster.writeConnectionFile({ number: 2, mode: 'bft', f: 1, members: [1, 2, 3, 4].map(member) });
    await cluster.writeConnectionFile({ number: 1, mode: 'bft', f: 1, members: [0, 1, 2, 3, 4].map(member) });
    const latest = await readConnectionFile(cluster.connectionFile);
    expect(latest.view.number).toBe(2);
    expect(latest.view.members.map((m) => m.id)).toEqual([1, 2, 3, 4]);
  });
});
