// The operator's list-watch loop when its connection to the apiserver breaks: every socket through a
// proxy is cut and new ones are refused for a while, as when the apiserver restarts or the network
// drops. The loop must report the failure, back off, list again once the apiserver is reachable (so
// what changed meanwhile is seen), and go on watching.

import { KubeConfig } from '@kubernetes/client-node';
import { type Server, type Socket, createConnection, createServer } from 'node:net';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { eventually, freshNamespace, kubectl } from '../../../e2e/test/kube.ts';
import { paths } from './paths.ts';
import { KubeRest, runListWatch } from './rest.ts';

/** A TCP proxy to the apiserver that a test can cut and restore. */
class CuttableProxy {
  private server: Server | null = null;
  private readonly sockets = new Set<Socket>();
  private readonly target: { host: string; port: number };
  port = 0;

  constructor(target: { host: string; port: number }) {
    this.target = target;
  }

  async open(port = 0): Promise<void> {
    const server = createServer((client) => {
      const upstream = createConnection(this.target);
      this.sockets.add(client).add(upstream);
      const forget = () => {
        client.destroy();
        upstream.destroy();
        this.sockets.delete(client);
        this.sockets.delete(upstream);
      };
      client.on('error', forget).on('close', forget);
      upstream.on('error', forget).on('close', forget);
      client.pipe(upstream).pipe(client);
    });
    await new Promise<void>((resolve, reject) => server.once('error', reject).listen(port, '127.0.0.1', () => resolve()));
    this.server = server;
    this.port = (server.address() as { port: number }).port;
  }

  /** Cuts every connection and stops accepting new ones. */
  async cut(): Promise<void> {
    const server = this.server;
    this.server = null;
    for (const socket of this.sockets) socket.destroy();
    this.sockets.clear();
    if (server !== null) await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

describe('the list-watch loop across a broken apiserver connection', () => {
  let namespace = '';
  let proxy: CuttableProxy;

  beforeAll(async () => {
    namespace = await freshNamespace('relist');
  });

  afterAll(async () => {
    await proxy?.cut();
    await kubectl(['delete', 'namespace', namespace, '--wait=false']);
  });

  it('reports the failure, lists again once the apiserver is back, and sees what changed meanwhile', { timeout: 120_000 }, async () => {
    const kubeConfig = new KubeConfig();
    kubeConfig.loadFromFile(inject('clusterKubeconfig'));
    const current = kubeConfig.getCurrentCluster();
    if (current === null) throw new Error('the test kubeconfig names no cluster');
    const server = new URL(current.server);
    proxy = new CuttableProxy({ host: server.hostname, port: Number(server.port) });
    await proxy.open();
    // The apiserver's certificate names 127.0.0.1, so the proxy's address verifies.
    kubeConfig.clusters = kubeConfig.clusters.map((cluster) => (cluster.name === current.name ? { ...cluster, server: `https://127.0.0.1:${proxy.port}` } : cluster));

    const seen = new Set<string>();
    let lists = 0;
    const errors: unknown[] = [];
    const abort = new AbortController();
    const loop = runListWatch(
      new KubeRest(kubeConfig),
      paths.configMaps(namespace),
      {},
      {
        onList: (items) => {
          lists++;
          for (const item of items) seen.add(String(item.metadata?.name));
        },
        onEvent: (type, object) => {
          if (type !== 'DELETED') seen.add(String(object.metadata?.name));
        },
        onError: (error) => errors.push(error),
      },
      abort.signal,
    );
    try {
      await kubectl(['-n', namespace, 'create', 'configmap', 'before']);
      await eventually('the event before the cut', 15_000, async () => seen.has('before'));
      expect(lists).toBe(1);

      const port = proxy.port;
      await proxy.cut();
      await kubectl(['-n', namespace, 'create', 'configmap', 'while-cut']);
      await eventually('the loop notices the broken connection', 15_000, async () => errors.length > 0);
      // Several failed relists while the apiserver is unreachable: the loop backs off and keeps trying.
      await new Promise((resolve) => setTimeout(resolve, 3_000));
      expect(seen.has('while-cut')).toBe(false);
      await proxy.open(port);

      await eventually('a fresh list that shows what changed meanwhile', 30_000, async () => seen.has('while-cut'));
      expect(lists).toBeGreaterThanOrEqual(2);
      await kubectl(['-n', namespace, 'create', 'configmap', 'after']);
      await eventually('events again after the relist', 15_000, async () => seen.has('after'));
    } finally {
      abort.abort();
      await loop;
    }
  });
});
