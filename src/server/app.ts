/**
 * The HTTP application as a Fastify instance that tests drive with inject() or a real listener.
 * It knows the service through KilnService only; no backend internals are reachable from here.
 */
import swagger from '@fastify/swagger';
import websocket from '@fastify/websocket';
import Fastify, { type FastifyInstance } from 'fastify';
import { timingSafeEqual } from 'node:crypto';
import { KilnError } from '../core/errors.js';
import { errorHandler } from './errors.js';
import { execRoutes } from './routes/exec.js';
import { fileRoutes } from './routes/files.js';
import { metaRoutes } from './routes/meta.js';
import { runRoutes } from './routes/run.js';
import { sandboxRoutes } from './routes/sandboxes.js';
import { staticRoutes } from './routes/static.js';
import type { KilnService } from './service.js';

export interface AppOptions {
  logger?: boolean | object;
  /** Requests over this listener skip the token check (the trusted local Unix socket). */
  trustedSocket?: boolean;
}

const OPEN_PATHS = new Set(['/healthz', '/openapi.json']);

export async function buildApp(svc: KilnService, options: AppOptions = {}): Promise<FastifyInstance> {
  const app = Fastify({
    logger: options.logger ?? false,
    bodyLimit: 64 * 1024 * 1024,
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, allErrors: false } },
    genReqId: () => `req-${Math.random().toString(36).slice(2, 10)}`,
  });
  app.setErrorHandler(errorHandler(svc.metrics));
  app.setNotFoundHandler((req, reply) => {
    void reply.status(404).send(new KilnError('NOT_FOUND', `no route ${req.method} ${req.url.split('?')[0]}; see /openapi.json`).toJSON());
  });

  await app.register(swagger, {
    openapi: {
      info: { title: 'kiln', version: '0.1.0', description: 'Run untrusted code in isolated sandboxes' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: svc.config.token ? [{ bearer: [] }] : [],
    },
  });
  await app.register(websocket, { options: { maxPayload: 1024 * 1024 } });

  const token = svc.config.token;
  if (token && !options.trustedSocket) {
    const expected = Buffer.from(`Bearer ${token}`);
    app.addHook('onRequest', async (req) => {
      const path = req.url.split('?')[0]!;
      if (OPEN_PATHS.has(path) || !path.startsWith('/v1/') && path !== '/metrics') return;
      // Browsers cannot set headers on WebSockets: those may pass ?access_token=.
      const q = new URLSearchParams(req.url.split('?')[1] ?? '');
      const got = Buffer.from(req.headers.authorization ?? (q.get('access_token') ? `Bearer ${q.get('access_token')}` : ''));
      if (got.length !== expected.length || !timingSafeEqual(got, expected)) {
        throw new KilnError('UNAUTHORIZED', 'missing or wrong bearer token: send "Authorization: Bearer <KILN_TOKEN>"');
      }
    });
  }

  await app.register(metaRoutes, { svc });
  await app.register(sandboxRoutes, { svc });
  await app.register(execRoutes, { svc });
  await app.register(fileRoutes, { svc });
  await app.register(runRoutes, { svc });
  await app.register(staticRoutes);
  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());
  return app;
}
