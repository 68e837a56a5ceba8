/**
 * One QEMU process: spawn, console capture, a boot watchdog, and the kill ladder
 * (SIGTERM, bounded wait, SIGKILL, bounded wait, give up loudly).
 */
import type { ChildProcess, StdioOptions } from 'node:child_process';
import { once } from 'node:events';
import type { Readable, Writable } from 'node:stream';
import { spawnClean } from '../../core/clean-spawn.js';
import { ConsoleRing } from '../../core/console-ring.js';
import { killLadder, settlesWithin } from '../../core/kill-ladder.js';
import { childOf, readChildPid } from '../../core/vmm-jail.js';
import { TAP_FD } from './cmdline.js';
import type { VmJail } from './jail.js';

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export type { QemuLog } from './log.js';

export class QemuProcess {
  readonly console = new ConsoleRing(200);
  private qemuPid: number;
  /** bwrap (the direct child) and its namespace PID 1, when jailed. */
  private readonly wrapperPids: number[] = [];
  /** Resolves when the process has exited and its console output is fully read. */
  readonly exited: Promise<ExitInfo>;
  private exitInfo: ExitInfo | undefined;
  private watchdog: NodeJS.Timeout | undefined;
  watchdogFired = false;

  /** `pid` is QEMU's host pid: the child itself, or under a jail bwrap's namespace PID 1. */
  private constructor(
    readonly child: ChildProcess,
    pid?: number,
  ) {
    this.qemuPid = pid ?? child.pid!;
    child.stdout!.on('data', (d: Buffer) => this.console.push(d));
    child.stderr!.on('data', (d: Buffer) => this.console.push(d));
    const closed = once(child, 'close') as Promise<[number | null, NodeJS.Signals | null]>;
    this.exited = closed.then(([code, signal]) => {
      this.disarmWatchdog();
      this.exitInfo = { code, signal };
      return this.exitInfo;
    });
  }

  /**
   * `passFd` becomes fd 3 of QEMU (the migration stream: `fd:3`, so no shell is ever spawned).
   * With a jail, QEMU starts through bwrap (jail.ts) and is held before exec until it is in the
   * VM's cgroup.
   */
  static async spawn(binary: string, args: string[], passFd?: number, jail?: VmJail, tap?: string): Promise<QemuProcess> {
    // Every descriptor past the ones listed is closed on exec (spawnClean); in the jail, fd 3 is
    // a pipe nobody writes when there is no migration stream, so no stray descriptor sits there.
    // The TAP (`tap`) lands right after them, at TAP_FD: six descriptors are listed for it.
    const stdio: StdioOptions & unknown[] = jail
      ? ['ignore', 'pipe', 'pipe', passFd ?? 'pipe', 'pipe', 'pipe']
      : passFd === undefined
        ? ['ignore', 'pipe', 'pipe']
        : ['ignore', 'pipe', 'pipe', passFd];
    while (tap && stdio.length < TAP_FD) stdio.push('ignore');
    const child = jail
      ? spawnClean(jail.bwrapPath, [...jail.bwrapArgs, '--info-fd', '4', '--block-fd', '5', '--', binary, ...args], { stdio, env: {} }, undefined, { tap })
      : spawnClean(binary, args, { stdio }, undefined, { tap });
    await new Promise<void>((resolve, reject) => {
      child.once('spawn', resolve);
      child.once('error', reject);
    });
    if (!jail) return new QemuProcess(child);
    const proc = new QemuProcess(child);
    proc.wrapperPids.push(child.pid!);
    const [info, block] = [child.stdio[4] as Readable, (child.stdio as unknown[])[5] as Writable];
    info.on('error', () => undefined);
    block.on('error', () => undefined);
    try {
      // bwrap's PID 1 of the namespace stays root (and so keeps --die-with-parent: QEMU's drop to
      // its uid clears its own parent-death signal); QEMU is its child and dies with it.
      const initPid = await readChildPid(info, proc.exited);
      proc.wrapperPids.push(initPid);
      jail.pids.push(child.pid!, initPid);
      await jail.enter(initPid);
      block.end('x');
      proc.qemuPid = await childOf(initPid, proc.exited);
      jail.pids.push(proc.qemuPid);
      return proc;
    } catch (e) {
      child.kill('SIGKILL');
      await proc.exited;
      throw new Error(`QEMU did not start in its jail: ${(e as Error).message}${proc.console.tail(5).length ? `: ${proc.console.tail(5).join(' ')}` : ''}`, { cause: e });
    }
  }

  get pid(): number {
    return this.qemuPid;
  }

  /** Host pids of QEMU and, under a jail, the bwrap processes that started it. */
  get pids(): number[] {
    return [...new Set([...this.wrapperPids, this.qemuPid])];
  }

  get alive(): boolean {
    return this.exitInfo === undefined;
  }

  get exit(): ExitInfo | undefined {
    return this.exitInfo;
  }

  /** A guest that hangs burns a whole core: SIGKILL it unless disarmed within `ms`. */
  armWatchdog(ms: number): void {
    this.disarmWatchdog();
    this.watchdog = setTimeout(() => {
      this.watchdogFired = true;
      this.signal('SIGKILL');
    }, ms);
    this.watchdog.unref();
  }

  disarmWatchdog(): void {
    if (this.watchdog) clearTimeout(this.watchdog);
    this.watchdog = undefined;
  }

  signal(sig: NodeJS.Signals): void {
    if (!this.alive) return;
    try {
      process.kill(this.pid, sig);
    } catch {
      // already gone
    }
  }

  /** Waits for exit up to `ms`; true when it exited. */
  async waitExit(ms: number): Promise<boolean> {
    return !this.alive || settlesWithin(this.exited, ms);
  }

  /** The kill ladder (core/kill-ladder.ts). Throws only when even SIGKILL did not end the process. */
  async stop(graceMs = 2000): Promise<void> {
    await killLadder({ pid: this.pid, alive: () => this.alive, kill: (sig) => this.signal(sig), exited: this.exited }, { what: 'qemu', graceMs, killWaitMs: 5000 });
  }
}
