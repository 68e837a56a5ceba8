/**
 * Starting the processes that run or host sandbox code (bwrap, QEMU, Firecracker) with no
 * descriptor but the ones the spawn passes. Node's child_process hands every descriptor the
 * service inherited without close-on-exec to its children (a pipe of whoever started kiln, say),
 * and from there into each sandbox. The child is exec'd through `kiln-agent --exec-clean-fds N
 * -- binary args`, which marks every descriptor from N up close-on-exec, then execs the binary.
 */
import { type ChildProcess, type SpawnOptions, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { REPO_ROOT } from './config.js';
import { KilnError } from './errors.js';

/** The agent binary the server is configured with (KILN_AGENT), else the repository's build. */
export function defaultFdWrapper(): string {
  return process.env.KILN_AGENT ?? resolve(REPO_ROOT, 'build/kiln-agent');
}

/**
 * `spawn(binary, args, options)`, but the child keeps only the descriptors `options.stdio` lists.
 * With `tap`, the wrapper also creates that (non-persistent) TAP and leaves it open at the first
 * descriptor after them: a VMM in its own network namespace inherits its host link this way.
 */
export function spawnClean(binary: string, args: string[], options: SpawnOptions, wrapper = defaultFdWrapper(), o: { tap?: string } = {}): ChildProcess {
  if (!existsSync(wrapper)) {
    throw new KilnError('IMAGE_MISSING', `the kiln-agent binary ${wrapper} is missing (it starts ${binary} without the service's descriptors): run "bash agent/build.sh"`);
  }
  const keep = Array.isArray(options.stdio) ? Math.max(3, options.stdio.length) : 3;
  return spawn(wrapper, ['--exec-clean-fds', String(keep), ...(o.tap ? ['--tap', o.tap] : []), '--', binary, ...args], options);
}
