/**
 * The `namespace` backend: bubblewrap user/pid/mount/net/ipc/uts namespaces, cgroup limits, the
 * agent's own overlay root (pack squashfs lower + size-limited tmpfs upper) and seccomp filter.
 * Runs on any Linux host where the service is root; the embedded default.
 */
import { execFile } from 'node:child_process';
import { constants } from 'node:fs';
import { access, chmod, copyFile, mkdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import {
  availabilityFrom,
  type Backend,
  type BackendAvailability,
  type BackendSandbox,
  type CreateOptions,
  type HostCheck,
  type ProbeOptions,
  type ReattachReport,
  type SandboxSpec,
  type ScanReport,
} from '../../core/backend.js';
import { type CgroupLayout, cgroupMode, detectCgroupLayout, prepareLayout, probeCgroups, removeLayoutParents, SandboxCgroup, scanStaleCgroups } from '../../core/cgroups.js';
import { defaultFdWrapper } from '../../core/clean-spawn.js';
import { CleanupStack } from '../../core/cleanup.js';
import { CpuSpreader, formatCpuList } from '../../core/cpu-sets.js';
import { CreatesInFlight } from '../../core/creates.js';
import { KilnError, toKilnError } from '../../core/errors.js';
import { processStart } from '../../core/proc-stat.js';
import { roundMs, runSteps, type Step, StepTimings } from '../../core/steps.js';
import type { AgentClient } from '../../protocol/agent-client.js';
import { type BwrapChild, type BwrapOptions, spawnBwrap, spawnBwrapVia } from './bwrap.js';
import { ImageMounts } from './image-mounts.js';
import { connectAgent, KeptSandboxes, type KeptState, killKept } from './kept.js';
import { killSandboxProcess, NamespaceSandbox } from './namespace-sandbox.js';
import { NetInside } from './net-inside.js';
import { Spawner } from './spawner.js';
import { SandboxUids } from './uids.js';

const run = promisify(execFile);

export interface NamespaceBackendOptions {
  runDir: string;
  agentPath: string;
  bwrapPath?: string;
  maxPids: number;
  /** First host uid handed to sandboxes; each live sandbox gets its own. */
  uidBase?: number;
  uidCount?: number;
  /** Name of the parent cgroup for this instance's sandboxes (distinct per run dir). */
  cgroupName?: string;
  /** The resolver every sandbox's /etc/resolv.conf names (kiln's, on the sandbox network's gateway). */
  nameserver?: string;
  /**
   * Start sandboxes through the spawner helper (default true; spawner.ts), run from
   * `hostAgentPath` (default: KILN_AGENT or the repository's build): one fork of a small process
   * per sandbox instead of a fork of the service and the fd-cleaning wrapper's start.
   */
  spawner?: boolean;
  hostAgentPath?: string;
}

/** Step names of a sandbox's start (core/steps.ts): `details.steps` and errors name them. */
export const NS_STEP = {
  allocateUid: 'ns.allocateUid',
  mountImage: 'ns.mountImage',
  socketDir: 'ns.socketDir',
  createCgroup: 'ns.createCgroup',
  /** bwrap started, the sandbox's PID 1 placed in its cgroups and let run. */
  spawn: 'ns.spawn',
  saveState: 'ns.saveState',
  agentHandshake: 'kiln.agentHandshake',
} as const;

/** What the start steps make, filled in as they run. */
interface StartContext {
  hostUid?: number;
  lowerDir?: string;
  /** Host CPUs the sandbox runs on and sees. */
  cpus?: number[];
  cgroup?: SandboxCgroup;
  proc?: Awaited<ReturnType<typeof spawnBwrap>>;
  socketDir?: string;
  agent?: AgentClient;
  log: string;
}

export function createNamespaceBackend(options: NamespaceBackendOptions): Backend {
  return new NamespaceBackend(options);
}

class NamespaceBackend implements Backend {
  readonly name = 'namespace' as const;
  private readonly dir: string;
  private readonly images: ImageMounts;
  private layout: CgroupLayout | undefined;
  private prepared: Promise<string> | undefined;
  private readonly live = new Map<string, NamespaceSandbox>();
  /** close() sees creates under way through, or their cgroups would outlive the parents' removal. */
  private readonly creates = new CreatesInFlight('namespace');
  private readonly uids: SandboxUids;
  private cpus: CpuSpreader | undefined;
  private readonly kept: KeptSandboxes;
  private readonly netInside: NetInside;
  private readonly spawner: Spawner | undefined;
  /** Some sandbox was let go to outlive the service: close() leaves the image mounts to it. */
  private detachedAny = false;

  constructor(private readonly o: NamespaceBackendOptions) {
    this.dir = join(o.runDir, 'namespace');
    this.images = new ImageMounts(join(this.dir, 'images'));
    this.uids = new SandboxUids(o.uidBase ?? 200_000, o.uidCount ?? 65_536);
    this.kept = new KeptSandboxes(join(this.dir, 's'));
    this.netInside = new NetInside(o.agentPath);
    this.spawner = o.spawner === false ? undefined : new Spawner(o.hostAgentPath ?? defaultFdWrapper());
  }

  async probe(options: ProbeOptions = {}): Promise<BackendAvailability> {
    const capabilities = { snapshots: false, separateKernel: false, multipleUids: false, workspace: 'mount' as const, maxCpus: 64, maxMemoryMib: 1 << 20 };
    const checks: HostCheck[] = [];
    const add = (name: string, ok: boolean, detail: string): void => {
      checks.push({ name, ok, detail });
    };
    const root = process.getuid?.() === 0;
    add('root', root, root ? 'running as root' : 'the service must run as root (it loop-mounts images and manages cgroups)');
    const bwrap = this.o.bwrapPath ?? 'bwrap';
    const version = await run(bwrap, ['--version']).then(
      (r) => r.stdout.trim(),
      () => '',
    );
    add('bubblewrap', !!version, version || `${bwrap} was not found: apt-get install bubblewrap`);
    const fs = await readFile('/proc/filesystems', 'utf8');
    const overlay = /\toverlay$/m.test(fs);
    add('overlayfs', overlay, overlay ? 'in the kernel' : 'the kernel has no overlayfs: modprobe overlay');
    const squashfs =
      /\tsquashfs$/m.test(fs) ||
      (await run('modprobe', ['squashfs']).then(
        () => true,
        () => false,
      ));
    add('squashfs', squashfs, squashfs ? 'in the kernel' : 'the kernel has no squashfs: modprobe squashfs');
    const userns = await readFile('/proc/sys/user/max_user_namespaces', 'utf8').then(
      (v) => Number(v) > 0,
      () => false,
    );
    add('user namespaces', userns, userns ? 'enabled' : 'disabled: sysctl -w user.max_user_namespaces=15000');
    let cgroups = '';
    if (options.thorough && root) {
      // A real attempt, not a look at the mounts: a probe sandbox cgroup with limits, delegated to nobody.
      const cg = await probeCgroups();
      cgroups = cg.mode;
      add('cgroups', cg.delegation, cg.detail);
    } else {
      try {
        cgroups = `v${detectCgroupLayout(this.o.cgroupName).version}`;
        add('cgroups', true, `${cgroupMode()}${root ? '' : ' (delegation not probed: run kiln doctor as root)'}`);
      } catch (e) {
        add('cgroups', false, (e as Error).message);
      }
    }
    const agent = await access(this.o.agentPath, constants.X_OK).then(
      () => true,
      () => false,
    );
    add('agent binary', agent, agent ? this.o.agentPath : `${this.o.agentPath} is missing: run bash agent/build.sh`);
    // Released uids are sorted by the next allocation's scan: probe looks now, for a count that is current.
    if (root) await this.uids.settle().catch(() => undefined);
    return availabilityFrom(this.name, checks, capabilities, { bwrap: version, cgroups, quarantinedUids: this.uids.quarantined.length });
  }

  /** One-time preparation: folders, cgroup parents, and an agent copy every sandbox uid can read. */
  private prepare(): Promise<string> {
    this.prepared ??= (async () => {
      this.layout = detectCgroupLayout(this.o.cgroupName);
      await prepareLayout(this.layout);
      this.cpus = new CpuSpreader();
      await mkdir(this.dir, { recursive: true, mode: 0o755 });
      // Sandbox uids must traverse to the agent copy and the image mounts.
      await chmod(this.o.runDir, 0o755);
      await chmod(this.dir, 0o755);
      await mkdir(this.kept.dir, { recursive: true, mode: 0o711 });
      await chmod(this.kept.dir, 0o711);
      const agent = join(this.dir, 'kiln-agent');
      // Unlinked first: kept sandboxes of an earlier run still execute the old copy (ETXTBSY).
      await rm(agent, { force: true });
      await copyFile(this.o.agentPath, agent);
      await chmod(agent, 0o755);
      return agent;
    })();
    this.prepared.catch(() => {
      this.prepared = undefined;
    });
    return this.prepared;
  }

  create(spec: SandboxSpec, options: CreateOptions): Promise<BackendSandbox> {
    return this.creates.run(options, (o) => this.start(spec, o));
  }

  private async start(spec: SandboxSpec, options: CreateOptions): Promise<BackendSandbox> {
    if (spec.workspace && spec.workspace.kind !== 'mount') throw new KilnError('UNSUPPORTED_OPTION', `the namespace backend takes a 'mount' workspace, not '${spec.workspace.kind}'`);
    const agentCopy = await this.prepare().catch((e) => {
      throw toKilnError(e, 'BACKEND_UNAVAILABLE', 'namespace backend cannot start');
    });
    const timings = new StepTimings();
    const cleanup = new CleanupStack();
    const signal = options.signal ? AbortSignal.any([options.signal, AbortSignal.timeout(options.readyTimeoutMs)]) : AbortSignal.timeout(options.readyTimeoutMs);
    const ctx: StartContext = { log: '' };
    await runSteps(this.startSteps(spec, options, agentCopy), ctx, cleanup, {
      signal,
      timings,
      explain: (e) => {
        const why = e instanceof Error ? e.message : String(e);
        const log = ctx.log.trim();
        return new KilnError('BOOT_FAILED', `namespace sandbox failed to start: ${why}${log ? `; sandbox log: ${log.slice(-2000)}` : ''}`, { cause: e });
      },
    });
    const { hostUid, proc, cgroup, agent } = ctx as Required<StartContext>;
    const details = { pid: proc.sandboxPid, hostUid, cpuList: formatCpuList(ctx.cpus!), bootMs: roundMs(timings.elapsedMs()), steps: timings.marks };
    // The sandbox lives on without the service: nothing of it may keep this process's loop alive.
    proc.child.unref();
    proc.forget();
    return this.track(spec.id, agent, proc.child, cgroup, cleanup, details);
  }

  /** uid, image, cgroup, bwrap (placed in the cgroup), handshake: each undo runs in reverse on failure and at destroy. */
  private startSteps(spec: SandboxSpec, options: CreateOptions, agentCopy: string): Array<Step<StartContext>> {
    return [
      {
        name: NS_STEP.allocateUid,
        run: async (ctx) => {
          // A workspace's sandbox runs as the workspace's uid: its upper layer belongs to it.
          ctx.hostUid = spec.workspace?.kind === 'mount' ? await this.uids.claim(spec.workspace.hostUid) : await this.uids.allocate();
        },
        // Runs last, after the process and cgroup are gone: a uid some process still holds stays
        // quarantined (probe() counts them) instead of going to the next sandbox.
        undo: async (ctx) => {
          this.uids.release(ctx.hostUid!);
        },
      },
      {
        name: NS_STEP.mountImage,
        run: async (ctx) => {
          ctx.lowerDir = await this.images.acquire(spec.pack);
        },
      },
      {
        name: NS_STEP.socketDir,
        run: async (ctx) => {
          ctx.socketDir = await this.kept.prepare(spec.id, ctx.hostUid!);
        },
        undo: () => this.kept.remove(spec.id),
      },
      {
        // The cgroup comes first: bwrap binds its delegated user/ part into the sandbox. bwrap's
        // child waits on --block-fd until it is inside, so nothing of the sandbox runs unconfined.
        name: NS_STEP.createCgroup,
        run: async (ctx) => {
          const cpuList = this.cpus!.acquire(spec.cpus);
          try {
            ctx.cgroup = await SandboxCgroup.create(
              this.layout!,
              spec.id,
              { memoryBytes: spec.memoryMib * 1024 * 1024, pidsMax: this.o.maxPids, cpus: spec.cpus, cpuList },
              { delegateUid: ctx.hostUid },
            );
          } catch (e) {
            this.cpus!.release(cpuList); // a failed step registers no undo
            throw e;
          }
          ctx.cpus = cpuList;
        },
        undo: async (ctx) => {
          try {
            await ctx.cgroup!.remove();
          } finally {
            this.cpus!.release(ctx.cpus!);
          }
        },
      },
      {
        name: NS_STEP.spawn,
        run: async (ctx, signal) => {
          const bwrap: BwrapOptions = {
            bwrapPath: this.o.bwrapPath ?? 'bwrap',
            hostUid: ctx.hostUid!,
            lowerDir: ctx.lowerDir!,
            agentPath: agentCopy,
            cgroupDirs: ctx.cgroup!.userDirs,
            cpuList: ctx.cpus!,
            cgroupNamespace: this.layout!.version === 1,
            diskBytes: spec.diskMib * 1024 * 1024,
            workspace: spec.workspace?.kind === 'mount' ? spec.workspace : undefined,
            hostname: 'sandbox',
            socketDir: ctx.socketDir,
            nameserver: this.o.nameserver,
            zygote: spec.zygote,
            // The sandbox's stderr (bwrap's and the agent's), kept for the error when start fails.
            onStderr: (text) => {
              ctx.log = (ctx.log + text).slice(-8192);
            },
          };
          ctx.proc = this.spawner ? await spawnBwrapVia(this.spawner, { ...bwrap, socketDir: ctx.socketDir! }, ctx.cgroup!.procsFiles(), signal) : await spawnBwrap(bwrap, signal);
          // Undone from here on by the kill below (this step's undo), if placing it fails.
          await ctx.proc
            .enterAndRelease((pid) => ctx.cgroup!.addProcess(pid))
            .catch(async (e) => {
              await killSandboxProcess(ctx.proc!.child, ctx.proc!.sandboxPid).catch(() => undefined);
              throw e;
            });
        },
        undo: (ctx) => killSandboxProcess(ctx.proc!.child, ctx.proc!.sandboxPid),
      },
      {
        // Before the handshake: a service that dies from here on leaves a sandbox the next start reattaches.
        name: NS_STEP.saveState,
        run: async (ctx) => {
          const { child, sandboxPid } = ctx.proc!;
          const sandboxStart = await processStart(sandboxPid);
          if (!sandboxStart) {
            // What it wrote before it died may still be in the pipe: read it before saying why.
            await ctx.proc!.stderrSettled(1000);
            throw new Error(`the sandbox process exited right after its start${ctx.log.trim() ? `: ${ctx.log.trim().slice(-500)}` : ''}`);
          }
          await this.kept.save({
            id: spec.id,
            bwrapPid: child.pid!,
            sandboxPid,
            sandboxStart,
            hostUid: ctx.hostUid!,
            claimedUid: spec.workspace?.kind === 'mount',
            cpus: ctx.cpus!,
            pack: spec.pack,
          });
          ctx.proc!.recorded();
        },
      },
      {
        name: NS_STEP.agentHandshake,
        run: async (ctx, signal) => {
          // A sandbox that ends before its agent answers fails now, with its log, not at the timeout.
          const ended = new AbortController();
          const child = ctx.proc!.child;
          const onExit = (code: number | null, sig: string | null): void => {
            void ctx.proc!.stderrSettled(1000).then(() => ended.abort(new Error(`the sandbox exited (${sig ?? `code ${code}`}) before its agent answered`)));
          };
          if (child.exitCode !== null || child.signalCode !== null) onExit(child.exitCode, child.signalCode);
          else child.once('exit', onExit);
          try {
            ctx.agent = await connectAgent(this.kept.socketPath(spec.id), AbortSignal.any([signal, ended.signal]), options.readyTimeoutMs);
          } catch (e) {
            throw ended.signal.aborted ? ended.signal.reason : e;
          } finally {
            child.off('exit', onExit);
          }
        },
        undo: (ctx) => ctx.agent!.close(),
      },
    ];
  }

  /**
   * A started or reattached sandbox, listed until its whole teardown (cgroup included) is done or
   * it is detached, so close() waits for a destroy already under way instead of removing the parent
   * cgroups before this one is gone.
   */
  private track(id: string, agent: AgentClient, child: BwrapChild | undefined, cgroup: SandboxCgroup, cleanup: CleanupStack, details: Record<string, unknown>): NamespaceSandbox {
    const sandbox = new NamespaceSandbox(
      id,
      agent,
      child,
      cgroup,
      cleanup,
      details,
      (detached) => {
        this.live.delete(id);
        if (detached) this.detachedAny = true;
      },
      this.netInside,
    );
    this.live.set(id, sandbox);
    return sandbox;
  }

  /** Takes over the sandboxes an earlier run left running; removes what is left of those that died. */
  async reattach(): Promise<ReattachReport> {
    const { states, unreadable, strays } = await this.kept.list();
    const lost: ReattachReport['lost'] = [];
    const alive: BackendSandbox[] = [];
    for (const u of unreadable) {
      lost.push({ id: u.id, reason: `its state file is unreadable (${u.error})` });
      await this.kept.remove(u.id);
    }
    for (const id of strays) await this.kept.remove(id); // died before its state was written: the scan removes its cgroup
    if (states.length) await this.prepare();
    for (const st of states) {
      try {
        alive.push(await this.adopt(st));
      } catch (e) {
        lost.push({ id: st.id, reason: (e as Error).message });
        if ((await processStart(st.sandboxPid)) === st.sandboxStart) await killKept(st.sandboxPid, st.bwrapPid).catch(() => undefined);
        await this.kept.remove(st.id);
      }
    }
    return { alive, lost };
  }

  private async adopt(st: KeptState): Promise<NamespaceSandbox> {
    const t0 = performance.now();
    if ((await processStart(st.sandboxPid)) !== st.sandboxStart) throw new Error('its processes ended while the service was not running');
    const agent = await connectAgent(this.kept.socketPath(st.id), AbortSignal.timeout(10_000), 10_000).catch((e: Error) => {
      throw new Error(`its agent did not answer on ${this.kept.socketPath(st.id)} (${e.message})`);
    });
    // The start steps' undos, in their order: destroy() runs them in reverse.
    const cleanup = new CleanupStack();
    this.uids.adopt(st.hostUid, st.claimedUid);
    cleanup.push(NS_STEP.allocateUid, async () => this.uids.release(st.hostUid));
    await this.images.acquire(st.pack);
    cleanup.push(NS_STEP.socketDir, () => this.kept.remove(st.id));
    const cgroup = SandboxCgroup.existing(this.layout!, st.id);
    this.cpus!.hold(st.cpus);
    cleanup.push(NS_STEP.createCgroup, async () => {
      try {
        await cgroup.remove();
      } finally {
        this.cpus!.release(st.cpus);
      }
    });
    cleanup.push(NS_STEP.spawn, () => killKept(st.sandboxPid, st.bwrapPid));
    cleanup.push(NS_STEP.agentHandshake, () => agent.close());
    const details = { pid: st.sandboxPid, hostUid: st.hostUid, cpuList: formatCpuList(st.cpus), reattachMs: roundMs(performance.now() - t0) };
    return this.track(st.id, agent, undefined, cgroup, cleanup, details);
  }

  async scan(): Promise<ScanReport> {
    const removed: string[] = [];
    // Reattached sandboxes (live now) keep their cgroups, image mounts and agent copy.
    const keep = new Set(this.live.keys());
    try {
      const layout = detectCgroupLayout(this.o.cgroupName);
      removed.push(...(await scanStaleCgroups(layout, keep)));
      if (!this.prepared) await removeLayoutParents(layout); // made again on first use
    } catch {
      /* no cgroups: nothing can be left there */
    }
    removed.push(...(await this.images.scan()));
    if (!this.prepared) await rm(join(this.dir, 'kiln-agent'), { force: true });
    return { removed };
  }

  async close(): Promise<void> {
    await this.creates.close();
    const results = await Promise.allSettled([...this.live.values()].map((s) => s.destroy()));
    // Sandboxes kept for the next start (detached) still run on the image mounts.
    if (!this.detachedAny) await this.images.closeAll();
    if (this.layout) await removeLayoutParents(this.layout);
    this.netInside.close();
    this.spawner?.close();
    const failed = results.filter((r) => r.status === 'rejected');
    if (failed.length)
      throw new AggregateError(
        failed.map((r) => (r as PromiseRejectedResult).reason),
        'some namespace sandboxes failed to stop',
      );
  }
}
