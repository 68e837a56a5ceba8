/**
 * Whether a process has exited (core/proc-stat.ts), with real processes and over a
 * stand-in /proc: a zombie first thread is not an exited process while another thread runs.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { describe, it } from 'node:test';
import { isExitedZombie, processStart, processStartSync } from '../../src/core/proc-stat.js';

/** Polls until /proc/<pid>/stat shows a zombie (in the Python helpers below). */
const WAIT_ZOMBIE = `
def wait_zombie(pid):
    while True:
        s = open(f"/proc/{pid}/stat").read()
        if s[s.rindex(")") + 2] == "Z":
            return
        time.sleep(0.001)
`;

/** Main thread ends alone (pthread_exit): the leader is a zombie, as during an exec from another thread. */
const LEADER_EXITS = `
import ctypes, os, sys, threading, time
${WAIT_ZOMBIE}
def other():
    wait_zombie(os.getpid())
    print(os.getpid(), flush=True)
    sys.stdin.read()
threading.Thread(target=other).start()
ctypes.CDLL(None).pthread_exit(None)
`;

/** A child that exits and is not reaped while its parent waits on stdin. */
const UNREAPED_CHILD = `
import os, sys, time
${WAIT_ZOMBIE}
pid = os.fork()
if pid == 0:
    os._exit(0)
wait_zombie(pid)
print(pid, flush=True)
sys.stdin.read()
`;

async function python(code: string): Promise<{ child: ChildProcess; pid: number }> {
  const child = spawn('python3', ['-c', code], { stdio: ['pipe', 'pipe', 'inherit'] });
  const [line] = (await once(createInterface({ input: child.stdout! }), 'line')) as [string];
  return { child, pid: Number(line) };
}

async function ends(child: ChildProcess): Promise<void> {
  const exited = once(child, 'exit');
  child.stdin!.end();
  await exited;
}

describe('process exit from /proc', () => {
  it('a process whose first thread is a zombie runs on while another thread does', async () => {
    const { child, pid } = await python(LEADER_EXITS);
    try {
      const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      assert.equal(fields[0], 'Z', 'the leader is a zombie');
      assert.equal(await processStart(pid), fields[19], 'its start time: it has not exited');
      assert.equal(isExitedZombie(`/proc/${pid}`), false);
    } finally {
      await ends(child);
    }
    assert.equal(await processStart(pid), undefined, 'gone once its last thread ended');
  });

  it('a zombie with no thread left has exited', async () => {
    const { child, pid } = await python(UNREAPED_CHILD);
    try {
      assert.equal(await processStart(pid), undefined);
      assert.equal(isExitedZombie(`/proc/${pid}`), true);
    } finally {
      await ends(child);
    }
  });

  it('reads the stat and status it finds (a comm with ") ", an exec done between the two reads)', async () => {
    const proc = await mkdtemp(join(tmpdir(), 'kiln-proc-'));
    const entry = async (pid: number, state: string, status?: string): Promise<void> => {
      await mkdir(join(proc, String(pid)));
      const after = [state, ...Array.from({ length: 18 }, (_, i) => String(i + 1)), `start${pid}`, '0'].join(' ');
      await writeFile(join(proc, String(pid), 'stat'), `${pid} (odd) S name) ${after}\n`);
      if (status) await writeFile(join(proc, String(pid), 'status'), status);
    };
    try {
      await entry(10, 'S');
      await entry(11, 'Z', 'Name:\tx\nState:\tZ (zombie)\nThreads:\t2\n');
      await entry(12, 'Z', 'Name:\tx\nState:\tS (sleeping)\nThreads:\t1\n');
      await entry(13, 'Z', 'Name:\tx\nState:\tZ (zombie)\nThreads:\t1\n');
      await entry(14, 'Z');
      assert.equal(await processStart(10, proc), 'start10');
      assert.equal(await processStart(11, proc), 'start11', 'a zombie leader with a live thread');
      assert.equal(await processStart(12, proc), 'start12', 'the exec finished after stat was read');
      assert.equal(await processStart(13, proc), undefined);
      assert.equal(await processStart(14, proc), undefined, 'reaped after stat was read');
      assert.equal(await processStart(15, proc), undefined, 'no such process');
      assert.deepEqual(
        [10, 11, 12, 13, 14, 15].map((pid) => processStartSync(pid, proc)),
        ['start10', 'start11', 'start12', undefined, undefined, undefined],
        'the sync reading (a signal to a reattached VMM) agrees',
      );
      assert.deepEqual(
        [10, 11, 12, 13, 14, 15].map((pid) => isExitedZombie(join(proc, String(pid)))),
        [false, false, false, true, true, false],
      );
    } finally {
      await rm(proc, { recursive: true, force: true });
    }
  });
});
