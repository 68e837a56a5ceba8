/**
 * Streams an exec as NDJSON: {"type":"started"}, {"type":"stdout"|"stderr","data","encoding"},
 * {"type":"truncated","stream","droppedBytes"} before a truncated stream's tail, then one final
 * {"type":"result",...} (with a `hint` when a command was not found: see hints.ts) or
 * {"type":"error","code","message"}. A client that disconnects cancels it;
 * one that stops reading holds the program (output waits for the response to drain).
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import { toKilnError } from '../../core/errors.js';
import type { ExecOutcome, ExecStreamHandlers } from '../../core/exec.js';
import { writeOrWait } from './backpressure.js';
import { type OutputEncoding, outputEvents } from './encoding.js';
import { HINT_STDERR_BYTES } from './hints.js';
import { execBody, execSummary } from './present.js';

export async function streamNdjson<R extends ExecOutcome>(
  req: FastifyRequest,
  reply: FastifyReply,
  encoding: OutputEncoding,
  run: (handlers: ExecStreamHandlers, signal: AbortSignal) => Promise<R>,
  extra: (r: R) => Record<string, unknown> = () => ({}),
  hint?: (r: { exitCode: number | null; stderr: Buffer }) => Promise<{ hint?: string }>,
): Promise<void> {
  const ac = new AbortController();
  reply.raw.on('close', () => {
    if (!reply.raw.writableFinished) ac.abort();
  });
  reply.hijack();
  reply.raw.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store', 'x-accel-buffering': 'no' });
  const write = (obj: Record<string, unknown>): undefined | Promise<void> => writeOrWait(reply.raw, `${JSON.stringify(obj)}\n`);
  const output = outputEvents(encoding, write);
  // The end of stderr, for the hint: a streamed result carries no output of its own.
  let stderrTail = Buffer.alloc(0);
  const onStderr = output.handlers.onStderr;
  try {
    const r = await run(
      {
        onStarted: (pid) => {
          void write({ type: 'started', pid });
        },
        ...output.handlers,
        onStderr: (c) => {
          stderrTail = Buffer.concat([stderrTail, c]).subarray(-HINT_STDERR_BYTES);
          return onStderr(c);
        },
      },
      ac.signal,
    );
    output.flush();
    const hinted = hint ? await hint({ exitCode: r.exitCode, stderr: stderrTail }).catch(() => ({})) : {};
    void write({ type: 'result', ...execSummary(r), encoding, ...extra(r), ...hinted });
  } catch (e) {
    const ke = toKilnError(e);
    if (ke.status >= 500 && ke.code === 'INTERNAL') req.log.error({ err: e }, 'stream failed');
    void write({ type: 'error', code: ke.code, message: ke.code === 'INTERNAL' ? 'internal error; the server log has the details' : ke.message });
  } finally {
    reply.raw.end();
  }
}

export interface ExecAnswer<R extends ExecOutcome> {
  /** NDJSON events (stream: true or Accept: application/x-ndjson) instead of one JSON answer. */
  stream: boolean;
  encoding: OutputEncoding;
  run: (handlers: ExecStreamHandlers | undefined, signal: AbortSignal) => Promise<R>;
  /** Fields of the answer beside the exec's own (a one-shot run's sandboxId, createMs). */
  extra?: (r: R) => Record<string, unknown>;
  /** The missing-tool hint (hints.ts), from the end of stderr. */
  hint: (r: { exitCode: number | null; stderr: Buffer }) => Promise<{ hint?: string }>;
}

/**
 * The answer of an exec or a one-shot run, streamed or buffered: both cancel the program when the
 * client goes away, and both carry the same extra fields and hint.
 */
export async function answerExec<R extends ExecOutcome>(req: FastifyRequest, reply: FastifyReply, a: ExecAnswer<R>): Promise<Record<string, unknown> | undefined> {
  const extra = a.extra ?? (() => ({}));
  if (a.stream) {
    await streamNdjson(req, reply, a.encoding, a.run, extra, a.hint);
    return undefined; // the reply was hijacked and written
  }
  const ac = new AbortController();
  reply.raw.on('close', () => {
    if (!reply.raw.writableFinished) ac.abort();
  });
  const r = await a.run(undefined, ac.signal);
  return { ...execBody(r, a.encoding), ...extra(r), ...(await a.hint(r)) };
}
