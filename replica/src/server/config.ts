// The replica's configuration: a JSON file, with scalar fields overridable by environment variables,
// validated with zod and then across fields, so that a replica refuses to start on a configuration it
// could not run safely. Every problem is a BftError('BFT_ERR_CONFIG_INVALID') naming the field, what is
// wrong with it, and where to fix it (the file, or the environment variable that set it).
//
// Environment variables. `BFTKUBE_` followed by the field's path, each segment in upper snake case,
// joined with `_`:
//
//   replicaId               BFTKUBE_REPLICA_ID            batch.requestsMax        BFTKUBE_BATCH_REQUESTS_MAX
//   cluster.name            BFTKUBE_CLUSTER_NAME          batch.bytesMax           BFTKUBE_BATCH_BYTES_MAX
//                                                         batch.fillPercent        BFTKUBE_BATCH_FILL_PERCENT
//                                                         batch.fillWaitMs         BFTKUBE_BATCH_FILL_WAIT_MS
//   cluster.view.number     BFTKUBE_CLUSTER_VIEW_NUMBER   tickMs                   BFTKUBE_TICK_MS
//   cluster.view.mode       BFTKUBE_CLUSTER_VIEW_MODE     requestTimeoutMs         BFTKUBE_REQUEST_TIMEOUT_MS
//   cluster.view.f          BFTKUBE_CLUSTER_VIEW_F        heartbeatIntervalMs      BFTKUBE_HEARTBEAT_INTERVAL_MS
//   listen.host             BFTKUBE_LISTEN_HOST           leaderSilenceTimeoutMs   BFTKUBE_LEADER_SILENCE_TIMEOUT_MS
//   listen.port             BFTKUBE_LISTEN_PORT           regencyTimeoutMs         BFTKUBE_REGENCY_TIMEOUT_MS
//   listen.adminHost        BFTKUBE_LISTEN_ADMIN_HOST     retransmitMs             BFTKUBE_RETRANSMIT_MS
//   listen.adminPort        BFTKUBE_LISTEN_ADMIN_PORT     catchUpIntervalMs        BFTKUBE_CATCH_UP_INTERVAL_MS
//   keysDir                 BFTKUBE_KEYS_DIR              requireSignedRequests    BFTKUBE_REQUIRE_SIGNED_REQUESTS
//   dataDir                 BFTKUBE_DATA_DIR              clientInFlightMax        BFTKUBE_CLIENT_IN_FLIGHT_MAX
//   durability              BFTKUBE_DURABILITY            pendingRequestsMax       BFTKUBE_PENDING_REQUESTS_MAX
//   service.module          BFTKUBE_SERVICE_MODULE        logLevel                 BFTKUBE_LOG_LEVEL
//   service.thread              BFTKUBE_SERVICE_THREAD
//   checkpoint.periodInstances  BFTKUBE_CHECKPOINT_PERIOD_INSTANCES
//   checkpoint.periodBytes      BFTKUBE_CHECKPOINT_PERIOD_BYTES
//   checkpoint.chunkBytes       BFTKUBE_CHECKPOINT_CHUNK_BYTES
//   joinsRunningCluster         BFTKUBE_JOINS_RUNNING_CLUSTER
//
// Integers are written in decimal, booleans as `true` or `false`. The members list and service.config
// are not scalars and come from the file only. A variable that starts like a section of the
// configuration (BFTKUBE_CLUSTER_, BFTKUBE_LISTEN_, BFTKUBE_BATCH_, BFTKUBE_CHECKPOINT_, BFTKUBE_SERVICE_) but names no field
// is refused as a likely typo; other BFTKUBE_* variables belong to other tools and are ignored.
//
// Relative paths (keysDir, dataDir, service.module) are resolved against the configuration file's
// directory when they come from the file, and against the working directory when they come from the
// environment. A service.module with a scheme, such as `builtin:kv`, is kept as written.

import { readFileSync, statSync } from 'node:fs';
import { isIP } from 'node:net';
import { dirname, resolve } from 'node:path';
import { z } from 'zod';
import { type CoreConfig, defaultCheckpointPeriod, invalidCoreConfig } from '../core/config.ts';
import { type FaultMode, maxFaults } from '../core/quorum.ts';
import { type View, invalidView } from '../core/view.ts';
import { limits } from '../constants.ts';
import { BftError } from '../errors.ts';
import { type LogLevel, logLevels } from './logger.ts';

export const durabilityModes = ['fsync', 'batch', 'none'] as const;
export const serviceThreads = ['auto', 'worker', 'inline'] as const;
export type ServiceThread = (typeof serviceThreads)[number];
export type Durability = (typeof durabilityModes)[number];

export interface MemberConfig {
  readonly id: number;
  /** DNS name (or IP address) other replicas and clients use to reach this member. */
  readonly host: string;
  readonly port: number;
  readonly adminPort: number;
}

export interface ReplicaConfig {
  readonly replicaId: number;
  readonly cluster: {
    readonly name: string;
    readonly view: {
      readonly number: number;
      readonly mode: FaultMode;
      /** Resolved: the largest f the members allow when the file leaves it out. */
      readonly f: number;
      readonly members: readonly MemberConfig[];
    };
  };
  readonly listen: {
    readonly host: string;
    readonly port: number;
    readonly adminHost: string;
    readonly adminPort: number;
  };
  /** TLS material (CA, certificate, key) and Ed25519 keys. */
  readonly keysDir: string;
  readonly dataDir: string;
  readonly durability: Durability;
  /**
   * This replica joins a cluster that has run before (it replaces a replica whose disk was lost, or is a
   * new member): if its data directory is empty, it may have voted from a disk it no longer has, so it
   * votes in none of the instances it could have voted in. False for the replicas that start a cluster.
   */
  readonly joinsRunningCluster: boolean;
  /** fillPercent: see CoreConfig.batchFillPercent; fillWaitMs: how long such a wait may last (the core ends it by its second tick anyway). */
  readonly batch: { readonly requestsMax: number; readonly bytesMax: number; readonly fillPercent: number; readonly fillWaitMs: number };
  /** Checkpoint after this many decided instances or bytes of decided batches, whichever comes first. */
  readonly checkpoint: {
    readonly periodInstances: number;
    readonly periodBytes: number;
    /** Checkpoints are hashed, served and fetched in chunks of this size. */
    readonly chunkBytes: number;
  };
  readonly tickMs: number;
  readonly requestTimeoutMs: number;
  readonly heartbeatIntervalMs: number;
  readonly leaderSilenceTimeoutMs: number;
  readonly regencyTimeoutMs: number;
  readonly retransmitMs: number;
  readonly catchUpIntervalMs: number;
  readonly requireSignedRequests: boolean;
  readonly clientInFlightMax: number;
  readonly pendingRequestsMax: number;
  /**
   * The service: its module, its configuration, and where it runs. `worker` gives it a thread of its own
   * (DESIGN §1), so that a slow operation never holds up ordering; `inline` runs it on the replica's main
   * thread, which is faster where there is no core to spare for that thread (measured with 4 replicas
   * and the clients on 2 cores: 25% less throughput with workers, 6,900 against 9,300 ops/s, and +0.5 ms
   * of 1-client latency). `auto` (the default) chooses `worker` on a machine with at least
   * serviceWorkerCoresMin cores and `inline` below.
   */
  readonly service: { readonly module?: string; readonly config?: unknown; readonly thread: ServiceThread };
  readonly logLevel: LogLevel;
}

export const configDefaults = {
  viewNumber: 0,
  listenHost: '0.0.0.0',
  durability: 'fsync',
  batchRequestsMax: 1024,
  batchBytesMax: 1024 * 1024,
  batchFillPercent: 100,
  batchFillWaitMs: 2,
  tickMs: 10,
  requestTimeoutMs: 2000,
  heartbeatIntervalMs: 500,
  leaderSilenceTimeoutMs: 3000,
  regencyTimeoutMs: 2000,
  retransmitMs: 500,
  catchUpIntervalMs: 100,
  requireSignedRequests: false,
  clientInFlightMax: 16,
  pendingRequestsMax: limits.pendingRequestsMax,
  logLevel: 'info',
} as const;

/** Timing fields in milliseconds, and the CoreConfig field each becomes. */
const timingFields = {
  requestTimeoutMs: 'requestTimeoutTicks',
  heartbeatIntervalMs: 'heartbeatIntervalTicks',
  leaderSilenceTimeoutMs: 'leaderSilenceTimeoutTicks',
  regencyTimeoutMs: 'regencyTimeoutTicks',
  retransmitMs: 'retransmitTicks',
  catchUpIntervalMs: 'catchUpIntervalTicks',
} as const;

type TimingField = keyof typeof timingFields;
export type CoreTimingTicks = { readonly [K in TimingField as (typeof timingFields)[K]]: number };

const timingMsMax = 3_600_000;

// --- The file's schema -------------------------------------------------------------------------------

function integer(min: number, max: number) {
  const error = `must be an integer from ${min} to ${max}`;
  return z.int({ error }).min(min, { error }).max(max, { error });
}

function oneOf<const T extends readonly [string, ...string[]]>(values: T) {
  return z.enum(values, { error: `must be one of ${values.join(', ')}` });
}

const dnsName = /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$/;
const hostError = 'must be a DNS name or an IP address';
const host = z
  .string({ error: hostError })
  .refine((value) => dnsName.test(value) || isIP(value) !== 0, { error: hostError });
const port = integer(1, 65_535);
const nonEmptyPath = z.string({ error: 'must be a path' }).min(1, { error: 'must be a non-empty path' });
const clusterNameError = `must be 1 to ${limits.clusterNameLengthMax} characters of A-Z a-z 0-9 . _ -`;

const memberSchema = z.strictObject(
  { id: integer(0, limits.replicaIdMax), host, port, adminPort: port },
  { error: 'must be an object with id, host, port and adminPort' },
);

function section<T extends z.core.$ZodLooseShape>(shape: T) {
  return z.strictObject(shape, { error: 'must be an object' });
}

/** The configuration file as written: required fields and defaults. Cross-field rules come after. */
export const replicaConfigFileSchema = section({
  replicaId: integer(0, limits.replicaIdMax),
  cluster: section({
    name: z
      .string({ error: clusterNameError })
      .regex(new RegExp(`^[A-Za-z0-9._-]{1,${limits.clusterNameLengthMax}}$`), { error: clusterNameError }),
    view: section({
      number: integer(0, Number.MAX_SAFE_INTEGER).default(configDefaults.viewNumber),
      mode: oneOf(['bft', 'crash']),
      f: integer(0, limits.membersMax).optional(),
      members: z
        .array(memberSchema, { error: 'must be a list of members' })
        .min(1, { error: `must list 1 to ${limits.membersMax} members` })
        .max(limits.membersMax, { error: `must list 1 to ${limits.membersMax} members` }),
    }),
  }),
  listen: section({
    host: host.default(configDefaults.listenHost),
    /** Default: this replica's port in the members list. */
    port: port.optional(),
    adminHost: host.default(configDefaults.listenHost),
    /** Default: this replica's adminPort in the members list. */
    adminPort: port.optional(),
  }).prefault({}),
  keysDir: nonEmptyPath,
  dataDir: nonEmptyPath,
  durability: oneOf(durabilityModes).default(configDefaults.durability),
  joinsRunningCluster: z.boolean({ error: 'must be true or false' }).default(false),
  batch: section({
    requestsMax: integer(1, limits.batchRequestsMax).default(configDefaults.batchRequestsMax),
    bytesMax: integer(1024, limits.batchBytesMax).default(configDefaults.batchBytesMax),
    fillPercent: integer(0, 100).default(configDefaults.batchFillPercent),
    fillWaitMs: integer(1, 1000).default(configDefaults.batchFillWaitMs),
  }).prefault({}),
  checkpoint: section({
    periodInstances: integer(1, Math.floor(limits.decisionsRetainedMax / 4)).default(defaultCheckpointPeriod.checkpointPeriodInstances),
    periodBytes: integer(1, Math.floor(limits.decisionsRetainedBytesMax / 4)).default(defaultCheckpointPeriod.checkpointPeriodBytes),
    chunkBytes: integer(limits.checkpointChunkBytesMin, limits.checkpointChunkBytesMax).default(limits.checkpointChunkBytesDefault),
  }).prefault({}),
  tickMs: integer(1, 1000).default(configDefaults.tickMs),
  requestTimeoutMs: integer(1, timingMsMax).default(configDefaults.requestTimeoutMs),
  heartbeatIntervalMs: integer(1, timingMsMax).default(configDefaults.heartbeatIntervalMs),
  leaderSilenceTimeoutMs: integer(1, timingMsMax).default(configDefaults.leaderSilenceTimeoutMs),
  regencyTimeoutMs: integer(1, timingMsMax).default(configDefaults.regencyTimeoutMs),
  retransmitMs: integer(1, timingMsMax).default(configDefaults.retransmitMs),
  catchUpIntervalMs: integer(1, timingMsMax).default(configDefaults.catchUpIntervalMs),
  requireSignedRequests: z.boolean({ error: 'must be true or false' }).default(configDefaults.requireSignedRequests),
  clientInFlightMax: integer(1, limits.clientInFlightMax).default(configDefaults.clientInFlightMax),
  pendingRequestsMax: integer(1, limits.pendingRequestsMax).default(configDefaults.pendingRequestsMax),
  service: section({
    module: nonEmptyPath.optional(),
    config: z.unknown().optional(),
    thread: oneOf(serviceThreads).default('auto'),
  }).prefault({}),
  logLevel: oneOf(logLevels).default(configDefaults.logLevel),
});

type ParsedFile = z.output<typeof replicaConfigFileSchema>;

// --- Environment variables ---------------------------------------------------------------------------

type ScalarKind = 'integer' | 'boolean' | 'string';

const scalarFields: ReadonlyArray<readonly [path: string, kind: ScalarKind]> = [
  ['replicaId', 'integer'],
  ['cluster.name', 'string'],
  ['cluster.view.number', 'integer'],
  ['cluster.view.mode', 'string'],
  ['cluster.view.f', 'integer'],
  ['listen.host', 'string'],
  ['listen.port', 'integer'],
  ['listen.adminHost', 'string'],
  ['listen.adminPort', 'integer'],
  ['keysDir', 'string'],
  ['dataDir', 'string'],
  ['durability', 'string'],
  ['joinsRunningCluster', 'boolean'],
  ['batch.requestsMax', 'integer'],
  ['batch.bytesMax', 'integer'],
  ['batch.fillPercent', 'integer'],
  ['batch.fillWaitMs', 'integer'],
  ['checkpoint.periodInstances', 'integer'],
  ['checkpoint.periodBytes', 'integer'],
  ['checkpoint.chunkBytes', 'integer'],
  ['tickMs', 'integer'],
  ['requestTimeoutMs', 'integer'],
  ['heartbeatIntervalMs', 'integer'],
  ['leaderSilenceTimeoutMs', 'integer'],
  ['regencyTimeoutMs', 'integer'],
  ['retransmitMs', 'integer'],
  ['catchUpIntervalMs', 'integer'],
  ['requireSignedRequests', 'boolean'],
  ['clientInFlightMax', 'integer'],
  ['pendingRequestsMax', 'integer'],
  ['service.module', 'string'],
  ['service.thread', 'string'],
  ['logLevel', 'string'],
];

export const envPrefix = 'BFTKUBE_';

/** `listen.adminPort` → `BFTKUBE_LISTEN_ADMIN_PORT`. */
export function envVarFor(path: string): string {
  return envPrefix + path.split('.').map((segment) => segment.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase()).join('_');
}

/** Every environment variable the loader reads, and the field it sets. */
export const configEnvVars: ReadonlyMap<string, { readonly path: string; readonly kind: ScalarKind }> = new Map(
  scalarFields.map(([path, kind]) => [envVarFor(path), { path, kind }]),
);

const envSectionPrefixes = [...new Set(scalarFields.filter(([path]) => path.includes('.')).map(([path]) => path.split('.')[0] as string))].map(
  (sectionName) => `${envVarFor(sectionName)}_`,
);

const pathFields = new Set(['keysDir', 'dataDir', 'service.module']);

// --- Loading -----------------------------------------------------------------------------------------

export interface LoadConfigOptions {
  /** The JSON configuration file; without it, every required field must come from the environment. */
  readonly file?: string;
  readonly env: Readonly<Record<string, string | undefined>>;
}

interface Problem {
  readonly path: string;
  readonly message: string;
  /** False when the message already says what was given (values from the environment before parsing). */
  readonly showValue?: boolean;
}

/** Where each field's value came from, to tell the reader where to fix it. */
class Sources {
  readonly file: string | undefined;
  readonly fromEnv = new Map<string, string>();

  constructor(file: string | undefined) {
    this.file = file;
  }

  where(path: string, missing: boolean): string {
    const envVar = this.fromEnv.get(path);
    if (envVar !== undefined) return `set by ${envVar}: fix or unset that variable`;
    const scalarEnvVar = configEnvVars.has(envVarFor(path)) ? envVarFor(path) : undefined;
    if (missing) {
      const inFile = this.file === undefined ? 'give a configuration file that sets it' : `add it to ${this.file}`;
      return scalarEnvVar === undefined ? inFile : `${inFile}, or set ${scalarEnvVar}`;
    }
    return this.file === undefined ? 'fix the environment' : `fix it in ${this.file}`;
  }
}

function configError(problems: readonly Problem[], sources: Sources, raw: unknown): BftError {
  const lines = problems.map((problem) => {
    if (problem.showValue === false) return `${problem.path}: ${problem.message}`;
    const value = valueAt(raw, problem.path);
    const missing = value === undefined;
    const got = missing ? 'missing' : `got ${describe(value)}`;
    return `${problem.path}: ${problem.message} (${got}; ${sources.where(problem.path, missing)})`;
  });
  const count = problems.length === 1 ? '' : `${problems.length} problems: `;
  return new BftError('BFT_ERR_CONFIG_INVALID', `${count}${lines.join('; ')}`);
}

function describe(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

function valueAt(root: unknown, path: string): unknown {
  let value = root;
  for (const segment of path.split('.')) {
    if (value === null || typeof value !== 'object') return undefined;
    value = (value as Record<string, unknown>)[segment.replace(/\[(\d+)\]$/, '')];
    const index = /\[(\d+)\]$/.exec(segment);
    if (index !== null) value = Array.isArray(value) ? value[Number(index[1])] : undefined;
  }
  return value;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

function readConfigFile(file: string): Record<string, unknown> {
  let text: string;
  try {
    const size = statSync(file).size;
    if (size > limits.configFileBytesMax) {
      throw new BftError(
        'BFT_ERR_CONFIG_INVALID',
        `the configuration file ${file} has ${size} bytes, more than ${limits.configFileBytesMax}; is it the right file?`,
      );
    }
    text = readFileSync(file, 'utf8');
  } catch (error) {
    if (error instanceof BftError) throw error;
    const code = (error as NodeJS.ErrnoException).code ?? 'error';
    throw new BftError('BFT_ERR_CONFIG_INVALID', `cannot read the configuration file ${file} (${code}); check the path and its permissions`, {
      cause: error,
    });
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new BftError('BFT_ERR_CONFIG_INVALID', `the configuration file ${file} is not valid JSON (${(error as Error).message}); fix its syntax`, {
      cause: error,
    });
  }
  if (!isPlainObject(parsed)) {
    throw new BftError('BFT_ERR_CONFIG_INVALID', `the configuration file ${file} must hold a JSON object; it holds ${describe(parsed)}`);
  }
  return parsed;
}

/** Applies BFTKUBE_* overrides to the raw configuration, recording which fields they set. */
function applyEnv(raw: Record<string, unknown>, env: LoadConfigOptions['env'], sources: Sources): Problem[] {
  const problems: Problem[] = [];
  for (const [name, value] of Object.entries(env).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    if (value === undefined || !name.startsWith(envPrefix)) continue;
    const field = configEnvVars.get(name);
    if (field === undefined) {
      const section = envSectionPrefixes.find((prefix) => name.startsWith(prefix));
      if (section !== undefined) {
        const known = [...configEnvVars.keys()].filter((candidate) => candidate.startsWith(section));
        problems.push({
          path: name,
          message: `is not a configuration variable (the ${section}* ones are ${known.join(', ')}); fix or unset it`,
          showValue: false,
        });
      }
      continue;
    }
    let parsed: unknown = value;
    if (field.kind === 'integer') {
      parsed = /^-?[0-9]+$/.test(value.trim()) ? Number(value.trim()) : value;
    } else if (field.kind === 'boolean') {
      parsed = value.trim() === 'true' ? true : value.trim() === 'false' ? false : value;
    }
    if (field.kind !== 'string' && typeof parsed === 'string') {
      const expected = field.kind === 'integer' ? 'a decimal integer' : 'true or false';
      problems.push({
        path: field.path,
        message: `must be ${expected}, but ${name} holds ${describe(value)}; fix or unset ${name}`,
        showValue: false,
      });
      continue;
    }
    if (setAt(raw, field.path, parsed)) sources.fromEnv.set(field.path, name);
  }
  return problems;
}

/** Sets a nested field, creating missing sections; leaves a section that is not an object for the schema to report. */
function setAt(root: Record<string, unknown>, path: string, value: unknown): boolean {
  const segments = path.split('.');
  let node = root;
  for (const segment of segments.slice(0, -1)) {
    const next = node[segment];
    if (next === undefined) node[segment] = {};
    else if (!isPlainObject(next)) return false;
    node = node[segment] as Record<string, unknown>;
  }
  node[segments[segments.length - 1] as string] = value;
  return true;
}

function issuePath(path: readonly PropertyKey[]): string {
  let text = '';
  for (const segment of path) {
    if (typeof segment === 'number') text += `[${segment}]`;
    else text += text === '' ? String(segment) : `.${String(segment)}`;
  }
  return text;
}

function schemaProblems(error: z.ZodError): Problem[] {
  const problems: Problem[] = [];
  for (const issue of error.issues) {
    const path = issuePath(issue.path);
    if (issue.code === 'unrecognized_keys') {
      for (const key of issue.keys) {
        problems.push({ path: path === '' ? key : `${path}.${key}`, message: 'is not a configuration field; remove it or fix its spelling' });
      }
    } else {
      problems.push({ path: path === '' ? '(root)' : path, message: issue.message });
    }
  }
  return problems;
}

/** Loads, validates and resolves the replica configuration; throws BFT_ERR_CONFIG_INVALID naming every problem. */
export function loadReplicaConfig(options: LoadConfigOptions): ReplicaConfig {
  const sources = new Sources(options.file);
  const raw = options.file === undefined ? {} : readConfigFile(options.file);
  const envProblems = applyEnv(raw, options.env, sources);
  const parsed = replicaConfigFileSchema.safeParse(raw);
  const problems = [...envProblems, ...(parsed.success ? [] : schemaProblems(parsed.error))];
  if (problems.length > 0 || !parsed.success) throw configError(problems, sources, raw);

  const resolved = resolveConfig(parsed.data, sources);
  const crossFieldProblems = crossFieldProblemsOf(resolved, parsed.data);
  if (crossFieldProblems.length > 0) throw configError(crossFieldProblems, sources, raw);
  return resolved;
}

function resolveConfig(file: ParsedFile, sources: Sources): ReplicaConfig {
  const view = file.cluster.view;
  const me = view.members.find((member) => member.id === file.replicaId);
  const baseDir = (path: string): string =>
    sources.fromEnv.has(path) || sources.file === undefined ? process.cwd() : dirname(resolve(sources.file));
  // Values with a scheme (`builtin:kv`) name no file and stay as they are.
  const resolvePath = (path: string, value: string): string =>
    pathFields.has(path) && !/^[A-Za-z][A-Za-z0-9+.-]+:/.test(value) ? resolve(baseDir(path), value) : value;
  return {
    ...file,
    cluster: {
      name: file.cluster.name,
      view: {
        number: view.number,
        mode: view.mode,
        f: view.f ?? maxFaults(view.members.length, view.mode),
        members: view.members,
      },
    },
    listen: {
      host: file.listen.host,
      // A replica that is not a member fails the cross-field check below; 0 never reaches a caller.
      port: file.listen.port ?? me?.port ?? 0,
      adminHost: file.listen.adminHost,
      adminPort: file.listen.adminPort ?? me?.adminPort ?? 0,
    },
    keysDir: resolvePath('keysDir', file.keysDir),
    dataDir: resolvePath('dataDir', file.dataDir),
    service: {
      ...(file.service.module === undefined ? {} : { module: resolvePath('service.module', file.service.module) }),
      ...(file.service.config === undefined ? {} : { config: file.service.config }),
      thread: file.service.thread,
    },
  };
}

const wildcardHosts = new Set(['0.0.0.0', '::', '[::]']);

function crossFieldProblemsOf(config: ReplicaConfig, file: ParsedFile): Problem[] {
  const problems: Problem[] = [];
  const members = config.cluster.view.members;

  let duplicateIds = false;
  const firstWithId = new Map<number, number>();
  const endpoints = new Map<string, string>();
  members.forEach((member, i) => {
    const seen = firstWithId.get(member.id);
    if (seen !== undefined) {
      duplicateIds = true;
      problems.push({ path: `cluster.view.members[${i}].id`, message: `repeats the id of cluster.view.members[${seen}]; ids are unique` });
    } else firstWithId.set(member.id, i);
    for (const field of ['port', 'adminPort'] as const) {
      const endpoint = `${member.host.toLowerCase().replace(/\.$/, '')}:${member[field]}`;
      const path = `cluster.view.members[${i}].${field}`;
      const other = endpoints.get(endpoint);
      if (other !== undefined) problems.push({ path, message: `${endpoint} is also ${other}; every host:port is unique` });
      else endpoints.set(endpoint, path);
    }
  });

  const isMember = firstWithId.has(config.replicaId);
  if (!isMember) {
    problems.push({
      path: 'replicaId',
      message: `is not a member of the view (member ids: ${members.map((member) => member.id).join(', ')})`,
    });
  }

  const view = viewOf(config);
  const viewReason = invalidView(view);
  if (viewReason !== null && !duplicateIds) {
    problems.push({
      path: file.cluster.view.f === undefined ? 'cluster.view.members' : 'cluster.view.f',
      message: `${viewReason}; lower f or add members`,
    });
  }

  const { listen } = config;
  const sameHost = listen.host === listen.adminHost || wildcardHosts.has(listen.host) || wildcardHosts.has(listen.adminHost);
  // Without membership the ports have no default; that problem is already reported.
  if (isMember && sameHost && listen.port === listen.adminPort) {
    problems.push({ path: 'listen.adminPort', message: `equals listen.port (${listen.port}) on the same address; use another port` });
  }

  for (const field of Object.keys(timingFields) as TimingField[]) {
    if (config[field] < config.tickMs) {
      problems.push({ path: field, message: `must be at least tickMs (${config.tickMs} ms), the clock's resolution` });
    }
  }
  if (config.leaderSilenceTimeoutMs <= config.heartbeatIntervalMs) {
    problems.push({
      path: 'leaderSilenceTimeoutMs',
      message: `must exceed heartbeatIntervalMs (${config.heartbeatIntervalMs}), or a live leader looks dead`,
    });
  }

  // The core's own check, last: it catches what rounding to ticks may break (and anything added there later).
  if (problems.length === 0) {
    const reason = invalidCoreConfig(coreConfigOf(config));
    if (reason !== null) {
      const tickField = /\b([a-zA-Z]+)Ticks\b/.exec(reason)?.[1];
      const path = tickField === undefined ? 'tickMs' : `${tickField}Ms`;
      problems.push({
        path: path in timingFields ? path : 'tickMs',
        message: `the core refuses the timing in ticks of ${config.tickMs} ms: ${reason}; change the *Ms fields or tickMs`,
      });
    }
  }
  return problems;
}

// --- Deriving what the core needs --------------------------------------------------------------------

export function viewOf(config: ReplicaConfig): View {
  const { view } = config.cluster;
  return { number: view.number, mode: view.mode, f: view.f, members: view.members.map((member) => member.id) };
}

/** Millisecond timing as the core's tick counts, rounded up so that no timeout gets shorter. */
export function coreTimingTicks(config: ReplicaConfig): CoreTimingTicks {
  const ticks = (ms: number): number => Math.max(1, Math.ceil(ms / config.tickMs));
  return {
    requestTimeoutTicks: ticks(config.requestTimeoutMs),
    heartbeatIntervalTicks: ticks(config.heartbeatIntervalMs),
    leaderSilenceTimeoutTicks: ticks(config.leaderSilenceTimeoutMs),
    regencyTimeoutTicks: ticks(config.regencyTimeoutMs),
    retransmitTicks: ticks(config.retransmitMs),
    catchUpIntervalTicks: ticks(config.catchUpIntervalMs),
  };
}

/** The core's configuration for this replica (validated at load by loadReplicaConfig). */
export function coreConfigOf(config: ReplicaConfig): CoreConfig {
  return {
    me: config.replicaId,
    view: viewOf(config),
    batchRequestsMax: config.batch.requestsMax,
    batchBytesMax: config.batch.bytesMax,
    batchFillPercent: config.batch.fillPercent,
    clientInFlightMax: config.clientInFlightMax,
    pendingRequestsMax: config.pendingRequestsMax,
    requireSignedRequests: config.requireSignedRequests,
    decisionsRetainedMax: limits.decisionsRetainedMax,
    checkpointPeriodInstances: config.checkpoint.periodInstances,
    checkpointPeriodBytes: config.checkpoint.periodBytes,
    ...coreTimingTicks(config),
  };
}
