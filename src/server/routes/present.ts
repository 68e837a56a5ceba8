/** Turns core results into API bodies. */
import type { ExecOutcome } from '../../core/exec.js';

export function execBody(r: ExecOutcome): Record<string, unknown> {
  return {
    stdout: r.stdout.toString('utf8'),
    stderr: r.stderr.toString('utf8'),
    ...execSummary(r),
  };
}

export function execSummary(r: Omit<ExecOutcome, 'stdout' | 'stderr'>): Record<string, unknown> {
  return {
    exitCode: r.exitCode,
    signal: r.signal,
    timedOut: r.timedOut,
    oomKilled: r.oomKilled,
    outputTruncated: r.outputTruncated,
    durationMs: r.durationMs,
    usage: { cpuUserMs: r.cpuUserMs, cpuSystemMs: r.cpuSystemMs, peakMemoryBytes: r.peakMemoryBytes },
  };
}
