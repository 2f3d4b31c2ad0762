import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { containerArgv, loadImageMapping } from './images.ts';

function mappingFile(images: unknown[]): string {
  const dir = mkdtempSync(join(tmpdir(), 'bftkube-images-'));
  const file = join(dir, 'images.json');
  writeFileSync(file, JSON.stringify({ images }));
  return file;
}

describe('image mapping', () => {
  const file = mappingFile([
    { image: 'bftkube/replica:*', entrypoint: ['node', './replica/src/cli/main.ts'], cmd: ['serve'] },
    { image: 'busybox*', entrypoint: ['/bin/sh'] },
  ]);
  const mapping = loadImageMapping(file, '/repo', '/opt/node24/bin/node');

  it('maps any tag of a pattern to its command, with "node" meaning the agent\'s own Node', () => {
    expect(mapping.resolve('bftkube/replica:0.1.0')).toEqual({
      entrypoint: ['/opt/node24/bin/node', '/repo/replica/src/cli/main.ts'], cmd: ['serve'], workingDir: '/repo',
    });
  });

  it('leaves an image no pattern matches unmapped', () => {
    expect(mapping.resolve('bftkube/replicas:1')).toBeUndefined();
    expect(mapping.resolve('nginx:1.27')).toBeUndefined();
  });

  it('follows Kubernetes: command replaces the entrypoint, args alone replace only cmd', () => {
    const image = mapping.resolve('bftkube/replica:1')!;
    expect(containerArgv(image, undefined, undefined)).toEqual(['/opt/node24/bin/node', '/repo/replica/src/cli/main.ts', 'serve']);
    expect(containerArgv(image, undefined, ['--id', '2'])).toEqual(['/opt/node24/bin/node', '/repo/replica/src/cli/main.ts', '--id', '2']);
    expect(containerArgv(image, ['sh', '-c'], ['echo hi'])).toEqual(['sh', '-c', 'echo hi']);
  });
});
