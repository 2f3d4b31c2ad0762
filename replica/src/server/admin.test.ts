import { Writable } from 'node:stream';
import { Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { type AdminServerOptions, type Readiness, buildAdminServer } from './admin.ts';
import { createLogger } from './logger.ts';
import { ReplicaMetrics } from './metrics.ts';

const servers: Array<ReturnType<typeof buildAdminServer>> = [];

function server(overrides: Partial<AdminServerOptions> = {}) {
  const app = buildAdminServer({
    status: () => ({ id: 2, view: { number: 0, members: [0, 1, 2, 3] }, regency: 1, leader: 1, lastDecidedCid: 17 }),
    readiness: () => ({ ready: true, reason: 'member of view 0 and caught up' }),
    registry: new Registry(),
    ...overrides,
  });
  servers.push(app);
  return app;
}

afterEach(async () => {
  await Promise.all(servers.splice(0).map((app) => app.close()));
});

describe('admin server', () => {
  it('answers /healthz with 200 while the process runs, even when not ready', async () => {
    const app = server({ readiness: () => ({ ready: false, reason: 'state transfer' }) });
    const response = await app.inject({ method: 'GET', url: '/healthz' });
    expect(response.statusCode).toBe(200);
    expect(response.json()).toEqual({ status: 'ok' });
  });

  it('answers /readyz with 200 when ready and 503 with the reason when not, asking each time', async () => {
    let readiness: Readiness = { ready: false, reason: 'state transfer 40% (cid 1200 of 3000)' };
    const app = server({ readiness: () => readiness });
    const notReady = await app.inject({ method: 'GET', url: '/readyz' });
    expect(notReady.statusCode).toBe(503);
    expect(notReady.json()).toEqual({ ready: false, reason: 'state transfer 40% (cid 1200 of 3000)' });
    readiness = { ready: true, reason: 'caught up' };
    const ready = await app.inject({ method: 'GET', url: '/readyz' });
    expect(ready.statusCode).toBe(200);
    expect(ready.json()).toEqual({ ready: true, reason: 'caught up' });
  });

  it('answers /status with the current status as JSON', async () => {
    let lastDecidedCid = 17;
    const app = server({ status: () => ({ id: 2, lastDecidedCid }) });
    const first = await app.inject({ method: 'GET', url: '/status' });
    expect(first.statusCode).toBe(200);
    expect(first.headers['content-type']).toMatch(/^application\/json/);
    expect(first.json()).toEqual({ id: 2, lastDecidedCid: 17 });
    lastDecidedCid = 18;
    expect((await app.inject({ method: 'GET', url: '/status' })).json()).toEqual({ id: 2, lastDecidedCid: 18 });
  });

  it('answers /metrics with the Prometheus exposition of its registry and its content type', async () => {
    const registry = new Registry();
    const metrics = new ReplicaMetrics(registry);
    metrics.decided(5, 2);
    const app = server({ registry });
    const response = await app.inject({ method: 'GET', url: '/metrics' });
    expect(response.statusCode).toBe(200);
    expect(response.headers['content-type']).toBe(registry.contentType);
    expect(response.body).toContain('# TYPE bftkube_decided_instances_total counter');
    expect(response.body).toContain('bftkube_decided_instances_total 1');
    expect(response.body).toContain('bftkube_last_decided_cid 5');
  });

  it('answers 500 when the status cannot be computed, and logs the error', async () => {
    const lines: string[] = [];
    const destination = new Writable({
      write(chunk: Buffer, _encoding, done) {
        lines.push(chunk.toString());
        done();
      },
    });
    const logger = createLogger({ replicaId: 2, viewNumber: 0, destination });
    const app = server({
      logger,
      status: () => {
        throw new Error('status source failed');
      },
    });
    const response = await app.inject({ method: 'GET', url: '/status' });
    expect(response.statusCode).toBe(500);
    const logged = lines.map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(logged.some((line) => line.level === 'error' && line.replica === 2 && line.component === 'admin')).toBe(true);
    // Request lines are debug, so an info-level replica does not log every probe.
    await app.inject({ method: 'GET', url: '/healthz' });
    expect(lines.map((line) => JSON.parse(line) as Record<string, unknown>).filter((line) => line.level === 'info')).toEqual([]);
  });

  it('answers 404 for other paths and 404 for methods it does not serve', async () => {
    const app = server();
    expect((await app.inject({ method: 'GET', url: '/nope' })).statusCode).toBe(404);
    expect((await app.inject({ method: 'POST', url: '/status', payload: {} })).statusCode).toBe(404);
  });
});
