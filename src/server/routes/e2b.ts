/**
 * The E2B-compatible API (docs/e2b.md): the control plane (e2b-api.ts), envd's data plane
 * (e2b-envd.ts) and the seam for the code interpreter, all on kiln's own listener. They sit
 * outside kiln's bearer scope: the control plane authenticates X-API-KEY itself, the data plane
 * the per-sandbox X-Access-Token. Errors leave as E2B's {code: <status>, message}.
 */
import type { FastifyInstance, FastifyPluginAsync, FastifyRequest } from 'fastify';
import type { Sandbox } from '../../core/sandbox.js';
import { translate } from '../errors.js';
import type { KilnService } from '../service.js';
import { e2bApiRoutes } from './e2b-api.js';
import { codeInterpreterRoutes } from './e2b-code-interpreter.js';
import { envdRoutes } from './e2b-envd.js';
import { CODE_INTERPRETER_PREFIX, E2bState, e2bError } from './e2b-state.js';

export { e2bRewriteUrl } from './e2b-state.js';

/** What the code interpreter's plugin is given: the service, and the sandbox a request is for (its E2b-Sandbox-Id, checked against its X-Access-Token). */
export interface CodeInterpreterOptions {
  svc: KilnService;
  sandboxOf: (req: FastifyRequest) => Sandbox;
}

export async function e2bRoutes(app: FastifyInstance, { svc }: { svc: KilnService }): Promise<void> {
  const state = new E2bState(svc);
  app.addHook('onClose', async () => state.close());
  app.setErrorHandler((err, req, reply) => {
    const e = translate(err, req);
    svc.metrics.countError(e);
    if (e.code === 'INTERNAL') req.log.error({ err }, 'internal error (E2B API)');
    void reply.status(e.status).send(e2bError(e));
  });
  await app.register(e2bApiRoutes, { svc, state });
  await app.register(envdRoutes, { svc, sandboxOf: state.sandboxOf });
  // Requests tagged E2b-Sandbox-Port: 49999 arrive under CODE_INTERPRETER_PREFIX; the plugin's
  // routes are written without it (POST /execute, /contexts…).
  await app.register(codeInterpreterRoutes as FastifyPluginAsync<CodeInterpreterOptions>, { svc, sandboxOf: state.sandboxOf, prefix: CODE_INTERPRETER_PREFIX });
}
