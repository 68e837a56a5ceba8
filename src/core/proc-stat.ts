/**
 * Whether a process has exited, read from /proc. /proc/<pid>/stat gives the state of the
 * process's first thread (the thread-group leader), and that thread can be a zombie while the
 * process runs on:
 * - another thread calls execve: the kernel ends every other thread, the leader included, and
 *   once the leader is a zombie the exec'ing thread takes its pid over (fs/exec.c, de_thread).
 *   The agent re-executes itself that way right after its start (agent/privdrop_linux.go: Go
 *   runs it on whichever thread the goroutine is on). Reading that 'Z' as "exited" failed about
 *   one sandbox start in 600 under load with BOOT_FAILED while the agent was fine;
 * - the leader thread alone ended (pthread_exit).
 * So a zombie leader means "exited" only when no other thread is left: /proc/<pid>/status counts
 * them ("Threads:", the zombie leader included until the process is reaped or the exec is done).
 * With the pid, the start time names one process for good (a reused pid has another): the
 * backends that keep sandboxes across a restart of the service (namespace, qemu, firecracker)
 * recognise theirs by it.
 */
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * Field 22 of /proc/<pid>/stat (start time in clock ticks; an exec from another thread keeps
 * it), or undefined once the process has exited (gone, or a zombie with no thread left).
 */
export async function processStart(pid: number, procDir = '/proc'): Promise<string | undefined> {
  const entry = join(procDir, String(pid));
  const fields = statFields(await readFile(join(entry, 'stat'), 'utf8').catch(() => ''));
  if (!fields) return undefined;
  if (fields[0] === 'Z' && !(await readFile(join(entry, 'status'), 'utf8').then(runsOn, () => false))) return undefined;
  return fields[19];
}

/** processStart for a signal that must go out now (to a process kiln did not start: a reattached VMM). */
export function processStartSync(pid: number, procDir = '/proc'): string | undefined {
  const entry = join(procDir, String(pid));
  const fields = statFields(readText(join(entry, 'stat')));
  if (!fields) return undefined;
  if (fields[0] === 'Z' && !runsOn(readText(join(entry, 'status')))) return undefined;
  return fields[19];
}

/** True when /proc/<pid> (procEntry) is a zombie no thread of which runs: it holds nothing but its pid. */
export function isExitedZombie(procEntry: string): boolean {
  const fields = statFields(readText(join(procEntry, 'stat')));
  if (fields?.[0] !== 'Z') return false;
  const status = readText(join(procEntry, 'status'));
  return !status || !runsOn(status);
}

/** The fields after the command name (the first is the state), or undefined for an empty stat. */
function statFields(stat: string): string[] | undefined {
  if (!stat) return undefined;
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
}

/**
 * From /proc/<pid>/status: the process still runs when its leader is no zombie (any more: an
 * exec finished since stat was read) or another thread is left.
 */
function runsOn(status: string): boolean {
  const state = /^State:\s*(\S)/m.exec(status)?.[1];
  const threads = Number(/^Threads:\s*(\d+)/m.exec(status)?.[1] ?? 0);
  return (state !== undefined && state !== 'Z') || threads > 1;
}

function readText(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}
