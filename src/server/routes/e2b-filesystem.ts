/**
 * envd's filesystem.Filesystem service on kiln's agent: listings and stats from the agent's
 * directory listing; make, move and remove as short commands in the sandbox (the agent has no
 * such ops). Relative paths are relative to the sandbox's home (kiln: /workspace, E2B: /home/user).
 */
import { posix } from 'node:path';
import { create } from '@bufbuild/protobuf';
import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from '@connectrpc/connect';
import type { Sandbox } from '../../core/sandbox.js';
import { type EntryInfo, EntryInfoSchema, type Filesystem, FileType } from '../../e2b/gen/filesystem/filesystem_pb.js';
import type { FsEntry } from '../../protocol/messages.js';
import type { KilnService } from '../service.js';
import { toConnectError } from './e2b-process.js';

const MAX_DEPTH = 16;

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

    async remove(req, ctx) {
      const sb = sandboxOf(ctx);
      const path = resolvePath(sb, req.path);
      if (path === '/') throw new ConnectError('refusing to remove /', Code.InvalidArgument);
      await run(sb, ['rm', '-rf', '--', path]); // envd removes a missing path without complaint
      return {};
    },
  };
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
