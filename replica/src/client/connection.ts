// How an application finds and authenticates to a cluster: a connection file and a key folder.
//
// The connection file `client.json` names the cluster and a view to start from:
//   {"cluster":"kv","view":{"number":0,"mode":"bft","f":1,"members":[{"id":0,"host":"kv-0.kv-replicas.ns.svc.cluster.local","port":7000}, ...]}}
// The operator publishes it in the ConfigMap `<cluster>-config` (key `client.json`); `bftkube local`
// writes it into its folder. Both render it with renderConnectionFile, so that they agree byte for byte. Any view the cluster once had
// will do: the client asks the replicas for newer views and moves to them by itself (DESIGN §3), as long
// as f+1 members of the file's view still answer.
//
// The key folder comes in two layouts:
//   Secret  (the operator's `<cluster>-client` Secret mounted as a folder): ca.crt, tls.crt, tls.key,
//           and optionally signing.pem (Ed25519 PKCS#8), signing.pub (its raw key, base64), client-id.
//   local   (`bftkube keys` and `bftkube local`): ca.crt, client-<name>.crt/.key, and optionally
//           signing/client-<name>.pem; several clients share the folder, so the caller names one.
// A folder with tls.crt is the Secret layout. Everything is checked before the first connection: that
// the certificate is a client certificate from ca.crt, that the key belongs to it, and that the files
// agree with each other, so that a wrong mount fails here with a message instead of as silent drops.
//
// The client id: replicas take the client's identity from its certificate (subject CN `client-<id>`)
// and accept requests from `<id>` and `<id>/<session>` on its connections (protocol/client-id.ts). So the
// id is read from the certificate, never from a file name or the client-id file (those are only checked
// against it), and every client gets the session id `<id>/<session>`. With a signing key in the folder,
// every request is signed with it: required when the cluster runs with requireSignedRequests, where
// replicas check the signature with the key their public-keys.json lists for `<id>`.

import { X509Certificate, createPrivateKey } from 'node:crypto';
import { open, readdir } from 'node:fs/promises';
import { isIP } from 'node:net';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { z } from 'zod';
import { limits } from '../constants.ts';
import { invalidView, type View } from '../core/view.ts';
import { Signer } from '../crypto/ed25519.ts';
import { BftError } from '../errors.ts';
import type { ViewDescription } from '../protocol/reconfiguration.ts';
import { TlsClientTransport, type TlsCredentials } from '../transport/tls-transport.ts';
import { clientCommonNameOf, identityFromCommonName, isValidClientId } from '../transport/identity.ts';
import type { ClientTimeouts } from './client.ts';
import { KvClient, sessionClientId } from './kv-client.ts';

/** The file name, in the ConfigMap `<cluster>-config` and in the folder of `bftkube local`. */
export const connectionFileName = 'client.json';

/** The files of the Secret layout (the operator's `<cluster>-client` Secret, mounted as a folder). */
export const secretKeyFiles = {
  caCert: 'ca.crt',
  tlsCert: 'tls.crt',
  tlsKey: 'tls.key',
  signingKey: 'signing.pem',
  signingPublic: 'signing.pub',
  clientId: 'client-id',
} as const;

// RFC 1123 host names; addresses are checked with isIP.
const dnsNamePattern = /^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

const memberSchema = z.object({
  id: z.int({ error: 'must be an integer' }).min(0, { error: 'must be 0 or more' }).max(limits.replicaIdMax, { error: `must be at most ${limits.replicaIdMax}` }),
  host: z
    .string({ error: 'must be a string' })
    .max(253, { error: 'must be at most 253 characters' })
    .refine((host) => isIP(host) !== 0 || dnsNamePattern.test(host), { error: 'must be a DNS name or an IP address' }),
  port: z.int({ error: 'must be an integer' }).min(1, { error: 'must be 1 to 65535' }).max(65_535, { error: 'must be 1 to 65535' }),
});

/** A connection file. Unknown fields are ignored, so that files from a newer operator still load. */
export const connectionFileSchema = z.object({
  cluster: z
    .string({ error: 'must be a string' })
    .regex(new RegExp(`^[A-Za-z0-9._-]{1,${limits.clusterNameLengthMax}}$`), {
      error: `must be 1 to ${limits.clusterNameLengthMax} characters of A-Z, a-z, 0-9, '.', '_' or '-'`,
    }),
  view: z
    .object({
      number: z.int({ error: 'must be an integer' }).min(0, { error: 'must be 0 or more' }),
      mode: z.enum(['bft', 'crash'], { error: "must be 'bft' or 'crash'" }),
      f: z.int({ error: 'must be an integer' }).min(0, { error: 'must be 0 or more' }),
      members: z
        .array(memberSchema, { error: 'must be an array' })
        .min(1, { error: 'must list at least one replica' })
        .max(limits.membersMax, { error: `must list at most ${limits.membersMax} replicas` }),
    })
    .superRefine((view, context) => {
      const problem = invalidView(viewOf(view));
      if (problem !== null) context.addIssue({ code: 'custom', message: problem });
    }),
});

export type ConnectionFile = z.infer<typeof connectionFileSchema>;

/** The View a BftClient starts in, from a connection file's view. */
export function viewOf(view: ConnectionFile['view']): View {
  return { number: view.number, mode: view.mode, f: view.f, members: view.members.map((member) => member.id) };
}

function connectionInvalid(message: string, cause?: unknown): BftError {
  return new BftError('BFT_ERR_CONNECTION_INVALID', message, cause === undefined ? undefined : { cause });
}

/** The first few problems zod found, each with where it is ("view.members.2.port: must be 1 to 65535"). */
function describeIssues(error: z.ZodError): string {
  const shown = error.issues.slice(0, 3).map((issue) => `${issue.path.length === 0 ? '(top level)' : issue.path.join('.')}: ${issue.message}`);
  const more = error.issues.length - shown.length;
  return shown.join('; ') + (more > 0 ? `; and ${more} more` : '');
}

/**
 * The connection file's text, for the operator's ConfigMap and for `bftkube local`. Takes a view as
 * replicas describe it (ViewDescription: extra member fields such as adminPort and publicKey are left
 * out). Throws BFT_ERR_CONNECTION_INVALID for a cluster name or view a client would refuse.
 */
export function renderConnectionFile(input: {
  readonly cluster: string;
  readonly view: Pick<ViewDescription, 'number' | 'mode' | 'f'> & { readonly members: readonly { readonly id: number; readonly host: string; readonly port: number }[] };
}): string {
  const candidate = {
    cluster: input.cluster,
    view: {
      number: input.view.number,
      mode: input.view.mode,
      f: input.view.f,
      members: input.view.members.map((member) => ({ id: member.id, host: member.host, port: member.port })),
    },
  };
  const parsed = connectionFileSchema.safeParse(candidate);
  if (!parsed.success) throw connectionInvalid(`cannot render ${connectionFileName}: ${describeIssues(parsed.error)}`);
  const text = `${JSON.stringify(parsed.data, null, 2)}\n`;
  if (Buffer.byteLength(text) > limits.connectionFileBytesMax) {
    throw connectionInvalid(`the rendered ${connectionFileName} has ${Buffer.byteLength(text)} bytes, more than ${limits.connectionFileBytesMax}`);
  }
  return text;
}

/** Parses a connection file's text; `source` names it in messages. Throws BFT_ERR_CONNECTION_INVALID. */
export function parseConnectionFile(text: string, source = connectionFileName): ConnectionFile {
  const bytes = Buffer.byteLength(text);
  if (bytes > limits.connectionFileBytesMax) {
    throw connectionInvalid(`${source} has ${bytes} bytes, more than ${limits.connectionFileBytesMax}: it is not a connection file`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (cause) {
    throw connectionInvalid(`${source} is not JSON: ${(cause as Error).message}`, cause);
  }
  const parsed = connectionFileSchema.safeParse(json);
  if (!parsed.success) throw connectionInvalid(`${source} is not a valid connection file: ${describeIssues(parsed.error)}`);
  return parsed.data;
}

/**
 * The UTF-8 text of a file of at most `bytesMax` bytes, or null when it does not exist. Reads at most
 * bytesMax + 1 bytes, so a huge or endless file (a device, a wrong mount) costs nothing.
 */
async function readBoundedText(path: string, bytesMax: number, fail: (message: string, cause?: unknown) => BftError): Promise<string | null> {
  let handle;
  try {
    handle = await open(path, 'r');
  } catch (cause) {
    if ((cause as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw fail(`${path} cannot be opened: ${(cause as Error).message}`, cause);
  }
  try {
    const stats = await handle.stat();
    if (!stats.isFile()) throw fail(`${path} is not a regular file`);
    const buffer = Buffer.alloc(bytesMax + 1);
    let filled = 0;
    for (;;) {
      const { bytesRead } = await handle.read(buffer, filled, buffer.length - filled, filled);
      if (bytesRead === 0) break;
      filled += bytesRead;
      if (filled > bytesMax) throw fail(`${path} is larger than ${bytesMax} bytes: it is not the file expected here`);
    }
    try {
      return new TextDecoder('utf-8', { fatal: true }).decode(buffer.subarray(0, filled));
    } catch (cause) {
      throw fail(`${path} is not UTF-8 text`, cause);
    }
  } catch (error) {
    if (error instanceof BftError) throw error;
    throw fail(`${path} cannot be read: ${(error as Error).message}`, error);
  } finally {
    await handle.close();
  }
}

/** Reads and checks a connection file. Throws BFT_ERR_CONNECTION_INVALID. */
export async function readConnectionFile(path: string): Promise<ConnectionFile> {
  const text = await readBoundedText(path, limits.connectionFileBytesMax, connectionInvalid);
  if (text === null) {
    throw connectionInvalid(`${path} does not exist: copy ${connectionFileName} from the ConfigMap <cluster>-config, or start a local cluster with "bftkube local"`);
  }
  return parseConnectionFile(text, path);
}

// --- Key folders -------------------------------------------------------------------------------------

export type ClientKeyLayout = 'secret' | 'local';

export interface ClientKeys {
  readonly layout: ClientKeyLayout;
  /** The client id the certificate names (subject CN `client-<identity>`): what replicas authenticate. */
  readonly identity: string;
  readonly tls: TlsCredentials;
  /** The Ed25519 key (PKCS#8 PEM) requests are signed with, or null when the folder holds none. */
  readonly signingKeyPem: string | null;
  /** The files used, for messages. */
  readonly files: { readonly caCert: string; readonly cert: string; readonly key: string; readonly signingKey: string | null };
}

function keysInvalid(message: string, cause?: unknown): BftError {
  return new BftError('BFT_ERR_KEYS_INVALID', message, cause === undefined ? undefined : { cause });
}

async function readKeyFile(path: string): Promise<string | null> {
  return readBoundedText(path, limits.clientKeyFileBytesMax, keysInvalid);
}

async function requireKeyFile(path: string, hint: string): Promise<string> {
  const text = await readKeyFile(path);
  if (text === null) throw keysInvalid(`${path} does not exist; ${hint}`);
  return text;
}

/**
 * The identity in a client certificate, checked the way replicas check it (transport/identity.ts): one
 * subject CN of the form `client-<id>`. Also checks that ca.crt issued it, that it is valid now, and that
 * `keyPem` is its key, so that a wrong file fails here and not as refused handshakes.
 */
export function checkClientCertificate(material: TlsCredentials, files: { readonly caCert: string; readonly cert: string; readonly key: string }): string {
  let certificate: X509Certificate;
  let ca: X509Certificate;
  try {
    certificate = new X509Certificate(material.certPem);
  } catch (cause) {
    throw keysInvalid(`${files.cert} is not a PEM certificate`, cause);
  }
  try {
    ca = new X509Certificate(material.caPem);
  } catch (cause) {
    throw keysInvalid(`${files.caCert} is not a PEM certificate`, cause);
  }
  // Node prints the subject one attribute per line; our names never contain a newline or an escape.
  const commonNames = certificate.subject.split('\n').filter((line) => line.startsWith('CN=')).map((line) => line.slice('CN='.length));
  const identity = commonNames.length === 1 ? identityFromCommonName(commonNames[0] as string) : null;
  if (identity === null || identity.kind !== 'client') {
    const named = commonNames.length === 1 ? `is for ${JSON.stringify(commonNames[0])}` : `has ${commonNames.length} common names`;
    throw keysInvalid(`${files.cert} ${named}: replicas accept clients only with one common name client-<id>; use a client certificate ("bftkube keys --clients" or the <cluster>-client Secret)`);
  }
  if (!certificate.checkIssued(ca) || !certificate.verify(ca.publicKey)) {
    throw keysInvalid(`${files.cert} was not issued by the CA in ${files.caCert}: the replicas would refuse it; take both from the same cluster`);
  }
  const now = Date.now();
  if (now < Date.parse(certificate.validFrom) || now > Date.parse(certificate.validTo)) {
    throw keysInvalid(`${files.cert} is valid from ${certificate.validFrom} to ${certificate.validTo}, not now: issue a new client certificate`);
  }
  let matches: boolean;
  try {
    matches = certificate.checkPrivateKey(createPrivateKey(material.keyPem));
  } catch (cause) {
    throw keysInvalid(`${files.key} is not a PEM private key`, cause);
  }
  if (!matches) throw keysInvalid(`${files.key} is not the key of ${files.cert}: take both from the same client`);
  return identity.id;
}

/** Checks that a signing key is Ed25519 and, when its public key is known, that it is that one. */
function checkSigningKey(pem: string, file: string, publicKeyBase64: string | null, publicKeySource: string): void {
  let signer: Signer;
  try {
    signer = new Signer(pem);
  } catch (cause) {
    throw keysInvalid(`${file} is not an Ed25519 private key in PEM (PKCS#8)`, cause);
  }
  if (publicKeyBase64 !== null && Buffer.from(signer.publicKeyRaw).toString('base64') !== publicKeyBase64.trim()) {
    throw keysInvalid(`${file} does not match the public key in ${publicKeySource}: the replicas would refuse its signatures; take both from the same client`);
  }
}

async function exists(path: string): Promise<boolean> {
  const handle = await open(path, 'r').catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return null;
    throw keysInvalid(`${path} cannot be opened: ${error.message}`, error);
  });
  await handle?.close();
  return handle !== null;
}

async function loadSecretLayout(dir: string, clientName: string | undefined): Promise<ClientKeys> {
  const files = {
    caCert: join(dir, secretKeyFiles.caCert),
    cert: join(dir, secretKeyFiles.tlsCert),
    key: join(dir, secretKeyFiles.tlsKey),
  };
  const hint = `the folder ${dir} has ${secretKeyFiles.tlsCert}, so it is read as the operator's <cluster>-client Secret, which has ${secretKeyFiles.caCert}, ${secretKeyFiles.tlsCert} and ${secretKeyFiles.tlsKey}`;
  const tls = { caPem: await requireKeyFile(files.caCert, hint), certPem: await requireKeyFile(files.cert, hint), keyPem: await requireKeyFile(files.key, hint) };
  const identity = checkClientCertificate(tls, files);
  const clientIdFile = join(dir, secretKeyFiles.clientId);
  const declared = (await readKeyFile(clientIdFile))?.trim() ?? null;
  if (declared !== null && declared !== identity) {
    throw keysInvalid(`${clientIdFile} says ${JSON.stringify(declared)} but ${files.cert} is the certificate of client ${JSON.stringify(identity)}: the files come from different clients`);
  }
  if (clientName !== undefined && clientName !== identity) {
    throw keysInvalid(
      `the client name ${JSON.stringify(clientName)} was asked for, but ${dir} is a Secret folder holding only client ${JSON.stringify(identity)}; leave the name out (it is for the local layout)`,
    );
  }
  const signingFile = join(dir, secretKeyFiles.signingKey);
  const signingKeyPem = await readKeyFile(signingFile);
  if (signingKeyPem !== null) {
    const publicFile = join(dir, secretKeyFiles.signingPublic);
    checkSigningKey(signingKeyPem, signingFile, await readKeyFile(publicFile), publicFile);
  }
  return { layout: 'secret', identity, tls, signingKeyPem, files: { ...files, signingKey: signingKeyPem === null ? null : signingFile } };
}

/** The client names of the local layout's certificates (`client-<name>.crt`). */
async function localClientNames(dir: string): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (cause) {
    throw keysInvalid(`${dir} cannot be listed: pass the key folder (the cluster's client Secret mounted as a folder, or a "bftkube keys" folder)`, cause);
  }
  return names
    .map((name) => /^client-(.+)\.crt$/.exec(name)?.[1])
    .filter((name): name is string => name !== undefined && isValidClientId(name))
    .sort();
}

async function loadLocalLayout(dir: string, clientName: string | undefined): Promise<ClientKeys> {
  let name = clientName;
  if (name === undefined) {
    const names = await localClientNames(dir);
    if (names.length !== 1) {
      throw keysInvalid(
        names.length === 0
          ? `${dir} holds no client certificate: neither ${secretKeyFiles.tlsCert} (the <cluster>-client Secret) nor client-<name>.crt ("bftkube keys --clients <name>")`
          : `${dir} holds the certificates of clients ${names.join(', ')}: name the one to use (--client NAME, or clientName)`,
      );
    }
    name = names[0] as string;
  }
  if (!isValidClientId(name)) {
    throw keysInvalid(`client name ${JSON.stringify(name)} is not allowed: use 1 to ${limits.certificateClientIdLengthMax} characters of A-Z, a-z, 0-9, '.', '_' or '-'`);
  }
  const base = clientCommonNameOf(name);
  const files = { caCert: join(dir, 'ca.crt'), cert: join(dir, `${base}.crt`), key: join(dir, `${base}.key`) };
  const hint = `a local key folder has ca.crt and ${base}.crt/.key ("bftkube keys --clients ${name}"); the clients here: ${(await localClientNames(dir)).join(', ') || 'none'}`;
  const tls = { caPem: await requireKeyFile(files.caCert, hint), certPem: await requireKeyFile(files.cert, hint), keyPem: await requireKeyFile(files.key, hint) };
  const identity = checkClientCertificate(tls, files);
  if (identity !== name) {
    throw keysInvalid(`${files.cert} is the certificate of client ${JSON.stringify(identity)}, not ${JSON.stringify(name)}: the file was renamed or copied over`);
  }
  const signingFile = join(dir, 'signing', `${base}.pem`);
  const signingKeyPem = await readKeyFile(signingFile);
  if (signingKeyPem !== null) {
    // public-keys.json is what the replicas check signatures with, when the folder has it.
    const publicKeysFile = join(dir, 'signing', 'public-keys.json');
    const publicKeys = await readBoundedText(publicKeysFile, limits.configFileBytesMax, keysInvalid);
    let known: string | null = null;
    if (publicKeys !== null) {
      const parsed = z.object({ clients: z.record(z.string(), z.string()) }).safeParse(safeJson(publicKeys));
      known = parsed.success ? (parsed.data.clients[name] ?? null) : null;
    }
    checkSigningKey(signingKeyPem, signingFile, known, publicKeysFile);
  }
  return { layout: 'local', identity, tls, signingKeyPem, files: { ...files, signingKey: signingKeyPem === null ? null : signingFile } };
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

/**
 * A client's key folder, in either layout (see the top of this file). `clientName` picks the client in
 * a local folder (needed when it holds several); for a Secret folder it may only repeat its client.
 * Throws BFT_ERR_KEYS_INVALID saying which file is wrong.
 */
export async function loadClientKeys(options: { readonly keysDir: string; readonly clientName?: string }): Promise<ClientKeys> {
  const { keysDir, clientName } = options;
  if (await exists(join(keysDir, secretKeyFiles.tlsCert))) return loadSecretLayout(keysDir, clientName);
  return loadLocalLayout(keysDir, clientName);
}

// --- Opening a client --------------------------------------------------------------------------------

export interface OpenKvClientOptions {
  /** Path of the connection file (client.json). */
  readonly connectionFile: string;
  /** The key folder, in the Secret or the local layout. */
  readonly keysDir: string;
  /** Local layout: which client-<name> certificate to use (needed when the folder holds several). */
  readonly clientName?: string;
  /** The session name (client id `<certificate client id>/<session>`); default a random UUID. Never reuse one. */
  readonly session?: string;
  readonly timeouts?: ClientTimeouts;
  /** Ordered requests of one session in flight at once. Default 1. */
  readonly inFlightMax?: number;
  readonly onViewChanged?: (view: ViewDescription) => void;
  /** For the transport's warnings (failed handshakes, unreachable replicas). */
  readonly logger?: Logger;
}

/**
 * A key-value client of the cluster a connection file names, authenticated by a key folder: TLS with the
 * folder's client certificate, requests signed with its signing key if it has one, the client id
 * `<certificate client id>/<session>`. Connections are made in the background; the first call waits
 * for them (within the client's timeouts). Close it when done.
 */
export async function openKvClient(options: OpenKvClientOptions): Promise<KvClient> {
  const connection = await readConnectionFile(options.connectionFile);
  const keys = await loadClientKeys({ keysDir: options.keysDir, ...(options.clientName === undefined ? {} : { clientName: options.clientName }) });
  // Checked before any connection is dialled, so that a bad session leaves nothing running.
  if (options.session !== undefined) sessionClientId(keys.identity, options.session);
  const signer = keys.signingKeyPem === null ? undefined : new Signer(keys.signingKeyPem);
  const transport = new TlsClientTransport({
    tls: keys.tls,
    replicas: connection.view.members,
    ...(options.logger === undefined ? {} : { logger: options.logger }),
  });
  return KvClient.create({
    identity: keys.identity,
    view: viewOf(connection.view),
    transport,
    ...(signer === undefined ? {} : { signer }),
    ...(options.session === undefined ? {} : { session: options.session }),
    ...(options.timeouts === undefined ? {} : { timeouts: options.timeouts }),
    ...(options.inFlightMax === undefined ? {} : { inFlightMax: options.inFlightMax }),
    ...(options.onViewChanged === undefined ? {} : { onViewChanged: options.onViewChanged }),
  });
}
