// The fault threshold with real processes (DESIGN §2, §3): with f replicas killed the cluster still
// decides, with f+1 killed it cannot, and then it gives no answer rather than a wrong one.

import { describe, expect, it } from 'vitest';
import type { FaultMode } from '../../src/core/quorum.ts';
import {
  clusterAroundTests,
  createCluster,
  errorCode,
  KvClients,
  type KvSession,
  type StartedCluster,
  statusOf,
} from './support.ts';

/** Long enough for a leader change on a loaded machine: these writes must complete. */
const progressTimeouts = { orderedTimeoutMs: 30_000, unorderedTimeoutMs: 2_000 };
/** "A few seconds": how long a write is given when no quorum is alive. */
const stalledTimeouts = { orderedTimeoutMs: 3_000, unorderedTimeoutMs: 1_000 };

interface Fixture {
  started: StartedCluster;
  clients: KvClients | null;
}

/** One cluster per describe block, stopped (and every process proven gone) even when a test fails. */
function clusterFixture(name: string, replicas: number, mode: FaultMode, subnet: number): Fixture {
  const fixture: Fixture = { started: createCluster(name, { replicas, mode, subnet }), clients: null };
  clusterAroundTests(fixture.started, {
    afterStart: async () => {
      fixture.clients = await KvClients.connect(fixture.started.cluster);
    },
    beforeStop: async () => fixture.clients?.close(),
  });
  return fixture;
}

async function currentLeader(fixture: Fixture, askId: number): Promise<number> {
  const status = await statusOf(fixture.started.cluster, askId);
  expect(status, `replica ${askId} answers /status`).not.toBeNull();
  return status!.leader;
}

/**
 * With more than f replicas down: a write gets no quorum and times out, and a read either times out too
 * or returns exactly the last acknowledged value, never the value of the write that could not complete.
 */
async function expectStalledButCorrect(fixture: Fixture, key: string, lastAcknowledged: string, label: string): Promise<void> {
  const clients = fixture.clients!;
  const writer = clients.session(`${label}-stalled-writer`, stalledTimeouts);
  const neverDecided = `never-decided-${label}`;
  const write = await writer.put(key, neverDecided).then(
    () => 'completed',
    (error: unknown) => errorCode(error),
  );
  expect(write, 'a write with more than f replicas down').toBe('BFT_ERR_CLIENT_TIMEOUT');

  const reader = clients.session(`${label}-stalled-reader`, stalledTimeouts);
  for (const ordered of [false, true]) {
    const read = await reader.get(key, ordered).then(
      (value) => ({ value }),
      (error: unknown) => ({ error: errorCode(error) }),
    );
    if ('value' in read) expect(read.value, `${ordered ? 'an ordered' : 'an unordered'} read that completed`).toBe(lastAcknowledged);
    else expect(read.error, `${ordered ? 'an ordered' : 'an unordered'} read that did not complete`).toBe('BFT_ERR_CLIENT_TIMEOUT');
  }
}

async function putAndRead(session: KvSession, key: string, value: string): Promise<void> {
  await session.put(key, value);
  expect(await session.get(key, false), `unordered read of ${key} after its write`).toBe(value);
  expect(await session.get(key, true), `ordered read of ${key} after its write`).toBe(value);
}

describe('BFT n=4, f=1: a non-leader down, then a second replica', () => {
  const fixture = clusterFixture('threshold-bft-follower', 4, 'bft', 102);

  it('decides with f replicas down and stalls without a wrong answer with f+1 down', async () => {
    const { cluster } = fixture.started;
    const session = fixture.clients!.session('main', progressTimeouts);
    await putAndRead(session, 'k', 'before-any-kill');

    const leader = await currentLeader(fixture, 0);
    const followers = cluster.replicas.map((r) => r.id).filter((id) => id !== leader);
    const [first, second] = followers as [number, number];
    cluster.kill(first);
    await putAndRead(session, 'k', 'one-follower-down');
    await putAndRead(session, 'k2', 'one-follower-down-again');

    cluster.kill(second);
    await expectStalledButCorrect(fixture, 'k', 'one-follower-down', 'bft');
  });
});

describe('BFT n=4, f=1: the leader down', () => {
  const fixture = clusterFixture('threshold-bft-leader', 4, 'bft', 103);

  it('changes leader and keeps deciding when the leader is killed', async () => {
    const { cluster } = fixture.started;
    const session = fixture.clients!.session('main', progressTimeouts);
    await putAndRead(session, 'k', 'before-the-kill');
    const before = await statusOf(cluster, 0);
    const leader = before!.leader;
    cluster.kill(leader);

    await putAndRead(session, 'k', 'after-the-leader-died');
    const survivor = cluster.replicas.map((r) => r.id).find((id) => id !== leader) as number;
    const after = await statusOf(cluster, survivor);
    expect(after!.regency, 'a survivor installed a higher regency').toBeGreaterThan(before!.regency);
    expect(after!.leader, 'the survivors follow another leader').not.toBe(leader);
  });
});

describe('crash mode n=3, f=1', () => {
  const fixture = clusterFixture('threshold-crash', 3, 'crash', 104);

  it('decides with the leader down and stalls without a wrong answer with two down', async () => {
    const { cluster } = fixture.started;
    const session = fixture.clients!.session('main', progressTimeouts);
    await putAndRead(session, 'k', 'before-any-kill');

    const leader = await currentLeader(fixture, 0);
    cluster.kill(leader);
    await putAndRead(session, 'k', 'leader-down');
    const survivors = cluster.replicas.map((r) => r.id).filter((id) => id !== leader);
    const newLeader = await currentLeader(fixture, survivors[0] as number);
    expect(newLeader, 'the survivors follow another leader').not.toBe(leader);

    cluster.kill(survivors[1] as number);
    await expectStalledButCorrect(fixture, 'k', 'leader-down', 'crash');
  });
});
