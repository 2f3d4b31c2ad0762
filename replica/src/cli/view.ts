// bftkube view show|add|remove|set-f: the View Manager for a local cluster (the folder of `bftkube local`,
// whose key directory holds the View Manager's key). It reads the current view from the replicas' /status,
// signs the change, orders it through the cluster, and waits until f+1 members of the new view run it.
// An added replica is started in the background (its pid in replica-<id>.pid); a removed one is stopped.
// The folder's client.json (the connection file of `bftkube kv`) is rewritten with the new view.

import { randomUUID } from 'node:crypto';
import { parseArgs } from 'node:util';
import { BftClient } from '../client/client.ts';
import { ViewManager } from '../client/view-manager.ts';
import type { FaultMode } from '../core/quorum.ts';
import { quorumsFor } from '../core/quorum.ts';
import { readTlsMaterial } from '../crypto/certificates.ts';
import { BftError } from '../errors.ts';
import type { ReconfigurationOperation, ViewDescription } from '../protocol/reconfiguration.ts';
import { loadViewManagerKey } from '../server/keys.ts';
import { TlsClientTransport } from '../transport/tls-transport.ts';
import { LocalCluster, defaultLocalDir, viewManagerClientName } from './local-cluster.ts';

interface ReportedStatus {
  readonly id: number;
  readonly view: { readonly number: number; readonly mode: FaultMode; readonly f: number; readonly members: readonly { id: number; host: string; port: number; adminPort: number }[] };
  readonly leader: number;
  readonly lastDecidedCid: number;
  readonly removedAtCid: number | null;
}

const out = (line: string): void => {
  process.stdout.write(`${line}\n`);
};

/** What the running replicas of the folder report, and the newest view that f+1 of its members vouch for. */
async function currentView(cluster: LocalCluster): Promise<{ statuses: ReportedStatus[]; view: ReportedStatus['view'] }> {
  const statuses = (await Promise.all(cluster.replicas.map((r) => cluster.status(r.id)))).filter((s): s is Record<string, unknown> => s !== null) as unknown as ReportedStatus[];
  const candidates = [...new Map(statuses.map((s) => [s.view.number, s.view])).values()].sort((a, b) => b.number - a.number);
  for (const view of candidates) {
    const vouching = statuses.filter((s) => s.view.number >= view.number && view.members.some((m) => m.id === s.id)).length;
    if (vouching >= quorumsFor(view.members.length, view.f, view.mode).includesCorrect) return { statuses, view };
  }
  throw new BftError('BFT_ERR_CONFIG_INVALID', `no view is reported by enough running replicas of ${cluster.options.dir}; is the cluster running ("bftkube local")?`);
}

export async function runView(args: string[]): Promise<void> {
  const [command = 'show', ...rest] = args;
  const { values } = parseArgs({
    args: rest,
    options: {
      dir: { type: 'string' },
      id: { type: 'string' },
      f: { type: 'string' },
      'timeout-seconds': { type: 'string', default: '60' },
    },
  });
  const cluster = await LocalCluster.open(values.dir ?? defaultLocalDir('local'));
  const { statuses, view } = await currentView(cluster);
  if (command === 'show') {
    out(`view ${view.number}: ${view.mode}, f=${view.f}, ${view.members.length} members`);
    for (const member of view.members) {
      const status = statuses.find((s) => s.id === member.id);
      const state = status === undefined ? 'not answering' : `last decided cid ${status.lastDecidedCid}${status.leader === member.id ? ', leader' : ''}`;
      out(`  replica ${member.id}  ${member.host}:${member.port}  admin http://${member.host}:${member.adminPort}  ${state}`);
    }
    return;
  }
  const timeoutMs = Number(values['timeout-seconds']) * 1000;
  const client = new BftClient({
    clientId: `${viewManagerClientName}/${randomUUID()}`,
    view: { number: view.number, mode: view.mode, f: view.f, members: view.members.map((m) => m.id) },
    transport: new TlsClientTransport({ tls: await readTlsMaterial(cluster.keysDir, `client-${viewManagerClientName}`), replicas: view.members }),
    timeouts: { orderedTimeoutMs: timeoutMs },
  });
  try {
    const viewManager = new ViewManager({ privateKeyPem: await loadViewManagerKey(cluster.keysDir), client });
    let operations: ReconfigurationOperation[];
    let added: number | null = null;
    let removed: number | null = null;
    switch (command) {
      case 'add': {
        const highest = Math.max(...cluster.replicas.map((r) => r.id), ...view.members.map((m) => m.id));
        added = values.id === undefined ? highest + 1 : Number(values.id);
        operations = [{ kind: 'add', ...(await cluster.createReplicaKeys(added)) }];
        if (values.f !== undefined) operations.push({ kind: 'set-f', f: Number(values.f) });
        break;
      }
      case 'remove':
        if (values.id === undefined) throw new BftError('BFT_ERR_CONFIG_INVALID', 'remove needs --id: the replica to remove');
        removed = Number(values.id);
        operations = [{ kind: 'remove', id: removed }];
        if (values.f !== undefined) operations.push({ kind: 'set-f', f: Number(values.f) });
        break;
      case 'set-f':
        if (values.f === undefined) throw new BftError('BFT_ERR_CONFIG_INVALID', 'set-f needs --f');
        operations = [{ kind: 'set-f', f: Number(values.f) }];
        break;
      default:
        throw new BftError('BFT_ERR_CONFIG_INVALID', `unknown view command ${command}; use show, add, remove or set-f`);
    }
    const next: ViewDescription = await viewManager.reconfigure(operations, { timeoutMs });
    out(`view ${next.number}: ${next.mode}, f=${next.f}, members ${next.members.map((m) => m.id).join(', ')}`);
    // New clients start from the new view (running ones follow it by themselves).
    await cluster.writeConnectionFile(next);
    if (added !== null) {
      await cluster.addReplica(added, next);
      const pid = cluster.startDetached(added);
      await cluster.waitReady(added, timeoutMs, pid);
      out(`replica ${added} runs (pid ${pid}) and caught up; log ${cluster.replica(added).logFile}`);
    }
    if (removed !== null) {
      await cluster.stopReplica(removed);
      out(`replica ${removed} was removed and stopped`);
    }
  } finally {
    await client.close();
  }
}
