/**
 * One QEMU process: spawn (or adopt one an earlier run of the service left running), console
 * capture (the serial console's socket, and QEMU's own stderr while it is our child), a boot
 * watchdog, and the kill ladder (SIGTERM, bounded wait, SIGKILL, bounded wait, give up loudly).
 */
import type { ChildProcess, StdioOptions } from 'node:child_process';
import { once } from 'node:events';
import { createConnection, type Socket } from 'node:net';
import type { Readable, Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { spawnClean } from '../../core/clean-spawn.js';
import { ConsoleRing } from '../../core/console-ring.js';
import { killLadder, killLeftovers, settlesWithin } from '../../core/kill-ladder.js';
import { processStart, processStartSync } from '../../core/proc-stat.js';
import { childOf, readChildPid } from '../../core/vmm-jail.js';
import { TAP_FD } from './cmdline.js';
import type { VmJail } from './jail.js';

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export type { QemuLog } from './log.js';

/** How often a reattached QEMU (not our child: no exit event) is looked for in /proc. */
const EXIT_POLL_MS = 1000;

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
  private consoleSocket: Socket | undefined;
  /** Resolves when the console connection has ended (or was never made). */
  private readonly consoleEnded: Promise<void>;
  private gone = false;
  private released = false;
  private poller: NodeJS.Timeout | undefined;
  private readonly consoleListeners: ((chunk: Buffer) => void)[] = [];

  /**
   * `pid` is QEMU's host pid: the child itself, or under a jail bwrap's namespace PID 1's child.
   * Without `child` the process is one an earlier run of the service started (reattached): no
   * exit event, so /proc is watched, and `start` (its start time) keeps a reused pid from being
   * taken for it.
   */
  private constructor(
    readonly child: ChildProcess | undefined,
    consoleSock: string,
    pid: number,
    private readonly start?: string,
  ) {
    this.qemuPid = pid;
    this.consoleEnded = this.readConsole(consoleSock);
    if (child) {
      child.stdout!.on('data', (d: Buffer) => this.console.push(d));
      child.stderr!.on('data', (d: Buffer) => this.console.push(d));
      const closed = once(child, 'close') as Promise<[number | null, NodeJS.Signals | null]>;
      this.exited = closed.then(async ([code, signal]) => {
        this.gone = true;
        this.disarmWatchdog();
        // The guest's last lines (a panic) are still in the console socket's buffer.
        await settlesWithin(this.consoleEnded, 1000);
        this.exitInfo = { code, signal };
        return this.exitInfo;
      });
    } else {
      this.exited = new Promise<ExitInfo>((resolve) => {
        const check = (): void => {
          if (this.released || processStartSync(this.qemuPid) === this.start) return;
          clearInterval(this.poller);
          this.gone = true;
          this.exitInfo = { code: null, signal: null };
          resolve(this.exitInfo);
        };
        this.poller = setInterval(check, EXIT_POLL_MS);
        this.poller.unref();
        // QEMU closes the console as it exits: look at once instead of at the next poll.
        void this.consoleEnded.then(() => setTimeout(check, 10).unref());
      });
    }
  }

  /**
   * `passFd` becomes fd 3 of QEMU (the migration stream: `fd:3`, so no shell is ever spawned).
   * With a jail, QEMU starts through bwrap (jail.ts) and is held before exec until it is in the
   * VM's cgroup. In its own session: a signal to the service's process group (a terminal's ^C)
   * does not reach a VM that is to outlive the service.
   */
  static async spawn(binary: string, args: string[], consoleSock: string, passFd?: number, jail?: VmJail, tap?: string): Promise<QemuProcess> {
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
      ? spawnClean(jail.bwrapPath, [...jail.bwrapArgs, '--info-fd', '4', '--block-fd', '5', '--', binary, ...args], { stdio, env: {}, detached: true }, undefined, { tap })
      : spawnClean(binary, args, { stdio, detached: true }, undefined, { tap });
    await new Promise<void>((resolve, reject) => {
      child.once('spawn', resolve);
      child.once('error', reject);
    });
    if (!jail) return new QemuProcess(child, consoleSock, child.pid!);
    const proc = new QemuProcess(child, consoleSock, child.pid!);
    proc.wrapperPids.push(child.pid!);
    const [info, block] = [child.stdio[4] as Readable, (child.stdio as unknown[])[5] as Writable];
    info.on('error', () => undefined);
    block.on('error', () => undefined);
    try {
      // QEMU is the only child of bwrap's PID 1 of the namespace: when it exits, bwrap follows.
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

  /**
   * A QEMU an earlier run of the service started (kept.ts): undefined when `pid` is no longer the
   * process that started at `start`. `wrapperPids`: its bwrap processes, when jailed.
   */
  static adopt(pid: number, start: string, wrapperPids: number[], consoleSock: string): QemuProcess | undefined {
    if (processStartSync(pid) !== start) return undefined;
    const proc = new QemuProcess(undefined, consoleSock, pid, start);
    proc.wrapperPids.push(...wrapperPids);
    return proc;
  }

  /**
   * Lets go of a QEMU that is to outlive the service: its console connection, pipes and watchers
   * are closed, the process runs on. `exited` no longer settles.
   */
  release(): void {
    this.released = true;
    this.disarmWatchdog();
    clearInterval(this.poller);
    this.consoleSocket?.destroy();
    if (this.child) {
      for (const s of this.child.stdio) s?.destroy();
      this.child.unref();
    }
  }

  /** Also hands the serial console's output to `listener` as it arrives (profiling). */
  onConsole(listener: (chunk: Buffer) => void): void {
    this.consoleListeners.push(listener);
  }

  /** Its start time (for the record a later run of the service reattaches by). */
  startTime(): Promise<string | undefined> {
    return processStart(this.qemuPid);
  }

  /** Connects to the serial console socket (retrying while QEMU creates it) and reads it until QEMU closes it. */
  private async readConsole(path: string): Promise<void> {
    for (let wait = 1; !this.gone && !this.released; wait = Math.min(wait * 2, 50)) {
      const s = await new Promise<Socket | undefined>((resolve) => {
        const c = createConnection(path);
        c.once('connect', () => resolve(c));
        c.once('error', () => resolve(undefined));
      });
      if (s) {
        if (this.released) return void s.destroy();
        this.consoleSocket = s;
        s.removeAllListeners('error');
        s.on('error', () => undefined);
        s.on('data', (d: Buffer) => {
          this.console.push(d);
          for (const l of this.consoleListeners) l(d);
        });
        await once(s, 'close').catch(() => undefined);
        return;
      }
      await sleep(wait);
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
    // Not our child: its pid may have been reused since (the start time tells).
    if (this.start !== undefined && processStartSync(this.qemuPid) !== this.start) return;
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
    if (this.child || !this.wrapperPids.length) return;
    // A reattached jail's bwraps exit after QEMU (init first, then the outer one, init's to reap).
    for (let t = 0; t < 1000; t += 10) {
      if ((await Promise.all(this.wrapperPids.map((p) => processStart(p)))).every((st) => st === undefined)) return;
      await sleep(10);
    }
    const { stuck } = await killLeftovers(this.wrapperPids, 4000);
    if (stuck.length) throw new Error(`QEMU's bwrap processes ${stuck.join(', ')} survived SIGKILL`);
  }
}
