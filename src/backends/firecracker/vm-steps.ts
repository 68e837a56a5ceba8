/**
 * The steps of one microVM's life, as data: prepare (dirs, links, netns, process, API socket,
 * logger), cold boot (machine-config … InstanceStart), restore (snapshot load + agent sync) and the
 * agent handshake. VM paths are relative to Firecracker's working directory (or absolute inside the
 * jailer's chroot), so a snapshot taken in one directory restores in another: the vsock socket
 * `run/v.sock` of a clone lands in the clone's own directory.
 */
import { chmod, chown, copyFile, link, mkdir, rm, symlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { AgentClient } from '../../protocol/agent-client.js';
import { FirecrackerApi } from './api-client.js';
import type { Drive, MachineConfiguration, NetworkInterface, RateLimiter } from './api-types.js';
import type { BootStep } from './boot-steps.js';
import { createNetns, deleteNetns, jailerArgv, type JailerSettings } from './jailer.js';
import { stopVmm, type Launcher, type VmmProcess } from './process.js';
import type { VmmConfinement } from './confine.js';
import { connectAgent } from './agent-link.js';

/** Names of files inside a VM's directory (relative to Firecracker's cwd / the chroot root). */
export const VM_FILES = {
  apiSocket: 'api.sock',
  vsock: 'run/v.sock',
  kernel: 'vmlinux',
  initrd: 'initrd.cpio',
  rootfs: 'rootfs.img',
  log: 'firecracker.log',
  vmstate: 'snapshot/vmstate',
  memory: 'snapshot/memory',
  pid: 'kiln.pid',
} as const;

export const AGENT_GUEST_CID = 3;

export interface VmSpec {
  id: string;
  /** Host directory that Firecracker sees as its cwd (the chroot root when jailed). */
  dir: string;
  firecrackerPath: string;
  launcher: Launcher;
  jail?: { settings: JailerSettings; uid: number; netnsName?: string };
  /** Without the jailer: kiln's own uid, cgroup and namespaces (confine.ts). */
  confine?: VmmConfinement;
  vcpus: number;
  memoryMib: number;
  kernelPath: string;
  initrdPath: string;
  bootArgs: string;
  rootfsPath: string;
  driveRateLimiter?: RateLimiter;
  network?: NetworkInterface;
  /** Snapshot files to restore from (clone); absent for a cold boot. */
  snapshot?: { vmstatePath: string; memoryPath: string };
  apiTimeoutMs: number;
  readyTimeoutMs: number;
  /** Guest time for Ctrl+Alt+Del on destroy. */
  shutdownGraceMs: number;
}

/** Mutable state the steps fill in; the sandbox takes it over after boot. */
export class VmContext {
  readonly api: FirecrackerApi;
  proc: VmmProcess | undefined;
  agent: AgentClient | undefined;
  /** Set once the VM booted: from then on destroy is graceful (Ctrl+Alt+Del first). */
  booted = false;
  timings: Record<string, number> = {};

  constructor(readonly spec: VmSpec) {
    this.api = new FirecrackerApi({ socketPath: this.host(VM_FILES.apiSocket), requestTimeoutMs: spec.apiTimeoutMs });
  }

  /** Host path of a file in the VM's directory. */
  host(rel: string): string {
    return join(this.spec.dir, rel);
  }

  /** The same file as Firecracker names it: absolute inside a chroot, else relative to its cwd. */
  vm(rel: string): string {
    return this.spec.jail ? `/${rel}` : rel;
  }

  alive(): boolean {
    return this.proc?.alive() ?? false;
  }

  consoleTail(lines = 200): string {
    const text = this.proc?.console.text(lines) ?? '';
    return text ? `last ${Math.min(lines, text.split('\n').length)} console lines:\n${text}` : '';
  }
}

type Step = BootStep<VmContext>;

export function prepareSteps(spec: VmSpec): Step[] {
  const steps: Step[] = [
    {
      name: 'fc.makeVmDir',
      run: async (ctx) => {
        await mkdir(dirname(ctx.host(VM_FILES.vsock)), { recursive: true, mode: 0o750 });
        await mkdir(dirname(ctx.host(VM_FILES.vmstate)), { recursive: true, mode: 0o750 });
        await writeFile(ctx.host(VM_FILES.log), '', { mode: 0o640 });
        if (spec.jail) await chownTree(ctx, spec.jail.uid, spec.jail.settings.gid);
        else if (spec.confine) await chownTree(ctx, spec.confine.uid, spec.confine.gid);
      },
      undo: (ctx) => rm(ctx.spec.jail ? dirname(ctx.spec.dir) : ctx.spec.dir, { recursive: true, force: true }),
    },
    {
      name: 'fc.linkImages',
      run: async (ctx) => {
        const files: Array<[string, string]> = [[spec.rootfsPath, VM_FILES.rootfs]];
        if (!spec.snapshot) files.push([spec.kernelPath, VM_FILES.kernel], [spec.initrdPath, VM_FILES.initrd]);
        else files.push([spec.snapshot.vmstatePath, VM_FILES.vmstate], [spec.snapshot.memoryPath, VM_FILES.memory]);
        for (const [from, to] of files) await placeFile(from, ctx.host(to), !!spec.jail);
      },
    },
  ];
  if (spec.jail?.netnsName) {
    const name = spec.jail.netnsName;
    steps.push({ name: 'fc.createNetns', run: async () => { await createNetns(name); }, undo: () => deleteNetns(name) });
  }
  steps.push(
    {
      name: 'fc.spawn',
      run: async (ctx) => {
        const j = spec.jail;
        const argv = j
          ? jailerArgv(j.settings, {
            id: spec.id, firecrackerPath: spec.firecrackerPath, uid: j.uid, gid: j.settings.gid,
            limits: { vcpus: spec.vcpus, memoryMib: spec.memoryMib },
            netnsPath: j.netnsName ? `/var/run/netns/${j.netnsName}` : undefined,
            apiSocketInJail: ctx.vm(VM_FILES.apiSocket),
          })
          : ['--api-sock', ctx.host(VM_FILES.apiSocket), '--id', spec.id];
        ctx.proc = await spec.launcher({ binary: j ? j.settings.jailerPath : spec.firecrackerPath, argv, cwd: spec.dir, apiSocketPath: ctx.host(VM_FILES.apiSocket), confine: j ? undefined : spec.confine });
        if (ctx.proc.pid) await writeFile(ctx.host(VM_FILES.pid), `${ctx.proc.pid}\n`);
      },
      undo: async (ctx) => {
        if (ctx.proc) await stopVmm(ctx.proc, ctx.booted ? ctx.api : undefined, { gracefulMs: ctx.booted ? spec.shutdownGraceMs : 0 });
      },
    },
    {
      name: 'fc.waitApiSocket',
      run: async (ctx, signal) => { await ctx.api.waitReady(spec.apiTimeoutMs, { signal, isAlive: () => ctx.alive() }); },
    },
    { name: 'fc.putLogger', run: (ctx, signal) => ctx.api.putLogger({ log_path: ctx.vm(VM_FILES.log), level: 'Warning', show_level: true }, { signal }) },
  );
  return steps;
}

export function coldBootSteps(spec: VmSpec): Step[] {
  const machine: MachineConfiguration = { vcpu_count: spec.vcpus, mem_size_mib: spec.memoryMib, smt: false, track_dirty_pages: false };
  const rootfs: Drive = {
    drive_id: 'rootfs',
    // The initramfs (kiln-agent --init) mounts the squashfs itself as the overlay's lower layer.
    is_root_device: false,
    is_read_only: true,
    path_on_host: VM_FILES.rootfs,
    ...(spec.driveRateLimiter ? { rate_limiter: spec.driveRateLimiter } : {}),
  };
  const steps: Step[] = [
    { name: 'fc.putMachineConfig', run: (ctx, signal) => ctx.api.putMachineConfig(machine, { signal }) },
    {
      name: 'fc.putBootSource',
      run: (ctx, signal) => ctx.api.putBootSource({ kernel_image_path: ctx.vm(VM_FILES.kernel), initrd_path: ctx.vm(VM_FILES.initrd), boot_args: spec.bootArgs }, { signal }),
    },
    { name: 'fc.putDrive(rootfs)', run: (ctx, signal) => ctx.api.putDrive({ ...rootfs, path_on_host: ctx.vm(VM_FILES.rootfs) }, { signal }) },
    { name: 'fc.putVsock', run: (ctx, signal) => ctx.api.putVsock({ guest_cid: AGENT_GUEST_CID, uds_path: ctx.vm(VM_FILES.vsock) }, { signal }) },
    { name: 'fc.putEntropy', run: (ctx, signal) => ctx.api.putEntropy({}, { signal }) },
  ];
  if (spec.network) {
    const nic = spec.network;
    steps.push({ name: `fc.putNetworkInterface(${nic.iface_id})`, run: (ctx, signal) => ctx.api.putNetworkInterface(nic, { signal }) });
  }
  steps.push({
    name: 'fc.instanceStart',
    run: async (ctx, signal) => {
      await ctx.api.instanceStart({ signal });
      ctx.booted = true;
    },
  });
  return steps;
}

export function restoreSteps(): Step[] {
  return [{
    name: 'fc.loadSnapshot',
    run: async (ctx, signal) => {
      await ctx.api.loadSnapshot({
        snapshot_path: ctx.vm(VM_FILES.vmstate),
        mem_backend: { backend_type: 'File', backend_path: ctx.vm(VM_FILES.memory) },
        resume_vm: true,
      }, { signal });
      ctx.booted = true;
    },
  }];
}

export function agentSteps(spec: VmSpec, restored: boolean): Step[] {
  return [{
    name: 'kiln.agentHandshake',
    run: async (ctx, signal) => {
      ctx.agent = await connectAgent({
        udsPath: ctx.host(VM_FILES.vsock), timeoutMs: spec.readyTimeoutMs, signal, isAlive: () => ctx.alive(),
        // Clones share the template's RNG state and a stale clock: the agent fixes both before
        // it answers the hello, so before any user code.
        sync: restored,
      });
    },
    undo: (ctx) => ctx.agent?.close(),
  }];
}

/** Symlinks when Firecracker runs unjailed; hard links (or copies) into a chroot. */
async function placeFile(from: string, to: string, jailed: boolean): Promise<void> {
  await mkdir(dirname(to), { recursive: true });
  if (!jailed) return symlink(from, to);
  await link(from, to).catch(async (e: NodeJS.ErrnoException) => {
    if (e.code !== 'EXDEV' && e.code !== 'EPERM') throw e;
    await copyFile(from, to);
    await chmod(to, 0o644);
  });
}

async function chownTree(ctx: VmContext, uid: number, gid: number): Promise<void> {
  for (const rel of ['.', 'run', 'snapshot', VM_FILES.log]) await chown(ctx.host(rel), uid, gid);
}
