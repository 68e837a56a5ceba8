/**
 * The QEMU microVM backend: a separate guest kernel per sandbox, started as a copy-on-write clone
 * of a template VM (fast path) or cold-booted (fallback, and whenever kernel/boot args are
 * overridden).
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { stat } from 'node:fs/promises';
import { cpus, totalmem } from 'node:os';
import { normalize } from 'node:path';
import { promisify } from 'node:util';
import {
  availabilityFrom,
  type Backend,
  type BackendAvailability,
  type BackendCapabilities,
  type BackendSandbox,
  type CreateOptions,
  type HostCheck,
  type ReattachReport,
  type SandboxSpec,
  type ScanReport,
} from '../../core/backend.js';
import { CreatesInFlight } from '../../core/creates.js';
import { isKilnError, KilnError } from '../../core/errors.js';
import { removeLeftoverTaps } from '../../core/host-taps.js';
import { killLeftovers } from '../../core/kill-ladder.js';
import { roundMs } from '../../core/steps.js';
import { vmmCgroupName } from '../../core/vmm-identities.js';
import { templateWarmup } from '../../core/warmup.js';
import { buildVmArtifacts, findHostKernel, guestCmdline, type VmArtifacts } from '../../vmimage/index.js';
import { imageInUse } from '../../workspace/images.js';
import { type AccelMode, chooseAccel, hostTscKhz, qemuVersion } from './accel.js';
import { type JailOptions, VmmJails } from './jail.js';
import { type KeptVm, listKept, reattachVm, saveKept } from './kept.js';
import { STATE_FILE } from './machine-state.js';
import type { QemuLog } from './process.js';
import { type QemuMachineFacts, QemuSandbox } from './sandbox.js';
import { findOrphans, removeStale } from './scan.js';
import { SpareManager } from './spares.js';
import { type Template, TemplateManager, templateFilesPresent } from './templates.js';
import { launchVm, type RunningVm, type SpareVm } from './vm.js';

export interface QemuBackendOptions {
  /** Persistent data; the guest kernel + initramfs are cached under `<dataDir>/vm/`. */
  dataDir: string;
  /** Per-VM sockets and pid files go under `<runDir>/qemu/`. */
  runDir: string;
  /** The static kiln-agent binary (becomes /init of the initramfs). */
  agentPath: string;
  accel?: AccelMode;
  qemuBinary?: string;
  /** Template clones (default true); false always cold-boots. */
  templates?: boolean;
  /** tmpfs directory for template RAM files (default /dev/shm/kiln-qemu-<hash of runDir>). */
  shmDir?: string;
  /**
   * Sandbox QEMUs run under seccomp (`-sandbox`, no spawning, no privilege changes) and, when the
   * service is root, drop to this user after opening their devices (default "nobody"; null keeps
   * root). Set `confine: false` only to debug.
   */
  confine?: boolean;
  runAsUser?: string | null;
  /**
   * When the service is root (and `confine` is not false), each sandbox QEMU also gets its own
   * uid from a range, its own cgroup and its own namespaces with a root holding only its files
   * (jail.ts); `runAsUser` then does not apply. `false` turns this off. The uid range must not
   * overlap another service's on the same host.
   */
  jail?: false | Partial<JailOptions>;
  /**
   * QEMU processes kept started per live template (default 1; 0 disables), waiting for a clone's
   * state: a clone then skips QEMU's start-up (~30 ms). Each idle spare costs ~20-25 MB.
   */
  spares?: number;
  /**
   * Every VM gets a virtio-net NIC on a TAP of its own (core/host-taps.ts), down and on no bridge until the
   * network manager calls connectNetwork. Needs root (CAP_NET_ADMIN); default: on when root.
   */
  network?: boolean;
  /** Budget of a template boot (default 60 s). */
  templateReadyTimeoutMs?: number;
  log?: QemuLog;
}

interface QemuBackendOptionsParsed {
  kernel?: string;
  bootArgs?: string;
}

const execFileAsync = promisify(execFile);
const EXEC_UID = 1000;
/** How long a workspace VM's destroy waits for the guest to sync its upper drive. */
const WORKSPACE_FLUSH_TIMEOUT_MS = 10_000;
const CLONE_TIMEOUT_MS = 15_000;
const KERNEL_DIR = '/boot/';
/**
 * The guest kernel keeps ~35 MiB for itself (a 64 MiB Debian guest panics at boot), plus the
 * agent and page cache: the VM gets this on top of the sandbox's memoryMib, so user code has
 * roughly what was asked for. Untouched guest RAM costs the host nothing.
 */
const GUEST_OVERHEAD_MIB = 64;

export function vmMemoryMib(memoryMib: number): number {
  return memoryMib + GUEST_OVERHEAD_MIB;
}

export function createQemuBackend(options: QemuBackendOptions): Backend {
  return new QemuBackend(options);
}

class QemuBackend implements Backend {
  readonly name = 'qemu' as const;
  private readonly binary: string;
  private readonly qemuRunDir: string;
  private readonly templates: TemplateManager;
  private readonly spares: SpareManager;
  private readonly live = new Map<string, QemuSandbox>();
  /** close() aborts creates under way and waits until they have unwound. */
  private readonly creates = new CreatesInFlight('QEMU');
  private artifacts: { key: string; value: Promise<VmArtifacts> } | undefined;
  private readonly confine: { runAs?: string } | undefined;
  private readonly jails: VmmJails | undefined;
  private readonly nic: boolean;

  constructor(private readonly o: QemuBackendOptions) {
    this.nic = o.network ?? process.getuid?.() === 0;
    this.binary = o.qemuBinary ?? 'qemu-system-x86_64';
    this.qemuRunDir = `${o.runDir}/qemu`;
    const runAs = o.runAsUser === undefined ? (process.getuid?.() === 0 ? 'nobody' : undefined) : (o.runAsUser ?? undefined);
    this.confine = o.confine === false ? undefined : { runAs };
    if (this.confine && o.jail !== false && process.getuid?.() === 0) {
      // One cgroup parent per run dir, so a second instance (tests) never scans the first's VMMs.
      const cgroupName = o.jail?.cgroupName ?? vmmCgroupName('kiln-vmm', o.runDir);
      this.jails = new VmmJails({ ...o.jail, cgroupName }, o.log);
    }
    const shmDir = o.shmDir ?? `/dev/shm/kiln-qemu-${createHash('sha256').update(o.runDir).digest('hex').slice(0, 10)}`;
    this.spares = new SpareManager({
      count: o.spares ?? 1,
      dir: `${this.qemuRunDir}/spares`,
      binary: this.binary,
      confine: this.confine,
      jails: this.jails,
      startTimeoutMs: 10_000,
      log: o.log,
    });
    this.templates = new TemplateManager({
      stateDir: `${this.qemuRunDir}/templates`,
      memDir: shmDir,
      readyTimeoutMs: o.templateReadyTimeoutMs ?? 60_000,
      log: o.log,
      onDrop: (t) => this.spares.drop(t),
    });
  }

  async probe(): Promise<BackendAvailability> {
    const capabilities: BackendCapabilities = {
      snapshots: this.o.templates !== false,
      separateKernel: true,
      multipleUids: true,
      workspace: 'images',
      maxCpus: cpus().length,
      maxMemoryMib: Math.floor(totalmem() / 2 ** 20 / 2),
    };
    const checks: HostCheck[] = [];
    const add = (name: string, ok: boolean, detail: string): void => {
      checks.push({ name, ok, detail });
    };
    const version = await qemuVersion(this.binary).catch(() => undefined);
    add('QEMU', !!version, version ?? `${this.binary} was not found: install the qemu-system-x86 package`);
    const kernel = await findHostKernel().catch((e: Error) => e);
    add('guest kernel', !(kernel instanceof Error), kernel instanceof Error ? kernel.message : `host kernel ${kernel.version} (its modules go into the guest initramfs)`);
    const agent = await stat(this.o.agentPath).then(
      () => true,
      () => false,
    );
    add('agent binary', agent, agent ? this.o.agentPath : `the kiln-agent binary ${this.o.agentPath} is missing: run "bash agent/build.sh"`);
    if (this.jails) {
      const bwrap = await execFileAsync(this.jails.bwrapPath, ['--version']).then(
        () => true,
        () => false,
      );
      add(
        'QEMU jail',
        bwrap,
        bwrap
          ? `${this.jails.bwrapPath}: each QEMU runs under its own uid and namespaces`
          : `${this.jails.bwrapPath} was not found: install the bubblewrap package (it confines each QEMU), or set the qemu backend's jail option to false`,
      );
      const cgroupProblem = this.jails.problem();
      add('QEMU cgroups', !cgroupProblem, cgroupProblem ? `QEMU cgroups cannot be made: ${cgroupProblem} (or set the qemu backend's jail option to false)` : `cgroup ${this.jails.cgroupName}`);
    }
    if (checks.some((c) => !c.ok)) return availabilityFrom('qemu', checks, capabilities);
    const accel = await chooseAccel(this.o.accel ?? 'auto');
    add('accelerator', true, `${accel.accel}: ${accel.reason}`);
    const jail = this.jails ? `uid, cgroup ${this.jails.cgroupName}, namespaces` : this.confine?.runAs ? `seccomp, runs as ${this.confine.runAs}` : this.confine ? 'seccomp' : 'none';
    return availabilityFrom('qemu', checks, capabilities, {
      qemuVersion: version,
      kernelVersion: (kernel as { version: string }).version,
      accel: accel.accel,
      accelReason: accel.reason,
      tscKhz: accel.accel === 'tcg' ? await hostTscKhz() : undefined,
      confinement: jail,
    });
  }

  create(spec: SandboxSpec, options: CreateOptions): Promise<BackendSandbox> {
    return this.creates.run(options, (o) => this.start(spec, o));
  }

  private async start(spec: SandboxSpec, options: CreateOptions): Promise<BackendSandbox> {
    if (spec.workspace && spec.workspace.kind !== 'images') throw new KilnError('UNSUPPORTED_OPTION', `the qemu backend takes an 'images' workspace, not '${spec.workspace.kind}'`);
    const workspace = spec.workspace?.kind === 'images' ? spec.workspace : undefined;
    // ext4 mounted twice (host loop mount and guest) corrupts it: a review mount must go first.
    if (workspace && (await imageInUse(workspace.upperImage)))
      throw new KilnError('SANDBOX_NOT_READY', "the workspace's upper image is mounted on the host (for a review); unmount it before starting a VM on it");
    if (!/^[A-Za-z0-9_-]{1,64}$/.test(spec.id)) throw new KilnError('INVALID_REQUEST', `sandbox id ${JSON.stringify(spec.id)} must be 1-64 letters, digits, "-" or "_"`);
    const overrides = parseBackendOptions(spec.backendOptions, [KERNEL_DIR, `${this.o.dataDir}/`]);
    if (
      !(await stat(spec.pack.imagePath).then(
        (s) => s.isFile(),
        () => false,
      ))
    ) {
      throw new KilnError('IMAGE_MISSING', `the image of pack "${spec.pack.name}" is not built yet; build the pack images first`);
    }
    const deadline = Date.now() + options.readyTimeoutMs;
    const artifacts = await this.vmArtifacts(options.signal);
    const accel = (await chooseAccel(this.o.accel ?? 'auto')).accel;
    const tscKhz = accel === 'tcg' ? await hostTscKhz() : undefined;
    const extra = [workspace ? `kiln.workspace=${workspace.gitWritable ? 'rw' : 'ro'}` : '', overrides.bootArgs ?? ''].filter(Boolean).join(' ');
    const cmdline = guestCmdline({ diskMib: spec.diskMib, tscKhz, execUid: EXEC_UID, extra: extra || undefined });
    const base = {
      binary: this.binary,
      id: spec.id,
      accel,
      cpus: spec.cpus,
      memoryMib: vmMemoryMib(spec.memoryMib),
      // The bzImage, not the ELF vmlinux: only its decompressor randomises the kernel's address
      // (KASLR). ~0.2 s more per cold boot; template clones share their template's layout.
      kernelPath: overrides.kernel ?? artifacts.bzImagePath,
      initrdPath: artifacts.initrdPath,
      cmdline,
      diskImage: spec.pack.imagePath,
      workspace: workspace && { lowerImage: workspace.lowerImage, upperImage: workspace.upperImage },
      dir: `${this.qemuRunDir}/vms/${spec.id}`,
      signal: options.signal,
      log: this.o.log,
      confine: this.confine,
      jails: this.jails,
      nic: this.nic,
    };

    let vm: RunningVm | undefined;
    let template: Template | undefined;
    // A workspace's drives are not in any template: such a VM always boots cold.
    if (this.o.templates !== false && overrides.kernel === undefined && overrides.bootArgs === undefined && !workspace) {
      template = await withDeadline(
        this.templates.get({
          packName: spec.pack.name,
          packHash: spec.pack.hash,
          imagePath: spec.pack.imagePath,
          cpus: spec.cpus,
          memoryMib: base.memoryMib,
          diskMib: spec.diskMib,
          kernelPath: base.kernelPath,
          initrdPath: base.initrdPath,
          artifactsHash: artifacts.hash,
          cmdline,
          accel,
          qemuVersion: await qemuVersion(this.binary),
          binary: this.binary,
          nic: this.nic,
          warmup: templateWarmup(spec.pack),
        }),
        deadline,
        'the template VM is still booting',
      );
      if (template && !(await templateFilesPresent(template))) {
        this.o.log?.('warn', 'template files vanished; dropping the template', { template: template.id });
        await this.templates.invalidate(template);
        template = undefined;
      }
      if (template) {
        let spare: SpareVm | undefined;
        try {
          const t0 = performance.now();
          spare = await this.spares.take(template);
          const spareWaitMs = roundMs(performance.now() - t0);
          // A clone is ready in ~0.1 s; one that is not within a few seconds is broken, and the
          // cold boot fallback needs the rest of the budget.
          const cloneBudgetMs = Math.min(remaining(deadline) / 2, CLONE_TIMEOUT_MS);
          try {
            vm = await launchVm({ ...base, restoreFrom: template.stateFile, memFile: { path: template.memFile, share: false }, readyTimeoutMs: cloneBudgetMs, spare });
          } finally {
            if (spare) this.spares.release(spare);
          }
          if (vm.spare) vm.steps = { spareWait: spareWaitMs, ...vm.steps };
        } catch (e) {
          if (options.signal?.aborted) throw e;
          this.o.log?.('warn', 'clone failed; dropping the template and cold-booting', { template: template.id, error: (e as Error).message });
          await this.templates.invalidate(template);
          template = undefined;
        }
      }
    }
    vm ??= await launchVm({ ...base, readyTimeoutMs: remaining(deadline) });
    if (template) this.spares.replenish(template);
    const facts: QemuMachineFacts = {
      cmdline,
      kernelPath: base.kernelPath,
      initrdPath: base.initrdPath,
      vmMemoryMib: base.memoryMib,
      cpus: spec.cpus,
      accel,
      ramBackend: template !== undefined,
      nic: this.nic,
      packHash: spec.pack.hash,
      qemuVersion: await qemuVersion(this.binary),
    };
    const timing = template ? { restoreMs: Math.round(vm.readyMs), cloneOf: template.id, ...(vm.spare ? { spare: vm.spare } : {}) } : { bootMs: Math.round(vm.readyMs) };
    return this.adopt(spec, vm, accel, base.memoryMib, timing, workspace ? undefined : facts);
  }

  /** Checks the start-up sync and wraps the VM as the sandbox; stops it on failure. */
  private async adopt(spec: SandboxSpec, vm: RunningVm, accel: string, vmMemoryMib: number, timing: Record<string, unknown>, facts: QemuMachineFacts | undefined): Promise<QemuSandbox> {
    try {
      // A clone shares its RNG state and a stale clock with the template and every sibling (a
      // restored pause: a clock behind by the pause): the handshake carried entropy and the time.
      const sync = vm.agent.hello.sync;
      if (!sync) throw new KilnError('BOOT_FAILED', 'the guest agent did not report its start-up sync; the sandbox was not started');
      if (!sync.reseeded || !sync.clockSet) throw new KilnError('BOOT_FAILED', `the guest agent could not ${sync.reseeded ? 'set the clock' : 'reseed its RNG'}; the sandbox was not started`);
    } catch (e) {
      await vm.cleanup.run().catch(() => undefined);
      throw isKilnError(e) && e.code === 'BOOT_FAILED' ? e : new KilnError('BOOT_FAILED', `the guest agent did not complete its start-up sync: ${(e as Error).message}`, { cause: e });
    }
    const jail = vm.jail ? { uid: vm.jail.uid, cgroup: `${this.jails!.cgroupName}/${vm.jail.name}` } : {};
    const details: Record<string, unknown> = { pid: vm.proc.pid, accel, vmMemoryMib, ...jail, ...(vm.tap ? { tap: vm.tap } : {}), ...timing, steps: vm.steps };
    const drives = spec.workspace?.kind === 'images' ? { lowerImage: spec.workspace.lowerImage, upperImage: spec.workspace.upperImage } : undefined;
    let record: KeptVm;
    try {
      // The record a later start reattaches the VM by (kept.ts), before anyone can use the sandbox.
      const start = await vm.proc.startTime();
      if (!start) throw new KilnError('BOOT_FAILED', 'the QEMU process ended right after its start');
      record = {
        id: spec.id,
        pid: vm.proc.pid,
        start,
        wrapperPids: vm.proc.pids.filter((p) => p !== vm.proc.pid),
        ...(vm.jail ? { jail: { uid: vm.jail.uid, name: vm.jail.name } } : {}),
        ...(vm.tap ? { tap: vm.tap } : {}),
        pack: { name: spec.pack.name, hash: spec.pack.hash, imagePath: spec.pack.imagePath },
        ...(drives ? { workspace: drives } : {}),
        ...(facts ? { facts } : {}),
        details,
      };
      await saveKept(vm.paths.dir, record);
    } catch (e) {
      await vm.cleanup.run().catch(() => undefined);
      throw isKilnError(e) ? e : new KilnError('BOOT_FAILED', `the VM's record for a restart of the service could not be written: ${(e as Error).message}`, { cause: e });
    }
    return this.wrap(record, vm, details);
  }

  /** The sandbox around a running (started or reattached) VM, registered as live. */
  private wrap(record: KeptVm, vm: RunningVm, details: Record<string, unknown>): QemuSandbox {
    const { id, facts } = record;
    // A workspace's upper is an ext4 drive the VM is killed under: flush it first (bounded: a hung
    // guest must not hold up the destroy).
    const flush = record.workspace ? () => vm.agent.workspaceFlush(AbortSignal.timeout(WORKSPACE_FLUSH_TIMEOUT_MS)) : undefined;
    // The record again with the details as they are now (a save, a network connected since: its TAP's new name).
    const persist = () => saveKept(vm.paths.dir, { ...record, ...(sandbox.tapName ? { tap: sandbox.tapName } : {}), details });
    const sandbox: QemuSandbox = new QemuSandbox(id, vm, details, () => this.live.delete(id), flush, facts && { facts, jailed: vm.jail !== undefined }, persist);
    this.live.set(id, sandbox);
    return sandbox;
  }

  /**
   * Takes over the VMs an earlier run of the service left running (their folders' records,
   * kept.ts); a record whose VM died, or does not answer, is lost, and what is left of it removed.
   */
  async reattach(): Promise<ReattachReport> {
    const vmsDir = `${this.qemuRunDir}/vms`;
    const { records, unreadable } = await listKept(vmsDir);
    const lost: ReattachReport['lost'] = unreadable.map((u) => ({ id: u.id, reason: `its record is unreadable (${u.error})` }));
    // Their folders go to the scan, which also kills a QEMU no record names.
    const alive: BackendSandbox[] = [];
    for (const r of records) {
      try {
        const vm = await reattachVm(r, `${vmsDir}/${r.id}`, this.jails);
        alive.push(this.wrap(r, vm, { ...r.details, reattachMs: vm.readyMs }));
      } catch (e) {
        lost.push({ id: r.id, reason: (e as Error).message });
      }
    }
    return { alive, lost };
  }

  /** Starts a VM from a pause's or a snapshot's saved state (machine-state.ts): its processes go on. */
  restoreMachine(spec: SandboxSpec, dir: string, machine: Record<string, unknown>, options: CreateOptions): Promise<BackendSandbox> {
    return this.creates.run(options, async (o) => {
      const f = machine as unknown as QemuMachineFacts;
      if (f.packHash !== spec.pack.hash) throw new KilnError('IMAGE_MISSING', `the image of pack "${spec.pack.name}" changed since the state was saved; it cannot be restored`);
      if (f.qemuVersion !== (await qemuVersion(this.binary))) throw new KilnError('BACKEND_UNAVAILABLE', 'QEMU was upgraded since the state was saved; it cannot be restored');
      for (const p of [f.kernelPath, f.initrdPath]) {
        if (
          !(await stat(p).then(
            () => true,
            () => false,
          ))
        )
          throw new KilnError('IMAGE_MISSING', 'the guest kernel the state was saved with is gone (the VM image was rebuilt); it cannot be restored');
      }
      const vm = await launchVm({
        binary: this.binary,
        id: spec.id,
        accel: f.accel,
        cpus: f.cpus,
        memoryMib: f.vmMemoryMib,
        kernelPath: f.kernelPath,
        initrdPath: f.initrdPath,
        cmdline: f.cmdline,
        diskImage: spec.pack.imagePath,
        dir: `${this.qemuRunDir}/vms/${spec.id}`,
        signal: o.signal,
        log: this.o.log,
        confine: this.confine,
        jails: this.jails,
        restoreFrom: `${dir}/${STATE_FILE}`,
        ramBackend: f.ramBackend,
        nic: f.nic === true,
        readyTimeoutMs: o.readyTimeoutMs,
      });
      return this.adopt(spec, vm, f.accel, f.vmMemoryMib, { restoreMs: Math.round(vm.readyMs), restoredFromState: true }, f);
    });
  }

  async scan(): Promise<ScanReport> {
    // Template boots in flight are this instance's own VMs: let them finish first.
    const templates = await this.templates.current();
    await this.spares.settled();
    const own = new Set([...this.live.values()].flatMap((s) => s.pids).concat([...this.spares.pids()], this.jails?.pids() ?? []));
    const removed: string[] = [];
    const orphans = await findOrphans(this.qemuRunDir, own);
    const { stuck } = await killLeftovers(
      orphans.map((o) => o.pid),
      5000,
    );
    for (const orphan of orphans) {
      removed.push(stuck.includes(orphan.pid) ? `could not kill orphaned qemu ${orphan.name} (pid ${orphan.pid})` : `killed orphaned qemu ${orphan.name} (pid ${orphan.pid})`);
    }
    removed.push(...(await removeStale(`${this.qemuRunDir}/vms`, new Set(this.live.keys()))));
    removed.push(...(await removeStale(`${this.qemuRunDir}/spares`, this.spares.ids())));
    removed.push(...(await removeStale(`${this.qemuRunDir}/templates`, new Set(templates.map((t) => t.id)))));
    removed.push(...(await removeStale(this.templates.memDir, new Set(templates.map((t) => `${t.id}.mem`)))));
    removed.push(...((await this.jails?.scan()) ?? []));
    if (this.nic) removed.push(...(await removeLeftoverTaps()));
    return { removed };
  }

  async close(): Promise<void> {
    await this.creates.close();
    const results = await Promise.allSettled([...this.live.values()].map((s) => s.destroy()));
    await this.spares.close();
    await this.templates.close();
    await this.jails?.close();
    const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed.length)
      throw new AggregateError(
        failed.map((f) => f.reason),
        `${failed.length} QEMU sandboxes did not stop cleanly`,
      );
  }

  /** Builds (or finds cached) kernel + initramfs; rebuilt when the agent binary changes. */
  private async vmArtifacts(signal?: AbortSignal): Promise<VmArtifacts> {
    const st = await stat(this.o.agentPath).catch((e: unknown) => {
      throw new KilnError('IMAGE_MISSING', `the kiln-agent binary ${this.o.agentPath} is missing: run "bash agent/build.sh"`, { cause: e });
    });
    const key = `${st.size}:${st.mtimeMs}`;
    if (this.artifacts?.key !== key) {
      const value = buildVmArtifacts({ dataDir: this.o.dataDir, agentPath: this.o.agentPath, signal, onProgress: (m) => this.o.log?.('info', m) });
      this.artifacts = { key, value };
      value.catch(() => {
        if (this.artifacts?.value === value) this.artifacts = undefined;
      });
    }
    return this.artifacts.value;
  }
}

/** A kernel override names a host file QEMU reads as root: only kernels where kernels live. */
function parseBackendOptions(raw: Record<string, unknown> | undefined, kernelDirs: string[]): QemuBackendOptionsParsed {
  const out: QemuBackendOptionsParsed = {};
  for (const [k, v] of Object.entries(raw ?? {})) {
    if (k === 'kernel') {
      if (typeof v !== 'string' || normalize(v) !== v || !kernelDirs.some((d) => v.startsWith(d))) {
        throw new KilnError('INVALID_REQUEST', "backendOptions.kernel must be a normalised absolute path to a kernel in /boot or in kiln's data directory");
      }
      out.kernel = v;
    } else if (k === 'bootArgs') {
      // A bare "--" would hand the rest of the line to init as arguments.
      if (typeof v !== 'string' || v.length > 1024 || /[\0\n]/.test(v) || v.split(/\s+/).includes('--')) {
        throw new KilnError('INVALID_REQUEST', 'backendOptions.bootArgs must be kernel parameters on one line (at most 1024 characters, no "--")');
      }
      out.bootArgs = v;
    } else {
      throw new KilnError('UNSUPPORTED_OPTION', `backendOptions.${k} is not supported by the qemu backend (supported: kernel, bootArgs)`);
    }
  }
  return out;
}

function remaining(deadline: number): number {
  return Math.max(1000, deadline - Date.now());
}

async function withDeadline<T>(p: Promise<T>, deadline: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new KilnError('BOOT_FAILED', `${what}; the create budget ran out — pass a larger readyTimeoutMs or retry`)), Math.max(0, deadline - Date.now()));
  });
  try {
    return await Promise.race([p, t]);
  } finally {
    clearTimeout(timer);
  }
}
