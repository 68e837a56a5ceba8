/** Turns core results into API bodies. */
import type { ExecOutcome } from '../../core/exec.js';
import { encodeOutput, type OutputEncoding } from './encoding.js';

export function execBody(r: ExecOutcome, encoding: OutputEncoding = 'utf8'): Record<string, unknown> {
  return {
    stdout: encodeOutput(r.stdout, encoding),
    stderr: encodeOutput(r.stderr, encoding),
    encoding,
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
    stdoutTruncated: r.stdoutDroppedBytes > 0,
    stderrTruncated: r.stderrDroppedBytes > 0,
    stdoutDroppedBytes: r.stdoutDroppedBytes,
    stderrDroppedBytes: r.stderrDroppedBytes,
    durationMs: r.durationMs,
    usage: { cpuUserMs: r.cpuUserMs, cpuSystemMs: r.cpuSystemMs, peakMemoryBytes: r.peakMemoryBytes },
  };
}
