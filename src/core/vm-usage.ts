/**
 * Usage of a microVM sandbox, the same for QEMU and Firecracker, so an exec's `oomKilled` means the
 * same on both. Memory is the VMM process's proportional set size (a clone's share of its
 * template's RAM counts only for what it touched). OOM kills are the guest kernel's own count
 * (`oom_kill` in the guest's /proc/vmstat, read through the agent): the guest's RAM is the
 * sandbox's memory limit and its OOM killer is what ends a process over it. A host cgroup around
 * the VMM (QEMU's jail, Firecracker's jailer or confinement) only ever sees the whole VM killed,
 * which ends the sandbox rather than an exec. The core reads this only after an exec died of
 * SIGKILL (core/sandbox.ts), so the guest round trip is off every other path.
 */
import { readFile } from 'node:fs/promises';
import type { AgentClient } from '../protocol/agent-client.js';
import type { SandboxUsage } from './backend.js';

export async function microVmUsage(vmmPid: number | undefined, agent: AgentClient): Promise<SandboxUsage> {
  const [memoryBytes, oomKills] = await Promise.all([vmmPssBytes(vmmPid), guestOomKills(agent).catch(() => undefined)]);
  return { memoryBytes, oomKills };
}

async function vmmPssBytes(pid: number | undefined): Promise<number | undefined> {
  if (!pid) return undefined;
  const smaps = await readFile(`/proc/${pid}/smaps_rollup`, 'utf8').catch(() => '');
  const pss = /^Pss:\s+(\d+) kB/m.exec(smaps);
  return pss ? Number(pss[1]) * 1024 : undefined;
}

/** The guest kernel's OOM kill count so far (monotonic), or undefined when it does not say. */
export async function guestOomKills(agent: AgentClient): Promise<number | undefined> {
  const m = /^oom_kill (\d+)$/m.exec(await agent.readText('/proc/vmstat'));
  return m ? Number(m[1]) : undefined;
}
