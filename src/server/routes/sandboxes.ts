/** Sandbox lifecycle routes. */
import type { FastifyInstance } from 'fastify';
import type { CreateSandboxOptions } from '../../core/sandbox.js';
import type { KilnService } from '../service.js';
import { createSandboxBody, errorSchema, idParams, sandboxSchema } from './schemas.js';

export async function sandboxRoutes(app: FastifyInstance, { svc }: { svc: KilnService }): Promise<void> {
  const errors = { 400: errorSchema, 404: errorSchema, 409: errorSchema, 429: errorSchema, 503: errorSchema };

  app.post<{ Body: CreateSandboxOptions }>('/v1/sandboxes', {
    schema: { summary: 'Create a sandbox; answers once its agent is ready', body: createSandboxBody, response: { 201: sandboxSchema, ...errors } },
  }, async (req, reply) => {
    const ac = new AbortController();
    reply.raw.on('close', () => { if (!reply.raw.writableFinished) ac.abort(); });
    const sb = await svc.manager.create(req.body, ac.signal);
    if (ac.signal.aborted) {
      // The client went away while we were creating: do not leave an orphan behind.
      await svc.manager.delete(sb.id).catch(() => undefined);
      return reply;
    }
    return reply.status(201).send(sb.info());
  });

  app.get('/v1/sandboxes', {
    schema: { summary: 'List live sandboxes', response: { 200: { type: 'object', properties: { sandboxes: { type: 'array', items: sandboxSchema } } } } },
  }, async () => ({ sandboxes: svc.manager.list() }));

  app.get<{ Params: { id: string } }>('/v1/sandboxes/:id', {
    schema: { summary: 'One sandbox, with backend details', params: idParams, response: { 200: sandboxSchema, 404: errorSchema } },
  }, async (req) => svc.manager.get(req.params.id).info());

  app.delete<{ Params: { id: string } }>('/v1/sandboxes/:id', {
    schema: { summary: 'Delete a sandbox and release everything it holds', params: idParams, response: { 404: errorSchema } },
  }, async (req, reply) => {
    await svc.manager.delete(req.params.id);
    return reply.status(204).send();
  });
}
