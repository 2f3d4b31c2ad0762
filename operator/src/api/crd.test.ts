import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { crdPaths } from './crd-file.ts';
import { buildCrd, renderCrdYaml } from './crd.ts';
import { bftClusterSpecSchema } from './bftcluster.ts';

describe('the BftCluster CRD', () => {
  it('in crds/ and in the chart is what the zod schemas generate (run `npm run generate:crd` after changing them)', async () => {
    const generated = renderCrdYaml();
    for (const path of crdPaths) expect(await readFile(path, 'utf8'), path).toBe(generated);
  });

  it('is structural: every schema node has a type, no $schema or propertyNames, maps of unknown values preserved', () => {
    const problems: string[] = [];
    const visit = (node: Record<string, unknown>, path: string): void => {
      if (node.type === undefined && node['x-kubernetes-preserve-unknown-fields'] !== true) problems.push(`${path}: no type`);
      for (const key of ['$schema', 'propertyNames', 'anyOf', 'oneOf', '$ref']) if (key in node) problems.push(`${path}: ${key}`);
      for (const [name, child] of Object.entries((node.properties as Record<string, Record<string, unknown>>) ?? {})) visit(child, `${path}.${name}`);
      if (node.items !== undefined) visit(node.items as Record<string, unknown>, `${path}[]`);
    };
    const version = (buildCrd().spec as { versions: Array<{ schema: { openAPIV3Schema: Record<string, unknown> } }> }).versions[0];
    visit(version!.schema.openAPIV3Schema, '');
    expect(problems).toEqual([]);
  });

  it('accepts every example under crds/examples/ and defaults what they leave out', async () => {
    for (const name of ['bft-4.yaml', 'crash-3.yaml', 'bft-7-f2.yaml']) {
      const example = parse(await readFile(new URL(`../../../crds/examples/${name}`, import.meta.url), 'utf8')) as { spec: unknown };
      const spec = bftClusterSpecSchema.parse(example.spec);
      expect(spec.storage.retentionPolicy).toBe('Delete');
      expect(spec.service.module).toBe('builtin:kv');
    }
  });
});
