/**
 * Every process an exec starts dies with it (issue #12.1), however it detaches, and user code
 * cannot make the agent the OOM killer's choice (#12.5). Shared by the namespace and QEMU suites.
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import type { KilnClient } from '../../sdk/src/index.js';

/**
 * Starts a survivor in every way of detaching: a double fork into a new session with a cleared
 * environment (re-parented to PID 1), a new process group, a non-dumpable python in a new session
 * with its environment cleared, and plain background. Each one's command line says kiln-survivor
 * or sleep 100N; then the exec itself waits.
 */
export const DETACH_SCRIPT = [
  `( setsid sh -c 'exec env -i sleep 1001' & )`,
  `python3 -c 'import os; os.setpgid(0, 0); os.execvp("sleep", ["sleep", "1002"])' &`,
  `( python3 -c 'import ctypes, os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)
        os.environ.clear()
        time.sleep(1003)
' kiln-survivor & )`,
  'nohup sleep 1004 >/dev/null 2>&1 &',
  'sleep 1; echo started; sleep 1000',
].join('\n');

/** Counts processes in the sandbox whose command line marks them as one of DETACH_SCRIPT's. */
export const COUNT_SURVIVORS = [
  'python3',
  '-c',
  `import os, re
n = 0
for p in os.listdir('/proc'):
    if not p.isdigit() or int(p) == os.getpid():
        continue
    try:
        cmd = open('/proc/%s/cmdline' % p, 'rb').read()
    except OSError:
        continue
    if re.search(rb'kiln-survivor|sleep\\x00100[0-9]', cmd):
        n += 1
print(n)`,
];

export async function survivors(kiln: KilnClient, id: string): Promise<number> {
  const r = await kiln.sandboxes.exec(id, { cmd: COUNT_SURVIVORS });
  assert.equal(r.exitCode, 0, r.stderr);
  return Number(r.stdout.trim());
}

/** Polls until no survivor is left (the kill is synchronous in the agent; this only absorbs slow CI). */
export async function expectNoSurvivors(kiln: KilnClient, id: string, what: string): Promise<void> {
  let n = -1;
  for (let i = 0; i < 10; i++) {
    n = await survivors(kiln, id);
    if (n === 0) return;
    await sleep(300);
  }
  assert.equal(n, 0, `${n} detached process(es) survived ${what}`);
}

export async function timeoutKillsDetached(kiln: KilnClient, id: string, slow: number): Promise<void> {
  const r = await kiln.sandboxes.exec(id, { cmd: DETACH_SCRIPT, timeoutMs: 4000 * slow });
  assert.equal(r.timedOut, true, JSON.stringify(r));
  assert.match(r.stdout, /started/, `the survivors were started: ${r.stderr}`);
  await expectNoSurvivors(kiln, id, 'the timeout');
}

export async function cancelKillsDetached(kiln: KilnClient, id: string, slow: number): Promise<void> {
  const ac = new AbortController();
  const events = kiln.sandboxes.execStream(id, { cmd: DETACH_SCRIPT, timeoutMs: 120_000 * slow }, ac.signal);
  let started = false;
  try {
    for await (const ev of events) {
      if (ev.type === 'stdout' && String(ev.data).includes('started')) {
        started = true;
        ac.abort();
      }
    }
  } catch (e) {
    if (!ac.signal.aborted) throw e;
  }
  assert.equal(started, true, 'the survivors were started');
  await expectNoSurvivors(kiln, id, 'the cancel');
}

/** User code cannot raise PID 1's OOM score, and filling memory kills user code, never the agent. */
export async function agentOutOfOomReach(kiln: KilnClient, id: string, slow: number): Promise<void> {
  const raise = await kiln.sandboxes.exec(id, { cmd: 'echo 1000 > /proc/1/oom_score_adj; echo rc=$?; echo 15 > /proc/1/oom_adj; echo rc=$?; cat /proc/1/oom_score_adj' });
  assert.doesNotMatch(raise.stdout, /rc=0/, `PID 1's OOM score is writable: ${raise.stdout}`);
  assert.notEqual(raise.stdout.trim().split('\n').at(-1), '1000');
  // Nor make itself unkillable (on a VM PID 1 runs at -1000, which children would inherit).
  const own = await kiln.sandboxes.exec(id, { cmd: 'cat /proc/self/oom_score_adj; echo -1000 > /proc/self/oom_score_adj; echo rc=$?' });
  assert.match(own.stdout, /^0\n/, own.stdout);
  assert.doesNotMatch(own.stdout, /rc=0/, own.stdout);
  const fill = await kiln.sandboxes.exec(id, {
    cmd: ['python3', '-c', 'b = []\nwhile True: b.append(bytearray(8*1024*1024))'],
    timeoutMs: 60_000 * slow,
  });
  assert.equal(fill.oomKilled, true, JSON.stringify(fill));
  assert.equal((await kiln.sandboxes.exec(id, { cmd: 'echo agent alive' })).stdout, 'agent alive\n');
}
