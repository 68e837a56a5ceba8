/** POST /v1/run: one-shot create, run, delete. */
import type { FastifyInstance } from 'fastify';
import { KilnError } from '../../core/errors.js';
import { runOnce, type RunOptions } from '../../core/oneshot.js';
import type { KilnService } from '../service.js';
import { ownerFor } from '../edge.js';
import { streamNdjson } from './ndjson.js';
import { execBody as present } from './present.js';
import { errorSchema, EXEC_REQUEST_MAX_BYTES, execResultSchema, runBody } from './schemas.js';

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
    assertFitsOneRequest(opts);
    if (stream || req.headers.accept === 'application/x-ndjson') {
      return streamNdjson(req, reply, (h, signal) => runOnce(svc.manager, svc.packs, opts, h, signal, ownerFor(req.principal)), (r) => ({ sandboxId: r.sandboxId, createMs: r.createMs }));
    }
    const ac = new AbortController();
    reply.raw.on('close', () => { if (!reply.raw.writableFinished) ac.abort(); });
    const r = await runOnce(svc.manager, svc.packs, opts, undefined, ac.signal, ownerFor(req.principal));
    return { ...present(r), sandboxId: r.sandboxId, createMs: r.createMs };
  });
}

/** Refused before a sandbox is made: args and env travel in the one exec request. */
function assertFitsOneRequest(o: RunOptions): void {
  const bytes = Buffer.byteLength(JSON.stringify({ args: o.args ?? [], env: o.env ?? {} }));
  if (bytes > EXEC_REQUEST_MAX_BYTES) {
    throw new KilnError('PAYLOAD_TOO_LARGE', `"args" and "env" together are ${bytes} bytes as JSON; the limit for one exec request is ${EXEC_REQUEST_MAX_BYTES} bytes (256 KiB): pass large data as stdin or in "files"`, { details: { limitBytes: EXEC_REQUEST_MAX_BYTES, requestBytes: bytes } });
  }
}
