/**
 * Stopping a VMM process (QEMU, Firecracker) with a bounded ladder: ask politely (SIGTERM, or the
 * backend's own request such as Firecracker's Ctrl+Alt+Del), wait, SIGKILL, wait, and give up
 * loudly: a process that survives SIGKILL is stuck in the kernel, and pretending it stopped would
 * hand its uid and cgroup to the next VM. Also the start-up scan's end for VMMs a crashed instance
 * left behind (not our children: no exit event, only /proc to watch).
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { KilnError } from './errors.js';

export interface StoppableProcess {
  readonly pid: number | undefined;
  alive(): boolean;
  kill(signal: NodeJS.Signals): void;
  /** Settles once the process has exited. */
  readonly exited: Promise<unknown>;
}

export interface KillLadderOptions {
  /** Names the process in the error ("qemu", "Firecracker process"). */
  what: string;
  /**
   * The polite rung; resolves to whether the request was delivered. Default: SIGTERM. Skipped
   * when `graceMs` is 0 (a guest that cannot react, such as a paused one).
   */
  ask?: () => Promise<boolean> | boolean;
  /** How long the process gets to exit after the polite rung. */
  graceMs: number;
  /** How long to wait for the exit after SIGKILL. */
  killWaitMs: number;
}

export type StopOutcome = 'exited' | 'asked' | 'killed';

/** Never throws for a process that is already gone; throws INTERNAL when SIGKILL did not end it. */
export async function killLadder(p: StoppableProcess, o: KillLadderOptions): Promise<StopOutcome> {
  if (!p.alive()) return 'exited';
  if (o.graceMs > 0) {
    let asked = true;
    if (o.ask) asked = await o.ask();
    else p.kill('SIGTERM');
    if (asked && (await settlesWithin(p.exited, o.graceMs))) return 'asked';
  }
  p.kill('SIGKILL');
  if (await settlesWithin(p.exited, o.killWaitMs)) return 'killed';
  throw new KilnError('INTERNAL', `${o.what} pid ${p.pid} survived SIGKILL for ${o.killWaitMs} ms; it may be stuck in the kernel (check dmesg)`);
}

/** True when `p` settles within `ms` (the timer is cleared either way). */
export async function settlesWithin(p: Promise<unknown>, ms: number): Promise<boolean> {
  const ac = new AbortController();
  const r = await Promise.race([
    p.then(
      () => true,
      () => true,
    ),
    sleep(ms, false, { signal: ac.signal }).catch(() => false),
  ]);
  ac.abort();
  return r;
}

/**
 * SIGKILLs processes a crashed instance left behind and waits until each is gone or a zombie (a
 * killed child of a dead parent stays one until init reaps it). Returns the pids SIGKILL reached,
 * and those still running at the deadline.
 */
export async function killLeftovers(pids: number[], timeoutMs: number, procDir = '/proc'): Promise<{ killed: number[]; stuck: number[] }> {
  const killed = pids.filter((pid) => {
    try {
      process.kill(pid, 'SIGKILL');
      return true;
    } catch {
      return false; // exited meanwhile
    }
  });
  const running = async (pid: number): Promise<boolean> =>
    readFile(join(procDir, String(pid), 'stat'), 'utf8').then(
      (s) => !/\) Z /.test(s),
      () => false,
    );
  let stuck = killed;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const alive = await Promise.all(stuck.map(running));
    stuck = stuck.filter((_, i) => alive[i]);
    if (stuck.length === 0 || Date.now() > deadline) return { killed, stuck };
    await sleep(20);
  }
}
