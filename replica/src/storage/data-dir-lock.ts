// One replica process per data directory: two processes appending to one write-ahead log, or one
// voting from a log the other truncates, would make the replica contradict itself. The lock is a file
// holding the owner's pid, created exclusively; a lock whose process is gone (kill -9, power loss) is
// taken over, so that a crashed replica restarts without anyone deleting files by hand.

import { open, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { BftError } from '../errors.ts';

const lockFileName = 'LOCK';
/** Directories locked by this process, so that a second open in the same process is refused too. */
const heldHere = new Set<string>();

export interface DataDirLock {
  readonly path: string;
  release(): Promise<void>;
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: it exists but belongs to someone else, which still means "in use".
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Takes the lock of `dataDir` (which must exist) or throws BFT_ERR_DATA_DIR_LOCKED naming the holder. */
export async function lockDataDir(dataDir: string): Promise<DataDirLock> {
  const path = join(dataDir, lockFileName);
  if (heldHere.has(path)) {
    throw new BftError('BFT_ERR_DATA_DIR_LOCKED', `${dataDir} is already in use by this process; give each replica its own dataDir`);
  }
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const handle = await open(path, 'wx');
      try {
        await handle.writeFile(`${process.pid}\n`);
        await handle.sync();
      } finally {
        await handle.close();
      }
      heldHere.add(path);
      return {
        path,
        release: async () => {
          heldHere.delete(path);
          await rm(path, { force: true });
        },
      };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') {
        throw new BftError('BFT_ERR_DATA_DIR_LOCKED', `cannot create ${path}; check that ${dataDir} exists and is writable`, { cause: error });
      }
    }
    const holder = Number.parseInt((await readFile(path, 'utf8').catch(() => '')).trim(), 10);
    // In a container every replica may be pid 1: a lock naming our own pid is a previous life's.
    if (Number.isSafeInteger(holder) && holder > 0 && holder !== process.pid && processAlive(holder)) {
      throw new BftError(
        'BFT_ERR_DATA_DIR_LOCKED',
        `${dataDir} is in use by process ${holder}; stop that replica first, or give this one another dataDir`,
      );
    }
    // Stale: its process is gone. Remove it and try once more (another starter may win the race).
    await rm(path, { force: true });
  }
  throw new BftError('BFT_ERR_DATA_DIR_LOCKED', `${dataDir} was locked by another starting process; stop it first`);
}
