/**
 * Namespace backend: an exec's processes live in a per-exec cgroup the sandbox cannot leave or
 * reach, timeout/cancel/delete kill all of them, and the agent is out of the OOM killer's reach.
 */
import assert from 'node:assert/strict';
import { readdirSync, readlinkSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { KilnClient } from '../../sdk/src/index.js';
import { agentOutOfOomReach, cancelKillsDetached, DETACH_SCRIPT, survivors, timeoutKillsDetached } from '../parity/containment.js';
import { startTestServer, type TestServer, withSandbox } from '../parity/fixture.js';
import { alive } from '../parity/leaks.js';

/** Host pids in the same pid namespace as pid (other kiln instances may reuse the same uids). */
function hostProcessesInPidNsOf(pid: number): number[] {
  const ns = readlinkSync(`/proc/${pid}/ns/pid`);
  const pids: number[] = [];
  for (const p of readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      if (readlinkSync(`/proc/${p}/ns/pid`) === ns) pids.push(Number(p));
    } catch {
      /* exited */
    }
  }
  return pids;
}

describe('exec containment on namespace', { skip: process.getuid?.() === 0 ? undefined : 'needs root', timeout: 300_000 }, () => {
  let t: TestServer;
  let kiln: KilnClient;
  before(async () => {
    t = await startTestServer({ KILN_BACKEND: 'namespace' });
    kiln = t.client;
  });
  after(async () => {
    await t?.close();
  });

  it('a timeout kills every detached process of the exec', async () => {
    await withSandbox(kiln, { pack: 'python' }, (id) => timeoutKillsDetached(kiln, id, 1));
  });

  it('a cancel kills every detached process of the exec', async () => {
    await withSandbox(kiln, { pack: 'python' }, (id) => cancelKillsDetached(kiln, id, 1));
  });

  it('background processes of a finished exec keep running until the sandbox is deleted, and none outlives it', async () => {
    const sb = await kiln.sandboxes.create({ pack: 'python' });
    let inside: number[] = [];
    try {
      const r = await kiln.sandboxes.exec(sb.id, { cmd: DETACH_SCRIPT.replace('sleep 1; echo started; sleep 1000', 'sleep 1; echo started') });
      assert.equal(r.exitCode, 0, r.stderr);
      assert.equal(await survivors(kiln, sb.id), 4, 'background processes stay (servers started by one exec)');
      inside = hostProcessesInPidNsOf(Number((await kiln.sandboxes.get(sb.id)).details.pid));
      assert.ok(inside.length >= 5, `agent and survivors: ${inside}`);
    } finally {
      await kiln.sandboxes.delete(sb.id);
    }
    let left = inside.filter(alive);
    for (let i = 0; i < 20 && left.length; i++) {
      await sleep(100);
      left = inside.filter(alive);
    }
    assert.deepEqual(left, [], 'processes outlived delete');
  });

  it("user code cannot reach the cgroup filesystem or the agent's descriptors", async () => {
    await withSandbox(kiln, { pack: 'python' }, async (id) => {
      const r = await kiln.sandboxes.exec(id, { cmd: 'grep -cE " - cgroup2? " /proc/self/mountinfo; find / -xdev -name cgroup.procs 2>/dev/null | wc -l; ls /.kiln 2>&1' });
      const lines = r.stdout.trim().split('\n');
      assert.deepEqual(lines.slice(0, 2), ['0', '0'], r.stdout);
      assert.match(lines[2]!, /No such file/);
      // The agent's descriptor numbers may be listed (same uid), but not one can be followed:
      // the agent is not dumpable, and following /proc/1/fd/N takes ptrace access.
      const viaFd = await kiln.sandboxes.exec(id, {
        cmd: 'n=0; for f in /proc/1/fd/*; do n=$((n+1)); readlink "$f" && echo FOLLOWED; ls "$f/" 2>/dev/null && echo FOLLOWED; done; echo fds=$n',
      });
      assert.doesNotMatch(viaFd.stdout, /FOLLOWED/, viaFd.stdout);
      assert.match(viaFd.stdout, /fds=[1-9]/);
    });
  });

  it("user code cannot raise the agent's OOM score, and an OOM in the sandbox never kills the agent", async () => {
    await withSandbox(kiln, { pack: 'python', memoryMib: 96 }, (id) => agentOutOfOomReach(kiln, id, 1));
  });
});
