/** POST /v1/run: one-shot create, run, delete. */
import type { FastifyInstance } from 'fastify';
import { KilnError } from '../../core/errors.js';
import { type RunOptions, runOnce } from '../../core/oneshot.js';
import { ownerFor } from '../edge.js';
import type { KilnService } from '../service.js';
import { decodeInput, type OutputEncoding } from './encoding.js';
import { hintFor } from './hints.js';
import { answerExec } from './ndjson.js';
import { EXEC_REQUEST_MAX_BYTES, errorSchema, runBody, runResultSchema } from './schemas.js';

export async function runRoutes(app: FastifyInstance, { svc }: { svc: KilnService }): Promise<void> {
  app.post<{ Body: RunOptions & { stdin?: string; stream?: boolean; encoding?: OutputEncoding; stdinEncoding?: OutputEncoding } }>(
    '/v1/run',
    {
      schema: {
        summary: 'Run a snippet ("code"), a project ("files" + "entrypoint") or a command ("cmd", after placing "files") in a fresh sandbox that is deleted afterwards',
        body: runBody,
        response: {
          200: runResultSchema,
          400: errorSchema,
          413: errorSchema,
          429: errorSchema,
          503: errorSchema,
        },
      },
    },
    async (req, reply) => {
      const { stream, encoding = 'utf8', stdinEncoding, ...body } = req.body;
      const opts: RunOptions = { ...body, stdin: body.stdin === undefined ? undefined : decodeInput('stdin', body.stdin, stdinEncoding) };
      assertFitsOneRequest(opts);
      const streamed = !!stream || req.headers.accept === 'application/x-ndjson';
      if (streamed) svc.manager.checkOutputCap(opts.maxOutputBytes); // a 400 before the stream's 200 is sent
      return answerExec(req, reply, {
        stream: streamed,
        encoding,
        run: (handlers, signal) => runOnce(svc.manager, svc.packs, opts, handlers, signal, ownerFor(req.principal)),
        extra: (r) => ({ sandboxId: r.sandboxId, createMs: r.createMs, forked: r.forked === true }),
        hint: (r) =>
          hintFor(
            r,
            () => opts.pack,
            () => svc.packs.list(),
          ),
      });
    },
  );
}

/** Refused before a sandbox is made: cmd, args and env travel in the one exec request. */
function assertFitsOneRequest(o: RunOptions): void {
  const bytes = Buffer.byteLength(JSON.stringify({ cmd: o.cmd ?? [], args: o.args ?? [], env: o.env ?? {} }));
  if (bytes > EXEC_REQUEST_MAX_BYTES) {
    throw new KilnError(
      'PAYLOAD_TOO_LARGE',
      `"cmd", "args" and "env" together are ${bytes} bytes as JSON; the limit for one exec request is ${EXEC_REQUEST_MAX_BYTES} bytes (256 KiB): pass large data as stdin or in "files"`,
      { details: { limitBytes: EXEC_REQUEST_MAX_BYTES, requestBytes: bytes } },
    );
  }
}
