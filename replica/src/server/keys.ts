// The key directory a replica reads: TLS material (crypto/certificates.ts) and Ed25519 signing keys.
// Layout: ca.crt, replica-<id>.crt/.key, client-<id>.crt/.key (TLS); signing/replica-<id>.pem,
// signing/client-<id>.pem and signing/view-manager.pem (Ed25519, PKCS#8, mode 0600); signing/public-keys.json,
// which every replica loads to check votes, collects, certificates, signed client requests and the View
// Manager's reconfigurations.

import { access, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { writeLocalKeyDirectory } from '../crypto/certificates.ts';
import { generateSigningKeyPair } from '../crypto/ed25519.ts';
import { BftError } from '../errors.ts';

const publicKeysSchema = z.object({
  replicas: z.record(z.string().regex(/^(0|[1-9]\d{0,6})$/), z.string().base64()),
  clients: z.record(z.string().regex(/^[A-Za-z0-9._-]{1,64}$/), z.string().base64()),
  /** The View Manager's key, which signs reconfigurations (DESIGN §6); absent: none are accepted. */
  viewManager: z.string().base64().optional(),
});

const viewManagerKeyName = 'view-manager';

export interface SigningKeys {
  readonly privateKeyPem: string;
  readonly replicaPublicKeys: ReadonlyMap<number, Uint8Array>;
  readonly clientPublicKeys: ReadonlyMap<string, Uint8Array>;
  readonly viewManagerPublicKey?: Uint8Array;
}

export interface LocalKeysOptions {
  readonly dir: string;
  readonly clusterName: string;
  readonly replicas: readonly { id: number; dnsNames: string[]; ipAddresses: string[] }[];
  readonly clients: readonly string[];
}

async function writePrivate(path: string, content: string): Promise<void> {
  const partial = `${path}.partial`;
  await writeFile(partial, content, { mode: 0o600 });
  await rename(partial, path);
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * Everything a local cluster needs: a CA and certificates, Ed25519 keys for replicas and clients, and the
 * View Manager's key (signing/view-manager.pem), which signs reconfigurations. Run again on the same
 * directory, it keeps the CA, every key it already holds and the View Manager's, and adds what is new:
 * that is how a replica is added to a local cluster.
 */
export async function generateLocalKeys(options: LocalKeysOptions): Promise<void> {
  await writeLocalKeyDirectory({ ...options, replicas: [...options.replicas], clients: [...options.clients] });
  const signingDir = join(options.dir, 'signing');
  await mkdir(signingDir, { recursive: true, mode: 0o700 });
  const file = join(signingDir, 'public-keys.json');
  const publicKeys: { replicas: Record<string, string>; clients: Record<string, string>; viewManager?: string } = (await exists(file))
    ? publicKeysSchema.parse(JSON.parse(await readFile(file, 'utf8')))
    : { replicas: {}, clients: {} };
  const ensure = async (name: string, known: string | undefined): Promise<string> => {
    const path = join(signingDir, `${name}.pem`);
    if (known !== undefined && (await exists(path))) return known;
    const pair = generateSigningKeyPair();
    await writePrivate(path, pair.privateKeyPem);
    return Buffer.from(pair.publicKeyRaw).toString('base64');
  };
  for (const replica of options.replicas) publicKeys.replicas[String(replica.id)] = await ensure(`replica-${replica.id}`, publicKeys.replicas[String(replica.id)]);
  for (const client of options.clients) publicKeys.clients[client] = await ensure(`client-${client}`, publicKeys.clients[client]);
  publicKeys.viewManager = await ensure(viewManagerKeyName, publicKeys.viewManager);
  await writeFile(`${file}.partial`, `${JSON.stringify(publicKeys, null, 2)}\n`);
  await rename(`${file}.partial`, file);
}

/** The View Manager's private key in a key directory (PKCS#8 PEM): only its holder may reconfigure. */
export async function loadViewManagerKey(dir: string): Promise<string> {
  const file = join(dir, 'signing', `${viewManagerKeyName}.pem`);
  try {
    return await readFile(file, 'utf8');
  } catch (cause) {
    throw new BftError('BFT_ERR_KEYS_INVALID', `${file} cannot be read; only the View Manager's key directory holds it ("bftkube keys" creates it)`, { cause });
  }
}

export async function loadPublicKeys(dir: string): Promise<Pick<SigningKeys, 'replicaPublicKeys' | 'clientPublicKeys' | 'viewManagerPublicKey'>> {
  const file = join(dir, 'signing', 'public-keys.json');
  let parsed: z.infer<typeof publicKeysSchema>;
  try {
    parsed = publicKeysSchema.parse(JSON.parse(await readFile(file, 'utf8')));
  } catch (cause) {
    throw new BftError('BFT_ERR_KEYS_INVALID', `${file} is missing or malformed; create the key directory with "bftkube keys"`, { cause });
  }
  const raw = (base64: string) => new Uint8Array(Buffer.from(base64, 'base64'));
  return {
    replicaPublicKeys: new Map(Object.entries(parsed.replicas).map(([id, key]) => [Number(id), raw(key)])),
    clientPublicKeys: new Map(Object.entries(parsed.clients).map(([id, key]) => [id, raw(key)])),
    ...(parsed.viewManager === undefined ? {} : { viewManagerPublicKey: raw(parsed.viewManager) }),
  };
}

export async function loadSigningKeys(dir: string, name: `replica-${number}` | `client-${string}`): Promise<SigningKeys> {
  const file = join(dir, 'signing', `${name}.pem`);
  let privateKeyPem: string;
  try {
    privateKeyPem = await readFile(file, 'utf8');
  } catch (cause) {
    throw new BftError('BFT_ERR_KEYS_INVALID', `${file} cannot be read; create the key directory with "bftkube keys"`, { cause });
  }
  return { privateKeyPem, ...(await loadPublicKeys(dir)) };
}
