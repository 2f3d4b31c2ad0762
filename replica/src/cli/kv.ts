// bftkube kv get|put|delete|cas|scan: the key-value service from the command line, through the client
// library (client/kv-client.ts) with a connection file and a key folder (client/connection.ts). Without
// options it talks to the cluster of `bftkube local` with that folder's application client.
//
// Values are given and printed as UTF-8 text; --json prints one JSON object instead, with `valueBase64`
// in place of `value` for a value that is not UTF-8. Exit status: 0 done, 1 failed (stderr carries the
// BFT_ERR_* code), 3 a compare-and-set whose comparison failed (nothing was written).

import { access } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import { limits } from '../constants.ts';
import { openKvClient, connectionFileName } from '../client/connection.ts';
import type { KvClient, KvConsistency } from '../client/kv-client.ts';
import { BftError } from '../errors.ts';
import { LocalCluster, defaultLocalDir, viewManagerClientName } from './local-cluster.ts';

/** Exit status of a compare-and-set that found another value: not an error, but a script must see it. */
export const casNotSwappedExitCode = 3;

const strictUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

function usageError(message: string): BftError {
  return new BftError('BFT_ERR_CONFIG_INVALID', `${message}; see "bftkube help" for the kv commands and options`);
}

/** A value for JSON: its text, or base64 when it is not UTF-8. */
function jsonValue(value: Uint8Array): { value: string } | { valueBase64: string } {
  try {
    return { value: strictUtf8.decode(value) };
  } catch {
    return { valueBase64: Buffer.from(value).toString('base64') };
  }
}

async function existsPath(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * The application client of a `bftkube local` folder: the first client it issued other than the View
 * Manager's, or null when `dir` is not such a folder.
 */
async function localApplicationClient(dir: string): Promise<string | null> {
  try {
    const cluster = await LocalCluster.open(dir);
    return cluster.options.clients.find((name) => name !== viewManagerClientName) ?? null;
  } catch {
    return null;
  }
}

function integerOption(name: string, text: string, min: number, max: number): number {
  const value = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(value) || value < min || value > max) throw usageError(`--${name} must be an integer from ${min} to ${max}, got ${JSON.stringify(text)}`);
  return value;
}

export async function runKv(args: string[]): Promise<void> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      allowPositionals: true,
      options: {
        connection: { type: 'string' },
        keys: { type: 'string' },
        client: { type: 'string' },
        ordered: { type: 'boolean', default: false },
        json: { type: 'boolean', default: false },
        'expect-absent': { type: 'boolean', default: false },
        limit: { type: 'string', default: String(limits.kvScanEntriesDefault) },
        'timeout-seconds': { type: 'string', default: '30' },
      },
    });
  } catch (cause) {
    throw usageError((cause as Error).message);
  }
  const { values, positionals } = parsed;
  const [command, ...operands] = positionals;
  const arity: Record<string, [number, number]> = { get: [1, 1], put: [2, 2], delete: [1, 1], cas: values['expect-absent'] ? [2, 2] : [3, 3], scan: [0, 2] };
  const expected = command === undefined ? undefined : arity[command];
  if (command === undefined || expected === undefined) throw usageError(`unknown kv command ${JSON.stringify(command ?? '')}; use get, put, delete, cas or scan`);
  if (operands.length < expected[0] || operands.length > expected[1]) {
    throw usageError(`kv ${command} takes ${expected[0] === expected[1] ? expected[0] : `${expected[0]} to ${expected[1]}`} arguments, got ${operands.length}`);
  }
  if (values['expect-absent'] && command !== 'cas') throw usageError('--expect-absent is for cas only');
  const timeoutMs = integerOption('timeout-seconds', values['timeout-seconds'], 1, limits.clientTimeoutMsMax / 1000) * 1000;
  const limit = integerOption('limit', values.limit, 1, limits.kvRangeEntriesMax);

  const localDir = defaultLocalDir('local');
  const connectionFile = values.connection ?? join(localDir, connectionFileName);
  if (values.connection === undefined && !(await existsPath(connectionFile))) {
    throw new BftError('BFT_ERR_CONNECTION_INVALID', `no --connection given and ${connectionFile} does not exist: start a local cluster with "bftkube local", or pass --connection FILE (the key client.json of the ConfigMap <cluster>-config)`);
  }
  // The local folder keeps its keys beside its connection file.
  const keysDir = values.keys ?? join(dirname(connectionFile), 'keys');
  const clientName = values.client ?? (values.keys === undefined ? await localApplicationClient(dirname(connectionFile)) : null) ?? undefined;
  const consistency: KvConsistency = values.ordered ? 'ordered' : 'unordered';

  const client = await openKvClient({
    connectionFile,
    keysDir,
    ...(clientName === undefined ? {} : { clientName }),
    timeouts: { orderedTimeoutMs: timeoutMs, unorderedTimeoutMs: Math.min(timeoutMs, 2_000) },
  });
  try {
    const outcome = await execute(client, command, operands, { consistency, limit });
    process.stdout.write(values.json ? `${JSON.stringify(outcome.json)}\n` : outcome.text);
    if (outcome.exitCode !== 0) process.exitCode = outcome.exitCode;
  } catch (error) {
    if (values.json && error instanceof BftError) process.stdout.write(`${JSON.stringify({ error: { code: error.code, message: error.message.slice(`${error.code}: `.length) } })}\n`);
    throw error;
  } finally {
    await client.close();
  }
}

interface Outcome {
  readonly json: unknown;
  /** What plain output prints: text, or a value's own bytes. */
  readonly text: string | Uint8Array;
  readonly exitCode: number;
}

/** A value on one line of plain output: its text, or `base64:` and its base64 when it is not UTF-8. */
function printable(value: Uint8Array): string {
  const shown = jsonValue(value);
  return 'value' in shown ? shown.value : `base64:${shown.valueBase64}`;
}

async function execute(client: KvClient, command: string, operands: string[], options: { consistency: KvConsistency; limit: number }): Promise<Outcome> {
  const key = operands[0] as string;
  switch (command) {
    case 'get': {
      const value = await client.get(key, { consistency: options.consistency });
      // An absent key prints nothing (--json says found: false); a value prints as its bytes and a newline.
      if (value === null) return { json: { key, found: false }, text: '', exitCode: 0 };
      return { json: { key, found: true, ...jsonValue(value) }, text: Buffer.concat([value, Buffer.from('\n')]), exitCode: 0 };
    }
    case 'put': {
      const { existed } = await client.put(key, operands[1] as string);
      return { json: { key, existed }, text: existed ? 'OK (replaced)\n' : 'OK (created)\n', exitCode: 0 };
    }
    case 'delete': {
      const { existed } = await client.delete(key);
      return { json: { key, existed }, text: existed ? 'deleted\n' : 'not found\n', exitCode: 0 };
    }
    case 'cas': {
      const expected = operands.length === 2 ? null : (operands[1] as string);
      const result = await client.compareAndSet(key, expected, operands.at(-1) as string);
      if (result.swapped) return { json: { key, swapped: true }, text: 'swapped\n', exitCode: 0 };
      if (result.current === null) {
        return { json: { key, swapped: false, current: { found: false } }, text: 'not swapped: the key is absent\n', exitCode: casNotSwappedExitCode };
      }
      return {
        json: { key, swapped: false, current: { found: true, ...jsonValue(result.current) } },
        text: `not swapped: the current value is ${printable(result.current)}\n`,
        exitCode: casNotSwappedExitCode,
      };
    }
    default: {
      // scan: pages until `limit` entries or the end, since one result may stop early at its size bound.
      // The pages are separate reads, not one snapshot.
      const to = operands[1] ?? null;
      const entries: { key: string; value: Uint8Array }[] = [];
      let next: string | null = operands[0] ?? '';
      while (next !== null && entries.length < options.limit) {
        const page = await client.scan(next, to, options.limit - entries.length, { consistency: options.consistency });
        entries.push(...page.entries);
        next = page.next;
        // A correct cluster returns at least one entry whenever it names a next key; never loop on nothing.
        if (page.entries.length === 0) break;
      }
      return {
        json: { entries: entries.map((entry) => ({ key: entry.key, ...jsonValue(entry.value) })), next },
        text: entries.map((entry) => `${entry.key}\t${printable(entry.value)}\n`).join('') + (next === null ? '' : `(more from ${JSON.stringify(next)}: scan on with FROM set to it)\n`),
        exitCode: 0,
      };
    }
  }
}
