/**
 * The Firecracker process: spawned directly or through the jailer, its serial console captured in
 * a ring buffer, its exit observed from the start (no race between exit and listener), and a
 * bounded shutdown ladder: SendCtrlAltDel → wait → SIGKILL → wait → give up loudly.
 */
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { spawnClean } from '../../core/clean-spawn.js';
import { KilnError } from '../../core/errors.js';
import type { FirecrackerApi } from './api-client.js';
import { ConsoleRing } from './console-ring.js';

/** What the boot steps need from a running VMM, real or fake. */
export interface VmmProcess {
  readonly pid: number | undefined;
  readonly console: ConsoleRing;
  alive(): boolean;
  /** Resolves with a human-readable reason once the process has exited. */
  readonly exited: Promise<string>;
  kill(signal: NodeJS.Signals): void;
}

export interface LaunchSpec {
  /** Absolute host path of the API socket. */
  apiSocketPath: string;
  /** Working directory: relative VM paths (vsock socket, drives) resolve against it. */
  cwd: string;
  argv: string[];
  binary: string;
}

export type Launcher = (spec: LaunchSpec) => Promise<VmmProcess>;

/** The real launcher: spawns the binary with stdout (the serial console) and stderr captured. */
export const spawnLauncher: Launcher = async (spec) => {
  const child = spawnClean(spec.binary, spec.argv, { cwd: spec.cwd, stdio: ['ignore', 'pipe', 'pipe'], detached: false });
  const proc = new ChildVmm(child);
  await Promise.race([once(child, 'spawn'), once(child, 'error').then(([e]) => {
    throw new KilnError('BOOT_FAILED', `cannot start ${spec.binary}: ${(e as Error).message}`, { cause: e });
  })]);
  return proc;
};

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

  get pid(): number | undefined {
    return this.child.pid;
  }

  alive(): boolean {
    return !this.done && this.child.exitCode === null && this.child.signalCode === null;
  }

  kill(signal: NodeJS.Signals): void {
    try {
      this.child.kill(signal);
    } catch {
      /* already gone */
    }
  }
}

export interface StopOptions {
  /** How long the guest gets to power off after Ctrl+Alt+Del. */
  gracefulMs: number;
  /** How long to wait for the exit after SIGKILL. */
  killWaitMs?: number;
}

/** Bounded ladder. Never throws for an already-dead process; throws loudly if SIGKILL does not work. */
export async function stopVmm(proc: VmmProcess, api: FirecrackerApi | undefined, options: StopOptions): Promise<'exited' | 'ctrl-alt-del' | 'killed'> {
  if (!proc.alive()) return 'exited';
  if (api && options.gracefulMs > 0) {
    const sent = await api.sendCtrlAltDel({ signal: AbortSignal.timeout(Math.min(1_000, options.gracefulMs)) }).then(() => true, () => false);
    if (sent && await within(proc.exited, options.gracefulMs)) return 'ctrl-alt-del';
  }
  proc.kill('SIGKILL');
  if (await within(proc.exited, options.killWaitMs ?? 3_000)) return 'killed';
  throw new KilnError('INTERNAL', `Firecracker process ${proc.pid} did not exit after SIGKILL; it may be stuck in the kernel (check dmesg)`);
}

export async function within(p: Promise<unknown>, ms: number): Promise<boolean> {
  const ac = new AbortController();
  const r = await Promise.race([p.then(() => true), sleep(ms, false, { signal: ac.signal }).catch(() => false)]);
  ac.abort();
  return r;
}
