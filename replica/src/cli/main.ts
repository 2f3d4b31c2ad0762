// The bftkube command line:
//   bftkube keys --dir DIR --replicas 0,1,2,3 [--hosts h0,h1,h2,h3] [--clients a,b] [--cluster NAME]
//   bftkube replica --config FILE        (BFTKUBE_* environment variables override the file)
//   bftkube local [--replicas 4] [--mode bft|crash] [--dir DIR] [--demo-seconds 10] [--exit-after-demo]
//   bftkube view show|add|remove|set-f [--dir DIR] [--id N] [--f F]   (the View Manager of a local cluster)
//   bftkube kv get|put|delete|cas|scan ... [--connection FILE] [--keys DIR] [--client NAME]   (client/kv-client.ts)

import { parseArgs } from 'node:util';
import { BftError } from '../errors.ts';
import { generateLocalKeys } from '../server/keys.ts';

const usage = `usage:
  bftkube keys --dir DIR --replicas 0,1,2,3 [--hosts h0,h1,...] [--clients a,b] [--cluster NAME]
  bftkube replica --config FILE
  bftkube local [--replicas 4] [--mode bft|crash] [--dir DIR] [--demo-seconds 10] [--exit-after-demo]
  bftkube view show|add|remove|set-f [--dir DIR] [--id N] [--f F] [--timeout-seconds 60]
  bftkube kv get KEY | put KEY VALUE | delete KEY | cas KEY EXPECTED VALUE | cas KEY --expect-absent VALUE | scan [FROM [TO]] [--limit N]
            [--connection FILE] [--keys DIR] [--client NAME] [--ordered] [--json] [--timeout-seconds 30]
`;

async function keysCommand(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      dir: { type: 'string' },
      replicas: { type: 'string', default: '0,1,2,3' },
      hosts: { type: 'string' },
      clients: { type: 'string', default: '' },
      cluster: { type: 'string', default: 'local' },
    },
  });
  if (values.dir === undefined) throw new BftError('BFT_ERR_CONFIG_INVALID', '--dir is required: where to write the keys');
  const ids = values.replicas.split(',').map(Number);
  const hosts = values.hosts?.split(',') ?? ids.map((id) => `127.0.0.${10 + id}`);
  if (hosts.length !== ids.length) throw new BftError('BFT_ERR_CONFIG_INVALID', '--hosts needs one host per replica id');
  const isIp = (host: string) => /^\d+\.\d+\.\d+\.\d+$/.test(host) || host.includes(':');
  await generateLocalKeys({
    dir: values.dir,
    clusterName: values.cluster,
    replicas: ids.map((id, i) => {
      const host = hosts[i] as string;
      return { id, dnsNames: isIp(host) ? ['localhost'] : [host], ipAddresses: isIp(host) ? [host] : [] };
    }),
    clients: values.clients === '' ? [] : values.clients.split(','),
  });
  process.stdout.write(`keys for replicas ${ids.join(', ')} written to ${values.dir}\n`);
}

async function replicaCommand(args: string[]): Promise<void> {
  const { values } = parseArgs({ args, options: { config: { type: 'string' } } });
  const { loadReplicaConfig } = await import('../server/config.ts');
  const { startReplica } = await import('../server/replica-process.ts');
  const config = loadReplicaConfig({ ...(values.config ? { file: values.config } : {}), env: process.env });
  const replica = await startReplica(config);
  let signals = 0;
  const shutdown = (): void => {
    if (++signals > 1) process.exit(1);
    void replica.stop().then(() => process.exit(0));
  };
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);
}

async function localCommand(args: string[]): Promise<void> {
  const { runLocal } = await import('./local.ts');
  await runLocal(args);
}

async function main(): Promise<void> {
  const [command = 'help', ...args] = process.argv.slice(2);
  switch (command) {
    case 'keys':
      return keysCommand(args);
    case 'replica':
      return replicaCommand(args);
    case 'local':
      return localCommand(args);
    case 'view': {
      const { runView } = await import('./view.ts');
      return runView(args);
    }
    case 'kv': {
      const { runKv } = await import('./kv.ts');
      return runKv(args);
    }
    case 'help':
    case '--help':
      process.stdout.write(usage);
      return;
    default:
      process.stderr.write(usage);
      process.exitCode = 2;
  }
}

main().catch((error: unknown) => {
  const message = error instanceof BftError ? error.message : error instanceof Error ? (error.stack ?? error.message) : String(error);
  process.stderr.write(`bftkube: ${message}\n`);
  if (error instanceof Error && error.cause !== undefined) process.stderr.write(`  cause: ${String(error.cause)}\n`);
  process.exit(1);
});
