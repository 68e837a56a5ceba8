/**
 * The `firecracker` backend: microVMs under Firecracker ≥ 1.10 driven over its REST API socket,
 * optionally through the jailer; the agent over hybrid vsock; fast starts by restoring snapshot
 * templates. Boot is a list of named steps (vm-steps.ts) run by core/steps.ts.
 */
import { access, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { availabilityFrom, type Backend, type BackendAvailability, type BackendSandbox, type CreateOptions, type ReattachReport, type SandboxSpec, type ScanReport } from '../../core/backend.js';
import { CleanupStack } from '../../core/cleanup.js';
import { CreatesInFlight } from '../../core/creates.js';
import { KilnError, toKilnError } from '../../core/errors.js';
import { removeLeftoverTaps } from '../../core/host-taps.js';
import { processStart } from '../../core/proc-stat.js';
import { roundMs, runSteps } from '../../core/steps.js';
import { vmmCgroupName } from '../../core/vmm-identities.js';
import { type TemplateWarmup, templateWarmup, warmTemplate } from '../../core/warmup.js';
import { firecrackerCmdline } from './cmdline.js';
import { type UnjailedConfinementOptions, UnjailedConfiner } from './confine.js';
import { findExecutable, type JailerSettings, jailRoot, UidPool } from './jailer.js';
import { listKept, reattachFirecracker, saveKept } from './kept.js';
import { SAVED } from './machine-state.js';
import { netnsPrefix, removeLeftoverNetns } from './netns.js';
import { hostChecks, inspectHost } from './probe.js';
import { type Launcher, spawnLauncher } from './process.js';
import { FirecrackerSandbox } from './sandbox.js';
import { parseSandboxOptions, toNetworkInterface, toRateLimiter } from './sandbox-options.js';
import { scanLeftovers } from './scan.js';
import { type TemplateFiles, TemplateStore, templateKey } from './templates.js';
import { agentSteps, bootStepError, coldBootSteps, identitySteps, prepareSteps, restoreSteps, VM_FILES, VmContext, type VmSpec } from './vm-steps.js';

export interface VmImage {
  vmlinuxPath: string;
  initrdPath: string;
  /** Content hash of kernel + initramfs: part of every template key. */
  hash: string;
}

export interface FirecrackerBackendOptions {
  runDir: string;
  /** The guest kernel + initramfs (src/vmimage buildVmArtifacts), resolved on first use. */
  vmImage: () => Promise<VmImage>;
  /** Explicit binaries; otherwise looked up on PATH. */
  firecrackerPath?: string;
  jailerPath?: string;
  /** 'auto': jail when a jailer binary is found. */
  jailer?: 'auto' | 'never' | 'required';
  jailerSettings?: Partial<Omit<JailerSettings, 'jailerPath'>>;
  /** 'force' skips the vmx/svm check. */
  kvm?: 'auto' | 'force';
  /** Restore clones from snapshot templates (default true). */
  snapshots?: boolean;
  templatesDir?: string;
  maxCpus?: number;
  maxMemoryMib?: number;
  apiTimeoutMs?: number;
  shutdownGraceMs?: number;
  tscKhz?: number;
  execUid?: number;
  /**
   * Without the jailer, when the service is root: each Firecracker still gets its own uid (range
   * from 500000), cgroup and namespaces (confine.ts). `false` turns it off; it is off by default
   * with a custom `launcher` (tests), which cannot honour it.
   */
  unjailed?: false | Partial<UnjailedConfinementOptions>;
  /**
   * kiln's own NIC on every VM without `backendOptions.network`, so a sandbox gets the network its
   * policy asks for (the network manager's connectNetwork): a TAP per VM (core/host-taps.ts), down
   * and unreachable until then. Jailed (or confined), the TAP is in the VM's own network namespace,
   * which kiln makes (netns.ts); otherwise in the host's. Templates and saved states keep the NIC
   * (a restore names its own TAP: `network_overrides`). Needs root (CAP_NET_ADMIN); default: on
   * when root, as QEMU's.
   */
  network?: boolean;
  /** Tests: start something else than the real binary (a fake API server). */
  launcher?: Launcher;
  /** Observes boot steps ("run:fc.putDrive(rootfs)", "undo:fc.spawn", …). */
  trace?: (event: string) => void;
}

interface Resolved {
  firecrackerPath: string;
  firecrackerVersion?: string;
  jail?: JailerSettings;
}

export function createFirecrackerBackend(options: FirecrackerBackendOptions): Backend {
  return new FirecrackerBackend(options);
}

const FIRECRACKER_MAX_VCPUS = 32;

export class FirecrackerBackend implements Backend {
  readonly name = 'firecracker' as const;
  private readonly baseDir: string;
  private readonly vmsDir: string;
  private readonly templates: TemplateStore;
  private readonly live = new Map<string, FirecrackerSandbox>();
  /** close() aborts creates under way and waits until they have unwound. */
  private readonly creates = new CreatesInFlight('Firecracker');
  private resolved: Promise<Resolved> | undefined;
  private uids: UidPool | undefined;
  private readonly confiner: UnjailedConfiner | undefined;
  /** kiln's NIC on every VM (the `network` option). */
  private readonly nic: boolean;
  /** This instance's VM network namespaces (netns.ts). */
  private readonly netnsPrefix: string;

  constructor(private readonly o: FirecrackerBackendOptions) {
    this.nic = o.network ?? process.getuid?.() === 0;
    this.netnsPrefix = netnsPrefix(o.runDir);
    this.baseDir = join(o.runDir, 'firecracker');
    this.vmsDir = join(this.baseDir, 'vms');
    this.templates = new TemplateStore(o.templatesDir ?? join(this.baseDir, 'templates'));
    const confine = o.unjailed === false ? undefined : (o.unjailed ?? (o.launcher ? undefined : {}));
    if (confine && process.getuid?.() === 0) {
      const cgroupName = confine.cgroupName ?? vmmCgroupName('kiln-fc', o.runDir);
      this.confiner = new UnjailedConfiner({ ...confine, cgroupName });
    }
  }

  private get capabilities(): BackendAvailability['capabilities'] {
    return {
      snapshots: this.o.snapshots ?? true,
      separateKernel: true,
      multipleUids: true,
      workspace: false,
      maxCpus: Math.min(this.o.maxCpus ?? FIRECRACKER_MAX_VCPUS, FIRECRACKER_MAX_VCPUS),
      maxMemoryMib: this.o.maxMemoryMib ?? 32_768,
    };
  }

  async probe(): Promise<BackendAvailability> {
    const facts = await inspectHost({ firecrackerPath: this.o.firecrackerPath, jailerPath: this.o.jailerPath, kvm: this.o.kvm });
    const checks = hostChecks(facts, this.o.kvm);
    if (this.o.jailer === 'required' && !facts.jailerPath) checks.push({ name: 'jailer', ok: false, detail: 'the jailer is required by configuration but no jailer binary was found' });
    return availabilityFrom(this.name, checks, this.capabilities, {
      firecracker: facts.firecrackerVersion ?? facts.firecrackerPath ?? null,
      jailer: this.o.jailer === 'never' ? 'disabled' : (facts.jailerPath ?? null),
      kvm: facts.cpuVirtualisation ?? (facts.kvmPvm ? 'kvm-pvm (unusable for ordinary guests)' : 'none'),
    });
  }

  /** Binaries and jailer settings, looked up once. */
  private resolve(): Promise<Resolved> {
    this.resolved ??= (async (): Promise<Resolved> => {
      const fc = this.o.launcher ? (this.o.firecrackerPath ?? '/usr/local/bin/firecracker') : await findExecutable('firecracker', this.o.firecrackerPath);
      if (!fc) throw new KilnError('BACKEND_UNAVAILABLE', 'no firecracker binary found: run "kiln firecracker install" or set KILN_FIRECRACKER; see docs/hosts.md');
      const jailerPath = this.o.jailer === 'never' ? undefined : await findExecutable('jailer', this.o.jailerPath);
      if (this.o.jailer === 'required' && !jailerPath) throw new KilnError('BACKEND_UNAVAILABLE', 'the jailer is required but no jailer binary was found');
      const version = this.o.launcher ? undefined : (await inspectHost({ firecrackerPath: fc })).firecrackerVersion;
      if (!jailerPath) return { firecrackerPath: fc, firecrackerVersion: version };
      const s = this.o.jailerSettings ?? {};
      const jail: JailerSettings = {
        jailerPath,
        chrootBaseDir: s.chrootBaseDir ?? join(this.baseDir, 'jail'),
        cgroupVersion:
          s.cgroupVersion ??
          (await access('/sys/fs/cgroup/cgroup.controllers').then(
            () => 2 as const,
            () => 1 as const,
          )),
        parentCgroup: s.parentCgroup ?? 'kiln-firecracker',
        uidBase: s.uidBase ?? 300_000,
        uidCount: s.uidCount ?? 65_536,
        gid: s.gid ?? 300_000,
        netns: s.netns ?? true,
      };
      this.uids = new UidPool(jail.uidBase, jail.uidCount, 'jailer');
      return { firecrackerPath: fc, firecrackerVersion: version, jail };
    })();
    this.resolved.catch(() => {
      this.resolved = undefined;
    });
    return this.resolved;
  }

  create(spec: SandboxSpec, options: CreateOptions): Promise<BackendSandbox> {
    return this.creates.run(options, (o) => this.start(spec, o));
  }

  private async start(spec: SandboxSpec, options: CreateOptions): Promise<BackendSandbox> {
    const { r, image, signal, base, bootArgs, driveRateLimiter, network } = await this.prepareStart(spec, options);
    const t0 = performance.now();
    let template: TemplateFiles | undefined;
    // A TAP device is host state that a snapshot would pin: sandboxes with a NIC always cold-boot.
    if ((this.o.snapshots ?? true) && !network) {
      const warmup = templateWarmup(spec.pack);
      const key = templateKey({
        packHash: spec.pack.hash,
        vcpus: spec.cpus,
        memoryMib: spec.memoryMib,
        kernelHash: image.hash,
        bootArgs,
        driveRateLimiter,
        firecrackerVersion: r.firecrackerVersion,
        warmup,
        nic: base.kilnNic,
      });
      template = await this.templates.get(key, (out) => this.buildTemplate(r, { ...base, id: `tpl-${key.slice(0, 12)}` }, out, signal, warmup));
    }
    const tReady = performance.now();
    const timing = template ? () => ({ cloneOf: template.key, restoreMs: roundMs(performance.now() - tReady), templateMs: roundMs(tReady - t0) }) : () => ({ bootMs: roundMs(performance.now() - t0) });
    // No NIC: its state can be saved and restored (pause, snapshots) like a template's.
    const machine = network
      ? undefined
      : { packHash: spec.pack.hash, vcpus: spec.cpus, memoryMib: spec.memoryMib, kernelHash: image.hash, bootArgs, firecrackerVersion: r.firecrackerVersion, nic: base.kilnNic };
    return this.bootSandbox(r, spec, { ...base, id: spec.id, snapshot: template }, signal, timing, machine);
  }

  /** Starts a VM from what a sandbox's saveMachine wrote (machine-state.ts): its processes go on. */
  restoreMachine(spec: SandboxSpec, dir: string, machine: Record<string, unknown>, options: CreateOptions): Promise<BackendSandbox> {
    return this.creates.run(options, async (o) => {
      const { r, image, signal, base, bootArgs } = await this.prepareStart(spec, o);
      const m = machine as { packHash?: string; kernelHash?: string; bootArgs?: string; firecrackerVersion?: string };
      if (m.packHash !== spec.pack.hash || m.kernelHash !== image.hash || m.bootArgs !== bootArgs)
        throw new KilnError('IMAGE_MISSING', 'the pack image or the guest kernel changed since the state was saved; it cannot be restored');
      if (m.firecrackerVersion !== r.firecrackerVersion) throw new KilnError('BACKEND_UNAVAILABLE', 'Firecracker was upgraded since the state was saved; it cannot be restored');
      const t0 = performance.now();
      const snapshot = { vmstatePath: `${dir}/${SAVED.vmstate}`, memoryPath: `${dir}/${SAVED.memory}` };
      // The saved devices decide: a NIC in the state needs a TAP to restore onto.
      const kilnNic = (machine as { nic?: boolean }).nic === true;
      return this.bootSandbox(r, spec, { ...base, kilnNic, id: spec.id, snapshot }, signal, () => ({ restoreMs: roundMs(performance.now() - t0), restoredFromState: true }), { ...machine });
    });
  }

  /** Checks the spec and resolves what every start needs: binaries, kernel, boot args, the VM's base spec. */
  private async prepareStart(spec: SandboxSpec, options: CreateOptions) {
    if (spec.workspace) throw new KilnError('UNSUPPORTED_OPTION', 'the firecracker backend cannot run workspace sandboxes yet: use the namespace backend');
    const caps = this.capabilities;
    if (spec.cpus < 1 || spec.cpus > caps.maxCpus) {
      throw new KilnError('INVALID_REQUEST', `firecracker sandboxes take 1 to ${caps.maxCpus} vCPUs (asked for ${spec.cpus})`);
    }
    if (spec.memoryMib < 128 || spec.memoryMib > caps.maxMemoryMib) {
      throw new KilnError('INVALID_REQUEST', `firecracker sandboxes take 128 to ${caps.maxMemoryMib} MiB of memory (asked for ${spec.memoryMib})`);
    }
    const opts = parseSandboxOptions(spec.backendOptions);
    const r = await this.resolve();
    const image = await this.o.vmImage().catch((e) => {
      throw toKilnError(e, 'IMAGE_MISSING', 'the guest kernel/initramfs is not available');
    });
    const signal = options.signal ? AbortSignal.any([options.signal, AbortSignal.timeout(options.readyTimeoutMs)]) : AbortSignal.timeout(options.readyTimeoutMs);
    const bootArgs = firecrackerCmdline({ diskMib: spec.diskMib, tscKhz: this.o.tscKhz, execUid: this.o.execUid, extra: opts.bootArgs });
    const driveRateLimiter = toRateLimiter(opts.driveRateLimit);
    const network = toNetworkInterface(opts.network);
    const base = {
      vcpus: spec.cpus,
      memoryMib: spec.memoryMib,
      kernelPath: image.vmlinuxPath,
      initrdPath: image.initrdPath,
      bootArgs,
      rootfsPath: spec.pack.imagePath,
      driveRateLimiter,
      network,
      kilnNic: this.nic && !network,
      readyTimeoutMs: options.readyTimeoutMs,
    };
    return { r, image, signal, base, bootArgs, driveRateLimiter, network };
  }

  private async bootSandbox(
    r: Resolved,
    spec: SandboxSpec,
    partial: Parameters<FirecrackerBackend['boot']>[1],
    signal: AbortSignal,
    timing: () => Record<string, unknown>,
    machine: Record<string, unknown> | undefined,
  ): Promise<FirecrackerSandbox> {
    const { ctx, cleanup, uid } = await this.boot(r, partial, signal);
    const details = {
      pid: ctx.proc?.pid,
      jailed: !!r.jail,
      ...(uid !== undefined ? { uid, confined: r.jail ? 'jailer' : 'uid, cgroup, namespaces' } : {}),
      ...timing(),
      firecracker: r.firecrackerVersion,
      steps: ctx.timings.marks,
    };
    let kept = false;
    try {
      kept = await this.keep(ctx, details, machine);
    } catch (e) {
      await cleanup.run().catch(() => undefined);
      throw toKilnError(e, 'BOOT_FAILED', "the VM's record for a restart of the service could not be written");
    }
    return this.wrap(spec.id, ctx, cleanup, details, machine, kept);
  }

  private wrap(id: string, ctx: VmContext, cleanup: CleanupStack, details: Record<string, unknown>, machine: Record<string, unknown> | undefined, kept: boolean): FirecrackerSandbox {
    const sandbox = new FirecrackerSandbox(id, ctx, cleanup, details, { onDestroyed: () => this.live.delete(id), machine, kept });
    this.live.set(id, sandbox);
    return sandbox;
  }

  /** Writes the record a restart reattaches the VM by (kept.ts); false when it cannot be kept (jailer, no host pid). */
  private async keep(ctx: VmContext, details: Record<string, unknown>, machine: Record<string, unknown> | undefined): Promise<boolean> {
    const pid = ctx.proc?.pid;
    const start = pid === undefined ? undefined : await processStart(pid);
    if (ctx.spec.jail || pid === undefined || start === undefined) return false;
    const { launcher: _l, confine: _c, jail: _j, snapshot: _s, ...spec } = ctx.spec;
    const c = ctx.confine;
    await saveKept({
      id: spec.id,
      pid,
      start,
      wrapperPids: c ? c.pids.filter((p) => p !== pid) : [],
      ...(c ? { confine: { uid: c.uid, name: c.name } } : {}),
      spec,
      details,
      ...(machine ? { machine } : {}),
    });
    return true;
  }

  /** Takes over the VMs an earlier run of the service left running (kept.ts); the dead ones are lost. */
  async reattach(): Promise<ReattachReport> {
    const alive: BackendSandbox[] = [];
    const lost: ReattachReport['lost'] = [];
    for (const r of await listKept(this.vmsDir)) {
      try {
        const t0 = performance.now();
        const { ctx, cleanup } = await reattachFirecracker(r, this.confiner, this.o.launcher ?? spawnLauncher);
        alive.push(this.wrap(r.id, ctx, cleanup, { ...r.details, reattachMs: roundMs(performance.now() - t0) }, r.machine, true));
      } catch (e) {
        lost.push({ id: r.id, reason: (e as Error).message });
      }
    }
    return { alive, lost };
  }

  /** Runs identity → prepare → (cold boot | restore) → agent steps; on failure everything is unwound. */
  private async boot(
    r: Resolved,
    partial: Omit<VmSpec, 'dir' | 'firecrackerPath' | 'launcher' | 'jail' | 'confine' | 'apiTimeoutMs' | 'shutdownGraceMs'>,
    signal: AbortSignal,
  ): Promise<{ ctx: VmContext; cleanup: CleanupStack; uid?: number }> {
    const confiner = this.confiner;
    const s = partial.snapshot;
    const spec: VmSpec = {
      ...partial,
      dir: r.jail ? jailRoot(r.jail, r.firecrackerPath, partial.id) : join(this.vmsDir, partial.id),
      firecrackerPath: r.firecrackerPath,
      launcher: this.o.launcher ?? spawnLauncher,
      jail: r.jail ? { settings: r.jail, uids: this.uids! } : undefined,
      // Jailed (unless turned off), or confined with kiln's NIC: its TAP is in a namespace of its own.
      netns: (r.jail ? r.jail.netns : !!confiner && partial.kilnNic) ? `${this.netnsPrefix}${partial.id}` : undefined,
      confine:
        !r.jail && confiner
          ? () =>
              confiner.acquire(
                partial.id,
                { vcpus: partial.vcpus, memoryMib: partial.memoryMib },
                {
                  dir: join(this.vmsDir, partial.id),
                  readOnly: [partial.rootfsPath, ...(s ? [s.vmstatePath, s.memoryPath] : [partial.kernelPath, partial.initrdPath])],
                  // A NIC: /dev/net/tun, and the namespace it is started in (the VM's own, for kiln's NIC).
                  network: !!partial.network || !!partial.kilnNic,
                },
                r.firecrackerPath,
              )
          : undefined,
      apiTimeoutMs: this.o.apiTimeoutMs ?? 5_000,
      shutdownGraceMs: this.o.shutdownGraceMs ?? 2_000,
    };
    const ctx = new VmContext(spec);
    const cleanup = new CleanupStack();
    const steps = [...identitySteps(spec), ...prepareSteps(spec), ...(spec.snapshot ? restoreSteps() : coldBootSteps(spec)), ...agentSteps(spec, !!spec.snapshot)];
    await runSteps(steps, ctx, cleanup, {
      signal,
      trace: this.o.trace,
      timings: ctx.timings,
      explain: (e, step) => bootStepError(step, e, signal, () => ctx.consoleTail()),
    });
    return { ctx, cleanup, uid: ctx.uid ?? ctx.confine?.uid };
  }

  /**
   * Cold-boots a VM to a ready agent, warms it up, pauses it, takes a full snapshot, and throws
   * the VM away.
   */
  private async buildTemplate(
    r: Resolved,
    partial: Parameters<FirecrackerBackend['boot']>[1],
    out: { vmstatePath: string; memoryPath: string },
    signal: AbortSignal,
    warmup?: TemplateWarmup,
  ): Promise<void> {
    const { ctx, cleanup } = await this.boot(r, { ...partial, snapshot: undefined }, signal);
    try {
      if (warmup && ctx.agent) await warmTemplate(ctx.agent, warmup, (m) => this.o.trace?.(`warn:${m}`));
      await ctx.api.pauseVm({ signal });
      ctx.booted = false; // a paused guest cannot react to Ctrl+Alt+Del: kill it directly afterwards
      await ctx.api.createSnapshot({ snapshot_type: 'Full', snapshot_path: ctx.vm(VM_FILES.vmstate), mem_file_path: ctx.vm(VM_FILES.memory) }, { signal });
      await rename(ctx.host(VM_FILES.vmstate), out.vmstatePath);
      await rename(ctx.host(VM_FILES.memory), out.memoryPath);
    } catch (e) {
      throw toKilnError(e, 'BOOT_FAILED', 'creating the snapshot template failed');
    } finally {
      await cleanup.run().catch(() => undefined);
    }
  }

  async scan(): Promise<ScanReport> {
    const removed = await scanLeftovers({
      ownedDirs: [this.vmsDir, join(this.baseDir, 'jail')],
      // What reattach took over.
      keep: { entries: new Set(this.live.keys()), pids: new Set([...this.live.values()].flatMap((s) => s.pids)) },
      templatesDir: this.o.templatesDir ?? join(this.baseDir, 'templates'),
    });
    removed.push(...((await this.confiner?.scan()) ?? []));
    // The VMs' own namespaces (their TAP and veth inside), then kiln's TAPs in the host's.
    const keepNetns = new Set([...this.live.values()].flatMap((s) => s.netns ?? []));
    removed.push(...(await removeLeftoverNetns(this.netnsPrefix, keepNetns)));
    if (this.nic) removed.push(...(await removeLeftoverTaps()));
    return { removed };
  }

  async close(): Promise<void> {
    await this.creates.close();
    const results = await Promise.allSettled([...this.live.values()].map((s) => s.destroy()));
    await this.templates.clear();
    await this.confiner?.close();
    const failed = results.filter((x): x is PromiseRejectedResult => x.status === 'rejected');
    if (failed.length)
      throw new AggregateError(
        failed.map((f) => f.reason),
        'some Firecracker sandboxes failed to stop',
      );
  }
}
