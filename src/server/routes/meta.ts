/** Backends, pools, health and metrics (packs: packs.ts). */
import type { FastifyInstance } from 'fastify';
import type { KilnService } from '../service.js';

/** Open even with a token: liveness. */
export async function healthRoutes(app: FastifyInstance, { svc }: { svc: KilnService }): Promise<void> {
  app.get('/healthz', { schema: { summary: 'Liveness and a short status', security: [] } }, async () => ({
    status: 'ok',
    sandboxes: svc.manager.count,
    capacity: svc.manager.admission.stats,
  }));
}

export async function metaRoutes(app: FastifyInstance, { svc }: { svc: KilnService }): Promise<void> {
  app.get('/v1/backends', { schema: { summary: 'Backends: available or not, why, capabilities' } }, async () => ({
    default: svc.config.defaultBackend,
    backends: await svc.availability(),
  }));

  app.get('/v1/pools', { schema: { summary: 'Warm pools (target, ready, starting, hits and misses) and the runners of fork runs (idle, busy, hits, misses, retired)' } }, async () => ({
    pools: svc.pools?.stats() ?? [],
    runners: svc.runners?.stats() ?? [],
  }));

  app.get('/metrics', { schema: { summary: 'Prometheus metrics', hide: false } }, async (_req, reply) => {
    return reply.type(svc.metrics.registry.contentType).send(await svc.metrics.registry.metrics());
  });
}
