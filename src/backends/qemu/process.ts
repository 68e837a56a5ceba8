/**
 * One QEMU process: spawn, console capture, a boot watchdog, and the kill ladder
 * (SIGTERM, bounded wait, SIGKILL, bounded wait, give up loudly).
 */
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { spawnClean } from '../../core/clean-spawn.js';
import { ConsoleRing } from './console.js';

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export type QemuLog = (level: 'debug' | 'info' | 'warn', message: string, fields?: Record<string, unknown>) => void;

export class QemuProcess {
  readonly console = new ConsoleRing(200);
  readonly pid: number;
  /** Resolves when the process has exited and its console output is fully read. */
  readonly exited: Promise<ExitInfo>;
  private exitInfo: ExitInfo | undefined;
  private watchdog: NodeJS.Timeout | undefined;
  watchdogFired = false;

  private constructor(private readonly child: ChildProcess) {
    this.pid = child.pid!;
    child.stdout!.on('data', (d: Buffer) => this.console.push(d));
    child.stderr!.on('data', (d: Buffer) => this.console.push(d));
    const closed = once(child, 'close') as Promise<[number | null, NodeJS.Signals | null]>;
    this.exited = closed.then(([code, signal]) => {
      this.disarmWatchdog();
      this.exitInfo = { code, signal };
      return this.exitInfo;
    });
  }

  /** `passFd` becomes fd 3 of QEMU (the migration stream: `fd:3`, so no shell is ever spawned). */
  static async spawn(binary: string, args: string[], passFd?: number): Promise<QemuProcess> {
    const child = spawnClean(binary, args, { stdio: passFd === undefined ? ['ignore', 'pipe', 'pipe'] : ['ignore', 'pipe', 'pipe', passFd] });
    await new Promise<void>((resolve, reject) => {
      child.once('spawn', resolve);
      child.once('error', reject);
    });
    return new QemuProcess(child);
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
    if (!this.alive) return true;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<false>((resolve) => { timer = setTimeout(() => resolve(false), ms); });
    const r = await Promise.race([this.exited.then(() => true as const), timeout]);
    clearTimeout(timer);
    return r;
  }

  /** The kill ladder. Throws only when even SIGKILL did not end the process. */
  async stop(graceMs = 2000): Promise<void> {
    if (!this.alive) return;
    this.signal('SIGTERM');
    if (await this.waitExit(graceMs)) return;
    this.signal('SIGKILL');
    if (await this.waitExit(5000)) return;
    throw new Error(`qemu pid ${this.pid} survived SIGKILL for 5 s`);
  }
}
