/**
 * A workspace for the microVM backends (SandboxWorkspace kind 'images'): the project as a
 * read-only squashfs snapshot and the same sparse ext4 upper image as on namespace, both handed
 * to the VM as drives; the guest agent mounts the overlay (agent/workspace_vm_linux.go) and
 * scans the upper (`ws.scan`). Nothing is mounted on the host, so releaseWorkspace (mounts.ts)
 * releases these too. The snapshot is taken once, at prepare: later host edits to the project are
 * not seen by the sandbox (the namespace backend's lower is live).
 */
import { execFile } from 'node:child_process';
import { chmod, mkdir, readdir, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { CleanupStack } from '../core/cleanup.js';
import { KilnError } from '../core/errors.js';
import { runSteps, type Step } from '../core/steps.js';
import { makeUpperImage, releaseMounts, type WorkspaceHost, type WorkspacePaths, workspacePaths, workspacesDir } from './mounts.js';

const run = promisify(execFile);

export interface PrepareImageWorkspaceOptions {
  id: string;
  /** W: the validated project directory (realpath). */
  projectDir: string;
  /** The guest's exec uid (and gid): every file of the snapshot belongs to it. */
  guestUid: number;
  sizeMib: number;
  signal?: AbortSignal;
}

export interface ImageWorkspacePaths {
  dir: string;
  /** SandboxSpec.workspace.lowerImage */
  lowerImage: string;
  /** SandboxSpec.workspace.upperImage */
  upperImage: string;
}

export const WS_IMAGE_STEP = {
  mkdir: 'ws.mkdir',
  upper: 'ws.createImage',
  snapshot: 'ws.snapshot',
} as const;

export function imageWorkspacePaths(dataDir: string, id: string): ImageWorkspacePaths {
  const p = workspacePaths(dataDir, id);
  return { dir: p.dir, lowerImage: join(p.dir, 'lower.sqfs'), upperImage: p.image };
}

/** Makes the empty upper image and the project's snapshot; a failure removes the directory. */
export async function prepareImageWorkspace(dataDir: string, o: PrepareImageWorkspaceOptions): Promise<ImageWorkspacePaths> {
  const paths = imageWorkspacePaths(dataDir, o.id);
  if (!(await stat(o.projectDir)).isDirectory()) throw new KilnError('INVALID_REQUEST', `${o.projectDir} is not a directory`);
  const steps: Array<Step<ImageWorkspacePaths>> = [
    {
      name: WS_IMAGE_STEP.mkdir,
      run: async () => {
        await mkdir(workspacesDir(dataDir), { recursive: true, mode: 0o711 });
        await chmod(workspacesDir(dataDir), 0o711);
        await mkdir(paths.dir, { mode: 0o700 });
      },
      undo: () => rm(paths.dir, { recursive: true, force: true }),
    },
    {
      name: WS_IMAGE_STEP.upper,
      run: () => makeUpperImage(paths.upperImage, o.sizeMib),
    },
    {
      name: WS_IMAGE_STEP.snapshot,
      run: async (_ctx, signal) => {
        // No xattrs: a project's own user.overlay.* attributes must not steer the guest's overlay.
        const uid = String(o.guestUid);
        await run('mksquashfs', [o.projectDir, paths.lowerImage, '-noappend', '-no-xattrs', '-comp', 'lz4', '-force-uid', uid, '-force-gid', uid, '-quiet', '-no-progress'], {
          signal,
          maxBuffer: 16 << 20,
        });
      },
    },
  ];
  await runSteps(steps, paths, new CleanupStack(), {
    signal: o.signal,
    explain: (e, step) => new KilnError('INTERNAL', `cannot prepare workspace ${o.id} (${step}): ${e instanceof Error ? e.message : String(e)}`, { cause: e }),
  });
  return paths;
}

/**
 * Mounts a microVM workspace's upper image on the host (at `<dir>/mnt`, like a namespace
 * workspace's) for a review while no VM runs on it; `guestUid` owns upper/ and work/ if no VM
 * made them yet. Never while a VM has the image: the qemu backend refuses to boot on an image a
 * loop device holds (imageInUse), and QEMU's own image lock keeps a second VM off it.
 */
export async function mountImageUpper(host: WorkspaceHost, id: string, guestUid: number): Promise<WorkspacePaths> {
  const paths = workspacePaths(host.dataDir, id);
  await mkdir(paths.mntDir, { recursive: true, mode: 0o700 });
  if (!(await imageInUse(paths.image))) await run(host.agentPath, ['host', 'ws-mount', paths.image, paths.mntDir, String(guestUid)]);
  return paths;
}

/** Undoes mountImageUpper (the image can go to a VM again); idempotent. */
export async function unmountImageUpper(dataDir: string, id: string): Promise<void> {
  await releaseMounts(workspacePaths(dataDir, id));
}

/** Whether a loop device is backed by the image (then it is, or was, mounted on the host). */
export async function imageInUse(image: string): Promise<boolean> {
  for (const dev of await readdir('/sys/block').catch(() => [] as string[])) {
    if (!dev.startsWith('loop')) continue;
    const backing = await readFile(`/sys/block/${dev}/loop/backing_file`, 'utf8').catch(() => '');
    if (backing.trim() === image) return true;
  }
  return false;
}
