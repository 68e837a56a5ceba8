/**
 * Read-only loop mounts of pack squashfs images, shared by every sandbox of that image. Mounted on
 * first use, kept while the service runs, unmounted on close; the start-up scan unmounts leftovers.
 */
import { execFile } from 'node:child_process';
import { mkdir, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { PackImage } from '../../core/backend.js';
import { mountsUnder } from '../../images/fsutil.js';

const run = promisify(execFile);

export class ImageMounts {
  private readonly mounted = new Map<string, Promise<string>>();

  constructor(private readonly dir: string) {}

  /** The mount point of the pack's image, mounting it once. */
  acquire(pack: PackImage): Promise<string> {
    const key = `${pack.name}-${pack.hash}`;
    let p = this.mounted.get(key);
    if (!p) {
      p = this.mount(pack.imagePath, join(this.dir, key));
      this.mounted.set(key, p);
      p.catch(() => this.mounted.delete(key));
    }
    return p;
  }

  private async mount(image: string, target: string): Promise<string> {
    await mkdir(target, { recursive: true });
    if (!(await isMountPoint(target))) {
      await run('mount', ['-t', 'squashfs', '-o', 'loop,ro,nodev,nosuid', image, target]);
    }
    return target;
  }

  async closeAll(): Promise<void> {
    const targets = await Promise.allSettled(this.mounted.values());
    this.mounted.clear();
    for (const t of targets) if (t.status === 'fulfilled') await unmount(t.value);
  }

  /** Unmounts every image mount under the folder but those in use: a previous service instance's leftovers. */
  async scan(): Promise<string[]> {
    const removed: string[] = [];
    for (const name of await readdir(this.dir).catch(() => [] as string[])) {
      if (this.mounted.has(name)) continue; // acquired by a reattached sandbox
      const target = join(this.dir, name);
      if (await isMountPoint(target)) {
        await unmount(target);
        removed.push(`mount ${target}`);
      } else {
        await rm(target, { recursive: true, force: true });
      }
    }
    return removed;
  }
}

async function unmount(target: string): Promise<void> {
  // Lazy detach: sandboxes of an older service generation may still hold it; it goes when they do.
  await run('umount', ['-l', target]).catch(() => undefined);
  await rm(target, { recursive: true, force: true }).catch(() => undefined);
}

async function isMountPoint(path: string): Promise<boolean> {
  return (await mountsUnder(path)).includes(path);
}
