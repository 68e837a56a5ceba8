/**
 * Snapshot templates: one per (pack hash, vCPUs, memory, kernel hash, boot args, drive limiter,
 * warm-up). A template is a booted, agent-ready VM, warmed up with its pack's command
 * (core/warmup.ts), paused and fully snapshotted (vmstate + memory file);
 * clones restore it with /snapshot/load. Files of a template never change while it exists (a new
 * key gets a new directory), and concurrent requests for the same key share one build.
 */
import { createHash, randomBytes } from 'node:crypto';
import { chmod, chown, mkdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export interface TemplateKeyInput {
  packHash: string;
  vcpus: number;
  memoryMib: number;
  kernelHash: string;
  bootArgs: string;
  driveRateLimiter?: unknown;
  firecrackerVersion?: string;
  /** What the template runs before its snapshot (its page cache is part of the snapshot). */
  warmup?: unknown;
  /** kiln's NIC (a clone must have the template's devices). */
  nic?: boolean;
}

export function templateKey(i: TemplateKeyInput): string {
  const h = createHash('sha256');
  h.update(
    JSON.stringify(['kiln-fc-template-2', i.packHash, i.vcpus, i.memoryMib, i.kernelHash, i.bootArgs, i.driveRateLimiter ?? null, i.firecrackerVersion ?? '', i.warmup ?? null, i.nic === true]),
  );
  return h.digest('hex').slice(0, 24);
}

export interface TemplateFiles {
  key: string;
  vmstatePath: string;
  memoryPath: string;
}

/** Produces a snapshot into the two host paths it is given. */
export type TemplateBuilder = (out: { vmstatePath: string; memoryPath: string }, key: string) => Promise<void>;

export class TemplateStore {
  private readonly building = new Map<string, Promise<TemplateFiles>>();

  constructor(readonly dir: string) {}

  async get(key: string, build: TemplateBuilder): Promise<TemplateFiles> {
    const ready = this.files(key);
    if (
      await stat(join(this.dir, key, 'complete')).then(
        () => true,
        () => false,
      )
    )
      return ready;
    let p = this.building.get(key);
    if (!p) {
      p = this.build(key, build).finally(() => this.building.delete(key));
      this.building.set(key, p);
    }
    return p;
  }

  private files(key: string): TemplateFiles {
    return { key, vmstatePath: join(this.dir, key, 'vmstate'), memoryPath: join(this.dir, key, 'memory') };
  }

  private async build(key: string, build: TemplateBuilder): Promise<TemplateFiles> {
    const tmp = join(this.dir, `.tmp-${key}-${randomBytes(4).toString('hex')}`);
    await mkdir(tmp, { recursive: true, mode: 0o755 });
    try {
      const out = { vmstatePath: join(tmp, 'vmstate'), memoryPath: join(tmp, 'memory') };
      await build(out, key);
      // Jailed clones run under other uids: they only need to read (Firecracker maps memory privately).
      // The template VM's uid (which wrote them) goes to other VMs later: the files become root's.
      for (const p of [out.vmstatePath, out.memoryPath]) {
        if (process.getuid?.() === 0) await chown(p, 0, 0);
        await chmod(p, 0o644);
      }
      await writeFile(join(tmp, 'complete'), `${new Date().toISOString()}\n`);
      await rm(join(this.dir, key), { recursive: true, force: true });
      await rename(tmp, join(this.dir, key));
      return this.files(key);
    } catch (e) {
      await rm(tmp, { recursive: true, force: true });
      throw e;
    }
  }

  /** Drops every template (service shutdown, or a kernel/pack change made them useless). */
  async clear(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true });
  }
}
