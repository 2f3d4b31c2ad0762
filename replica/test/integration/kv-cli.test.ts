// Applications against a real 4-replica cluster that requires signed requests: `bftkube kv` as child
// processes with the connection file and the local key folder that LocalCluster writes, and openKvClient
// with the operator's Secret layout (made here from the local keys). Both see each other's writes.

import { spawn } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { openKvClient, readConnectionFile } from '../../src/client/connection.ts';
import type { KvClient } from '../../src/client/kv-client.ts';
import { loadPublicKeys } from '../../src/server/keys.ts';
import { type StartedCluster, clientName, clusterAroundTests, createCluster, errorCode } from './support.ts';

const mainScript = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));
/** A CLI call connects, orders one request and exits: seconds; the bound only stops a hung child. */
const cliTimeoutMs = 60_000;

const started: StartedCluster = createCluster('kv-cli', { replicas: 4, mode: 'bft', subnet: 109, configOverrides: { requireSignedRequests: true } });
const cluster = started.cluster;
let secretDir: string | null = null;
const clients: KvClient[] = [];

clusterAroundTests(started, {
  beforeStop: async () => {
    await Promise.all(clients.map((client) => client.close()));
    if (secretDir !== null) await rm(secretDir, { recursive: true, force: true });
  },
});

interface CliResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** `bftkube kv ...` in a child process, with the cluster's connection file unless `args` names one. */
function kv(args: readonly string[], options: { readonly defaults?: 'explicit' | 'beside-connection' } = {}): Promise<CliResult> {
  const paths = options.defaults === 'beside-connection' ? ['--connection', cluster.connectionFile] : ['--connection', cluster.connectionFile, '--keys', cluster.keysDir, '--client', clientName];
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [mainScript, 'kv', ...args, ...paths], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`bftkube kv ${args.join(' ')} did not exit within ${cliTimeoutMs} ms; stderr: ${stderr}`));
    }, cliTimeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/**
 * The operator's `<cluster>-client` Secret as a mounted folder, from the local keys of the `it` client:
 * tls.crt/tls.key, signing.pem/signing.pub and client-id instead of client-it.* and signing/client-it.pem.
 */
async function secretLayoutFolder(options: { readonly withSigningKey: boolean }): Promise<string> {
  secretDir ??= await mkdtemp(join(tmpdir(), 'bftkube-kv-secret-'));
  const dir = join(secretDir, options.withSigningKey ? 'signed' : 'unsigned');
  await mkdir(dir, { recursive: true });
  await copyFile(join(cluster.keysDir, 'ca.crt'), join(dir, 'ca.crt'));
  await copyFile(join(cluster.keysDir, `client-${clientName}.crt`), join(dir, 'tls.crt'));
  await copyFile(join(cluster.keysDir, `client-${clientName}.key`), join(dir, 'tls.key'));
  await writeFile(join(dir, 'client-id'), clientName);
  if (options.withSigningKey) {
    await copyFile(join(cluster.keysDir, 'signing', `client-${clientName}.pem`), join(dir, 'signing.pem'));
    const publicKey = (await loadPublicKeys(cluster.keysDir)).clientPublicKeys.get(clientName) as Uint8Array;
    await writeFile(join(dir, 'signing.pub'), Buffer.from(publicKey).toString('base64'));
  }
  return dir;
}

describe('the connection file LocalCluster writes', () => {
  it('names the cluster and its genesis view', async () => {
    const connection = await readConnectionFile(cluster.connectionFile);
    expect(connection).toEqual({
      cluster: 'local',
      view: { number: 0, mode: 'bft', f: 1, members: cluster.replicas.map((r) => ({ id: r.id, host: r.host, port: r.port })) },
    });
  });
});

describe('bftkube kv', () => {
  it('puts, gets unordered and ordered, compares-and-sets, scans and deletes', async () => {
    expect(await kv(['put', 'greeting', 'hello'])).toMatchObject({ code: 0, stdout: 'OK (created)\n' });
    expect(await kv(['get', 'greeting'])).toMatchObject({ code: 0, stdout: 'hello\n' });
    const ordered = await kv(['get', 'greeting', '--ordered', '--json']);
    expect(ordered.code).toBe(0);
    expect(JSON.parse(ordered.stdout)).toEqual({ key: 'greeting', found: true, value: 'hello' });

    expect(await kv(['cas', 'greeting', 'hello', 'world'])).toMatchObject({ code: 0, stdout: 'swapped\n' });
    const lost = await kv(['cas', 'greeting', 'hello', 'again', '--json']);
    expect(lost.code).toBe(3);
    expect(JSON.parse(lost.stdout)).toEqual({ key: 'greeting', swapped: false, current: { found: true, value: 'world' } });
    expect(await kv(['cas', 'fresh', '--expect-absent', 'v1'])).toMatchObject({ code: 0, stdout: 'swapped\n' });
    expect(await kv(['cas', 'fresh', '--expect-absent', 'v2'])).toMatchObject({ code: 3, stdout: 'not swapped: the current value is v1\n' });

    const scan = await kv(['scan', '--json', '--ordered']);
    expect(scan.code).toBe(0);
    expect(JSON.parse(scan.stdout)).toEqual({ entries: [{ key: 'fresh', value: 'v1' }, { key: 'greeting', value: 'world' }], next: null });
    expect(await kv(['scan', 'a', 'g', '--limit', '1'])).toMatchObject({ code: 0, stdout: 'fresh\tv1\n' });

    expect(await kv(['delete', 'greeting'])).toMatchObject({ code: 0, stdout: 'deleted\n' });
    expect(await kv(['get', 'greeting', '--ordered'])).toMatchObject({ code: 0, stdout: '' });
    expect(JSON.parse((await kv(['get', 'greeting', '--json'])).stdout)).toEqual({ key: 'greeting', found: false });
  });

  it('finds the keys and the application client beside the connection file of a local cluster', async () => {
    expect(await kv(['get', 'fresh'], { defaults: 'beside-connection' })).toMatchObject({ code: 0, stdout: 'v1\n' });
  });

  it('exits non-zero with the error code', async () => {
    const badKey = await kv(['put', '', 'x']);
    expect(badKey.code).toBe(1);
    expect(badKey.stderr).toMatch(/^bftkube: BFT_ERR_KV_OPERATION_INVALID: put: key must be 1 to 1024 UTF-8 bytes/);
    const json = await kv(['put', '', 'x', '--json']);
    expect(JSON.parse(json.stdout)).toEqual({ error: { code: 'BFT_ERR_KV_OPERATION_INVALID', message: expect.stringMatching(/^put: key must be/) } });

    const noKeys = await kv(['get', 'k', '--keys', join(cluster.options.dir, 'absent')], { defaults: 'beside-connection' });
    expect(noKeys.code).toBe(1);
    expect(noKeys.stderr).toMatch(/BFT_ERR_KEYS_INVALID/);

    const usage = await kv(['frobnicate']);
    expect(usage.code).toBe(1);
    expect(usage.stderr).toMatch(/BFT_ERR_CONFIG_INVALID: unknown kv command "frobnicate"/);
  });
});

describe('openKvClient with the Secret layout', () => {
  it('reads and writes what the CLI does, with requests signed by the folder key', async () => {
    const client = await openKvClient({ connectionFile: cluster.connectionFile, keysDir: await secretLayoutFolder({ withSigningKey: true }), session: 'secret-layout' });
    clients.push(client);
    expect(client.clientId).toBe(`${clientName}/secret-layout`);

    expect(await client.getText('fresh')).toBe('v1');
    expect(await client.getText('fresh', { consistency: 'unordered' })).toBe('v1');
    expect(await client.put('library', 'from the library')).toEqual({ existed: false });
    expect(await client.compareAndSet('library', 'from the library', Uint8Array.of(0, 1, 2, 255))).toEqual({ swapped: true, current: null });
    expect(await client.get('library', { consistency: 'unordered' })).toEqual(Uint8Array.of(0, 1, 2, 255));
    expect(await client.compareAndSet('library', null, 'x')).toEqual({ swapped: false, current: Uint8Array.of(0, 1, 2, 255) });

    // The CLI sees it, printing a value that is not text as base64 in JSON.
    expect(JSON.parse((await kv(['get', 'library', '--json'])).stdout)).toEqual({ key: 'library', found: true, valueBase64: Buffer.of(0, 1, 2, 255).toString('base64') });

    const session = client.session();
    expect(await session.delete('library')).toEqual({ existed: true });
    expect(await client.get('library')).toBeNull();
    expect(await kv(['get', 'library', '--ordered'])).toMatchObject({ code: 0, stdout: '' });
  });

  it('is refused without the signing key, since the cluster requires signed requests', async () => {
    const client = await openKvClient({
      connectionFile: cluster.connectionFile,
      keysDir: await secretLayoutFolder({ withSigningKey: false }),
      timeouts: { orderedTimeoutMs: 3_000 },
    });
    clients.push(client);
    let caught: unknown;
    try {
      await client.put('unsigned', 'x');
    } catch (error) {
      caught = error;
    }
    expect(errorCode(caught)).toBe('BFT_ERR_CLIENT_TIMEOUT');
    const statuses = await Promise.all(cluster.replicas.map((r) => cluster.status(r.id)));
    const badSignatures = statuses.map((status) => ((status?.dropped as { core?: Record<string, number> } | undefined)?.core ?? {})['bad_signature'] ?? 0);
    expect(badSignatures.some((count) => count > 0)).toBe(true);
  });
});
