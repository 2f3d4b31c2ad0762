// One pod on this node: its sandbox (loopback IP, resolv.conf, hosts, volumes), its containers as
// local processes in a private mount namespace, their probes and restarts, its termination and the
// status a kubelet would report.
import type { ChildProcess } from 'node:child_process';
import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { RestartBackoffPolicy } from './backoff.ts';
import { restartDelayMs } from './backoff.ts';
import { containerEnvironment, expandReferences } from './downward.ts';
import type { ImageMapping } from './images.ts';
import { containerArgv } from './images.ts';
import type { JsonObject, KubeRest } from './kube-rest.ts';
import { isConflict, isNotFound } from './kube-rest.ts';
import { probeTiming, runProbe } from './probes.ts';
import { prepareVolumes, VolumeNotReadyError } from './volumes.ts';

export interface NodeContext {
  rest: KubeRest;
  images: ImageMapping;
  nodeName: string;
  hostIp: string;
  dnsIp: string;
  clusterDomain: string;
  apiserver: { host: string; port: number };
  podsDir: string;
  logsDir: string;
  backoff: RestartBackoffPolicy;
  allocateIp(owner: string): string;
  releaseIp(owner: string): void;
  onProcessesChanged(): void;
  log(message: string): void;
}

/** Retry a sandbox whose volumes are not ready (unbound claim, missing Secret) this often. */
export const sandboxRetryMs = 1_000;
/** How often Secret, ConfigMap and downward-API volumes are brought up to date (the kubelet: about a minute). */
export const volumeResyncMs = 5_000;
export const statusPatchDebounceMs = 100;
export const statusPatchRetriesMax = 5;
const defaultTerminationGraceSeconds = 30;

type ContainerPhase = 'waiting' | 'running' | 'terminated';

interface Termination { exitCode: number; signal?: string; reason: string; startedAt: string; finishedAt: string; message?: string }

interface ContainerRun {
  spec: JsonObject;
  init: boolean;
  phase: ContainerPhase;
  waitingReason: string;
  waitingMessage?: string;
  restartCount: number;
  consecutiveFailures: number;
  process?: ChildProcess;
  pid?: number;
  executable?: string;
  startedAt?: string;
  startedAtMs?: number;
  ready: boolean;
  /** Startup probe passed (or there is none) since the last start. */
  started: boolean;
  lastTermination?: Termination;
  termination?: Termination;
  timers: Set<NodeJS.Timeout>;
  env: Map<string, string>;
  /** Set when the agent itself killed the process (liveness failure, pod deletion). */
  killReason?: string;
}

function now(): string {
  return new Date().toISOString().replace(/\.\d+Z$/, 'Z');
}

function shellQuote(word: string): string {
  return `'${word.replace(/'/g, `'\\''`)}'`;
}

const signalNumbers: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGABRT: 6, SIGKILL: 9, SIGSEGV: 11, SIGPIPE: 13, SIGTERM: 15 };

export interface ProcessRecord { name: string; pid: number; executable: string }

export class PodWorker {
  private pod: JsonObject;
  private readonly node: NodeContext;
  readonly uid: string;
  private podIp: string | undefined;
  private readonly podDir: string;
  private readonly logDir: string;
  private containers: ContainerRun[] = [];
  private initContainers: ContainerRun[] = [];
  private hostPaths = new Map<string, string>();
  private sandboxReady = false;
  private initialized = false;
  private startTime: string | undefined;
  private terminating = false;
  private finished = false;
  private stopped = false;
  private readonly timers = new Set<NodeJS.Timeout>();
  private statusTimer: NodeJS.Timeout | undefined;
  private statusInFlight: Promise<void> | undefined;
  private statusDirty = false;
  private sandboxMessage: { reason: string; message: string } | undefined;

  constructor(pod: JsonObject, node: NodeContext) {
    this.pod = pod;
    this.node = node;
    this.uid = String(pod.metadata.uid);
    this.podDir = join(node.podsDir, this.uid);
    this.logDir = join(node.logsDir, `${pod.metadata.namespace}_${pod.metadata.name}_${this.uid}`);
    const makeRun = (spec: JsonObject, init: boolean): ContainerRun => ({
      spec, init, phase: 'waiting', waitingReason: 'ContainerCreating', restartCount: 0, consecutiveFailures: 0,
      ready: false, started: false, timers: new Set(), env: new Map(),
    });
    this.initContainers = ((pod.spec.initContainers ?? []) as JsonObject[]).map((spec) => makeRun(spec, true));
    this.containers = ((pod.spec.containers ?? []) as JsonObject[]).map((spec) => makeRun(spec, false));
    if (this.initContainers.length === 0) this.initialized = true;
  }

  get key(): string { return `${this.pod.metadata.namespace}/${this.pod.metadata.name}`; }

  /** Processes this pod runs now, for the crash-safety list cluster:down reads. */
  processes(): ProcessRecord[] {
    return [...this.initContainers, ...this.containers]
      .filter((run) => run.pid !== undefined && run.executable !== undefined)
      .map((run) => ({ name: `${this.key}/${run.spec.name}`, pid: run.pid!, executable: run.executable! }));
  }

  start(): void {
    this.startTime = now();
    this.schedule(0, () => this.setUpSandbox());
  }

  /** A newer version of the pod object arrived from the watch. */
  update(pod: JsonObject): void {
    this.pod = pod;
    if (pod.metadata.deletionTimestamp && !this.terminating) void this.terminate();
  }

  private schedule(delayMs: number, action: () => void | Promise<void>): void {
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      if (this.stopped) return;
      Promise.resolve(action()).catch((error: unknown) => this.node.log(`${this.key}: ${String(error instanceof Error ? error.message : error)}`));
    }, delayMs);
    this.timers.add(timer);
  }

  private async setUpSandbox(): Promise<void> {
    if (this.terminating) return;
    try {
      this.podIp = this.node.allocateIp(this.uid);
      mkdirSync(this.podDir, { recursive: true });
      mkdirSync(this.logDir, { recursive: true });
      this.writeResolverFiles();
      const prepared = await prepareVolumes({ rest: this.node.rest, pod: this.pod, facts: { podIp: this.podIp, hostIp: this.node.hostIp }, podDir: this.podDir });
      this.hostPaths = prepared.hostPaths;
      if (prepared.refreshAtMs !== undefined) this.scheduleVolumeRefresh(prepared.refreshAtMs);
    } catch (error) {
      const reason = error instanceof VolumeNotReadyError ? error.reason : 'SandboxFailed';
      const message = error instanceof Error ? error.message : String(error);
      this.sandboxMessage = { reason, message };
      for (const run of [...this.initContainers, ...this.containers]) {
        run.waitingReason = 'ContainerCreating';
        run.waitingMessage = message;
      }
      this.markStatusDirty();
      this.schedule(sandboxRetryMs, () => this.setUpSandbox());
      return;
    }
    this.sandboxMessage = undefined;
    this.sandboxReady = true;
    this.scheduleVolumeResync();
    this.markStatusDirty();
    if (this.initialized) for (const run of this.containers) await this.startContainer(run);
    else await this.startContainer(this.initContainers[0]!);
  }

  private scheduleVolumeRefresh(atMs: number): void {
    this.schedule(Math.max(1_000, atMs - Date.now()), async () => {
      if (this.terminating || !this.podIp) return;
      const prepared = await prepareVolumes({ rest: this.node.rest, pod: this.pod, facts: { podIp: this.podIp, hostIp: this.node.hostIp }, podDir: this.podDir });
      if (prepared.refreshAtMs !== undefined) this.scheduleVolumeRefresh(prepared.refreshAtMs);
    });
  }

  private scheduleVolumeResync(): void {
    this.schedule(volumeResyncMs, async () => {
      if (this.terminating || !this.podIp) return;
      try {
        await prepareVolumes({ rest: this.node.rest, pod: this.pod, facts: { podIp: this.podIp, hostIp: this.node.hostIp }, podDir: this.podDir, renewTokens: false });
      } catch (error) {
        this.node.log(`${this.key}: volume resync: ${error instanceof Error ? error.message : String(error)}`);
      }
      this.scheduleVolumeResync();
    });
  }

  private writeResolverFiles(): void {
    const namespace = String(this.pod.metadata.namespace);
    const domain = this.node.clusterDomain;
    const hostname = String(this.pod.spec.hostname ?? this.pod.metadata.name);
    const subdomain = this.pod.spec.subdomain ? String(this.pod.spec.subdomain) : undefined;
    const policy = String(this.pod.spec.dnsPolicy ?? 'ClusterFirst');
    const dnsConfig = (this.pod.spec.dnsConfig ?? {}) as JsonObject;
    const nameservers: string[] = [];
    const searches: string[] = [];
    const options: string[] = [];
    if (policy === 'ClusterFirst' || policy === 'ClusterFirstWithHostNet') {
      nameservers.push(this.node.dnsIp);
      searches.push(`${namespace}.svc.${domain}`, `svc.${domain}`, domain);
      options.push('ndots:5');
    } else if (policy === 'Default') {
      const host = existsSync('/etc/resolv.conf') ? readFileSync('/etc/resolv.conf', 'utf8') : '';
      for (const line of host.split('\n')) {
        const [word, ...rest] = line.trim().split(/\s+/);
        if (word === 'nameserver' && rest[0]) nameservers.push(rest[0]);
        if (word === 'search') searches.push(...rest);
        if (word === 'options') options.push(...rest);
      }
    }
    nameservers.push(...((dnsConfig.nameservers ?? []) as string[]));
    searches.push(...((dnsConfig.searches ?? []) as string[]));
    for (const option of (dnsConfig.options ?? []) as JsonObject[]) options.push(option.value !== undefined ? `${option.name}:${option.value}` : String(option.name));
    const resolv = [
      ...(searches.length > 0 ? [`search ${searches.join(' ')}`] : []),
      ...nameservers.map((server) => `nameserver ${server}`),
      ...(options.length > 0 ? [`options ${options.join(' ')}`] : []),
    ].join('\n') + '\n';
    writeFileSync(join(this.podDir, 'resolv.conf'), resolv);
    const fqdn = subdomain ? `${hostname}.${subdomain}.${namespace}.svc.${domain}` : undefined;
    const hosts = [
      '# Kubernetes-managed hosts file (bftkube node agent).',
      '127.0.0.1\tlocalhost',
      '::1\tlocalhost ip6-localhost ip6-loopback',
      `${this.podIp}\t${fqdn ? `${fqdn}\t` : ''}${hostname}`,
      ...((this.pod.spec.hostAliases ?? []) as JsonObject[]).map((alias) => `${alias.ip}\t${(alias.hostnames ?? []).join('\t')}`),
    ].join('\n') + '\n';
    writeFileSync(join(this.podDir, 'hosts'), hosts);
    writeFileSync(join(this.podDir, 'hostname'), hostname + '\n');
  }

  private mountsFor(spec: JsonObject): Array<{ source: string; target: string; readOnly: boolean }> {
    const mounts: Array<{ source: string; target: string; readOnly: boolean }> = [
      { source: join(this.podDir, 'resolv.conf'), target: '/etc/resolv.conf', readOnly: true },
      { source: join(this.podDir, 'hosts'), target: '/etc/hosts', readOnly: true },
    ];
    for (const mount of (spec.volumeMounts ?? []) as JsonObject[]) {
      const base = this.hostPaths.get(String(mount.name));
      if (!base) throw new Error(`BFT_ERR_VOLUME_MOUNT: volume ${mount.name} is not defined by the pod`);
      const source = mount.subPath ? join(base, String(mount.subPath)) : base;
      if (mount.subPath && !existsSync(source)) mkdirSync(source, { recursive: true });
      mounts.push({ source, target: String(mount.mountPath), readOnly: Boolean(mount.readOnly) });
    }
    // A parent must be mounted before anything inside it.
    return mounts.sort((a, b) => a.target.split('/').length - b.target.split('/').length);
  }

  /**
   * The container runs as `unshare --mount --propagation private sh -c <mounts; exec argv>`: its own
   * mount namespace, where this pod's resolv.conf, hosts and volumes are bind-mounted at the paths
   * the spec names, as a kubelet does inside a container. Nothing leaks to the host's mount table.
   */
  private launchArgv(spec: JsonObject, argv: string[], workingDir: string): string[] {
    const lines = ['set -e'];
    for (const mount of this.mountsFor(spec)) {
      const isFile = existsSync(mount.source) && statSync(mount.source).isFile();
      if (isFile) lines.push(`mkdir -p ${shellQuote(dirname(mount.target))}`, `[ -e ${shellQuote(mount.target)} ] || : > ${shellQuote(mount.target)}`);
      else lines.push(`mkdir -p ${shellQuote(mount.target)}`);
      lines.push(`mount --bind ${shellQuote(mount.source)} ${shellQuote(mount.target)}`);
      if (mount.readOnly) lines.push(`mount -o remount,bind,ro ${shellQuote(mount.target)}`);
    }
    lines.push(`cd ${shellQuote(workingDir)}`, 'exec "$@"');
    return ['unshare', '--mount', '--propagation', 'private', '--', '/bin/sh', '-c', lines.join('\n'), 'sh', ...argv];
  }

  private async startContainer(run: ContainerRun): Promise<void> {
    if (this.terminating || this.stopped || !this.podIp) return;
    const spec = run.spec;
    const image = this.node.images.resolve(String(spec.image));
    if (!image) {
      run.phase = 'waiting';
      run.waitingReason = 'ErrImagePull';
      run.waitingMessage = `BFT_ERR_IMAGE_NOT_MAPPED: no entry for image ${spec.image} in the node agent's image mapping`;
      this.markStatusDirty();
      return;
    }
    try {
      run.env = await containerEnvironment(this.node.rest, this.pod, spec, { podIp: this.podIp, hostIp: this.node.hostIp }, this.node.apiserver);
    } catch (error) {
      run.phase = 'waiting';
      run.waitingReason = 'CreateContainerConfigError';
      run.waitingMessage = error instanceof Error ? error.message : String(error);
      this.markStatusDirty();
      this.schedule(sandboxRetryMs, () => this.startContainer(run));
      return;
    }
    const argv = containerArgv(image, spec.command, spec.args).map((word) => expandReferences(word, run.env));
    const workingDir = spec.workingDir ? String(spec.workingDir) : image.workingDir;
    const env: NodeJS.ProcessEnv = { PATH: process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin', HOME: '/root', ...Object.fromEntries(run.env) };
    const logFile = join(this.logDir, `${spec.name}.log`);
    const logFd = openSync(logFile, 'a');
    let child: ChildProcess;
    try {
      writeSync(logFd, `--- ${now()} bftkube node agent: starting ${spec.name} (restart ${run.restartCount}): ${argv.join(' ')}\n`);
      child = spawn(this.launchArgv(spec, argv, workingDir)[0]!, this.launchArgv(spec, argv, workingDir).slice(1), {
        detached: true, stdio: ['ignore', logFd, logFd], env,
      });
    } finally {
      closeSync(logFd);
    }
    run.process = child;
    run.pid = child.pid;
    run.executable = argv[0];
    run.phase = 'running';
    run.waitingMessage = undefined;
    run.startedAt = now();
    run.startedAtMs = Date.now();
    run.killReason = undefined;
    run.ready = false;
    run.started = false;
    run.termination = undefined;
    this.node.onProcessesChanged();
    child.on('error', (error) => this.node.log(`${this.key}/${spec.name}: spawn failed: ${error.message}`));
    child.on('exit', (code, signal) => this.onContainerExit(run, child, code, signal));
    if (!run.init) this.startProbes(run);
    this.markStatusDirty();
  }

  private startProbes(run: ContainerRun): void {
    const spec = run.spec;
    const target = () => ({ podIp: this.podIp!, container: spec, env: run.env, cwd: process.cwd() });
    const loop = (probe: JsonObject, onResult: (success: boolean, counters: { successes: number; failures: number }) => boolean) => {
      const timing = probeTiming(probe);
      const counters = { successes: 0, failures: 0 };
      const tick = async () => {
        if (run.phase !== 'running' || this.terminating) return;
        const success = await runProbe(probe, target());
        if (run.phase !== 'running' || this.terminating) return;
        if (success) { counters.successes += 1; counters.failures = 0; } else { counters.failures += 1; counters.successes = 0; }
        if (onResult(success, counters)) arm(timing.periodMs);
      };
      const arm = (delayMs: number) => {
        const timer = setTimeout(() => { run.timers.delete(timer); void tick(); }, delayMs);
        run.timers.add(timer);
      };
      arm(timing.initialDelayMs);
    };
    const afterStarted = () => {
      run.started = true;
      if (spec.readinessProbe) {
        const timing = probeTiming(spec.readinessProbe);
        loop(spec.readinessProbe, (success, counters) => {
          const ready = success ? counters.successes >= timing.successThreshold ? true : run.ready : counters.failures >= timing.failureThreshold ? false : run.ready;
          if (ready !== run.ready) { run.ready = ready; this.markStatusDirty(); }
          return true;
        });
      } else {
        run.ready = true;
      }
      if (spec.livenessProbe) {
        const timing = probeTiming(spec.livenessProbe);
        loop(spec.livenessProbe, (success, counters) => {
          if (!success && counters.failures >= timing.failureThreshold) {
            this.node.log(`${this.key}/${spec.name}: liveness probe failed ${counters.failures} times; restarting`);
            void this.killContainer(run, 'LivenessProbeFailed');
            return false;
          }
          return true;
        });
      }
      this.markStatusDirty();
    };
    if (spec.startupProbe) {
      const timing = probeTiming(spec.startupProbe);
      loop(spec.startupProbe, (success, counters) => {
        if (success) { afterStarted(); return false; }
        if (counters.failures >= timing.failureThreshold) {
          this.node.log(`${this.key}/${spec.name}: startup probe failed ${counters.failures} times; restarting`);
          void this.killContainer(run, 'StartupProbeFailed');
          return false;
        }
        return true;
      });
    } else {
      afterStarted();
    }
  }

  private gracePeriodMs(): number {
    const seconds = this.pod.metadata.deletionGracePeriodSeconds ?? this.pod.spec.terminationGracePeriodSeconds ?? defaultTerminationGraceSeconds;
    return Number(seconds) * 1000;
  }

  /** SIGTERM to the container's process group, the grace period, then SIGKILL. */
  private async killContainer(run: ContainerRun, reason: string, graceMs = this.gracePeriodMs()): Promise<void> {
    const child = run.process;
    if (!child || run.phase !== 'running' || child.pid === undefined) return;
    run.killReason = reason;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    const signalGroup = (signal: NodeJS.Signals) => { try { process.kill(-child.pid!, signal); } catch { /* gone */ } };
    signalGroup('SIGTERM');
    let graceTimer: NodeJS.Timeout | undefined;
    const killed = new Promise<void>((resolve) => {
      graceTimer = setTimeout(() => { signalGroup('SIGKILL'); resolve(); }, graceMs);
    });
    await Promise.race([exited, killed]);
    clearTimeout(graceTimer);
    await exited;
  }

  private onContainerExit(run: ContainerRun, child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    if (run.process !== child) return;
    for (const timer of run.timers) clearTimeout(timer);
    run.timers.clear();
    // The group may hold children the container started; they die with it, as in a container.
    try { process.kill(-child.pid!, 'SIGKILL'); } catch { /* already gone */ }
    const exitCode = code ?? 128 + (signal ? signalNumbers[signal] ?? 0 : 0);
    const reason = run.killReason === undefined ? (exitCode === 0 ? 'Completed' : 'Error') : (exitCode === 0 ? 'Completed' : 'Error');
    run.termination = {
      exitCode, reason, startedAt: run.startedAt ?? now(), finishedAt: now(),
      ...(signal ? { signal } : {}),
      ...(run.killReason ? { message: run.killReason } : {}),
    };
    run.process = undefined;
    run.pid = undefined;
    run.phase = 'terminated';
    run.ready = false;
    this.node.onProcessesChanged();
    const ranMs = Date.now() - (run.startedAtMs ?? Date.now());
    if (ranMs >= this.node.backoff.resetAfterMs) run.consecutiveFailures = 0;
    if (this.terminating || this.stopped) { this.markStatusDirty(); return; }
    const policy = String(this.pod.spec.restartPolicy ?? 'Always');
    if (run.init) {
      if (exitCode === 0) {
        const next = this.initContainers[this.initContainers.indexOf(run) + 1];
        if (next) void this.startContainer(next);
        else {
          this.initialized = true;
          for (const container of this.containers) void this.startContainer(container);
        }
        this.markStatusDirty();
        return;
      }
      if (policy === 'Never') { this.markStatusDirty(); return; }
    } else {
      const restart = policy === 'Always' || (policy === 'OnFailure' && exitCode !== 0);
      if (!restart) { this.markStatusDirty(); return; }
    }
    run.consecutiveFailures += 1;
    const delayMs = restartDelayMs(this.node.backoff, run.consecutiveFailures - 1);
    run.lastTermination = run.termination;
    if (delayMs > 0) {
      run.phase = 'waiting';
      run.waitingReason = 'CrashLoopBackOff';
      run.waitingMessage = `back-off ${Math.round(delayMs / 1000)}s restarting failed container=${run.spec.name} pod=${this.pod.metadata.name}`;
    }
    this.markStatusDirty();
    this.schedule(delayMs, () => {
      run.restartCount += 1;
      return this.startContainer(run);
    });
  }

  /** Graceful deletion: stop every container, report it, then let the apiserver forget the pod. */
  async terminate(): Promise<void> {
    if (this.terminating) return;
    this.terminating = true;
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
    await Promise.all([...this.initContainers, ...this.containers].map((run) => this.killContainer(run, 'PodDeleted')));
    await this.flushStatus();
    try {
      await this.node.rest.delete(`/api/v1/namespaces/${this.pod.metadata.namespace}/pods/${this.pod.metadata.name}`, {
        apiVersion: 'v1', kind: 'DeleteOptions', gracePeriodSeconds: 0, preconditions: { uid: this.uid },
      });
    } catch (error) {
      if (!isNotFound(error) && !isConflict(error)) this.node.log(`${this.key}: final delete failed: ${String(error)}`);
    }
    this.cleanUp();
  }

  /** The pod object is gone (force-deleted) or the agent is shutting down: stop processes now. */
  async stop(graceMs: number): Promise<void> {
    this.terminating = true;
    await Promise.all([...this.initContainers, ...this.containers].map((run) => this.killContainer(run, 'NodeAgentStopping', Math.min(graceMs, this.gracePeriodMs()))));
    this.cleanUp();
  }

  private cleanUp(): void {
    if (this.finished) return;
    this.finished = true;
    this.stopped = true;
    for (const timer of this.timers) clearTimeout(timer);
    clearTimeout(this.statusTimer);
    this.node.releaseIp(this.uid);
    // Volumes that are folders of this pod go with it; PersistentVolumes live elsewhere.
    rmSync(this.podDir, { recursive: true, force: true });
    this.node.onProcessesChanged();
  }

  get isFinished(): boolean { return this.finished; }

  private markStatusDirty(): void {
    this.statusDirty = true;
    if (this.statusTimer || this.stopped) return;
    this.statusTimer = setTimeout(() => {
      this.statusTimer = undefined;
      void this.flushStatus();
    }, statusPatchDebounceMs);
  }

  private async flushStatus(): Promise<void> {
    while (this.statusInFlight) await this.statusInFlight;
    if (!this.statusDirty) return;
    this.statusDirty = false;
    this.statusInFlight = this.patchStatus().finally(() => { this.statusInFlight = undefined; });
    await this.statusInFlight;
  }

  private async patchStatus(): Promise<void> {
    const path = `/api/v1/namespaces/${this.pod.metadata.namespace}/pods/${this.pod.metadata.name}/status`;
    for (let attempt = 1; attempt <= statusPatchRetriesMax; attempt += 1) {
      try {
        const updated = await this.node.rest.mergePatch(path, { metadata: { uid: this.uid }, status: this.computeStatus() });
        if (updated.metadata?.uid === this.uid) this.pod = { ...this.pod, status: updated.status };
        return;
      } catch (error) {
        if (isNotFound(error)) return;
        if (attempt === statusPatchRetriesMax) this.node.log(`${this.key}: status patch failed: ${String(error)}`);
        else await new Promise((resolve) => setTimeout(resolve, 100 * attempt));
      }
    }
  }

  private containerStatus(run: ContainerRun): JsonObject {
    let state: JsonObject;
    if (run.phase === 'running') state = { running: { startedAt: run.startedAt } };
    else if (run.phase === 'terminated' && run.termination) state = { terminated: run.termination };
    else state = { waiting: { reason: run.waitingReason, ...(run.waitingMessage ? { message: run.waitingMessage } : {}) } };
    return {
      name: run.spec.name,
      image: run.spec.image,
      imageID: `bftkube-local://${run.spec.image}`,
      ...(run.pid !== undefined || run.termination ? { containerID: `bftkube://${this.uid}/${run.spec.name}/${run.restartCount}` } : {}),
      ready: run.ready,
      started: run.phase === 'running' && run.started,
      restartCount: run.restartCount,
      state,
      lastState: run.lastTermination ? { terminated: run.lastTermination } : {},
    };
  }

  private computePhase(): string {
    const policy = String(this.pod.spec.restartPolicy ?? 'Always');
    const initFailed = this.initContainers.some((run) => run.phase === 'terminated' && (run.termination?.exitCode ?? 0) !== 0) && policy === 'Never';
    if (initFailed) return 'Failed';
    if (!this.initialized) return 'Pending';
    const runs = this.containers;
    if (runs.some((run) => run.phase === 'running')) return 'Running';
    const allTerminated = runs.every((run) => run.phase === 'terminated');
    if (allTerminated && policy !== 'Always') {
      const failed = runs.some((run) => (run.termination?.exitCode ?? 0) !== 0);
      if (!failed) return 'Succeeded';
      if (policy === 'Never') return 'Failed';
    }
    // Restarting containers keep a pod Running once it has run.
    if (runs.every((run) => run.restartCount > 0 || run.termination)) return 'Running';
    return 'Pending';
  }

  computeStatus(): JsonObject {
    const at = now();
    const existing = ((this.pod.status?.conditions ?? []) as JsonObject[]);
    const containersReady = this.initialized && this.containers.every((run) => run.ready);
    const gates = ((this.pod.spec.readinessGates ?? []) as JsonObject[]).map((gate) => String(gate.conditionType));
    const gatesPass = gates.every((type) => existing.find((condition) => condition.type === type)?.status === 'True');
    const mine: Record<string, { status: boolean; reason?: string }> = {
      PodReadyToStartContainers: { status: this.sandboxReady },
      Initialized: { status: this.initialized, ...(this.initialized ? {} : { reason: 'ContainersNotInitialized' }) },
      ContainersReady: { status: containersReady, ...(containersReady ? {} : { reason: 'ContainersNotReady' }) },
      Ready: { status: containersReady && gatesPass, ...(containersReady && gatesPass ? {} : { reason: containersReady ? 'ReadinessGatesNotReady' : 'ContainersNotReady' }) },
    };
    const conditions: JsonObject[] = existing.filter((condition) => !(condition.type in mine));
    for (const [type, value] of Object.entries(mine)) {
      const status = value.status ? 'True' : 'False';
      const previous = existing.find((condition) => condition.type === type);
      conditions.push({
        type, status,
        lastProbeTime: null,
        lastTransitionTime: previous?.status === status ? previous.lastTransitionTime : at,
        ...(value.reason ? { reason: value.reason } : {}),
      });
    }
    const phase = this.computePhase();
    return {
      phase,
      conditions,
      hostIP: this.node.hostIp,
      hostIPs: [{ ip: this.node.hostIp }],
      ...(this.podIp && this.sandboxReady ? { podIP: this.podIp, podIPs: [{ ip: this.podIp }] } : {}),
      startTime: this.startTime,
      containerStatuses: this.containers.map((run) => this.containerStatus(run)),
      ...(this.initContainers.length > 0 ? { initContainerStatuses: this.initContainers.map((run) => this.containerStatus(run)) } : {}),
      // Merge patches keep absent keys: clear a sandbox message explicitly once it no longer applies.
      ...(this.sandboxMessage && !this.sandboxReady ? { message: this.sandboxMessage.message, reason: this.sandboxMessage.reason } : { message: null, reason: null }),
    };
  }
}
