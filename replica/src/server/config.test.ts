import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultTimingTicks, invalidCoreConfig } from '../core/config.ts';
import { BftError } from '../errors.ts';
import { limits } from '../constants.ts';
import { resolveServiceThread } from './replica-process.ts';
import {
  type ReplicaConfig,
  configEnvVars,
  coreConfigOf,
  coreTimingTicks,
  envVarFor,
  loadReplicaConfig,
} from './config.ts';

let directory = '';
let fileCounter = 0;

beforeAll(() => {
  directory = mkdtempSync(join(tmpdir(), 'bftkube-config-'));
});

afterAll(() => {
  rmSync(directory, { recursive: true, force: true });
});

function members(count: number) {
  return Array.from({ length: count }, (_, id) => ({ id, host: `replica-${id}.demo.svc`, port: 7000, adminPort: 8000 }));
}

function baseConfig(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    replicaId: 1,
    cluster: { name: 'demo', view: { mode: 'bft', members: members(4) } },
    keysDir: 'keys',
    dataDir: '/var/lib/bftkube',
    ...overrides,
  };
}

function writeConfig(content: unknown): string {
  fileCounter += 1;
  const file = join(directory, `replica-${fileCounter}.json`);
  writeFileSync(file, typeof content === 'string' ? content : JSON.stringify(content, null, 2));
  return file;
}

function load(content: unknown, env: Record<string, string> = {}): ReplicaConfig {
  return loadReplicaConfig({ file: writeConfig(content), env });
}

/** The BftError a load throws; fails the test if it loads. */
function loadError(content: unknown, env: Record<string, string> = {}): { message: string; file: string } {
  const file = writeConfig(content);
  try {
    loadReplicaConfig({ file, env });
  } catch (error) {
    expect(error).toBeInstanceOf(BftError);
    expect((error as BftError).code).toBe('BFT_ERR_CONFIG_INVALID');
    return { message: (error as BftError).message, file };
  }
  throw new Error('the configuration loaded, but it is invalid');
}

describe('loadReplicaConfig defaults', () => {
  it('fills defaults: f is the largest the members allow, listen ports are this member’s, fsync, 10 ms ticks', () => {
    const file = writeConfig(baseConfig());
    const config = loadReplicaConfig({ file, env: {} });
    expect(config.cluster.view).toMatchObject({ number: 0, mode: 'bft', f: 1 });
    expect(config.listen).toEqual({ host: '0.0.0.0', port: 7000, adminHost: '0.0.0.0', adminPort: 8000 });
    expect(config.durability).toBe('fsync');
    expect(config.tickMs).toBe(10);
    expect(config.batch).toEqual({ requestsMax: 1024, bytesMax: 1024 * 1024, fillPercent: 100, fillWaitMs: 2 });
    expect(config.requireSignedRequests).toBe(false);
    expect(config.logLevel).toBe('info');
    expect(config.service).toEqual({ thread: 'auto' });
    // Relative paths in the file are relative to the file.
    expect(config.keysDir).toBe(join(directory, 'keys'));
    expect(config.dataDir).toBe('/var/lib/bftkube');
  });

  it('defaults f to the largest for crash mode too (5 replicas tolerate 2 crashes)', () => {
    const config = load(baseConfig({ cluster: { name: 'demo', view: { mode: 'crash', members: members(5) } } }));
    expect(config.cluster.view.f).toBe(2);
  });

  it('converts the default timing to the core’s default ticks, and the core accepts the result', () => {
    const config = load(baseConfig());
    expect(coreTimingTicks(config)).toEqual(defaultTimingTicks);
    const core = coreConfigOf(config);
    expect(invalidCoreConfig(core)).toBeNull();
    expect(core).toMatchObject({ me: 1, view: { number: 0, mode: 'bft', f: 1, members: [0, 1, 2, 3] } });
  });

  it('rounds milliseconds up to whole ticks, so that no timeout gets shorter', () => {
    const config = load(baseConfig({ tickMs: 20, requestTimeoutMs: 1001, retransmitMs: 20 }));
    expect(coreTimingTicks(config)).toMatchObject({ requestTimeoutTicks: 51, retransmitTicks: 1 });
  });

  it('keeps service.module (resolved) and service.config as given', () => {
    const config = load(baseConfig({ service: { module: './my-service.ts', config: { shards: 3 } } }));
    expect(config.service).toEqual({ module: join(directory, 'my-service.ts'), config: { shards: 3 }, thread: 'auto' });
  });

  it('resolves service.thread auto to a worker only where cores are to spare', () => {
    expect(resolveServiceThread('auto', 2)).toBe('inline');
    expect(resolveServiceThread('auto', limits.serviceWorkerCoresMin)).toBe('worker');
    expect(resolveServiceThread('worker', 1)).toBe('worker');
    expect(resolveServiceThread('inline', 64)).toBe('inline');
  });

  it('keeps a service.module with a scheme (builtin:kv) as written', () => {
    expect(load(baseConfig({ service: { module: 'builtin:kv' } })).service.module).toBe('builtin:kv');
    expect(load(baseConfig({ service: { thread: 'inline' } })).service.thread).toBe('inline');
    expect(loadReplicaConfig({ file: writeConfig(baseConfig()), env: { BFTKUBE_SERVICE_MODULE: 'builtin:throughput' } }).service.module).toBe(
      'builtin:throughput',
    );
  });
});

describe('loadReplicaConfig environment overrides', () => {
  it('lets BFTKUBE_* variables override scalar fields of the file', () => {
    const config = load(baseConfig({ durability: 'batch' }), {
      BFTKUBE_REPLICA_ID: '2',
      BFTKUBE_LISTEN_PORT: '7100',
      BFTKUBE_LISTEN_ADMIN_HOST: '127.0.0.1',
      BFTKUBE_DURABILITY: 'none',
      BFTKUBE_REQUIRE_SIGNED_REQUESTS: 'true',
      BFTKUBE_CLUSTER_VIEW_F: '0',
      BFTKUBE_HEARTBEAT_INTERVAL_MS: '250',
      BFTKUBE_LOG_LEVEL: 'debug',
      BFTKUBE_KEYS_DIR: 'relative-keys',
    });
    expect(config.replicaId).toBe(2);
    expect(config.listen).toEqual({ host: '0.0.0.0', port: 7100, adminHost: '127.0.0.1', adminPort: 8000 });
    expect(config.durability).toBe('none');
    expect(config.requireSignedRequests).toBe(true);
    expect(config.cluster.view.f).toBe(0);
    expect(config.heartbeatIntervalMs).toBe(250);
    expect(config.logLevel).toBe('debug');
    // Relative paths from the environment are relative to the working directory.
    expect(config.keysDir).toBe(resolve('relative-keys'));
  });

  it('ignores BFTKUBE_* variables of other tools and unset ones', () => {
    const config = load(baseConfig(), { BFTKUBE_CACHE_DIR: '/tmp/cache', BFTKUBE_SKIP_BINARIES: '1' });
    expect(config.replicaId).toBe(1);
    const unset = loadReplicaConfig({ file: writeConfig(baseConfig()), env: { BFTKUBE_LISTEN_PORT: undefined } });
    expect(unset.listen.port).toBe(7000);
  });

  it('names each field’s variable after its path in upper snake case, one variable per field', () => {
    expect(envVarFor('replicaId')).toBe('BFTKUBE_REPLICA_ID');
    expect(envVarFor('listen.port')).toBe('BFTKUBE_LISTEN_PORT');
    expect(envVarFor('listen.adminPort')).toBe('BFTKUBE_LISTEN_ADMIN_PORT');
    expect(envVarFor('cluster.view.f')).toBe('BFTKUBE_CLUSTER_VIEW_F');
    expect(envVarFor('leaderSilenceTimeoutMs')).toBe('BFTKUBE_LEADER_SILENCE_TIMEOUT_MS');
    expect(configEnvVars.get('BFTKUBE_DURABILITY')).toEqual({ path: 'durability', kind: 'string' });
    const paths = [...configEnvVars.values()].map((field) => field.path);
    expect(new Set(paths).size).toBe(configEnvVars.size);
    for (const [name, field] of configEnvVars) expect(envVarFor(field.path)).toBe(name);
  });

  it('documents every variable in the module comment', async () => {
    const { readFileSync } = await import('node:fs');
    const source = readFileSync(new URL('./config.ts', import.meta.url), 'utf8');
    for (const name of configEnvVars.keys()) expect(source).toContain(`  ${name}`);
  });

  it('builds a whole configuration from a file without scalars plus the environment', () => {
    const file = writeConfig({ cluster: { view: { mode: 'crash', members: members(3) } } });
    const config = loadReplicaConfig({
      file,
      env: { BFTKUBE_REPLICA_ID: '0', BFTKUBE_CLUSTER_NAME: 'from-env', BFTKUBE_KEYS_DIR: '/keys', BFTKUBE_DATA_DIR: '/data' },
    });
    expect(config).toMatchObject({ replicaId: 0, cluster: { name: 'from-env', view: { f: 1 } }, keysDir: '/keys', dataDir: '/data' });
  });
});

describe('loadReplicaConfig errors name the field, the problem and where to fix it', () => {
  it('an unknown field in the file', () => {
    const { message, file } = loadError(baseConfig({ listen: { prot: 7000 } }));
    expect(message).toContain('listen.prot: is not a configuration field; remove it or fix its spelling');
    expect(message).toContain(`fix it in ${file}`);
  });

  it('a missing required field: add it to the file, or set its variable', () => {
    const { message, file } = loadError(baseConfig({ keysDir: undefined }));
    expect(message).toContain('keysDir: must be a path (missing;');
    expect(message).toContain(`add it to ${file}, or set BFTKUBE_KEYS_DIR`);
  });

  it('a value of the wrong type, with what was given', () => {
    const { message } = loadError(baseConfig({ tickMs: '10' }));
    expect(message).toContain('tickMs: must be an integer from 1 to 1000 (got "10";');
  });

  it('a variable that is not an integer names the variable', () => {
    const { message } = loadError(baseConfig(), { BFTKUBE_LISTEN_PORT: 'seven thousand' });
    expect(message).toContain('listen.port: must be a decimal integer, but BFTKUBE_LISTEN_PORT holds "seven thousand"; fix or unset BFTKUBE_LISTEN_PORT');
  });

  it('a variable that is not a boolean names the variable', () => {
    const { message } = loadError(baseConfig(), { BFTKUBE_REQUIRE_SIGNED_REQUESTS: 'yes' });
    expect(message).toContain('requireSignedRequests: must be true or false, but BFTKUBE_REQUIRE_SIGNED_REQUESTS holds "yes"');
  });

  it('a value set by a variable that the schema refuses names the variable, not the file', () => {
    const { message } = loadError(baseConfig(), { BFTKUBE_DURABILITY: 'sometimes' });
    expect(message).toContain('durability: must be one of fsync, batch, none (got "sometimes"; set by BFTKUBE_DURABILITY: fix or unset that variable)');
  });

  it('a misspelt variable in a configuration section', () => {
    const { message } = loadError(baseConfig(), { BFTKUBE_LISTEN_PROT: '7000' });
    expect(message).toContain('BFTKUBE_LISTEN_PROT: is not a configuration variable');
    expect(message).toContain('BFTKUBE_LISTEN_PORT');
  });

  it('a replica id that is not a member', () => {
    const { message, file } = loadError(baseConfig({ replicaId: 9 }));
    expect(message).toContain('replicaId: is not a member of the view (member ids: 0, 1, 2, 3) (got 9;');
    expect(message).toContain(file);
    expect(message).not.toContain('listen.adminPort');
  });

  it('repeated member ids', () => {
    const list = [...members(4), { id: 2, host: 'replica-9.demo.svc', port: 7000, adminPort: 8000 }];
    const { message } = loadError(baseConfig({ cluster: { name: 'demo', view: { mode: 'bft', members: list } } }));
    expect(message).toContain('cluster.view.members[4].id: repeats the id of cluster.view.members[2]');
  });

  it('a host:port used twice, hosts compared without case', () => {
    const list = [...members(3), { id: 3, host: 'REPLICA-0.demo.svc', port: 8000, adminPort: 8001 }];
    const { message } = loadError(baseConfig({ cluster: { name: 'demo', view: { mode: 'bft', members: list } } }));
    expect(message).toContain('cluster.view.members[3].port: replica-0.demo.svc:8000 is also cluster.view.members[0].adminPort');
  });

  it('an f the members cannot tolerate, in BFT and in crash mode', () => {
    const bft = loadError(baseConfig({ cluster: { name: 'demo', view: { mode: 'bft', f: 2, members: members(6) } } }));
    expect(bft.message).toContain('cluster.view.f: 6 replicas cannot tolerate f=2 in bft mode (needs n ≥ 3f+1); lower f or add members (got 2;');
    const crash = loadError(baseConfig({ cluster: { name: 'demo', view: { mode: 'crash', f: 2, members: members(4) } } }));
    expect(crash.message).toContain('cluster.view.f: 4 replicas cannot tolerate f=2 in crash mode (needs n ≥ 2f+1)');
  });

  it('a leader silence timeout not above the heartbeat interval', () => {
    const { message } = loadError(baseConfig({ heartbeatIntervalMs: 1000, leaderSilenceTimeoutMs: 1000 }));
    expect(message).toContain('leaderSilenceTimeoutMs: must exceed heartbeatIntervalMs (1000), or a live leader looks dead (got 1000;');
  });

  it('a timeout shorter than one tick', () => {
    const { message } = loadError(baseConfig({ tickMs: 50, retransmitMs: 20 }));
    expect(message).toContain('retransmitMs: must be at least tickMs (50 ms)');
  });

  it('timing the core refuses once rounded to ticks, through the core’s own check', () => {
    // 41 ms and 45 ms differ, but both are 5 ticks of 10 ms.
    const collapsed = loadError(baseConfig({ heartbeatIntervalMs: 41, leaderSilenceTimeoutMs: 45 }));
    expect(collapsed.message).toContain('leaderSilenceTimeoutMs: the core refuses the timing in ticks of 10 ms');
    const tooManyTicks = loadError(baseConfig({ tickMs: 1, requestTimeoutMs: 3_000_000 }));
    expect(tooManyTicks.message).toContain('requestTimeoutMs: the core refuses the timing in ticks of 1 ms: requestTimeoutTicks must be an integer in [1, 1000000]');
  });

  it('the admin port equal to the replica port on the same address', () => {
    const { message } = loadError(baseConfig({ listen: { port: 9000, adminPort: 9000 } }));
    expect(message).toContain('listen.adminPort: equals listen.port (9000) on the same address; use another port');
    expect(load(baseConfig({ listen: { host: '127.0.0.1', adminHost: '127.0.0.2', port: 9000, adminPort: 9000 } })).listen.port).toBe(9000);
  });

  it('several problems at once, all of them', () => {
    const { message } = loadError(baseConfig({ replicaId: -1, durability: 'always', batch: { requestsMax: 0 } }));
    expect(message).toContain('3 problems:');
    expect(message).toContain('replicaId: must be an integer from 0 to');
    expect(message).toContain('durability: must be one of fsync, batch, none');
    expect(message).toContain('batch.requestsMax: must be an integer from 1 to 4096');
  });

  it('no file: the members cannot come from the environment', () => {
    expect(() => loadReplicaConfig({ env: { BFTKUBE_REPLICA_ID: '0' } })).toThrow(
      /cluster: must be an object \(missing; give a configuration file that sets it\)/,
    );
  });

  it('a file that cannot be read, is not JSON, or is not an object', () => {
    const missing = join(directory, 'does-not-exist.json');
    expect(() => loadReplicaConfig({ file: missing, env: {} })).toThrow(
      `BFT_ERR_CONFIG_INVALID: cannot read the configuration file ${missing} (ENOENT); check the path and its permissions`,
    );
    const notJson = loadError('{"replicaId": 1,');
    expect(notJson.message).toContain(`the configuration file ${notJson.file} is not valid JSON`);
    expect(notJson.message).toContain('fix its syntax');
    const notObject = loadError('[1, 2]');
    expect(notObject.message).toContain('must hold a JSON object; it holds [1,2]');
  });

  it('keeps the underlying error as the cause', () => {
    try {
      loadReplicaConfig({ file: join(directory, 'absent.json'), env: {} });
      throw new Error('loaded a missing file');
    } catch (error) {
      expect((error as BftError).cause).toMatchObject({ code: 'ENOENT' });
    }
  });
});
