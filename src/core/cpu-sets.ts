/**
 * Which host CPUs a sandbox sees. A sandbox with a limit of `cpus` gets ceil(cpus) whole CPUs (a
 * cpuset, and in namespace sandboxes the agent's affinity and /sys view): its runtimes then size
 * their thread pools to what the quota lets them use, while a fractional limit keeps its quota.
 *
 * Spreading: each CPU counts the live sandboxes holding it; a sandbox gets the least-held CPUs,
 * and among equally held ones those handed out longest ago, so sandboxes made one after another
 * alternate over the cores instead of piling onto CPU 0.
 */
import { readFileSync } from 'node:fs';

/** The kernel's list format ("0-3,8") as sorted, distinct CPU numbers. */
export function parseCpuList(text: string): number[] {
  const cpus = new Set<number>();
  for (const part of text.trim().split(',')) {
    if (!part) continue;
    const [lo, hi] = part.split('-').map(Number);
    if (lo === undefined || !Number.isInteger(lo) || (hi !== undefined && !Number.isInteger(hi))) throw new Error(`bad CPU list "${text}"`);
    for (let c = lo; c <= (hi ?? lo); c++) cpus.add(c);
  }
  return [...cpus].sort((a, b) => a - b);
}

/** Sorted CPU numbers in the kernel's list format, runs folded into ranges. */
export function formatCpuList(cpus: readonly number[]): string {
  const parts: string[] = [];
  for (let i = 0; i < cpus.length; ) {
    let j = i;
    while (j + 1 < cpus.length && cpus[j + 1] === cpus[j]! + 1) j++;
    parts.push(j > i ? `${cpus[i]}-${cpus[j]}` : `${cpus[i]}`);
    i = j + 1;
  }
  return parts.join(',');
}

/** The CPUs this process may run on (its cpuset and affinity), from /proc/self/status. */
export function allowedCpus(): number[] {
  const m = /^Cpus_allowed_list:\s*(\S+)$/m.exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? parseCpuList(m[1]!) : [0];
}

/** Whole CPUs a limit of `cpus` is shown as: a fraction rounds up, never more than the host has. */
export function visibleCpuCount(cpus: number, available: number): number {
  return Math.max(1, Math.min(available, Math.ceil(cpus - 1e-9)));
}

export class CpuSpreader {
  private readonly held = new Map<number, number>();
  private readonly lastGiven = new Map<number, number>();
  private handouts = 0;

  constructor(readonly cpus: readonly number[] = allowedCpus()) {
    for (const c of cpus) {
      this.held.set(c, 0);
      this.lastGiven.set(c, 0);
    }
  }

  /** The CPUs for a sandbox limited to `limit` CPUs; give them back with release(). */
  acquire(limit: number): number[] {
    const count = visibleCpuCount(limit, this.cpus.length);
    const order = [...this.cpus].sort((a, b) => this.held.get(a)! - this.held.get(b)! || this.lastGiven.get(a)! - this.lastGiven.get(b)! || a - b);
    const chosen = order.slice(0, count).sort((a, b) => a - b);
    for (const c of chosen) {
      this.held.set(c, this.held.get(c)! + 1);
      this.lastGiven.set(c, ++this.handouts);
    }
    return chosen;
  }

  /** Counts CPUs given out before (a sandbox reattached after a restart of the service). */
  hold(cpus: readonly number[]): void {
    for (const c of cpus) if (this.held.has(c)) this.held.set(c, this.held.get(c)! + 1);
  }

  release(cpus: readonly number[]): void {
    for (const c of cpus) {
      const n = this.held.get(c);
      if (n) this.held.set(c, n - 1);
    }
  }

  /** How many live sandboxes hold each CPU (for tests and listings). */
  load(): Record<number, number> {
    return Object.fromEntries(this.held);
  }
}
