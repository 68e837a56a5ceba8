/**
 * What lets a namespace sandbox outlive the service: a folder per sandbox in the run directory
 * with the agent's Unix socket (bound into the sandbox at /.kiln/sock, unreachable after the
 * agent's pivot_root) and a state file the next start reads to reattach (namespace-backend.ts).
 */

import { chownSync, existsSync, mkdirSync, renameSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { PackImage } from '../../core/backend.js';
import { killLeftovers } from '../../core/kill-ladder.js';
import { processStart } from '../../core/proc-stat.js';
import { AgentClient } from '../../protocol/agent-client.js';

/** Where the sandbox finds its socket's folder. */
export const SANDBOX_SOCKET = '/.kiln/sock/agent.sock';

/** sun_path is 108 bytes with its terminating NUL. */
const MAX_SOCKET_PATH = 107;

/** What a later start of the service needs to take a running sandbox over. */
export interface KeptState {
  id: string;
  bwrapPid: number;
  sandboxPid: number;
  /** The agent's start time (/proc/<pid>/stat field 22): a reused pid is not our sandbox. */
  sandboxStart: string;
  hostUid: number;
  /** A workspace's uid (claimed, not allocated). */
  claimedUid: boolean;
  cpus: number[];
  pack: PackImage;
}

export class KeptSandboxes {
  constructor(readonly dir: string) {}

  socketDir(id: string): string {
    return join(this.dir, id);
  }

  socketPath(id: string): string {
    return join(this.dir, id, 'agent.sock');
  }

  /** The socket's folder, owned by the sandbox's uid (its agent binds the socket as that uid). */
  async prepare(id: string, hostUid: number): Promise<string> {
    const d = this.socketDir(id);
    const bytes = Buffer.byteLength(this.socketPath(id));
    if (bytes > MAX_SOCKET_PATH) throw new Error(`the agent's socket path ${this.socketPath(id)} is ${bytes} bytes, over the ${MAX_SOCKET_PATH} a Unix socket takes: use a shorter KILN_RUN_DIR`);
    // Synchronous, here and in save() and remove(): a few small operations in the run directory
    // (a tmpfs by default) per sandbox cost less at once than as trips through the thread pool.
    mkdirSync(d, { recursive: true, mode: 0o700 });
    chownSync(d, hostUid, hostUid);
    return d;
  }

  async save(s: KeptState): Promise<void> {
    const file = join(this.dir, `${s.id}.json`);
    writeFileSync(`${file}.tmp`, JSON.stringify(s), { mode: 0o600 });
    renameSync(`${file}.tmp`, file);
  }

  async remove(id: string): Promise<void> {
    rmSync(join(this.dir, `${id}.json`), { force: true });
    // The folder holds the socket only: two calls, not a recursive removal's walk (which is the fallback).
    try {
      rmSync(this.socketPath(id), { force: true });
      rmdirSync(this.socketDir(id));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') rmSync(this.socketDir(id), { recursive: true, force: true });
    }
  }

  /** Every state file (an unreadable one comes back as `{id, error}`) and folders without one. */
  async list(): Promise<{ states: KeptState[]; unreadable: { id: string; error: string }[]; strays: string[] }> {
    const names = await readdir(this.dir).catch(() => [] as string[]);
    const states: KeptState[] = [];
    const unreadable: { id: string; error: string }[] = [];
    for (const n of names.filter((n) => n.endsWith('.json'))) {
      const id = n.slice(0, -5);
      try {
        states.push(JSON.parse(await readFile(join(this.dir, n), 'utf8')) as KeptState);
      } catch (e) {
        unreadable.push({ id, error: (e as Error).message });
      }
    }
    const strays = names.filter((n) => !n.includes('.') && !names.includes(`${n}.json`));
    return { states, unreadable, strays };
  }
}

/** Connects to the agent's socket, retrying while it is not there yet (the agent is starting). */
export async function connectAgent(path: string, signal: AbortSignal, timeoutMs: number): Promise<AgentClient> {
  for (;;) {
    signal.throwIfAborted();
    // Not there yet (the agent is starting): checked first, as a refused connect costs an error object.
    if (!existsSync(path)) {
      await sleep(2, undefined, { signal });
      continue;
    }
    const sock = await new Promise<Socket | undefined>((resolve, reject) => {
      const s = connect({ path });
      s.once('connect', () => {
        s.off('error', onError);
        resolve(s);
      });
      const onError = (e: NodeJS.ErrnoException): void => {
        s.destroy();
        if (e.code === 'ENOENT' || e.code === 'ECONNREFUSED') resolve(undefined);
        else reject(e);
      };
      s.once('error', onError);
    });
    if (sock) {
      sock.on('error', () => undefined); // the client sees the close
      return AgentClient.connect({ readable: sock, writable: sock, destroy: () => sock.destroy() }, { signal, timeoutMs });
    }
    await sleep(5, undefined, { signal });
  }
}

/**
 * SIGKILLs a kept sandbox's agent (its pid namespace goes with it) and waits for it, then for
 * bwrap, which reaps it and exits; bwrap gets SIGKILL only if it does not. In that order the
 * agent is reaped by bwrap: killed together, an agent outliving bwrap would be left to init.
 */
export async function killKept(sandboxPid: number, bwrapPid: number): Promise<void> {
  const agent = await killLeftovers([sandboxPid], 4000);
  if (agent.stuck.length) throw new Error(`sandbox process ${sandboxPid} survived SIGKILL`);
  for (let t = 0; t < 1000; t += 10) {
    if ((await processStart(bwrapPid)) === undefined) return;
    await sleep(10);
  }
  const bwrap = await killLeftovers([bwrapPid], 4000);
  if (bwrap.stuck.length) throw new Error(`bwrap process ${bwrapPid} survived SIGKILL`);
}
