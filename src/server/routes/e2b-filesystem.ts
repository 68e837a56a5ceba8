/**
 * envd's filesystem.Filesystem service on kiln's agent: listings and stats from the agent's
 * directory listing; make, move and remove as short commands in the sandbox (the agent has no
 * such ops). Relative paths are relative to the sandbox's home (kiln: /workspace, E2B: /home/user).
 */
import { randomUUID } from 'node:crypto';
import { posix } from 'node:path';
import { create } from '@bufbuild/protobuf';
import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from '@connectrpc/connect';
import type { Sandbox } from '../../core/sandbox.js';
import {
  type EntryInfo,
  EntryInfoSchema,
  EventType,
  type Filesystem,
  type FilesystemEvent,
  FilesystemEventSchema,
  FileType,
  type WatchDirResponse,
  WatchDirResponseSchema,
} from '../../e2b/gen/filesystem/filesystem_pb.js';
import type { FsEntry } from '../../protocol/messages.js';
import type { KilnService } from '../service.js';
import { toConnectError } from './e2b-process.js';

const MAX_DEPTH = 16;
/** How often a watched folder is listed, and how many entries a watch follows at most. */
const WATCH_POLL_MS = 200;
const WATCH_MAX_ENTRIES = 10_000;
/** Polling watchers (CreateWatcher): per sandbox at most, and dropped when nobody read them this long. */
const WATCHERS_PER_SANDBOX = 16;
const WATCHER_IDLE_MS = 10 * 60_000;

export function homeOf(sb: Sandbox): string {
  return sb.packEnv.HOME || '/workspace';
}

export function resolvePath(sb: Sandbox, p: string): string {
  if (!p) throw new ConnectError('path is empty', Code.InvalidArgument);
  return posix.resolve(homeOf(sb), p);
}

export function filesystemService(svc: KilnService, sandboxOf: (ctx: HandlerContext) => Sandbox): Partial<ServiceImpl<typeof Filesystem>> {
  const list = async (sb: Sandbox, dir: string): Promise<FsEntry[]> => {
    try {
      return await svc.manager.listFiles(sb.id, dir);
    } catch (e) {
      throw toConnectError(e);
    }
  };
  /** The entry at `path`, from its parent's listing; NotFound when there is none. */
  const stat = async (sb: Sandbox, path: string): Promise<EntryInfo> => {
    if (path === '/') return create(EntryInfoSchema, { name: '/', type: FileType.DIRECTORY, path: '/', mode: 0o755, permissions: 'drwxr-xr-x' });
    const parent = posix.dirname(path);
    const name = posix.basename(path);
    let entries: FsEntry[];
    try {
      entries = await svc.manager.listFiles(sb.id, parent);
    } catch (e) {
      const ce = toConnectError(e);
      throw ce.code === Code.NotFound || ce.code === Code.InvalidArgument ? new ConnectError(`path "${path}" not found`, Code.NotFound) : ce;
    }
    const e = entries.find((x) => x.name === name);
    if (!e) throw new ConnectError(`path "${path}" not found`, Code.NotFound);
    return entryInfo(parent, e);
  };
  /** A command in the sandbox that must succeed; its stderr is the error's message. */
  const run = async (sb: Sandbox, argv: string[]): Promise<void> => {
    let r: Awaited<ReturnType<KilnService['manager']['runExec']>>;
    try {
      r = await svc.manager.runExec(sb.id, { cmd: argv, timeoutMs: 60_000 });
    } catch (e) {
      throw toConnectError(e);
    }
    if (r.exitCode !== 0) throw new ConnectError(`${argv[0]} failed: ${r.stderr.toString('utf8').trim() || `exit status ${r.exitCode}`}`, Code.Internal);
  };

  /** The folder a watch is for: NotFound or InvalidArgument (not a folder) as envd answers. */
  const watchable = async (sb: Sandbox, p: string): Promise<string> => {
    const root = resolvePath(sb, p);
    const top = await stat(sb, root);
    if (top.type !== FileType.DIRECTORY) throw new ConnectError(`path "${root}" is not a directory`, Code.InvalidArgument);
    return root;
  };
  /** Every entry under `root` (one level, or all with `recursive`), by its name relative to it. */
  const snapshotOf = async (sb: Sandbox, root: string, recursive: boolean): Promise<Map<string, EntryInfo>> => {
    const out = new Map<string, EntryInfo>();
    const walk = async (dir: string, rel: string, level: number): Promise<void> => {
      for (const e of await list(sb, dir)) {
        if (out.size >= WATCH_MAX_ENTRIES) return;
        const name = rel ? `${rel}/${e.name}` : e.name;
        out.set(name, entryInfo(dir, e));
        if (recursive && e.type === 'dir' && level < MAX_DEPTH) await walk(posix.join(dir, e.name), name, level + 1).catch(() => undefined);
      }
    };
    await walk(root, '', 1);
    return out;
  };
  const watchers = new Map<string, Watcher>();
  const watcherOf = (sb: Sandbox, id: string): Watcher => {
    const w = watchers.get(id);
    if (!w || w.sandboxId !== sb.id) throw new ConnectError(`watcher "${id}" not found`, Code.NotFound);
    return w;
  };

  return {
    async stat(req, ctx) {
      const sb = sandboxOf(ctx);
      return { entry: await stat(sb, resolvePath(sb, req.path)) };
    },

    async listDir(req, ctx) {
      const sb = sandboxOf(ctx);
      const root = resolvePath(sb, req.path);
      const depth = req.depth === 0 ? 1 : req.depth;
      if (depth > MAX_DEPTH) throw new ConnectError(`depth is at most ${MAX_DEPTH}`, Code.InvalidArgument);
      const top = await stat(sb, root);
      if (top.type !== FileType.DIRECTORY) throw new ConnectError(`path "${root}" is not a directory`, Code.InvalidArgument);
      const out: EntryInfo[] = [];
      const walk = async (dir: string, level: number): Promise<void> => {
        for (const e of await list(sb, dir)) {
          const info = entryInfo(dir, e);
          out.push(info);
          if (e.type === 'dir' && level < depth) await walk(info.path, level + 1);
        }
      };
      await walk(root, 1);
      return { entries: out };
    },

    async makeDir(req, ctx) {
      const sb = sandboxOf(ctx);
      const path = resolvePath(sb, req.path);
      const existing = await stat(sb, path).catch(() => undefined);
      if (existing) throw new ConnectError(`path "${path}" already exists`, Code.AlreadyExists);
      await run(sb, ['mkdir', '-p', '--', path]);
      return { entry: await stat(sb, path) };
    },

    async move(req, ctx) {
      const sb = sandboxOf(ctx);
      const from = resolvePath(sb, req.source);
      const to = resolvePath(sb, req.destination);
      await stat(sb, from);
      await run(sb, ['mkdir', '-p', '--', posix.dirname(to)]);
      await run(sb, ['mv', '-f', '--', from, to]);
      return { entry: await stat(sb, to) };
    },

    /**
     * Polls the folder every WATCH_POLL_MS (the agent has no inotify relay); see changes(). Names
     * are relative to the watched folder, as envd's; keepalives while nothing changes.
     */
    async *watchDir(req, ctx): AsyncIterable<WatchDirResponse> {
      const sb = sandboxOf(ctx);
      const root = await watchable(sb, req.path);
      const snapshot = () => snapshotOf(sb, root, req.recursive);
      let prev = await snapshot();
      yield create(WatchDirResponseSchema, { event: { case: 'start', value: {} } });
      const asked = Number(ctx.requestHeader.get('keepalive-ping-interval'));
      const keepaliveMs = Number.isFinite(asked) && asked > 0 ? Math.min(asked * 1000, 30_000) : 30_000;
      let quietSince = Date.now();
      while (!ctx.signal.aborted) {
        await sleep(WATCH_POLL_MS, ctx.signal);
        if (ctx.signal.aborted) return;
        const next = await snapshot();
        const events = changes(prev, next, req.includeEntry);
        prev = next;
        for (const ev of events) yield create(WatchDirResponseSchema, { event: { case: 'filesystem', value: ev } });
        if (events.length > 0) quietSince = Date.now();
        else if (Date.now() - quietSince >= keepaliveMs) {
          quietSince = Date.now();
          yield create(WatchDirResponseSchema, { event: { case: 'keepalive', value: {} } });
        }
      }
    },

    /** The polling form (E2B's Python client): a watcher that collects events until asked for them. */
    async createWatcher(req, ctx) {
      const sb = sandboxOf(ctx);
      const root = await watchable(sb, req.path);
      const mine = [...watchers.values()].filter((w) => w.sandboxId === sb.id);
      if (mine.length >= WATCHERS_PER_SANDBOX) throw new ConnectError(`at most ${WATCHERS_PER_SANDBOX} watchers per sandbox: remove one first`, Code.ResourceExhausted);
      const id = randomUUID();
      const ac = new AbortController();
      const w: Watcher = { sandboxId: sb.id, events: [], lastRead: Date.now(), stop: () => ac.abort() };
      watchers.set(id, w);
      let prev = await snapshotOf(sb, root, req.recursive);
      void (async () => {
        while (!ac.signal.aborted) {
          await sleep(WATCH_POLL_MS, ac.signal);
          if (ac.signal.aborted || Date.now() - w.lastRead > WATCHER_IDLE_MS || sb.state !== 'ready') break;
          const next = await snapshotOf(sb, root, req.recursive).catch(() => undefined);
          if (!next) break;
          for (const ev of changes(prev, next, req.includeEntry)) if (w.events.length < WATCH_MAX_ENTRIES) w.events.push(create(FilesystemEventSchema, ev));
          prev = next;
        }
        watchers.delete(id);
      })();
      return { watcherId: id };
    },

    async getWatcherEvents(req, ctx) {
      const w = watcherOf(sandboxOf(ctx), req.watcherId);
      w.lastRead = Date.now();
      return { events: w.events.splice(0) };
    },

    async removeWatcher(req, ctx) {
      const w = watcherOf(sandboxOf(ctx), req.watcherId);
      w.stop();
      watchers.delete(req.watcherId);
      return {};
    },

    async remove(req, ctx) {
      const sb = sandboxOf(ctx);
      const path = resolvePath(sb, req.path);
      if (path === '/') throw new ConnectError('refusing to remove /', Code.InvalidArgument);
      await run(sb, ['rm', '-rf', '--', path]); // envd removes a missing path without complaint
      return {};
    },
  };
}

interface Watcher {
  sandboxId: string;
  events: FilesystemEvent[];
  lastRead: number;
  stop: () => void;
}

/**
 * What changed between two snapshots: a new name is CREATE (and WRITE for a file with content), a
 * changed size or mtime WRITE, a changed mode CHMOD, a gone name REMOVE.
 */
function changes(prev: Map<string, EntryInfo>, next: Map<string, EntryInfo>, includeEntry: boolean): Array<{ name: string; type: EventType; entry?: EntryInfo }> {
  const events: Array<{ name: string; type: EventType; entry?: EntryInfo }> = [];
  const ev = (name: string, type: EventType, entry?: EntryInfo) => events.push({ name, type, entry: includeEntry ? entry : undefined });
  for (const [name, e] of next) {
    const was = prev.get(name);
    if (!was) {
      ev(name, EventType.CREATE, e);
      if (e.type === FileType.FILE && e.size > 0n) ev(name, EventType.WRITE, e);
    } else if (was.size !== e.size || was.modifiedTime?.seconds !== e.modifiedTime?.seconds || was.modifiedTime?.nanos !== e.modifiedTime?.nanos) {
      if (e.type !== FileType.DIRECTORY) ev(name, EventType.WRITE, e);
    } else if (was.mode !== e.mode) ev(name, EventType.CHMOD, e);
  }
  for (const name of prev.keys()) if (!next.has(name)) ev(name, EventType.REMOVE);
  return events;
}

function entryInfo(dir: string, e: FsEntry): EntryInfo {
  const type = e.type === 'dir' ? FileType.DIRECTORY : e.type === 'file' ? FileType.FILE : e.type === 'symlink' ? FileType.SYMLINK : FileType.UNSPECIFIED;
  const perm = e.mode & 0o777;
  return create(EntryInfoSchema, {
    name: e.name,
    type,
    path: posix.join(dir, e.name),
    size: BigInt(Math.max(0, Math.floor(e.size))),
    mode: perm,
    permissions: permissions(e.type, perm),
    modifiedTime: timestampFromMs(Math.floor(e.mtimeMs)),
  });
}

function permissions(type: FsEntry['type'], perm: number): string {
  const first = type === 'dir' ? 'd' : type === 'symlink' ? 'L' : '-';
  let s = first;
  for (let shift = 6; shift >= 0; shift -= 3) {
    const b = (perm >> shift) & 7;
    s += `${b & 4 ? 'r' : '-'}${b & 2 ? 'w' : '-'}${b & 1 ? 'x' : '-'}`;
  }
  return s;
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
    function done(): void {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    }
  });
}
