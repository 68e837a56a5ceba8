/**
 * The HTTP application as a Fastify instance that tests drive with inject() or a real listener.
 * It knows the service through KilnService only; no backend internals are reachable from here.
 */
import swagger from '@fastify/swagger';
import websocket from '@fastify/websocket';
import Fastify, { type FastifyInstance } from 'fastify';
import { KilnError } from '../core/errors.js';
import { ADMIN, authenticate, guardHostAndOrigin, requestSerializer, requireAdmin, requirePackAdmin } from './edge.js';
import { errorHandler } from './errors.js';
import { checkPortLink, portLinks } from './port-links.js';
import { contextRoutes } from './routes/contexts.js';
import { e2bRewriteUrl, e2bRoutes } from './routes/e2b.js';
import { execRoutes } from './routes/exec.js';
import { fileRoutes } from './routes/files.js';
import { keyRoutes } from './routes/keys.js';
import { healthRoutes, metaRoutes } from './routes/meta.js';
import { networkRoutes } from './routes/network.js';
import { packAdminRoutes, packRoutes } from './routes/packs.js';
import { portLinkRoutes } from './routes/port-links.js';
import { portRoutes } from './routes/ports.js';
import { runRoutes } from './routes/run.js';
import { sandboxRoutes } from './routes/sandboxes.js';
import { snapshotRoutes } from './routes/snapshots.js';
import { staticRoutes } from './routes/static.js';
import { workspaceRoutes } from './routes/workspaces.js';
import type { KilnService } from './service.js';

export interface AppOptions {
  logger?: boolean | object;
  /** Requests over this listener skip the token, Host and Origin checks (the trusted local Unix socket). */
  trustedSocket?: boolean;
  /**
   * 'apps': the listener of KILN_APPS_PORT, which serves the port proxy (and its browser links)
   * only. 'api' (default): everything; browser links are taken here unless an apps listener is set.
   */
  surface?: 'api' | 'apps';
}

export async function buildApp(svc: KilnService, options: AppOptions = {}): Promise<FastifyInstance> {
  const app = Fastify({
    logger: logger(options.logger ?? false),
    bodyLimit: 64 * 1024 * 1024,
    // Over this a path parameter matches no route ("no route GET /v1/sandboxes/…"): let the
    // schema's own limit (idParams) answer instead, naming the parameter.
    maxParamLength: 1024,
    // verbose: errors carry the value sent and its schema, so messages can name both (validation.ts).
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, allErrors: false, verbose: true } },
    genReqId: () => `req-${Math.random().toString(36).slice(2, 10)}`,
    // E2B's data plane is told apart by its E2b-Sandbox-Id header, not its path (routes/e2b.ts).
    rewriteUrl: e2bRewriteUrl,
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
  // @fastify/websocket upgrades a request to any GET route (then closes it where no WebSocket
  // handler is): only the routes that declare one may upgrade.
  const wsRoutes = new Set<string>();
  app.addHook('onRoute', (r) => {
    if (r.websocket) wsRoutes.add(r.url);
  });
  // The port proxy (routes/ports.ts) passes any upgrade through to the sandbox's server instead.
  app.addHook('onRequest', async (req) => {
    if (req.ws && !req.routeOptions.config?.rawUpgrade && !wsRoutes.has(req.routeOptions.url ?? '')) throw new KilnError('NOT_FOUND', `no WebSocket at ${req.url.split('?')[0]}; see docs/api.md`);
  });
  if (!options.trustedSocket) app.addHook('onRequest', guardHostAndOrigin(svc.config));

  const appsOnly = options.surface === 'apps';
  if (!appsOnly) {
    // Open: liveness, the API description and the dashboard's files (it asks for the token itself).
    await app.register(healthRoutes, { svc });
    await app.register(staticRoutes);
    app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());
  }

  // Everything else is registered in this scope, whose hooks see every request its routes match,
  // however the path was spelled: authentication by route, not by comparing URL strings. The
  // same holds for ownership: a key reaches a sandbox route (/v1/sandboxes/:id…, the WebSocket
  // included) only for its own sandboxes; another's answers as if it did not exist.
  app.decorateRequest('principal', null);
  await app.register(async (api) => {
    // A port proxy route may instead be opened by a browser link (port-links.ts): that one port of
    // that one sandbox, as the admin there; the bearer check decides everywhere else.
    const bearer = authenticate({ token: svc.config.token, adminToken: svc.config.adminToken, keys: svc.keys, trusted: options.trustedSocket });
    // Links open apps on the apps listener only: never on the dashboard's origin.
    const links = appsOnly ? portLinks(svc) : undefined;
    api.addHook('onRequest', async function (req, reply) {
      const link = links ? await checkPortLink(links, req, reply) : {};
      if (link.result === 'answered') return reply;
      if (link.result === 'granted') {
        req.principal = ADMIN;
        return;
      }
      try {
        await bearer.call(this, req, reply);
      } catch (e) {
        throw link.cookieFailure && !req.headers.authorization ? link.cookieFailure : e;
      }
    });
    api.addHook('onRequest', async (req) => {
      const id = (req.params as { id?: unknown } | undefined)?.id;
      if (req.principal.kind === 'key' && typeof id === 'string' && req.routeOptions.url?.startsWith('/v1/sandboxes/:id')) {
        const sb = svc.manager.peek(id);
        if (sb) svc.manager.get(id, req.principal.key.id); // throws SANDBOX_NOT_FOUND for another key's
      }
    });
    if (appsOnly) {
      await api.register(portRoutes, { svc });
      return;
    }
    await api.register(async (admin) => {
      admin.addHook('onRequest', requireAdmin);
      await admin.register(keyRoutes, { svc });
    });
    await api.register(metaRoutes, { svc });
    await api.register(packRoutes, { svc });
    await api.register(sandboxRoutes, { svc });
    await api.register(snapshotRoutes, { svc });
    await api.register(execRoutes, { svc });
    await api.register(contextRoutes, { svc });
    await api.register(fileRoutes, { svc });
    await api.register(runRoutes, { svc });
    await api.register(workspaceRoutes, { svc });
    await api.register(networkRoutes, { svc });
    await api.register(portLinkRoutes, { svc });
    await api.register(portRoutes, { svc });
  });
  if (appsOnly) return app;
  // The E2B-compatible API: its own authentication (X-API-KEY, per-sandbox access tokens).
  await app.register(e2bRoutes, { svc });
  // Pack management: admins only (KILN_ADMIN_TOKEN over TCP; anyone on the trusted socket).
  await app.register(async (admin) => {
    if (!options.trustedSocket) admin.addHook('onRequest', requirePackAdmin(svc.config.adminToken, svc.config.token, svc.keys));
    await admin.register(packAdminRoutes, { svc });
  });
  return app;
}

/** Request logs never carry ?access_token= (see redactUrl). */
function logger(option: boolean | object): boolean | object {
  if (!option) return false;
  const base = option === true ? {} : (option as { serializers?: Record<string, unknown> });
  return { ...base, serializers: { ...base.serializers, req: requestSerializer } };
}
