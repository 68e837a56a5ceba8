/**
 * E2B's code interpreter (the server on port 49999 of an E2B sandbox, e2b-dev/code-interpreter
 * template/server) on kiln's code contexts, for the E2B data plane to mount: every route is
 * relative to the sandbox `sandboxOf(req)` names. The wire format is E2B's own: /execute answers
 * lines of Python's json.dumps (", " and ": " separators, non-ASCII escaped) — stdout, stderr,
 * result (text/html/png/… with is_main_result and extra), error (name, value, traceback),
 * number_of_executions, a keepalive every 5 s of silence — and always ends with
 * {"type": "end_of_execution"}; failures are plain-text bodies with E2B's statuses (400, 404, 500).
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { CodeContextInfo, CodeEvent, MimeBundle } from '../../core/code-contexts.js';
import { isKilnError } from '../../core/errors.js';
import type { Sandbox } from '../../core/sandbox.js';
import type { KilnService } from '../service.js';
import { writeOrWait } from './backpressure.js';

const KEEPALIVE_MS = 5_000;

/** JSON exactly as Python's json.dumps writes it (default separators, ensure_ascii). */
export function pyDumps(v: unknown): string {
  if (v === null || v === undefined) return 'null';
  if (typeof v === 'string') return JSON.stringify(v).replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
  if (typeof v === 'number') return Number.isFinite(v) ? JSON.stringify(v) : v > 0 ? 'Infinity' : v < 0 ? '-Infinity' : 'NaN';
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  if (Array.isArray(v)) return `[${v.map(pyDumps).join(', ')}]`;
  if (typeof v === 'object') {
    const entries = Object.entries(v as Record<string, unknown>).filter(([, x]) => x !== undefined);
    return `{${entries.map(([k, x]) => `${pyDumps(k)}: ${pyDumps(x)}`).join(', ')}}`;
  }
  return pyDumps(String(v));
}

/** E2B's Result: the MIME bundle's known types under their short names, the rest under `extra`. */
export function e2bResult(data: MimeBundle, isMainResult: boolean): Record<string, unknown> {
  const d: Record<string, unknown> = { ...data };
  const take = (mime: string): unknown => {
    const x = d[mime];
    delete d[mime];
    return x ?? undefined;
  };
  let text = take('text/plain');
  if (typeof text === 'string' && text.length >= 2 && ((text.startsWith("'") && text.endsWith("'")) || (text.startsWith('"') && text.endsWith('"')))) text = text.slice(1, -1);
  const out: Record<string, unknown> = {
    type: 'result',
    text,
    html: take('text/html'),
    markdown: take('text/markdown'),
    svg: take('image/svg+xml'),
    png: take('image/png'),
    jpeg: take('image/jpeg'),
    pdf: take('application/pdf'),
    latex: take('text/latex'),
    json: take('application/json'),
    javascript: take('application/javascript'),
    data: take('e2b/data'),
    chart: take('e2b/chart'),
  };
  out.extra = d;
  out.is_main_result = isMainResult;
  return out;
}

/** A code event as E2B's server sends it. */
export function e2bEvent(e: CodeEvent): Record<string, unknown> {
  switch (e.type) {
    case 'stdout':
    case 'stderr':
      return { type: e.type, text: e.text, timestamp: e.timestamp };
    case 'result':
      return e2bResult(e.data, e.isMainResult);
    case 'error':
      return { type: 'error', name: e.name, value: e.value, traceback: e.traceback };
    case 'number_of_executions':
      return { type: 'number_of_executions', execution_count: e.executionCount };
  }
}

const e2bContext = (c: CodeContextInfo): { id: string; language: string; cwd: string } => ({ id: c.id, language: c.language, cwd: c.cwd });

function plain(reply: FastifyReply, status: number, text: string): FastifyReply {
  return reply.code(status).type('text/plain; charset=utf-8').send(text);
}

/** A failure as E2B answers it: 404 for what does not exist, else 500 with the message. */
function failed(reply: FastifyReply, e: unknown): FastifyReply {
  if (isKilnError(e) && e.status === 404) return plain(reply, 404, e.message);
  return plain(reply, 500, e instanceof Error ? e.message : String(e));
}

interface ExecuteBody {
  code?: unknown;
  context_id?: unknown;
  language?: unknown;
  env_vars?: unknown;
}

/** FastAPI's answer to a body that does not fit the model. */
function unprocessable(reply: FastifyReply, loc: string, msg: string): FastifyReply {
  return reply.code(422).send({ detail: [{ type: 'value_error', loc: ['body', loc], msg, input: null }] });
}

const optionalString = (v: unknown): v is string | undefined | null => v === undefined || v === null || typeof v === 'string';

/**
 * Register it encapsulated (a plain app.register, not fastify-plugin): it replaces the JSON body
 * parser in its own scope, because E2B's client sends `Content-Type: application/json` with no body
 * (restart, delete), which Fastify's parser refuses.
 */
export async function codeInterpreterRoutes(
  app: FastifyInstance,
  {
    svc,
    sandboxOf,
    constraints,
  }: {
    svc: KilnService;
    sandboxOf: (req: FastifyRequest) => Sandbox;
    /** Fastify route constraints put on every route, e.g. a strategy on the E2b-Sandbox-Port header: { e2bPort: '49999' }. */
    constraints?: Record<string, unknown>;
  },
): Promise<void> {
  // Hidden from /openapi.json: E2B's API authenticates itself (the sandbox's access token), outside kiln's bearer scope.
  const on = { schema: { hide: true }, ...(constraints ? { constraints } : {}) };
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string', bodyLimit: 2 * 1024 * 1024 }, (_req, body, done) => {
    const text = String(body);
    if (text.trim() === '') return done(null, undefined);
    try {
      done(null, JSON.parse(text));
    } catch {
      done(Object.assign(new Error('the body is not valid JSON'), { statusCode: 422 }), undefined);
    }
  });
  // The sandbox and its access token are checked before anything of the request is looked at:
  // a request without the token is a 401, whatever its body (/health stays open, as E2B's is).
  app.addHook('preValidation', async (req) => {
    if (!req.url.endsWith('/health')) sandboxOf(req);
  });
  app.get('/health', on, async (_req, reply) => reply.type('application/json').send('"OK"'));

  app.post<{ Body: ExecuteBody }>('/execute', on, async (req, reply) => {
    const body = (req.body ?? {}) as ExecuteBody;
    if (typeof body.code !== 'string') return unprocessable(reply, 'code', 'Input should be a valid string');
    if (!optionalString(body.context_id)) return unprocessable(reply, 'context_id', 'Input should be a valid string');
    if (!optionalString(body.language)) return unprocessable(reply, 'language', 'Input should be a valid string');
    const env = body.env_vars ?? undefined;
    if (env !== undefined && (typeof env !== 'object' || Array.isArray(env) || Object.values(env as object).some((x) => typeof x !== 'string'))) {
      return unprocessable(reply, 'env_vars', 'Input should be a valid dictionary of strings');
    }
    if (body.context_id && body.language) return plain(reply, 400, 'Only one of context_id or language can be provided');
    const sandboxId = sandboxOf(req).id;
    let contextId: string;
    try {
      if (body.context_id) {
        if (!svc.contexts.list(sandboxId).some((c) => c.id === body.context_id)) return plain(reply, 404, `Context ${body.context_id} not found`);
        contextId = body.context_id;
      } else {
        contextId = (await svc.contexts.defaultContext(sandboxId, body.language ?? undefined)).id;
      }
    } catch (e) {
      return failed(reply, e);
    }

    const ac = new AbortController();
    reply.raw.on('close', () => {
      if (!reply.raw.writableFinished) ac.abort();
    });
    reply.hijack();
    reply.raw.writeHead(200, { 'cache-control': 'no-store', 'x-accel-buffering': 'no' });
    let last = Date.now();
    const write = (obj: Record<string, unknown>): undefined | Promise<void> => {
      last = Date.now();
      return writeOrWait(reply.raw, `${pyDumps(obj)}\n`);
    };
    const keepalive = setInterval(() => {
      if (Date.now() - last >= KEEPALIVE_MS) void write({ type: 'keepalive' });
    }, 1_000);
    try {
      // E2B's server has no limit of its own (its client gives up after timeoutMs and the kernel is
      // interrupted when the connection closes): the host's longest exec is the ceiling here.
      await svc.contexts.run(sandboxId, contextId, body.code, { env: env as Record<string, string> | undefined, timeoutMs: svc.config.limits.maxExecTimeoutMs, signal: ac.signal }, (e) =>
        write(e2bEvent(e)),
      );
    } catch (e) {
      void write({ type: 'error', name: isKilnError(e) ? e.code : 'Error', value: e instanceof Error ? e.message : String(e), traceback: '' });
    } finally {
      clearInterval(keepalive);
      if (!reply.raw.destroyed) reply.raw.write('{"type": "end_of_execution"}\n');
      reply.raw.end();
    }
  });

  app.post<{ Body: { language?: unknown; cwd?: unknown } }>('/contexts', on, async (req, reply) => {
    const body = (req.body ?? {}) as { language?: unknown; cwd?: unknown };
    if (!optionalString(body.language)) return unprocessable(reply, 'language', 'Input should be a valid string');
    if (!optionalString(body.cwd)) return unprocessable(reply, 'cwd', 'Input should be a valid string');
    try {
      const c = await svc.contexts.create(sandboxOf(req).id, { language: body.language ?? undefined, cwd: body.cwd ?? undefined });
      return reply.send(e2bContext(c));
    } catch (e) {
      return failed(reply, e);
    }
  });

  app.get('/contexts', on, async (req, reply) => {
    try {
      return reply.send(svc.contexts.list(sandboxOf(req).id).map(e2bContext));
    } catch (e) {
      return failed(reply, e);
    }
  });

  app.post<{ Params: { id: string } }>('/contexts/:id/restart', on, async (req, reply) => {
    const sandboxId = sandboxOf(req).id;
    if (!svc.contexts.list(sandboxId).some((c) => c.id === req.params.id)) return plain(reply, 404, `Context ${req.params.id} not found`);
    try {
      await svc.contexts.restart(sandboxId, req.params.id);
      return reply.type('application/json').send('null');
    } catch (e) {
      return plain(reply, 500, `Failed to restart context ${req.params.id}: ${e instanceof Error ? e.message : String(e)}`);
    }
  });

  app.delete<{ Params: { id: string } }>('/contexts/:id', on, async (req, reply) => {
    const sandboxId = sandboxOf(req).id;
    if (!svc.contexts.list(sandboxId).some((c) => c.id === req.params.id)) return plain(reply, 404, `Context ${req.params.id} not found`);
    await svc.contexts.delete(sandboxId, req.params.id);
    return reply.type('application/json').send('null');
  });
}
