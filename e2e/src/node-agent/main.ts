// Entry point of the node agent; started by cluster:up with --layout=<state>/layout.json.
import { KubeConfig } from '@kubernetes/client-node';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ClusterLayout } from '../cluster/layout.ts';
import { e2eDir, readPinnedVersions, statePaths } from '../cluster/layout.ts';
import { NodeAgent } from './agent.ts';
import { kubeletRestartBackoff } from './backoff.ts';
import { loadImageMapping } from './images.ts';
import { KubeRest } from './kube-rest.ts';

const layoutArgument = process.argv.find((arg) => arg.startsWith('--layout='));
if (!layoutArgument) {
  process.stderr.write('usage: node-agent --layout=<cluster state>/layout.json\n');
  process.exit(2);
}
const layout = JSON.parse(readFileSync(layoutArgument.slice('--layout='.length), 'utf8')) as ClusterLayout;
const paths = statePaths(layout);
const kubeConfig = new KubeConfig();
kubeConfig.loadFromFile(paths.nodeKubeconfig);
const imageMapFile = process.env.BFTKUBE_IMAGE_MAP ?? join(e2eDir, 'images.json');
const agent = new NodeAgent({
  rest: new KubeRest(kubeConfig),
  images: loadImageMapping(imageMapFile, join(e2eDir, '..')),
  nodeName: layout.nodeName,
  hostIp: layout.hostIp,
  podIpPrefix: layout.podIpPrefix,
  dnsIp: layout.dnsIp,
  clusterDomain: layout.clusterDomain,
  apiserver: { host: layout.hostIp, port: layout.apiserverPort },
  stateDir: paths.node,
  kubernetesVersion: readPinnedVersions().kubernetes,
  backoff: layout.restartBackoffBaseMs ? { ...kubeletRestartBackoff, baseMs: layout.restartBackoffBaseMs } : kubeletRestartBackoff,
  servingCertFile: join(paths.pki, 'node.crt'),
  servingKeyFile: join(paths.pki, 'node.key'),
  dnsHostsFile: paths.dnsHosts,
});

let stopping = false;
const shutdown = () => {
  if (stopping) return;
  stopping = true;
  void agent.stop().finally(() => process.exit(0));
};
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
try {
  await agent.start();
} catch (error) {
  process.stderr.write(`${error instanceof Error ? error.stack ?? error.message : String(error)}\n`);
  await agent.stop();
  process.exit(1);
}
