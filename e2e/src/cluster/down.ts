// npm run cluster:down [-- --keep-state]: stops what cluster:up started, by pid, and removes its state.
import { clusterDown } from './control-plane.ts';
import { layoutFromArguments } from './layout.ts';

try {
  await clusterDown(layoutFromArguments(process.argv), { keepState: process.argv.includes('--keep-state') });
  process.stdout.write('Local control plane stopped.\n');
} catch (error) {
  process.stderr.write(`${error instanceof Error ? error.message : String(error)}\n`);
  process.exitCode = 1;
}
