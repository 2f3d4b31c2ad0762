// The admin server (DESIGN §7), on its own port apart from the replica protocol: liveness, readiness,
// status and Prometheus metrics for kubelet probes, the operator and scrapers. Each route group is a
// fastify plugin, so a process can mount them on another fastify instance too.
//
//   GET /healthz  200 {"status":"ok"} while the process can answer at all
//   GET /readyz   200 {"ready":true,"reason":…} or 503 {"ready":false,"reason":…}
//   GET /status   200 with the status JSON
//   GET /metrics  200 with the Prometheus text exposition

import { fastify, type FastifyBaseLogger, type FastifyInstance, type FastifyPluginAsync, LogController } from 'fastify';
import type { pino } from 'pino';
import type { Registry } from 'prom-client';

export interface Readiness {
  readonly ready: boolean;
  /** Why the replica is (not) ready, for people: "state transfer 40% (cid 1200 of 3000)". */
  readonly reason: string;
}

export interface AdminServerOptions {
  /** The /status document; called on every request, so it should be cheap. */
  readonly status: () => object;
  /** Ready means: a member of the current view and caught up. */
  readonly readiness: () => Readiness;
  readonly registry: Registry;
  /** Request lines go out at debug level, errors at error level. Default: no logs. */
  readonly logger?: pino.Logger;
}

export const healthPlugin: FastifyPluginAsync<Pick<AdminServerOptions, 'readiness'>> = async (app, options) => {
  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/readyz', async (_request, reply) => {
    const readiness = options.readiness();
    return reply.code(readiness.ready ? 200 : 503).send({ ready: readiness.ready, reason: readiness.reason });
  });
};

export const statusPlugin: FastifyPluginAsync<Pick<AdminServerOptions, 'status'>> = async (app, options) => {
  app.get('/status', async () => options.status());
};

export const metricsPlugin: FastifyPluginAsync<Pick<AdminServerOptions, 'registry'>> = async (app, options) => {
  app.get('/metrics', async (_request, reply) => {
    const body = await options.registry.metrics();
    return reply.type(options.registry.contentType).send(body);
  });
};

/** Probes hit these every few seconds and scrapers every few more: per-request lines at info would drown the log. */
class QuietRequestLog extends LogController {
  override incomingRequest(request: Parameters<LogController['incomingRequest']>[0]): void {
    request.log.debug({ req: request }, 'incoming request');
  }

  override requestCompleted(
    error: Error | null | undefined,
    request: Parameters<LogController['requestCompleted']>[1],
    reply: Parameters<LogController['requestCompleted']>[2],
  ): void {
    if (error) reply.log.error({ res: reply, err: error, responseTime: reply.elapsedTime }, 'request errored');
    else request.log.debug({ res: reply, responseTime: reply.elapsedTime }, 'request completed');
  }
}

/** Builds the server without listening; the caller listens on the admin host and port, or injects in tests. */
export function buildAdminServer(options: AdminServerOptions): FastifyInstance {
  const loggerInstance: FastifyBaseLogger | undefined = options.logger?.child({ component: 'admin' });
  const app = fastify({
    ...(loggerInstance === undefined ? {} : { loggerInstance }),
    logController: new QuietRequestLog(),
    // Nothing here takes a body; probes must not hang on a slow client.
    bodyLimit: 1024,
    requestTimeout: 10_000,
  });
  void app.register(healthPlugin, { readiness: options.readiness });
  void app.register(statusPlugin, { status: options.status });
  void app.register(metricsPlugin, { registry: options.registry });
  return app;
}
