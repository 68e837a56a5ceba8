/** The public shapes of AgentClient's API (the client itself is agent-client.ts). */
import type { Readable, Writable } from 'node:stream';
import type { ExecResult } from './messages.js';

export interface AgentIo {
  readable: Readable;
  writable: Writable;
  /** Called by close(); tears the transport down (socket.destroy(), pipe end, …). */
  destroy?: () => void;
}

/**
 * A chunk handler may return a promise: the chunk's credit goes back to the agent only once it
 * settles, so a consumer that cannot keep up (a client that does not read) stops the program.
 */
export type ChunkSink = (chunk: Buffer) => unknown;

export type OutputStream = 'stdout' | 'stderr';

export interface ExecHandlers {
  onStdout?: ChunkSink;
  onStderr?: ChunkSink;
  onStarted?: (pid: number) => void;
  /** Bytes were dropped from the middle of a stream: what follows on it is its tail. */
  onTruncated?: (stream: OutputStream, droppedBytes: number) => void;
}

export interface ExecHandle {
  readonly result: Promise<ExecResult>;
  /** Resolves once the agent has room for the chunk (not once the program read it). */
  writeStdin(chunk: Buffer): Promise<void>;
  closeStdin(): void;
  signal(name: string): void;
  resize(cols: number, rows: number): void;
  cancel(): void;
}

export interface ConnectOptions {
  signal?: AbortSignal;
  timeoutMs?: number;
  /**
   * After a snapshot restore: the hello carries 64 fresh random bytes and the host's clock, which
   * the agent applies before it answers. An agent that predates this gets the `sync` op right
   * after, so `hello.sync` is always set when connect() returns.
   */
  sync?: boolean;
}

/** `net.config` (docs/protocol.md): the guest's eth0 MAC, IPv4 address/prefix, default route and resolvers. */
export interface NetConfigRequest {
  mac: string;
  address: string;
  prefix: number;
  gateway: string;
  dns: string[];
}
