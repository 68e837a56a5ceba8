/**
 * Streams an exec as NDJSON: {"type":"started"}, {"type":"stdout"|"stderr","data","encoding"},
 * {"type":"truncated","stream","droppedBytes"} before a truncated stream's tail, then one final
 * {"type":"result",...} or {"type":"error","code","message"}. A client that disconnects cancels it;
 * one that stops reading holds the program (output waits for the response to drain).
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import { toKilnError } from '../../core/errors.js';
import type { ExecOutcome, ExecStreamHandlers } from '../../core/exec.js';
import { writeOrWait } from './backpressure.js';
import { type OutputEncoding, outputEvents } from './encoding.js';
import { execSummary } from './present.js';

export async function streamNdjson<R extends ExecOutcome>(
  req: FastifyRequest,
  reply: FastifyReply,
  encoding: OutputEncoding,
  run: (handlers: ExecStreamHandlers, signal: AbortSignal) => Promise<R>,
  extra: (r: R) => Record<string, unknown> = () => ({}),
): Promise<void> {
  const ac = new AbortController();
  reply.raw.on('close', () => {
    if (!reply.raw.writableFinished) ac.abort();
  });
  reply.hijack();
  reply.raw.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store', 'x-accel-buffering': 'no' });
  const write = (obj: Record<string, unknown>): undefined | Promise<void> => writeOrWait(reply.raw, `${JSON.stringify(obj)}\n`);
  const output = outputEvents(encoding, write);
  try {
    const r = await run(
      {
        onStarted: (pid) => {
          void write({ type: 'started', pid });
        },
        ...output.handlers,
      },
      ac.signal,
    );
    output.flush();
    void write({ type: 'result', ...execSummary(r), encoding, ...extra(r) });
  } catch (e) {
    const ke = toKilnError(e);
    if (ke.status >= 500 && ke.code === 'INTERNAL') req.log.error({ err: e }, 'stream failed');
    void write({ type: 'error', code: ke.code, message: ke.code === 'INTERNAL' ? 'internal error; the server log has the details' : ke.message });
  } finally {
    reply.raw.end();
  }
}
