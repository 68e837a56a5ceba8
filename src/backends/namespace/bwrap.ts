/**
 * Starts one bubblewrap sandbox with kiln-agent as its PID 1 and hands back the process, the
 * in-sandbox PID 1's host pid (for the cgroup), and a gate that lets it run.
 *
 * bwrap runs as a per-sandbox unprivileged host uid: the sandbox's "root" is that uid outside, and
 * the agent drops every capability after building its overlay root (see agent --setup-root).
 */
import type { ChildProcess } from 'node:child_process';
import { constants } from 'node:fs';
import { access } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { spawnClean } from '../../core/clean-spawn.js';
import { formatCpuList } from '../../core/cpu-sets.js';
import type { ZygoteSpec } from '../../core/packs.js';
import { SANDBOX_SOCKET } from './kept.js';
import type { Spawner } from './spawner.js';

export interface BwrapOptions {
  bwrapPath: string;
  hostUid: number;
  lowerDir: string;
  agentPath: string;
  diskBytes: number;
  hostname: string;
  /**
   * Delegated cgroup directories by hierarchy, bound at /.kiln/cgroup/<name>: the agent opens
   * them before pivot_root, which leaves them unreachable from the sandbox's root.
   */
  cgroupDirs?: Record<string, string>;
  /**
   * A cgroup namespace for the sandbox (default true). Off on cgroup v2: with nsdelegate (as
   * systemd mounts it) a namespace rooted at the agent's cgroup would stop the agent moving execs
   * into the user/ part beside it (test/qemu/cgroup-v2.test.ts shows both).
   */
  cgroupNamespace?: boolean;
  /**
   * A workspace: the idmapped project bind goes in read-only at /.kiln/ws-lower, the mounted upper
   * image read-write at /.kiln/ws; the agent mounts the overlay on /workspace before pivot_root.
   */
  workspace?: { lowerDir: string; mntDir: string; gitWritable: boolean };
  /** Host CPUs the sandbox runs on: the agent sets its affinity and /sys/devices/system/cpu to them. */
  cpuList?: readonly number[];
  /**
   * The agent's socket folder (kept.ts): the agent listens there instead of speaking over stdio,
   * and the sandbox is not tied to the service's life (no --die-with-parent, its own session).
   */
  socketDir?: string;
  /** A runner's zygote (agent/zygote_linux.go): the interpreter its fork runs use, and their environment. */
  zygote?: ZygoteSpec;
  /** The resolver /etc/resolv.conf names (kiln's, on the network's gateway; unreachable without a network). */
  nameserver?: string;
  /** Receives everything bwrap and the agent write to stderr, from the start. */
  onStderr: (text: string) => void;
}

/** What the backend uses of bwrap's process: a ChildProcess, or one the spawner started (spawner.ts). */
export interface BwrapChild extends NodeJS.EventEmitter {
  readonly pid?: number | undefined;
  readonly exitCode: number | null;
  readonly signalCode: NodeJS.Signals | null;
  kill(signal?: NodeJS.Signals | number): boolean;
  unref(): void;
}

export interface BwrapProcess {
  child: BwrapChild;
  /** Host pid of the sandbox's PID 1 (the agent), from bwrap's --info-fd. */
  sandboxPid: number;
  /**
   * Places the sandbox's PID 1 in its cgroups and unblocks it (bwrap's child waits on
   * --block-fd until then, so nothing of the sandbox runs unconfined). Through the spawner both
   * are done already, in its one request.
   */
  enterAndRelease(addProcess: (pid: number) => Promise<void>): Promise<void>;
  /**
   * Kept sandboxes (socketDir): tells the agent the sandbox's state is on disk, so a restart finds
   * it. Until then the agent waits, and a service that dies first closes the pipe: the agent sees
   * end of file and the sandbox ends, so a create cut short by a crash leaves no process behind.
   */
  recorded(): void;
  /** Resolves once everything the sandbox wrote to stderr so far was passed to onStderr (or after `ms`). */
  stderrSettled(ms: number): Promise<void>;
  /** The sandbox is up: its stderr is no longer read. */
  forget(): void;
}

/** The descriptor of the pipe recorded() writes to, in bwrap and in the agent. */
const AWAIT_FD = 5;

export function bwrapArgs(o: BwrapOptions): string[] {
  return [
    // --unshare-all without its cgroup namespace when that is off.
    '--unshare-user',
    '--unshare-ipc',
    '--unshare-pid',
    '--unshare-net',
    '--unshare-uts',
    ...(o.cgroupNamespace === false ? [] : ['--unshare-cgroup-try']),
    ...(o.socketDir ? [] : ['--die-with-parent']),
    '--as-pid-1',
    '--uid',
    '0',
    '--gid',
    '0',
    '--cap-add',
    'ALL',
    '--hostname',
    o.hostname,
    '--dev',
    '/dev',
    '--proc',
    '/proc',
    '--ro-bind',
    o.lowerDir,
    '/.kiln/lower',
    '--ro-bind',
    o.agentPath,
    '/.kiln/agent',
    ...(o.workspace ? ['--ro-bind', o.workspace.lowerDir, '/.kiln/ws-lower', '--bind', o.workspace.mntDir, '/.kiln/ws'] : []),
    ...(o.socketDir ? ['--bind', o.socketDir, '/.kiln/sock'] : []),
    ...Object.entries(o.cgroupDirs ?? {}).flatMap(([name, dir]) => ['--bind', dir, `/.kiln/cgroup/${name}`]),
    '--info-fd',
    '3',
    '--block-fd',
    '4',
    '--clearenv',
    '--',
    '/.kiln/agent',
    '--transport',
    o.socketDir ? `unix:${SANDBOX_SOCKET}` : 'stdio',
    '--setup-root',
    '/.kiln/lower',
    '--disk-bytes',
    String(o.diskBytes),
    ...(o.workspace ? ['--workspace-lower', '/.kiln/ws-lower', '--workspace-mnt', '/.kiln/ws', ...(o.workspace.gitWritable ? ['--workspace-git-writable'] : [])] : []),
    ...(o.cpuList?.length ? ['--cpus', formatCpuList(o.cpuList)] : []),
    ...(o.nameserver ? ['--nameserver', o.nameserver] : []),
    ...(o.zygote ? ['--zygote', JSON.stringify(o.zygote)] : []),
    // A kept sandbox outlives the service: it waits until the service has its record (see recorded()).
    ...(o.socketDir ? ['--await-fd', String(AWAIT_FD)] : []),
  ];
}

/**
 * Starts a kept sandbox's bwrap through the spawner (spawner.ts), which also places its PID 1 in
 * the cgroups whose cgroup.procs files are listed and lets it run.
 */
export async function spawnBwrapVia(spawner: Spawner, o: BwrapOptions & { socketDir: string }, cgroupProcs: string[], signal: AbortSignal): Promise<BwrapProcess> {
  const bwrap = o.bwrapPath.includes('/') ? o.bwrapPath : await whichCached(o.bwrapPath);
  const child = await spawner.spawn({ path: bwrap, argv: [o.bwrapPath, ...bwrapArgs(o)], uid: o.hostUid, gid: o.hostUid, setsid: true, await: true, cgroupProcs, onStderr: o.onStderr }, signal);
  return {
    child,
    sandboxPid: child.sandboxPid,
    enterAndRelease: async () => undefined,
    recorded: () => child.recorded(),
    stderrSettled: (ms) => Promise.race([child.stderrEnded, new Promise<void>((r) => setTimeout(r, ms))]),
    forget: () => child.forget(),
  };
}

const found = new Map<string, string>();

/** A program name's path, as execvp finds it (the spawner execs a path, with an empty environment). */
async function whichCached(name: string): Promise<string> {
  let path = found.get(name);
  if (!path) {
    for (const dir of (process.env.PATH || '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin').split(':')) {
      const p = join(dir || '.', name);
      if (
        await access(p, constants.X_OK).then(
          () => true,
          () => false,
        )
      ) {
        path = p;
        break;
      }
    }
    if (!path) throw new Error(`cannot run ${name}: not found in PATH`);
    found.set(name, path);
  }
  return path;
}

/** Spawns bwrap and waits for its info JSON (child pid) — the sandbox is still blocked then. */
export async function spawnBwrap(o: BwrapOptions, signal: AbortSignal): Promise<BwrapProcess> {
  // Through the sandbox's own agent copy: it is what the sandbox uid can execute.
  const child = spawnClean(
    o.bwrapPath,
    bwrapArgs(o),
    {
      uid: o.hostUid,
      gid: o.hostUid,
      stdio: o.socketDir ? ['ignore', 'ignore', 'pipe', 'pipe', 'pipe', 'pipe'] : ['pipe', 'pipe', 'pipe', 'pipe', 'pipe'],
      env: {},
      // Out of the service's process group: a signal to the group (Ctrl-C) is not the sandbox's.
      detached: !!o.socketDir,
    },
    o.agentPath,
  );
  child.stderr!.on('data', (c: Buffer) => o.onStderr(c.toString()));
  const info = child.stdio[3] as Readable;
  const block = child.stdio[4] as Writable;
  const recordedPipe = (child.stdio as unknown as Array<Writable | null | undefined>)[AWAIT_FD];
  // A sandbox stopped while starting (close() aborting a create) resets these pipes; its exit is
  // what readChildPid and the sandbox watch, so their errors carry nothing more.
  for (const pipe of [info, block, child.stderr!, recordedPipe]) pipe?.on('error', () => undefined);
  try {
    const sandboxPid = await readChildPid(child, info, signal);
    return {
      child,
      sandboxPid,
      enterAndRelease: async (addProcess) => {
        await addProcess(sandboxPid);
        block.end('x');
      },
      recorded: () => {
        recordedPipe?.end('g');
      },
      stderrSettled: async (ms) => {
        const err = child.stderr;
        if (err && !err.readableEnded) await Promise.race([new Promise((r) => err.once('end', r)), new Promise((r) => setTimeout(r, ms))]);
      },
      forget: () => child.stderr?.destroy(),
    };
  } catch (e) {
    child.kill('SIGKILL');
    throw e;
  }
}

function readChildPid(child: ChildProcess, info: Readable, signal: AbortSignal): Promise<number> {
  return new Promise((resolve, reject) => {
    let text = '';
    const done = (err?: Error, pid?: number): void => {
      info.off('data', onData);
      child.off('exit', onExit);
      signal.removeEventListener('abort', onAbort);
      err ? reject(err) : resolve(pid!);
    };
    const onData = (c: Buffer): void => {
      text += c.toString();
      const m = /"child-pid":\s*(\d+)[,\s}]/.exec(text);
      if (m) done(undefined, Number(m[1]));
      else if (text.length > 64 * 1024) done(new Error('bwrap info output is not what kiln expects'));
    };
    const onExit = (code: number | null): void => done(new Error(`bwrap exited (code ${code}) before starting the sandbox`));
    const onAbort = (): void => done(new Error('sandbox start aborted'));
    info.on('data', onData);
    child.on('exit', onExit);
    child.on('error', (e) => done(new Error(`cannot run bwrap: ${e.message}`)));
    signal.addEventListener('abort', onAbort, { once: true });
  });
}
