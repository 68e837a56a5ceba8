/**
 * The steps of one microVM's life, as data run by core/steps.ts: prepare (dirs, links, netns, process, API socket,
 * logger), cold boot (machine-config … InstanceStart), restore (snapshot load + agent sync) and the
 * agent handshake. VM paths are relative to Firecracker's working directory (or absolute inside the
 * jailer's chroot), so a snapshot taken in one directory restores in another: the vsock socket
 * `run/v.sock` of a clone lands in the clone's own directory.
 */
import { chmod, chown, copyFile, link, mkdir, rm, symlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { KilnError, toKilnError } from '../../core/errors.js';
import { createTap, deleteTap, INITIAL_GUEST_MAC, newTapName } from '../../core/host-taps.js';
import { type Step, StepTimings } from '../../core/steps.js';
import type { UidPool } from '../../core/uids.js';
import type { AgentClient } from '../../protocol/agent-client.js';
import { connectAgent } from './agent-link.js';
import { FirecrackerApi } from './api-client.js';
import type { Drive, MachineConfiguration, NetworkInterface, RateLimiter } from './api-types.js';
import type { VmmConfinement } from './confine.js';
import { type JailerSettings, jailerArgv } from './jailer.js';
import { bridgeTap, createNetns, deleteNetns, netnsPath } from './netns.js';
import { type Launcher, stopVmm, type VmmProcess } from './process.js';

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
/** The iface_id of kiln's NIC (the guest sees eth0). */
export const KILN_IFACE = 'eth0';

/** Step names: traces, BOOT_FAILED errors (`details.step`) and `details.steps` timings use them. */
export const FC_STEP = {
  takeUid: 'kiln.takeUid',
  confine: 'kiln.confine',
  makeVmDir: 'fc.makeVmDir',
  linkImages: 'fc.linkImages',
  createNetns: 'fc.createNetns',
  createTap: 'kiln.createTap',
  spawn: 'fc.spawn',
  waitApiSocket: 'fc.waitApiSocket',
  putLogger: 'fc.putLogger',
  putMachineConfig: 'fc.putMachineConfig',
  putBootSource: 'fc.putBootSource',
  putRootDrive: 'fc.putDrive(rootfs)',
  putVsock: 'fc.putVsock',
  putEntropy: 'fc.putEntropy',
  putNetworkInterface: 'fc.putNetworkInterface',
  instanceStart: 'fc.instanceStart',
  loadSnapshot: 'fc.loadSnapshot',
  agentHandshake: 'kiln.agentHandshake',
} as const;

export interface VmSpec {
  id: string;
  /** Host directory that Firecracker sees as its cwd (the chroot root when jailed). */
  dir: string;
  firecrackerPath: string;
  launcher: Launcher;
  /** Under the jailer: its settings, and the pool the VM's own uid comes from. */
  jail?: { settings: JailerSettings; uids: UidPool };
  /**
   * The VM's own network namespace, made and named by kiln (netns.ts): Firecracker runs in it and
   * kiln's TAP is made there, on a bridge the veth of connectNetwork joins. Absent: the host's.
   */
  netns?: string;
  /** Without the jailer: kiln's own uid, cgroup and namespaces (confine.ts), acquired by a step. */
  confine?: () => Promise<VmmConfinement>;
  vcpus: number;
  memoryMib: number;
  kernelPath: string;
  initrdPath: string;
  bootArgs: string;
  rootfsPath: string;
  driveRateLimiter?: RateLimiter;
  network?: NetworkInterface;
  /**
   * kiln's own NIC (the backend's `network` option): a TAP per VM made by a step (in `netns`, on
   * its bridge, when the VM has its own namespace), `eth0` with INITIAL_GUEST_MAC, joined to kiln's
   * bridge and configured by connectNetwork; a clone's TAP replaces the template's through
   * `network_overrides`.
   */
  kilnNic?: boolean;
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
  /** The jailed VM's uid (FC_STEP.takeUid). */
  uid: number | undefined;
  /** The unjailed VM's confinement (FC_STEP.confine). */
  confine: VmmConfinement | undefined;
  /** The current host name of kiln's TAP (FC_STEP.createTap; renamed by connectNetwork). */
  tap: string | undefined;
  /** Set once the VM booted: from then on destroy is graceful (Ctrl+Alt+Del first). */
  booted = false;
  readonly timings = new StepTimings();

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

type VmStep = Step<VmContext>;

/** The VM's own host uid (and, unjailed, cgroup): released after everything else is undone. */
export function identitySteps(spec: VmSpec): VmStep[] {
  const { jail, confine } = spec;
  if (jail) {
    return [
      {
        name: FC_STEP.takeUid,
        run: (ctx) => {
          ctx.uid = jail.uids.take();
        },
        undo: (ctx) => {
          if (ctx.uid !== undefined) jail.uids.release(ctx.uid);
        },
      },
    ];
  }
  if (!confine) return [];
  return [
    {
      name: FC_STEP.confine,
      run: async (ctx) => {
        ctx.confine = await confine();
      },
      undo: (ctx) => ctx.confine?.release(),
    },
  ];
}

export function prepareSteps(spec: VmSpec): VmStep[] {
  const steps: VmStep[] = [
    {
      name: FC_STEP.makeVmDir,
      run: async (ctx) => {
        await mkdir(dirname(ctx.host(VM_FILES.vsock)), { recursive: true, mode: 0o750 });
        await mkdir(dirname(ctx.host(VM_FILES.vmstate)), { recursive: true, mode: 0o750 });
        await writeFile(ctx.host(VM_FILES.log), '', { mode: 0o640 });
        if (spec.jail) await chownTree(ctx, ctx.uid!, spec.jail.settings.gid);
        else if (ctx.confine) await chownTree(ctx, ctx.confine.uid, ctx.confine.gid);
      },
      undo: (ctx) => rm(ctx.spec.jail ? dirname(ctx.spec.dir) : ctx.spec.dir, { recursive: true, force: true }),
    },
    {
      name: FC_STEP.linkImages,
      run: async (ctx) => {
        const files: Array<[string, string]> = [[spec.rootfsPath, VM_FILES.rootfs]];
        if (!spec.snapshot) files.push([spec.kernelPath, VM_FILES.kernel], [spec.initrdPath, VM_FILES.initrd]);
        else files.push([spec.snapshot.vmstatePath, VM_FILES.vmstate], [spec.snapshot.memoryPath, VM_FILES.memory]);
        for (const [from, to] of files) await placeFile(from, ctx.host(to), !!spec.jail);
      },
    },
  ];
  if (spec.netns) {
    const name = spec.netns;
    steps.push({
      name: FC_STEP.createNetns,
      run: async () => {
        await createNetns(name);
      },
      undo: () => deleteNetns(name),
    });
  }
  if (spec.kilnNic) {
    const netns = spec.netns;
    steps.push({
      name: FC_STEP.createTap,
      run: async (ctx) => {
        const owner = spec.jail ? { uid: ctx.uid!, gid: spec.jail.settings.gid } : ctx.confine ? { uid: ctx.confine.uid, gid: ctx.confine.gid } : { uid: 0, gid: 0 };
        const name = newTapName();
        await createTap(name, { ...owner, netns });
        ctx.tap = name;
        if (netns) await bridgeTap(netns, name);
      },
      // After Firecracker stopped (the spawn step is undone first).
      undo: (ctx) => (ctx.tap ? deleteTap(ctx.tap, netns) : undefined),
    });
  }
  steps.push(
    {
      name: FC_STEP.spawn,
      run: async (ctx) => {
        const j = spec.jail;
        const argv = j
          ? jailerArgv(j.settings, {
              id: spec.id,
              firecrackerPath: spec.firecrackerPath,
              uid: ctx.uid!,
              gid: j.settings.gid,
              limits: { vcpus: spec.vcpus, memoryMib: spec.memoryMib },
              netnsPath: spec.netns ? netnsPath(spec.netns) : undefined,
              apiSocketInJail: ctx.vm(VM_FILES.apiSocket),
            })
          : ['--api-sock', ctx.host(VM_FILES.apiSocket), '--id', spec.id];
        ctx.proc = await spec.launcher({
          binary: j ? j.settings.jailerPath : spec.firecrackerPath,
          argv,
          cwd: spec.dir,
          apiSocketPath: ctx.host(VM_FILES.apiSocket),
          confine: j ? undefined : ctx.confine,
          ...(!j && spec.netns ? { netnsPath: netnsPath(spec.netns) } : {}),
        });
        if (ctx.proc.pid) await writeFile(ctx.host(VM_FILES.pid), `${ctx.proc.pid}\n`);
      },
      undo: async (ctx) => {
        if (ctx.proc) await stopVmm(ctx.proc, ctx.booted ? ctx.api : undefined, { gracefulMs: ctx.booted ? spec.shutdownGraceMs : 0 });
      },
    },
    {
      name: FC_STEP.waitApiSocket,
      run: async (ctx, signal) => {
        await ctx.api.waitReady(spec.apiTimeoutMs, { signal, isAlive: () => ctx.alive() });
      },
    },
    { name: FC_STEP.putLogger, run: (ctx, signal) => ctx.api.putLogger({ log_path: ctx.vm(VM_FILES.log), level: 'Warning', show_level: true }, { signal }) },
  );
  return steps;
}

export function coldBootSteps(spec: VmSpec): VmStep[] {
  const machine: MachineConfiguration = { vcpu_count: spec.vcpus, mem_size_mib: spec.memoryMib, smt: false, track_dirty_pages: false };
  const rootfs: Drive = {
    drive_id: 'rootfs',
    // The initramfs (kiln-agent --init) mounts the squashfs itself as the overlay's lower layer.
    is_root_device: false,
    is_read_only: true,
    path_on_host: VM_FILES.rootfs,
    ...(spec.driveRateLimiter ? { rate_limiter: spec.driveRateLimiter } : {}),
  };
  const steps: VmStep[] = [
    { name: FC_STEP.putMachineConfig, run: (ctx, signal) => ctx.api.putMachineConfig(machine, { signal }) },
    {
      name: FC_STEP.putBootSource,
      run: (ctx, signal) => ctx.api.putBootSource({ kernel_image_path: ctx.vm(VM_FILES.kernel), initrd_path: ctx.vm(VM_FILES.initrd), boot_args: spec.bootArgs }, { signal }),
    },
    { name: FC_STEP.putRootDrive, run: (ctx, signal) => ctx.api.putDrive({ ...rootfs, path_on_host: ctx.vm(VM_FILES.rootfs) }, { signal }) },
    { name: FC_STEP.putVsock, run: (ctx, signal) => ctx.api.putVsock({ guest_cid: AGENT_GUEST_CID, uds_path: ctx.vm(VM_FILES.vsock) }, { signal }) },
    { name: FC_STEP.putEntropy, run: (ctx, signal) => ctx.api.putEntropy({}, { signal }) },
  ];
  if (spec.network) {
    const nic = spec.network;
    steps.push({ name: `${FC_STEP.putNetworkInterface}(${nic.iface_id})`, run: (ctx, signal) => ctx.api.putNetworkInterface(nic, { signal }) });
  } else if (spec.kilnNic) {
    steps.push({
      name: `${FC_STEP.putNetworkInterface}(${KILN_IFACE})`,
      run: (ctx, signal) => ctx.api.putNetworkInterface({ iface_id: KILN_IFACE, host_dev_name: ctx.tap!, guest_mac: INITIAL_GUEST_MAC }, { signal }),
    });
  }
  steps.push({
    name: FC_STEP.instanceStart,
    run: async (ctx, signal) => {
      await ctx.api.instanceStart({ signal });
      ctx.booted = true;
    },
  });
  return steps;
}

export function restoreSteps(): VmStep[] {
  return [
    {
      name: FC_STEP.loadSnapshot,
      run: async (ctx, signal) => {
        await ctx.api.loadSnapshot(
          {
            snapshot_path: ctx.vm(VM_FILES.vmstate),
            mem_backend: { backend_type: 'File', backend_path: ctx.vm(VM_FILES.memory) },
            resume_vm: true,
            ...(ctx.tap ? { network_overrides: [{ iface_id: KILN_IFACE, host_dev_name: ctx.tap }] } : {}),
          },
          { signal },
        );
        ctx.booted = true;
      },
    },
  ];
}

export function agentSteps(spec: VmSpec, restored: boolean): VmStep[] {
  return [
    {
      name: FC_STEP.agentHandshake,
      run: async (ctx, signal) => {
        ctx.agent = await connectAgent({
          udsPath: ctx.host(VM_FILES.vsock),
          timeoutMs: spec.readyTimeoutMs,
          signal,
          isAlive: () => ctx.alive(),
          // Clones share the template's RNG state and a stale clock: the agent fixes both before
          // it answers the hello, so before any user code.
          sync: restored,
        });
      },
      undo: (ctx) => ctx.agent?.close(),
    },
  ];
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

/**
 * The error a failed step becomes: BOOT_FAILED (or TIMEOUT when the create was cancelled or ran out
 * of time) naming the step, with `diagnostics` (the console tail) appended.
 */
export function bootStepError(name: string, e: unknown, signal: AbortSignal, diagnostics: () => string): KilnError {
  const base =
    signal.aborted && !(e instanceof KilnError)
      ? new KilnError('TIMEOUT', `microVM boot step ${name} was cancelled or ran out of time; raise readyTimeoutMs if the host is slow`, { cause: e })
      : toKilnError(e, 'BOOT_FAILED', `microVM boot step ${name} failed`);
  const extra = diagnostics();
  const message = base.message.startsWith('microVM boot step') ? base.message : `microVM boot step ${name} failed: ${base.message}`;
  return new KilnError(base.code, extra ? `${message}\n${extra}` : message, {
    cause: base,
    details: { ...(base.details ?? {}), step: name },
  });
}
