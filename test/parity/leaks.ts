/** What a test checks to prove nothing leaked: sandbox cgroups and live processes. */

import type { ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { processStartSync } from '../../src/core/proc-stat.js';

/** The service instance's parent cgroup (v1 memory hierarchy, or v2 unified). */
export function cgroupParent(name: string): string {
  const lines = readFileSync('/proc/self/cgroup', 'utf8').split('\n');
  const v1 = lines.find((l) => /:(memory|[^:]*,memory[^:]*):/.test(l))?.split(':')[2];
  return v1 !== undefined ? join('/sys/fs/cgroup/memory', v1, name) : join('/sys/fs/cgroup', lines.find((l) => l.startsWith('0::'))?.slice(3) ?? '/', name);
}

/** Sandbox cgroups left under the named parent. */
export function cgroupChildren(name: string): string[] {
  const parent = cgroupParent(name);
  return existsSync(parent)
    ? readdirSync(parent, { withFileTypes: true })
        .filter((d) => d.isDirectory())
        .map((d) => d.name)
    : [];
}

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * Running, not an exited zombie: a sandbox's or VM's bwrap outlives the service that started it,
 * and when it ends it is init's to reap (a container's PID 1 may never do that).
 */
export function running(pid: number): boolean {
  return processStartSync(pid) !== undefined;
}

/** The child's exit code once it has exited (at once if it already has). */
export function exited(child: ChildProcess): Promise<number | null> {
  return new Promise((r) => (child.exitCode !== null || child.signalCode !== null ? r(child.exitCode) : child.once('exit', (code) => r(code))));
}

/** Polls `cond` every 50 ms for up to `ms`. */
export async function until(cond: () => boolean, ms: number): Promise<void> {
  for (let t = 0; t < ms && !cond(); t += 50) await sleep(50);
}

/** A /proc/<pid>/status field's values ("Uid", "Gid", "Groups", "State"…). */
export function statusField(status: string, name: string): string[] {
  return (new RegExp(`^${name}:\\s*(.*)$`, 'm').exec(status)?.[1] ?? '').trim().split(/\s+/);
}

/** Live (not zombie) processes whose real uid is `uid`. */
export async function processesOf(uid: number): Promise<number[]> {
  const found: number[] = [];
  for (const e of await readdir('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    const st = await readFile(`/proc/${e}/status`, 'utf8').catch(() => '');
    if (st && statusField(st, 'Uid')[0] === String(uid) && statusField(st, 'State')[0] !== 'Z') found.push(Number(e));
  }
  return found;
}
