// npm run generate:crd: writes crds/bftclusters.bftkube.dev.yaml from the zod schemas.
import { writeFile } from 'node:fs/promises';
import { crdPath } from './crd-file.ts';
import { renderCrdYaml } from './crd.ts';

await writeFile(crdPath, renderCrdYaml());
process.stdout.write(`wrote ${crdPath}\n`);
