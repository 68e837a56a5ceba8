/** Exec routes: buffered JSON, streaming NDJSON, and interactive WebSocket. */
import type { FastifyInstance } from 'fastify';
import type { ExecOptions } from '../../core/exec.js';
import type { KilnService } from '../service.js';
import { decodeInput, type OutputEncoding } from './encoding.js';
import { hintFor } from './hints.js';
import { attachInteractive } from './interactive.js';
import { streamNdjson } from './ndjson.js';
import { execBody as present } from './present.js';
import { errorSchema, execBody, execResultSchema, idParams } from './schemas.js';

export async function execRoutes(app: FastifyInstance, { svc }: { svc: KilnService }): Promise<void> {
  app.post<{ Params: { id: string }; Body: ExecOptions & { stdin?: string; stream?: boolean; encoding?: OutputEncoding; stdinEncoding?: OutputEncoding } }>(
    '/v1/sandboxes/:id/exec',
    {
      schema: {
        summary: 'Run a command; with "stream": true (or Accept: application/x-ndjson) output streams as NDJSON events',
        params: idParams,
        body: execBody,
        response: { 200: execResultSchema, 400: errorSchema, 404: errorSchema, 409: errorSchema, 413: errorSchema },
      },
    },
    async (req, reply) => {
      const { stream, encoding = 'utf8', stdinEncoding, ...body } = req.body;
      const opts: ExecOptions = { ...body, stdin: body.stdin === undefined ? undefined : decodeInput('stdin', body.stdin, stdinEncoding) };
      if (stream || req.headers.accept === 'application/x-ndjson') {
        svc.manager.checkOutputCap(opts.maxOutputBytes); // a 400 before the stream's 200 is sent
        return streamNdjson(
          req,
          reply,
          encoding,
          (handlers, signal) => svc.manager.runExec(req.params.id, opts, handlers, signal),
          undefined,
          (r) =>
            hintFor(
              r,
              () => svc.manager.get(req.params.id).info().pack,
              () => svc.packs.list(),
            ),
        );
      }
      const ac = new AbortController();
      reply.raw.on('close', () => {
        if (!reply.raw.writableFinished) ac.abort();
      });
      const r = await svc.manager.runExec(req.params.id, opts, undefined, ac.signal);
      return {
        ...present(r, encoding),
        ...(await hintFor(
          r,
          () => svc.manager.get(req.params.id).info().pack,
          () => svc.packs.list(),
        )),
      };
    },
  );

  app.get<{ Params: { id: string } }>(
    '/v1/sandboxes/:id/exec/ws',
    {
      websocket: true,
      schema: { summary: 'Interactive exec over WebSocket (see docs/api.md for the message format)', params: idParams },
    },
    (socket, req) => attachInteractive(svc, req.params.id, socket, req.log),
  );
}
