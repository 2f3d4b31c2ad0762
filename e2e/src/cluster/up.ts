// npm run cluster:up: starts the local control plane and prints how to use it.
import { clusterUp, usageText } from './control-plane.ts';
import { layoutFromArguments } from './layout.ts';

const startedMs = Date.now();
try {
  const handle = await clusterUp(layoutFromArguments(process.argv));
  process.stdout.write(usageText(handle) + '\n');
  process.stdout.write(`(started in ${((Date.now() - startedMs) / 1000).toFixed(1)} s)\n`);
} catch (error) {
  process.stderr.write(`${error instanceof Error ? error.message : String(error)}\n`);
  process.exitCode = 1;
}
