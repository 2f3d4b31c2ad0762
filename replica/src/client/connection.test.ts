import { verify } from 'node:crypto';
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { limits } from '../constants.ts';
import { Signer, generateSigningKeyPair, publicKeyFromRaw } from '../crypto/ed25519.ts';
import { BftError } from '../errors.ts';
import { clientIdentityOf, requestBelongsTo } from '../protocol/client-id.ts';
import { decodeMessage, encodeMessage, requestSigningPayload } from '../protocol/codec.ts';
import { type ClientRequest, MessageType } from '../protocol/messages.ts';
import type { ViewDescription } from '../protocol/reconfiguration.ts';
import { loadPublicKeys, generateLocalKeys } from '../server/keys.ts';
import { KvService } from '../service/kv.ts';
import { encodeKvResult } from '../service/kv-operations.ts';
import {
  connectionFileSchema,
  loadClientKeys,
  openKvClient,
  parseConnectionFile,
  readConnectionFile,
  renderConnectionFile,
  secretKeyFiles,
} from './connection.ts';
import { KvClient, kvValueText } from './kv-client.ts';
import type { ClientTransport } from './transport.ts';

const sample = {
  cluster: 'kv',
  view: {
    number: 0,
    mode: 'bft',
    f: 1,
    members: [0, 1, 2, 3].map((id) => ({ id, host: `kv-${id}.kv-replicas.ns.svc.cluster.local`, port: 7000 })),
  },
};

/** The BftError a call throws (or a promise rejects with), for its code and message. */
async function failure(run: () => unknown): Promise<BftError> {
  try {
    await run();
  } catch (error) {
    if (error instanceof BftError) return error;
    throw error;
  }
  throw new Error('expected a BftError, nothing was thrown');
}

describe('the connection file', () => {
  it('reads the documented format, and renders what it reads', () => {
    const parsed = parseConnectionFile(JSON.stringify(sample));
    expect(parsed).toEqual(sample);
    expect(parseConnectionFile(renderConnectionFile(parsed))).toEqual(sample);
  });

  it('renders only the fields clients read, from a view as replicas describe it', () => {
    const description: ViewDescription = {
      number: 3,
      mode: 'crash',
      f: 1,
      members: [0, 1, 2].map((id) => ({ id, host: `127.0.0.${10 + id}`, port: 11000, adminPort: 12000, publicKey: new Uint8Array(32) })),
    };
    const text = renderConnectionFile({ cluster: 'local', view: description });
    expect(JSON.parse(text)).toEqual({ cluster: 'local', view: { number: 3, mode: 'crash', f: 1, members: [0, 1, 2].map((id) => ({ id, host: `127.0.0.${10 + id}`, port: 11000 })) } });
    expect(text.endsWith('\n')).toBe(true);
  });

  it('ignores fields it does not know, so that files from a newer operator still load', () => {
    const parsed = parseConnectionFile(JSON.stringify({ ...sample, apiVersion: 2, view: { ...sample.view, leader: 0 } }));
    expect(parsed).toEqual(sample);
  });

  it.each([
    ['not JSON', '{"cluster":', /is not JSON/],
    ['no cluster', JSON.stringify({ view: sample.view }), /cluster: must be a string/],
    ['a cluster name with a slash', JSON.stringify({ ...sample, cluster: 'a/b' }), /cluster: must be 1 to 64 characters/],
    ['a bad host', JSON.stringify({ ...sample, view: { ...sample.view, members: [{ id: 0, host: 'kv 0!', port: 7000 }] } }), /view\.members\.0\.host: must be a DNS name or an IP address/],
    ['a port out of range', JSON.stringify({ ...sample, view: { ...sample.view, members: [{ id: 0, host: 'a', port: 70000 }] } }), /view\.members\.0\.port: must be 1 to 65535/],
    ['an f the view cannot tolerate', JSON.stringify({ ...sample, view: { ...sample.view, f: 2 } }), /4 replicas cannot tolerate f=2 in bft mode/],
    ['a member twice', JSON.stringify({ ...sample, view: { ...sample.view, f: 0, members: [sample.view.members[0], sample.view.members[0]] } }), /distinct/],
    ['no members', JSON.stringify({ ...sample, view: { ...sample.view, members: [] } }), /view\.members: must list at least one replica/],
    [
      'more members than a view may have',
      JSON.stringify({ ...sample, view: { ...sample.view, members: Array.from({ length: limits.membersMax + 1 }, (_, id) => ({ id, host: `r${id}`, port: 7000 })) } }),
      new RegExp(`view\\.members: must list at most ${limits.membersMax} replicas`),
    ],
    ['an unknown mode', JSON.stringify({ ...sample, view: { ...sample.view, mode: 'paxos' } }), /view\.mode: must be 'bft' or 'crash'/],
  ])('refuses %s, saying where', (_name, text, message) => {
    let error: unknown;
    try {
      parseConnectionFile(text, 'client.json');
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(BftError);
    expect((error as BftError).code).toBe('BFT_ERR_CONNECTION_INVALID');
    expect((error as BftError).message).toMatch(message);
    expect((error as BftError).message).toMatch(/client\.json/);
  });

  it('refuses a text larger than the bound before parsing it', () => {
    const padded = JSON.stringify({ ...sample, padding: 'x'.repeat(limits.connectionFileBytesMax) });
    expect(() => parseConnectionFile(padded)).toThrow(/more than 65536/);
    expect(connectionFileSchema.safeParse(JSON.parse(padded)).success).toBe(true);
  });

  it('refuses to render what a client would refuse', () => {
    expect(() => renderConnectionFile({ cluster: 'kv', view: { number: 0, mode: 'bft', f: 1, members: [{ id: 0, host: 'a', port: 7000 }] } })).toThrow(/1 replicas cannot tolerate f=1/);
  });

  describe('from disk', () => {
    let dir: string;
    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), 'bftkube-connection-'));
    });
    afterAll(async () => {
      await rm(dir, { recursive: true, force: true });
    });

    it('reads a file', async () => {
      await writeFile(join(dir, 'client.json'), renderConnectionFile(sample as Parameters<typeof renderConnectionFile>[0]));
      expect(await readConnectionFile(join(dir, 'client.json'))).toEqual(sample);
    });

    it('refuses a huge file after reading only its bound', async () => {
      await writeFile(join(dir, 'huge.json'), Buffer.alloc(8 * 1024 * 1024, 0x20));
      const error = await failure(() => readConnectionFile(join(dir, 'huge.json')));
      expect(error.code).toBe('BFT_ERR_CONNECTION_INVALID');
      expect(error.message).toMatch(/larger than 65536 bytes/);
    });

    it('says where to get a missing file', async () => {
      const error = await failure(() => readConnectionFile(join(dir, 'absent.json')));
      expect(error.message).toMatch(/does not exist: copy client\.json from the ConfigMap <cluster>-config/);
    });

    it('refuses a folder', async () => {
      expect((await failure(() => readConnectionFile(dir))).message).toMatch(/not a regular file/);
    });
  });
});

describe('key folders', () => {
  let root: string;
  let localDir: string;
  let otherCaDir: string;

  /** The operator's Secret layout, made from the local folder's files for client `name`. */
  async function secretFolder(name: string, files: Partial<Record<keyof typeof secretKeyFiles, string | null>> = {}): Promise<string> {
    const dir = await mkdtemp(join(root, 'secret-'));
    const publicKeys = await loadPublicKeys(localDir);
    const defaults: Record<keyof typeof secretKeyFiles, string | null> = {
      caCert: await readFile(join(localDir, 'ca.crt'), 'utf8'),
      tlsCert: await readFile(join(localDir, `client-${name}.crt`), 'utf8'),
      tlsKey: await readFile(join(localDir, `client-${name}.key`), 'utf8'),
      signingKey: await readFile(join(localDir, 'signing', `client-${name}.pem`), 'utf8'),
      signingPublic: Buffer.from(publicKeys.clientPublicKeys.get(name) as Uint8Array).toString('base64'),
      clientId: name,
    };
    for (const [field, fileName] of Object.entries(secretKeyFiles) as [keyof typeof secretKeyFiles, string][]) {
      const content = field in files ? files[field] : defaults[field];
      if (content !== null && content !== undefined) await writeFile(join(dir, fileName), content);
    }
    return dir;
  }

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'bftkube-keys-'));
    localDir = join(root, 'local');
    otherCaDir = join(root, 'other-ca');
    await generateLocalKeys({ dir: localDir, clusterName: 'local', replicas: [{ id: 0, dnsNames: ['localhost'], ipAddresses: ['127.0.0.1'] }], clients: ['app', 'other'] });
    await generateLocalKeys({ dir: otherCaDir, clusterName: 'local', replicas: [], clients: ['app'] });
  });
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('loads the local layout of the named client, with its signing key', async () => {
    const keys = await loadClientKeys({ keysDir: localDir, clientName: 'app' });
    expect(keys.layout).toBe('local');
    expect(keys.identity).toBe('app');
    expect(keys.tls.certPem).toBe(await readFile(join(localDir, 'client-app.crt'), 'utf8'));
    expect(keys.signingKeyPem).toBe(await readFile(join(localDir, 'signing', 'client-app.pem'), 'utf8'));
  });

  it('asks which client when a local folder holds several, and takes the only one otherwise', async () => {
    const error = await failure(() => loadClientKeys({ keysDir: localDir }));
    expect(error.code).toBe('BFT_ERR_KEYS_INVALID');
    expect(error.message).toMatch(/holds the certificates of clients app, other: name the one to use/);
    expect((await loadClientKeys({ keysDir: otherCaDir })).identity).toBe('app');
  });

  it('loads the Secret layout, taking the client id from the certificate', async () => {
    const dir = await secretFolder('app', { clientId: 'app\n' });
    const keys = await loadClientKeys({ keysDir: dir });
    expect(keys.layout).toBe('secret');
    expect(keys.identity).toBe('app');
    expect(keys.signingKeyPem).toBe(await readFile(join(localDir, 'signing', 'client-app.pem'), 'utf8'));
    expect(keys.files.signingKey).toBe(join(dir, 'signing.pem'));
  });

  it('loads a Secret folder without a signing key (requests then go unsigned)', async () => {
    const keys = await loadClientKeys({ keysDir: await secretFolder('app', { signingKey: null, signingPublic: null, clientId: null }) });
    expect(keys.signingKeyPem).toBeNull();
  });

  it.each([
    ['a client-id naming another client', 'app', { clientId: 'other' }, /says "other" but .*tls\.crt is the certificate of client "app"/],
    ['the key of another client', 'app', { tlsKey: 'other' }, /tls\.key is not the key of .*tls\.crt/],
    ['a replica certificate', 'app', { tlsCert: 'replica-0' }, /is for "replica-0": replicas accept clients only with one common name client-<id>/],
    ['a certificate of another CA', 'app', { tlsCert: 'other-ca' }, /was not issued by the CA in .*ca\.crt/],
    ['a signing key that is not the published one', 'app', { signingPublic: 'other' }, /signing\.pem does not match the public key in .*signing\.pub/],
    ['a signing key that is not Ed25519', 'app', { signingKey: 'tls-key' }, /signing\.pem is not an Ed25519 private key/],
    ['no CA', 'app', { caCert: null }, /ca\.crt does not exist; the folder .* is read as the operator's <cluster>-client Secret/],
  ])('refuses a Secret folder with %s', async (_name, client, swap, message) => {
    const files: Partial<Record<keyof typeof secretKeyFiles, string | null>> = {};
    const replace = swap as Record<string, string | null>;
    if ('clientId' in replace) files.clientId = replace.clientId;
    if ('caCert' in replace) files.caCert = null;
    if (replace.tlsKey === 'other') files.tlsKey = await readFile(join(localDir, 'client-other.key'), 'utf8');
    if (replace.tlsCert === 'replica-0') {
      files.tlsCert = await readFile(join(localDir, 'replica-0.crt'), 'utf8');
      files.tlsKey = await readFile(join(localDir, 'replica-0.key'), 'utf8');
    }
    if (replace.tlsCert === 'other-ca') {
      files.tlsCert = await readFile(join(otherCaDir, 'client-app.crt'), 'utf8');
      files.tlsKey = await readFile(join(otherCaDir, 'client-app.key'), 'utf8');
    }
    if (replace.signingPublic === 'other') {
      files.signingPublic = Buffer.from((await loadPublicKeys(localDir)).clientPublicKeys.get('other') as Uint8Array).toString('base64');
    }
    if (replace.signingKey === 'tls-key') files.signingKey = await readFile(join(localDir, 'client-app.key'), 'utf8');
    const error = await failure(async () => loadClientKeys({ keysDir: await secretFolder(client, files) }));
    expect(error.code).toBe('BFT_ERR_KEYS_INVALID');
    expect(error.message).toMatch(message);
  });

  it('refuses a client name that a Secret folder does not hold', async () => {
    const error = await failure(async () => loadClientKeys({ keysDir: await secretFolder('app'), clientName: 'other' }));
    expect(error.message).toMatch(/Secret folder holding only client "app"; leave the name out/);
  });

  it('refuses a local certificate renamed to another client', async () => {
    const dir = join(root, 'renamed');
    await mkdir(dir);
    await copyFile(join(localDir, 'ca.crt'), join(dir, 'ca.crt'));
    await copyFile(join(localDir, 'client-app.crt'), join(dir, 'client-bob.crt'));
    await copyFile(join(localDir, 'client-app.key'), join(dir, 'client-bob.key'));
    const error = await failure(() => loadClientKeys({ keysDir: dir, clientName: 'bob' }));
    expect(error.message).toMatch(/is the certificate of client "app", not "bob"/);
  });

  it('refuses a client name that could leave the folder', async () => {
    const error = await failure(() => loadClientKeys({ keysDir: localDir, clientName: '../local/client-app' }));
    expect(error.message).toMatch(/client name .* is not allowed/);
  });

  describe('openKvClient', () => {
    let connectionFile: string;
    beforeAll(async () => {
      connectionFile = join(root, 'client.json');
      // Nothing listens there: the client dials in the background and is closed before it matters.
      await writeFile(connectionFile, renderConnectionFile({ cluster: 'local', view: { number: 0, mode: 'crash', f: 0, members: [{ id: 0, host: '127.0.0.1', port: 9 }] } }));
    });

    it('gives the client an id that the replicas accept for its certificate: <certificate client id>/<session>', async () => {
      for (const keysDir of [await secretFolder('app'), localDir]) {
        const client = await openKvClient({ connectionFile, keysDir, clientName: 'app', session: 's1' });
        try {
          expect(client.clientId).toBe('app/s1');
          expect(client.identity).toBe('app');
          // What a replica checks (core/replica.ts, runtime/driver.ts) with the id from the TLS certificate.
          expect(requestBelongsTo(client.clientId, 'app')).toBe(true);
          expect(clientIdentityOf(client.clientId)).toBe('app');
        } finally {
          await client.close();
        }
      }
      const fresh = await openKvClient({ connectionFile, keysDir: localDir, clientName: 'other' });
      expect(fresh.clientId).toMatch(/^other\/[0-9a-f-]{36}$/);
      await fresh.close();
    });

    it('refuses a session name that would change whose id it is', async () => {
      const error = await failure(() => openKvClient({ connectionFile, keysDir: localDir, clientName: 'app', session: 'x/other' }));
      expect(error.code).toBe('BFT_ERR_CONFIG_INVALID');
      expect(error.message).toMatch(/session "x\/other" is not allowed/);
    });
  });
});

// --- KvClient over scripted replicas ------------------------------------------------------------------

/** Four replicas behind the ClientTransport seam, each running the real key-value service. */
class KvReplicas implements ClientTransport {
  readonly services = new Map<number, KvService>();
  readonly requests: ClientRequest[] = [];
  /** Replies to ordered requests with these bytes instead of the service's result. */
  forcedResult: Uint8Array | null = null;
  viewNumber = 0;
  viewDescription: ViewDescription | null = null;
  private readonly executed = new Map<string, Uint8Array>();
  private handler: ((replicaId: number, payload: Uint8Array) => void) | null = null;

  constructor(members: readonly number[]) {
    for (const id of members) this.services.set(id, new KvService({ stateBytesMax: 4096 }));
  }

  send(replicaId: number, payload: Uint8Array): void {
    const decoded = decodeMessage(payload);
    if (!decoded.ok) throw new Error(`the client sent an undecodable message: ${decoded.reason}`);
    const message = decoded.message;
    if (message.type === MessageType.VIEW_REQUEST) {
      const description = this.viewDescription;
      if (description !== null) this.reply(replicaId, encodeMessage({ type: MessageType.VIEW_REPLY, clientId: message.clientId, view: description }));
      return;
    }
    if (message.type !== MessageType.REQUEST) throw new Error(`the client sent a ${message.type}`);
    const { request } = message;
    this.requests.push(request);
    const service = this.services.get(replicaId);
    if (service === undefined) return;
    // Each replica executes an ordered request once; a retransmission gets the same result.
    const executedKey = `${replicaId}:${request.clientId}:${request.seq}`;
    let result = this.executed.get(executedKey);
    if (result === undefined) {
      result = this.forcedResult ?? (request.ordered ? (service.executeOrdered([request], { cid: 0, regency: 0 })[0] as Uint8Array) : service.executeUnordered(request.operation));
      if (request.ordered) this.executed.set(executedKey, result);
    }
    this.reply(replicaId, encodeMessage({ type: MessageType.REPLY, view: this.viewNumber, clientId: request.clientId, seq: request.seq, result }));
  }

  private reply(replicaId: number, payload: Uint8Array): void {
    queueMicrotask(() => this.handler?.(replicaId, payload));
  }

  onMessage(handler: (replicaId: number, payload: Uint8Array) => void): void {
    this.handler = handler;
  }

  setReplicas(): void {}

  async close(): Promise<void> {
    this.handler = null;
  }
}

describe('KvClient', () => {
  const view = { number: 0, mode: 'bft' as const, f: 1, members: [0, 1, 2, 3] };
  let replicas: KvReplicas;
  let client: KvClient;

  beforeAll(() => {
    replicas = new KvReplicas(view.members);
    client = KvClient.create({ identity: 'app', session: 'main', view, transport: replicas });
  });
  afterAll(async () => {
    await client.close();
  });

  it('puts, gets (ordered and unordered), compares-and-sets, scans and deletes, with text or bytes', async () => {
    expect(await client.put('a', 'one')).toEqual({ existed: false });
    expect(await client.put('a', 'uno')).toEqual({ existed: true });
    expect(await client.getText('a')).toBe('uno');
    expect(await client.getText('a', { consistency: 'unordered' })).toBe('uno');
    expect(replicas.requests.some((request) => !request.ordered)).toBe(true);
    expect(await client.get('missing')).toBeNull();

    expect(await client.compareAndSet('a', 'one', 'two')).toEqual({ swapped: false, current: new TextEncoder().encode('uno') });
    expect(await client.compareAndSet('a', 'uno', 'dos')).toEqual({ swapped: true, current: null });
    expect(await client.compareAndSet('b', null, Uint8Array.of(0xff, 0))).toEqual({ swapped: true, current: null });
    expect(await client.compareAndSet('b', null, 'x')).toMatchObject({ swapped: false });
    expect(await client.get('b')).toEqual(Uint8Array.of(0xff, 0));
    expect((await failure(() => client.getText('b'))).code).toBe('BFT_ERR_KV_VALUE_NOT_TEXT');

    await client.put('c', 'three');
    const all = await client.scan('');
    expect(all.entries.map((entry) => [entry.key, entry.value.length])).toEqual([['a', 3], ['b', 2], ['c', 5]]);
    expect(all.next).toBeNull();
    const page = await client.scan('a', 'c', 1, { consistency: 'unordered' });
    expect(page.entries.map((entry) => kvValueText(entry.value))).toEqual(['dos']);
    expect(page.next).toBe('b');

    expect(await client.delete('a')).toEqual({ existed: true });
    expect(await client.delete('a')).toEqual({ existed: false });
    expect(await client.get('a', { consistency: 'unordered' })).toBeNull();
  });

  it('refuses keys and values the replicas would refuse before sending them', async () => {
    const sent = replicas.requests.length;
    expect((await failure(() => client.put('', 'x'))).code).toBe('BFT_ERR_KV_OPERATION_INVALID');
    expect((await failure(() => client.put('k', new Uint8Array(limits.kvValueBytesMax + 1)))).code).toBe('BFT_ERR_KV_OPERATION_INVALID');
    expect((await failure(() => client.put('k', 42 as unknown as string))).message).toMatch(/value must be a string or a Uint8Array/);
    expect((await failure(() => client.scan('', null, limits.kvRangeEntriesMax + 1))).code).toBe('BFT_ERR_KV_OPERATION_INVALID');
    expect(replicas.requests.length).toBe(sent);
  });

  it('turns service errors and foreign results into BftErrors with codes', async () => {
    const full = await failure(() => client.put('big', new Uint8Array(5000)));
    expect(full.code).toBe('BFT_ERR_KV_STORE_FULL');
    replicas.forcedResult = encodeKvResult({ type: 'error', code: 'NOT_READ_ONLY', message: 'put changes the state' });
    const refused = await failure(() => client.put('k', 'v'));
    expect(refused.code).toBe('BFT_ERR_KV_REFUSED');
    expect(refused.message).toMatch(/NOT_READ_ONLY/);
    replicas.forcedResult = Uint8Array.of(1, 2, 3);
    expect((await failure(() => client.put('k', 'v'))).code).toBe('BFT_ERR_KV_RESULT_INVALID');
    replicas.forcedResult = encodeKvResult({ type: 'value', value: null });
    expect((await failure(() => client.put('k', 'v'))).code).toBe('BFT_ERR_KV_RESULT_INVALID');
    replicas.forcedResult = null;
  });

  it('signs every request with the signing key, as replicas that require signed requests check it', async () => {
    const signer = new Signer(generateSigningKeyPair().privateKeyPem);
    const signed = new KvReplicas(view.members);
    const signing = KvClient.create({ identity: 'app', view, transport: signed, signer });
    try {
      await signing.put('k', 'v');
      await signing.get('k', { consistency: 'unordered' });
      const key = publicKeyFromRaw(signer.publicKeyRaw);
      expect(signed.requests.length).toBeGreaterThanOrEqual(8);
      for (const request of signed.requests) {
        expect(request.signature).not.toBeNull();
        expect(verify(null, requestSigningPayload(request), key.keyObject, request.signature as Uint8Array)).toBe(true);
      }
    } finally {
      await signing.close();
    }
  });

  it('runs several sessions over one transport, and moves every session to a newer view one of them learned', async () => {
    const shared = new KvReplicas([0, 1, 2, 3, 4]);
    const changed: number[] = [];
    const first = KvClient.create({ identity: 'app', session: 'one', view, transport: shared, onViewChanged: (next) => changed.push(next.number) });
    const second = first.session('two');
    try {
      expect(() => first.session('two')).toThrow(/already open/);
      await first.put('k', 'v');
      expect(await second.getText('k')).toBe('v');
      expect(new Set(shared.requests.map((request) => request.clientId))).toEqual(new Set(['app/one', 'app/two']));

      // The cluster moved to view 1 with a fifth member; replies say so and VIEW_REPLYs describe it.
      shared.viewNumber = 1;
      shared.viewDescription = { number: 1, mode: 'bft', f: 1, members: [0, 1, 2, 3, 4].map((id) => ({ id, host: '127.0.0.1', port: 7000 + id, adminPort: 8000, publicKey: new Uint8Array(32) })) };
      await first.put('k', 'w');
      await waitFor(() => first.view.number === 1);
      expect(first.bftClient.view.members).toEqual([0, 1, 2, 3, 4]);
      expect(second.bftClient.view.number).toBe(1);
      expect(changed).toEqual([1]);
      const third = first.session('three');
      expect(third.bftClient.view.number).toBe(1);
    } finally {
      await first.close();
    }
    expect((await failure(() => second.put('k', 'x'))).code).toBe('BFT_ERR_CLIENT_CLOSED');
  });
});

async function waitFor(condition: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
