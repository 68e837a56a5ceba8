/**
 * Fork runs through the API (issue 15): POST /v1/run of a python snippet is forked in a runner
 * (core/runners.ts) and answers `forked: true`; what the program sees and what the run answers
 * match the same file run by the pack's command in a sandbox of its own (`cmd`, never forked);
 * the runner is never a sandbox of the API; a run the zygote cannot take runs the usual way.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import type { KilnClient, RunOptions } from '../../sdk/src/index.js';
import { startTestServer, type TestServer } from '../parity/fixture.js';

const INTROSPECT = `import os, sys, stat
st = os.stat(__file__)
print(sys.argv, sys.orig_argv, __name__, __file__, sys.path[0], os.getcwd())
print(stat.S_ISREG(st.st_mode), oct(st.st_mode), st.st_size, st.st_uid, st.st_gid, oct(os.umask(0)))
print(sorted(os.listdir('/workspace')), sorted(k for k in sys.modules if k in ('json', 'ctypes', 'socket', 'gc', 'base64', 'binascii', 'resource', 'atexit', 'fcntl', 'struct')))
print(sorted((k, v) for k, v in os.environ.items() if k != 'KILN_EXEC_ID'), 'KILN_EXEC_ID' in os.environ)
print(repr(sys.stdin.read()), sys.stdin.isatty(), os.fstat(0).st_mode, os.fstat(1).st_mode, os.fstat(2).st_mode)
print(sys.flags, sys.executable, __spec__, type(__loader__).__name__, os.cpu_count(), len(os.sched_getaffinity(0)))
print(open('/proc/self/status').read().split('CapInh')[1].split('Speculation')[0])
print(sorted(os.listdir('/')), sorted(os.listdir('/dev')), sorted(os.listdir('/tmp')))
print(os.path.exists('/dev/null'), os.path.exists('/dev/shm'), os.access('/tmp', os.W_OK), os.getuid(), os.getgid())
`;

describe('fork runs through the API', { skip: process.getuid?.() === 0 ? undefined : 'needs root', timeout: 240_000 }, () => {
  let t: TestServer;
  let kiln: KilnClient;
  /** A server with fork runs off: every run in a sandbox of its own. */
  let plain: TestServer;
  before(async () => {
    t = await startTestServer({ KILN_POOL: 'python=1' });
    kiln = t.client;
    plain = await startTestServer({ KILN_FORK_RUNS: '0' });
  });
  after(async () => {
    await t.close();
    await plain.close();
  });

  /** The run forked, and the same run in a sandbox of its own. */
  const both = async (o: Omit<RunOptions, 'pack'> & { pack?: string }) => {
    const forked = await kiln.run({ pack: 'python', ...o });
    const fresh = await plain.client.run({ pack: 'python', ...o });
    assert.equal((forked as { forked?: boolean }).forked, true, 'the run was forked');
    assert.equal((fresh as { forked?: boolean }).forked, false, 'the fork-runs-off run was not');
    for (const k of ['stdout', 'stderr', 'exitCode', 'signal', 'timedOut', 'outputTruncated'] as const) assert.deepEqual(forked[k], fresh[k], `${k} differs`);
    return { forked, fresh };
  };

  it('shows the program what a fresh interpreter in a fresh sandbox shows it', async () => {
    const { forked } = await both({ code: INTROSPECT, stdin: 'abc', args: ['x'] });
    assert.match(forked.stdout, /^\['main\.py', 'x'\] \['python3', 'main\.py', 'x'\] __main__ \/workspace\/main\.py \/workspace \/workspace$/m);
    assert.match(forked.stdout, /^\['main\.py'\] \[\]$/m, 'nothing else in /workspace, none of the zygote’s modules loaded');
  });

  it('gives the same tracebacks, exit statuses, partial output and signals', async () => {
    for (const code of [
      'print("partial")\nimport json\njson.loads("{bad")\n',
      'import sys\nprint("out"); sys.stderr.write("err\\n"); sys.exit(7)\n',
      'def f(:\n  pass\n',
      'import os, signal\nprint("bye", flush=True)\nos.kill(os.getpid(), signal.SIGTERM)\n',
      'import subprocess\nprint(subprocess.run(["sh", "-c", "echo $0 >&2; exit 3"]).returncode)\n',
    ]) {
      await both({ code });
    }
  });

  it('is no sandbox of the API: not listed during or after, not found by its id', async () => {
    const ids = async () => (await kiln.sandboxes.list()).map((s) => s.id);
    const during = kiln.run({ pack: 'python', code: 'import time\ntime.sleep(0.5)' });
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(await ids(), []);
    const r = await during;
    assert.equal((r as { forked?: boolean }).forked, true);
    await assert.rejects(kiln.sandboxes.get(r.sandboxId), /no sandbox with id/);
  });

  it('times a run out, kills its processes, and the runner serves the next', async () => {
    const slow = await kiln.run({ pack: 'python', code: 'import subprocess\nsubprocess.Popen(["sleep", "600"])\nwhile True: pass', timeoutMs: 500 });
    assert.equal(slow.timedOut, true);
    const next = await kiln.run({ pack: 'python', code: 'import os\nprint(sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))' });
    assert.equal((next as { forked?: boolean }).forked, true);
    assert.equal(next.stdout, '[1, 2]\n', 'nothing of the timed-out run is left');
    const { runners } = await kiln.pools();
    assert.ok(
      runners?.some((r) => r.key.pack === 'python' && r.hits >= 1),
      JSON.stringify(runners),
    );
  });

  it('leaves the event trail of a one-shot sandbox in the store', async () => {
    const st = await startTestServer({ KILN_POOL: '', KILN_DATABASE_URL: 'memory://' });
    try {
      const r = await st.client.run({ pack: 'python', code: 'import sys\nsys.exit(4)' });
      assert.equal((r as { forked?: boolean }).forked, true);
      const res = await fetch(`${st.server.url}/v1/sandboxes/${r.sandboxId}/events`);
      assert.equal(res.status, 200);
      const { events } = (await res.json()) as { events: Array<{ kind: string; data: Record<string, unknown> }> };
      assert.deepEqual(
        events.map((e) => e.kind),
        ['created', 'exec.started', 'exec.ended', 'deleted'],
      );
      assert.equal(events[0]!.data.forked, true);
      assert.equal(events[2]!.data.exitCode, 4);
    } finally {
      await st.close();
    }
  });

  it("makes exec runs of another environment, a command, and another pack's program, as a sandbox of its own runs them", async () => {
    await both({ code: INTROSPECT, env: { X: 'y' }, stdin: 'abc', args: ['x'] });
    await both({ code: INTROSPECT, cmd: ['python3', '-X', 'utf8', 'main.py', 'a b'] });
    await both({ code: 'import sys\nprint(sys.argv)\nsys.exit(5)', cmd: 'python3 main.py "$HOME" && echo never' });
    const node = [
      'const os = require("os"), fs = require("fs");',
      'console.log(process.argv.slice(1), process.execArgv, process.cwd(), os.availableParallelism(), process.getuid(), process.getgid());',
      'console.log(Object.entries(process.env).filter(([k]) => k !== "KILN_EXEC_ID").sort());',
      'console.log(fs.readdirSync("/").sort(), fs.readdirSync("/dev").sort(), fs.readdirSync("/workspace").sort());',
      'console.log(JSON.stringify(fs.readFileSync(0, "utf8")), process.stdin.isTTY, fs.readFileSync("/proc/self/status", "utf8").split("\\n").filter((l) => /^(Cap|SigIgn|SigBlk|NoNewPrivs|Seccomp)/.test(l)));',
      'process.exitCode = 3; console.error("to stderr");',
    ].join('\n');
    const { forked } = await both({ pack: 'node', code: node, stdin: 'in', args: ['x'] });
    assert.equal(forked.exitCode, 3, forked.stderr);
    assert.match(forked.stdout, /^\[ '\/workspace\/main\.js', 'x' \] \[\] \/workspace 1 /);
    const { runners } = await kiln.pools();
    assert.ok(
      runners?.some((r) => r.key.pack === 'node' && r.hits + r.misses >= 1),
      JSON.stringify(runners),
    );
  });

  it('runs in a sandbox of its own what a runner cannot make, with the same answer, and keeps the runner', async () => {
    const retired = async () => (await kiln.pools()).runners?.find((r) => r.key.pack === 'python')?.retired ?? 0;
    const before = await retired();
    // A program of the request's own files: a plain exec tells whether it runs (here it cannot).
    const own = { cmd: ['./run.sh'], files: [{ path: 'run.sh', content: '#!/bin/sh\necho own\n' }] };
    const [a, b] = await Promise.allSettled([kiln.run({ pack: 'python', ...own }), plain.client.run({ pack: 'python', ...own })]);
    assert.deepEqual(a.status === 'rejected' ? String(a.reason) : a.value.stderr, b.status === 'rejected' ? String(b.reason) : b.value.stderr);
    if (a.status === 'fulfilled') assert.equal((a.value as { forked?: boolean }).forked, false);
    assert.equal(await retired(), before, 'no runner was retired for it');
    const next = await kiln.run({ pack: 'python', code: 'print("next")' });
    assert.equal((next as { forked?: boolean }).forked, true);
  });

  // Last: the refused run turns fork runs off for the pack for a minute.
  it('runs a refused fork run in a sandbox of its own, and a stream shows one start', async () => {
    // Every runner's zygote has made its next run's PID 1 ahead: kill those, from the host.
    // The same ones in three looks 50 ms apart: a last run's PID 1 may still be on its way out.
    let made: number[] = [];
    for (let i = 0, same = 0; i < 100 && same < 3; i++) {
      const zygotes = pythonDashC().filter((p) => !pythonDashC().includes(parentOf(p)));
      const now = pythonDashC().filter((p) => zygotes.includes(parentOf(p)));
      same = zygotes.length > 0 && now.length === zygotes.length && now.join() === made.join() ? same + 1 : 0;
      made = now;
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.ok(made.length > 0, 'a PID 1 made ahead waits in a runner');
    for (const pid of made) process.kill(pid, 'SIGKILL');
    const events = [];
    for await (const e of kiln.runStream({ pack: 'python', code: 'print("ran once")' })) events.push(e);
    // One start, then the output (in one chunk or more: a pooled sandbox's prestarted interpreter
    // has been seen to write "ran once" and "\n" apart), then the result.
    const types = events.map((e) => e.type);
    assert.deepEqual([types[0], types.filter((t) => t === 'started').length, types.at(-1)], ['started', 1, 'result'], JSON.stringify(events));
    assert.deepEqual(new Set(types.slice(1, -1)), new Set(['stdout']), JSON.stringify(events));
    const result = events.at(-1) as { forked?: boolean; exitCode: number };
    assert.equal(result.forked, false, 'run in a sandbox of its own');
    assert.equal(result.exitCode, 0);
    assert.equal(events.map((e) => (e.type === 'stdout' ? e.data : '')).join(''), 'ran once\n');
    for (const e of events) if (e.type === 'stdout') assert.equal(e.encoding, 'utf8');
  });
});

/** Host pids of the processes whose command line is `python3 -c …`: zygotes and their PID 1s. */
function pythonDashC(): number[] {
  return readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p))
    .filter((p) => {
      try {
        return readFileSync(`/proc/${p}/cmdline`, 'latin1').startsWith('python3\0-c\0') && !readFileSync(`/proc/${p}/stat`, 'utf8').includes(') Z ');
      } catch {
        return false;
      }
    })
    .map(Number);
}

function parentOf(pid: number): number {
  try {
    return Number(readFileSync(`/proc/${pid}/stat`, 'utf8').split(')')[1]!.trim().split(' ')[1]);
  } catch {
    return 0;
  }
}
