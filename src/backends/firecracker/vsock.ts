/**
 * Host side of Firecracker's hybrid vsock: connect to the device's Unix socket, send
 * `CONNECT <port>\n`, read `OK <host port>\n`; from then on the socket is a byte stream to the guest
 * port. While the guest agent is not listening yet Firecracker closes the connection without an
 * OK, so the handshake is retried until the deadline. Bytes that arrive right after the OK line
 * belong to the agent stream and are pushed back into the socket for the next reader.
 */
import { connect, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { KilnError } from '../../core/errors.js';

export const AGENT_VSOCK_PORT = 1024;
/** An `OK <port>\n` line is short; anything longer without a newline is not Firecracker. */
const MAX_LINE_BYTES = 64;

export interface HybridVsockOptions {
  udsPath: string;
  port?: number;
  /** Overall budget for all attempts. */
  timeoutMs: number;
  /** Budget of one attempt waiting for the OK line. */
  attemptTimeoutMs?: number;
  retryIntervalMs?: number;
  signal?: AbortSignal;
  /** Stop retrying when the VM is known to be gone. */
  isAlive?: () => boolean;
}

export interface HybridVsockResult {
  /** Paused, with any bytes that followed the OK line unshifted: attach a reader, then resume(). */
  socket: Socket;
  /** The host-side port Firecracker reported in `OK <port>`. */
  hostPort: number;
  attempts: number;
}

/** Why one attempt failed; `retry` says whether waiting for the guest may help. */
class AttemptError extends Error {
  constructor(
    message: string,
    readonly retry: boolean,
    readonly timedOut = false,
  ) {
    super(message);
  }
}

export async function connectHybridVsock(options: HybridVsockOptions): Promise<HybridVsockResult> {
  const port = options.port ?? AGENT_VSOCK_PORT;
  const deadline = Date.now() + options.timeoutMs;
  let attempts = 0;
  let last = '';
  for (;;) {
    options.signal?.throwIfAborted();
    if (options.isAlive && !options.isAlive()) {
      throw new KilnError('BOOT_FAILED', `the microVM exited while kiln waited for its agent on vsock port ${port}${last ? ` (last attempt: ${last})` : ''}`);
    }
    attempts++;
    const remaining = Math.max(1, deadline - Date.now());
    const perAttempt = options.attemptTimeoutMs ?? 1_000;
    // An attempt squeezed by the overall deadline says only "too late": keep the earlier, real reason.
    const cutShort = remaining < perAttempt;
    try {
      const { socket, hostPort } = await attempt(options.udsPath, port, Math.min(perAttempt, remaining), options.signal);
      return { socket, hostPort, attempts };
    } catch (e) {
      if (!(e instanceof AttemptError)) throw e;
      if (!e.retry) throw new KilnError('AGENT_PROTOCOL', `vsock handshake with ${options.udsPath} failed: ${e.message}`);
      if (!(cutShort && last && e.timedOut)) last = e.message;
    }
    if (Date.now() >= deadline) {
      throw new KilnError(
        'BOOT_FAILED',
        `the guest agent did not accept a vsock connection on port ${port} within ${options.timeoutMs} ms ` +
          `(${attempts} attempts; last: ${last}). Check the console output: the guest kernel or agent may not have started.`,
      );
    }
    await sleep(Math.min(options.retryIntervalMs ?? 20, Math.max(0, deadline - Date.now())), undefined, { signal: options.signal });
  }
}

function attempt(udsPath: string, port: number, timeoutMs: number, signal?: AbortSignal): Promise<{ socket: Socket; hostPort: number }> {
  return new Promise((resolve, reject) => {
    const socket = connect(udsPath);
    let buf = Buffer.alloc(0);
    let settled = false;
    const timer = setTimeout(() => fail(new AttemptError(`no "OK" line within ${timeoutMs} ms`, true, true)), timeoutMs);
    const onAbort = (): void => fail(signal!.reason as Error);
    signal?.addEventListener('abort', onAbort, { once: true });

    function finish(): void {
      settled = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      socket.removeListener('data', onData);
      socket.removeListener('error', onError);
      socket.removeListener('close', onClose);
    }
    function fail(err: Error): void {
      if (settled) return;
      finish();
      socket.destroy();
      reject(err);
    }
    function onError(e: NodeJS.ErrnoException): void {
      if (e.code === 'ENOENT') fail(new AttemptError(`the vsock socket ${udsPath} does not exist (Firecracker is not running or was not given a vsock device)`, false));
      else if (e.code === 'ECONNREFUSED') fail(new AttemptError(`the vsock socket ${udsPath} refuses connections (Firecracker has exited)`, false));
      else fail(new AttemptError(`socket error: ${e.message}`, true));
    }
    function onClose(): void {
      fail(new AttemptError('Firecracker closed the connection without "OK" (the guest is not listening yet)', true));
    }
    function onData(chunk: Buffer): void {
      buf = Buffer.concat([buf, chunk]);
      const nl = buf.indexOf(0x0a);
      if (nl < 0) {
        if (buf.length > MAX_LINE_BYTES) fail(new AttemptError(`expected "OK <port>", got ${JSON.stringify(buf.subarray(0, MAX_LINE_BYTES).toString('latin1'))}…`, false));
        return;
      }
      const line = buf.subarray(0, nl).toString('latin1');
      const m = /^OK (\d{1,10})$/.exec(line);
      if (!m) {
        fail(new AttemptError(`expected "OK <port>", got ${JSON.stringify(line.slice(0, MAX_LINE_BYTES))}`, false));
        return;
      }
      const rest = buf.subarray(nl + 1);
      finish();
      socket.pause();
      if (rest.length > 0) socket.unshift(rest);
      resolve({ socket, hostPort: Number(m[1]) });
    }
    socket.on('error', onError);
    socket.on('close', onClose);
    socket.on('data', onData);
    socket.once('connect', () => socket.write(`CONNECT ${port}\n`));
  });
}
