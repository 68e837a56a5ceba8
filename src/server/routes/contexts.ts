/**
 * Stateful code contexts (core/code-contexts.ts): create, list, get, delete, restart, and run code
 * with its events streamed as NDJSON:
 *   {"type":"started","executionCount"}, {"type":"stdout"|"stderr","text","timestamp"},
 *   {"type":"result","isMainResult","data":{mime: value}}, {"type":"exception","name","value","traceback"},
 *   then {"type":"end","executionCount","timedOut","durationMs"} or kiln's {"type":"error","code","message"}.
 */
import type { FastifyInstance } from 'fastify';
import type { CodeEvent } from '../../core/code-contexts.js';
import { toKilnError } from '../../core/errors.js';
import type { KilnService } from '../service.js';
import { writeOrWait } from './backpressure.js';
import { codeContextList, codeContextSchema, contextParams, createContextBody, errorSchema, idParams, runCodeBody } from './schemas.js';

interface RunBody {
  code: string;
  env?: Record<string, string>;
  timeoutMs?: number;
}

/** A code event as kiln's API spells it. */
export function kilnCodeEvent(e: CodeEvent): Record<string, unknown> {
  switch (e.type) {
    case 'number_of_executions':
      return { type: 'started', executionCount: e.executionCount };
    case 'error':
      return { type: 'exception', name: e.name, value: e.value, traceback: e.traceback };
    default:
      return e;
  }
}

export async function contextRoutes(app: FastifyInstance, { svc }: { svc: KilnService }): Promise<void> {
  const notFound = { 404: errorSchema };
  app.post<{ Params: { id: string }; Body: { language?: string; cwd?: string } }>(
    '/v1/sandboxes/:id/contexts',
    {
      schema: {
        summary: 'Start a stateful code context (a Python or JavaScript interpreter that keeps its state between runs)',
        params: idParams,
        body: createContextBody,
        response: { 201: codeContextSchema, 400: errorSchema, ...notFound, 409: errorSchema },
      },
    },
    async (req, reply) => {
      const info = await svc.contexts.create(req.params.id, req.body ?? {});
      return reply.code(201).send(info);
    },
  );

  app.get<{ Params: { id: string } }>(
    '/v1/sandboxes/:id/contexts',
    { schema: { summary: "The sandbox's code contexts", params: idParams, response: { 200: codeContextList, ...notFound } } },
    async (req) => ({ contexts: svc.contexts.list(req.params.id) }),
  );

  app.get<{ Params: { id: string; ctx: string } }>(
    '/v1/sandboxes/:id/contexts/:ctx',
    { schema: { summary: 'One code context', params: contextParams, response: { 200: codeContextSchema, ...notFound } } },
    async (req) => svc.contexts.get(req.params.id, req.params.ctx),
  );

  app.delete<{ Params: { id: string; ctx: string } }>(
    '/v1/sandboxes/:id/contexts/:ctx',
    { schema: { summary: 'Stop a code context and forget it', params: contextParams, response: { 204: { type: 'null' }, ...notFound } } },
    async (req, reply) => {
      await svc.contexts.delete(req.params.id, req.params.ctx);
      return reply.code(204).send();
    },
  );

  app.post<{ Params: { id: string; ctx: string } }>(
    '/v1/sandboxes/:id/contexts/:ctx/restart',
    {
      schema: {
        summary: "Restart a code context's interpreter: same id, no variables (waits for a run in progress)",
        params: contextParams,
        response: { 200: codeContextSchema, ...notFound, 409: errorSchema },
      },
    },
    async (req) => svc.contexts.restart(req.params.id, req.params.ctx),
  );

  app.post<{ Params: { id: string; ctx: string }; Body: RunBody }>(
    '/v1/sandboxes/:id/contexts/:ctx/run',
    {
      schema: {
        summary: 'Run code in a context; its events stream as NDJSON (started, stdout, stderr, result, exception, end)',
        params: contextParams,
        body: runCodeBody,
        response: { 400: errorSchema, ...notFound },
      },
    },
    async (req, reply) => {
      const { id, ctx } = req.params;
      svc.contexts.get(id, ctx); // a 404 before the stream's 200
      const timeoutMs = svc.manager.execTimeout(req.body.timeoutMs);
      const ac = new AbortController();
      reply.raw.on('close', () => {
        if (!reply.raw.writableFinished) ac.abort();
      });
      reply.hijack();
      reply.raw.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store', 'x-accel-buffering': 'no' });
      const write = (obj: Record<string, unknown>): undefined | Promise<void> => writeOrWait(reply.raw, `${JSON.stringify(obj)}\n`);
      const t0 = performance.now();
      try {
        const r = await svc.contexts.run(id, ctx, req.body.code, { env: req.body.env, timeoutMs, signal: ac.signal }, (e) => write(kilnCodeEvent(e)));
        void write({ type: 'end', executionCount: r.executionCount ?? null, timedOut: r.timedOut, durationMs: Math.round(performance.now() - t0) });
      } catch (e) {
        const ke = toKilnError(e);
        if (ke.code === 'INTERNAL') req.log.error({ err: e }, 'code run failed');
        void write({ type: 'error', code: ke.code, message: ke.code === 'INTERNAL' ? 'internal error; the server log has the details' : ke.message });
      } finally {
        reply.raw.end();
      }
    },
  );
}
