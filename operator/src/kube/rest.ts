// Access to the real apiserver: plain JSON REST with the kubeconfig's identity (@kubernetes/client-node's
// KubeConfig: in-cluster service account or a kubeconfig file), server-side apply with a field manager,
// and client-node's Watch (≥ 2.0.1) for list-then-watch loops that restart with backoff. Used by the
// operator and by the local node agent (e2e/), which stands in for the kubelet.
import { KubeConfig, Watch } from '@kubernetes/client-node';
import { request, type RequestOptions } from 'node:https';
import { setTimeout as sleep } from 'node:timers/promises';

export const requestTimeoutMs = 15_000;
export const watchRestartBackoffMaxMs = 10_000;
const watchRestartBackoffBaseMs = 250;

export class KubeApiError extends Error {
  readonly statusCode: number;
  readonly reason: string;
  constructor(message: string, statusCode: number, reason: string) {
    super(message);
    this.statusCode = statusCode;
    this.reason = reason;
  }
}

export type JsonObject = Record<string, any>;

export class KubeRest {
  readonly kubeConfig: KubeConfig;
  private readonly server: URL;

  constructor(kubeConfig: KubeConfig) {
    this.kubeConfig = kubeConfig;
    const cluster = kubeConfig.getCurrentCluster();
    if (!cluster) throw new Error('BFT_ERR_KUBECONFIG: the kubeconfig names no current cluster; set KUBECONFIG or run in a pod');
    this.server = new URL(cluster.server);
  }

  async call(method: string, path: string, body?: unknown, contentType = 'application/json'): Promise<JsonObject> {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const options: RequestOptions = {
      method,
      hostname: this.server.hostname,
      port: this.server.port,
      path,
      headers: {
        Accept: 'application/json',
        // An explicit length: the apiserver ignores a chunked DELETE body (its DeleteOptions).
        ...(payload === undefined ? {} : { 'Content-Type': contentType, 'Content-Length': String(Buffer.byteLength(payload)) }),
      },
      timeout: requestTimeoutMs,
    };
    await this.kubeConfig.applyToHTTPSOptions(options);
    return new Promise((resolve, reject) => {
      const req = request(options, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed: JsonObject = {};
          try { parsed = text ? JSON.parse(text) as JsonObject : {}; } catch { parsed = { message: text }; }
          const status = res.statusCode ?? 0;
          if (status >= 200 && status < 300) resolve(parsed);
          else reject(new KubeApiError(`BFT_ERR_KUBE_API: ${method} ${path} → ${status} ${parsed.message ?? ''}`, status, String(parsed.reason ?? '')));
        });
        res.on('error', reject);
      });
      req.on('timeout', () => req.destroy(new Error(`BFT_ERR_KUBE_API_TIMEOUT: ${method} ${path}`)));
      req.on('error', reject);
      if (payload !== undefined) req.write(payload);
      req.end();
    });
  }

  get(path: string): Promise<JsonObject> { return this.call('GET', path); }
  post(path: string, body: unknown): Promise<JsonObject> { return this.call('POST', path, body); }
  put(path: string, body: unknown): Promise<JsonObject> { return this.call('PUT', path, body); }
  delete(path: string, body?: unknown): Promise<JsonObject> { return this.call('DELETE', path, body); }
  mergePatch(path: string, body: unknown): Promise<JsonObject> {
    return this.call('PATCH', path, body, 'application/merge-patch+json');
  }
  /** Server-side apply: `object` is what this manager wants; fields others own stay theirs (force takes them). */
  apply(path: string, object: unknown, fieldManager: string, force = true): Promise<JsonObject> {
    return this.call('PATCH', `${path}?fieldManager=${encodeURIComponent(fieldManager)}${force ? '&force=true' : ''}`, object, 'application/apply-patch+yaml');
  }
}

/** A client of the apiserver: from a kubeconfig file, or else the pod's service account (in-cluster). */
export function connectToApiServer(kubeconfigPath: string | undefined): KubeRest {
  const kubeConfig = new KubeConfig();
  if (kubeconfigPath !== undefined) kubeConfig.loadFromFile(kubeconfigPath);
  else kubeConfig.loadFromCluster();
  return new KubeRest(kubeConfig);
}

export function isNotFound(error: unknown): boolean {
  return error instanceof KubeApiError && error.statusCode === 404;
}

export function isConflict(error: unknown): boolean {
  return error instanceof KubeApiError && error.statusCode === 409;
}

export interface ListWatchHandlers {
  /** Called with the full list after every (re)list: the consumer reconciles against it. */
  onList(items: JsonObject[]): void;
  onEvent(type: 'ADDED' | 'MODIFIED' | 'DELETED', object: JsonObject): void;
  onError(error: unknown): void;
}

function isWatchInactivityTimeout(error: unknown): boolean {
  return error instanceof Error && error.name === 'TimeoutError';
}

/**
 * List, then watch from the list's resourceVersion. client-node's Watch ends a watch after 30 s
 * without data (bookmarks come about once a minute): that is routine, and the watch resumes from
 * the last resourceVersion seen. A 410 Gone or any other error lists again after a bounded backoff.
 * Stops when the signal aborts.
 */
export async function runListWatch(rest: KubeRest, path: string, query: Record<string, string>, handlers: ListWatchHandlers, signal: AbortSignal): Promise<void> {
  const watch = new Watch(rest.kubeConfig);
  let failures = 0;
  let resourceVersion: string | undefined;
  while (!signal.aborted) {
    try {
      if (resourceVersion === undefined) {
        const search = new URLSearchParams(query).toString();
        const list = await rest.get(`${path}${search ? `?${search}` : ''}`);
        handlers.onList((list.items ?? []) as JsonObject[]);
        resourceVersion = String(list.metadata?.resourceVersion ?? '');
      }
      await new Promise<void>((resolve, reject) => {
        let controller: AbortController | undefined;
        const onAbort = () => { controller?.abort(); resolve(); };
        signal.addEventListener('abort', onAbort, { once: true });
        watch.watch(path, { ...query, resourceVersion, allowWatchBookmarks: true }, (type, object) => {
          failures = 0;
          if (type === 'ERROR') {
            // 410 Gone: our resourceVersion is too old; list again.
            resourceVersion = undefined;
            return;
          }
          const version = (object as JsonObject | undefined)?.metadata?.resourceVersion;
          if (version) resourceVersion = String(version);
          if (type === 'ADDED' || type === 'MODIFIED' || type === 'DELETED') handlers.onEvent(type, object as JsonObject);
        }, (error) => {
          signal.removeEventListener('abort', onAbort);
          if (error && !signal.aborted && !isWatchInactivityTimeout(error)) reject(error as Error); else resolve();
        }).then((started) => { controller = started; if (signal.aborted) started.abort(); }, reject);
      });
    } catch (error) {
      if (signal.aborted) return;
      failures += 1;
      resourceVersion = undefined;
      handlers.onError(error);
    }
    if (signal.aborted) return;
    const backoffMs = failures === 0 ? 0 : Math.min(watchRestartBackoffMaxMs, watchRestartBackoffBaseMs * 2 ** Math.min(failures, 10));
    if (backoffMs > 0) await sleep(backoffMs, undefined, { signal }).catch(() => undefined);
  }
}
