// Maps a container image to a local command: the node agent's stand-in for pulling and running images.
import { readFileSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';

/** What an image would carry: its ENTRYPOINT, CMD and working directory. */
export interface ImageCommand {
  entrypoint: string[];
  cmd: string[];
  workingDir: string;
}

interface ImageMappingEntry {
  /** Image reference pattern; `*` matches any run of characters (e.g. "bftkube/replica:*"). */
  image: string;
  entrypoint: string[];
  cmd?: string[];
  workingDir?: string;
}

export interface ImageMapping {
  resolve(image: string): ImageCommand | undefined;
}

function patternToRegExp(pattern: string): RegExp {
  const escaped = pattern.split('*').map((part) => part.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*');
  return new RegExp(`^${escaped}$`);
}

/**
 * Paths in the file are relative to baseDir; the word "node" names the Node 24 that runs this agent,
 * so mapped TypeScript entry points run the same way everywhere.
 */
export function loadImageMapping(file: string, baseDir: string, nodeExecutable = process.execPath): ImageMapping {
  const entries = JSON.parse(readFileSync(file, 'utf8')) as { images: ImageMappingEntry[] };
  const resolveWord = (word: string): string => {
    if (word === 'node') return nodeExecutable;
    if (word.startsWith('./') || word.startsWith('../')) return resolve(baseDir, word);
    return word;
  };
  const compiled = entries.images.map((entry) => ({
    pattern: patternToRegExp(entry.image),
    command: {
      entrypoint: entry.entrypoint.map(resolveWord),
      cmd: (entry.cmd ?? []).map(resolveWord),
      workingDir: entry.workingDir ? (isAbsolute(entry.workingDir) ? entry.workingDir : resolve(baseDir, entry.workingDir)) : baseDir,
    },
  }));
  return {
    resolve(image: string): ImageCommand | undefined {
      return compiled.find((entry) => entry.pattern.test(image))?.command;
    },
  };
}

/** Kubernetes semantics: command replaces ENTRYPOINT, args replace CMD; args alone keep ENTRYPOINT. */
export function containerArgv(image: ImageCommand, command: string[] | undefined, args: string[] | undefined): string[] {
  if (command && command.length > 0) return [...command, ...(args ?? [])];
  return [...image.entrypoint, ...(args && args.length > 0 ? args : image.cmd)];
}
