import { open } from 'node:fs/promises';

/** Makes a created, renamed or deleted name durable (fsync of the directory, as Linux requires). */
export async function syncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
