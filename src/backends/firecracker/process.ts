/**
 * The Firecracker process: spawned directly or through the jailer, its serial console captured in
 * a ring buffer (core/console-ring.ts), its exit observed from the start (no race between exit and
 * listener), and the kill ladder with SendCtrlAltDel as its first rung.
 */
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import type { Readable, Writable } from 'node:stream';
import { spawnClean } from '../../core/clean-spawn.js';
import { ConsoleRing } from '../../core/console-ring.js';
import { KilnError } from '../../core/errors.js';
import { killLadder, type StopOutcome } from '../../core/kill-ladder.js';
import { processStartSync } from '../../core/proc-stat.js';
import { childOf, readChildPid } from '../../core/vmm-jail.js';
import type { FirecrackerApi } from './api-client.js';
import type { VmmConfinement } from './confine.js';

/** What the boot steps need from a running VMM, real or fake. */
export interface VmmProcess {
  readonly pid: number | undefined;
  readonly console: ConsoleRing;
  alive(): boolean;
  /** Resolves with a human-readable reason once the process has exited. */
  readonly exited: Promise<string>;
  kill(signal: NodeJS.Signals): void;
  /** Lets go of a VMM that is to outlive the service (its pipes closed, the process runs on). */
  release?(): void;
}

export interface LaunchSpec {
  /** Absolute host path of the API socket. */
  apiSocketPath: string;
  /** Working directory: relative VM paths (vsock socket, drives) resolve against it. */
  cwd: string;
  argv: string[];
  binary: string;
  /** Unjailed Firecracker in its own uid, cgroup and namespaces (confine.ts). */
  confine?: VmmConfinement;
  /** Confined: the VM's own network namespace (netns.ts) bwrap starts in; the jailer takes it as `--netns` instead. */
  netnsPath?: string;
}

export type Launcher = (spec: LaunchSpec) => Promise<VmmProcess>;

/** The real launcher: spawns the binary with stdout (the serial console) and stderr captured. */
export const spawnLauncher: Launcher = async (spec) => {
  const c = spec.confine;
  let child: ChildProcess;
  if (c) {
    const bwrap = [c.bwrapPath, ...c.bwrapArgs, '--info-fd', '3', '--block-fd', '4', '--', ...c.setprivArgs, spec.binary, ...spec.argv];
    // nsenter joins the VM's namespace and execs bwrap (the same process), which then makes no network namespace of its own.
    const [bin, ...args] = spec.netnsPath ? ['nsenter', `--net=${spec.netnsPath}`, '--', ...bwrap] : bwrap;
    child = spawnClean(bin!, args, { cwd: spec.cwd, stdio: ['ignore', 'pipe', 'pipe', 'pipe', 'pipe'], env: {}, detached: true });
  } else child = spawnClean(spec.binary, spec.argv, { cwd: spec.cwd, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  const proc = new ChildVmm(child);
  await Promise.race([
    once(child, 'spawn'),
    once(child, 'error').then(([e]) => {
      throw new KilnError('BOOT_FAILED', `cannot start ${spec.binary}: ${(e as Error).message}`, { cause: e });
    }),
  ]);
  if (c) await enterConfinement(proc, child, c);
  return proc;
};

/**
 * bwrap's namespace PID 1 is held until it is in the VM's cgroup; Firecracker is its child.
 */
async function enterConfinement(proc: ChildVmm, child: ChildProcess, c: VmmConfinement): Promise<void> {
  const [info, block] = [child.stdio[3] as Readable, child.stdio[4] as Writable];
  info.on('error', () => undefined);
  block.on('error', () => undefined);
  try {
    const initPid = await readChildPid(info, proc.exited);
    c.pids.push(child.pid!, initPid);
    await c.enter(initPid);
    block.end('x');
    proc.vmmPid = await childOf(initPid, proc.exited);
    c.pids.push(proc.vmmPid);
  } catch (e) {
    proc.kill('SIGKILL');
    await proc.exited;
    throw new KilnError('BOOT_FAILED', `Firecracker did not start in its confinement: ${(e as Error).message}; ${proc.console.text(5)}`, { cause: e });
  }
}

class ChildVmm implements VmmProcess {
  readonly console = new ConsoleRing();
  readonly exited: Promise<string>;
  private done = false;

  constructor(private readonly child: ChildProcess) {
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, sig) => {
        this.done = true;
        resolve(sig ? `killed by ${sig}` : `exited with code ${code}`);
      });
      child.once('error', (e) => {
        this.done = true;
        resolve(`failed: ${e.message}`);
      });
    });
    child.stdout!.on('data', (c: Buffer) => this.console.push(c));
    child.stderr!.on('data', (c: Buffer) => this.console.push(c));
  }

  /** Firecracker's host pid when it runs below bwrap (the child is then bwrap). */
  vmmPid: number | undefined;

  get pid(): number | undefined {
    return this.vmmPid ?? this.child.pid;
  }

  alive(): boolean {
    return !this.done && this.child.exitCode === null && this.child.signalCode === null;
  }

  kill(signal: NodeJS.Signals): void {
    try {
      // bwrap dies of any of these; its namespace PID 1 takes Firecracker with it.
      this.child.kill(signal);
    } catch {
      /* already gone */
    }
  }

  release(): void {
    for (const s of this.child.stdio) s?.destroy();
    this.child.unref();
  }
}

/**
 * A VMM an earlier run of the service started (reattached, backend.ts): not our child, so its end
 * is seen in /proc, and its start time keeps a reused pid from being signalled. Confined, the pid
 * signalled is Firecracker's; bwrap's init and bwrap follow it.
 */
export class AdoptedVmm implements VmmProcess {
  readonly console = new ConsoleRing();
  readonly exited: Promise<string>;
  private done = false;
  private readonly poller: NodeJS.Timeout;

  constructor(
    readonly pid: number,
    private readonly start: string,
  ) {
    let resolveExit: (why: string) => void = () => undefined;
    this.exited = new Promise((r) => {
      resolveExit = r;
    });
    this.poller = setInterval(() => {
      if (processStartSync(pid) === start) return;
      clearInterval(this.poller);
      this.done = true;
      resolveExit("exited (not the service's child: no exit status)");
    }, 200);
    this.poller.unref();
  }

  alive(): boolean {
    return !this.done;
  }

  kill(signal: NodeJS.Signals): void {
    if (this.done || processStartSync(this.pid) !== this.start) return;
    try {
      process.kill(this.pid, signal);
    } catch {
      /* already gone */
    }
  }

  release(): void {
    clearInterval(this.poller);
  }
}

export interface StopOptions {
  /** How long the guest gets to power off after Ctrl+Alt+Del. */
  gracefulMs: number;
  /** How long to wait for the exit after SIGKILL. */
  killWaitMs?: number;
}

/**
 * The kill ladder (core/kill-ladder.ts) with Ctrl+Alt+Del as its polite rung: Firecracker has no
 * SIGTERM handling worth waiting for, and without the API (a VM not booted, or paused) the guest
 * cannot react, so it is SIGKILLed at once.
 */
export function stopVmm(proc: VmmProcess, api: FirecrackerApi | undefined, options: StopOptions): Promise<StopOutcome> {
  return killLadder(proc, {
    what: 'Firecracker process',
    graceMs: api ? options.gracefulMs : 0,
    ask: () =>
      api!.sendCtrlAltDel({ signal: AbortSignal.timeout(Math.min(1_000, options.gracefulMs)) }).then(
        () => true,
        () => false,
      ),
    killWaitMs: options.killWaitMs ?? 3_000,
  });
}
