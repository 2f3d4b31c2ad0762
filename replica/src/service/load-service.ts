// The service named by a replica's configuration, shared by the replica process and the service worker
// (service-worker.ts), which loads the service itself so that it never crosses a thread boundary.

import { pathToFileURL } from 'node:url';
import { BftError } from '../errors.ts';
import type { ReplicaConfig } from '../server/config.ts';
import { KvService } from './kv.ts';
import type { Service } from './service.ts';
import { ThroughputService } from './throughput.ts';

export type ServiceSpec = Pick<ReplicaConfig['service'], 'module' | 'config'>;

/**
 * `builtin:kv` (the default), `builtin:throughput` (the benchmark's, config `{ replyBytes, stateBytes }`), or a path
 * to a module whose default export is `(config: unknown) => Service | Promise<Service>`.
 */
export async function loadService(service: ServiceSpec): Promise<Service> {
  const module = service.module ?? 'builtin:kv';
  if (module === 'builtin:kv') return new KvService();
  if (module === 'builtin:throughput') {
    const config = service.config as { replyBytes?: unknown; stateBytes?: unknown } | undefined;
    return new ThroughputService(Number(config?.replyBytes ?? 0), Number(config?.stateBytes ?? 0));
  }
  let factory: unknown;
  try {
    factory = (await import(pathToFileURL(module).href)).default;
  } catch (cause) {
    throw new BftError('BFT_ERR_CONFIG_INVALID', `service.module ${module} cannot be loaded; check the path in the configuration`, { cause });
  }
  if (typeof factory !== 'function') {
    throw new BftError('BFT_ERR_CONFIG_INVALID', `service.module ${module} must export a default function (config) => Service`);
  }
  return (await factory(service.config)) as Service;
}
