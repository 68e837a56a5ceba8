/**
 * Fork runs (issue 15; agent/zygote_linux.go, agent/zygote.py): a runner sandbox's zygote forks
 * each run into namespaces, a root, /dev, /proc and a loopback of its own. Real bubblewrap, the
 * real python image, the real agent. What one run leaves behind (files anywhere, a process that
 * detached, a listening socket, shared memory) is not there for the next; a run has no privilege
 * left and cannot see the runner; its output, errors and exit match a fresh interpreter's byte for
 * byte; a timeout kills it and leaves the runner usable; a runner whose zygote is gone runs
 * plain execs.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createNamespaceBackend } from '../../src/backends/namespace/namespace-backend.js';
import type { Backend, BackendSandbox } from '../../src/core/backend.js';
import { REPO_ROOT } from '../../src/core/config.js';
import { resolveImage } from '../../src/images/index.js';
import type { ExecResult } from '../../src/protocol/messages.js';

interface Ran {
  r: ExecResult;
  out: string;
  err: string;
}

const MAIN = '/workspace/main.py';

describe('fork runs', { skip: process.getuid?.() === 0 ? undefined : 'needs root', timeout: 180_000 }, () => {
  let runDir: string;
  let backend: Backend;
  let env: Record<string, string>;
  let spec: (id: string, zygote: boolean) => Parameters<Backend['create']>[0];
  let runner: BackendSandbox;
  const others: BackendSandbox[] = [];

  async function run(sb: BackendSandbox, code: string, o: { env?: Record<string, string>; stdin?: string; args?: string[]; timeoutMs?: number; onStarted?: () => void } = {}): Promise<Ran> {
    let out = '';
    let err = '';
    const h = sb.agent.exec(
      {
        argv: ['python3', MAIN, ...(o.args ?? [])],
        env: { ...env, ...o.env },
        cwd: '/workspace',
        timeoutMs: o.timeoutMs ?? 30_000,
        stdin: o.stdin !== undefined,
        files: [{ path: MAIN, data: Buffer.from(code).toString('base64') }],
      },
      { onStdout: (c) => (out += c.toString()), onStderr: (c) => (err += c.toString()), onStarted: o.onStarted },
    );
    if (o.stdin !== undefined) {
      await h.writeStdin(Buffer.from(o.stdin));
      h.closeStdin();
    }
    return { r: await h.result, out, err };
  }

  before(async () => {
    runDir = await mkdtemp(join(tmpdir(), 'kiln-fork-runs-'));
    await chmod(runDir, 0o755);
    backend = createNamespaceBackend({ runDir, agentPath: resolve(REPO_ROOT, 'build/kiln-agent'), maxPids: 256, cgroupName: `kiln-test-${runDir.split('-').pop()}`, uidBase: 264_000, uidCount: 6 });
    const img = await resolveImage('python', process.env.KILN_DATA_DIR ?? '/var/lib/kiln');
    env = img.env;
    spec = (id, zygote) => ({
      id,
      pack: { name: img.name, hash: img.hash, imagePath: img.imagePath, env: img.env },
      cpus: 1,
      memoryMib: 256,
      diskMib: 64,
      zygote: zygote ? { argv: ['python3'], env: img.env } : undefined,
    });
    runner = await backend.create(spec('runner', true), { readyTimeoutMs: 30_000 });
  });

  after(async () => {
    await Promise.allSettled([runner, ...others].map((s) => s.destroy()));
    await backend.close();
    await rm(runDir, { recursive: true, force: true });
  });

  it('forks a run: output, stdin, arguments, exit status, accounting', async () => {
    const a = await run(runner, 'import sys\nprint("hi", sys.argv[1:], sys.stdin.read())\nsys.exit(3)', { stdin: 'in put', args: ['x', 'y'] });
    assert.equal(a.out, "hi ['x', 'y'] in put\n");
    assert.equal(a.r.exitCode, 3);
    assert.equal((a.r as ExecResult & { forked?: boolean }).forked, true);
    assert.ok(a.r.durationMs > 0 && a.r.peakMemoryBytes > 1 << 20, JSON.stringify(a.r));
    const b = await run(runner, 'import os, sys\nprint(os.getcwd(), sys.path[0], __name__, __file__, os.environ["HOME"], "KILN_EXEC_ID" in os.environ)');
    assert.equal(b.out, '/workspace /workspace __main__ /workspace/main.py /workspace True\n');
  });

  it('leaves nothing behind for the next run', async () => {
    const first = await run(
      runner,
      [
        'import os, socket, subprocess',
        'for p in ("/tmp/left", "/workspace/left", "/dev/shm/left", "/dev/left"):',
        '    open(p, "w").write("x")',
        'subprocess.Popen(["sleep", "1000"], start_new_session=True)',
        's = socket.socket(); s.bind(("127.0.0.1", 8765)); s.listen()',
        'print(sorted(os.listdir("/proc")) and "ok")',
      ].join('\n'),
    );
    assert.equal(first.r.exitCode, 0, first.err);
    const second = await run(
      runner,
      [
        'import os, socket',
        'print([p for p in ("/tmp/left", "/workspace/left", "/dev/shm/left", "/dev/left") if os.path.exists(p)])',
        'print(sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))',
        's = socket.socket(); s.bind(("127.0.0.1", 8765)); s.listen(); print("port free")',
      ].join('\n'),
    );
    assert.equal(second.r.exitCode, 0, second.err);
    assert.equal(second.out, '[]\n[1, 2]\nport free\n', 'no file, no process, no socket of the first run');
  });

  it('runs without privileges, under the seccomp filter, unable to see the runner', async () => {
    const r = await run(
      runner,
      [
        'import ctypes, os',
        'st = dict(l.split(":\\t", 1) for l in open("/proc/self/status").read().splitlines() if ":\\t" in l)',
        'print({k: st[k].strip() for k in ("CapEff", "CapPrm", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp")})',
        'libc = ctypes.CDLL(None, use_errno=True)',
        'print("unshare", libc.unshare(0x00020000), ctypes.get_errno() != 0)',
        'print("mount", libc.mount(b"tmpfs", b"/tmp", b"tmpfs", 0, None), ctypes.get_errno() != 0)',
        'print(os.getpid(), os.getppid(), open("/proc/1/cmdline").read().split("\\0")[:2])',
      ].join('\n'),
    );
    assert.equal(r.r.exitCode, 0, r.err);
    const [caps, unshare, mount, pids] = r.out.trim().split('\n');
    assert.equal(caps, "{'CapEff': '0000000000000000', 'CapPrm': '0000000000000000', 'CapBnd': '0000000000000000', 'CapAmb': '0000000000000000', 'NoNewPrivs': '1', 'Seccomp': '2'}");
    assert.equal(unshare, 'unshare -1 True');
    assert.equal(mount, 'mount -1 True');
    assert.equal(pids, "2 1 ['python3', '-c']", 'its PID 1 is its own init, not the runner agent');
  });

  it('prints errors, exits and signals as a fresh interpreter does', async () => {
    const cases = [
      'def f():\n    raise ValueError("bad")\nf()\n',
      'x = (\n',
      'import sys\nsys.exit("bye")\n',
      'raise KeyboardInterrupt\n',
      'import sys\nsys.stdout.write("no newline"); sys.stderr.write("err")\n',
      '# -*- coding: latin-1 -*-\nprint("\xe9")\n',
      'import atexit, threading, time\natexit.register(lambda: print("atexit"))\nthreading.Thread(target=lambda: (time.sleep(0.05), print("thread"))).start()\n',
    ];
    // The same file run by a plain exec (another environment is not the zygote's: not forked).
    const plain = await backend.create(spec('plain', false), { readyTimeoutMs: 30_000 });
    others.push(plain);
    for (const code of cases) {
      const forked = await run(runner, code);
      const fresh = await run(plain, code);
      assert.equal((forked.r as { forked?: boolean }).forked, true);
      assert.equal((fresh.r as { forked?: boolean }).forked, undefined);
      assert.deepEqual(
        { out: forked.out, err: forked.err, exit: forked.r.exitCode, signal: forked.r.signal },
        { out: fresh.out, err: fresh.err, exit: fresh.r.exitCode, signal: fresh.r.signal },
        code,
      );
    }
  });

  it('kills a run at its timeout and the runner serves the next', async () => {
    const slow = await run(runner, 'import os\nos.fork()\nwhile True: pass', { timeoutMs: 400 });
    assert.equal(slow.r.timedOut, true);
    assert.equal(slow.r.signal, 'SIGKILL');
    const next = await run(runner, 'print(2 + 2)');
    assert.equal(next.out, '4\n');
    assert.equal((next.r as { forked?: boolean }).forked, true);
  });

  it('a run with another environment is an exec run: a fresh interpreter, forked all the same', async () => {
    const r = await run(runner, 'import os\nprint(os.environ["EXTRA"], open("/proc/self/cmdline").read().split("\\0")[1])', { env: { EXTRA: 'yes' } });
    assert.equal(r.out, `yes ${MAIN}\n`, r.err); // a warm run's process is the zygote's: python3 -c
    assert.equal((r.r as { forked?: boolean }).forked, true);
  });

  /** argv run in sb: its output, result and start events. */
  async function execIn(sb: BackendSandbox, argv: string[], o: { env?: Record<string, string>; files?: Record<string, string>; fork?: boolean; cwd?: string } = {}) {
    let out = '';
    let err = '';
    let started = 0;
    const h = sb.agent.exec(
      {
        argv,
        env: { ...env, ...o.env },
        cwd: o.cwd ?? '/workspace',
        timeoutMs: 30_000,
        files: Object.entries(o.files ?? {}).map(([path, text]) => ({ path, data: Buffer.from(text).toString('base64'), mode: 0o755 })),
        ...(o.fork ? { fork: true } : {}),
      },
      { onStdout: (c) => (out += c.toString()), onStderr: (c) => (err += c.toString()), onStarted: () => started++ },
    );
    return { r: await h.result, out, err, started };
  }

  it('an exec run starts any program as a plain exec does: ids, limits, signals, descriptors, environment', async () => {
    const probe = [
      "grep -E '^(Uid|Gid|Groups|SigIgn|SigBlk|Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs|Seccomp|Seccomp_filters):' /proc/self/status",
      'cat /proc/self/limits; umask; id; pwd; ls /proc/self/fd; env | grep -v ^KILN_EXEC_ID= | sort',
      'echo "$0|$#|$*"; ls / /dev /tmp; nproc; cat /workspace/data.txt; test -w /tmp && echo writable',
      'echo out; echo err >&2; exit 3',
    ].join('\n');
    const plain = await backend.create(spec('plain-exec', false), { readyTimeoutMs: 30_000 });
    others.push(plain);
    const o = { env: { EXTRA: 'x y' }, files: { '/workspace/data.txt': 'data\n' } };
    const argv = ['sh', '-c', probe, 'name', 'a b', 'c'];
    const forked = await execIn(runner, argv, { ...o, fork: true });
    const fresh = await execIn(plain, argv, o);
    assert.equal((forked.r as { forked?: boolean }).forked, true);
    assert.equal((fresh.r as { forked?: boolean }).forked, undefined);
    assert.equal(forked.r.exitCode, 3, forked.err);
    assert.deepEqual({ out: forked.out, err: forked.err, started: forked.started }, { out: fresh.out, err: fresh.err, started: fresh.started });
    assert.match(forked.out, /^SigIgn:\t0000000000000000$/m, 'Python ignores SIGPIPE and SIGXFSZ; a program it executes does not');
    assert.match(forked.out, /^0\n1\n2\n3\n/m, "stdio and the listing's own descriptor only");
  });

  it('refuses with NOT_FORKABLE, and runs nothing, what a runner cannot exec when asked to fork', async () => {
    const files = { '/workspace/own.sh': '#!/bin/sh\necho own\n' };
    for (const [argv, cwd] of [[['/workspace/own.sh']], [['./own.sh']], [['no-such-program']], [['true'], '/nowhere']] as Array<[string[], string?]>) {
      let started = 0;
      await assert.rejects(
        execIn(runner, argv, { files, fork: true, cwd }).then((r) => (started = r.started)),
        (e: Error & { details?: { agentCode?: string } }) => {
          assert.equal(e.details?.agentCode, 'NOT_FORKABLE', `${argv[0]}: ${e.message}`);
          return true;
        },
      );
      assert.equal(started, 0);
    }
    const written = await execIn(runner, ['ls', '/workspace'], { fork: true });
    assert.equal(written.out, '', 'the refused requests wrote no file');
    assert.equal((written.r as { forked?: boolean }).forked, true);
  });

  it('refuses a run whose PID 1, made ahead, is gone; the next run gets a new one', async () => {
    const [zygote] = await zygotePids(runner.details.pid as number);
    let made: number[] = [];
    // The same one in three looks 50 ms apart: the last run's PID 1 may still be on its way out.
    for (let i = 0, same = 0; i < 100 && same < 3; i++) {
      const now = await childrenOf(zygote!);
      same = now.length === 1 && now[0] === made[0] ? same + 1 : 0;
      made = now;
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(made.length, 1, 'one PID 1 waits for the next run');
    process.kill(made[0]!, 'SIGKILL');
    // Refused before anything of it ran (the handover failed, or the PID 1 ended before it forked
    // the program), with a code of its own and no "started" shown: the service then runs it in a
    // sandbox of its own, and a stream shows one start.
    let started = 0;
    await assert.rejects(run(runner, 'print("never")', { onStarted: () => started++ }), (e: Error & { details?: { agentCode?: string } }) => {
      assert.equal(e.details?.agentCode, 'FORK_REFUSED', e.message);
      assert.match(e.message, /fork run: (hand the run over|the run's PID 1 ended before it started)/);
      return true;
    });
    assert.equal(started, 0, 'a refused run showed no start');
    const next = await run(runner, 'print("next")');
    assert.equal(next.out, 'next\n');
    assert.equal((next.r as { forked?: boolean }).forked, true);
  });

  it('runs its last prepared PID 1, then plain execs, once the zygote is gone', async () => {
    const sb = await backend.create(spec('lost', true), { readyTimeoutMs: 30_000 });
    others.push(sb);
    const found = await run(sb, 'import os, signal\nos.kill(os.getppid(), signal.SIGKILL)');
    assert.equal(found.r.exitCode, 0);
    // The zygote is in the runner's pid namespace, out of a run's reach: kill it from the host.
    const zygotes = await zygotePids(sb.details.pid as number);
    assert.equal(zygotes.length, 1, 'one zygote in the runner');
    process.kill(zygotes[0]!, 'SIGKILL');
    // The PID 1 it made ahead, before it died, still serves one run (forked); making the next one
    // finds the zygote gone, and from then on a run is a plain exec (which the service answers,
    // then deletes the runner: core/runners.ts).
    const ahead = await run(sb, 'print("made ahead")');
    assert.equal(ahead.out, 'made ahead\n');
    assert.equal((ahead.r as { forked?: boolean }).forked, true);
    const plain = await run(sb, 'print("plain")');
    assert.equal(plain.out, 'plain\n');
    assert.equal((plain.r as { forked?: boolean }).forked, undefined);
  });
});

/** The host pids of the live (not zombie) children of `pid`. */
async function childrenOf(pid: number): Promise<number[]> {
  return readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p))
    .filter((p) => {
      try {
        const [state, ppid] = readFileSync(`/proc/${p}/stat`, 'utf8').split(')')[1]!.trim().split(' ');
        return ppid === String(pid) && state !== 'Z';
      } catch {
        return false;
      }
    })
    .map(Number);
}

/** The host pids of the children of sandbox PID 1 `pid` whose command line is `python3 -c`. */
async function zygotePids(pid: number): Promise<number[]> {
  return (await childrenOf(pid)).filter((p) => {
    try {
      return readFileSync(`/proc/${p}/cmdline`, 'utf8').startsWith('python3\0-c\0');
    } catch {
      return false;
    }
  });
}
