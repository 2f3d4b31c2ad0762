import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { lockDataDir } from './data-dir-lock.ts';

const dirs: string[] = [];
async function freshDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'bftkube-lock-'));
  dirs.push(dir);
  return dir;
}

afterEach(async () => {
  for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
});

describe('one replica process per data directory', () => {
  it('a second lock in the same process is refused until the first is released', async () => {
    const dir = await freshDir();
    const lock = await lockDataDir(dir);
    expect((await readFile(lock.path, 'utf8')).trim()).toBe(String(process.pid));
    await expect(lockDataDir(dir)).rejects.toMatchObject({ code: 'BFT_ERR_DATA_DIR_LOCKED' });
    await lock.release();
    const again = await lockDataDir(dir);
    await again.release();
  });

  it('a lock held by a live process is refused, naming it; once that process is gone, it is taken over', async () => {
    const dir = await freshDir();
    const holder = spawn('sleep', ['30'], { stdio: 'ignore' });
    try {
      await writeFile(join(dir, 'LOCK'), `${holder.pid}\n`);
      await expect(lockDataDir(dir)).rejects.toMatchObject({ code: 'BFT_ERR_DATA_DIR_LOCKED', message: expect.stringContaining(String(holder.pid)) });
    } finally {
      const exited = new Promise((resolve) => holder.once('exit', resolve));
      holder.kill('SIGKILL');
      await exited;
    }
    const lock = await lockDataDir(dir);
    expect((await readFile(lock.path, 'utf8')).trim()).toBe(String(process.pid));
    await lock.release();
  });

  it('a lock file with garbage in it is stale', async () => {
    const dir = await freshDir();
    await writeFile(join(dir, 'LOCK'), 'not a pid');
    const lock = await lockDataDir(dir);
    await lock.release();
  });
});
