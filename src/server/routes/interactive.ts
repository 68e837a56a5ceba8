/**
 * WebSocket interactive exec. Client → server JSON text messages:
 *   {"type":"start","cmd":"bash","tty":{"cols":80,"rows":24},"env":{},"cwd":"/workspace","encoding":"utf8"}  (first)
 *   {"type":"stdin","data":"ls\n"} | {"type":"eof"} | {"type":"resize","cols":100,"rows":30} | {"type":"signal","signal":"SIGINT"}
 * Server → client: {"type":"started","pid"}, {"type":"stdout"|"stderr","data","encoding"},
 * {"type":"truncated","stream","droppedBytes"}, {"type":"result",...} or {"type":"error","code","message"};
 * the server closes the socket after the last one. Output is UTF-8 decoded across messages (a
 * character is never split) or base64 with "encoding":"base64".
 *
 * Backpressure both ways: output waits (and so does the program) while the socket's send buffer is
 * over WS_HIGH_WATER_BYTES; the socket is not read while more than STDIN_HIGH_WATER_BYTES of stdin
 * wait for the agent's window. Output is capped at INTERACTIVE_MAX_OUTPUT_BYTES per session.
 */
import AjvModule from 'ajv';
import type { FastifyBaseLogger } from 'fastify';
import type { WebSocket } from 'ws';
import { KilnError, toKilnError } from '../../core/errors.js';
import type { ExecHandle } from '../../protocol/agent-client.js';
import type { KilnService } from '../service.js';
import { schemaError } from '../validation.js';
import { type OutputEncoding, outputEvents } from './encoding.js';
import { execSummary } from './present.js';
import { cmd, cwd, envMap } from './schemas.js';

const MAX_MESSAGE_BYTES = 1024 * 1024;
const WS_HIGH_WATER_BYTES = 256 * 1024;
const STDIN_HIGH_WATER_BYTES = 1024 * 1024;
const Ajv = AjvModule.default ?? AjvModule;
/** The same bounds as POST /exec: the start message is a request body too. */
const validateStart = new Ajv({ allErrors: false, verbose: true }).compile<StartMessage>({
  type: 'object',
  required: ['type', 'cmd'],
  properties: {
    type: { const: 'start' },
    cmd,
    env: envMap,
    cwd,
    encoding: { enum: ['utf8', 'base64'] },
    tty: { type: 'object', properties: { cols: { type: 'integer' }, rows: { type: 'integer' } } },
  },
});

interface StartMessage {
  type: 'start';
  cmd: string | string[];
  env?: Record<string, string>;
  cwd?: string;
  tty?: { cols?: unknown; rows?: unknown };
  encoding?: OutputEncoding;
}

export function attachInteractive(svc: KilnService, id: string, socket: WebSocket, log: FastifyBaseLogger): void {
  let handle: ExecHandle | undefined;
  let started = false;
  const send = (obj: Record<string, unknown>): void => {
    if (socket.readyState === socket.OPEN) socket.send(JSON.stringify(obj));
  };
  const gone = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  /** Output: resolves at once while the socket keeps up, else once this message is flushed. */
  const output = (obj: Record<string, unknown>): undefined | Promise<void> => {
    if (socket.readyState !== socket.OPEN) return undefined;
    const text = JSON.stringify(obj);
    if (socket.bufferedAmount < WS_HIGH_WATER_BYTES) {
      socket.send(text);
      return undefined;
    }
    return Promise.race([new Promise<void>((resolve) => socket.send(text, () => resolve())), gone]);
  };
  let stdinWaiting = 0;
  const feed = (h: ExecHandle, chunk: Buffer): void => {
    stdinWaiting += chunk.length;
    if (stdinWaiting > STDIN_HIGH_WATER_BYTES) socket.pause();
    void h
      .writeStdin(chunk)
      .catch(() => undefined)
      .finally(() => {
        stdinWaiting -= chunk.length;
        if (stdinWaiting <= STDIN_HIGH_WATER_BYTES && socket.isPaused) socket.resume();
      });
  };
  const fail = (e: unknown): void => {
    const ke = toKilnError(e);
    if (ke.code === 'INTERNAL') log.error({ err: e }, 'interactive exec failed');
    send({ type: 'error', code: ke.code, message: ke.code === 'INTERNAL' ? 'internal error' : ke.message });
    socket.close(1000);
  };

  socket.on('message', (raw: Buffer, isBinary: boolean) => {
    try {
      if (raw.length > MAX_MESSAGE_BYTES) throw new KilnError('PAYLOAD_TOO_LARGE', 'WebSocket message over 1 MiB');
      if (isBinary) {
        if (!handle) throw new KilnError('INVALID_REQUEST', 'send {"type":"start"} before stdin');
        feed(handle, raw);
        return;
      }
      const msg = parse(raw);
      if (msg.type === 'start') {
        if (started) throw new KilnError('INVALID_REQUEST', 'this socket already started a command');
        started = true;
        void start(msg);
        return;
      }
      if (!handle) throw new KilnError('INVALID_REQUEST', 'send {"type":"start"} first');
      if (msg.type === 'stdin' && typeof msg.data === 'string') feed(handle, Buffer.from(msg.data));
      else if (msg.type === 'eof') handle.closeStdin();
      else if (msg.type === 'resize' && isDim(msg.cols) && isDim(msg.rows)) handle.resize(msg.cols, msg.rows);
      else if (msg.type === 'signal' && typeof msg.signal === 'string' && /^SIG[A-Z0-9]{2,8}$/.test(msg.signal)) handle.signal(msg.signal);
      else throw new KilnError('INVALID_REQUEST', `unknown or malformed message type "${String(msg.type)}"`);
    } catch (e) {
      fail(e);
    }
  });
  let closed = false;
  socket.on('close', () => {
    closed = true;
    handle?.cancel();
  });

  async function start(msg: Record<string, unknown>): Promise<void> {
    try {
      if (!validateStart(msg)) throw schemaError(validateStart.errors ?? [], 'start message');
      const tty = msg.tty;
      const out = outputEvents(msg.encoding ?? 'utf8', output);
      const ex = await svc.manager.interactive(
        id,
        {
          cmd: msg.cmd,
          env: msg.env,
          cwd: msg.cwd,
          tty: tty && isDim(tty.cols) && isDim(tty.rows) ? { cols: tty.cols, rows: tty.rows } : undefined,
        },
        {
          onStarted: (pid) => send({ type: 'started', pid }),
          ...out.handlers,
        },
      );
      handle = ex.handle;
      if (closed) handle.cancel(); // the client left while the command was starting
      const r = await ex.done;
      out.flush();
      send({ type: 'result', ...execSummary(r), encoding: msg.encoding ?? 'utf8' });
      socket.close(1000);
    } catch (e) {
      fail(e);
    }
  }
}

function parse(raw: Buffer): Record<string, unknown> {
  try {
    const v: unknown = JSON.parse(raw.toString('utf8'));
    if (v && typeof v === 'object' && !Array.isArray(v)) return v as Record<string, unknown>;
  } catch {
    /* fall through */
  }
  throw new KilnError('INVALID_REQUEST', 'messages must be JSON objects with a "type"');
}

function isDim(v: unknown): v is number {
  return Number.isInteger(v) && (v as number) > 0 && (v as number) <= 1000;
}
