/**
 * The agent connection of a Firecracker sandbox: hybrid vsock CONNECT/OK, then the protocol v1
 * handshake on the same socket. Used for the first connection and for reconnecting after the
 * connection dropped while the VM kept running.
 */
import type { Socket } from 'node:net';
import { KilnError } from '../../core/errors.js';
import { AgentClient } from '../../protocol/agent-client.js';
import { AGENT_VSOCK_PORT, connectHybridVsock } from './vsock.js';

export interface ConnectAgentOptions {
  udsPath: string;
  port?: number;
  /** Budget for vsock retries plus the handshake. */
  timeoutMs: number;
  /** Restored clones: fresh entropy and the clock ride on the hello (AgentClient.connect). */
  sync?: boolean;
  signal?: AbortSignal;
  isAlive?: () => boolean;
}

export async function connectAgent(o: ConnectAgentOptions): Promise<AgentClient> {
  const t0 = Date.now();
  const { socket } = await connectHybridVsock({
    udsPath: o.udsPath,
    port: o.port ?? AGENT_VSOCK_PORT,
    timeoutMs: o.timeoutMs,
    signal: o.signal,
    isAlive: o.isAlive,
  });
  const left = Math.max(1_000, o.timeoutMs - (Date.now() - t0));
  // The socket comes back paused (bytes after "OK" were pushed back); AgentClient attaches its
  // reader synchronously inside connect(), so resuming right after cannot lose data.
  const client = AgentClient.connect(streamOf(socket), { signal: o.signal, timeoutMs: left, sync: o.sync });
  socket.resume();
  return client;
}

function streamOf(socket: Socket): { readable: Socket; writable: Socket; destroy: () => void } {
  return { readable: socket, writable: socket, destroy: () => socket.destroy() };
}

export interface ReconnectOptions extends ConnectAgentOptions {
  /** How many times to try in total before declaring the sandbox gone. */
  attempts?: number;
}

/** Reconnects after a dropped agent connection; fails fast when the VM itself has exited. */
export async function reconnectAgent(o: ReconnectOptions): Promise<AgentClient> {
  const attempts = o.attempts ?? 3;
  let last: unknown;
  for (let i = 0; i < attempts; i++) {
    if (o.isAlive && !o.isAlive()) break;
    try {
      return await connectAgent(o);
    } catch (e) {
      last = e;
      if (o.signal?.aborted) break;
    }
  }
  throw new KilnError('SANDBOX_GONE', `lost the connection to the sandbox agent and could not reconnect: ${last instanceof Error ? last.message : 'the microVM has exited'}`, { cause: last });
}
