/** Pause, resume and named snapshots (src/core/pause.ts). */
import type { FastifyInstance } from 'fastify';
import { ownerOf } from '../edge.js';
import type { KilnService } from '../service.js';
import { errorSchema, idParams, pauseResultSchema, sandboxSchema, snapshotBody, snapshotNameParams, snapshotSchema } from './schemas.js';

export async function snapshotRoutes(app: FastifyInstance, { svc }: { svc: KilnService }): Promise<void> {
  const errors = { 400: errorSchema, 404: errorSchema, 409: errorSchema, 429: errorSchema, 503: errorSchema };

  app.post<{ Params: { id: string } }>(
    '/v1/sandboxes/:id/pause',
    {
      schema: {
        summary:
          'Pause: save the state on disk and free the compute. On microVMs memory and disk (processes continue after resume); on the namespace backend the files under /workspace and /tmp (processesKept: false). The TTL keeps running',
        params: idParams,
        response: { 200: pauseResultSchema, ...errors },
      },
    },
    async (req) => svc.manager.pauses.pause(req.params.id, ownerOf(req.principal)),
  );

  app.post<{ Params: { id: string } }>(
    '/v1/sandboxes/:id/resume',
    { schema: { summary: 'Resume a paused sandbox under the same id', params: idParams, response: { 200: sandboxSchema, ...errors } } },
    async (req) => {
      const sb = await svc.manager.pauses.resume(req.params.id, ownerOf(req.principal));
      return { ...sb.info(), resumeMs: sb.resumeMs };
    },
  );

  app.post<{ Params: { id: string }; Body: { name: string } }>(
    '/v1/sandboxes/:id/snapshots',
    {
      schema: {
        summary: "Save a running sandbox's state as a named snapshot (counts against the key's maxSnapshotMib; removed after KILN_SNAPSHOT_RETENTION_SEC)",
        params: idParams,
        body: snapshotBody,
        response: { 201: snapshotSchema, ...errors },
      },
    },
    async (req, reply) => reply.status(201).send(await svc.manager.pauses.snapshot(req.params.id, req.body.name, ownerOf(req.principal))),
  );

  app.get(
    '/v1/snapshots',
    { schema: { summary: "Named snapshots (an API key's own only), oldest first", response: { 200: { type: 'object', properties: { snapshots: { type: 'array', items: snapshotSchema } } } } } },
    async (req) => ({ snapshots: await svc.manager.pauses.snapshots(ownerOf(req.principal)) }),
  );

  app.get<{ Params: { name: string } }>(
    '/v1/snapshots/:name',
    { schema: { summary: 'One named snapshot', params: snapshotNameParams, response: { 200: snapshotSchema, 404: errorSchema } } },
    async (req) => svc.manager.pauses.snapshotInfo(req.params.name, ownerOf(req.principal)),
  );

  app.delete<{ Params: { name: string } }>(
    '/v1/snapshots/:name',
    { schema: { summary: 'Delete a named snapshot', params: snapshotNameParams, response: { 404: errorSchema } } },
    async (req, reply) => {
      await svc.manager.pauses.deleteSnapshot(req.params.name, ownerOf(req.principal));
      return reply.status(204).send();
    },
  );
}
