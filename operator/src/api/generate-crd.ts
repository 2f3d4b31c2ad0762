// npm run generate:crd: writes the CRD from the zod schemas to crds/ and to the operator's chart.
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { crdPaths } from './crd-file.ts';
import { renderCrdYaml } from './crd.ts';

const text = renderCrdYaml();
for (const path of crdPaths) {
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, text);
  process.stdout.write(`wrote ${path}\n`);
}
