/** Exec routes: buffered JSON, streaming NDJSON, and interactive WebSocket. */
import type { FastifyInstance } from 'fastify';
import type { ExecOptions } from '../../core/exec.js';
import type { KilnService } from '../service.js';
import { decodeInput, type OutputEncoding } from './encoding.js';
import { hintFor } from './hints.js';
import { attachInteractive } from './interactive.js';
import { answerExec } from './ndjson.js';
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
      const hint = (r: { exitCode: number | null; stderr: Buffer }) =>
        hintFor(
          r,
          () => svc.manager.get(req.params.id).info().pack,
          () => svc.packs.list(),
        );
      const streamed = !!stream || req.headers.accept === 'application/x-ndjson';
      if (streamed) svc.manager.checkOutputCap(opts.maxOutputBytes); // a 400 before the stream's 200 is sent
      return answerExec(req, reply, {
        stream: streamed,
        encoding,
        run: (handlers, signal) => svc.manager.runExec(req.params.id, opts, handlers, signal),
        hint,
      });
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
