/**
 * Pieces both microVM backends use to start a VMM confined by bubblewrap (QEMU's jail in
 * backends/qemu/jail.ts, unjailed Firecracker's confinement in backends/firecracker/confine.ts):
 * the host root a VMM binary needs, bwrap's --info-fd handshake, and finding the VMM below
 * bwrap's namespace init.
 */
import { lstat, readdir, readFile, readlink } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';

/** /usr and the host's top-level links into it, so a VMM and its libraries can be exec'd. */
export async function hostRootArgs(binary: string): Promise<string[]> {
  const args = ['--ro-bind', '/usr', '/usr'];
  for (const top of ['/bin', '/sbin', '/lib', '/lib32', '/lib64', '/libx32']) {
    const st = await lstat(top).catch(() => undefined);
    if (st?.isSymbolicLink()) args.push('--symlink', await readlink(top), top);
    else if (st?.isDirectory()) args.push('--ro-bind', top, top);
  }
  // A VMM outside /usr (a build in /opt) is bound on its own; its libraries must be in the root.
  if (binary.startsWith('/') && !binary.startsWith('/usr/')) args.push('--ro-bind', binary, binary);
  return args;
}

/** bwrap's --info-fd JSON names its namespace PID 1 by host pid. */
export function readChildPid(info: Readable, exited: Promise<unknown>): Promise<number> {
  return new Promise((resolve, reject) => {
    let text = '';
    const onData = (c: Buffer): void => {
      text += c.toString();
      const m = /"child-pid":\s*(\d+)/.exec(text);
      if (m) {
        info.off('data', onData);
        resolve(Number(m[1]));
      } else if (text.length > 64 * 1024) {
        reject(new Error('bwrap info output is not what kiln expects'));
      }
    };
    info.on('data', onData);
    void exited.then(() => reject(new Error('bwrap exited before starting the VMM')));
  });
}

/**
 * The host pid of `parent`'s child (the VMM, forked by bwrap's namespace PID 1 once released). Pids
 * are handed out in order, so it is almost always the next one; otherwise /proc is searched.
 */
export async function childOf(parent: number, exited: Promise<unknown>): Promise<number> {
  let gone = false;
  void exited.then(() => {
    gone = true;
  });
  for (let attempt = 0; ; attempt++) {
    const candidates = attempt % 10 === 9 ? (await readdir('/proc')).filter((e) => /^\d+$/.test(e)).map(Number) : [parent + 1, parent + 2];
    for (const pid of candidates) {
      const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
      // The fields after the command name (which may contain spaces) start with state, ppid.
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === parent) return pid;
    }
    if (gone) throw new Error('bwrap exited before starting the VMM');
    if (attempt > 2000) throw new Error(`the VMM did not start below bwrap pid ${parent}`);
    await sleep(1);
  }
}
