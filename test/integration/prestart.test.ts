/**
 * A pooled python sandbox waits with its interpreter already started (agent op "prestart"); the
 * one-shot run adopts it. Each case runs once on a pool hit and once cold (a size no pool keeps)
 * on the real namespace backend: what the program sees and what the run answers must not differ.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { KilnClient } from '../../sdk/src/index.js';
import { startTestServer, type TestServer } from '../parity/fixture.js';

/** What the program can see of itself, its file, its directory and its environment. */
const INTROSPECT = `import hashlib, os, sys, stat
st = os.stat(__file__)
print(sys.argv, sys.orig_argv, __name__, __file__, sys.path[0], os.getcwd())
print(stat.S_ISREG(st.st_mode), oct(st.st_mode), st.st_size, st.st_uid, st.st_gid)
print(sorted(os.listdir('/workspace')), hashlib.sha256(open(__file__, 'rb').read()).hexdigest())
print(sorted((k, v) for k, v in os.environ.items() if k != 'KILN_EXEC_ID'))
print(repr(sys.stdin.read()), sys.stdin.isatty(), os.fstat(0).st_mode, os.fstat(1).st_mode, os.fstat(2).st_mode)
print(sys.flags, sys.executable, __spec__, type(__loader__).__name__)
`;

/** Seconds since the program's process started (from /proc): a prestarted one has waited. */
const AGE = `import os
ticks = int(open('/proc/self/stat').read().rsplit(')', 1)[1].split()[19])
print(float(open('/proc/uptime').read().split()[0]) - ticks / os.sysconf('SC_CLK_TCK'))
`;

describe('prestarted interpreter on the namespace backend', { skip: process.getuid?.() === 0 ? undefined : 'needs root', timeout: 180_000 }, () => {
  let t: TestServer;
  let kiln: KilnClient;
  before(async () => {
    // Fork runs off: this is the path of one-shot runs in a sandbox of their own (pool hits).
    t = await startTestServer({ KILN_POOL: 'python=1', KILN_FORK_RUNS: '0' });
    kiln = t.client;
  });
  after(() => t.close());

  const poolReady = async () => {
    for (let i = 0; i < 500; i++) {
      if ((((await kiln.pools()).pools[0] as { ready: number }).ready ?? 0) >= 1) return;
      await sleep(20);
    }
    throw new Error('pool never filled');
  };
  const hits = async () => ((await kiln.pools()).pools[0] as { hits: number }).hits;

  /** The run on a pool hit and the same run cold; both answers, the hit checked to be one. */
  const both = async (o: Omit<Parameters<KilnClient['run']>[0], 'pack'>) => {
    await poolReady();
    const h0 = await hits();
    const pooled = await kiln.run({ pack: 'python', ...o });
    assert.equal(await hits(), h0 + 1, 'the first run was a pool hit');
    // Another memory size: no pool keeps it, so this sandbox starts cold and runs python afresh.
    const cold = await kiln.run({ pack: 'python', memoryMib: 384, ...o });
    assert.equal(await hits(), h0 + 1, 'the second run was not');
    return { pooled, cold };
  };
  const same = (r: Awaited<ReturnType<typeof both>>) => {
    for (const k of ['stdout', 'stderr', 'exitCode', 'signal', 'timedOut', 'outputTruncated'] as const) assert.deepEqual(r.pooled[k], r.cold[k], `${k} differs`);
  };

  it('runs on the interpreter started ahead (it is older than the run), a cold one does not', async () => {
    await poolReady();
    await sleep(1500);
    const r = await both({ code: AGE });
    assert.ok(Number(r.pooled.stdout) > 1, `pooled interpreter is ${r.pooled.stdout.trim()} s old`);
    assert.ok(Number(r.cold.stdout) < 1, `cold interpreter is ${r.cold.stdout.trim()} s old`);
  });

  it('shows the program the same argv, __main__, sys.path, file, directory, environment and stdio', async () => {
    const r = await both({ code: INTROSPECT });
    same(r);
    assert.match(r.pooled.stdout, /\['\/workspace\/main\.py'\]|\['main\.py'\]/);
    assert.match(r.pooled.stdout, /^True 0o100644 /m, 'a regular file at the path');
    const sha = (await import('node:crypto')).createHash('sha256').update(INTROSPECT).digest('hex');
    assert.ok(r.pooled.stdout.includes(`['main.py'] ${sha}`), 'nothing else in /workspace, and the file is the program');
    assert.equal(r.pooled.stderr, '');
  });

  it('gives the same traceback, exit status and partial output', async () => {
    same(await both({ code: 'import sys\nprint("before", flush=True)\ndef f():\n    raise ValueError("boom")\nf()\n' }));
    const r = await both({ code: 'import sys\nsys.stderr.write("bye\\n")\nsys.exit(3)\n' });
    same(r);
    assert.equal(r.pooled.exitCode, 3);
    const s = await both({ code: 'print(1 +\n' });
    same(s);
    assert.match(s.pooled.stderr, /SyntaxError/);
  });

  it('passes stdin, arguments, environment and encoding declarations through (a cold start where needed)', async () => {
    same(await both({ code: 'import sys\nprint(sys.stdin.read()[::-1])', stdin: 'hello' }));
    same(await both({ code: 'import sys\nprint(sys.argv)', args: ['a', 'b c'] }));
    same(await both({ code: 'import os\nprint(os.environ["X"])', env: { X: 'y' } }));
    const latin = await both({ code: '# -*- coding: latin-1 -*-\nprint("caf\u00e9")\n' });
    same(latin);
    assert.equal(latin.pooled.exitCode, 0);
  });

  it('honours timeouts and big programs (larger than a pipe holds)', async () => {
    const r = await both({ code: 'import time\nprint("started", flush=True)\ntime.sleep(30)', timeoutMs: 700 });
    same(r);
    assert.equal(r.pooled.timedOut, true);
    assert.ok(r.pooled.durationMs < 5000, `timed out after ${r.pooled.durationMs} ms`);
    const big = `x = ${JSON.stringify('y'.repeat(100_000))}\nprint(len(x))\n`;
    const b = await both({ code: big });
    same(b);
    assert.equal(b.pooled.stdout, '100000\n');
  });

  it('leaves no pipe or waiting interpreter in a pooled sandbox handed out whole', async () => {
    await poolReady();
    const sb = await kiln.sandboxes.create({ pack: 'python' });
    try {
      assert.equal(sb.fromPool, true);
      const r = await kiln.sandboxes.exec(sb.id, { cmd: 'ls -A /workspace; cat /proc/[0-9]*/comm | grep -c python || true' });
      assert.equal(r.stdout, '0\n');
    } finally {
      await kiln.sandboxes.delete(sb.id);
    }
  });
});
