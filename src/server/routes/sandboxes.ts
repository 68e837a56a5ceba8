/** Sandbox lifecycle routes. */
import type { FastifyInstance } from 'fastify';
import { KilnError } from '../../core/errors.js';
import { parseLabelFilters } from '../../core/listing.js';
import type { CreateSandboxOptions } from '../../core/sandbox.js';
import { ownerFor, ownerOf } from '../edge.js';
import type { KilnService } from '../service.js';
import { createSandboxBody, errorSchema, idParams, listQuery, sandboxSchema } from './schemas.js';

export async function sandboxRoutes(app: FastifyInstance, { svc }: { svc: KilnService }): Promise<void> {
  const errors = { 400: errorSchema, 404: errorSchema, 409: errorSchema, 429: errorSchema, 503: errorSchema };

  app.post<{ Body: CreateSandboxOptions }>(
    '/v1/sandboxes',
    {
      schema: { summary: 'Create a sandbox; answers once its agent is ready', body: createSandboxBody, response: { 201: sandboxSchema, ...errors } },
    },
    async (req, reply) => {
      const ac = new AbortController();
      reply.raw.on('close', () => {
        if (!reply.raw.writableFinished) ac.abort();
      });
      const sb = await svc.manager.create(req.body, ac.signal, ownerFor(req.principal));
      if (ac.signal.aborted) {
        // The client went away while we were creating: do not leave an orphan behind.
        await svc.manager.delete(sb.id, 'client left during create').catch(() => undefined);
        return reply;
      }
      return reply.status(201).send(sb.info());
    },
  );

  app.get<{ Querystring: { label?: string | string[]; limit?: string; cursor?: string } }>(
    '/v1/sandboxes',
    {
      schema: {
        summary: "List live sandboxes (an API key's own only), oldest first; filter with ?label=k=v (repeat: all must match); page with ?limit= and the answer's nextCursor as ?cursor=",
        querystring: listQuery,
        response: { 200: { type: 'object', properties: { sandboxes: { type: 'array', items: sandboxSchema }, nextCursor: { type: 'string' } } }, 400: errorSchema },
      },
    },
    async (req) => {
      const limit = req.query.limit === undefined ? undefined : Number(req.query.limit);
      const owner = ownerOf(req.principal);
      return svc.manager.list({ ownerKeyId: owner, labels: parseLabelFilters(req.query.label), limit, cursor: req.query.cursor });
    },
  );

  app.get<{ Params: { id: string } }>(
    '/v1/sandboxes/:id',
    {
      schema: { summary: 'One sandbox, with backend details', params: idParams, response: { 200: sandboxSchema, 404: errorSchema } },
    },
    async (req) => svc.manager.get(req.params.id, ownerOf(req.principal)).info(),
  );

  app.get<{ Params: { id: string } }>(
    '/v1/sandboxes/:id/events',
    {
      schema: {
        summary: "A sandbox's event trail from the store (created, exec.started, exec.ended with exit status and duration, file.written, deleted with the reason); also after it is gone",
        params: idParams,
        response: {
          200: {
            type: 'object',
            properties: {
              events: { type: 'array', items: { type: 'object', properties: { at: { type: 'string' }, kind: { type: 'string' }, data: { type: 'object', additionalProperties: true } } } },
            },
          },
          404: errorSchema,
          503: errorSchema,
        },
      },
    },
    async (req) => {
      if (!svc.store) throw new KilnError('STORE_UNAVAILABLE', 'event trails need the store: this service runs with KILN_DATABASE_URL=off');
      await svc.journal?.flush();
      const rec = await svc.store.sandbox(req.params.id);
      const owner = ownerOf(req.principal);
      if (!rec || (owner !== undefined && rec.ownerKeyId !== owner)) throw new KilnError('SANDBOX_NOT_FOUND', `no sandbox with id "${req.params.id}" in the store`);
      const events = await svc.store.events(rec.id);
      return { events: events.map((e) => ({ at: e.at.toISOString(), kind: e.kind, data: e.data })) };
    },
  );

  app.delete<{ Params: { id: string }; Querystring: { discard?: string } }>(
    '/v1/sandboxes/:id',
    {
      schema: {
        summary: 'Delete a sandbox and release everything it holds. A workspace sandbox whose changes nobody approved or rejected answers 409 WORKSPACE_PENDING unless ?discard=true',
        params: idParams,
        querystring: { type: 'object', additionalProperties: false, properties: { discard: { type: 'string', enum: ['0', '1', 'true', 'false'] } } },
        response: { 404: errorSchema, 409: errorSchema },
      },
    },
    async (req, reply) => {
      const discard = req.query.discard === '1' || req.query.discard === 'true';
      await svc.manager.delete(req.params.id, 'deleted by request', ownerOf(req.principal), { discard });
      return reply.status(204).send();
    },
  );
}
