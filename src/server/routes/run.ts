/** POST /v1/run: one-shot create, run, delete. */
import type { FastifyInstance } from 'fastify';
import { runOnce, type RunOptions } from '../../core/oneshot.js';
import type { KilnService } from '../service.js';
import { streamNdjson } from './ndjson.js';
import { execBody as present } from './present.js';
import { errorSchema, execResultSchema, runBody } from './schemas.js';

export async function runRoutes(app: FastifyInstance, { svc }: { svc: KilnService }): Promise<void> {
  app.post<{ Body: RunOptions & { stream?: boolean } }>('/v1/run', {
    schema: {
      summary: 'Run a snippet ("code") or a project ("files" + "entrypoint") in a fresh sandbox that is deleted afterwards',
      body: runBody,
      response: {
        200: { ...execResultSchema, properties: { ...execResultSchema.properties, sandboxId: { type: 'string' }, createMs: { type: 'number' } } },
        400: errorSchema, 413: errorSchema, 429: errorSchema, 503: errorSchema,
      },
    },
  }, async (req, reply) => {
    const { stream, ...opts } = req.body;
    if (stream || req.headers.accept === 'application/x-ndjson') {
      return streamNdjson(req, reply, (h, signal) => runOnce(svc.manager, svc.packs, opts, h, signal), (r) => ({ sandboxId: r.sandboxId, createMs: r.createMs }));
    }
    const ac = new AbortController();
    reply.raw.on('close', () => { if (!reply.raw.writableFinished) ac.abort(); });
    const r = await runOnce(svc.manager, svc.packs, opts, undefined, ac.signal);
    return { ...present(r), sandboxId: r.sandboxId, createMs: r.createMs };
  });
}
