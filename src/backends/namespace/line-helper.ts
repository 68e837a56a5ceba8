/**
 * The service's side of a long-lived `kiln-agent host …` helper that takes one JSON request per
 * line on stdin and answers one JSON object per line on stdout (net-inside.ts, spawner.ts). The
 * helper is idle between sandboxes, so it never keeps the service running; what it wrote to
 * stderr last is kept for the error that names its end.
 */
import type { ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';

export interface LineHelper {
  /** The last 2,000 characters the helper wrote to stderr. */
  stderr(): string;
}

/**
 * Wires up a just-spawned helper: `onMessage` gets each line that parses as JSON; `onGone` is
 * told once why it ended (it could not run, or it exited), with the error text to give callers.
 */
export function attachLineHelper(name: string, child: ChildProcess, onMessage: (m: unknown) => void, onGone: (err: Error) => void): LineHelper {
  let stderr = '';
  child.unref();
  for (const s of [child.stdin, child.stdout, child.stderr] as Array<{ unref?: () => void } | null>) s?.unref?.();
  child.stdin!.on('error', () => undefined); // its exit, below, says why
  child.stderr!.on('data', (c: Buffer) => {
    stderr = (stderr + c.toString()).slice(-2000);
  });
  createInterface({ input: child.stdout! }).on('line', (line) => {
    let m: unknown;
    try {
      m = JSON.parse(line);
    } catch {
      return;
    }
    onMessage(m);
  });
  let ended = false;
  const gone = (why: string): void => {
    if (ended) return;
    ended = true;
    onGone(new Error(`kiln-agent host ${name} ${why}${stderr.trim() ? `: ${stderr.trim()}` : ''}`));
  };
  child.on('error', (e) => gone(`could not run (${e.message})`));
  child.on('exit', (code, sig) => gone(`exited (${sig ?? `code ${code}`})`));
  return { stderr: () => stderr };
}
