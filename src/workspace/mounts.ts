/**
 * The host side of a workspace's data path (docs: WORKSPACE-DESIGN.md). Per workspace id, under
 * `<KILN_WORKSPACES_DIR>/<id>/` (passed as `dataDir` below):
 *
 *   upper.img  sparse ext4 image of the size limit (ENOSPC inside when full; survives restarts)
 *   mnt/       that image, loop-mounted: upper/ and work/ of the overlay, owned by the host uid
 *   lower/     idmapped, read-only, nosuid, nodev bind of the project directory W: W's owner
 *              shows as the host uid, i.e. as root inside the sandbox's user namespace
 *
 * The sandbox mounts the overlay itself, in its own mount namespace (agent --workspace-*), so a
 * sandbox's end leaves nothing on the host; a workspace's release undoes all of the above.
 */
import { execFile } from 'node:child_process';
import { chmod, chown, mkdir, readdir, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { CleanupStack } from '../core/cleanup.js';
import { KilnError } from '../core/errors.js';
import { runSteps, type Step } from '../core/steps.js';

const run = promisify(execFile);

export interface WorkspaceHost {
  /** The folder of every workspace (KILN_WORKSPACES_DIR, default `<KILN_DATA_DIR>/workspaces`). */
  dataDir: string;
  /** The kiln-agent binary (its `host idmap-bind` mode makes the lower mount). */
  agentPath: string;
}

export interface PrepareWorkspaceOptions {
  id: string;
  /** W: the validated project directory (realpath). Its owner is the uid mapped to the sandbox's root. */
  projectDir: string;
  /** The host uid (and gid) the sandbox runs as: owner of upper/ and work/, target of the idmap. */
  hostUid: number;
  sizeMib: number;
  signal?: AbortSignal;
}

export interface WorkspacePaths {
  dir: string;
  image: string;
  /** The idmapped bind of W: SandboxSpec.workspace.lowerDir. */
  lowerDir: string;
  /** The mounted image: SandboxSpec.workspace.mntDir. */
  mntDir: string;
  /** `<mntDir>/upper`: what the review scans. */
  upperDir: string;
}

export interface FoundWorkspace {
  id: string;
  paths: WorkspacePaths;
  hasImage: boolean;
  /** A microVM workspace's snapshot (images.ts): such a workspace has nothing mounted on the host. */
  hasLowerImage: boolean;
  lowerMounted: boolean;
  mntMounted: boolean;
}

/** Step names of a workspace's preparation (errors and traces name them). */
export const WS_STEP = {
  mkdir: 'ws.mkdir',
  image: 'ws.createImage',
  mountImage: 'ws.mountImage',
  lower: 'ws.idmapLower',
} as const;

/** The folder of every workspace: callers pass it as `dataDir` (KILN_WORKSPACES_DIR). */
export function workspacesDir(dataDir: string): string {
  return dataDir;
}

export function workspacePaths(dataDir: string, id: string): WorkspacePaths {
  if (!/^[A-Za-z0-9_-]+$/.test(id)) throw new KilnError('INVALID_REQUEST', `workspace id ${JSON.stringify(id)} is not a plain name`);
  const dir = join(workspacesDir(dataDir), id);
  const mntDir = join(dir, 'mnt');
  return { dir, image: join(dir, 'upper.img'), lowerDir: join(dir, 'lower'), mntDir, upperDir: join(mntDir, 'upper') };
}

/**
 * Creates the image, mounts it and the idmapped lower; a failure undoes what was done. The image
 * (mke2fs, mount) and the lower (the agent's idmap-bind) are independent: they run side by side.
 */
export async function prepareWorkspace(host: WorkspaceHost, o: PrepareWorkspaceOptions): Promise<WorkspacePaths> {
  const paths = workspacePaths(host.dataDir, o.id);
  const owner = await stat(o.projectDir);
  if (!owner.isDirectory()) throw new KilnError('INVALID_REQUEST', `${o.projectDir} is not a directory`);
  const dirSteps: Array<Step<WorkspacePaths>> = [
    {
      name: WS_STEP.mkdir,
      run: async () => {
        // The sandbox uid (bwrap) must traverse to lower/ and mnt/, and no other host user may:
        // the workspace's own directory is searchable by its group (the sandbox's gid) alone.
        await mkdir(workspacesDir(host.dataDir), { recursive: true, mode: 0o711 });
        await chmod(workspacesDir(host.dataDir), 0o711);
        await mkdir(paths.dir, { mode: 0o710 });
        await chown(paths.dir, 0, o.hostUid);
        await chmod(paths.dir, 0o710);
        await mkdir(paths.mntDir, { mode: 0o711 });
        await mkdir(paths.lowerDir, { mode: 0o711 });
      },
      undo: () => rm(paths.dir, { recursive: true, force: true }),
    },
  ];
  const upperSteps: Array<Step<WorkspacePaths>> = [
    { name: WS_STEP.image, run: () => makeUpperImage(paths.image, o.sizeMib) },
    // Also makes upper/ and work/, owned by the host uid.
    { name: WS_STEP.mountImage, run: () => mountImage(host, paths, o.hostUid), undo: () => unmountImage(paths) },
  ];
  const lowerSteps: Array<Step<WorkspacePaths>> = [{ name: WS_STEP.lower, run: () => mountLower(host, o.projectDir, paths, owner, o.hostUid), undo: () => umount(paths.lowerDir) }];
  const opts = {
    signal: o.signal,
    explain: (e: unknown, step: string) => new KilnError('INTERNAL', `cannot prepare workspace ${o.id} (${step}): ${e instanceof Error ? e.message : String(e)}`, { cause: e }),
  };
  const dirStack = new CleanupStack();
  await runSteps(dirSteps, paths, dirStack, opts);
  // Each list unwinds itself when it fails; the other one, and the directory, are undone here.
  const stacks = [new CleanupStack(), new CleanupStack()];
  const results = await Promise.allSettled([runSteps(upperSteps, paths, stacks[0]!, opts), runSteps(lowerSteps, paths, stacks[1]!, opts)]);
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) {
    for (const stack of [...stacks, dirStack]) await stack.run().catch(() => undefined);
    throw failed.reason;
  }
  return paths;
}

/** After a restart: mounts again whichever of the image and the lower is not mounted. */
export async function attachWorkspace(host: WorkspaceHost, o: Omit<PrepareWorkspaceOptions, 'sizeMib'>): Promise<WorkspacePaths> {
  const paths = workspacePaths(host.dataDir, o.id);
  await stat(paths.image).catch(() => {
    throw new KilnError('NOT_FOUND', `workspace ${o.id} has no upper image at ${paths.image}`);
  });
  const points = await mountPoints();
  if (!points.has(paths.mntDir)) await mountImage(host, paths, o.hostUid);
  if (!points.has(paths.lowerDir)) await mountLower(host, o.projectDir, paths, await stat(o.projectDir), o.hostUid);
  return paths;
}

/** Unmounts the lower and the image (freeing its loop device) and removes the directory; idempotent. */
export async function releaseWorkspace(dataDir: string, id: string): Promise<void> {
  const paths = workspacePaths(dataDir, id);
  await releaseMounts(paths);
  const left = [...(await mountPoints())].filter((p) => p === paths.dir || p.startsWith(`${paths.dir}/`));
  if (left.length) throw new KilnError('INTERNAL', `workspace ${id} is still mounted at ${left.join(', ')}; not removing ${paths.dir}`);
  await rm(paths.dir, { recursive: true, force: true });
}

/** Unmounts the lower and the image and frees the image's loop devices; idempotent. */
export async function releaseMounts(paths: WorkspacePaths): Promise<void> {
  const points = await mountPoints();
  if (points.has(paths.lowerDir)) await umount(paths.lowerDir);
  if (points.has(paths.mntDir)) await umount(paths.mntDir);
  await detachLoops(paths.image);
}

/** What the workspaces folder holds, for the start-up reconcile (keep, re-attach or release each). */
export async function scanWorkspaces(dataDir: string): Promise<FoundWorkspace[]> {
  const names = await readdir(workspacesDir(dataDir)).catch(() => [] as string[]);
  const points = await mountPoints();
  const found: FoundWorkspace[] = [];
  for (const id of names.sort()) {
    let paths: WorkspacePaths;
    try {
      paths = workspacePaths(dataDir, id);
    } catch {
      continue; // not ours
    }
    const hasImage = await stat(paths.image).then(
      (s) => s.isFile(),
      () => false,
    );
    const hasLowerImage = await stat(join(paths.dir, 'lower.sqfs')).then(
      (s) => s.isFile(),
      () => false,
    );
    found.push({ id, paths, hasImage, hasLowerImage, lowerMounted: points.has(paths.lowerDir), mntMounted: points.has(paths.mntDir) });
  }
  return found;
}

/** The sparse ext4 upper image (mke2fs creates the file): ENOSPC inside at `sizeMib`. */
export async function makeUpperImage(path: string, sizeMib: number): Promise<void> {
  // Lazy inode tables and journal: a 1 GiB image is made in milliseconds, not seconds. No
  // blocks reserved for root: the limit is the limit for everyone in the sandbox.
  await run('mkfs.ext4', ['-q', '-F', '-m', '0', '-E', 'lazy_itable_init=1,lazy_journal_init=1,root_owner=0:0', path, `${sizeMib}M`]);
}

/** The agent's ws-mount: an autoclear loop device (it goes with the unmount), ext4 nosuid,nodev, upper/ and work/. */
async function mountImage(host: WorkspaceHost, p: WorkspacePaths, hostUid: number): Promise<void> {
  await run(host.agentPath, ['host', 'ws-mount', p.image, p.mntDir, String(hostUid)]);
}

async function unmountImage(p: WorkspacePaths): Promise<void> {
  await umount(p.mntDir);
  await detachLoops(p.image);
}

async function mountLower(host: WorkspaceHost, projectDir: string, p: WorkspacePaths, owner: { uid: number; gid: number }, hostUid: number): Promise<void> {
  await run(host.agentPath, ['host', 'idmap-bind', projectDir, p.lowerDir, `${owner.uid}:${hostUid}`, `${owner.gid}:${hostUid}`]);
}

async function umount(target: string): Promise<void> {
  // Not lazy: a busy mount must fail loudly rather than linger with the project behind it.
  await run('umount', [target]);
}

/** Loop devices still backed by the image (a crash between mount and autoclear, a manual losetup). */
async function detachLoops(image: string): Promise<void> {
  const out = await run('losetup', ['-j', image]).then(
    (r) => r.stdout,
    () => '',
  );
  for (const line of out.split('\n')) {
    const dev = /^(\/dev\/loop\d+):/.exec(line)?.[1];
    if (dev) await run('losetup', ['-d', dev]).catch(() => undefined);
  }
}

async function mountPoints(): Promise<Set<string>> {
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  return new Set(
    text
      .split('\n')
      .map((l) => l.split(' ')[4])
      .filter((p): p is string => p !== undefined)
      // mountinfo escapes space, tab, newline and backslash as octal.
      .map((p) => p.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)))),
  );
}
