/**
 * Runs a build tool as its own process group so an abort reaches everything it forked (mmdebstrap
 * runs apt, dpkg and maintainer scripts). Output is handed over line by line; the tail is kept so
 * a failure can say what the tool said last.
 */
import { spawn } from 'node:child_process';
import { constants } from 'node:os';
import { KilnError } from '../core/errors.js';

export interface RunOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  signal?: AbortSignal;
  timeoutMs: number;
  /** Called for every line of stdout and stderr; '\r' also ends a line (progress bars). */
  onLine?: (line: string, stream: 'stdout' | 'stderr') => void;
  /** How many trailing lines to keep for error messages. */
  tailLines?: number;
}

export interface RunResult {
  exitCode: number;
  tail: string[];
}

const TERM_GRACE_MS = 10_000;
const KILL_GRACE_MS = 5_000;

function splitter(onLine: (line: string) => void): { push(chunk: Buffer): void; end(): void } {
  let rest = '';
  return {
    push(chunk) {
      const parts = (rest + chunk.toString('utf8')).split(/\r\n|\r|\n/);
      rest = parts.pop() ?? '';
      for (const p of parts) if (p.trim() !== '') onLine(p);
    },
    end() {
      if (rest.trim() !== '') onLine(rest);
      rest = '';
    },
  };
}

/**
 * Resolves with the exit code (never rejects for a non-zero exit); rejects when the tool cannot be
 * started, or with TIMEOUT / the abort reason after the whole process group has been stopped.
 */
export function runProcess(cmd: string, args: string[], opts: RunOptions): Promise<RunResult> {
  const tailMax = opts.tailLines ?? 40;
  const tail: string[] = [];
  return new Promise<RunResult>((resolve, reject) => {
    if (opts.signal?.aborted) {
      reject(opts.signal.reason ?? new Error('aborted'));
      return;
    }
    // stdin is /dev/null: mmdebstrap reads apt sources from a non-tty stdin in some invocations.
    const child = spawn(cmd, args, { cwd: opts.cwd, env: opts.env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let stopReason: unknown;
    let exited = false;
    const line = (stream: 'stdout' | 'stderr') => (l: string) => {
      tail.push(l);
      if (tail.length > tailMax) tail.shift();
      opts.onLine?.(l, stream);
    };
    const out = splitter(line('stdout'));
    const err = splitter(line('stderr'));
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));

    const signalGroup = (sig: NodeJS.Signals) => {
      try {
        if (child.pid !== undefined) process.kill(-child.pid, sig);
      } catch {
        // The group is already gone.
      }
    };
    // Bounded ladder: SIGTERM lets mmdebstrap unmount and clean up; SIGKILL if it will not.
    const stop = (reason: unknown) => {
      if (stopReason !== undefined || exited) return;
      stopReason = reason;
      signalGroup('SIGTERM');
      const killTimer = setTimeout(() => {
        signalGroup('SIGKILL');
        const giveUp = setTimeout(() => {
          reject(new KilnError('INTERNAL', `${cmd} (pid ${child.pid}) did not exit after SIGKILL; it may still hold files under the build dir`));
        }, KILL_GRACE_MS);
        giveUp.unref();
      }, TERM_GRACE_MS);
      killTimer.unref();
    };
    const onAbort = () => stop(opts.signal?.reason ?? new Error('aborted'));
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    const timer = setTimeout(() => stop(new KilnError('TIMEOUT', `${cmd} did not finish within ${Math.round(opts.timeoutMs / 1000)}s`)), opts.timeoutMs);

    child.on('error', (e) => {
      exited = true;
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      const hint = (e as NodeJS.ErrnoException).code === 'ENOENT' ? ` (is it installed? see the apt packages in images/packs/README.md)` : '';
      reject(new KilnError('INTERNAL', `cannot run ${cmd}: ${e.message}${hint}`, { cause: e }));
    });
    child.on('close', (code, sig) => {
      exited = true;
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      out.end();
      err.end();
      // The leader is gone; make sure no stray member of its group outlives it.
      signalGroup('SIGKILL');
      if (stopReason !== undefined) reject(stopReason);
      else resolve({ exitCode: code ?? 128 + (sig ? constants.signals[sig] : 0), tail });
    });
  });
}
